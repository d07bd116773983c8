"""Test connection: each failure kind comes back as its one sentence."""

from __future__ import annotations

import time

import pytest

from processors.delivery import probe
from schemas import OutgoingServerConfigured

from .conftest import HOST, PASSWORD_ENV, USER


async def run(server: OutgoingServerConfigured, pki, ca_file: str | None = "", **kw):
    return await probe.test_connection(
        server,
        kw.pop("send_to", None),
        kw.pop("on_behalf", None),
        timeout=kw.pop("timeout", 2.0),
        deadline=kw.pop("deadline", 6.0),
        ca_file=pki.ca_file if ca_file == "" else ca_file,
        local_hostname="client.test",
    )


def assert_one_sentence(report) -> None:
    assert not report.ok
    assert report.sentence.endswith(".")
    assert report.sentence.count(". ") == 0, report.sentence
    assert report.steps[-1].ok is False and report.steps[-1].detail == report.sentence


async def test_everything_works(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    report = await run(srv.config(), pki, send_to="ops@example.org", on_behalf="sales@example.com")
    assert report.ok, report.to_dict()
    assert [s.name for s in report.steps] == [
        "connect",
        "greeting",
        "tls",
        "login",
        "on_behalf",
        "send",
    ]
    assert "works" in report.sentence and "may send as sales@example.com" in report.sentence
    assert "certificate verified" in report.steps[2].detail
    [mail] = srv.handler.messages  # the on-behalf check sent nothing
    assert mail.mail_from == "sales@example.com" and mail.rcpt_tos == ["ops@example.org"]
    assert mail.login == USER.encode()


async def test_ssl_works_without_extras(smtp_server, pki):
    srv = smtp_server(tls="ssl", auth=True)
    report = await run(srv.config(), pki)
    assert report.ok, report.to_dict()
    assert [s.name for s in report.steps] == ["connect", "tls", "greeting", "login"]
    assert srv.handler.messages == []


async def test_refused_port(closed_port, pki):
    server = OutgoingServerConfigured(name="x", host=HOST, port=closed_port, security="starttls")
    report = await run(server, pki)
    assert_one_sentence(report)
    assert report.kind == "refused"
    assert report.sentence.startswith(f"Nothing is listening on {HOST} port {closed_port}")
    assert "check the host and the port" in report.sentence


async def test_filtered_port(filtered_port, pki):
    server = OutgoingServerConfigured(name="x", host=HOST, port=filtered_port, security="starttls")
    start = time.monotonic()
    report = await run(server, pki, timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert_one_sentence(report)
    assert report.kind == "timeout"
    assert "firewall" in report.sentence and "timed out" in report.sentence


async def test_silent_port(silent_server, pki):
    host, port = silent_server
    server = OutgoingServerConfigured(name="x", host=host, port=port, security="starttls")
    start = time.monotonic()
    report = await run(server, pki, timeout=0.3)
    assert time.monotonic() - start < 3.0
    assert_one_sentence(report)
    assert report.kind == "no_greeting"
    assert "no SMTP greeting" in report.sentence and "firewall" in report.sentence
    assert [s.name for s in report.steps] == ["connect", "greeting"]


async def test_starttls_configured_on_implicit_tls_port(smtp_server, pki):
    srv = smtp_server(tls="ssl")
    report = await run(srv.config(security="starttls"), pki, timeout=0.4)
    assert_one_sentence(report)
    assert report.kind == "tls_required"
    assert "set security to SSL/TLS" in report.sentence
    assert "security is set to starttls" in report.sentence


async def test_ssl_configured_on_plain_port(smtp_server, pki):
    srv = smtp_server(tls="starttls")
    report = await run(srv.config(security="ssl"), pki, timeout=0.5)
    assert_one_sentence(report)
    assert report.kind == "tls_unexpected"
    assert "speaks plain SMTP" in report.sentence
    assert "set security to STARTTLS" in report.sentence


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
async def test_bad_certificate(smtp_server, pki, tls):
    srv = smtp_server(tls=tls)
    report = await run(srv.config(), pki, ca_file=None)
    assert_one_sentence(report)
    assert report.kind == "certificate"
    assert "certificate" in report.sentence and "allow_self_signed" in report.sentence
    assert report.steps[-1].name == "tls"


async def test_authentication_failed(smtp_server, pki, monkeypatch):
    srv = smtp_server(tls="starttls", auth=True)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    report = await run(srv.config(), pki)
    assert_one_sentence(report)
    assert report.kind == "auth_failed"
    assert "535" in report.sentence and "app password" in report.sentence
    assert "not-the-password" not in str(report.to_dict())


async def test_server_without_auth(smtp_server, pki):
    srv = smtp_server(tls="none")
    report = await run(srv.config(username=USER, password_env=PASSWORD_ENV), pki)
    assert_one_sentence(report)
    assert report.kind == "no_auth"
    assert "does not offer AUTH" in report.sentence
    assert "not encrypted" in report.sentence


async def test_server_without_starttls(smtp_server, pki):
    srv = smtp_server(tls="none")
    report = await run(srv.config(security="starttls"), pki)
    assert_one_sentence(report)
    assert report.kind == "no_starttls" and "does not offer STARTTLS" in report.sentence


async def test_sender_not_allowed_on_behalf(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    srv.handler.mail_replies["ceo@example.com"] = (
        "553 5.7.1 <ceo@example.com>: Sender address rejected: not owned by user app@example.com"
    )
    report = await run(srv.config(), pki, on_behalf="ceo@example.com")
    assert_one_sentence(report)
    assert report.kind == "sender_refused"
    assert report.steps[-1].name == "on_behalf"
    assert "ceo@example.com" in report.sentence and "553" in report.sentence
    assert "send on behalf" in report.sentence
    assert srv.handler.messages == []


async def test_sender_refused_at_rcpt(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    srv.handler.rcpt_replies["ceo@example.com"] = [
        "553 5.7.1 <ceo@example.com>: Sender address rejected: not logged in"
    ]
    report = await run(srv.config(), pki, on_behalf="ceo@example.com")
    assert report.kind == "sender_refused"


async def test_recipient_refused(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    srv.handler.rcpt_replies["nobody@example.org"] = [
        "550 5.1.1 <nobody@example.org>: no such user"
    ]
    report = await run(srv.config(), pki, send_to="nobody@example.org")
    assert_one_sentence(report)
    assert report.kind == "recipient_refused"
    assert report.steps[-1].name == "send"
    assert "nobody@example.org" in report.sentence and "550 5.1.1" in report.sentence


async def test_test_mail_needs_a_sender_address(smtp_server, pki):
    srv = smtp_server(tls="none")
    report = await run(srv.config(), pki, send_to="ops@example.org")
    assert report.kind == "no_sender_address"
    assert srv.handler.messages == []
