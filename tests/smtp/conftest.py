"""Real SMTP servers on loopback for the delivery edge tests.

- ``pki``: a trustme CA, a server certificate for 127.0.0.1/localhost, one for
  the wrong host, and the CA as a file (the client's ``ca_file``).
- ``smtp_server``: a factory starting aiosmtpd Controllers (plain, STARTTLS
  with require_starttls, or implicit SSL; optionally with AUTH) with a
  scriptable ``Recorder`` handler; every server is stopped at teardown.
- ``silent_server``: an asyncio server that accepts and never answers.
- ``filtered_port``: a port whose SYNs are dropped (a full accept queue), the
  way a firewall makes a connect time out.
- ``closed_port``: a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from schemas import OutgoingServerConfigured

USER = "app@example.com"
PASSWORD = "s3cret-app-password"
PASSWORD_ENV = "POSTLANE_TEST_SMTP_PASSWORD"
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    peer: Any
    login: bytes | None


class Recorder:
    """aiosmtpd handler that records mail and answers as scripted.

    ``rcpt_replies[address]``: replies given to the next RCPTs for that
    address (then it is accepted); ``mail_replies[address]``: reply to
    every MAIL FROM that address; ``drop_in_data``: how many DATA to answer
    by closing the connection; ``rset_replies``: replies to the next RSETs;
    ``data_delay``: seconds to wait before answering DATA;
    ``close_after_data``: how many accepted DATA to follow by hanging up
    (a server that closes a connection after a mail); ``drop_in_mail``: how
    many MAIL to answer by closing the connection (one that was closing
    while the client reused it)."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.peers: list[Any] = []
        self.rcpt_replies: dict[str, list[str]] = {}
        self.mail_replies: dict[str, str] = {}
        self.drop_in_data = 0
        self.rsets = 0
        self.rset_replies: list[str] = []
        self.data_delay = 0.0
        self.close_after_data = 0
        self.drop_in_mail = 0

    @property
    def connections(self) -> int:
        """Distinct client connections that started a transaction."""
        return len(set(self.peers))

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.drop_in_mail > 0:
            self.drop_in_mail -= 1
            server.transport.close()  # the client never sees a reply
            return "250 OK"
        self.peers.append(session.peer)
        reply = self.mail_replies.get(address.lower())
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        queue = self.rcpt_replies.get(address.lower())
        if queue:
            return queue.pop(0)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_RSET(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.rsets += 1
        if self.rset_replies:
            return self.rset_replies.pop(0)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.drop_in_data > 0:
            self.drop_in_data -= 1
            server.transport.close()  # the client never sees a reply
            return "250 OK"
        if self.close_after_data > 0:
            self.close_after_data -= 1
            asyncio.get_running_loop().call_later(0.05, server.transport.close)  # after the 250
        auth = session.auth_data
        self.messages.append(
            Received(
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                bytes(envelope.original_content or b""),
                session.peer,
                auth.login if isinstance(auth, LoginPassword) else None,
            )
        )
        return "250 2.0.0 OK queued as C0FFEE"


def authenticator(
    server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@dataclass
class PKI:
    ca: trustme.CA
    ca_file: str
    server_ctx: ssl.SSLContext  # cert for 127.0.0.1 and localhost
    wrong_host_ctx: ssl.SSLContext  # cert for mail.example.com only


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))

    def server_ctx(*names: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(ctx)
        return ctx

    return PKI(ca, str(path), server_ctx(HOST, "localhost"), server_ctx("mail.example.com"))


@dataclass
class Running:
    host: str
    port: int
    security: str
    handler: Recorder
    controller: Controller
    auth: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, **overrides: Any) -> OutgoingServerConfigured:
        values: dict[str, Any] = {
            "name": "test",
            "host": self.host,
            "port": self.port,
            "security": self.security,
        }
        if self.auth:
            values.update(username=USER, password_env=PASSWORD_ENV)
        values.update(overrides)
        return OutgoingServerConfigured(**values)


StartServer = Callable[..., Running]


@pytest.fixture
def smtp_server(pki: PKI, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartServer]:
    """``smtp_server(tls="none"|"starttls"|"ssl", auth=False, cert="good"|"wrong_host",
    handler=None)`` -> Running. The password is in PASSWORD_ENV."""
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    started: list[Controller] = []

    def start(
        tls: str = "none",
        auth: bool = False,
        cert: str = "good",
        handler: Recorder | None = None,
    ) -> Running:
        handler = handler or Recorder()
        ctx = pki.server_ctx if cert == "good" else pki.wrong_host_ctx
        port = free_port()
        kwargs: dict[str, Any] = {"server_hostname": "mx.test", "ready_timeout": 5.0}
        if tls == "starttls":
            kwargs.update(tls_context=ctx, require_starttls=True)
        elif tls == "ssl":
            kwargs.update(ssl_context=ctx)
        if auth:
            # Implicit TLS is not seen by aiosmtpd's auth_require_tls check.
            kwargs.update(authenticator=authenticator, auth_require_tls=(tls == "starttls"))
        controller = Controller(handler, hostname=HOST, port=port, **kwargs)
        controller.start()
        started.append(controller)
        return Running(HOST, port, tls, handler, controller, auth)

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, int]]:
    """Accepts connections, reads whatever comes, never writes a byte."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(Exception):
            while await reader.read(4096):
                pass

    server = await asyncio.start_server(swallow, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield HOST, port
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()


@pytest.fixture
def filtered_port() -> Iterator[int]:
    """A port that drops SYNs: a listening socket with a full accept queue."""
    srv = socket.socket()
    srv.bind((HOST, 0))
    srv.listen(0)
    port = int(srv.getsockname()[1])
    fillers: list[socket.socket] = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.settimeout(0.2)
            try:
                c.connect((HOST, port))
            except TimeoutError:
                c.close()
                break
            fillers.append(c)
        else:
            pytest.fail("the kernel accepted a connection past a full accept queue: the "
                        "connect-timeout tests cannot make their fault here (Linux drops "
                        "the SYN)")
        yield port
    finally:
        for c in fillers:
            c.close()
        srv.close()


@pytest.fixture
def closed_port() -> int:
    return free_port()
