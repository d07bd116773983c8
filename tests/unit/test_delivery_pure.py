"""Pure parts of delivery: back-off, reply classification, message building,
secrets resolution and the failure sentences."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from processors.delivery.diagnose import KINDS, Facts, ProbeReport, explain
from processors.delivery.message import (
    MessageError,
    build_message,
    envelope_recipients,
    make_smtp_message_id,
    message_bytes,
)
from processors.delivery.policy import classify, next_attempt_at, parse_enhanced, retry_delay
from schemas import OutgoingServerConfigured, RoutingDecided, SendRequested
from streams.secrets import SecretUnavailable, require_password, resolve_password
from streams.settings import Settings

# --- back-off -------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    retry_first: float = 300.0
    retry_max: float = 4000.0
    retry_give_up: float = 5 * 86400.0


def test_backoff_doubles_from_first_and_is_capped():
    s = Retry()
    assert [retry_delay(n, s) for n in range(1, 7)] == [300, 600, 1200, 2400, 4000, 4000]
    assert retry_delay(0, s) == 300  # attempt numbers start at 1
    assert retry_delay(10_000, s) == 4000  # no overflow


def test_next_attempt_at_is_now_plus_delay():
    s = Retry()
    assert next_attempt_at(1, first_at=1000.0, now=1010.0, settings=s) == 1310.0
    assert next_attempt_at(3, first_at=1000.0, now=5000.0, settings=s) == 6200.0


def test_next_attempt_gives_up_after_queue_lifetime():
    s = Retry(retry_give_up=3600.0)
    assert next_attempt_at(2, first_at=0.0, now=3600.0, settings=s) == 3600.0 + 600.0
    assert next_attempt_at(9, first_at=0.0, now=3600.5, settings=s) is None


def test_backoff_reads_the_real_settings():
    s = Settings(retry_first=60.0, retry_max=100.0, retry_give_up=500.0)
    assert next_attempt_at(1, 0.0, 10.0, s) == 70.0
    assert next_attempt_at(2, 0.0, 10.0, s) == 110.0  # 120 capped at 100
    assert next_attempt_at(2, 0.0, 501.0, s) is None


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (250, "accepted"),
        (251, "accepted"),
        (354, "accepted"),
        (421, "deferred"),
        (450, "deferred"),
        (451, "deferred"),
        (452, "deferred"),
        (550, "failed"),
        (552, "failed"),
        (553, "failed"),
        (554, "failed"),
        (None, "deferred"),
        (0, "deferred"),
        (-1, "deferred"),
        (999, "deferred"),
    ],
)
def test_classify(code, status):
    assert classify(code) == status


@pytest.mark.parametrize(
    ("text", "enhanced"),
    [
        ("5.1.1 <bob@x.org>: Recipient address rejected: User unknown", "5.1.1"),
        ("4.7.1 Greylisted, try again in 5 minutes", "4.7.1"),
        ("Requested action not taken: mailbox unavailable", ""),
        ("Mailbox full (#5.2.2)", "5.2.2"),
        ("5.7.1 Client host [4.2.2.1] blocked using zen.spamhaus.org", "5.7.1"),
        ("Client host 10.2.3.4 rejected", ""),  # an IP address is not a status
        ("line one\n5.7.26 Unauthenticated email is not accepted", "5.7.26"),
        ("", ""),
    ],
)
def test_parse_enhanced(text, enhanced):
    assert parse_enhanced(text) == enhanced


# --- message ------------------------------------------------------------------------


def request(**kw) -> SendRequested:
    values: dict[str, Any] = dict(
        message_id="m-1",
        from_='"Admin" <admin@example.com>',
        to=["Bob <bob@example.org>", "carol@example.org"],
        cc=["dave@example.org"],
        bcc=["eve@example.org", "BOB@example.org"],
        subject="Your invoice €12",
        text="Hello ü",
        html="<p>Hello ü</p>",
        occurred_at=1_700_000_000.0,
    )
    values.update(kw)
    return SendRequested(**values)


DECISION = RoutingDecided(
    message_id="m-1",
    outcome="routed",
    server="main",
    header_from='"Admin" <notifications@mycompany.com>',
    envelope_from="bounce+m-1@mycompany.com",
    rule="default_from_address",
)
SERVER = OutgoingServerConfigured(name="main", host="smtp.mycompany.com")


def parse(msg) -> EmailMessage:
    got = message_from_bytes(message_bytes(msg), policy=policy.default)
    assert isinstance(got, EmailMessage)
    return got


def test_headers_of_a_built_message():
    msg = build_message(request(), DECISION, SERVER, "<m-1@mycompany.com>")
    got = parse(msg)
    assert got["From"] == "Admin <notifications@mycompany.com>"
    assert got["To"] == "Bob <bob@example.org>, carol@example.org"
    assert got["Cc"] == "dave@example.org"
    assert got["Bcc"] is None and b"eve@example.org" not in message_bytes(msg)
    assert got["Subject"] == "Your invoice €12"
    assert got["Message-ID"] == "<m-1@mycompany.com>"
    assert got["X-Postlane-Id"] == "m-1"
    assert got["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert got["Reply-To"] is None
    assert got["References"] is None and got["In-Reply-To"] is None


def test_body_is_text_and_html_alternatives_in_7bit():
    msg = build_message(request(), DECISION, SERVER, "<m-1@x.com>")
    raw = message_bytes(msg)
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    got = parse(msg)
    assert got.get_content_type() == "multipart/alternative"
    plain, html = got.get_body(("plain",)), got.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Hello ü"
    assert html is not None and html.get_content().strip() == "<p>Hello ü</p>"


def test_text_only_and_html_only():
    assert (
        parse(build_message(request(html=""), DECISION, SERVER, "<a@b.c>")).get_content_type()
        == "text/plain"
    )
    assert (
        parse(build_message(request(text=""), DECISION, SERVER, "<a@b.c>")).get_content_type()
        == "text/html"
    )


def test_attachments_and_extra_headers():
    pdf = b"%PDF-1.4 fake"
    req = request(
        attachments=[
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "data": base64.b64encode(pdf).decode(),
            },
            {"filename": "notes.txt", "data": base64.b64encode(b"n").decode()},
        ],
        headers={"List-Unsubscribe": "<mailto:unsub@example.com>", "X-Campaign": "spring"},
    )
    got = parse(build_message(req, DECISION, SERVER, "<a@b.c>"))
    assert got.get_content_type() == "multipart/mixed"
    atts = list(got.iter_attachments())
    assert [a.get_filename() for a in atts] == ["invoice.pdf", "notes.txt"]
    assert atts[0].get_content_type() == "application/pdf" and atts[0].get_content() == pdf
    assert atts[1].get_content_type() == "application/octet-stream"
    assert got["List-Unsubscribe"] == "<mailto:unsub@example.com>"
    assert got["X-Campaign"] == "spring"


def test_reply_to_from_request_else_server():
    server = OutgoingServerConfigured(
        name="main", host="h.example.com", reply_to="help@mycompany.com"
    )
    assert (
        parse(build_message(request(), DECISION, server, "<a@b.c>"))["Reply-To"]
        == "help@mycompany.com"
    )
    req = request(reply_to="Sales <sales@mycompany.com>")
    assert (
        parse(build_message(req, DECISION, server, "<a@b.c>"))["Reply-To"]
        == "Sales <sales@mycompany.com>"
    )


def test_bcc_only_mail_gets_undisclosed_recipients():
    got = parse(
        build_message(request(to=[], cc=[], bcc=["x@example.org"]), DECISION, SERVER, "<a@b.c>")
    )
    assert got["To"] == "undisclosed-recipients:;"


def test_international_domain_is_encoded():
    got = parse(
        build_message(request(to=["Jörg <jorg@bücher.de>"], cc=[]), DECISION, SERVER, "<a@b.c>")
    )
    assert got["To"] == "Jörg <jorg@xn--bcher-kva.de>"


def test_non_ascii_local_part_is_a_message_error():
    with pytest.raises(MessageError, match="SMTPUTF8"):
        build_message(request(to=["jörg@example.org"], cc=[]), DECISION, SERVER, "<a@b.c>")


def test_smtp_message_id_is_deterministic():
    assert make_smtp_message_id("m-1", "MyCompany.com") == "<m-1@mycompany.com>"
    assert make_smtp_message_id("m-1", "mycompany.com") == make_smtp_message_id(
        "m-1", "mycompany.com"
    )
    odd = make_smtp_message_id("a b<c>@d", "bücher.de")
    assert odd == "<a=20b=3Cc=3E=40d@xn--bcher-kva.de>"
    # "=" is escaped too, so two ids never map to the same Message-ID
    assert make_smtp_message_id("a=20b", "x.com") == "<a=3D20b@x.com>"


def test_envelope_recipients_dedupe_and_archive():
    server = OutgoingServerConfigured(
        name="m", host="h.example.com", archive_bcc="archive@mycompany.com"
    )
    assert envelope_recipients(request(), server) == [
        "bob@example.org",
        "carol@example.org",
        "dave@example.org",
        "eve@example.org",
        "archive@mycompany.com",
    ]
    assert envelope_recipients(request(), SERVER)[-1] == "eve@example.org"
    idn = request(to=["jorg@Bücher.de"], cc=[], bcc=[])
    assert envelope_recipients(idn, SERVER) == ["jorg@xn--bcher-kva.de"]


# --- secrets ------------------------------------------------------------------------


def test_password_from_env():
    server = OutgoingServerConfigured(
        name="s", host="h.example.com", username="u", password_env="SMTP_PW"
    )
    assert resolve_password(server, {"SMTP_PW": "p@ss word"}) == "p@ss word"
    with pytest.raises(SecretUnavailable, match="SMTP_PW") as info:
        resolve_password(server, {})
    assert "set SMTP_PW" in str(info.value)
    with pytest.raises(SecretUnavailable, match="is empty"):
        resolve_password(server, {"SMTP_PW": ""})


def test_password_from_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text("hunter2 \r\n")
    server = OutgoingServerConfigured(name="s", host="h.example.com", password_file=str(path))
    assert resolve_password(server) == "hunter2 "  # only the newline is stripped
    path.write_text("")
    with pytest.raises(SecretUnavailable, match="is empty"):
        resolve_password(server)
    path.unlink()
    with pytest.raises(SecretUnavailable, match="does not exist") as info:
        resolve_password(server)
    assert "hunter2" not in str(info.value)


def test_no_password_source():
    server = OutgoingServerConfigured(name="s", host="h.example.com", username="u")
    assert resolve_password(server, {}) is None
    with pytest.raises(SecretUnavailable, match="password_env"):
        require_password(server, {})


# --- sentences ---------------------------------------------------------------------


def test_every_kind_has_one_sentence():
    facts = Facts(
        server="s",
        host="smtp.example.com",
        port=587,
        security="starttls",
        username="u",
        code=550,
        text="5.7.1 nope",
        detail="because",
        address="a@example.com",
        step="rcpt",
        timeout=10.0,
    )
    for kind in KINDS:
        sentence = explain(kind, facts)
        assert sentence.endswith("."), kind
        assert "{" not in sentence, kind
        if kind != "no_password":
            assert ":" in sentence, kind  # what is wrong: what to change


def test_multiline_answers_become_one_line():
    s = explain(
        "recipient_refused", Facts(host="h", code=550, text="5.1.1 no\nsuch user", address="x@y.z")
    )
    assert "550 5.1.1 no such user" in s and "\n" not in s


def test_probe_report_ok_and_dict():
    r = ProbeReport("s", "h", 587, "starttls")
    r.passed("connect", "open")
    assert r.ok
    r.failed("login", "auth_failed", "Bad.")
    assert not r.ok and r.to_dict()["kind"] == "auth_failed"
    assert [s["ok"] for s in r.to_dict()["steps"]] == [True, False]
