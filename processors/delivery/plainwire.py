"""The wire bytes of a plain mail without the email package. Pure.

Building each mail with the email package (``message.build_message``:
header objects parsed and refolded, the content manager, the generator) was
about a third of delivery's CPU per mail (bench/README.md, issue 14). Most
mail a business application sends is plain: a text body, ASCII headers
that need no quoting, encoding or folding. For such a mail ``plain_wire``
writes the same bytes directly (the body encoded by the email package's own
``_encode_text``, as ``set_content`` does); for anything else it returns None and the caller
builds the mail with the email package as before. The two are compared
byte for byte over generated mails in tests/unit/test_plainwire.py, so this
file never decides how a mail looks: it only recognises the mails whose
form the email package leaves as they are.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.contentmanager import _encode_text  # type: ignore[attr-defined]
from email.utils import format_datetime

from schemas import OutgoingServerConfigured, RoutingDecided, SendRequested
from schemas.addresses import AddressError, idna_domain, split_address

from .message import SMTP_POLICY, feedback_id

MAX_LINE = 78  # SMTP_POLICY.max_line_length: longer lines are folded or encoded
# printable ASCII words separated by single spaces; no encoded-word lookalike
_TEXT = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")
_ATOM_WORDS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
# names the email package parses into structured headers (addresses, dates,
# MIME parameters): a request's own header of such a name takes the slow path
_STRUCTURED = frozenset({
    "bcc", "cc", "content-disposition", "content-transfer-encoding", "content-type", "date",
    "from", "message-id", "mime-version", "orig-date", "reply-to", "resent-bcc", "resent-cc",
    "resent-date", "resent-from", "resent-sender", "resent-to", "sender", "subject", "to",
})
_OURS = frozenset({"x-postlane-id", "dkim-signature"})


def _text(value: str) -> bool:
    return (not value or _TEXT.fullmatch(value) is not None) and "=?" not in value


def _address(value: str) -> str | None:
    """``Name <local@domain>`` or ``local@domain`` as the email package
    writes it, when it needs no quoting or encoding; else None."""
    try:
        name, addr = split_address(value)
        local, _, domain = addr.rpartition("@")
        domain = idna_domain(domain)
    except AddressError:
        return None
    if not local or _DOT_ATOM.fullmatch(local) is None or not domain.isascii():
        return None
    if name and (_ATOM_WORDS.fullmatch(name) is None or "=?" in name):
        return None
    return f"{name} <{local}@{domain}>" if name else f"{local}@{domain}"


def _addresses(values: list[str]) -> str | None:
    out: list[str] = []
    for value in values:
        written = _address(value)
        if written is None:
            return None
        out.append(written)
    return ", ".join(out)


def plain_wire(
    request: SendRequested, decision: RoutingDecided, server: OutgoingServerConfigured,
    smtp_message_id: str, date: float | None = None,
    list_headers: dict[str, str] | None = None,
) -> tuple[bytes, list[str]] | None:
    """The mail ``message.build_message`` would build, as ``message_bytes``
    gives it, and its header names in order (for DKIM), when the mail is
    plain; None when it is not (build it with the email package)."""
    if request.html or request.attachments:
        return None
    headers: list[tuple[str, str]] = []
    sender = _address(decision.header_from or request.from_)
    if sender is None:
        return None
    headers.append(("From", sender))
    if not request.to:
        return None  # undisclosed-recipients or Cc only: the email package's way
    to = _addresses(list(request.to))
    if to is None:
        return None
    headers.append(("To", to))
    if request.cc:
        cc = _addresses(list(request.cc))
        if cc is None:
            return None
        headers.append(("Cc", cc))
    reply_to = request.reply_to or server.reply_to
    if reply_to:
        rt = _address(reply_to)
        if rt is None:
            return None
        headers.append(("Reply-To", rt))
    if not request.subject or not _text(request.subject):
        return None
    headers.append(("Subject", request.subject))
    when = date if date is not None else request.occurred_at
    headers.append(("Date", format_datetime(datetime.fromtimestamp(when, tz=UTC))))
    if _DOT_ATOM.fullmatch(smtp_message_id.strip("<>").replace("@", ".", 1)) is None:
        return None
    headers.append(("Message-ID", smtp_message_id))
    ours = {n.lower() for n in (list_headers or {})} | _OURS
    for name, value in request.headers.items():
        if name.lower() in ours:
            continue
        if (name.lower() in _STRUCTURED or _HEADER_NAME.fullmatch(name) is None
                or not value or not _text(value)):
            return None
        headers.append((name, value))
    # the list headers are written raw (folded by us, as set_raw keeps them),
    # after the request's own and before Feedback-ID
    for name, value in (list_headers or {}).items():
        if not value.isascii() or not name.isascii():
            return None
        headers.append((name, value.replace(", <", ",\r\n <")))
    checked = len(headers) - len(list_headers or {})  # the lines that must fit MAX_LINE
    if "feedback-id" not in {n.lower() for n in request.headers}:
        fid = feedback_id(request, server)
        if not _text(fid):
            return None
        headers.append(("Feedback-ID", fid))
    if not _text(request.message_id):
        return None
    if any(len(f"{n}: {v}") > MAX_LINE
           for n, v in headers[:checked] + headers[checked + len(list_headers or {}):]):
        return None
    # the body as the email package's content manager encodes it (7bit,
    # quoted-printable or base64, its own choice), with its own function
    cte, data = _encode_text(request.text, "utf-8", None, SMTP_POLICY)
    headers += [("X-Postlane-Id", request.message_id),
                ("Content-Type", 'text/plain; charset="utf-8"'),
                ("Content-Transfer-Encoding", cte), ("MIME-Version", "1.0")]
    head = "".join(f"{n}: {v}\r\n" for n, v in headers)
    body = "\r\n".join(data.splitlines()) + ("\r\n" if data.endswith("\n") else "")
    return (head + "\r\n" + body).encode("ascii"), [n for n, _ in headers]
