"""The fetcher's checkpoint protocol, pure and through the poller with a
fake mailbox and a fake log: a crash at any point between publishing and
checkpointing neither loses nor re-publishes a mail."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from processors.fetcher import core
from processors.fetcher.core import Checkpoint
from processors.fetcher.imap import Selected
from processors.fetcher.poller import Poller
from schemas import Event, IncomingServerChecked, IncomingServerConfigured
from streams.settings import Settings


def test_first_poll_takes_unseen_below_uidnext() -> None:
    p = core.plan(Checkpoint(), uidvalidity=7, uidnext=11)
    assert p.search == ("UNSEEN",)
    assert p.take([3, 9, 11, 12]) == [3, 9]  # 11+ arrived after SELECT: next poll
    assert p.floor == 10 and not p.note


def test_resume_takes_above_last_uid() -> None:
    p = core.plan(Checkpoint(uidvalidity=7, last_uid=10), uidvalidity=7, uidnext=15)
    assert p.search == ("UID", "11:*")
    assert p.take([10, 11, 14]) == [11, 14]  # "11:*" answers the last mail even if older


def test_uidvalidity_change_resets_with_a_note() -> None:
    p = core.plan(Checkpoint(uidvalidity=7, last_uid=10), uidvalidity=8, uidnext=3)
    assert p.search == ("UNSEEN",) and p.checkpoint.uidvalidity == 8
    assert "UIDVALIDITY changed from 7 to 8" in p.note


def test_resolve_pending_keeps_the_published_prefix() -> None:
    cp = core.begin_batch(Checkpoint(uidvalidity=7, last_uid=4),
                          [(5, "a"), (6, "b"), (7, "c")], {0: 10, 1: 3})
    assert cp.pending_from == {"0": 10, "1": 3}
    new, uids = core.resolve_pending(cp, {"a": True, "b": False})
    assert uids == [5, 6] and new.last_uid == 6 and new.pending == []
    assert new.unflagged == [5]  # b was recorded as rejected: left unread
    assert Checkpoint.from_dict(new.to_dict()) == new


def test_backoff() -> None:
    assert [core.next_wait(n, 30, 300) for n in (1, 2, 3, 5)] == [30, 60, 120, 300]


# --- the poller with fakes --------------------------------------------------------------


class Crash(Exception):
    pass


@dataclass
class FakeLog:
    """The inbound topic: one partition, offsets are list positions."""

    records: list[tuple[str, Event]] = field(default_factory=list)
    crash_after: int = -1  # raise after this many publishes (the record IS written)
    reports: list[IncomingServerChecked] = field(default_factory=list)

    async def publish(self, key: str, event: Event) -> None:
        self.records.append((key, event))
        if len(self.records) == self.crash_after:
            raise Crash("killed right after the broker acknowledged")

    async def ends(self) -> dict[int, int]:
        return {0: len(self.records)}

    async def scan(self, since: dict[int, int], ids: set[str]) -> dict[str, bool]:
        out = {}
        for _, ev in self.records[since.get(0, 0):]:
            if getattr(ev, "inbound_id", "") in ids:
                out[ev.inbound_id] = ev.type == "InboundMailReceived"  # type: ignore[attr-defined]
        return out

    async def report(self, event: IncomingServerChecked) -> None:
        self.reports.append(event)


class FakeStore:
    def __init__(self) -> None:
        self.data: dict[str, dict] = {}
        self.fail_on_put: int = -1
        self.puts = 0

    def get(self, name: str) -> Checkpoint:
        return Checkpoint.from_dict(self.data.get(name))

    async def put(self, name: str, cp: Checkpoint, flush: bool) -> None:
        self.puts += 1
        if self.puts == self.fail_on_put:
            raise Crash("killed before the checkpoint was written")
        self.data[name] = cp.to_dict()


class FakeMailbox:
    """Just what the poller calls on an ImapSession."""

    def __init__(self, n: int, sizes: dict[int, int] | None = None) -> None:
        self.mails = {u: f"From: a@b.org\r\nMessage-ID: <{u}@b.org>\r\n\r\nm{u}\r\n".encode()
                      for u in range(1, n + 1)}
        self.big = sizes or {}
        self.seen: set[int] = set()
        self.selected: Selected | None = None

    async def select(self) -> Selected:
        self.selected = Selected(uidvalidity=99, uidnext=max(self.mails) + 1,
                                 exists=len(self.mails))
        return self.selected

    async def search(self, *criteria: str) -> list[int]:
        if criteria == ("UNSEEN",):
            return sorted(u for u in self.mails if u not in self.seen)
        low = int(criteria[1].split(":")[0])
        return sorted(u for u in self.mails if u >= low) or [max(self.mails)]

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        return {u: self.big.get(u, len(self.mails[u])) for u in uids if u in self.mails}

    async def fetch(self, uid: int, header_only: bool = False) -> bytes | None:
        raw = self.mails.get(uid)
        return raw.split(b"\r\n\r\n")[0] + b"\r\n\r\n" if raw and header_only else raw

    async def mark_seen(self, uids: list[int]) -> None:
        self.seen.update(uids)

    async def move(self, uids: list[int], folder: str) -> None:
        self.seen.update(uids)


SERVER = IncomingServerConfigured(name="box", host="imap.example.com", username="u",
                                  password_env="X", max_message_bytes=500)


def poller(log: FakeLog, store: FakeStore, batch: int) -> Poller:
    return Poller(SERVER, Settings(fetch_batch=batch), store, log)


def published(log: FakeLog) -> list[int]:
    return [ev.uid for _, ev in log.records]  # type: ignore[attr-defined]


@pytest.mark.parametrize("batch", [1, 3, 10])
@pytest.mark.parametrize("crash_at", range(1, 8))
def test_crash_after_publish_neither_loses_nor_duplicates(batch: int, crash_at: int) -> None:
    box = FakeMailbox(7, sizes={4: 10_000})  # mail 4 is over the 500-byte limit
    log, store = FakeLog(crash_after=crash_at), FakeStore()
    with pytest.raises(Crash):
        asyncio.run(poller(log, store, batch).poll(box))  # type: ignore[arg-type]
    log.crash_after = -1
    asyncio.run(poller(log, store, batch).poll(box))  # type: ignore[arg-type]
    assert published(log) == [1, 2, 3, 4, 5, 6, 7]
    assert [ev.type for _, ev in log.records].count("InboundMailRejected") == 1
    assert box.seen == {1, 2, 3, 5, 6, 7}  # the rejected one stays unread
    assert Checkpoint.from_dict(store.data["box"]).last_uid == 7


@pytest.mark.parametrize("fail_on_put", range(1, 12))
def test_crash_before_a_checkpoint_write(fail_on_put: int) -> None:
    box = FakeMailbox(5)
    log, store = FakeLog(), FakeStore()
    store.fail_on_put = fail_on_put
    try:
        asyncio.run(poller(log, store, 2).poll(box))  # type: ignore[arg-type]
    except Crash:
        pass
    store.fail_on_put = -1
    asyncio.run(poller(log, store, 2).poll(box))  # type: ignore[arg-type]
    assert published(log) == [1, 2, 3, 4, 5]
    assert box.seen == {1, 2, 3, 4, 5}


def test_nothing_new_publishes_nothing() -> None:
    box = FakeMailbox(3)
    log, store = FakeLog(), FakeStore()
    p = poller(log, store, 5)
    assert asyncio.run(p.poll(box)) == 3  # type: ignore[arg-type]
    assert asyncio.run(p.poll(box)) == 0  # type: ignore[arg-type]
    box.mails[4] = b"From: a@b.org\r\n\r\nnew\r\n"
    assert asyncio.run(p.poll(box)) == 1  # type: ignore[arg-type]
    assert published(log) == [1, 2, 3, 4]


def test_connection_failures_are_reported_in_words_once() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = IncomingServerConfigured(name="down", host="127.0.0.1", port=port,
                                      security="none", username="u", password_env="X")
    log, store = FakeLog(), FakeStore()
    p = Poller(server, Settings(fetch_retry=0.05), store, log)

    async def run_a_while() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(p.run(), 0.6)

    asyncio.run(run_a_while())
    assert len(log.reports) == 1  # reported when the state changes, not at every retry
    report = log.reports[0]
    assert (report.server, report.ok, report.step, report.kind) == ("down", False, "connect",
                                                                     "refused")
    assert "connection refused" in report.sentence and "993" in report.sentence
