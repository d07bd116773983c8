"""SmtpSession / SmtpPool / deliver against real aiosmtpd servers on loopback."""

from __future__ import annotations

import asyncio
import time
from email import message_from_bytes

import pytest

from processors.delivery import errors
from processors.delivery import session as session_mod
from processors.delivery.message import build_message, make_smtp_message_id, message_bytes
from processors.delivery.pool import SmtpPool, deliver
from processors.delivery.session import SmtpSession
from schemas import OutgoingServerConfigured, RoutingDecided, SendRequested

from .conftest import HOST, PASSWORD, PASSWORD_ENV, USER

MAIL = b"From: app@example.com\r\nTo: a@example.org\r\nSubject: hello\r\n\r\nHello there.\r\n"
A, B = "alice@example.org", "bob@example.org"


def session(server: OutgoingServerConfigured, pki, **kw) -> SmtpSession:
    kw.setdefault("command_timeout", 3.0)
    kw.setdefault("deadline", 6.0)
    kw.setdefault("ca_file", pki.ca_file)
    kw.setdefault("local_hostname", "client.test")
    return SmtpSession(server, **kw)


def by_rcpt(results: list[errors.RecipientResult]) -> dict[str, errors.RecipientResult]:
    return {r.recipient: r for r in results}


@pytest.mark.parametrize("tls", ["none", "starttls", "ssl"])
async def test_delivers_to_every_recipient(smtp_server, pki, tls):
    srv = smtp_server(tls=tls, auth=tls != "none")
    s = session(srv.config(), pki)
    try:
        results = await s.send("bounce@example.com", [A, B], MAIL)
    finally:
        await s.close()
    assert [r.status for r in results] == ["accepted", "accepted"]
    assert results[0].code == 250 and results[0].enhanced == "2.0.0"
    assert "queued as C0FFEE" in results[0].text
    [got] = srv.handler.messages
    assert got.mail_from == "bounce@example.com"
    assert got.rcpt_tos == [A, B]
    assert message_from_bytes(got.content)["Subject"] == "hello"
    if tls != "none":
        assert got.login == USER.encode()


async def test_built_message_goes_through(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    server = srv.config(archive_bcc="archive@example.com")
    request = SendRequested(
        message_id="m-42",
        from_="App <app@example.com>",
        to=[A],
        bcc=[B],
        subject="Invoice",
        text="Hi ü",
        html="<p>Hi ü</p>",
    )
    decision = RoutingDecided(
        message_id="m-42",
        outcome="routed",
        server="test",
        header_from="App <app@example.com>",
        envelope_from="bounce@example.com",
    )
    msg = build_message(request, decision, server, make_smtp_message_id("m-42", "example.com"))
    s = session(server, pki)
    try:
        from processors.delivery.message import envelope_recipients

        rcpts = envelope_recipients(request, server)
        results = await s.send(decision.envelope_from, rcpts, message_bytes(msg))
    finally:
        await s.close()
    assert {r.status for r in results} == {"accepted"}
    [got] = srv.handler.messages
    assert got.rcpt_tos == [A, B, "archive@example.com"]
    parsed = message_from_bytes(got.content)
    assert parsed["Message-ID"] == "<m-42@example.com>"
    assert parsed["Bcc"] is None and B not in got.content.decode()


async def test_bad_password_is_auth_failure(smtp_server, pki, monkeypatch):
    srv = smtp_server(tls="starttls", auth=True)
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    s = session(srv.config(), pki)
    with pytest.raises(errors.AuthFailed) as info:
        await s.send("bounce@example.com", [A], MAIL)
    err = info.value
    assert err.kind == "auth_failed" and err.code == 535
    assert (err.server, err.host, err.port) == ("test", HOST, srv.port)
    assert "app password" in str(err) and "wrong" not in str(err)
    assert err.needs_operator
    assert [r.status for r in err.deferred([A])] == ["deferred"]
    assert srv.handler.messages == []


async def test_missing_password_names_the_variable(smtp_server, pki, monkeypatch):
    srv = smtp_server(tls="starttls", auth=True)
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(errors.CredentialsUnavailable) as info:
        await session(srv.config(), pki).connect()
    assert PASSWORD_ENV in str(info.value) and PASSWORD not in str(info.value)


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
async def test_untrusted_certificate_refused_unless_allowed(smtp_server, pki, tls):
    srv = smtp_server(tls=tls)
    with pytest.raises(errors.CertificateRejected) as info:
        await session(srv.config(), pki, ca_file=None).send("b@example.com", [A], MAIL)
    assert "allow_self_signed" in str(info.value)
    assert srv.handler.messages == []

    s = session(srv.config(allow_self_signed=True), pki, ca_file=None)
    try:
        results = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert results[0].status == "accepted"


async def test_certificate_for_another_host_refused(smtp_server, pki):
    srv = smtp_server(tls="ssl", cert="wrong_host")
    with pytest.raises(errors.CertificateRejected) as info:
        await session(srv.config(), pki).connect()
    assert "mismatch" in str(info.value).lower() or "match" in str(info.value).lower()


async def test_4xx_defers_then_next_attempt_delivers(smtp_server, pki):
    srv = smtp_server()
    srv.handler.rcpt_replies[A] = ["451 4.7.1 Greylisted, please try again later"]
    s = session(srv.config(), pki)
    try:
        [first] = await s.send("b@example.com", [A], MAIL)
        [second] = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert (first.status, first.code, first.enhanced, first.stage) == (
        "deferred",
        451,
        "4.7.1",
        "rcpt",
    )
    assert "Greylisted" in first.text
    assert second.status == "accepted"
    assert len(srv.handler.messages) == 1


async def test_5xx_fails_one_recipient_and_delivers_to_the_other(smtp_server, pki):
    srv = smtp_server()
    srv.handler.rcpt_replies[A] = ["550 5.1.1 <alice@example.org>: Recipient address rejected"]
    s = session(srv.config(), pki)
    try:
        results = by_rcpt(await s.send("b@example.com", [A, B], MAIL))
    finally:
        await s.close()
    assert results[A].status == "failed"
    assert (results[A].code, results[A].enhanced) == (550, "5.1.1")
    assert "Recipient address rejected" in results[A].text
    assert results[B].status == "accepted"
    [got] = srv.handler.messages
    assert got.rcpt_tos == [B]


async def test_sender_refused_fails_all(smtp_server, pki):
    srv = smtp_server()
    srv.handler.mail_replies["b@example.com"] = "553 5.7.1 Sender address rejected: not owned"
    s = session(srv.config(), pki)
    try:
        results = await s.send("b@example.com", [A, B], MAIL)
        assert [(r.status, r.code, r.stage) for r in results] == [("failed", 553, "mail")] * 2
        # the connection is still usable (RSET) for the next mail
        [ok] = await s.send("other@example.com", [A], MAIL)
    finally:
        await s.close()
    assert ok.status == "accepted" and srv.handler.connections == 1


async def test_disconnect_during_data_defers_unconfirmed(smtp_server, pki):
    srv = smtp_server()
    srv.handler.rcpt_replies[B] = ["550 5.1.1 no such user"]
    srv.handler.drop_in_data = 1
    s = session(srv.config(), pki)
    try:
        results = by_rcpt(await s.send("b@example.com", [A, B], MAIL))
        assert results[A].status == "deferred" and results[A].stage == "data"
        assert results[A].code == 0 and "duplicate" in results[A].text
        assert results[B].status == "failed"  # a 5xx RCPT stays failed
        # the next attempt reconnects and delivers
        [again] = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert again.status == "accepted"
    assert s.connections == 2 and srv.handler.connections == 2


async def test_server_that_never_answers_is_deferred_quickly(silent_server, pki):
    host, port = silent_server
    server = OutgoingServerConfigured(name="silent", host=host, port=port, security="none")
    start = time.monotonic()
    with pytest.raises(errors.ConnectTimeout) as info:
        await session(server, pki, command_timeout=5.0, deadline=0.5).send(
            "b@example.com", [A, B], MAIL
        )
    assert time.monotonic() - start < 2.0
    assert info.value.kind == "no_greeting"
    deferred = info.value.deferred([A, B])
    assert [(r.recipient, r.status) for r in deferred] == [(A, "deferred"), (B, "deferred")]

    pool = SmtpPool(command_timeout=0.3, deadline=5.0)
    try:
        delivery = await deliver(pool, server, "b@example.com", [A, B], MAIL)
    finally:
        await pool.close_all()
    assert [r.status for r in delivery.outcomes] == ["deferred", "deferred"]
    assert delivery.error_kind == "no_greeting" and "firewall" in delivery.error
    assert delivery.duration < 2.0


@pytest.mark.parametrize(
    ("command_timeout", "deadline", "wording"),
    [(0.3, 5.0, "no answer to DATA within 0.3 s"), (5.0, 0.4, "attempt deadline of 0.4 s")],
)
async def test_slow_answer_to_data_is_deferred(
    smtp_server, pki, command_timeout, deadline, wording
):
    srv = smtp_server()
    srv.handler.rcpt_replies[B] = ["550 5.1.1 no such user"]
    srv.handler.data_delay = 3.0
    s = session(srv.config(), pki, command_timeout=command_timeout, deadline=deadline)
    start = time.monotonic()
    try:
        results = by_rcpt(await s.send("b@example.com", [A, B], MAIL))
    finally:
        await s.close()
    assert time.monotonic() - start < 1.5
    assert (results[A].status, results[A].stage, results[A].code) == ("deferred", "data", 0)
    assert wording in results[A].text
    assert results[B].status == "failed"
    assert not s.connected


async def test_connection_is_reused(smtp_server, pki):
    srv = smtp_server(tls="starttls", auth=True)
    s = session(srv.config(), pki)
    try:
        for _ in range(3):
            [r] = await s.send("b@example.com", [A], MAIL)
            assert r.status == "accepted"
    finally:
        await s.close()
    assert len(srv.handler.messages) == 3
    assert srv.handler.connections == 1 and s.connections == 1
    assert srv.handler.rsets == 0  # just used: no liveness check


async def test_a_connection_idle_for_a_while_is_checked_before_reuse(smtp_server, pki,
                                                                     monkeypatch):
    monkeypatch.setattr(session_mod, "RSET_AFTER_IDLE", 0.0)
    srv = smtp_server()
    s = session(srv.config(), pki)
    try:
        for _ in range(3):
            [r] = await s.send("b@example.com", [A], MAIL)
            assert r.status == "accepted"
    finally:
        await s.close()
    assert srv.handler.connections == 1 and srv.handler.rsets == 2


async def test_a_connection_the_server_closed_after_a_mail_is_opened_again(smtp_server, pki):
    srv = smtp_server()
    srv.handler.close_after_data = 1
    s = session(srv.config(), pki)
    try:
        [first] = await s.send("b@example.com", [A], MAIL)
        await asyncio.sleep(0.3)  # the server hangs up meanwhile
        [second] = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert first.status == second.status == "accepted", second
    assert len(srv.handler.messages) == 2 and s.connections == 2
    assert srv.handler.rsets == 0


async def test_a_reused_connection_lost_at_mail_is_opened_again_for_that_mail(smtp_server,
                                                                            pki):
    srv = smtp_server()
    s = session(srv.config(), pki)
    try:
        [first] = await s.send("b@example.com", [A], MAIL)
        srv.handler.drop_in_mail = 1  # closing as the client reuses it
        [second] = await s.send("b@example.com", [A], MAIL)
        srv.handler.drop_in_mail = 2  # a new connection lost at MAIL too: deferred
        [third] = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert first.status == second.status == "accepted", second
    assert len(srv.handler.messages) == 2 and s.connections == 3
    assert third.status == "deferred" and third.stage == "mail", third


async def test_reconnects_when_reused_connection_is_gone(smtp_server, pki, monkeypatch):
    monkeypatch.setattr(session_mod, "RSET_AFTER_IDLE", 0.0)
    srv = smtp_server()
    s = session(srv.config(), pki)
    try:
        await s.send("b@example.com", [A], MAIL)
        srv.handler.rset_replies = ["421 4.4.2 mx.test idle too long, closing"]
        [r] = await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert r.status == "accepted"
    assert s.connections == 2 and srv.handler.connections == 2


async def test_max_mails_per_connection(smtp_server, pki):
    srv = smtp_server()
    s = session(srv.config(), pki, max_mails=1)
    try:
        await s.send("b@example.com", [A], MAIL)
        await s.send("b@example.com", [A], MAIL)
    finally:
        await s.close()
    assert srv.handler.connections == 2


async def test_no_starttls_offered(smtp_server, pki):
    srv = smtp_server(tls="none")
    with pytest.raises(errors.StartTlsUnavailable) as info:
        await session(srv.config(security="starttls"), pki).connect()
    assert info.value.kind == "no_starttls"


async def test_refused_port(closed_port, pki):
    server = OutgoingServerConfigured(name="x", host=HOST, port=closed_port, security="none")
    with pytest.raises(errors.ConnectFailed) as info:
        await session(server, pki).connect()
    assert info.value.kind == "refused" and info.value.port == closed_port


async def test_filtered_port_times_out(filtered_port, pki):
    server = OutgoingServerConfigured(name="x", host=HOST, port=filtered_port, security="none")
    start = time.monotonic()
    with pytest.raises(errors.ConnectTimeout) as info:
        await session(server, pki, command_timeout=0.3).connect()
    assert info.value.kind == "timeout" and "firewall" in str(info.value)
    assert time.monotonic() - start < 2.0


async def test_pool_reuses_and_renews_sessions(smtp_server, pki):
    srv = smtp_server()
    pool = SmtpPool(command_timeout=3.0, deadline=6.0, ca_file=pki.ca_file)
    try:
        server = srv.config()
        first = await pool.get(server)
        await first.send("b@example.com", [A], MAIL)
        pool.release(first)
        again = await pool.get(server)
        assert again is first
        await again.send("b@example.com", [A], MAIL)
        pool.release(again)
        assert srv.handler.connections == 1

        changed = await pool.get(srv.config(allow_self_signed=True))  # config changed
        assert changed is not first and not first.connected
        pool.release(changed)

        async with pool.lease(server) as leased:
            assert leased is not first
        delivery = await deliver(pool, server, "b@example.com", [A, B], MAIL)
        assert [r.status for r in delivery.outcomes] == ["accepted", "accepted"]
        assert delivery.error == ""
    finally:
        await pool.close_all()
    with pytest.raises(RuntimeError):
        await pool.get(srv.config())


async def test_deliver_turns_session_errors_into_deferrals(closed_port):
    server = OutgoingServerConfigured(name="x", host=HOST, port=closed_port, security="none")
    pool = SmtpPool(command_timeout=1.0, deadline=2.0)
    try:
        delivery = await deliver(pool, server, "b@example.com", [A, B, A], MAIL)
    finally:
        await pool.close_all()
    assert [(r.recipient, r.status) for r in delivery.outcomes] == [
        (A, "deferred"),
        (B, "deferred"),
    ]
    assert delivery.error_kind == "refused" and delivery.needs_operator
    assert delivery.outcomes[0].as_outcome()["status"] == "deferred"
