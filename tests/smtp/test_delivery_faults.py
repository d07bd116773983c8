"""The delivery fault matrix: every way an outgoing server can fail, against a
real server on loopback, through delivery's real path, ending in the state
and the words an operator sees.

The path: ``router.core.decide`` routes the request; the delivery core
opens the ledger and starts the attempt (``core.on_routed``, ``core.start``);
``Sender.attempt`` builds the mail and runs it through the SMTP pool
(``pool.deliver``; ``session.py`` the one module talking to the server) and folds the
outcome (``core.finish``: back-off, give-up, failover to the next matching
server); the status projection (``status.core.fold``) turns the events into
the state and reason ``postlane status`` shows. Only the Faust glue is left
out (the e2e tests cover it).

Servers: aiosmtpd where it can misbehave the needed way (AUTH, 452, 552,
dropped DATA, slow DATA, 5xx after DATA), raw asyncio servers where it
cannot (a 421 greeting, a TLS alert in the handshake), and the sockets of
``conftest.py`` (a closed port, a port dropping SYNs, a silent server).

| case                       | state (one server) | with a backup server |
|----------------------------|--------------------|----------------------|
| connection refused         | deferred           | failed over          |
| connect timeout            | deferred           | failed over          |
| silent banner              | deferred           | failed over          |
| 421 at banner              | deferred           | failed over          |
| TLS handshake failure      | deferred           | failed over          |
| AUTH rejected              | deferred           | failed over          |
| 452 for some recipients    | deferred (the rest sent), then sent           |
| 552 message too large      | failed (MAIL with SIZE, or after DATA)         |
| 552 to RCPT                | deferred (RFC 5321 4.5.3.1.10: "too many recipients") |
| connection dropped in DATA | deferred, "a duplicate is possible"           |
| slower than the deadline   | deferred                                      |
| 5xx after DATA             | failed, the server's answer kept              |
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from processors.config.view import ConfigView
from processors.delivery import core
from processors.delivery.pool import SmtpPool
from processors.delivery.sender import Sender
from processors.router.core import decide
from processors.status import core as status_core
from schemas import (
    DeliveryAttempted,
    Event,
    OutgoingServerConfigured,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
)
from streams.settings import Settings

from .conftest import HOST, PASSWORD_ENV, Recorder, Running, StartServer, free_port

A, B = "alice@dest.test", "bob@dest.test"
FROM = "app@a.test"


# --------------------------------------------------------------------------
# the path: route, start, attempt (SMTP + core.finish), status


@dataclass
class Outcome:
    """One attempt through the real path, and what ``postlane status`` shows."""

    attempted: DeliveryAttempted
    ledger: core.Ledger
    state: str
    reason: str
    recipients: dict[str, dict[str, Any]]
    events: list[Event]
    elapsed: float


class Path:
    """A delivery worker's path without Faust: the config view and the
    settings a ``Runtime`` carries, a ``Sender`` with its SMTP pool, and the
    events of one mail folded by the status projection."""

    def __init__(self, pki: Any, servers: list[OutgoingServerConfigured], **settings: Any) -> None:
        values: dict[str, Any] = {"smtp_timeout": 1.0, "attempt_deadline": 4.0,
                                  "retry_first": 300, "retry_max": 4000,
                                  "retry_give_up": 5 * 86400}
        values.update(settings)
        self.settings = Settings.from_env(environ={}, **values)
        view = ConfigView(settings=SettingsChanged(catchall_domain="mycompany.test"),
                          servers={s.name: s for s in servers})
        rt = SimpleNamespace(settings=self.settings, config=SimpleNamespace(view=view))
        self.view = view
        self.sender = Sender(rt)  # type: ignore[arg-type]
        # the test CA, so TLS to the test servers verifies as it would in production
        self.sender.pool = SmtpPool.from_settings(
            self.settings, ca_file=pki.ca_file, local_hostname="client.test")
        self.events: list[Event] = []
        self.ledger: core.Ledger | None = None
        self.request: SendRequested | None = None

    async def close(self) -> None:
        await self.sender.pool.close_all()

    def route(self, *to: str) -> RoutingDecided:
        self.request = SendRequested(message_id=f"m-{time.monotonic_ns()}", from_=FROM,
                                     to=list(to), subject="Invoice 42", text="Please pay.")
        decision = decide(self.view, self.request)
        assert decision.outcome == "routed", decision
        self.events += [self.request, decision]
        ledger, action = core.on_routed(None, decision, self.request.recipients(), time.time())
        assert ledger is not None and action.kind == "deliver"
        self.ledger = ledger
        return decision

    async def attempt(self) -> Outcome:
        assert self.ledger is not None and self.request is not None
        ledger, started = core.start(self.ledger, core.Action("deliver"), "test-worker")
        t0 = time.monotonic()
        done, attempted = await self.sender.attempt(ledger, core.Action("deliver"), self.request)
        elapsed = time.monotonic() - t0
        self.ledger = done
        self.events += [started, attempted]
        st = status_core.fold(self.events)
        assert st is not None
        return Outcome(attempted, done, st.state, st.reason, st.recipients, list(self.events),
                       elapsed)

    async def retry_now(self) -> Outcome:
        """The next attempt, as the retry timer would start it once due."""
        assert self.ledger is not None
        self.ledger = core.Ledger(**{**self.ledger.to_dict(), "next_at": time.time()})
        action = core.on_retry_due(self.ledger, self.ledger.attempt, time.time())
        assert action.kind == "deliver", action
        return await self.attempt()


def server(name: str, port: int, *, priority: int = 10, security: str = "none",
           **extra: Any) -> OutgoingServerConfigured:
    return OutgoingServerConfigured(name=name, host=HOST, port=port, security=security,
                                    from_filter="a.test", priority=priority, **extra)


@pytest.fixture
async def path(pki: Any) -> AsyncIterator[Callable[..., Path]]:
    made: list[Path] = []

    def make(servers: list[OutgoingServerConfigured], **settings: Any) -> Path:
        p = Path(pki, servers, **settings)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()


# --------------------------------------------------------------------------
# servers aiosmtpd cannot play


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Script], Awaitable[int]]]:
    """``await raw_server(script) -> port``: an asyncio server on loopback
    running ``script`` per connection; closed at teardown."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(script: Script) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            with contextlib.suppress(Exception):
                await script(reader, writer)
            writer.close()

        srv = await asyncio.start_server(handle, HOST, 0)
        servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    yield start
    for w in writers:
        w.close()
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, reads, never writes a byte (no banner)."""
    while await reader.read(4096):
        pass


async def greeting_421(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"421 4.3.2 mx.test Service not available, closing transmission channel\r\n")
    await writer.drain()


# A TLS record: alert (21), TLS 1.2, 2 bytes, fatal (2) handshake_failure (40):
# what a server sends when it cannot agree on a protocol or cipher.
HANDSHAKE_FAILURE_ALERT = b"\x15\x03\x03\x00\x02\x02\x28"


async def tls_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Implicit TLS: read the ClientHello, answer handshake_failure."""
    await reader.read(4096)
    writer.write(HANDSHAKE_FAILURE_ALERT)
    await writer.drain()
    await reader.read(4096)


async def starttls_alert(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Plain SMTP offering STARTTLS, whose handshake then fails."""
    writer.write(b"220 mx.test ESMTP\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            writer.write(b"250-mx.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
        elif verb == b"STAR":
            writer.write(b"220 2.0.0 Ready to start TLS\r\n")
            await writer.drain()
            await tls_alert(reader, writer)
            return
        else:
            writer.write(b"502 5.5.2 not here\r\n")
        await writer.drain()


class Sink(Recorder):
    """The tests' Recorder plus scripted answers to the next DATAs."""

    def __init__(self) -> None:
        super().__init__()
        self.data_replies: list[str] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def sized_server() -> Any:
    """aiosmtpd with a message size limit (SIZE advertised)."""
    started: list[Controller] = []

    def start(limit: int) -> Running:
        handler = Sink()
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, server_hostname="mx.test",
                                ready_timeout=5.0, data_size_limit=limit)
        controller.start()
        started.append(controller)
        return Running(HOST, port, "none", handler, controller, False)

    yield start
    for c in started:
        c.stop()


def assert_deferred(out: Outcome, *words: str, server: str = "main") -> None:
    """Deferred for a retry on the same server, every recipient deferred,
    the reason in words and a next attempt time."""
    a = out.attempted
    assert out.state == "deferred", (out.state, out.reason)
    assert a.next_attempt_at > time.time() + 60 and a.next_server == ""
    assert out.ledger.server == server and not out.ledger.done
    assert out.reason.startswith("deferred: ") and "next attempt" in out.reason
    for w in words:
        assert w.lower() in out.reason.lower(), (w, out.reason)
    assert {r["state"] for r in out.recipients.values()} == {"deferred"}
    # a deferral never shows a permanent (5.x.x) status
    assert all(r["enhanced"].startswith("4.") for r in out.recipients.values()), out.recipients


def assert_failed_over(out: Outcome, *words: str) -> None:
    """Moved to the backup server at once, the reason saying why and where."""
    a = out.attempted
    assert out.state == "deferred", (out.state, out.reason)
    assert a.server == "main" and a.next_server == "backup"
    assert a.next_attempt_at <= time.time() + 1
    assert out.ledger.server == "backup" and out.ledger.tried_servers == ["main"]
    assert a.error, "a session failure carries its sentence"
    assert out.reason.endswith("via backup"), out.reason
    for w in words:
        assert w.lower() in out.reason.lower(), (w, out.reason)


# --------------------------------------------------------------------------
# session failures: deferred on the only server, failed over with a backup

SESSION_CASES = {
    # case: words in the reason (what happened, then what to change)
    "refused": ["connection refused", "check the host and the port"],
    "connect_timeout": ["timed out", "firewall", "4.4.1"],
    "silent_banner": ["sent no SMTP greeting", "check the host, the port and the firewall",
                      "4.4.1"],
    "greeting_421": ["421", "Service not available", "refused the session at connect"],
    "tls_alert": ["TLS negotiation", "handshake failure", "supports TLS 1.2"],
    "starttls_alert": ["TLS negotiation", "handshake failure", "supports TLS 1.2"],
    "auth_rejected": ["refused the login", "535 5.7.8", "app password", "4.7.8"],
}


@pytest.fixture
async def failing(request: pytest.FixtureRequest, raw_server: Any, smtp_server: StartServer,
                  monkeypatch: pytest.MonkeyPatch) -> tuple[str, OutgoingServerConfigured]:
    """(case, the "main" server failing that way)."""
    case = request.param
    if case == "refused":
        return case, server("main", free_port())
    if case == "connect_timeout":
        return case, server("main", request.getfixturevalue("filtered_port"))
    if case == "silent_banner":
        return case, server("main", await raw_server(silent))
    if case == "greeting_421":
        return case, server("main", await raw_server(greeting_421))
    if case == "tls_alert":
        return case, server("main", await raw_server(tls_alert), security="ssl")
    if case == "starttls_alert":
        return case, server("main", await raw_server(starttls_alert), security="starttls")
    assert case == "auth_rejected"
    srv = smtp_server(tls="none", auth=True)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    return case, srv.config(name="main", from_filter="a.test", priority=10)


@pytest.mark.parametrize("failing", list(SESSION_CASES), indirect=True)
async def test_session_failure_on_the_only_server_is_deferred(failing, path):
    case, main = failing
    words = SESSION_CASES[case]
    p = path([main], smtp_timeout=0.5)
    p.route(A, B)
    out = await p.attempt()
    assert_deferred(out, *words)
    assert out.attempted.error  # the session failure's sentence
    assert out.elapsed < 3.0
    # every recipient carries the sentence, the server and the attempt
    for r in out.recipients.values():
        assert r["server"] == "main" and r["attempt"] == 1 and words[0].lower() in \
            r["text"].lower()
    # the next attempt is on the same server, later (no failover target)
    assert out.ledger.next_at >= time.time() + 299


@pytest.mark.parametrize("failing", list(SESSION_CASES), indirect=True)
async def test_session_failure_fails_over_to_the_next_server(failing, path, smtp_server):
    case, main = failing
    words = SESSION_CASES[case]
    backup = smtp_server()
    p = path([main, backup.config(name="backup", from_filter="a.test", priority=20)],
             smtp_timeout=0.5)
    p.route(A, B)
    out = await p.attempt()
    assert_failed_over(out, *words)
    # the next attempt goes to the backup and is sent
    again = await p.retry_now()
    assert again.state == "sent", again.reason
    assert again.attempted.server == "backup" and again.attempted.attempt == 2
    [got] = backup.handler.messages
    assert got.rcpt_tos == [A, B]


# --------------------------------------------------------------------------
# answers inside the transaction


async def test_452_for_some_recipients_defers_those_and_sends_the_rest(path, smtp_server):
    srv = smtp_server()
    srv.handler.rcpt_replies[B] = ["452 4.5.3 Too many recipients, send the rest later"]
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert out.state == "deferred", out.reason
    assert out.recipients[A]["state"] == "sent"
    assert out.recipients[B]["state"] == "deferred"
    assert (out.recipients[B]["code"], out.recipients[B]["enhanced"]) == (452, "4.5.3")
    assert "452 4.5.3 Too many recipients" in out.reason and "next attempt" in out.reason
    assert out.ledger.pending == [B] and out.ledger.accepted == [A]
    [first] = srv.handler.messages
    assert first.rcpt_tos == [A]
    # the retry goes to the deferred recipient only, and the mail is sent
    again = await p.retry_now()
    assert again.state == "sent" and again.reason == ""
    assert [m.rcpt_tos for m in srv.handler.messages] == [[A], [B]]


async def test_552_message_too_large_at_mail_fails(path, sized_server):
    srv = sized_server(200)  # SIZE=200: the mail is larger
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert out.state == "failed", out.reason
    assert out.ledger.done and out.attempted.next_attempt_at == 0
    for r in out.recipients.values():
        assert (r["state"], r["code"]) == ("failed", 552)
    assert "552" in out.reason and "size exceeds" in out.reason
    assert srv.handler.messages == []


async def test_552_message_too_large_after_data_fails(path, smtp_server):
    srv = smtp_server(handler=Sink())
    srv.handler.data_replies = ["552 5.3.4 Message size exceeds fixed limit"]
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert out.state == "failed", out.reason
    assert {(r["state"], r["code"], r["enhanced"]) for r in out.recipients.values()} == {
        ("failed", 552, "5.3.4")}
    assert "552 5.3.4 Message size exceeds fixed limit (server main)" in out.reason


async def test_552_to_rcpt_is_temporary(path, smtp_server):
    """RFC 5321 4.5.3.1.10: 552 to RCPT is the old "too many recipients";
    clients SHOULD treat it as 452."""
    srv = smtp_server()
    srv.handler.rcpt_replies[B] = ["552 Too many recipients"]
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert out.state == "deferred", out.reason
    assert out.recipients[A]["state"] == "sent"
    assert (out.recipients[B]["state"], out.recipients[B]["code"]) == ("deferred", 552)
    assert "552" in out.reason and "Too many recipients" in out.reason
    again = await p.retry_now()
    assert again.state == "sent"


async def test_connection_dropped_mid_data_is_deferred_and_says_duplicate(path, smtp_server):
    srv = smtp_server()
    srv.handler.drop_in_data = 1
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert_deferred(out, "connection lost during DATA", "a duplicate is possible")
    assert out.attempted.error == ""  # not a session failure: no failover
    again = await p.retry_now()
    assert again.state == "sent"
    assert len(srv.handler.messages) == 1


async def test_server_slower_than_the_attempt_deadline_is_deferred(path, smtp_server):
    srv = smtp_server()
    srv.handler.data_delay = 3.0
    p = path([srv.config(name="main", from_filter="a.test")], smtp_timeout=5.0,
             attempt_deadline=0.5)
    p.route(A, B)
    out = await p.attempt()
    assert out.elapsed < 2.0
    assert_deferred(out, "within the attempt deadline of 0.5 s during data", "will retry")


async def test_slow_greeting_past_the_deadline_is_deferred(path, raw_server):
    """A server that greets only after the whole attempt's deadline."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3.0)
        writer.write(b"220 mx.test ESMTP\r\n")
        await writer.drain()

    port = await raw_server(slow)
    p = path([server("main", port)], smtp_timeout=5.0, attempt_deadline=0.5)
    p.route(A)
    out = await p.attempt()
    assert out.elapsed < 2.0
    assert_deferred(out, "sent no SMTP greeting within 0.5 s")


async def test_5xx_after_data_fails_with_the_answer_kept(path, smtp_server):
    srv = smtp_server(handler=Sink())
    srv.handler.data_replies = ["554 5.7.1 Message rejected as spam by content filter"]
    p = path([srv.config(name="main", from_filter="a.test")])
    p.route(A, B)
    out = await p.attempt()
    assert out.state == "failed", out.reason
    assert out.ledger.done and out.ledger.failed.keys() == {A, B}
    for r in out.recipients.values():
        assert (r["state"], r["code"], r["enhanced"]) == ("failed", 554, "5.7.1")
        assert "rejected as spam" in r["text"]
    assert out.reason == (f"{A}, {B}: 554 5.7.1 Message rejected as spam by content filter "
                          "(server main)")
    # a 5xx is not a session failure: a backup server does not change it
    assert out.attempted.next_server == ""
