"""SendRequested: a service asks for a mail to be sent."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .addresses import AddressError, check_address, has_crlf, split_address
from .base import Event

KINDS = ("transactional", "mass")
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # default; the publisher takes a setting
_RESERVED_HEADERS = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date",
    "return-path", "content-type", "content-transfer-encoding", "mime-version",
}


class SendRequested(Event):
    """A service asked Postlane to send one mail. ``message_id`` is ours
    (the publisher assigns it); the RFC 5322 Message-ID is made at delivery.
    ``attachments``: objects ``{"filename", "content_type", "data"}`` with
    ``data`` in base64. ``send_at``: unix seconds, 0 for now. ``list_id``:
    the mailing list a mass mail goes to (one-click unsubscribe names it);
    ``campaign``: the campaign it belongs to (Feedback-ID, reports)."""

    message_id: str
    from_: str
    to: list[str]
    cc: list[str] = []
    bcc: list[str] = []
    reply_to: str = ""
    subject: str = ""
    text: str = ""
    html: str = ""
    attachments: list[dict[str, Any]] = []
    headers: dict[str, str] = {}
    tenant: str = ""
    kind: str = "transactional"
    idempotency_key: str = ""
    thread_ref: str = ""
    send_at: float = 0.0
    list_id: str = ""
    campaign: str = ""

    def recipients(self) -> list[str]:
        """Envelope recipients (bare addresses), deduplicated, in order."""
        seen: dict[str, None] = {}
        for value in [*self.to, *self.cc, *self.bcc]:
            seen.setdefault(split_address(value)[1], None)
        return list(seen)

    def approx_size(self) -> int:
        size = len(self.subject) + _utf8_len(self.text) + _utf8_len(self.html)
        for att in self.attachments:
            size += len(str(att.get("data", ""))) if isinstance(att, dict) else 0
        return size

    def problems(self) -> list[str]:
        # the checks in order, each message as before; written out (no
        # generators; a helper only per recipient) on the field values in
        # ``__dict__`` (every way an event is made puts every field there:
        # tests/unit/test_decode_owned.py): every request and every decode
        # of one runs this
        f = self.__dict__
        out = Event.problems(self)
        mid = f["message_id"]
        if not mid or "\r" in mid or "\n" in mid or len(mid) > 200:
            out.append("message_id must be a non-empty single line of at most 200 characters")
        try:
            split_address(f["from_"])
        except AddressError as exc:
            out.append(f"from: {exc}")
        to, cc, bcc = f["to"], f["cc"], f["bcc"]
        for fname, values in (("to", to), ("cc", cc), ("bcc", bcc)):
            for value in values:
                out.extend(_recipient_problems(fname, value))
        if not (to or cc or bcc):
            out.append("no recipient: give at least one of to, cc, bcc")
        reply_to = f["reply_to"]
        if reply_to:
            try:
                split_address(reply_to)
            except AddressError as exc:
                out.append(f"reply_to: {exc}")
        subject, text, html, headers = f["subject"], f["text"], f["html"], f["headers"]
        if "\r" in subject or "\n" in subject:
            out.append("subject contains a line break (header injection?)")
        # a request carried in another event (RoutingDecided.request) is not
        # type-checked field by field before this: wrong types are refused
        # here in words instead of failing below
        texts = isinstance(subject, str) and isinstance(text, str) and isinstance(html, str)
        if not texts:
            out.append("subject, text and html must be strings")
        if not isinstance(headers, dict):
            out.append("headers must be an object of header name -> value")
        elif headers:
            for name, value in headers.items():
                if not isinstance(value, str) or has_crlf(name) or has_crlf(value):
                    out.append(f"header {name!r} must be a single-line string")
                elif not name or ":" in name or " " in name or not name.isascii():
                    out.append(f"header name {name!r} is not a valid field name")
                elif name.lower() in _RESERVED_HEADERS:
                    out.append(f"header {name!r} is set by Postlane; use the event's own field")
        kind = f["kind"]
        if kind not in KINDS:
            out.append(f"kind {kind!r} must be one of {', '.join(KINDS)}")
        for v in (f["tenant"], f["idempotency_key"], f["thread_ref"], f["list_id"],
                  f["campaign"]):
            if "\r" in v or "\n" in v:
                out.append("tenant, idempotency_key, thread_ref, list_id and campaign must be "
                           "single lines")
                break
        if not (text or html):
            out.append("no body: give text or html (or both)")
        attachments = f["attachments"]
        if attachments:
            for i, att in enumerate(attachments):
                out.extend(_attachment_problems(i, att))
        # (a character is at most 4 bytes of UTF-8: below that no count is needed)
        if texts and (attachments or len(subject) + 4 * (len(text) + len(html))
                      > MAX_MESSAGE_BYTES):
            size = self.approx_size()
            if size > MAX_MESSAGE_BYTES:
                out.append(
                    f"message is about {size} bytes, over the limit of "
                    f"{MAX_MESSAGE_BYTES}: send a link instead of the attachment"
                )
        if f["send_at"] < 0:
            out.append("send_at must be unix seconds >= 0")
        return out


def _recipient_problems(fname: str, value: Any) -> list[str]:
    """The words for one value of ``to``, ``cc`` or ``bcc``."""
    if not isinstance(value, str):
        return [f"{fname}: {value!r} is not a string"]
    try:
        split_address(value)
    except AddressError as exc:
        return [f"{fname}: {exc}"]
    return []


def _attachment_problems(i: int, att: Any) -> list[str]:
    if not isinstance(att, dict):
        return [f"attachment {i} must be an object"]
    out = []
    fname = att.get("filename")
    if not isinstance(fname, str) or not fname or has_crlf(fname):
        out.append(f"attachment {i}: filename must be a non-empty single line")
    ctype = att.get("content_type", "application/octet-stream")
    if not isinstance(ctype, str) or ctype.count("/") != 1 or has_crlf(ctype):
        out.append(f"attachment {i}: content_type {ctype!r} is not type/subtype")
    data = att.get("data")
    if not isinstance(data, str):
        out.append(f"attachment {i}: data must be a base64 string")
    else:
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            out.append(f"attachment {i}: data is not valid base64")
    return out


def _utf8_len(text: str) -> int:
    """``len(text.encode())``, without encoding ASCII text."""
    return len(text) if text.isascii() else len(text.encode())


def check_recipient(addr: str) -> None:
    check_address(addr)
