"""Build the RFC 5322 message for a routed SendRequested. Pure: no I/O, no
clock (the Date comes from the request), so a retry builds the same mail
with the same Message-ID.

The header From is the router's ``header_from`` (possibly rewritten to the
notifications address); Bcc recipients and the server's archive copy are
envelope-only and never appear in a header.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime

from schemas import OutgoingServerConfigured, RoutingDecided, SendRequested
from schemas.addresses import AddressError, idna_domain, split_address
from schemas.errors import PostlaneError


class CachedHeaderRegistry(HeaderRegistry):
    """The email package's header registry, building each header class once.
    The stdlib's ``__getitem__`` makes a new class with ``type()`` for every
    header set or parsed (a sixth of the delivery worker's time per mail);
    the class depends only on the header's registered class."""

    def __init__(self) -> None:
        super().__init__()
        self._made: dict[type, type] = {}

    def map_to_type(self, name: str, cls: type) -> None:
        super().map_to_type(name, cls)
        self._made.clear()

    def __getitem__(self, name: str) -> type:
        cls = self.registry.get(name.lower(), self.default_class)
        made = self._made.get(cls)
        if made is None:
            made = self._made[cls] = super().__getitem__(name)
        return made


# CRLF line endings, and a 7-bit body (quoted-printable or base64 for
# non-ASCII text), so no server needs 8BITMIME. refold_source "none": a
# header set raw (``set_raw``: the List-Unsubscribe links, folded by us
# between the links) is written as it is; the email package would refold a
# long one into RFC 2047 encoded words, which no client reads as a URL.
# Every other header is a header object, folded as before.
SMTP_POLICY = policy.SMTP.clone(cte_type="7bit", refold_source="none",
                                header_factory=CachedHeaderRegistry())

# Characters kept as they are in the left part of a Message-ID (RFC 5322
# dot-atom-text minus a few that confuse mail clients); the rest become
# "=XX", so the mapping stays one-to-one.
_ID_SAFE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/?^_`{|}~.]")


# Headers delivery always sets itself: a request's extra header of the same
# name is dropped (so are its List-Unsubscribe(-Post) when delivery adds them
# to a mass mail; a request's own Feedback-ID is kept instead of ours).
_OURS = {"x-postlane-id", "dkim-signature"}


class MessageError(PostlaneError, ValueError):
    """The request cannot be turned into a mail; the message says why."""


def envelope_address(addr: str) -> str:
    """A bare address for the SMTP envelope: the domain in its ASCII
    (IDNA) form, the local part as written."""
    local, _, domain = addr.strip().rpartition("@")
    if not local:
        return addr.strip()
    try:
        return f"{local}@{idna_domain(domain)}"
    except AddressError:
        return addr.strip()


def envelope_recipients(
    request: SendRequested, server: OutgoingServerConfigured
) -> list[str]:
    """Envelope recipients: to + cc + bcc as bare addresses, deduplicated
    (ignoring case) in order, plus the server's archive copy when set."""
    seen: dict[str, str] = {}
    for value in [*request.to, *request.cc, *request.bcc]:
        bare = envelope_address(split_address(value)[1])
        seen.setdefault(bare.lower(), bare)
    if server.archive_bcc:
        bare = envelope_address(server.archive_bcc)
        seen.setdefault(bare.lower(), bare)
    return list(seen.values())


def make_smtp_message_id(message_id: str, domain: str) -> str:
    """``<{message_id}@{domain}>``, the same for every attempt of a mail.
    Characters not allowed in a Message-ID are written ``=XX``."""
    left = "".join(
        c if _ID_SAFE.fullmatch(c) else "".join(f"={b:02X}" for b in c.encode())
        for c in message_id
    ).strip(".")
    left = re.sub(r"\.{2,}", lambda m: "=2E" * len(m.group()), left) or "mail"
    try:
        right = idna_domain(domain)
    except AddressError:
        right = "postlane.invalid"
    return f"<{left}@{right}>"


def _address(value: str, field: str) -> Address:
    try:
        name, addr = split_address(value)
    except AddressError as exc:
        raise MessageError(f"{field}: {exc}") from None
    local, _, domain = addr.rpartition("@")
    if not local.isascii():
        raise MessageError(
            f"{field}: {addr!r} has a non-ASCII local part, which needs SMTPUTF8 "
            "(not supported yet): use an ASCII address"
        )
    try:
        ascii_domain = idna_domain(domain)
    except AddressError as exc:
        raise MessageError(f"{field}: {exc}") from None
    return Address(display_name=name, username=local, domain=ascii_domain)


def _content_type(value: object) -> tuple[str, str]:
    ctype = value if isinstance(value, str) and value.count("/") == 1 else ""
    maintype, _, subtype = (ctype or "application/octet-stream").strip().lower().partition("/")
    if maintype in ("multipart", "message"):
        # Attached as opaque bytes: a base64 message/* part is not allowed.
        return "application", "octet-stream"
    return maintype, subtype


def feedback_id(request: SendRequested, server: OutgoingServerConfigured) -> str:
    """Gmail's feedback loop id, ``campaign:tenant:kind:sender-id``: the
    campaign, the tenant, the kind (transactional/mass) and the outgoing
    server's name as the sender id. A ':' inside a part becomes '-', and
    every part is cut to 64 characters (the header stays one short line)."""
    parts = [request.campaign, request.tenant, request.kind, server.name]
    return ":".join(re.sub(r"[:\s]", "-", p)[:64] for p in parts)


def build_message(
    request: SendRequested,
    decision: RoutingDecided,
    server: OutgoingServerConfigured,
    smtp_message_id: str,
    date: float | None = None,
    list_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """The mail for ``request`` as routed by ``decision`` through ``server``.

    Headers: From (``decision.header_from``), To, Cc, Reply-To (the
    request's, else the server's default), Subject, Date (``date`` or the
    request's ``occurred_at``), Message-ID (its domain is the From domain,
    ``make_smtp_message_id``), the request's extra headers,
    ``list_headers`` (List-Unsubscribe and List-Unsubscribe-Post of a mass
    mail, ``processors.unsubscribe.token``), Feedback-ID and
    ``X-Postlane-Id``. Body: text and/or html (alternatives when both), then
    the attachments. Raises MessageError for input that cannot be mailed.
    DKIM signing comes after (``dkim.sign`` on the wire bytes)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = _address(decision.header_from or request.from_, "from")
    to = [_address(v, "to") for v in request.to]
    cc = [_address(v, "cc") for v in request.cc]
    if to:
        msg["To"] = to
    elif not cc:
        msg["To"] = "undisclosed-recipients:;"
    if cc:
        msg["Cc"] = cc
    reply_to = request.reply_to or server.reply_to
    if reply_to:
        msg["Reply-To"] = _address(reply_to, "reply_to")
    msg["Subject"] = request.subject
    when = date if date is not None else request.occurred_at
    msg["Date"] = format_datetime(datetime.fromtimestamp(when, tz=UTC))
    msg["Message-ID"] = smtp_message_id
    ours = {n.lower() for n in (list_headers or {})} | _OURS
    for name, value in request.headers.items():
        if name.lower() in ours:
            continue  # set below; a request's own would be a second, conflicting copy
        msg[name] = value
    for name, value in (list_headers or {}).items():
        # raw, one link per line (RFC 2369 links are folded after a comma)
        msg.set_raw(name, value.replace(", <", ",\r\n <"))
    if "feedback-id" not in {n.lower() for n in request.headers}:
        msg["Feedback-ID"] = feedback_id(request, server)
    msg["X-Postlane-Id"] = request.message_id

    if request.text and request.html:
        msg.set_content(request.text)
        msg.add_alternative(request.html, subtype="html")
    elif request.html:
        msg.set_content(request.html, subtype="html")
    else:
        msg.set_content(request.text)

    for i, att in enumerate(request.attachments):
        if not isinstance(att, dict):
            raise MessageError(f"attachment {i} must be an object")
        try:
            data = base64.b64decode(str(att.get("data", "")), validate=True)
        except ValueError:
            raise MessageError(f"attachment {i}: data is not valid base64") from None
        maintype, subtype = _content_type(att.get("content_type"))
        filename = str(att.get("filename") or f"attachment-{i + 1}")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def message_bytes(msg: EmailMessage) -> bytes:
    """The wire form (CRLF line endings) handed to DATA."""
    return msg.as_bytes(policy=SMTP_POLICY)
