"""One SMTP connection: how it opens and closes (the TCP connect, implicit
TLS or STARTTLS, the greeting, EHLO/HELO and AUTH; QUIT), with each failure
on the way raised as the ``SmtpSessionError`` that names it (``errors.py``).
``session.py`` sends mail over it (``SmtpSession``: the transactions, reuse,
the attempt deadline). These two modules are the only aiosmtplib users.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Any

import aiosmtplib

from schemas import OutgoingServerConfigured
from streams.secrets import SecretUnavailable, require_password

from .diagnose import Facts, one_line
from .errors import SmtpSessionError, session_error

log = logging.getLogger("postlane.delivery.smtp")


_PLAINTEXT_TLS_REASONS = (
    "WRONG_VERSION_NUMBER",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNEXPECTED_RECORD",
)
_IMPLICIT_TLS_PORTS = (465,)
_PLAIN_PORTS = (25, 587, 2525)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    for e in _chain(exc):
        if isinstance(e, kind):
            return e
    return None


def _cert_detail(err: ssl.SSLCertVerificationError) -> str:
    msg = err.verify_message or err.reason or str(err)
    return str(msg)


def _ssl_detail(err: ssl.SSLError) -> str:
    return str(err.reason or err.strerror or err).replace("_", " ").lower()


def _looks_plaintext(err: ssl.SSLError) -> bool:
    reason = str(err.reason or "").upper()
    text = str(err).upper().replace(" ", "_")
    return any(r in reason or r in text for r in _PLAINTEXT_TLS_REASONS)



@functools.lru_cache(maxsize=32)
def tls_context(
    allow_self_signed: bool = False, ca_file: str | None = None
) -> ssl.SSLContext:
    """Client TLS context: the system's CAs (plus ``ca_file``) with host
    name checking; no verification at all when ``allow_self_signed``.
    Cached: a context serves any number of connections."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if allow_self_signed:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx



async def tcp_connect(host: str, port: int, timeout: float, facts: Facts) -> socket.socket:
    """A connected non-blocking socket; ConnectFailed / ConnectTimeout."""
    loop = asyncio.get_running_loop()
    facts = facts.with_(step="connect", timeout=timeout)
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout
        )
    except socket.gaierror as exc:
        raise session_error("dns", facts.with_(detail=exc.strerror or str(exc))) from None
    except TimeoutError:
        raise session_error("dns", facts.with_(detail="the lookup timed out")) from None
    failures: list[tuple[str, str]] = []
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
        except TimeoutError:
            sock.close()
            failures.append(("timeout", f"{addr[0]}: timed out"))
        except ConnectionRefusedError:
            sock.close()
            failures.append(("refused", f"{addr[0]}: connection refused"))
        except OSError as exc:
            sock.close()
            failures.append(("unreachable", f"{addr[0]}: {exc.strerror or exc}"))
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    kinds = [k for k, _ in failures]
    kind = next((k for k in ("refused", "timeout", "unreachable") if k in kinds), "unreachable")
    detail = "; ".join(d for _, d in failures) or "no address"
    raise session_error(kind, facts.with_(detail=detail))



class SmtpConnection:
    """One connection to one outgoing server: opened by ``_open`` (which
    records its ``progress``, and in ``_step`` where it is, for the error
    of a deadline that ends it), closed by ``close`` / ``abort``.
    ``command_timeout``: seconds per command (the server's ``timeout`` wins
    when set); ``ca_file`` adds a trusted CA (a private CA, or tests)."""

    def __init__(
        self,
        server: OutgoingServerConfigured,
        *,
        command_timeout: float = 30.0,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.server = server
        self.command_timeout = server.timeout or command_timeout
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self._environ = environ
        self._smtp: aiosmtplib.SMTP | None = None
        self.fingerprint = server_fingerprint(server)
        self.connections = 0  # times this connection was opened
        self.progress: list[tuple[str, str]] = []  # steps of the last connect
        self._step = ""

    def __repr__(self) -> str:
        s = self.server
        return (f"<{type(self).__name__} {s.name} {s.host}:{s.port} {s.security} "
                f"connected={self.connected}>")

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    def _facts(self, **changes: Any) -> Facts:
        s = self.server
        base = Facts(
            server=s.name,
            host=s.host,
            port=s.port,
            security=s.security,
            username=s.username,
            step=self._step,
            timeout=self.command_timeout,
        )
        return base.with_(**changes)

    # -- open ----------------------------------------------------------------

    def _silent_error(self, facts: Facts) -> SmtpSessionError:
        """No greeting: on an implicit-TLS port with a plain-text setting
        that is a TLS mode mismatch; otherwise a silent server."""
        if self.server.security != "ssl" and self.server.port in _IMPLICIT_TLS_PORTS:
            return session_error("tls_required", facts)
        return session_error("no_greeting", facts)

    async def _open(self) -> None:
        s = self.server
        self.abort()
        self.progress = []
        self._step = "connect"
        use_tls = s.security == "ssl"
        ctx = tls_context(s.allow_self_signed, self.ca_file) if s.security != "none" else None
        sock = await tcp_connect(s.host, s.port, self.command_timeout, self._facts())
        self.progress.append(("connect", f"TCP connection to {s.host} port {s.port} open"))
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            sock=sock,
            use_tls=use_tls,
            start_tls=False,
            tls_context=ctx if use_tls else None,
            timeout=self.command_timeout,
            local_hostname=self.local_hostname,
        )
        self._step = "tls" if use_tls else "greeting"
        ok = False
        try:
            greeting = await self._greet(smtp)
            if use_tls:
                self.progress.append(("tls", self._tls_summary(smtp)))
                self._step = "greeting"
            await self._hello(smtp)
            self.progress.append(("greeting", f"server says {one_line(greeting.message, 120)!r}"))
            if s.security == "starttls":
                self._step = "tls"
                await self._starttls(smtp, ctx)
                self.progress.append(("tls", self._tls_summary(smtp)))
                self._step = "greeting"
                await self._hello(smtp)
            if s.username:
                self._step = "login"
                if s.security == "none":
                    log.warning(
                        "%s: logging in over an unencrypted connection to %s:%s",
                        s.name, s.host, s.port,
                    )
                await self._login(smtp)
                self.progress.append(("login", f"logged in as {s.username!r}"))
            ok = True
        except SmtpSessionError:
            raise
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise session_error("disconnected", self._facts(detail=str(exc))) from None
        except aiosmtplib.SMTPTimeoutError:
            raise session_error("no_greeting" if self._step == "greeting" else "deadline",
                                self._facts()) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise session_error(
                "greeting_refused", self._facts(code=exc.code, text=exc.message)
            ) from None
        finally:
            if not ok:
                smtp.close()
                sock.close()
        self._smtp = smtp
        self._step = ""
        self.connections += 1
        log.info("%s: connected to %s:%s (%s)", s.name, s.host, s.port, s.security)

    def _tls_summary(self, smtp: aiosmtplib.SMTP) -> str:
        sslobj = smtp.get_transport_info("ssl_object")
        version = (sslobj.version() if sslobj is not None else None) or "TLS"
        cipher_info = sslobj.cipher() if sslobj is not None else None
        cipher = cipher_info[0] if cipher_info else ""
        check = (
            "certificate NOT verified (allow_self_signed)"
            if self.server.allow_self_signed
            else "certificate verified"
        )
        return f"{version} {cipher}, {check}".replace("  ", " ")

    async def _greet(self, smtp: aiosmtplib.SMTP) -> aiosmtplib.SMTPResponse:
        """TCP is up: (TLS handshake for implicit TLS, then) the greeting."""
        try:
            return await smtp.connect()
        except aiosmtplib.SMTPConnectResponseError as exc:
            self._step = "greeting"
            raise session_error(
                "greeting_refused", self._facts(code=exc.code, text=exc.message)
            ) from None
        except aiosmtplib.SMTPConnectTimeoutError as exc:
            if "server ready" in str(exc):
                self._step = "greeting"
            raise self._silent_error(self._facts()) from None
        except aiosmtplib.SMTPConnectError as exc:
            raise self._tls_or_drop(exc) from None

    def _tls_or_drop(self, exc: BaseException) -> SmtpSessionError:
        cert = _find(exc, ssl.SSLCertVerificationError)
        if isinstance(cert, ssl.SSLCertVerificationError):
            return session_error("certificate", self._facts(step="tls", detail=_cert_detail(cert)))
        err = _find(exc, ssl.SSLError)
        if isinstance(err, ssl.SSLError):
            facts = self._facts(step="tls", detail=_ssl_detail(err))
            if self.server.security == "ssl" and (
                _looks_plaintext(err) or self.server.port in _PLAIN_PORTS
            ):
                return session_error("tls_unexpected", facts)
            return session_error("tls_failed", facts)
        aborted = _find(exc, ConnectionAbortedError)
        if aborted is not None and "handshake" in str(aborted).lower():
            return self._silent_error(self._facts(detail=str(aborted)))
        return session_error("disconnected", self._facts(detail=str(exc)))

    async def _hello(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError as exc:
            if not smtp.is_connected:
                raise session_error(
                    "helo_refused", self._facts(code=exc.code, text=exc.message)
                ) from None
            try:
                await smtp.helo()
            except aiosmtplib.SMTPHeloError as exc2:
                raise session_error(
                    "helo_refused", self._facts(code=exc2.code, text=exc2.message)
                ) from None

    async def _starttls(self, smtp: aiosmtplib.SMTP, ctx: ssl.SSLContext | None) -> None:
        if not smtp.supports_extension("starttls"):
            raise session_error("no_starttls", self._facts())
        try:
            await smtp.starttls(tls_context=ctx)
        except aiosmtplib.SMTPResponseException as exc:
            raise session_error(
                "tls_failed", self._facts(code=exc.code, text=exc.message, detail=exc.message)
            ) from None
        except ssl.SSLError as exc:
            raise self._tls_or_drop(exc) from None
        except aiosmtplib.SMTPTimeoutError as exc:
            raise session_error("tls_failed", self._facts(detail=str(exc))) from None

    async def _login(self, smtp: aiosmtplib.SMTP) -> None:
        try:
            password = require_password(self.server, self._environ)
        except SecretUnavailable as exc:
            raise session_error("no_password", self._facts(detail=str(exc))) from None
        if not smtp.supports_extension("auth"):
            raise session_error("no_auth", self._facts())
        try:
            await smtp.login(self.server.username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            text = exc.message
            needs_tls = exc.code == 538 or (
                exc.code == 530 and ("tls" in text.lower() or "encrypt" in text.lower())
            )
            kind = "auth_needs_tls" if needs_tls else "auth_failed"
            raise session_error(kind, self._facts(code=exc.code, text=text)) from None
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            raise
        except aiosmtplib.SMTPResponseException as exc:
            raise session_error(
                "auth_failed", self._facts(code=exc.code, text=exc.message)
            ) from None
        except aiosmtplib.SMTPException as exc:
            offered = ", ".join(smtp.server_auth_methods) or "none"
            raise session_error(
                "no_auth", self._facts(detail=f"{exc.message} (offered: {offered})")
            ) from None

    # -- close ---------------------------------------------------------------

    async def _quit(self) -> None:
        smtp = self._smtp
        if smtp is not None and smtp.is_connected:
            with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
                await smtp.quit(timeout=min(self.command_timeout, 5.0))
        self.abort()

    async def close(self) -> None:
        """QUIT politely (a few seconds at most) and close."""
        await self._quit()

    def abort(self) -> None:
        """Close the connection at once."""
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None



def server_fingerprint(server: OutgoingServerConfigured) -> tuple[Any, ...]:
    """What a connection depends on: a change means a new connection."""
    return (
        server.host,
        server.port,
        server.security,
        server.username,
        server.password_env,
        server.password_file,
        server.allow_self_signed,
        server.timeout,
    )

