"""The upstream patches (streams/upstream_patches.py) without a broker: the
start-up check of faust-streaming and aiokafka, and the patches whose
defect is in Faust's own logic (any broker), run against stand-ins for the
Faust objects they touch. The patches whose defect shows on the embedded
broker are tested against it in tests/e2e/test_upstream_patches.py.

``TEST_UNPATCHED=fix_name[,fix_name]`` in the environment turns those fixes
off for these tests (their upstream originals restored), to see which tests
fail without them."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.transport.producer import ProducerBuffer
from faust.types import TP

from streams import upstream_patches
from streams.app import create_app
from streams.settings import Settings
from streams.upstream_patches import FIXES, TARGETS, UpstreamMismatch, check_upstream

UNPATCHED = tuple(n for n in os.environ.get("TEST_UNPATCHED", "").split(",") if n)


@pytest.fixture(autouse=True)
def upstream() -> Iterator[None]:
    with upstream_patches.disabled(*UNPATCHED):
        yield


def fix(name: str, app: Any = None, settings: Settings | None = None) -> None:
    """Apply one fix as ``apply_all`` does (a no-op when it is turned off)."""
    FIXES[name](settings or Settings(), app if app is not None else SimpleNamespace())


# --- the start-up check -------------------------------------------------------------------


def test_the_installed_packages_are_the_ones_the_patches_were_written_against() -> None:
    check_upstream()
    assert set(TARGETS) <= set(FIXES)


def test_another_version_refuses_to_start_and_says_what_to_do(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.16.0" if name == "faust-streaming" else real(name))
    with pytest.raises(UpstreamMismatch) as err:
        check_upstream()
    text = str(err.value)
    assert "faust-streaming 0.16.0 is installed" in text
    assert "written against faust-streaming 0.15.3" in text
    assert "Install faust-streaming==0.15.3" in text
    # create_app, which every worker goes through, refuses too
    with pytest.raises(UpstreamMismatch):
        create_app("check", Settings(data_dir=str(tmp_path)))


def test_a_missing_package_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "aiokafka":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(UpstreamMismatch, match="aiokafka is not installed.*aiokafka 0.14.0"):
        check_upstream()


def test_a_changed_upstream_function_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    async def getmany(self: Any, timeout: float) -> Any:  # an "upgraded" Faust method
        yield None

    with upstream_patches.disabled("fix_getmany_drops_records_not_handed_over",
                                   "fix_partition_stalls_after_dropped_batch"):
        monkeypatch.setattr(faust_consumer.Consumer, "getmany", getmany)
        with pytest.raises(UpstreamMismatch) as err:
            check_upstream()
    text = str(err.value)
    assert "faust.transport.consumer.Consumer.getmany (faust-streaming 0.15.3)" in text
    assert "expected 4b168d84882a70d6" in text
    assert "Reinstall faust-streaming==0.15.3" in text


def test_disabled_puts_the_upstream_method_back_and_restores_the_patch() -> None:
    if "fix_buffer_flush_gives_up_after_100ms" in UNPATCHED:
        pytest.skip("uses that fix to test disabled()")
    fix("fix_buffer_flush_gives_up_after_100ms")
    patched = ProducerBuffer.flush
    with upstream_patches.disabled("fix_buffer_flush_gives_up_after_100ms"):
        assert ProducerBuffer.flush is upstream_patches.original(ProducerBuffer, "flush")
        fix("fix_buffer_flush_gives_up_after_100ms")  # turned off: applies nothing
        assert ProducerBuffer.flush is not patched
    assert ProducerBuffer.flush is patched
    with pytest.raises(ValueError, match="no such fix"):
        with upstream_patches.disabled("fix_nothing"):
            pass


# --- fix_buffer_flush_gives_up_after_100ms ------------------------------------------------


class _Channel:
    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)  # slower than the 0.1 s Faust waited
        fut.handed_over = True


class _Pending:
    def __init__(self) -> None:
        self.message = type("M", (), {"channel": _Channel()})()
        self.handed_over = False


def test_flush_waits_for_every_queued_table_write() -> None:
    """Faust's table-write buffer, flushed before every offset commit,
    returns only once every queued write has been handed to the producer,
    however slow a hand-over is. Faust's own gave up after one hand-over
    slower than 0.1 s, so a commit could overtake the table writes of the
    records it committed (lost by a crash)."""
    fix("fix_buffer_flush_gives_up_after_100ms")

    async def run() -> list[bool]:
        buffer = ProducerBuffer()
        buffer.app = type("App", (), {"conf": type("Conf", (), {"producer_threaded": False})()})()
        await buffer.start()
        writes = [_Pending() for _ in range(3)]
        for w in writes:
            buffer.put(w)  # type: ignore[arg-type]
        await buffer.flush()
        done = [w.handed_over for w in writes]
        await buffer.stop()
        return done

    assert asyncio.run(run()) == [True, True, True]


# --- fix_getmany_drops_records_not_handed_over ----------------------------------------------
# Faust's real (patched) ``Consumer.getmany`` runs against a stand-in for its
# consumer: records fetched per partition, the read and committed offsets, and
# ``seek``. The loop in ``handed_over`` plays Faust's ``_drain_messages``: it
# moves the read offset as each record is handed over.

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

    async def _wait_next_records(self, timeout: float) -> Any:  # Faust's, for the original
        return await self._getmany(None, timeout), set(self.fetched)

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


def handed_over(consumer: Consumer, on_record: Any = None) -> dict[TP, list[int]]:
    fix("fix_getmany_drops_records_not_handed_over")

    async def drain() -> dict[TP, list[int]]:
        got: dict[TP, list[int]] = {}
        async for tp, message in faust_consumer.Consumer.getmany(consumer, 0.1):  # type: ignore[arg-type]
            got.setdefault(tp, []).append(message.offset)
            consumer._read_offset[tp] = message.offset  # as _drain_messages does
            if on_record is not None:
                on_record(consumer, message)
        return got

    return asyncio.run(drain())


def test_a_batch_cut_short_by_a_new_generation_is_fetched_again() -> None:
    """A rebalance ending while a fetched batch is handed over: Faust stops
    at the new generation and drops the rest, with aiokafka's position past
    it; the records after are then a gap, counted as acked."""
    tp = TP(INPUT, 0)
    c = Consumer({tp: [10, 11, 12, 13, 14]}, {tp: 9}, {tp: 10})

    def rebalance_at_11(consumer: Consumer, message: Rec) -> None:
        if message.offset == 11:
            consumer.app.consumer_generation_id += 1

    assert handed_over(c, rebalance_at_11) == {tp: [10, 11]}
    assert c.sought == [(tp, 12)]


def test_a_batch_cut_short_by_stopped_flow_is_fetched_again() -> None:
    tp = TP(INPUT, 0)
    c = Consumer({tp: [10, 11, 12]}, {tp: 9}, {tp: 10})

    def stop_flow(consumer: Consumer, message: Rec) -> None:
        consumer.flow_active = False

    assert handed_over(c, stop_flow) == {tp: [10]}
    assert c.sought == [(tp, 11)]


def test_records_after_a_hole_are_not_handed_over_and_the_hole_is_fetched_again() -> None:
    """After a SIGKILL and restart, records a Faust path dropped left a hole:
    Faust counted it as acked and committed over released mails."""
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


# --- fix_seek_undone_by_a_record_handed_over_meanwhile ------------------------------------
# Faust's own (patched) ``Consumer.seek`` and ``Consumer.perform_seek`` run on
# the stand-in; ``drain`` plays ``_drain_messages`` in its order: the read
# offset test, the hand-over (awaited: here a seek may run), then the read
# offset set to the record's.


class _Log:
    def dev(self, *args: Any, **kwargs: Any) -> None:
        pass


@dataclass
class SeekingConsumer(Consumer):
    committed_on_broker: dict[TP, int] = field(default_factory=dict)
    log = _Log()

    async def seek(self, tp: TP, offset: int) -> None:
        await faust_consumer.Consumer.seek(self, tp, offset)  # type: ignore[arg-type]

    async def _seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))

    async def seek_to_committed(self) -> dict[TP, int]:
        self.sought.extend(self.committed_on_broker.items())
        return dict(self.committed_on_broker)

    async def perform_seek(self) -> None:
        await faust_consumer.Consumer.perform_seek(self)  # type: ignore[arg-type]


def drained(consumer: SeekingConsumer, during: Any = None) -> list[int]:
    """Every offset handed over by one ``getmany`` (dropped ones not
    included), ``during(consumer, offset)`` awaited inside each hand-over."""
    fix("fix_getmany_drops_records_not_handed_over")
    fix("fix_seek_undone_by_a_record_handed_over_meanwhile")

    async def drain() -> list[int]:
        got: list[int] = []
        async for tp, message in faust_consumer.Consumer.getmany(consumer, 0.1):  # type: ignore[arg-type]
            r_offset = consumer._read_offset.get(tp)
            if r_offset is None or message.offset >= r_offset:
                got.append(message.offset)
                if during is not None:
                    await during(consumer, message.offset)
                consumer._read_offset[tp] = message.offset
        return got

    return asyncio.run(drain())


def test_a_seek_made_while_a_record_is_handed_over_is_not_undone() -> None:
    """The kill matrix's delivery loss: the restarted worker handed over
    released records 26.. (read offset None) while the seek to the committed
    11 ran; the read offset was then set to the handed record's, over the
    seek's, and 11-25, fetched again, were dropped as already read."""
    tp = TP(INPUT, 3)
    c = SeekingConsumer({tp: [26, 27, 28]}, {}, {}, committed_on_broker={tp: 11})

    async def seek_to_committed_at_26(consumer: SeekingConsumer, offset: int) -> None:
        if offset == 26:
            await consumer.perform_seek()

    first = drained(c, seek_to_committed_at_26)
    c.fetched[tp] = list(range(11, 29))  # fetched again from the committed offset
    again = drained(c)
    assert set(range(11, 29)) <= set(first) | set(again)
    assert again[:15] == list(range(11, 26))


def test_records_fetched_before_a_seek_are_not_handed_over_after_it() -> None:
    """A seek (here the fetch watchdog's) lands after a batch was fetched:
    the rest of that batch is not handed over, and the partition is read
    again from where the seek sent it."""
    tp, other = TP(INPUT, 0), TP(INPUT, 1)
    c = SeekingConsumer({other: [5], tp: [40, 41]}, {tp: 39, other: 4}, {tp: 30, other: 4})

    async def watchdog_seeks_at_5(consumer: SeekingConsumer, offset: int) -> None:
        if offset == 5:
            await consumer.seek(tp, 31)

    assert drained(c, watchdog_seeks_at_5) == [5]
    assert c.sought[-1] == (tp, 31)
    assert c._read_offset[tp] == 31


def test_after_a_seek_past_the_committed_offset_the_next_record_is_the_sought_one() -> None:
    """The hole guard took the next record after a seek to 31 (committed 30)
    to be 32: a fetch starting at 32 went through, record 31 never came."""
    tp = TP(INPUT, 0)
    c = SeekingConsumer({tp: []}, {tp: 39}, {tp: 30})
    fix("fix_seek_undone_by_a_record_handed_over_meanwhile")
    asyncio.run(c.seek(tp, 31))
    c.fetched[tp] = [32, 33]
    assert drained(c) == []
    assert c.sought[-1] == (tp, 31)
    c.fetched[tp] = [31, 32, 33]
    assert drained(c) == [31, 32, 33]


# --- fix_partition_stalls_after_dropped_batch -----------------------------------------------


class _WatchedConsumer:
    """Faust's consumer as the watchdog sees it: one partition whose
    aiokafka position (40) is ahead of the last record handed over (20)."""

    flow_active = True

    def __init__(self, tp: TP) -> None:
        self.tp = tp
        self._read_offset: dict[TP, int] = {tp: 20}
        self._committed_offset: dict[TP, int] = {tp: 15}
        self._buffered_partitions: set[TP] = set()
        self._paused_partitions: set[TP] = set()
        self.sought: list[tuple[TP, int]] = []

    def assignment(self) -> set[TP]:
        return {self.tp}

    async def position(self, tp: TP) -> int:
        return 40

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


class _TimerApp:
    rebalancing = False
    in_recovery = False

    def __init__(self, consumer: _WatchedConsumer) -> None:
        self.consumer = consumer
        self.producer = SimpleNamespace(buffer=SimpleNamespace(size=0, max_messages=100))
        self.timers: list[Any] = []

    def timer(self, interval: float) -> Any:
        def register(fn: Any) -> Any:
            self.timers.append(fn)
            return fn
        return register


def test_a_partition_stalled_with_records_fetched_is_sought_back() -> None:
    """Records fetched (position 40) but never delivered past 20 for three
    checks in a row: the watchdog seeks back to 21, once."""
    tp = TP(INPUT, 0)
    consumer = _WatchedConsumer(tp)
    app = _TimerApp(consumer)
    fix("fix_partition_stalls_after_dropped_batch", app)
    assert len(app.timers) == 1, "no watchdog timer"

    async def checks(n: int) -> None:
        for _ in range(n):
            await app.timers[0]()

    asyncio.run(checks(2))
    assert consumer.sought == []  # patience: not yet
    asyncio.run(checks(1))
    assert consumer.sought == [(tp, 21)]
    consumer._read_offset[tp] = 39  # delivery moves on: no stall
    asyncio.run(checks(3))
    assert consumer.sought == [(tp, 21)]


# --- fix_zstd_context_made_per_batch --------------------------------------------------------


def test_zstd_batches_keep_their_context_per_thread() -> None:
    import importlib

    from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    from streams import codecs

    fix("fix_zstd_context_made_per_batch")
    for name in codecs.RECORD_MODULES:
        module = importlib.import_module(name)
        assert vars(module)["zstd_encode"] is codecs.zstd_encode
        assert vars(module)["zstd_decode"] is codecs.zstd_decode
    b = DefaultRecordBatchBuilder(magic=2, compression_type=4, is_transactional=0,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    values = [b'{"n":%d,"text":"%s"}' % (i, b"hello " * 30) for i in range(5)]
    for i, v in enumerate(values):
        b.append(offset=i, timestamp=1_700_000_000_000, key=None, value=v, headers=[])
    compressor = codecs._compressor()
    assert [r.value for r in DefaultRecordBatch(bytes(b.build()))] == values
    assert codecs._compressor() is compressor  # the same context, batch after batch
