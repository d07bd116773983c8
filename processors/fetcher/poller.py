"""One incoming server's fetch loop: connect, take new mail in with the
checkpoint protocol of core.py, then wait (IDLE when the server offers it
and ``use_idle`` is on, else the poll interval) and go again. Failures are
reported per server in words and retried with back-off."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Protocol

from schemas import Event, IncomingServerChecked, IncomingServerConfigured
from streams.settings import Settings

from ..inbound.intake import imap_inbound_id, received, rejected
from . import core
from .imap import ImapError, ImapSession, Selected
from .probe import works_sentence

log = logging.getLogger("postlane.fetcher")


class Store(Protocol):
    def get(self, name: str) -> core.Checkpoint: ...
    async def put(self, name: str, cp: core.Checkpoint, flush: bool) -> None: ...


class Bus(Protocol):
    async def publish(self, key: str, event: Event) -> None: ...  # returns once acknowledged
    async def ends(self) -> dict[int, int]: ...
    async def scan(self, since: dict[int, int], ids: set[str]) -> dict[str, bool]: ...
    async def report(self, event: IncomingServerChecked) -> None: ...


class Poller:
    def __init__(self, server: IncomingServerConfigured, settings: Settings, store: Store,
                 bus: Bus, **session_options: Any) -> None:
        self.server = server
        self.settings = settings
        self.store = store
        self.bus = bus
        self.session_options = session_options
        self.fetched = 0
        self.last_report: tuple[bool, str, str] | None = None
        self.polls = 0

    async def run(self) -> None:
        s = self.server
        failures = 0
        while True:
            session = ImapSession(s, timeout=self.settings.imap_timeout, **self.session_options)
            try:
                await session.connect()
                sel = await session.select()
                idle = s.use_idle and session.has_idle
                await self._report(True, "", "", works_sentence(s, session, idle), idle, sel)
                failures = 0
                while True:
                    before = sel.uidnext
                    await self.poll(session)
                    if not idle:
                        break
                    # mail that arrived while polling was announced during the
                    # poll's commands, not in IDLE: look before waiting
                    sel = await session.select()
                    if sel.uidnext != before:
                        continue
                    await session.idle(min(s.poll_interval, self.settings.idle_max))
                    sel = await session.select()
            except ImapError as exc:
                failures += 1
                log.warning("incoming server %s: %s", s.name, exc.sentence)
                await self._report(False, exc.step, exc.kind, exc.sentence, False, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep fetching; the checkpoint is safe
                failures += 1
                log.exception("incoming server %s: fetching failed", s.name)
                await self._report(False, "publish", "internal",
                                   f"Fetching from {s.name} failed ({exc!r}): Postlane "
                                   "retries; check the broker if this repeats.", False, None)
            finally:
                await session.logout()
            wait = (core.next_wait(failures, self.settings.fetch_retry, s.poll_interval)
                    if failures else s.poll_interval)
            await asyncio.sleep(wait)

    async def _report(self, ok: bool, step: str, kind: str, sentence: str, idle: bool,
                      sel: Selected | None) -> None:
        state = (ok, kind, step)
        if state == self.last_report:
            return
        self.last_report = state
        cp = self.store.get(self.server.name)
        event = IncomingServerChecked(
            server=self.server.name, ok=ok, sentence=sentence, step=step, kind=kind, idle=idle,
            uidvalidity=sel.uidvalidity if sel else cp.uidvalidity, last_uid=cp.last_uid,
        )
        try:
            await self.bus.report(event)
        except Exception:  # noqa: BLE001 - a report must not stop fetching
            log.exception("could not publish the state of incoming server %s", self.server.name)

    async def _flag(self, session: ImapSession, uids: list[int]) -> None:
        if not uids:
            return
        if self.server.move_to:
            await session.move(uids, self.server.move_to)
        else:
            await session.mark_seen(uids)

    async def poll(self, session: ImapSession) -> int:
        """Take every new mail in; returns how many were published."""
        s = self.server
        name = s.name
        self.polls += 1
        sel = session.selected or await session.select()
        cp = self.store.get(name)
        if cp.pending:
            since = {int(p): int(o) for p, o in cp.pending_from.items()}
            found = await self.bus.scan(since, {str(p["inbound_id"]) for p in cp.pending})
            cp, uids = core.resolve_pending(cp, found)
            await self.store.put(name, cp, flush=True)
            log.warning("incoming server %s: resumed an interrupted batch; %d of its mails "
                        "were already published (not published again)", name, len(uids))
        if cp.unflagged and cp.uidvalidity == sel.uidvalidity:
            await self._flag(session, cp.unflagged)
            cp = core.flagged(cp)
            await self.store.put(name, cp, flush=False)
        p = core.plan(cp, sel.uidvalidity, sel.uidnext)
        if p.note:
            log.warning("incoming server %s: %s", name, p.note)
        uids = p.take(await session.search(*p.search))
        cp = p.checkpoint
        published = 0
        if uids:
            sizes = await session.sizes(uids)
            limit = core.limit_for(s.max_message_bytes, self.settings.inbound_max_bytes)
            for batch in core.batches(uids, self.settings.fetch_batch):
                items = [(u, imap_inbound_id(name, sel.uidvalidity, u)) for u in batch]
                cp = core.begin_batch(cp, items, await self.bus.ends())
                await self.store.put(name, cp, flush=True)
                whole: list[int] = []
                for uid, inbound_id in items:
                    event = await self._take(session, uid, inbound_id, sizes.get(uid), limit,
                                             sel.uidvalidity)
                    if event is None:
                        continue
                    key, ev, is_whole = event
                    await self.bus.publish(key, ev)
                    published += 1
                    if is_whole:
                        whole.append(uid)
                cp = core.end_batch(cp, batch, whole)
                await self.store.put(name, cp, flush=True)
                await self._flag(session, whole)
                cp = core.flagged(cp)
                await self.store.put(name, cp, flush=False)
        if p.floor > cp.last_uid or cp != self.store.get(name):
            cp = replace(cp, last_uid=max(cp.last_uid, p.floor))
            await self.store.put(name, cp, flush=False)
        self.fetched += published
        if published:
            log.info("incoming server %s: %d new mail(s) published", name, published)
        return published

    async def _take(self, session: ImapSession, uid: int, inbound_id: str, size: int | None,
                    limit: int, uidvalidity: int) -> tuple[str, Event, bool] | None:
        s = self.server
        if size is None:  # expunged meanwhile
            return None
        now = time.time()
        where: dict[str, Any] = {"server": s.name, "tenant": s.tenant, "folder": s.folder,
                                 "uidvalidity": uidvalidity, "uid": uid}
        if size > limit:
            head = await session.fetch(uid, header_only=True)
            if head is None:
                return None
            key, rej = rejected(head, size, limit, inbound_id, "imap", now, **where)
            log.warning("incoming server %s: mail UID %d rejected: %s", s.name, uid, rej.reason)
            return key, rej, False
        raw = await session.fetch(uid)
        if raw is None:
            return None
        key, ev = received(raw, inbound_id, "imap", now, **where)
        return key, ev, True
