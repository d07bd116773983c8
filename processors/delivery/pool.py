"""The pool of SMTP sessions (``SmtpPool``: sessions by server name, a few
in use at once per server, idle ones reused) and ``deliver``: one attempt
through the pool for the processor, which never raises for SMTP trouble (a
session error defers every recipient, ``policy.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from schemas import OutgoingServerConfigured

from .connection import server_fingerprint
from .errors import RecipientResult, SmtpSessionError
from .session import SmtpSession

log = logging.getLogger("postlane.delivery.smtp")


class SmtpPool:
    """Sessions keyed by server name, at most ``max_per_server`` in use at
    once per server (``get`` waits for a free one). Idle sessions are kept
    for ``max_idle`` seconds; a changed server configuration gets a new
    connection."""

    def __init__(
        self,
        *,
        command_timeout: float = 30.0,
        deadline: float = 120.0,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        max_per_server: int = 2,
        max_idle: float = 60.0,
        max_mails_per_connection: int = 100,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.command_timeout = command_timeout
        self.deadline = deadline
        self.ca_file = ca_file
        self.local_hostname = local_hostname
        self.max_per_server = max_per_server
        self.max_idle = max_idle
        self.max_mails = max_mails_per_connection
        self._environ = environ
        self._idle: dict[str, list[SmtpSession]] = {}
        self._busy: set[SmtpSession] = set()
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> SmtpPool:
        """From ``streams.settings.Settings`` (smtp_timeout, attempt_deadline)."""
        kwargs: dict[str, Any] = {
            "command_timeout": settings.smtp_timeout,
            "deadline": settings.attempt_deadline,
        }
        kwargs.update(overrides)
        return cls(**kwargs)

    async def get(self, server: OutgoingServerConfigured) -> SmtpSession:
        """A session for ``server`` (not connected yet when new: ``send``
        connects). Give it back with ``release``."""
        if self._closed:
            raise RuntimeError("the SMTP pool is closed")
        slot = self._slots.setdefault(server.name, asyncio.Semaphore(self.max_per_server))
        await slot.acquire()
        try:
            idle = self._idle.setdefault(server.name, [])
            fingerprint = server_fingerprint(server)
            now = time.monotonic()
            while idle:
                session = idle.pop()
                if session.fingerprint == fingerprint and now - session.last_used < self.max_idle:
                    session.server = server
                    self._busy.add(session)
                    return session
                session.abort()  # stale or reconfigured: no QUIT to a possibly dead peer
            session = SmtpSession(
                server,
                command_timeout=self.command_timeout,
                deadline=self.deadline,
                ca_file=self.ca_file,
                local_hostname=self.local_hostname,
                max_mails=self.max_mails,
                environ=self._environ,
            )
            self._busy.add(session)
            return session
        except BaseException:
            slot.release()
            raise

    def release(self, session: SmtpSession) -> None:
        """Give a session back (connected or not)."""
        if session not in self._busy:
            return
        self._busy.discard(session)
        if self._closed:
            session.abort()
        else:
            self._idle.setdefault(session.server.name, []).append(session)
        slot = self._slots.get(session.server.name)
        if slot is not None:
            slot.release()

    @contextlib.asynccontextmanager
    async def lease(self, server: OutgoingServerConfigured) -> AsyncIterator[SmtpSession]:
        session = await self.get(server)
        try:
            yield session
        finally:
            self.release(session)

    async def discard(self, name: str) -> None:
        """Close the idle sessions of a server (removed or changed)."""
        for session in self._idle.pop(name, []):
            await session.close()

    async def close_all(self) -> int:
        """QUIT every idle session and close the busy ones (the worker's
        stop); returns how many sessions there were."""
        self._closed = True
        idle = [s for sessions in self._idle.values() for s in sessions]
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in idle), return_exceptions=True)
        busy = list(self._busy)
        for session in busy:
            session.abort()
        return len(idle) + len(busy)

    def stats(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for name, sessions in self._idle.items():
            out.setdefault(name, {"idle": 0, "busy": 0})["idle"] = len(sessions)
        for session in self._busy:
            out.setdefault(session.server.name, {"idle": 0, "busy": 0})["busy"] += 1
        return out



@dataclass(frozen=True)
class Delivery:
    """What ``deliver`` returns: one outcome per recipient, plus the
    session-level error (sentence and kind) when there was one."""

    outcomes: list[RecipientResult]
    duration: float
    error: str = ""
    error_kind: str = ""
    needs_operator: bool = False


async def deliver(
    pool: SmtpPool,
    server: OutgoingServerConfigured,
    envelope_from: str,
    recipients: list[str],
    message_bytes: bytes,
) -> Delivery:
    """One delivery attempt through the pool; never raises for SMTP
    trouble (a session error defers every recipient)."""
    start = time.monotonic()
    async with pool.lease(server) as session:
        try:
            outcomes = await session.send(envelope_from, recipients, message_bytes)
        except SmtpSessionError as exc:
            log.warning("%s: %s", server.name, exc.sentence)
            return Delivery(
                exc.deferred(recipients),
                time.monotonic() - start,
                error=exc.sentence,
                error_kind=exc.kind,
                needs_operator=exc.needs_operator,
            )
    return Delivery(outcomes, time.monotonic() - start)
