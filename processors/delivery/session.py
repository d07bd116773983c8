"""One SMTP session: mail over one connection (``connection.py``).

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
``SmtpSessionError`` subclasses (``errors.py``) by ``connection.py``, which
opens and closes the connection this session sends over. The pool of
sessions and ``deliver`` (which never raises for SMTP trouble) are in
``pool.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import aiosmtplib

from schemas import OutgoingServerConfigured

from .connection import SmtpConnection
from .diagnose import one_line
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


# a reused connection idle for longer is checked with RSET before MAIL (Postfix
# checks every cached session so; one that just finished a mail is not)
RSET_AFTER_IDLE = 2.0


class SmtpSession(SmtpConnection):
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
        super().__init__(server, command_timeout=command_timeout, ca_file=ca_file,
                         local_hostname=local_hostname, environ=environ)
        self.deadline = deadline
        self.max_mails = max_mails
        self._lock = asyncio.Lock()
        self.mails = 0  # transactions on the current connection
        self.last_used = time.monotonic()

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
        self.mails = 0
        self.last_used = time.monotonic()
        return False

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
