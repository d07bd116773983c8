"""``SendRequested.problems`` (written out for speed) says exactly what the
earlier version said, in the same order, for generated requests good and
bad (the earlier version kept here as the reference)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Event, SendRequested
from schemas.addresses import AddressError, has_crlf, split_address
from schemas.send import _RESERVED_HEADERS, KINDS, MAX_MESSAGE_BYTES, _attachment_problems


def reference(self: Any) -> list[str]:
    """SendRequested.problems before it was written out (as on ca15570)."""
    out = Event.problems(self)
    if not self.message_id or has_crlf(self.message_id) or len(self.message_id) > 200:
        out.append("message_id must be a non-empty single line of at most 200 characters")
    try:
        split_address(self.from_)
    except AddressError as exc:
        out.append(f"from: {exc}")
    for fname in ("to", "cc", "bcc"):
        for value in getattr(self, fname):
            if not isinstance(value, str):
                out.append(f"{fname}: {value!r} is not a string")
                continue
            try:
                split_address(value)
            except AddressError as exc:
                out.append(f"{fname}: {exc}")
    if not (self.to or self.cc or self.bcc):
        out.append("no recipient: give at least one of to, cc, bcc")
    if self.reply_to:
        try:
            split_address(self.reply_to)
        except AddressError as exc:
            out.append(f"reply_to: {exc}")
    if has_crlf(self.subject):
        out.append("subject contains a line break (header injection?)")
    texts = all(isinstance(v, str) for v in (self.subject, self.text, self.html))
    if not texts:
        out.append("subject, text and html must be strings")
    if not isinstance(self.headers, dict):
        out.append("headers must be an object of header name -> value")
    for name, value in (self.headers.items() if isinstance(self.headers, dict) else ()):
        if not isinstance(value, str) or has_crlf(name) or has_crlf(value):
            out.append(f"header {name!r} must be a single-line string")
        elif not name or ":" in name or " " in name or not name.isascii():
            out.append(f"header name {name!r} is not a valid field name")
        elif name.lower() in _RESERVED_HEADERS:
            out.append(f"header {name!r} is set by Postlane; use the event's own field")
    if self.kind not in KINDS:
        out.append(f"kind {self.kind!r} must be one of {', '.join(KINDS)}")
    if any(has_crlf(v) for v in (self.tenant, self.idempotency_key, self.thread_ref,
                                 self.list_id, self.campaign)):
        out.append("tenant, idempotency_key, thread_ref, list_id and campaign must be "
                   "single lines")
    if not (self.text or self.html):
        out.append("no body: give text or html (or both)")
    for i, att in enumerate(self.attachments):
        out.extend(_attachment_problems(i, att))
    if texts and self.approx_size() > MAX_MESSAGE_BYTES:
        out.append(
            f"message is about {self.approx_size()} bytes, over the limit of "
            f"{MAX_MESSAGE_BYTES}: send a link instead of the attachment"
        )
    if self.send_at < 0:
        out.append("send_at must be unix seconds >= 0")
    return out


line = st.sampled_from(["", "x", "a\r\nb", "t1", "é", "a\nb"])
addr = st.sampled_from(["a@b.test", "A <a@b.test>", "bad", "a@@b", "x@-y.test", 5, "",
                        "a..b@c.test", "o@bücher.de", "l" * 70 + "@x.test"])
body = st.one_of(st.sampled_from(["", "hi", "héllo"]), st.integers(0, 3).map(lambda n: [n]))


@settings(max_examples=400, deadline=None)
@given(mid=st.sampled_from(["m1", "", "a\nb", "x" * 201]), from_=addr,
       to=st.lists(addr, max_size=3), cc=st.lists(addr, max_size=2), reply=addr,
       subject=st.one_of(line, st.just(3)), text=body, html=body,
       headers=st.one_of(st.dictionaries(st.sampled_from(["X-A", "From", "a b", "", "X:Y"]),
                                         st.one_of(line, st.just(1)), max_size=3),
                         st.just(["x"])),
       kind=st.sampled_from(["transactional", "mass", "bulk"]), tenant=line, campaign=line,
       atts=st.lists(st.one_of(st.just({"filename": "a.txt", "data": "aGk="}),
                               st.just({"filename": "", "data": "!!"}), st.just("x")),
                     max_size=2),
       send_at=st.sampled_from([0.0, -1.0, 5.0]), schema=st.sampled_from([0, 1, 2]))
def test_problems_as_before(mid: str, from_: Any, to: list, cc: list, reply: Any,
                            subject: Any, text: Any, html: Any, headers: Any, kind: str,
                            tenant: str, campaign: str, atts: list, send_at: float,
                            schema: int) -> None:
    ev = SendRequested.__new__(SendRequested)
    ev.__dict__.update(type="SendRequested", schema=schema, event_id="e", occurred_at=1.0,
                       message_id=mid, from_=from_, to=to, cc=cc, bcc=[], reply_to=reply,
                       subject=subject, text=text, html=html, attachments=atts,
                       headers=headers, tenant=tenant, kind=kind, idempotency_key="",
                       thread_ref="", send_at=send_at, list_id="", campaign=campaign)
    try:
        want: Any = reference(ev)
    except Exception as exc:  # noqa: BLE001 - the same failure is expected
        want = (type(exc), str(exc))
    try:
        got: Any = SendRequested.problems(ev)
    except Exception as exc:  # noqa: BLE001
        got = (type(exc), str(exc))
    assert got == want


def test_the_size_limit_as_before() -> None:
    big = "x" * (MAX_MESSAGE_BYTES + 1)
    for subject, text in ((big[:5000], big), ("s", "é" * (MAX_MESSAGE_BYTES // 2 + 1)),
                          ("s" * (MAX_MESSAGE_BYTES - 10), "0123456789ab")):
        ev = SendRequested(message_id="m", from_="a@b.test", to=["c@d.test"], text="t")
        ev.__dict__.update(subject=subject.replace("\n", ""), text=text)
        assert SendRequested.problems(ev) == reference(ev)
        assert any("over the limit" in p for p in reference(ev))
