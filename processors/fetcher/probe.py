"""Test connection for an incoming server (``postlane incoming test NAME``):
connect, TLS, log in, open the folder and see whether the server pushes new
mail (IDLE). A failure is one sentence saying what is wrong and what to
change."""

from __future__ import annotations

from collections.abc import Mapping

from schemas import IncomingServerConfigured

from ..delivery.diagnose import ProbeReport
from .imap import ImapError, ImapSession


def works_sentence(server: IncomingServerConfigured, session: ImapSession, idle: bool) -> str:
    tls = {"ssl": "SSL/TLS", "starttls": "STARTTLS", "none": "no encryption"}[server.security]
    sel = session.selected
    mails = f" ({sel.exists} mails)" if sel else ""
    if idle:
        push = "the server pushes new mail (IDLE), so it is fetched as it arrives"
    elif server.use_idle:
        push = (f"the server does not offer IDLE, so the folder is polled every "
                f"{server.poll_interval:g} s")
    else:
        push = f"use_idle is off, so the folder is polled every {server.poll_interval:g} s"
    return (f"The incoming server {server.name} ({server.host} port {server.port}) works: "
            f"{tls}, login as {server.username!r} accepted, folder {server.folder!r}{mails} "
            f"opened; {push}.")


async def test_incoming(
    server: IncomingServerConfigured, *, timeout: float = 10.0, ca_file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProbeReport:
    report = ProbeReport(server.name, server.host, server.port, server.security)
    session = ImapSession(server, timeout=timeout, ca_file=ca_file, environ=environ)
    try:
        await session.connect()
        await session.select()
        for name, detail in session.progress:
            report.passed(name, detail)
        idle = server.use_idle and session.has_idle
        report.passed("idle", "IDLE offered" if session.has_idle else "no IDLE: polling")
        report.sentence = works_sentence(server, session, idle)
    except ImapError as exc:
        for name, detail in session.progress:
            report.passed(name, detail)
        report.failed(exc.step or "connect", exc.kind, exc.sentence)
    finally:
        await session.logout()
    return report


# Not a test, whatever pytest thinks of the name.
test_incoming.__test__ = False  # type: ignore[attr-defined]
