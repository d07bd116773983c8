"""Inbound mail events: a mail fetched or received, and where it was routed.

The raw mail travels base64-encoded in ``mail`` (JSON cannot carry bytes).
Keys (see streams/topics.py): the inbound topics are keyed by the mail's
normalized Message-ID (``inbound:<inbound_id>`` when it has none), so every
copy of one mail lands on one partition, where the router's duplicate table
lives.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .addresses import has_crlf
from .base import Event

SOURCES = ("imap", "smtp")
ROUTES = ("duplicate", "bounce", "reply", "reject", "alias", "loop", "unsubscribe")


def _b64_problem(fname: str, value: str) -> list[str]:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return [f"{fname} is not valid base64"]
    return []


class InboundMailReceived(Event):
    """A new mail came in: fetched from the incoming server ``server``
    (``folder``, ``uidvalidity``/``uid`` identify it there) or received by
    the SMTP ingress (``envelope_from``/``envelope_to``). ``mail`` is the
    raw RFC 5322 bytes in base64; ``message_id`` the Message-ID header as
    found (may be empty). ``inbound_id`` is ours and deterministic for IMAP
    (server, UIDVALIDITY, UID), so a mail fetched twice has the same id."""

    inbound_id: str
    source: str
    mail: str
    size: int
    server: str = ""
    tenant: str = ""
    folder: str = ""
    uidvalidity: int = 0
    uid: int = 0
    message_id: str = ""
    envelope_from: str = ""
    envelope_to: list[str] = []
    received_at: float = 0.0

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.inbound_id or has_crlf(self.inbound_id) or len(self.inbound_id) > 200:
            out.append("inbound_id must be a non-empty single line of at most 200 characters")
        if self.source not in SOURCES:
            out.append(f"source {self.source!r} must be one of {', '.join(SOURCES)}")
        out.extend(_b64_problem("mail", self.mail))
        if self.size < 0:
            out.append("size must be >= 0")
        for value in [self.message_id, self.envelope_from, self.server, *self.envelope_to]:
            if not isinstance(value, str) or has_crlf(value):
                out.append(f"{value!r} must be a single-line string")
        return out

    def raw(self) -> bytes:
        return base64.b64decode(self.mail)


class InboundMailRejected(Event):
    """A mail was not taken in whole (over the size limit): ``reason`` says
    why; ``headers`` is its header block as text (who sent it, when) so it
    can be traced. The mail stays on the server, not marked seen."""

    inbound_id: str
    source: str
    reason: str
    size: int = 0
    server: str = ""
    tenant: str = ""
    folder: str = ""
    uidvalidity: int = 0
    uid: int = 0
    message_id: str = ""
    headers: str = ""
    received_at: float = 0.0

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.inbound_id or has_crlf(self.inbound_id):
            out.append("inbound_id must be a non-empty single line")
        if self.source not in SOURCES:
            out.append(f"source {self.source!r} must be one of {', '.join(SOURCES)}")
        if not self.reason:
            out.append("reason must say why the mail was rejected")
        return out


class InboundMailRouted(Event):
    """The router's decision for one inbound mail. ``route``:

    - duplicate: the same Message-ID was already received (``reason`` says
      as which mail); dropped;
    - bounce: a bounce (to the bounce address, from MAILER-DAEMON, or a
      delivery-status report), for bounce processing; ``original_message_id``
      is our message id when the bounce address carries it;
    - reply: answers a mail Postlane sent (``original_message_id``);
      ``target`` is that mail's thread (its ``thread_ref``, else its message id);
    - alias: a new record for ``alias``'s ``target``, for ``tenant``; the
      consuming service applies ``policy`` (everyone, contacts, followers);
    - loop: dropped, the alias got too many mails from this sender;
    - reject: ``reason`` says why (catchall only, no alias, malformed, too large).

    ``bounce_to`` is set when a bounce was sent back to the sender (as the
    SendRequested ``bounce_message_id``). ``rule`` names the exact rule.
    ``mail`` (base64) is carried for bounce, reply and alias routes."""

    inbound_id: str
    route: str
    reason: str
    rule: str = ""
    target: str = ""
    alias: str = ""
    policy: str = ""
    tenant: str = ""
    thread_ref: str = ""
    original_message_id: str = ""
    bounce_to: str = ""
    bounce_message_id: str = ""
    sender: str = ""
    recipients: list[str] = []
    message_id: str = ""
    subject: str = ""
    source: str = ""
    server: str = ""
    received_at: float = 0.0
    mail: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.route not in ROUTES:
            out.append(f"route {self.route!r} must be one of {', '.join(ROUTES)}")
        if self.route in ("reply", "alias") and not self.target:
            out.append(f"a {self.route} route needs a target")
        if self.mail:
            out.extend(_b64_problem("mail", self.mail))
        return out


class SentMessageRecorded(Event):
    """Postlane sent (or is sending) a mail with the RFC Message-ID
    ``smtp_message_id``: our ``message_id``, its sender's ``thread_ref`` and
    ``tenant``. The router's reply table is built from these."""

    smtp_message_id: str
    message_id: str
    thread_ref: str = ""
    tenant: str = ""
    header_from: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.smtp_message_id or has_crlf(self.smtp_message_id):
            out.append("smtp_message_id must be a non-empty single line")
        return out


class InboundReplyLookupRequested(Event):
    """Router-internal: look ``candidates`` (normalized Message-IDs from
    In-Reply-To, then References newest first) up in the reply table, on
    the partition of the candidate this event is keyed by. ``pending`` are
    the indexes not looked up yet; ``found_index``/``found`` the best match
    so far (-1: none). ``inbound`` is the InboundMailReceived, ``parsed``
    the router's parse of it."""

    inbound_key: str
    candidates: list[str]
    pending: list[int]
    inbound: dict[str, Any]
    parsed: dict[str, Any]
    found_index: int = -1
    found: dict[str, Any] = {}
    hops: int = 0


class InboundAliasMatched(Event):
    """Router-internal: the mail goes to ``alias`` unless the loop limit
    stops it; keyed by ``alias|sender`` so the loop counter of one alias
    and sender lives on one partition."""

    inbound_key: str
    alias: str
    target: str
    sender: str
    recipient: str
    inbound: dict[str, Any]
    parsed: dict[str, Any]
    tenant: str = ""
    policy: str = "everyone"
    rule: str = "alias_local_part"


class IncomingServerChecked(Event):
    """The fetcher's report on an incoming server, published when its state
    changes: ``ok`` false with ``step`` (connect, tls, login, select, fetch),
    ``kind`` and ``sentence`` (what is wrong and what to change), or ok with
    what works (``idle``: the server pushes new mail)."""

    server: str
    ok: bool
    sentence: str
    step: str = ""
    kind: str = ""
    idle: bool = False
    uidvalidity: int = 0
    last_uid: int = 0
