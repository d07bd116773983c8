"""Bounce and blacklist events.

The path of a bounce (see streams/topics.py for the keys):

- ``bounce-mail``: ``BounceMailReceived``, a raw bounce mail to parse (the
  inbound router's ``InboundMailRouted`` with route ``bounce`` is read
  directly; this topic takes bounce mails from anywhere else).
- ``bounce-domains`` (internal, keyed by the recipient's domain):
  ``RecipientBounced`` (one parsed failure of one recipient) and
  ``RecipientsMailed`` (how many recipients of a domain were mailed), for
  the outage check: a burst of the same error from one server is not the
  recipients' fault.
- ``bounces`` (keyed by address): ``BounceRecorded``, ``BounceDiscounted``,
  ``MailReceivedFrom`` and ``BlacklistEdited``: everything the counting
  processor folds, so the blacklist can be rebuilt from this topic alone.
- ``bounces`` also carries ``ComplaintReceived`` (a feedback report: the
  address is suppressed at once), ``UnsubscribeRequested``
  (schemas/unsubscribe.py) and ``SuppressionEdited`` (ops): the suppression
  log, folded by the same processor.
- ``blacklist`` (keyed by address, compacted): ``BlacklistChanged``, whose
  ``suppressions`` is the address's whole suppression set (so the latest
  record per address is enough).
"""

from __future__ import annotations

import base64
import binascii
from functools import lru_cache
from typing import Any

from .addresses import AddressError, checked_address, has_crlf
from .base import Event

REASONS = (
    "unknown_user", "mailbox_full", "host_unknown", "expired", "blocked", "spam",
    "rejected", "auth_failure", "network_error", "other",
)
_REASONS = frozenset(REASONS)
BOUNCE_KINDS = ("failed", "complaint")
SUPPRESSION_TYPES = ("hard_bounce", "complaint", "unsubscribe", "manual")
BOUNCE_SOURCES = ("mail", "delivery")
EDIT_ACTIONS = ("add", "remove")


def _address_problems(fname: str, value: str) -> list[str]:
    if not value or has_crlf(value):
        return [f"{fname} must be a non-empty single line"]
    if value != value.strip().lower():
        return [f"{fname} {value!r} must be lower-cased, without spaces"]
    try:
        checked_address(value)
    except AddressError as exc:
        return [f"{fname}: {exc}"]
    return []


@lru_cache(maxsize=16384)
def _plain_address(value: str) -> bool:
    """``_address_problems(..., value)`` finds nothing (a non-empty single
    line, lower-cased, stripped, a valid address): its answer for a str,
    remembered."""
    return not _address_problems("address", value)


def _b64_problems(fname: str, value: str) -> list[str]:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return [f"{fname} is not valid base64"]
    return []


class BounceMailReceived(Event):
    """A bounce mail (raw RFC 5322 bytes, base64 in ``mail``) to parse.
    ``original_message_id``: our message id when the envelope recipient was
    its bounce address (``bounce+<id>@``); ``bounce_mail_id`` identifies
    this bounce mail (the inbound id, or a hash of the bytes), so a mail
    published twice gives the same bounces."""

    bounce_mail_id: str
    mail: str
    received_at: float = 0.0
    original_message_id: str = ""
    source: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.bounce_mail_id or has_crlf(self.bounce_mail_id):
            out.append("bounce_mail_id must be a non-empty single line")
        out.extend(_b64_problems("mail", self.mail))
        if has_crlf(self.original_message_id):
            out.append("original_message_id must be a single line")
        return out

    def raw(self) -> bytes:
        return base64.b64decode(self.mail)


class _BounceFields(Event, abstract=True):
    """One failure of one recipient, as the parser (or delivery) saw it.
    ``bounce_id`` is deterministic (the source and the recipient), so a
    bounce seen twice is counted once. ``message_id``: our message the
    bounce is attributed to (empty: unknown). ``server``: the server that
    reported the error (the remote MTA, else the reporting MTA; for a 5xx at
    delivery time ``outgoing:<our server>``). ``hard``: a permanent failure
    of the address itself. ``kind`` complaint: an ARF feedback report."""

    bounce_id: str
    address: str
    bounced_at: float
    reason: str
    hard: bool
    status: str = ""
    replycode: int = 0
    diagnostic: str = ""
    message_id: str = ""
    server: str = ""
    source: str = "mail"
    format: str = ""
    kind: str = "failed"

    def problems(self) -> list[str]:
        # the same checks, order and words, on the field values in
        # ``__dict__`` (every way an event is made puts every field there:
        # tests/unit/test_decode_owned.py), without a helper call per check
        # (every bounce of a blacklist replay and of the live agent runs this)
        f = self.__dict__
        out = Event.problems(self)
        bounce_id, address = f["bounce_id"], f["address"]
        if not bounce_id or "\r" in bounce_id or "\n" in bounce_id:
            out.append("bounce_id must be a non-empty single line")
        # (a str's answer remembered: an address comes again and again)
        if type(address) is not str or not _plain_address(address):
            out.extend(_address_problems("address", address))
        reason, kind, source = f["reason"], f["kind"], f["source"]
        if (reason not in _REASONS) if type(reason) is str else (reason not in REASONS):
            out.append(f"reason {reason!r} must be one of {', '.join(REASONS)}")
        if kind != "failed" and kind not in BOUNCE_KINDS:
            out.append(f"kind {kind!r} must be one of {', '.join(BOUNCE_KINDS)}")
        if source not in BOUNCE_SOURCES:
            out.append(f"source {source!r} must be one of {', '.join(BOUNCE_SOURCES)}")
        if f["bounced_at"] <= 0:
            out.append("bounced_at must be unix seconds > 0")
        replycode = f["replycode"]
        if replycode and not 200 <= replycode <= 599:
            out.append(f"replycode {replycode} is not an SMTP reply code")
        return out


class RecipientBounced(_BounceFields):
    """Internal (``bounce-domains``, keyed by the address's domain): a
    parsed failure on its way to the outage check."""


class RecipientsMailed(Event):
    """Internal (``bounce-domains``): ``count`` recipients at ``domain``
    got a final answer from delivery at ``at`` (accepted or failed); the
    outage check compares a burst of one error with how many were mailed."""

    domain: str
    count: int
    at: float
    message_id: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.domain or has_crlf(self.domain):
            out.append("domain must be a non-empty single line")
        if self.count < 1:
            out.append("count must be >= 1")
        return out


class BounceRecorded(_BounceFields):
    """A bounce of ``address`` (``bounces`` topic, keyed by the address).
    ``outage`` is set when the outage check found it is part of a burst of
    the same error from one server: then it does not count.
    ``unattributed`` says why a bounce naming a mail (``message_id``) is not
    that mail's: the address was not one of its recipients, or Postlane
    never delivered such a mail. It is kept (``blacklist why``) and does not
    count."""

    outage: str = ""
    unattributed: str = ""


class BounceDiscounted(Event):
    """An earlier ``BounceRecorded`` of ``address`` turned out to be part
    of a burst (``outage`` says which): it no longer counts."""

    address: str
    bounce_id: str
    outage: str

    def problems(self) -> list[str]:
        out = super().problems()
        out.extend(_address_problems("address", self.address))
        if not self.bounce_id or not self.outage:
            out.append("bounce_id and outage must be set")
        return out


class MailReceivedFrom(Event):
    """A mail came in from ``address`` (a reply, a mail to an alias, an
    auto-reply): the address works, so its bounce count starts again."""

    address: str
    received_at: float
    inbound_id: str = ""
    source: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        out.extend(_address_problems("address", self.address))
        if self.received_at <= 0:
            out.append("received_at must be unix seconds > 0")
        return out


class BlacklistEdited(Event):
    """Ops added ``address`` to the blacklist or removed it
    (``postlane blacklist add|remove``). A removal also clears the counted
    bounces, so it takes a new series of bounces to blacklist it again."""

    address: str
    action: str
    reason: str = ""
    by: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        out.extend(_address_problems("address", self.address))
        if self.action not in EDIT_ACTIONS:
            out.append(f"action {self.action!r} must be one of {', '.join(EDIT_ACTIONS)}")
        if has_crlf(self.reason) or has_crlf(self.by):
            out.append("reason and by must be single lines")
        return out


class BlacklistChanged(Event):
    """``address`` was blacklisted (``blacklisted``) or lifted, from the
    counting processor (``blacklist`` topic, keyed by address; the latest
    per address is the blacklist). ``reason`` is the sentence a person
    reads; ``manual``: by ops; ``bounces``: the counted bounces that led
    there (``{"bounce_id", "at", "reason", "status", "hard", "weight",
    "message_id", "diagnostic"}``)."""

    address: str
    blacklisted: bool
    reason: str
    since: float = 0.0
    manual: bool = False
    bounces: list[dict[str, Any]] = []
    # the address's whole suppression set, each {"type", "tenant", "list_id",
    # "reason", "since"}; type is one of SUPPRESSION_TYPES; an empty tenant is
    # every tenant, an empty list_id every list (see processors/blacklist/core.py)
    suppressions: list[dict[str, Any]] = []

    def problems(self) -> list[str]:
        out = super().problems()
        out.extend(_address_problems("address", self.address))
        for entry in self.suppressions:
            if not isinstance(entry, dict) or entry.get("type") not in SUPPRESSION_TYPES:
                out.append(f"suppression {entry!r} must have a type among "
                           f"{', '.join(SUPPRESSION_TYPES)}")
        return out


class ComplaintReceived(Event):
    """``address`` complained about our mail ``message_id`` (an ARF feedback
    report, RFC 5965, or a provider's complaint notification): suppressed at
    once (type ``complaint``), for ``tenant`` when known, else every tenant.
    ``complaint_id`` is derived from the report and the address, so a report
    read twice is one complaint. ``bounces`` topic, keyed by the address."""

    complaint_id: str
    address: str
    complained_at: float
    message_id: str = ""
    feedback_type: str = "abuse"
    format: str = ""
    reporting_mta: str = ""
    user_agent: str = ""
    tenant: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.complaint_id or has_crlf(self.complaint_id):
            out.append("complaint_id must be a non-empty single line")
        out.extend(_address_problems("address", self.address))
        if self.complained_at <= 0:
            out.append("complained_at must be unix seconds > 0")
        if any(has_crlf(v) for v in (self.message_id, self.feedback_type, self.format,
                                     self.reporting_mta, self.user_agent, self.tenant)):
            out.append("message_id, feedback_type, format, reporting_mta, user_agent and "
                       "tenant must be single lines")
        return out


class SuppressionEdited(Event):
    """Ops added or removed a suppression of ``address``
    (``postlane suppressions add|remove``). ``suppression_type``: manual when adding
    (complaint and unsubscribe may be recorded by hand too); a removal names
    the type it lifts (hard_bounce also clears the counted bounces, as
    ``blacklist remove`` does). ``tenant`` / ``list_id``: the scope (empty:
    every tenant / every list)."""

    address: str
    action: str
    suppression_type: str = "manual"
    tenant: str = ""
    list_id: str = ""
    reason: str = ""
    by: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        out.extend(_address_problems("address", self.address))
        if self.action not in EDIT_ACTIONS:
            out.append(f"action {self.action!r} must be one of {', '.join(EDIT_ACTIONS)}")
        if self.suppression_type not in SUPPRESSION_TYPES:
            out.append(f"suppression_type {self.suppression_type!r} must be one of "
                       f"{', '.join(SUPPRESSION_TYPES)}")
        if self.action == "add" and self.suppression_type == "hard_bounce":
            out.append("a hard_bounce suppression comes from bounces; add type manual")
        if any(has_crlf(v) for v in (self.tenant, self.list_id, self.reason, self.by)):
            out.append("tenant, list_id, reason and by must be single lines")
        return out
