"""Test connection: the "test" button of an outgoing server.

Connects, negotiates TLS, logs in, and optionally checks that the login may
send on behalf of another address (MAIL FROM + RCPT TO, then RSET) and
sends a test mail. Every failure becomes one sentence saying what is wrong
and what to change (``diagnose.py``); where the plain error is ambiguous
(a silent port, a failed handshake) the port is sniffed to tell a TLS mode
mismatch from a firewall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from schemas import OutgoingServerConfigured
from schemas.addresses import AddressError, check_address

from .connection import tls_context
from .diagnose import Facts, ProbeReport, answer, explain
from .errors import RecipientResult, SmtpSessionError
from .message import SMTP_POLICY
from .session import SmtpSession


async def sniff_port(host: str, port: int, timeout: float) -> str:
    """What a port speaks, for diagnosis: "smtp" (a plain-text greeting),
    "tls" (a TLS handshake completes), "closed" (connection refused or
    closed at once) or "silent" (neither within ``timeout``)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return "closed"
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if line[:3].isdigit():
            return "smtp"
        if not line:
            return "closed"
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
    ctx = tls_context(allow_self_signed=True)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=host, ssl_handshake_timeout=timeout
            ),
            timeout,
        )
    except (OSError, TimeoutError):
        return "silent"
    writer.close()
    return "tls"



def _facts(server: OutgoingServerConfigured, **changes: object) -> Facts:
    base = Facts(
        server=server.name,
        host=server.host,
        port=server.port,
        security=server.security,
        username=server.username,
    )
    return base.with_(**changes)


async def _refine(
    exc: SmtpSessionError, server: OutgoingServerConfigured, timeout: float
) -> tuple[str, str]:
    """(kind, sentence), with a TLS mode mismatch told apart from a silent
    port or a broken handshake by looking at what the port speaks."""
    kind = exc.kind
    if kind in ("no_greeting", "tls_required", "tls_failed", "tls_unexpected", "disconnected"):
        spoken = await sniff_port(server.host, server.port, timeout)
        if server.security != "ssl" and spoken == "tls":
            kind = "tls_required"
        elif server.security == "ssl" and spoken == "smtp":
            kind = "tls_unexpected"
        elif kind in ("tls_required", "tls_unexpected") and spoken == "silent":
            kind = "no_greeting"
    if kind == exc.kind:
        return kind, exc.sentence
    facts = exc.facts
    if kind == "tls_unexpected" and not facts.detail:
        facts = facts.with_(detail="it sent a plain-text greeting")
    return kind, explain(kind, facts)


def _login_address(server: OutgoingServerConfigured) -> str:
    for candidate in (server.sender, server.username):
        if candidate and "@" in candidate:
            try:
                check_address(candidate)
            except AddressError:
                continue
            return candidate
    return ""


def build_test_mail(server: OutgoingServerConfigured, sender: str, to: str) -> bytes:
    """The small text mail sent by a connection test."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"Postlane test mail through {server.name}"
    msg["Date"] = format_datetime(datetime.now(tz=UTC))
    msg["Message-ID"] = make_msgid("postlane-test", domain=sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(
        f"This is a test mail sent by Postlane through the outgoing server {server.name} "
        f"({server.host} port {server.port}, security {server.security}).\n"
        "If you can read it, the server works.\n"
    )
    return msg.as_bytes(policy=SMTP_POLICY)


def _refused(
    report: ProbeReport,
    step: str,
    server: OutgoingServerConfigured,
    result: RecipientResult,
    address: str,
    stage_kind: str,
) -> None:
    """Record a refused MAIL/RCPT/DATA as the report's failure."""
    if result.status == "deferred":
        kind = "temporary" if result.code else "disconnected"
    else:
        kind = stage_kind
    facts = _facts(
        server, code=result.code, text=result.said, address=address, step=step,
        detail=result.said,
    )
    report.failed(step, kind, explain(kind, facts))


async def test_connection(
    server: OutgoingServerConfigured,
    send_to: str | None = None,
    on_behalf: str | None = None,
    *,
    timeout: float = 10.0,
    deadline: float = 60.0,
    ca_file: str | None = None,
    local_hostname: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProbeReport:
    """Test ``server``: connect, TLS, login; then, when given, check that the
    login may send as ``on_behalf`` and send a test mail to ``send_to``
    (from ``on_behalf``, else the server's sender or e-mail username).

    ``timeout`` is per command (the server's own ``timeout`` wins), and also
    bounds the sniffing of a silent port. Never raises for SMTP trouble:
    the report says what happened."""
    report = ProbeReport(server.name, server.host, server.port, server.security)
    session = SmtpSession(
        server,
        command_timeout=timeout,
        deadline=deadline,
        ca_file=ca_file,
        local_hostname=local_hostname,
        environ=environ,
    )
    done: list[str] = []
    try:
        try:
            await session.connect()
        except SmtpSessionError as exc:
            for name, detail in session.progress:
                report.passed(name, detail)
            kind, sentence = await _refine(exc, server, min(timeout, session.command_timeout))
            report.failed(exc.step or "connect", kind, sentence)
            return report
        for name, detail in session.progress:
            report.passed(name, detail)
        tls = next((d for n, d in session.progress if n == "tls"), "")
        if tls:
            unchecked = " without certificate check" if server.allow_self_signed else ""
            done.append(f"{tls.split()[0]} encryption{unchecked}")
        else:
            done.append("no encryption")
        if server.username:
            done.append(f"login as {server.username!r} accepted")

        if on_behalf:
            rcpt = send_to or on_behalf
            mail_result, rcpt_result = await session.check_sender(on_behalf, rcpt)
            if mail_result.status != "accepted":
                _refused(report, "on_behalf", server, mail_result, on_behalf, "sender_refused")
                return report
            assert rcpt_result is not None
            if rcpt_result.status != "accepted":
                # Some servers refuse a foreign sender only at RCPT (5.7.x).
                sender_problem = rcpt_result.enhanced.startswith("5.7")
                _refused(
                    report, "on_behalf", server, rcpt_result,
                    on_behalf if sender_problem else rcpt,
                    "sender_refused" if sender_problem else "recipient_refused",
                )
                return report
            report.passed(
                "on_behalf",
                f"MAIL FROM:<{on_behalf}> and RCPT TO:<{rcpt}> accepted, then RSET "
                f"({answer(mail_result.code, mail_result.said)})",
            )
            done.append(f"may send as {on_behalf}")

        if send_to:
            sender = on_behalf or _login_address(server)
            if not sender:
                kind = "no_sender_address"
                report.failed("send", kind, explain(kind, _facts(server, step="send")))
                return report
            mail = build_test_mail(server, sender, send_to)
            results = await session.send(sender, [send_to], mail)
            result = results[0]
            if result.status != "accepted":
                stage_kind = {
                    "mail": "sender_refused",
                    "rcpt": "recipient_refused",
                    "data": "data_refused",
                }.get(result.stage, "recipient_refused")
                address = sender if result.stage == "mail" else send_to
                _refused(report, "send", server, result, address, stage_kind)
                return report
            report.passed(
                "send",
                f"test mail from {sender} to {send_to} accepted "
                f"({answer(result.code, result.said)})",
            )
            done.append(f"test mail to {send_to} accepted")

        report.sentence = (
            f"The server {server.name} ({server.host} port {server.port}) works: "
            + ", ".join(done)
            + "."
        )
        return report
    except SmtpSessionError as exc:
        kind, sentence = exc.kind, exc.sentence
        report.failed(exc.step or "connect", kind, sentence)
        return report
    finally:
        await session.close()


# Not tests, whatever pytest thinks of a name starting with "test".
test_connection.__test__ = False  # type: ignore[attr-defined]
