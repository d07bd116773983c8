"""Fuzzing the MIME parsers: at least 1,000 generated mails through the bounce
processor's parser and intake (``processors/bounces``) and the inbound
router's pure core (``processors/inbound/core.route_offline``: parse, bounce,
reply, catchall, alias, loop): no exception escapes, every mail that is
refused or not a bounce says why, none takes over 1 s.

Half the mails are built from parts hypothesis draws (headers that matter
to the routing and the parser, nested multiparts with and without their
boundaries, delivery-status and feedback reports with drawn fields,
message/rfc822 inside, base64 and quoted-printable bodies, bad charsets);
half are the bounce corpus (``tests/corpus/bounces``) cut, spliced, with
bytes flipped and line ends changed.
"""

from __future__ import annotations

import base64
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from processors.bounces import core as bounces_core
from processors.bounces.parser import BounceParseError, parse_bounce
from processors.config.view import ConfigView
from processors.inbound.core import route_offline
from schemas import AliasConfigured, BounceMailReceived, SettingsChanged

from .fuzz import Counter, bounded, fuzz_settings

MAILS = 1_000
BATCH = 4
CORPUS = sorted((Path(__file__).resolve().parents[1] / "corpus" / "bounces").glob("*.eml"))
CORPUS_BYTES = [p.read_bytes() for p in CORPUS]
DOMAIN = "mycompany.test"
VIEW = ConfigView(
    settings=SettingsChanged(catchall_domain=DOMAIN, loop_threshold=3),
    aliases={"sales": AliasConfigured(alias="sales", target="crm.lead")},
)
SENT = ["m-1@mycompany.test", "ex-unknown-0101@mycompany.test"]
ROUTES = {"duplicate", "bounce", "reply", "reject", "alias", "loop"}
KINDS = {"bounce", "delay", "feedback", "auto_reply", "not_bounce"}

# --- generated mails --------------------------------------------------------------------------

ADDRESSES = st.one_of(
    st.sampled_from([
        f"bounce+m-1@{DOMAIN}", f"sales@{DOMAIN}", f"catchall@{DOMAIN}", f"bounce@{DOMAIN}",
        "MAILER-DAEMON@mx.dest.test", "postmaster@dest.test", "<>", "a@b", "@", "",
        '"Doe, Jane" <jane@dest.test>', "=?utf-8?q?J=C3=A9r=C3=B4me?= <j@dest.test>",
        "undisclosed-recipients:;", "x@[127.0.0.1]", "ü@ü.test", "a" * 300 + "@dest.test",
    ]),
    st.from_regex(r"[a-z0-9.+_-]{1,12}@[a-z0-9-]{1,10}\.(test|com)", fullmatch=True),
)
WORDS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\r\n", "a\r\n\r\nb", "=?utf-8?b?////?=", "=?x-bogus?q?abc?=",
                     "5.1.1", "550 5.1.1 User unknown", "421 4.4.2 timeout", "\x00\x01",
                     "Undelivered Mail Returned to Sender", "Out of Office", "x" * 2000]),
)
MIDS = st.sampled_from(["<m-1@mycompany.test>", "<ex-unknown-0101@mycompany.test>", "<>",
                        "<a@b> <c@d>", "no-brackets@x", "<" + "x" * 500 + "@y>", ""])
HEADERS = st.lists(st.tuples(
    st.sampled_from(["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References",
                     "Auto-Submitted", "X-Failed-Recipients", "Return-Path", "Delivered-To",
                     "X-Postlane-Id", "Date", "Precedence", "List-Id", "X-Autoreply",
                     "Reply-To", "Sender", "X-Random", "MIME-Version"]),
    st.one_of(ADDRESSES, WORDS, MIDS,
              st.lists(ADDRESSES, min_size=1, max_size=4).map(", ".join)),
), max_size=12)
DSN_FIELDS = st.lists(st.tuples(
    st.sampled_from(["Final-Recipient", "Original-Recipient", "Action", "Status",
                     "Diagnostic-Code", "Reporting-MTA", "Remote-MTA", "Feedback-Type",
                     "Original-Rcpt-To", "Original-Mail-From", "User-Agent", "Arrival-Date"]),
    st.one_of(ADDRESSES.map(lambda a: f"rfc822; {a}"), WORDS,
              st.sampled_from(["failed", "delayed", "delivered", "5.1.1", "4.2.2", "9.9.9",
                               "smtp; 550 5.1.1 no such user", "abuse", "dns; mx.test"])),
), max_size=8)
CTYPES = ["text/plain", "text/html", "message/delivery-status", "text/rfc822-headers",
          "message/feedback-report", "application/json", "application/octet-stream",
          "message/global-delivery-status"]
CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "x-bogus", ""]
ENCODINGS = ["7bit", "8bit", "base64", "quoted-printable", "x-bogus", ""]


def _body(text: str, encoding: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding == "base64":
        return base64.encodebytes(raw)
    return raw


@st.composite
def part(draw: st.DrawFn, depth: int = 0) -> bytes:
    kind = draw(st.sampled_from(["leaf"] * 3 + (["multi", "rfc822"] if depth < 3 else [])))
    if kind == "rfc822":
        return b"Content-Type: message/rfc822\r\n\r\n" + draw(mail(depth + 1))
    if kind == "multi":
        sub = draw(st.sampled_from(["mixed", 'report; report-type="delivery-status"',
                                    "report; report-type=feedback-report", "alternative"]))
        boundary = draw(st.sampled_from(["b1", "b2", "=_x", "", '"quoted b"']))
        children = draw(st.lists(part(depth + 1), max_size=3))
        closing = draw(st.booleans())
        b = boundary.strip('"').encode()
        body = b"".join(b"--" + b + b"\r\n" + c + b"\r\n" for c in children)
        if closing:
            body += b"--" + b + b"--\r\n"
        return (f"Content-Type: multipart/{sub}; boundary={boundary}\r\n\r\n".encode()
                + b"preamble\r\n" + body)
    ctype = draw(st.sampled_from(CTYPES))
    charset = draw(st.sampled_from(CHARSETS))
    encoding = draw(st.sampled_from(ENCODINGS))
    if ctype in ("message/delivery-status", "message/feedback-report",
                 "message/global-delivery-status"):
        blocks = draw(st.lists(DSN_FIELDS, min_size=1, max_size=3))
        text = "\r\n\r\n".join("\r\n".join(f"{k}: {v}" for k, v in b) for b in blocks)
    else:
        text = draw(WORDS)
    head = f"Content-Type: {ctype}" + (f"; charset={charset}" if charset else "") + "\r\n"
    if encoding:
        head += f"Content-Transfer-Encoding: {encoding}\r\n"
    return head.encode() + b"\r\n" + _body(text, encoding)


BASES = [
    [],  # only drawn headers
    [("From", "Client <client@dest.test>"), ("To", f"sales@{DOMAIN}"),
     ("Message-ID", "<q1@dest.test>"), ("Subject", "question")],  # to an alias
    [("From", "Client <client@dest.test>"), ("To", f"info@{DOMAIN}"),
     ("In-Reply-To", "<m-1@mycompany.test>"), ("Message-ID", "<r1@dest.test>")],  # a reply
    [("From", "MAILER-DAEMON@mx.dest.test"), ("To", f"bounce+m-1@{DOMAIN}"),
     ("Subject", "Undelivered Mail Returned to Sender")],  # a bounce
]


@st.composite
def mail(draw: st.DrawFn, depth: int = 0) -> bytes:
    headers = draw(st.sampled_from(BASES)) + draw(HEADERS)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8", "surrogateescape")
    return head + draw(part(depth))


@st.composite
def corpus_mail(draw: st.DrawFn) -> bytes:
    """A real bounce, damaged."""
    raw = draw(st.sampled_from(CORPUS_BYTES))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["cut", "flip", "splice", "crlf", "insert", "dup_header"]))
        at = draw(st.integers(0, max(len(raw) - 1, 0)))
        if how == "cut":
            raw = raw[:at]
        elif how == "flip" and raw:
            raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1:]
        elif how == "splice":
            other = draw(st.sampled_from(CORPUS_BYTES))
            raw = raw[:at] + other[draw(st.integers(0, max(len(other) - 1, 0))):]
        elif how == "crlf":
            raw = raw.replace(b"\r\n", b"\n") if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")
        elif how == "insert":
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=40)) + raw[at:]
        else:
            line = raw.split(b"\n", 1)[0]
            raw = (line + b"\n") * draw(st.integers(2, 50)) + raw
    return raw


MAIL = st.one_of(mail(), corpus_mail())


# --- the property --------------------------------------------------------------------------


def bounce_parser(raw: bytes, counts: Counter) -> None:
    try:
        parsed = bounded(parse_bounce, raw, domains=[DOMAIN], what="parse_bounce")
    except BounceParseError as exc:
        assert str(exc).strip(), raw[:200]
        counts.add("bounce: not a mail")
        return
    assert parsed.kind in KINDS, parsed
    if parsed.kind == "bounce":
        assert parsed.results, parsed
    else:
        assert parsed.note.strip(), parsed  # why it is not a failure
    counts.add(f"bounce: {parsed.kind}")
    # the processor's intake: the events, or the words of what happened
    ev = BounceMailReceived(bounce_mail_id="fuzz", mail=base64.b64encode(raw).decode())
    out, words = bounded(bounces_core.intake_bounce_mail, VIEW, ev, what="intake_bounce_mail")
    assert out or words.strip(), (parsed, raw[:200])


def inbound_router(raw: bytes, counts: Counter) -> None:
    route = bounded(route_offline, raw, VIEW, SENT, what="route_offline")
    assert route.route in ROUTES, route
    assert route.reason.strip(), route
    counts.add(f"inbound: {route.route}")


def test_generated_mails_through_the_bounce_parser_and_the_inbound_router() -> None:
    counts = Counter()

    @fuzz_settings(MAILS // BATCH)
    @given(st.lists(MAIL, min_size=BATCH, max_size=BATCH))
    def run(mails: list[bytes]) -> None:
        for raw in mails:
            bounce_parser(raw, counts)
            inbound_router(raw, counts)
            counts.add("mails")

    run()
    assert counts.n["mails"] >= MAILS, counts.n
    # the mails reach the interesting branches, not only the refusals
    for seen in ("bounce: bounce", "bounce: not_bounce", "inbound: bounce", "inbound: reject",
                 "inbound: alias"):
        assert counts.n.get(seen, 0) > 0, (seen, counts.n)
