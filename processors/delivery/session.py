"""One SMTP session: the ONLY module importing aiosmtplib.

``SmtpSession`` holds one connection to one outgoing server and sends mail
over it, one transaction at a time, reusing the connection (RSET check) and
reconnecting when it dropped. ``send`` gives ONE outcome per recipient:

- accepted: the server confirmed the DATA (250) for that recipient;
- deferred: a 4xx answer, a timeout, a dropped connection (also during
  DATA: every recipient the server had not confirmed yet), the deadline;
- failed: a 5xx answer (but 552 to RCPT is deferred: ``policy.py``); the
  code, the enhanced status and the text (without the enhanced status
  repeated) are kept.

Low-level commands (MAIL, RCPT, DATA) are used instead of ``send_message``
so a refused recipient fails alone and the others still get the mail.

Problems establishing the session (connect, TLS, login) are raised as
``SmtpSessionError`` subclasses (``errors.py``). The pool of sessions and
``deliver`` (which never raises for SMTP trouble) are in ``pool.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiosmtplib

from schemas import OutgoingServerConfigured
from streams.secrets import SecretUnavailable, require_password

from .diagnose import Facts, one_line
from .errors import (
    RecipientResult,
    SmtpSessionError,
    answered,
    dedupe,
    deferred_result,
    session_error,
    split_answer,
)
from .policy import parse_enhanced

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



# a reused connection idle for longer is checked with RSET before MAIL (Postfix
# checks every cached session so; one that just finished a mail is not)
RSET_AFTER_IDLE = 2.0


class SmtpSession:
    """One connection to one outgoing server, used for one mail at a time.

    ``command_timeout``: seconds per command (the server's ``timeout`` wins
    when set); ``deadline``: seconds for a whole attempt, connect to the end
    of DATA. ``ca_file`` adds a trusted CA (a private CA, or tests)."""

    def __init__(
        self,
        server: OutgoingServerConfigured,
        *,
        command_timeout: float = 30.0,
        deadline: float = 120.0,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        max_mails: int = 100,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.server = server
        self.command_timeout = server.timeout or command_timeout
        self.deadline = deadline
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self.max_mails = max_mails
        self._environ = environ
        self._smtp: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self.fingerprint = server_fingerprint(server)
        self.connections = 0  # times this session connected
        self.mails = 0  # transactions on the current connection
        self.last_used = time.monotonic()
        self.progress: list[tuple[str, str]] = []  # steps of the last connect
        self._step = ""

    def __repr__(self) -> str:
        s = self.server
        return f"<SmtpSession {s.name} {s.host}:{s.port} {s.security} connected={self.connected}>"

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

    # -- connect ---------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, negotiate TLS and log in (if not connected yet)."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.deadline):
                    await self._ensure_ready(check=False)
            except TimeoutError:
                raise self._deadline_error() from None

    def _deadline_error(self) -> SmtpSessionError:
        self.abort()
        step = self._step or "connect"
        facts = self._facts(step=step, timeout=self.deadline)
        if step == "connect":
            return session_error("timeout", facts)
        if step == "greeting":
            return self._silent_error(facts)
        return session_error("deadline", facts)

    def _silent_error(self, facts: Facts) -> SmtpSessionError:
        """No greeting: on an implicit-TLS port with a plain-text setting
        that is a TLS mode mismatch; otherwise a silent server."""
        if self.server.security != "ssl" and self.server.port in _IMPLICIT_TLS_PORTS:
            return session_error("tls_required", facts)
        return session_error("no_greeting", facts)

    def _gone_before_mail(self, rcpts: list[str], results: dict[str, RecipientResult]) -> bool:
        """The connection was lost at MAIL, before any recipient: nothing sent."""
        return (self._smtp is None and bool(rcpts)
                and all(results.get(r) is not None and results[r].stage == "mail"
                        and results[r].status == "deferred" and results[r].code == 0
                        for r in rcpts))

    async def _ensure_ready(self, check: bool = True) -> bool:
        """A connection ready for a transaction. A reused one is checked
        with RSET, unless it finished a transaction less than
        ``RSET_AFTER_IDLE`` seconds ago (a round trip per mail saved while
        mail flows): True then, and a connection found closed at MAIL is
        opened again (``send``)."""
        if self._smtp is not None and self._smtp.is_connected:
            if self.mails >= self.max_mails:
                await self._quit()
            elif not check or self.mails == 0:
                return False
            elif time.monotonic() - self.last_used < RSET_AFTER_IDLE:
                return True
            else:
                try:
                    await self._smtp.rset(timeout=self.command_timeout)
                    return False
                except (aiosmtplib.SMTPException, OSError) as exc:
                    log.info(
                        "%s: reused connection is gone (%s), reconnecting", self.server.name, exc
                    )
                    self.abort()
        await self._open()
        return False

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
        self.mails = 0
        self.last_used = time.monotonic()
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

    # -- mail ------------------------------------------------------------------

    async def send(
        self, envelope_from: str, recipients: list[str], message_bytes: bytes
    ) -> list[RecipientResult]:
        """Send one mail; one result per (deduplicated) recipient, in order.
        Raises SmtpSessionError when the session cannot be established."""
        rcpts = dedupe(recipients)
        results: dict[str, RecipientResult] = {}
        async with self._lock:
            in_transaction = False
            try:
                async with asyncio.timeout(self.deadline):
                    unchecked = await self._ensure_ready()
                    in_transaction = True
                    await self._transaction(envelope_from, rcpts, message_bytes, results)
                    if unchecked and self._gone_before_mail(rcpts, results):
                        # reused without RSET and found closed at MAIL: nothing
                        # was sent, so once more on a new connection
                        results.clear()
                        in_transaction = False
                        await self._ensure_ready()
                        in_transaction = True
                        await self._transaction(envelope_from, rcpts, message_bytes, results)
            except TimeoutError:
                if not in_transaction:
                    raise self._deadline_error() from None
                self.abort()
                note = (
                    f"no answer from {self.server.host} within the attempt deadline of "
                    f"{self.deadline:g} s during {self._step}; will retry"
                )
                for r in rcpts:
                    if r not in results:
                        results[r] = deferred_result(r, note, "4.4.1", self._step or "connection")
            finally:
                self.last_used = time.monotonic()
        return [results[r] for r in rcpts]

    async def _transaction(
        self,
        envelope_from: str,
        rcpts: list[str],
        message: bytes,
        results: dict[str, RecipientResult],
    ) -> None:
        smtp = self._smtp
        assert smtp is not None
        self.mails += 1
        options: list[str] = []
        encoding = "ascii"
        non_ascii = [a for a in [envelope_from, *rcpts] if not a.isascii()]
        if non_ascii:
            if smtp.supports_extension("smtputf8"):
                options.append("SMTPUTF8")
                encoding = "utf-8"
            else:
                text = "the address is not ASCII and the server does not offer SMTPUTF8"
                targets = rcpts if not envelope_from.isascii() else non_ascii
                for r in targets:
                    results[r] = RecipientResult(r, "failed", 0, "5.6.7", text, "local")
        if smtp.supports_extension("size"):
            options.insert(0, f"SIZE={len(message)}")
        if not message.isascii() and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        todo = [r for r in rcpts if r not in results]
        if not todo:
            return
        try:
            self._step = "mail"
            try:
                await smtp.mail(envelope_from, options=options, encoding=encoding)
            except aiosmtplib.SMTPSenderRefused as exc:
                for r in todo:
                    results[r] = answered(r, exc.code, exc.message, "mail")
                await self._reset()
                return
            except ValueError as exc:
                for r in todo:
                    results[r] = RecipientResult(r, "failed", 0, "5.1.7", str(exc), "local")
                await self._reset()
                return
            self._step = "rcpt"
            accepted: list[str] = []
            for r in todo:
                try:
                    await smtp.rcpt(r, encoding=encoding)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    results[r] = answered(r, exc.code, exc.message, "rcpt")
                except ValueError as exc:
                    results[r] = RecipientResult(r, "failed", 0, "5.1.3", str(exc), "local")
                else:
                    accepted.append(r)
            if not accepted:
                await self._reset()
                return
            self._step = "data"
            try:
                response = await smtp.data(message)
            except aiosmtplib.SMTPDataError as exc:
                for r in accepted:
                    results[r] = answered(r, exc.code, exc.message, "data")
                await self._reset()
                return
            enhanced, text = split_answer(response.message)
            for r in accepted:
                results[r] = RecipientResult(r, "accepted", response.code, enhanced, text, "data")
            self._step = ""
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            self._defer_rest(rcpts, results, f"connection lost during {self._step.upper()}", exc,
                             "4.4.2")
        except aiosmtplib.SMTPTimeoutError as exc:
            self._defer_rest(rcpts, results, f"no answer to {self._step.upper()} within "
                             f"{self.command_timeout:g} s", exc, "4.4.1")
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._defer_rest(rcpts, results, f"unexpected answer during {self._step.upper()}",
                             exc, "4.4.2")

    def _defer_rest(
        self,
        rcpts: list[str],
        results: dict[str, RecipientResult],
        what: str,
        exc: BaseException,
        enhanced: str,
    ) -> None:
        self.abort()
        stage = self._step or "connection"
        note = f"{what} ({exc}); will retry"
        if stage == "data":
            note += " (the server may have received it: a duplicate is possible)"
        log.info("%s: %s", self.server.name, note)
        for r in rcpts:
            if r not in results:
                results[r] = deferred_result(r, note, enhanced, stage)

    async def _reset(self) -> None:
        """RSET after a refused transaction; a failure closes the connection."""
        smtp = self._smtp
        if smtp is None or not smtp.is_connected:
            return
        try:
            await smtp.rset(timeout=self.command_timeout)
        except (aiosmtplib.SMTPException, OSError):
            self.abort()

    async def check_sender(
        self, sender: str, recipient: str
    ) -> tuple[RecipientResult, RecipientResult | None]:
        """May this login send as ``sender``? MAIL FROM:<sender>, RCPT
        TO:<recipient>, then RSET; nothing is sent. Returns the sender's
        result (recipient field = sender) and the recipient's (None when
        MAIL was refused)."""
        async with self._lock:
            try:
                async with asyncio.timeout(self.deadline):
                    await self._ensure_ready()
                    smtp = self._smtp
                    assert smtp is not None
                    self.mails += 1
                    self._step = "mail"
                    try:
                        response = await smtp.mail(sender)
                    except aiosmtplib.SMTPSenderRefused as exc:
                        await self._reset()
                        return answered(sender, exc.code, exc.message, "mail"), None
                    mail_ok = RecipientResult(
                        sender, "accepted", response.code, parse_enhanced(response.message),
                        one_line(response.message), "mail",
                    )
                    self._step = "rcpt"
                    try:
                        response = await smtp.rcpt(recipient)
                        rcpt: RecipientResult = RecipientResult(
                            recipient, "accepted", response.code,
                            parse_enhanced(response.message), one_line(response.message), "rcpt",
                        )
                    except aiosmtplib.SMTPRecipientRefused as exc:
                        rcpt = answered(recipient, exc.code, exc.message, "rcpt")
                    await self._reset()
                    self._step = ""
                    return mail_ok, rcpt
            except TimeoutError:
                raise self._deadline_error() from None
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
                self.abort()
                raise session_error("disconnected", self._facts(detail=str(exc))) from None

    # -- close -----------------------------------------------------------------

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

