"""A record is never handed over after a hole in its partition
(streams/app.py ``_skipped_before``, in the patched ``Consumer.getmany``).
Faust counts the offsets between the last record handed over and the next
one as a gap and commits over them; after a SIGKILL and restart that lost
released mails for delivery. Here Faust's real (patched) ``getmany`` runs
against a stand-in for its consumer: records fetched per partition, the read
and committed offsets, and ``seek``. The loop below plays Faust's
``_drain_messages``: it moves the read offset as each record is handed over."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP

from streams.app import _patch_getmany

INPUT = "p.released"
COMPACTED = "p.blacklist"


@dataclass
class Rec:
    offset: int


class _Monitor:
    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        pass


class _App:
    client_only = False
    consumer_generation_id = 1
    _postlane_low_priority: frozenset[str] = frozenset()
    _postlane_contiguous = frozenset({INPUT})
    monitor = _Monitor()


class _Scheduler:
    def iterate(self, records: dict[TP, list[Rec]]) -> Any:
        for tp, batch in records.items():
            for rec in batch:
                yield tp, rec


@dataclass
class Consumer:
    """Faust's consumer, as far as ``getmany`` uses it."""

    fetched: dict[TP, list[int]]
    _read_offset: dict[TP, int | None]
    _committed_offset: dict[TP, int | None]
    sought: list[tuple[TP, int]] = field(default_factory=list)
    flow_active = True
    should_stop = False

    def __post_init__(self) -> None:
        self.app = _App()
        self.scheduler = _Scheduler()
        self._buffered_partitions: set[TP] = set()
        self.not_waiting_next_records = asyncio.Event()

    def _get_active_partitions(self) -> set[TP]:
        return set(self.fetched)

    async def _getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[Rec]]:
        out = {tp: [Rec(o) for o in offsets] for tp, offsets in self.fetched.items() if offsets}
        self.fetched = {tp: [] for tp in self.fetched}
        return out

    def highwater(self, tp: TP) -> int:
        return 0

    def _to_message(self, tp: TP, record: Rec) -> Rec:
        return record

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))
        self._read_offset[tp] = offset


def handed_over(consumer: Consumer) -> dict[TP, list[int]]:
    _patch_getmany()

    async def drain() -> dict[TP, list[int]]:
        got: dict[TP, list[int]] = {}
        async for tp, message in faust_consumer.Consumer.getmany(consumer, 0.1):  # type: ignore[arg-type]
            got.setdefault(tp, []).append(message.offset)
            consumer._read_offset[tp] = message.offset  # as _drain_messages does
        return got

    return asyncio.run(drain())


def test_records_after_a_hole_are_not_handed_over_and_the_hole_is_fetched_again() -> None:
    tp = TP(INPUT, 0)
    # after the restart's seek: read offset = committed = 10; the fetch
    # returned 33.. (10-32 went missing in a dropped batch)
    c = Consumer({tp: [33, 34]}, {tp: 10}, {tp: 10})
    assert handed_over(c) == {}
    assert c.sought == [(tp, 10)]


def test_a_hole_after_records_handed_over_goes_back_to_the_next_one() -> None:
    tp = TP(INPUT, 1)
    c = Consumer({tp: [23, 24]}, {tp: 20}, {tp: 10})
    assert handed_over(c) == {}
    assert c.sought == [(tp, 21)]


def test_contiguous_records_flow_and_nothing_is_sought() -> None:
    tp = TP(INPUT, 0)
    c = Consumer({tp: [10, 11, 12]}, {tp: 10}, {tp: 10})
    assert handed_over(c) == {tp: [10, 11, 12]}
    c = Consumer({tp: [21, 22]}, {tp: 20}, {tp: 10})
    assert handed_over(c) == {tp: [21, 22]}
    assert c.sought == []


def test_only_the_partition_with_the_hole_waits() -> None:
    bad, good = TP(INPUT, 0), TP(INPUT, 1)
    c = Consumer({bad: [40], good: [5, 6]}, {bad: 10, good: 4}, {bad: 10, good: 0})
    assert handed_over(c) == {good: [5, 6]}
    assert c.sought == [(bad, 10)]


def test_compacted_topics_may_have_holes() -> None:
    tp = TP(COMPACTED, 0)
    c = Consumer({tp: [40, 41]}, {tp: 10}, {tp: 10})
    assert handed_over(c) == {tp: [40, 41]}


def test_a_hole_the_broker_no_longer_has_is_let_through_after_three_fetches() -> None:
    # retention deleted 10-32 while the group was away: the fetch always
    # starts at 33, so fetching the hole again cannot fill it
    tp = TP(INPUT, 0)
    c = Consumer({tp: []}, {tp: 10}, {tp: 10})
    for _ in range(3):
        c.fetched[tp] = [33, 34]
        assert handed_over(c) == {}
        c._read_offset[tp] = 10  # the seek back
    c.fetched[tp] = [33, 34]
    assert handed_over(c) == {tp: [33, 34]}
    assert c.sought == [(tp, 10)] * 3
