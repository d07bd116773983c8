"""Read an inbound mail for routing. Pure: bytes in, a ``ParsedMail`` out,
or ``MalformedMail`` saying what is broken.

What routing needs: the Message-ID, the sender, every recipient (SMTP
envelope, Delivered-To, X-Original-To, To, Cc, Resent-To, Resent-Cc, in
that order), In-Reply-To and References (folded over many lines, hundreds
of ids, with or without angle brackets), and the signs of a bounce or an
automatic mail. The parser is lenient as mail clients are; a mail is
malformed only when routing cannot work on it: no header block, no usable
From address, or a multipart body whose boundary is missing.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from email import errors as email_errors
from email import message_from_bytes
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any

from schemas.addresses import AddressError, check_address, idna_domain
from schemas.errors import PostlaneError

# Message-IDs: "<left@right>" tokens; the angle brackets are optional in
# broken mailers' References, so bare tokens with an @ are taken too.
_ID_IN_BRACKETS = re.compile(r"<([^<>\s]+)>")
_FOLD = re.compile(r"\r?\n[ \t]+")
MAX_REFERENCES = 200  # In-Reply-To + References ids considered (first and newest kept)

RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "to", "cc", "resent-to", "resent-cc")

_FATAL_DEFECTS = (
    email_errors.NoBoundaryInMultipartDefect,
    email_errors.StartBoundaryNotFoundDefect,
    email_errors.MultipartInvariantViolationDefect,
)


class MalformedMail(PostlaneError, ValueError):
    """The mail cannot be routed; the message says what is broken."""


def normalize_message_id(value: str) -> str:
    """``" <Abc.1@Example.COM> "`` -> ``"Abc.1@example.com"``: no brackets
    or spaces, the domain part lower-cased (the left part is
    case-sensitive, RFC 5322 3.6.4)."""
    v = value.strip()
    if v.startswith("<") and v.endswith(">"):
        v = v[1:-1].strip()
    left, at, right = v.rpartition("@")
    if not at:
        return v
    return f"{left}@{right.lower()}"


def message_ids(value: str) -> list[str]:
    """Every Message-ID in a header value (folded or not), normalized,
    without repeats, in order."""
    unfolded = _FOLD.sub(" ", value or "")
    found = _ID_IN_BRACKETS.findall(unfolded)
    if not found:
        found = [t.strip("<>") for t in re.split(r"[\s,]+", unfolded) if "@" in t]
    out: dict[str, None] = {}
    for token in found:
        if "@" in token and len(token) <= 998:
            out.setdefault(normalize_message_id(token), None)
    return list(out)


def inbound_key(message_id: str, inbound_id: str) -> str:
    """The partition key of an inbound mail: its normalized Message-ID,
    or ``inbound:<inbound_id>`` when it has none."""
    ids = message_ids(message_id) if message_id else []
    return ids[0] if ids else f"inbound:{inbound_id}"


def header_message_id(raw: bytes) -> str:
    """The Message-ID header of a raw mail as found ("" when none), reading
    only the header block."""
    try:
        headers = BytesHeaderParser(policy=email_policy.compat32).parsebytes(raw)
        value = headers.get("Message-ID", "") or ""
    except Exception:  # noqa: BLE001 - a mail we cannot even split has no id
        return ""
    return _FOLD.sub(" ", str(value)).strip()


def header_block(raw: bytes, limit: int = 64 * 1024) -> str:
    """The header block as text (for a rejected mail's record)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else limit][:limit]
    return head.decode("utf-8", "replace")


@dataclass(frozen=True)
class ParsedMail:
    message_id: str  # normalized; "" when the mail has none
    message_id_header: str
    sender: str  # bare From address
    sender_name: str
    recipients: list[str]  # bare addresses from every recipient source, in order, no repeats
    to: list[str]  # bare addresses of the To header and the SMTP envelope
    in_reply_to: list[str]
    references: list[str]
    subject: str
    content_type: str
    report_type: str
    auto_submitted: str
    precedence: str
    list_id: str
    return_path: str
    defects: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParsedMail:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _text(value: Any) -> str:
    """A header value as text: RFC 2047 words decoded, folding removed."""
    if value is None:
        return ""
    raw = str(value)
    try:
        text = str(make_header(decode_header(raw)))
    except (UnicodeError, LookupError, ValueError, email_errors.HeaderParseError):
        text = raw
    return _FOLD.sub(" ", text).replace("\r", "").replace("\n", "").strip()


def _addresses(values: list[str], defects: list[str], where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, addr in getaddresses([_FOLD.sub(" ", str(v)) for v in values]):
        addr = addr.strip()
        if not addr:
            continue
        try:
            check_address(addr)
        except AddressError as exc:
            defects.append(f"{where}: {exc}")
            continue
        out.append((_text(name), addr))
    return out


def _bare(addr: str) -> str:
    """The address as written with its domain in IDNA lower case (the local
    part keeps its case: a bounce address carries a message id)."""
    local, _, domain = addr.strip().rpartition("@")
    try:
        return f"{local}@{idna_domain(domain)}"
    except AddressError:
        return addr.strip()


def _add(into: dict[str, str], addr: str) -> None:
    bare = _bare(addr)
    into.setdefault(bare.lower(), bare)


def _references(in_reply_to: list[str], references: list[str]) -> list[str]:
    refs = references
    if len(refs) > MAX_REFERENCES:  # keep the root (first) and the newest
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1):]]
    return refs


def parse_mail(raw: bytes, envelope_to: list[str] | None = None) -> ParsedMail:
    """Parse ``raw``; ``envelope_to`` are the SMTP RCPT TO addresses when
    the mail came through the SMTP ingress. Raises MalformedMail."""
    if not raw or not raw.strip():
        raise MalformedMail("the mail is empty")
    try:
        msg: Message = message_from_bytes(raw, policy=email_policy.compat32)
    except Exception as exc:  # noqa: BLE001 - the parser is lenient; anything here is fatal
        raise MalformedMail(f"the mail cannot be parsed: {exc}") from None
    if not msg.keys():
        raise MalformedMail("no header block: the mail does not start with header fields")
    defects: list[str] = []
    for part in msg.walk():
        for defect in part.defects:
            if isinstance(defect, _FATAL_DEFECTS):
                ctype = part.get_content_type()
                raise MalformedMail(
                    f"broken MIME structure in a {ctype} part: {type(defect).__name__}"
                    f" ({defect.__doc__ or 'no description'})".replace("\n", " ")
                )
            defects.append(type(defect).__name__)

    from_values = msg.get_all("From") or []
    senders = _addresses([str(v) for v in from_values], defects, "From")
    if not senders:
        shown = _text(from_values[0]) if from_values else ""
        raise MalformedMail(
            f"no usable From address (From: {shown!r})" if from_values else "no From header"
        )
    sender_name, sender = senders[0]

    recipients: dict[str, str] = {}
    to: dict[str, str] = {}
    for addr in envelope_to or []:
        _add(recipients, addr)
        _add(to, addr)
    for header in RECIPIENT_HEADERS:
        values = [str(v) for v in msg.get_all(header) or []]
        for _, addr in _addresses(values, defects, header):
            _add(recipients, addr)
            if header == "to":
                _add(to, addr)

    mid_header = _FOLD.sub(" ", str(msg.get("Message-ID", "") or "")).strip()
    mids = message_ids(mid_header)
    in_reply_to = message_ids(str(msg.get("In-Reply-To", "") or ""))
    references = _references(in_reply_to, message_ids(
        " ".join(str(v) for v in msg.get_all("References") or [])
    ))
    return ParsedMail(
        message_id=mids[0] if mids else "",
        message_id_header=mid_header,
        sender=sender,
        sender_name=sender_name,
        recipients=list(recipients.values()),
        to=list(to.values()),
        in_reply_to=in_reply_to,
        references=references,
        subject=_text(msg.get("Subject", "")),
        content_type=msg.get_content_type(),
        report_type=str(msg.get_param("report-type", "") or "").lower(),
        auto_submitted=_text(msg.get("Auto-Submitted", "")).lower(),
        precedence=_text(msg.get("Precedence", "")).lower(),
        list_id=_text(msg.get("List-Id", "")),
        return_path=_text(msg.get("Return-Path", "")),
        defects=defects,
    )
