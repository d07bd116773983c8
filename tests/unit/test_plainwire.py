"""The plain mail's wire bytes written directly (processors/delivery/plainwire.py)
are byte for byte what the email package writes, for every generated mail the
fast path accepts; and it accepts the common plain mail."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from processors.delivery.message import build_message, make_smtp_message_id, message_bytes
from processors.delivery.plainwire import plain_wire
from schemas import OutgoingServerConfigured, RoutingDecided, SendRequested
from schemas.base import InvalidEvent
from tests.unit.fuzz import fuzz_settings

SERVER = OutgoingServerConfigured(name="main", host="smtp.test")


def mostly(plain: list[str], tricky: list[str]) -> st.SearchStrategy[str]:
    """Plain values three times in four (the fast path's), tricky ones else."""
    return st.one_of(st.sampled_from(plain), st.sampled_from(plain), st.sampled_from(plain),
                     st.sampled_from(tricky))


names = mostly(["", "Bob", "Bob Smith", "O'Hara", "Team-42 Bot", "x" * 50],
               ["J. Smith", "Smith, Bob", "Zoë", "a  b", " lead", "=?utf-8?q?x?=",
                'Say "hi"', "a@b", "x" * 70])
locals_ = mostly(["bob", "first.last", "a+tag", "o'hara", "x" * 40], ["zoë", "x" * 64])
domains = mostly(["dest.test", "Example.COM", "sub.d-ash.test"], ["bücher.test"])
texts = mostly(["Hello", "Hello there", "Re: [ticket #42] your order", "100% = done?",
                "x" * 60],
               ["", "  padded ", "tab\there", "caf\u00e9", "=?utf-8?q?x?=", "a" * 90])
bodies = mostly(["Hello,\n\nbody.\n-- \nbench\n", "no newline at the end",
                 "crlf\r\nlines\r\n", "x" * 78, "line\n" * 30, ".\n..\n",
                 "trailing spaces   \n", "lone\rcr"],
                ["x" * 79, "caf\u00e9\n", "tab\tin body\n"])


@st.composite
def addresses(draw: st.DrawFn) -> str:
    name, local, domain = draw(names), draw(locals_), draw(domains)
    addr = f"{local}@{domain}"
    return f'"{name}" <{addr}>' if name and draw(st.booleans()) else (
        f"{name} <{addr}>" if name else addr)


@st.composite
def mails(draw: st.DrawFn) -> tuple[SendRequested, RoutingDecided, dict[str, str]]:
    mid = draw(mostly(["abc123", "m-1.2", "a/b?c"], ["with space", "ünï"]))
    headers = draw(st.one_of(st.just({}), st.just({}), st.dictionaries(
        st.sampled_from(["X-Ticket", "In-Reply-To", "References", "Sender", "X-Long",
                         "Subject", "X-Postlane-Id", "Feedback-ID", "List-Id"]),
        texts, max_size=2)))
    at_least = draw(st.sampled_from([0, 1, 1, 1]))
    kw: dict[str, Any] = dict(
        message_id=mid, from_=draw(addresses()),
        to=draw(st.lists(addresses(), min_size=at_least, max_size=3)),
        cc=draw(st.one_of(st.just([]), st.lists(addresses(), max_size=2))), subject=draw(texts),
        text=draw(bodies), html=draw(st.sampled_from(["", "", "", "", "", "<p>x</p>"])),
        reply_to=draw(st.sampled_from(["", "", "help@dest.test", "Zoë <z@dest.test>"])),
        headers=headers, tenant=draw(mostly(["", "acme", "a:b"], ["t ü"])),
        campaign=draw(st.sampled_from(["", "spring"])), occurred_at=1_795_000_000.0)
    try:
        req = SendRequested(**kw)
    except InvalidEvent:
        kw["headers"] = {}  # a header Postlane sets itself is refused
        try:
            req = SendRequested(**kw)
        except InvalidEvent:
            req = None  # type: ignore[assignment]
    if req is None:
        req = SendRequested(message_id="abc123", from_="app@dest.test", to=["b@dest.test"],
                            subject="s", text="t", occurred_at=1_795_000_000.0)
    decision = RoutingDecided(message_id=req.message_id, outcome="routed", server="main",
                              header_from=req.from_, envelope_from="b@dest.test",
                              request=req.to_representation())
    lists = draw(st.sampled_from([
        {}, {"List-Unsubscribe": "<https://u.test/u/TOKEN>, <mailto:unsubscribe@u.test"
             "?subject=unsubscribe%20TOKEN>",
             "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}]))
    return req, decision, lists


def slow(req: SendRequested, decision: RoutingDecided, lists: dict[str, str],
         domain: str = "d.test") -> tuple[bytes, list[str]] | None:
    try:
        msg = build_message(req, decision, SERVER, make_smtp_message_id(req.message_id, domain),
                            list_headers=lists)
    except ValueError:
        return None
    return message_bytes(msg), list(msg.keys())


def test_the_fast_path_writes_what_the_email_package_writes() -> None:
    taken = {"fast": 0, "slow": 0}
    distinct: set[bytes] = set()

    @fuzz_settings(3000)
    @given(mails())
    def run(mail: tuple[SendRequested, RoutingDecided, dict[str, str]]) -> None:
        req, decision, lists = mail
        fast = plain_wire(req, decision, SERVER, make_smtp_message_id(req.message_id, "d.test"),
                          list_headers=lists)
        if fast is None:
            taken["slow"] += 1  # not plain: the email package builds it
            return
        taken["fast"] += 1
        distinct.add(fast[0])
        assert fast == slow(req, decision, lists)

    run()
    # the comparison ran on both kinds of mail
    assert len(distinct) > 50 and taken["slow"] > 100, (len(distinct), taken)


def test_the_common_plain_mail_takes_the_fast_path() -> None:
    req = SendRequested(message_id="abc123", from_='"App" <app@bench.test>',
                        to=["rcpt1@sink.test", "Bob Smith <bob@x.test>"], subject="Your invoice",
                        text="Hello,\n\nthis is a body.\n-- \nbench\n", occurred_at=1_795_000_000.0,
                        headers={"X-Ticket": "42"})
    decision = RoutingDecided(message_id="abc123", outcome="routed", server="main",
                              header_from=req.from_, envelope_from="b@bench.test",
                              request=req.to_representation())
    fast = plain_wire(req, decision, SERVER, make_smtp_message_id("abc123", "bench.test"))
    assert fast is not None
    assert fast == slow(req, decision, {}, "bench.test")
