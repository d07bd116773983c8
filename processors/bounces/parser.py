"""Read a bounce mail: one result per failed recipient. Pure: bytes in.

What it understands, in this order:

1. ARF feedback reports (RFC 5965, ``message/feedback-report``): complaints,
   not failures (kind ``feedback``);
2. delivery status notifications (RFC 3464, ``message/delivery-status``):
   one result per recipient block with ``Action: failed`` (``delayed``
   blocks are delay notices, kind ``delay``); the human-readable part fills
   in what the block leaves out (Exim writes ``Status: 5.0.0`` and no
   diagnostic for "Unrouteable address");
3. Amazon SES notifications delivered as e-mail (SNS JSON);
4. the text formats of servers that send no DSN: qmail (QSBMF), Yahoo,
   Sendmail, Exim, Postfix, Gmail's old text, Exchange 2003/2007, Domino,
   and at last any ``X-Failed-Recipients`` header;
5. automatic replies (out of office, vacation): kind ``auto_reply``;
6. anything else: kind ``not_bounce`` (nothing is invented).

``format`` names the producer when its signature is seen (postfix, exim,
sendmail, qmail, exchange, office365, gmail, yahoo, amazon_ses, courier,
domino), else ``rfc3464`` for a DSN of unknown origin.

Attribution (``message_id``, our message id), first found wins: the bounce
address (``bounce+<id>@``: the envelope recipient the inbound router saw,
the bounce's To/Delivered-To, the quoted Return-Path, ARF's
Original-Mail-From); the ``X-Postlane-Id`` of the quoted original
(``message/rfc822`` or ``text/rfc822-headers``); its Message-ID
(``<id@domain>``, as delivery makes it); the bounce's In-Reply-To /
References / X-Original-Message-ID; those headers quoted in the text.
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, message_from_string
from email import policy as email_policy
from email.header import decode_header, make_header
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any

from schemas.errors import PostlaneError

from .classify import (
    best_status,
    classify,
    derived_status_overridden,
    find_replycode,
    find_status,
    infer_status,
)

KINDS = ("bounce", "delay", "auto_reply", "feedback", "not_bounce")
PUBLIC_FIELDS = ("recipient", "status", "replycode", "hard", "reason", "diagnostic",
                 "message_id")

_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?"
_ADDR_RE = re.compile(_ADDR)
_FOLD = re.compile(r"\r?\n[ \t]+")
_MSGID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_DAEMONS = ("mailer-daemon", "postmaster", "mail-daemon", "maildaemon", "mailerdaemon")
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (status|failure|notification|report|problem)|returned mail|"
    r"failure notice|mail delivery failed|delivery failure|not (been )?delivered|"
    r"non-?delivery|could not send|delayed mail|warning: message|mail system error|"
    r"returned to sender|nicht zustellbar|non remis|no entregado",
    re.IGNORECASE,
)
_AUTO_SUBJECT = re.compile(
    r"^(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?office|"
    r"away from (my|the) (mail|office)|on vacation|vacation|abwesenheit|"
    r"r[ée]ponse automatique|absence|fuera de la oficina|risposta automatica|autosvar)",
    re.IGNORECASE,
)
_DELAY_WORDS = re.compile(
    r"this is a warning|warning message only|has not yet been delivered|not been delivered "
    r"yet|not delivered yet|could not send message for past|still being retried|"
    r"will (be )?retr(y|ied)|has been delayed|transient non-fatal|delivery (is )?delayed|"
    r"message not delivered yet|delivery incomplete",
    re.IGNORECASE,
)


class BounceParseError(PostlaneError, ValueError):
    """The bytes are not a mail at all."""


@dataclass(frozen=True)
class BounceResult:
    """One recipient. ``action``: failed, delayed or complaint."""

    recipient: str
    status: str
    replycode: int
    hard: bool
    reason: str
    diagnostic: str
    message_id: str
    action: str = "failed"
    remote_mta: str = ""
    inferred: bool = False  # the status was inferred from the text (no enhanced code)

    def public(self) -> dict[str, Any]:
        """The ``postlane bounces parse --json`` form (unknowns are null)."""
        return {
            "recipient": self.recipient,
            "status": self.status or None,
            "replycode": self.replycode or None,
            "hard": self.hard,
            "reason": self.reason,
            "diagnostic": self.diagnostic or None,
            "message_id": self.message_id or None,
        }


@dataclass(frozen=True)
class ParsedBounce:
    kind: str
    format: str
    results: tuple[BounceResult, ...] = ()  # failed recipients
    delayed: tuple[BounceResult, ...] = ()
    complaints: tuple[BounceResult, ...] = ()
    message_id: str = ""
    attributed_by: str = ""  # bounce_address | x_postlane_id | message_id | references | text
    reporting_mta: str = ""
    sender: str = ""  # the From address of this mail (an auto-reply's author)
    subject: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        def full(r: BounceResult) -> dict[str, Any]:
            return {**r.public(), "status_inferred": r.inferred}

        return {
            "kind": self.kind,
            "format": self.format,
            "message_id": self.message_id or None,
            "attributed_by": self.attributed_by or None,
            "reporting_mta": self.reporting_mta or None,
            "sender": self.sender or None,
            "subject": self.subject,
            "note": self.note,
            "results": [full(r) for r in self.results],
            "delayed": [full(r) for r in self.delayed],
            "complaints": [r.public() for r in self.complaints],
        }


@dataclass
class _Parts:
    dsn: list[Message | str] = field(default_factory=list)
    feedback: list[Message | str] = field(default_factory=list)
    quoted: list[Message] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    htmls: list[str] = field(default_factory=list)


# --- small helpers --------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return _FOLD.sub(" ", str(make_header(decode_header(str(value))))).strip()
    except (UnicodeError, LookupError, ValueError, TypeError):
        return _FOLD.sub(" ", str(value)).strip()


def _bare(value: str) -> str:
    """``"rfc822; <Bob@Example.net>"`` -> ``"bob@example.net"`` ("" if none)."""
    v = value.strip()
    if ";" in v:
        v = v.split(";", 1)[1]
    v = v.strip().strip("<>").strip()
    m = _ADDR_RE.search(v)
    return m.group(0).lower().rstrip(".") if m else ""


def _decode_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:
        return payload.decode("utf-8", errors="replace")


def _strip_html(text: str) -> str:
    text = re.sub(r"(?is)<(script|style).*?</\1>", " ", text)
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>|</tr>|</h\d>", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


MAX_DEPTH = 60  # MIME nesting followed; deeper parts are not read
MAX_TEXT = 1_000_000  # characters of human-readable text read
MAX_RESULTS = 1000  # recipients per bounce
MAX_HEADER = 1_000_000  # bytes of header block (a real bounce's is a few KB)
MAX_MULTIPARTS = 200  # multipart containers in one mail (a real bounce has a handful)
_MULTIPART = re.compile(rb"^content-type:[ \t]*multipart/", re.I | re.M)


def _walk(msg: Message, parts: _Parts, depth: int = 0) -> None:
    """Collect the parts, without descending into quoted messages."""
    if depth > MAX_DEPTH:
        return
    ctype = msg.get_content_type()
    if ctype in ("message/delivery-status", "message/global-delivery-status"):
        parts.dsn.append(msg)
    elif ctype == "message/feedback-report":
        parts.feedback.append(msg)
    elif ctype in ("message/rfc822", "message/global"):
        inner = msg.get_payload()
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            parts.quoted.append(inner[0])
    elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
        parts.quoted.append(message_from_string(_decode_text(msg).lstrip() + "\n\n"))
    elif msg.is_multipart():
        for sub in msg.get_payload():  # type: ignore[union-attr]
            if isinstance(sub, Message):
                _walk(sub, parts, depth + 1)
    elif ctype == "text/html":
        parts.htmls.append(_strip_html(_decode_text(msg)))
    elif ctype.startswith("text/") or ctype == "application/json" \
            or not msg.get("Content-Type"):
        parts.texts.append(_decode_text(msg))


def _blocks(part: Message | str) -> list[dict[str, str]]:
    """The header blocks of a delivery-status or feedback-report part, with
    lower-cased field names and unfolded values."""
    text = ""
    if isinstance(part, Message):
        payload = part.get_payload()
        if isinstance(payload, list):
            out = []
            for block in payload:
                if isinstance(block, Message):
                    out.append({k.lower(): _FOLD.sub(" ", str(v)).strip()
                                for k, v in block.items()})
            if out:
                return out
            return []
        text = _decode_text(part)
    else:
        text = part
    out = []
    for chunk in re.split(r"\r?\n\s*\r?\n", text.replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        last = ""
        for line in chunk.split("\n"):
            if line[:1] in (" ", "\t") and last:
                fields[last] += " " + line.strip()
            elif ":" in line:
                k, _, v = line.partition(":")
                last = k.strip().lower()
                fields[last] = v.strip()
        if fields:
            out.append(fields)
    return out


def _clean_diagnostic(value: str) -> str:
    """``"smtp; 550-5.1.1 The email ... 550-5.1.1 more"`` -> one clean line."""
    v = _FOLD.sub(" ", value).strip()
    if ";" in v[:12]:
        v = v.split(";", 1)[1].strip()
    m = re.match(r"(\d{3})[- ](\d\.\d{1,3}\.\d{1,3})\s", v)
    if m:  # multi-line replies repeat "550-5.1.1 " on every line
        v = m.group(0) + re.sub(rf"\s{m.group(1)}[- ]{re.escape(m.group(2))}\s+", " ",
                                v[m.end():])
        v = re.sub(rf"^{m.group(1)}-", f"{m.group(1)} ", v)
    return re.sub(r"\s+", " ", v).strip()


_LINE_FOR_ADDRESS = re.compile(rf"^\s*\"?<?({_ADDR})>?\"?:?(?:\s|$)")


@functools.lru_cache(maxsize=4)
def _mentions(text: str) -> tuple[list[str], dict[str, int]]:
    """The lines of ``text`` and, per address, the line that first names
    it: one pass, so a bounce naming thousands of recipients stays linear."""
    lines = text.replace("\r\n", "\n").split("\n")
    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        if "@" in line:
            for found in _ADDR_RE.findall(line):
                first.setdefault(found.lower().rstrip("."), i)
    return lines, first


def _paragraph(addr: str, text: str) -> str:
    """The lines of ``text`` about ``addr``: from its first mention to the
    next blank line or the next recipient's line (indented continuation kept)."""
    lines, first = _mentions(text)
    low = addr.lower()
    i = first.get(low)
    if i is None:
        return ""
    out = [lines[i]]
    for nxt in lines[i + 1:i + 40]:
        other = _LINE_FOR_ADDRESS.match(nxt)
        if not nxt.strip() or (other and other.group(1).lower() != low):
            break  # a blank line, or the line of the next recipient
        out.append(nxt)
    return " ".join(x.strip() for x in out)


def _without_address(paragraph: str, addr: str) -> str:
    p = re.sub(re.escape(addr), "", paragraph, count=1, flags=re.IGNORECASE)
    return re.sub(r"^[\s<>:,\-]+", "", p).strip()


# --- attribution ----------------------------------------------------------------------


def _decode_left(left: str) -> str:
    """The inverse of delivery's ``=XX`` escaping of a message id."""
    if "=" not in left:
        return left
    out = bytearray()
    i = 0
    while i < len(left):
        if left[i] == "=" and re.fullmatch(r"[0-9A-F]{2}", left[i + 1:i + 3] or ""):
            out.append(int(left[i + 1:i + 3], 16))
            i += 3
        else:
            out.extend(left[i].encode())
            i += 1
    return out.decode("utf-8", errors="replace")


def bounce_address_id(addr: str, bounce_alias: str = "bounce",
                      domains: Collection[str] = ()) -> str:
    """``bounce+<id>@<domain>`` -> ``<id>`` ("" when it is not one; any
    domain when ``domains`` is empty)."""
    bare = _bare(addr) if "@" in addr else ""
    if not bare:
        return ""
    m = re.search(r"([^\s<>\"]+)@([A-Za-z0-9.\-]+)", addr)
    local, domain = (m.group(1), m.group(2).lower()) if m else bare.rsplit("@", 1)
    prefix = (bounce_alias.strip() or "bounce").lower() + "+"
    if not local.lower().startswith(prefix):
        return ""
    if domains and domain.rstrip(".") not in {d.lower() for d in domains}:
        return ""
    return local[len(prefix):]


def _id_from_message_id(value: str, domains: Collection[str]) -> str:
    for left_right in _MSGID.findall(value) or ([value.strip()] if "@" in value else []):
        left, _, right = left_right.strip("<>").rpartition("@")
        if not left:
            continue
        if domains and right.lower() not in {d.lower() for d in domains}:
            continue
        return _decode_left(left)
    return ""


_TEXT_POSTLANE_ID = re.compile(r"(?im)^[ \t>]*X-Postlane-Id:[ \t]*(\S+)")
_TEXT_RETURN_PATH = re.compile(r"(?im)^[ \t>]*Return-Path:[ \t]*(\S+)")
_TEXT_MESSAGE_ID = re.compile(r"(?im)^[ \t>]*Message-I[Dd]:[ \t]*(<[^>\s]+>)")


def attribute(
    msg: Message, parts: _Parts, *, bounce_alias: str, domains: Collection[str],
    envelope_message_id: str = "", extra_headers: list[tuple[str, str]] | None = None,
    extra_bounce_addresses: list[str] | None = None,
) -> tuple[str, str]:
    """(our message id, how it was found) or ("", "")."""
    if envelope_message_id:
        return envelope_message_id, "bounce_address"
    candidates = [_header(msg, h) for h in ("To", "Delivered-To", "X-Original-To",
                                           "Envelope-To")]
    candidates += extra_bounce_addresses or []
    for q in parts.quoted:
        candidates.append(_header(q, "Return-Path"))
    for value in candidates:
        for _, addr in getaddresses([value]) if value else []:
            found = bounce_address_id(addr, bounce_alias, domains)
            if found:
                return found, "bounce_address"
    quoted_headers: list[tuple[str, str]] = [
        (k.lower(), _FOLD.sub(" ", str(v)).strip()) for q in parts.quoted for k, v in q.items()
    ] + [(k.lower(), v) for k, v in (extra_headers or [])]
    for k, v in quoted_headers:
        if k == "x-postlane-id" and v.strip():
            return v.strip(), "x_postlane_id"
    for k, v in quoted_headers:
        if k == "message-id":
            found = _id_from_message_id(v, domains)
            if found:
                return found, "message_id"
    refs = [_header(msg, h) for h in ("In-Reply-To", "References")]
    for block_part in parts.dsn:
        for block in _blocks(block_part)[:1]:
            refs.append(block.get("x-original-message-id", ""))
    for value in refs:
        found = _id_from_message_id(value, domains) if value else ""
        if found:
            return found, "references"
    body = "\n".join(parts.texts + parts.htmls)
    for m in _TEXT_RETURN_PATH.finditer(body):
        found = bounce_address_id(m.group(1), bounce_alias, domains)
        if found:
            return found, "text"
    pid = _TEXT_POSTLANE_ID.search(body)
    if pid:
        return pid.group(1), "text"
    for mm in _TEXT_MESSAGE_ID.finditer(body):
        found = _id_from_message_id(mm.group(1), domains)
        if found:
            return found, "text"
    return "", ""


# --- formats ----------------------------------------------------------------------------

_SIGNATURES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("amazon_ses", re.compile(r"amazonses\.com|sns\.amazonaws\.com", re.I)),
    ("google_groups", re.compile(r"googlegroups\.com|Google Groups", re.I)),
    ("sendgrid", re.compile(r"reporting-mta: ?dns; ?(\S+\.)?sendgrid\.net|automatically "
                            r"generated message from SendGrid", re.I)),
    ("zoho", re.compile(r"reporting-mta: ?dns; ?\S*zoho(mail)?\.(com|eu|in)\b|"
                        r"mailer-daemon@\S*zoho(mail)?\.", re.I)),
    ("gmail", re.compile(r"mailer-daemon@google(mail)?\.com|reporting-mta: dns; ?google"
                         r"(mail)?\.com|Google tried to deliver", re.I)),
    ("office365", re.compile(r"reporting-mta: ?dns; ?\S+\.(prod\.outlook\.com|outlook\.com|"
                             r"exchangelabs\.com)\b|From: Microsoft Outlook", re.I)),
    ("exchange", re.compile(r"X-MS-Exchange-Message-Is-Ndr|X-DSNContext|X-MS-Embedded-Report|"
                            r"Delivery has failed to these recipients|did not reach the "
                            r"following recipient|Diagnostic information for administrators|"
                            r"From: Microsoft Exchange", re.I)),
    ("postfix", re.compile(r"X-Postfix-Queue-ID|This is the mail system at host|"
                           r"This is the Postfix program|Diagnostic-Code: X-Postfix", re.I)),
    ("exim", re.compile(r"This message was created automatically by mail delivery software|"
                        r"eximdsn", re.I)),
    ("sendmail", re.compile(r"The following addresses had (permanent fatal|transient "
                            r"non-fatal) errors|Transcript of session follows|The original "
                            r"message was received at", re.I)),
    ("courier", re.compile(r"running the Courier mail server", re.I)),
    ("opensmtpd", re.compile(r"This is the MAILER-DAEMON, please DO NOT REPLY|\(OpenSMTPD\)",
                             re.I)),
    ("qmail", re.compile(r"This is the qmail-send program", re.I)),
    ("dma", re.compile(r"DragonFly Mail Agent", re.I)),
    ("yahoo", re.compile(r"Sorry, we were unable to deliver your message|"
                         r"MAILER-DAEMON@yahoo\.com", re.I)),
    ("domino", re.compile(r"Domino Directory|Lotus (Domino|SMTP|Notes)|was not delivered to:|"
                          r"-+\s*Failure Reasons\s*-+", re.I)),
)


SIGNATURE_SPAN = 12_000  # a bounce says who wrote it at its top, not in the quoted mail


def detect_format(head: str, text: str, reporting_mta: str) -> str:
    blob = f"{head[:SIGNATURE_SPAN]}\n{text[:SIGNATURE_SPAN]}\nreporting-mta: {reporting_mta}"
    for name, pattern in _SIGNATURES:
        if pattern.search(blob):
            return name
    return ""


# --- text formats: (recipient, diagnostic) pairs ---------------------------------------

Found = list[tuple[str, str]]


def _cut(text: str, *ends: str) -> str:
    low = text.lower()
    at = min((i for i in (low.find(e.lower()) for e in ends) if i >= 0), default=len(text))
    return text[:at]


def _angle_blocks(text: str) -> Found:
    """qmail / Yahoo / Postfix text: ``<addr>:`` then the reason."""
    out: Found = []
    for m in re.finditer(rf"(?ms)^<({_ADDR})>:?[ \t]*(.*?)(?=^<{_ADDR}>:|^---|\Z)", text):
        out.append((m.group(1).lower(), " ".join(m.group(2).split())))
    return out


def _qmail(text: str) -> Found:
    if not re.search(r"qmail-send program|wasn't able to deliver your message|"
                     r"unable to deliver your message to the following", text, re.I):
        return []
    return _angle_blocks(_cut(text, "--- Below this line", "--- Enclosed are the original"))


def _postfix_text(text: str) -> Found:
    if not re.search(r"This is the (mail system|Postfix program) at host", text, re.I):
        return []
    body = _cut(text, "--- Delivery report", "Content-Description: Delivery report")
    out: Found = []
    for m in re.finditer(rf"(?ms)^<({_ADDR})>:[ \t]*(.*?)(?=^\s*$|\Z)", body):
        out.append((m.group(1).lower(), " ".join(m.group(2).split())))
    return out


def _sendmail(text: str) -> Found:
    m = re.search(r"-{3,} The following addresses had (permanent fatal|transient non-fatal) "
                  r"errors -{3,}\s*\n(.*?)(?:\n\s*\n|\Z)", text, re.I | re.S)
    body = _cut(text, "----- Original message follows", "----- Message header follows",
                "----- Returned message")
    out: Found = []
    if m:
        block = m.group(2)
        for am in re.finditer(rf"<?({_ADDR})>?[^\n]*(?:\n\s+\(reason: ([^)]*)\))?", block):
            addr = am.group(1).lower()
            reason = am.group(2) or ""
            if not reason:  # from the transcript: "<<< 552 5.2.2 <addr>... Mailbox full"
                lines = [ln for ln in body.split("\n") if addr in ln.lower()]
                coded = [ln for ln in lines if re.search(r"\b[45]\d\d\b", ln)]
                if coded or lines:  # else "<addr>... Deferred: Connection refused by x"
                    reason = re.sub(r"^[<>\s]+", "", (coded or lines)[0]).strip()
                gave_up = re.search(r"^Message could not be delivered for [^\n]+", body,
                                    re.M | re.I)
                if gave_up and not coded:
                    reason = f"{reason} ({gave_up.group(0).strip()})"
            out.append((addr, reason))
        return out
    for am in re.finditer(rf"^<?({_ADDR})>?\.\.\. (.+)$", body, re.M):  # "<a>... Deferred: x"
        out.append((am.group(1).lower(), am.group(2).strip()))
    if not out and re.search(r"-{3,} Transcript of session follows -{3,}", text, re.I):
        # V5 and other old sendmails: "550 <a>... User unknown" in the transcript
        for am in re.finditer(rf"(?m)^(?:<<<\s*)?([45]\d\d)[ -]<?({_ADDR})>?\.\.\.\s*(.+)$",
                              body):
            addr = am.group(2).lower()
            if addr not in {a for a, _ in out}:
                out.append((addr, f"{am.group(1)} {am.group(3).strip()}"))
    return out


def _exim_text(text: str) -> Found:
    """Exim (and GMX/web.de, which run it): the failed addresses, each
    followed by its indented reason; GMX quotes them (``"a@b":``) unindented."""
    m = re.search(r"(following\s+address(?:\(es\))?\s+failed:|address to which the message "
                  r"has not yet been delivered is:|addresses to which the message has not yet "
                  r"been delivered are:)\s*\n(.*)", text, re.I | re.S)
    if not m:
        return []
    body = _cut(m.group(2), "------ This is a copy", "------ The body of the message",
                "No action is required", "--- The header of the original", "\n--")
    out: Found = []
    for bm in re.finditer(rf"(?m)^\s{{1,4}}<?({_ADDR})>?[^\n]*\n((?:^\s{{4,}}\S[^\n]*\n?)*)",
                          body):
        out.append((bm.group(1).lower(), " ".join(bm.group(2).split())))
    if not out:
        for bm in re.finditer(rf"(?ms)^\"?<?({_ADDR})>?\"?:[ \t]*\n(.*?)(?=^\"?<?{_ADDR}>?\"?:|\Z)",
                              body):
            out.append((bm.group(1).lower(), " ".join(bm.group(2).split())))
    return out


def _opensmtpd(text: str) -> Found:
    """OpenSMTPD: ``addr: reason`` lines after the list header."""
    m = re.search(r"(?:following list of recipients|following recipients?):\s*\n(.*)", text,
                  re.I | re.S)
    if not m or not re.search(r"This is the MAILER-DAEMON|OpenSMTPD|An error has occurred "
                              r"while attempting to deliver", text, re.I):
        return []
    body = _cut(m.group(1), "Below is a copy of the original message", "Below is a copy")
    return [(bm.group(1).lower(), bm.group(2).strip())
            for bm in re.finditer(rf"(?m)^\s*<?({_ADDR})>?:\s+(\S.*)$", body)]


def _notes(text: str) -> Found:
    """Lotus Notes' older report: ``------- Failure Reasons --------``, then
    the reason and the address."""
    m = re.search(r"-+\s*Failure Reasons\s*-+\s*\n(.*?)(?:-+\s*Returned Message\s*-+|\Z)",
                  text, re.I | re.S)
    if not m:
        return []
    out: Found = []
    reason: list[str] = []
    for line in m.group(1).split("\n"):
        am = _ADDR_RE.fullmatch(line.strip().strip("<>"))
        if am:
            out.append((am.group(0).lower(), " ".join(reason)))
            reason = []
        elif line.strip():
            reason.append(line.strip())
    return out


def _gmail_text(text: str) -> Found:
    m = re.search(r"Delivery to the following recipients? (failed permanently|has been "
                  r"delayed|failed):\s*\n(.*?)\n\s*\n", text, re.I | re.S)
    if not m:
        return []
    error = re.search(r"The error that the other server returned was:\s*(.*?)"
                      r"(?:\n\s*\n|-{3,}|\Z)", text, re.I | re.S) or re.search(
        r"Technical details of (?:permanent|temporary) failure:\s*(.*?)(?:\n\s*\n|-{3,}|\Z)",
        text, re.I | re.S)
    diag = " ".join(error.group(1).split()) if error else ""
    return [(a.lower(), diag) for a in _ADDR_RE.findall(m.group(2))]


def _exchange_text(text: str) -> Found:
    m = re.search(r"(did not reach the following recipient\(s\):|could not be reached:|"
                  r"cannot be reached:|Delivery has failed to these recipients or groups:|"
                  r"Delivery to the following recipients has been delayed\.?)\s*\n(.*)",
                  text, re.I | re.S)
    if not m:
        return []
    body = _cut(m.group(2), "Original message headers", "Diagnostic information for admin")
    out: Found = []
    seen: set[str] = set()
    for bm in re.finditer(rf"(?m)^\s*({_ADDR})(?: on [^\n]*)?\n((?:^[ \t]*\S[^\n]*\n?)*)",
                          body):
        addr = bm.group(1).lower()
        if addr not in seen:
            seen.add(addr)
            out.append((addr, " ".join(bm.group(2).split())))
    if not out:
        out = [(a.lower(), "") for a in _ADDR_RE.findall(body)[:50]]
    return out


def _dma(text: str) -> Found:
    """The DragonFly Mail Agent: one recipient per bounce, its reason until
    "Original message follows"."""
    m = re.search(rf"There was an error delivering your mail to <({_ADDR})>\.\s*\n(.*?)"
                  r"(?:\n\s*(?:Original message follows|Message headers follow)|\Z)",
                  text, re.I | re.S)
    if not m:
        return []
    return [(m.group(1).lower(), " ".join(m.group(2).split())[:1000])]


def _domino(text: str) -> Found:
    m = re.search(rf"was not delivered to:\s*\n\s*({_ADDR})\s*\n\s*(?:because:\s*\n\s*(.*?)"
                  rf"(?:\n\s*\n|\Z))?", text, re.I | re.S)
    if not m:
        return []
    return [(m.group(1).lower(), " ".join((m.group(2) or "").split()))]


_TEXT_FORMATS: tuple[tuple[str, Any], ...] = (
    ("dma", _dma), ("qmail", _qmail), ("postfix", _postfix_text), ("sendmail", _sendmail),
    ("exim", _exim_text), ("gmail", _gmail_text), ("exchange", _exchange_text),
    ("domino", _domino), ("opensmtpd", _opensmtpd), ("domino", _notes),
)


_REASON_WORDS = re.compile(r"\b(not|fail(ed|ure)?|unable|reject(ed)?|refused|permission|"
                           r"denied|exist)\b", re.I)


def _reason_paragraph(human: str) -> str:
    """The first paragraph that says why, when no paragraph names the recipient
    (Google Groups names the group without its domain: "the group you tried to
    contact (announce) may not exist, or you may not have permission to post")."""
    for para in re.split(r"\n\s*\n", human[:20000]):
        flat = " ".join(para.split())
        if _REASON_WORDS.search(flat) and not flat.startswith("*"):
            return flat[:1000]
    return ""


def _text_reason(addr: str, human: str) -> str:
    """What the human-readable part of a DSN says about ``addr`` (its text format's
    reason), for DSN blocks without a Diagnostic-Code."""
    for _, extract in _TEXT_FORMATS:
        for a, reason in extract(human):
            if a == addr.lower() and reason:
                return reason
    return ""


# --- the parser ------------------------------------------------------------------------


def _result(addr: str, status: str, replycode: int, text: str, diagnostic: str,
            message_id: str, action: str, remote_mta: str = "") -> BounceResult:
    words = f"{diagnostic} {text}"[:20000]
    status = best_status(status, words, diagnostic)
    replycode = replycode or find_replycode(diagnostic)
    inferred = False
    override = derived_status_overridden(status, diagnostic, words)
    if override:
        status, inferred = override, True
    reason, hard = classify(status, replycode, words, action=action)
    if not status or status.endswith(".0.0"):
        guess = infer_status(reason, words, replycode, action)
        if guess and guess != status and (not status or guess[0] == status[0]
                                          or reason == "expired"):
            status, inferred = guess, True
            reason, hard = classify(status, replycode, words, action=action)
    return BounceResult(addr, status, replycode, hard, reason, diagnostic[:1000], message_id,
                        action, remote_mta, inferred)


def _dsn_results(parts: _Parts, human: str, message_id: str) -> tuple[list[BounceResult],
                                                                       str, list[str]]:
    results: list[BounceResult] = []
    reporting = ""
    other_actions: list[str] = []
    for part in parts.dsn:
        blocks = _blocks(part)
        for block in blocks:
            if "reporting-mta" in block and not reporting:
                reporting = block["reporting-mta"].split(";", 1)[-1].strip()
            if "final-recipient" not in block and "original-recipient" not in block:
                continue
            addr = _bare(block.get("final-recipient", "")) or _bare(
                block.get("original-recipient", ""))
            if not addr:
                continue
            action = block.get("action", "failed").split()[0].lower() if block.get(
                "action") else "failed"
            if action not in ("failed", "delayed"):
                other_actions.append(action)
                continue
            diag = _clean_diagnostic(block.get("diagnostic-code", ""))
            para = _paragraph(addr, human)
            if not diag:
                diag = _without_address(para, addr)
            if not diag:  # Sendmail: no Diagnostic-Code, the reason is in its transcript
                diag = _text_reason(addr, human)
            remote = block.get("remote-mta", "").split(";", 1)[-1].strip()
            status = find_status(block.get("status", ""))
            results.append(_result(addr, status, 0, para, diag, message_id, action, remote))
            if len(results) >= MAX_RESULTS:
                return results, reporting, other_actions
    return results, reporting, other_actions


def _ses(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start or "notificationType" not in text:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except ValueError:
        return None
    if isinstance(data, dict) and isinstance(data.get("Message"), str):
        try:
            data = json.loads(data["Message"])
        except ValueError:
            return None
    return data if isinstance(data, dict) and "notificationType" in data else None


def _ses_results(data: dict[str, Any], message_id: str) -> tuple[str, list[BounceResult]]:
    kind = str(data.get("notificationType", "")).lower()
    out: list[BounceResult] = []
    if kind == "bounce":
        bounce = data.get("bounce") or {}
        transient = str(bounce.get("bounceType", "")).lower() != "permanent"
        for rcpt in bounce.get("bouncedRecipients") or []:
            addr = _bare(str(rcpt.get("emailAddress", "")))
            if not addr:
                continue
            diag = _clean_diagnostic(str(rcpt.get("diagnosticCode", "")))
            sub = str(bounce.get("bounceSubType", ""))
            r = _result(addr, find_status(str(rcpt.get("status", ""))), 0, sub, diag,
                        message_id, "failed")
            if transient and r.hard:
                r = BounceResult(**{**r.__dict__, "hard": False})
            out.append(r)
        return "bounce", out
    if kind == "complaint":
        complaint = data.get("complaint") or {}
        ftype = str(complaint.get("complaintFeedbackType", "abuse"))
        for rcpt in complaint.get("complainedRecipients") or []:
            addr = _bare(str(rcpt.get("emailAddress", "")))
            if addr:
                out.append(BounceResult(addr, "", 0, False, "spam", f"complaint: {ftype}",
                                        message_id, "complaint"))
        return "feedback", out
    return "not_bounce", out


def _json_object(text: str) -> Any:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        return json.loads(text[start:end + 1])
    except ValueError:
        return None


def _provider_event(text: str) -> tuple[str, dict[str, Any]] | None:
    """A provider's documented bounce/complaint webhook payload carried in a mail
    (Mailgun and Postmark report these only as JSON events, never as bounce mails):
    ``("mailgun", event-data)`` or ``("postmark", record)``."""
    if '"event-data"' not in text and '"RecordType"' not in text:
        return None
    data = _json_object(text)
    if not isinstance(data, dict):
        return None
    event = data.get("event-data")
    if isinstance(event, dict) and event.get("event") in ("failed", "complained"):
        return "mailgun", event
    if data.get("RecordType") in ("Bounce", "SpamComplaint"):
        return "postmark", data
    return None


# Postmark bounce types that are failures of the recipient (the others are not
# failures: AutoResponder, Subscribe, OpenRelayTest, ... or are our own doing)
_POSTMARK_FAILED = {"HardBounce", "SoftBounce", "Transient", "DnsError", "BadEmailAddress",
                    "SpamNotification", "VirusNotification", "Blocked", "DMARCPolicy",
                    "Unknown"}


def _provider_results(name: str, data: dict[str, Any], message_id: str
                      ) -> tuple[str, list[BounceResult]]:
    """(kind, results) for a Mailgun event or a Postmark record."""
    if name == "mailgun":
        addr = _bare(str(data.get("recipient", "")))
        if not addr:
            return "not_bounce", []
        if data.get("event") == "complained":
            return "feedback", [BounceResult(addr, "", 0, False, "spam",
                                             "complaint: feedback-type abuse (Mailgun complained "
                                             "event)", message_id, "complaint")]
        ds = data.get("delivery-status") or {}
        code = ds.get("code") if isinstance(ds.get("code"), int) else 0
        text = " ".join(str(ds.get(k) or "") for k in ("message", "description")).strip()
        diag = f"{code} {text}".strip() if code else text
        diag = diag or str(data.get("reason", ""))
        action = "delayed" if data.get("severity") == "temporary" else "failed"
        r = _result(addr, find_status(text), int(code or 0), str(data.get("reason", "")), diag,
                    message_id, action)
        return ("delay" if action == "delayed" else "bounce"), [r]
    addr = _bare(str(data.get("Email", "")))
    if not addr:
        return "not_bounce", []
    kind = str(data.get("Type", ""))
    if data.get("RecordType") == "SpamComplaint" or kind == "SpamComplaint":
        return "feedback", [BounceResult(addr, "", 0, False, "spam",
                                         "complaint: feedback-type abuse (Postmark "
                                         "SpamComplaint)", message_id, "complaint")]
    if kind not in _POSTMARK_FAILED:
        return "not_bounce", []
    details = _clean_diagnostic(str(data.get("Details", "")))
    words = f"{data.get('Description', '')} {data.get('Name', '')}"
    action = "delayed" if kind == "Transient" else "failed"
    r = _result(addr, find_status(details), 0, words, details or words.strip(), message_id,
                action)
    if kind != "HardBounce" and r.hard:  # Postmark says the address is not known bad
        r = BounceResult(**{**r.__dict__, "hard": False})
    return ("delay" if action == "delayed" else "bounce"), [r]


def _looks_like_bounce(msg: Message, sender: str, subject: str) -> bool:
    local = sender.partition("@")[0].lower()
    name = parseaddr(_header(msg, "From"))[0].lower()
    return bool(
        local in _DAEMONS
        or "mail delivery" in name or "delivery subsystem" in name
        or msg.get("X-Failed-Recipients")
        or _BOUNCE_SUBJECT.search(subject)
    )


def _is_auto_reply(msg: Message, subject: str) -> bool:
    auto = _header(msg, "Auto-Submitted").lower()
    return bool(
        (auto and auto != "no")
        or msg.get("X-Autoreply") or msg.get("X-Autorespond")
        or _header(msg, "Precedence").lower() in ("auto_reply", "junk", "bulk")
        or _header(msg, "X-Auto-Response-Suppress")
        or _AUTO_SUBJECT.search(subject)
    )


def _head_text(msg: Message) -> str:
    return "\n".join(f"{k}: {v}" for k, v in msg.items())


def parse_bounce(
    raw: bytes, *, bounce_alias: str = "bounce", domains: Collection[str] = (),
    envelope_message_id: str = "",
) -> ParsedBounce:
    """Parse one mail. ``domains``: our domains, to tell our bounce address
    and Message-IDs from others (empty: any domain). ``envelope_message_id``:
    our message id when the envelope recipient was its bounce address."""
    if not raw or not raw.strip():
        raise BounceParseError("empty mail")
    if len(raw) > MAX_HEADER and raw.find(b"\n\n", 0, MAX_HEADER) < 0 \
            and raw.find(b"\n\r\n", 0, MAX_HEADER) < 0:
        raise BounceParseError(f"a header block over {MAX_HEADER // 1_000_000} MB "
                               "(no bounce has one): not read")
    containers = len(_MULTIPART.findall(raw, 0, 20_000_000))
    if containers > MAX_MULTIPARTS:  # checked before the email package spends a second on it
        raise BounceParseError(f"{containers} multipart containers: MIME parts nested too deep "
                               "or too many to read")
    try:
        msg = message_from_bytes(raw, policy=email_policy.compat32)
    except RecursionError:
        raise BounceParseError("MIME parts nested too deep to read") from None
    except Exception as exc:  # noqa: BLE001 - the email package raises many kinds
        raise BounceParseError(f"not a mail: {exc}") from None
    if not msg.keys():
        raise BounceParseError("no header block")
    parts = _Parts()
    _walk(msg, parts)
    human = ("\n".join(parts.texts) or "\n".join(parts.htmls))[:MAX_TEXT]
    sender = _bare(parseaddr(_header(msg, "From"))[1] or _header(msg, "From"))
    subject = _header(msg, "Subject")
    head = _head_text(msg)
    base: dict[str, Any] = {"sender": sender, "subject": subject}

    # 1. feedback reports
    if parts.feedback or "report-type=feedback-report" in head.lower().replace(" ", "").replace(
            '"', ""):
        blocks = [b for p in parts.feedback for b in _blocks(p)]
        fields = blocks[0] if blocks else {}
        origin = [fields.get("original-mail-from", "")]
        mid, how = attribute(msg, parts, bounce_alias=bounce_alias, domains=domains,
                             envelope_message_id=envelope_message_id,
                             extra_bounce_addresses=origin)
        rcpts = [_bare(v) for v in fields.get("original-rcpt-to", "").split(",")]
        if not any(rcpts):  # Microsoft JMRP names the complainer in the quoted mail
            rcpts = [_bare(_header(q, "X-HmXmrOriginalRecipient")) for q in parts.quoted]
        if not any(rcpts):
            rcpts = [_bare(a) for q in parts.quoted for _, a in getaddresses([_header(q, "To")])]
        ftype = fields.get("feedback-type", "abuse").lower() or "abuse"
        agent = fields.get("user-agent", "")
        complaints = tuple(
            BounceResult(a, "", 0, False, "spam" if ftype in ("abuse", "fraud") else "other",
                         f"complaint: feedback-type {ftype}" + (f" ({agent})" if agent else ""),
                         mid, "complaint")
            for a in dict.fromkeys(r for r in rcpts if r)
        )
        return ParsedBounce("feedback", "arf", complaints=complaints, message_id=mid,
                            attributed_by=how,
                            reporting_mta=fields.get("reporting-mta", "").split(";")[-1].strip(),
                            note=f"a complaint (ARF feedback-type {ftype}), not a failure",
                            **base)

    # 2. delivery status notifications
    if parts.dsn:
        mid, how = attribute(msg, parts, bounce_alias=bounce_alias, domains=domains,
                             envelope_message_id=envelope_message_id)
        results, reporting, others = _dsn_results(parts, human, mid)
        fmt = detect_format(head, human, reporting) or "rfc3464"
        failed = tuple(r for r in results if r.action == "failed")
        delayed = tuple(r for r in results if r.action == "delayed")
        if failed:
            kind, note = "bounce", ""
        elif delayed:
            kind, note = "delay", "a delay notice: the server is still trying, not a failure"
        else:
            kind = "not_bounce"
            note = ("a delivery report without failures"
                    + (f" (actions: {', '.join(sorted(set(others)))})" if others else ""))
        return ParsedBounce(kind, fmt, failed, delayed, message_id=mid, attributed_by=how,
                            reporting_mta=reporting, note=note, **base)

    # 3. Amazon SES notifications by e-mail
    ses = _ses(human)
    if ses is not None:
        mail = ses.get("mail") or {}
        headers = [(str(h.get("name", "")), str(h.get("value", "")))
                   for h in mail.get("headers") or [] if isinstance(h, dict)]
        mid, how = attribute(msg, parts, bounce_alias=bounce_alias, domains=domains,
                             envelope_message_id=envelope_message_id, extra_headers=headers)
        kind, results = _ses_results(ses, mid)
        reporting = str((ses.get("bounce") or {}).get("reportingMTA", "")).split(";")[-1].strip()
        if kind == "feedback":
            return ParsedBounce("feedback", "amazon_ses", complaints=tuple(results),
                                message_id=mid, attributed_by=how, reporting_mta=reporting,
                                note="an Amazon SES complaint notification", **base)
        return ParsedBounce(kind if results else "not_bounce", "amazon_ses", tuple(results),
                            message_id=mid, attributed_by=how, reporting_mta=reporting,
                            note="" if results else "an SES notification without bounces",
                            **base)

    # 3b. Mailgun / Postmark webhook payloads carried in a mail
    event = _provider_event(human)
    if event is not None:
        name, data = event
        pheaders: list[tuple[str, str]] = []
        if name == "mailgun":
            mh = (data.get("message") or {}).get("headers") or {}
            pheaders = [(str(k), str(v)) for k, v in mh.items()] if isinstance(mh, dict) else []
            mid_value = next((v for k, v in pheaders if k.lower() == "message-id"), "")
            if mid_value and not mid_value.startswith("<"):
                pheaders.append(("Message-ID", f"<{mid_value}>"))
        meta = data.get("Metadata") or (data.get("user-variables") or {})
        if isinstance(meta, dict):
            pheaders += [("X-Postlane-Id", str(v)) for k, v in meta.items()
                        if str(k).lower().replace("_", "-") in ("x-postlane-id", "postlane-id")]
        mid, how = attribute(msg, parts, bounce_alias=bounce_alias, domains=domains,
                             envelope_message_id=envelope_message_id, extra_headers=pheaders)
        kind, results = _provider_results(name, data, mid)
        base_kw: dict[str, Any] = {"message_id": mid, "attributed_by": how, **base}
        if kind == "feedback":
            return ParsedBounce("feedback", name, complaints=tuple(results),
                                note=f"a {name} complaint event", **base_kw)
        if kind == "delay":
            return ParsedBounce("delay", name, delayed=tuple(results),
                                note=f"a {name} temporary failure: still retrying", **base_kw)
        return ParsedBounce(kind if results else "not_bounce", name, tuple(results),
                            note="" if results else f"a {name} event without a failure",
                            **base_kw)

    # 4. text formats
    mid, how = attribute(msg, parts, bounce_alias=bounce_alias, domains=domains,
                         envelope_message_id=envelope_message_id)
    if _looks_like_bounce(msg, sender, subject):
        found: Found = []
        fmt = ""
        for name, extract in _TEXT_FORMATS:
            found = extract(human)
            if found:
                fmt = name
                break
        if not found and msg.get("X-Failed-Recipients"):
            failed_rcpts = [_bare(a) for a in _header(msg, "X-Failed-Recipients").split(",")
                            [:MAX_RESULTS]]
            found = [(a, _without_address(_paragraph(a, human), a) or _reason_paragraph(human))
                     for a in failed_rcpts if a]
        if found:
            fmt = detect_format(head, human, "") or fmt or "unknown"
            delay = bool(_DELAY_WORDS.search(f"{subject}\n{human[:3000]}")) and not re.search(
                r"permanent (fatal )?error|failed permanently|could not be delivered|"
                r"I've given up", human[:3000], re.I)
            action = "delayed" if delay else "failed"
            results = [
                _result(addr, "", 0, "", diag, mid, action)
                for addr, diag in list(dict.fromkeys(found))[:MAX_RESULTS]
            ]
            if delay:
                return ParsedBounce("delay", fmt, delayed=tuple(results), message_id=mid,
                                    attributed_by=how,
                                    note="a delay notice: the server is still trying", **base)
            return ParsedBounce("bounce", fmt, tuple(results), message_id=mid,
                                attributed_by=how, **base)

    # 5. automatic replies
    if _is_auto_reply(msg, subject):
        return ParsedBounce("auto_reply", "autoreply", message_id=mid, attributed_by=how,
                            note=f"an automatic reply from {sender or 'an unknown sender'}: "
                                 "the address works", **base)
    return ParsedBounce("not_bounce", "unknown", message_id=mid, attributed_by=how,
                        note="no delivery failure found in this mail", **base)


def results_json(parsed: ParsedBounce) -> list[dict[str, Any]]:
    """``postlane bounces parse --json``: the failed recipients."""
    return [r.public() for r in parsed.results]


def iter_all(parsed: ParsedBounce) -> Iterator[BounceResult]:
    yield from parsed.results
    yield from parsed.delayed
    yield from parsed.complaints
