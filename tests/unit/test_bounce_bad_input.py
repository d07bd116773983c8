"""Bad input to the bounce parser: a clear result or a clear error, never a
crash (times are measured in bench/bounces.py, not here)."""

from __future__ import annotations

import random

import pytest

from processors.bounces.parser import MAX_RESULTS, BounceParseError, parse_bounce

HEAD = b"From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"


def nested(depth: int) -> bytes:
    body = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                    for i in range(depth))
    body += b"Content-Type: text/plain\n\nhello\n"
    body += b"".join(b"\n--b%d--\n" % i for i in reversed(range(depth)))
    return HEAD + b"MIME-Version: 1.0\n" + body


def bad_inputs() -> dict[str, bytes]:
    rnd = random.Random(21)
    return {
        "5 MB of headers": b"".join(b"X-H%d: %s\n" % (i, b"a" * 70) for i in range(65000))
        + HEAD + b"\nbody\n",
        "one 5 MB header": b"Subject: " + b"x " * 2_500_000 + b"\n" + HEAD + b"\nhi\n",
        "1000 nested multiparts": nested(1000),
        "binary garbage": bytes(rnd.randrange(256) for _ in range(100_000)),
        "wrong charsets": HEAD.replace(b"Subject: U", b"Subject: =?x-klingon?B?AAAA?= U")
        + b"Content-Type: text/plain; charset=klingon\n\nThis is the mail system at host x.\n\n"
        b"<a@b.example>: 550 5.1.1 user unknown \xff\xfe\n",
        "20000 failed recipients": HEAD + b"X-Failed-Recipients: "
        + b", ".join(b"u%d@x.example" % i for i in range(20000)) + b"\n\n"
        + b"\n".join(b"u%d@x.example: 550 user unknown" % i for i in range(20000)),
    }


@pytest.mark.parametrize("name", list(bad_inputs()))
def test_bad_input_gives_a_result_or_a_clear_error(name: str) -> None:
    raw = bad_inputs()[name]
    try:
        parsed = parse_bounce(raw)
    except BounceParseError as exc:
        assert str(exc)  # says what is wrong
        return
    assert parsed.kind in ("bounce", "delay", "auto_reply", "feedback", "not_bounce")
    assert len(parsed.results) <= MAX_RESULTS


def test_deep_nesting_is_a_clear_error_and_shallow_nesting_is_read() -> None:
    with pytest.raises(BounceParseError, match="nested too deep"):
        parse_bounce(nested(1000))
    assert parse_bounce(nested(30)).kind == "not_bounce"


def test_wrong_charset_still_finds_the_recipient() -> None:
    parsed = parse_bounce(bad_inputs()["wrong charsets"])
    assert [(r.recipient, r.status, r.hard) for r in parsed.results] == [
        ("a@b.example", "5.1.1", True)]
