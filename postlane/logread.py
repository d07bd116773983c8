"""Fast reads of whole topics for tools (replay, export, report): aiokafka,
every partition of every topic from offset 0 to its true end
(``streams.offsets.true_end_offsets``: the embedded broker's ListOffsets
answer stops at the start of a partition's last batch + 1).

``read_records`` yields ``Rec`` tuples in batches, the topic's records in
offset order per partition; a time range is applied on the records' own
timestamps (the embedded broker's ``offsets_for_times`` is approximate), so
a record after ``until`` is read and dropped, never trusted to an index.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import CorruptRecordException

from streams.client import BrokerUnavailable, unavailable
from streams.offsets import true_end_offsets
from streams.settings import Settings
from streams.upstream_patches import install_zstd_codec


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector off while a tool reads and folds a log: with
    hundreds of thousands of records alive it scanned them all again and
    again (half the time of a read; nothing here makes cycles)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Rec(NamedTuple):
    topic: str  # the full topic name
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


_new_rec = tuple.__new__


def _rec_batches(pr: Any) -> Iterator[list[Rec]]:
    """What aiokafka's ``PartitionRecords._unpack_records`` yields for a
    read-uncommitted consumer (every record at or after the fetch offset of
    every batch but control batches, the CRC checked), one list of ``Rec``
    per record batch instead of a ``ConsumerRecord`` per record: the
    dataclass, the call per record and the copy into a ``Rec`` were half of
    a read's CPU. ``next_fetch_offset`` is where aiokafka keeps it."""
    tp = pr._tp
    topic, partition = tp.topic, tp.partition
    records = pr._records
    while records.has_next():
        batch = records.next_batch()
        if pr._check_crcs and not batch.validate_crc():
            raise CorruptRecordException(f"Invalid CRC - {tp}")
        if batch.is_control_batch:
            pr.next_fetch_offset = batch.next_offset
            continue
        start = pr.next_fetch_offset
        out = [_new_rec(Rec, (topic, partition, r.offset, r.timestamp, r.key, r.value))
               for r in batch if r.offset >= start]
        pr.next_fetch_offset = batch.next_offset
        if out:
            yield out


def _batched(consumer: AIOKafkaConsumer) -> None:
    """Make the fetched results not yet read come as ``_rec_batches``
    (results fetched later come as aiokafka's own records: ``_recs`` takes
    both)."""
    fetcher = getattr(consumer, "_fetcher", None)
    for res in list(getattr(fetcher, "_records", {}).values()):
        pr = getattr(res, "_partition_records", None)
        it = getattr(pr, "_records_iterator", None)
        if (pr is None or it is None or getattr(pr, "_isolation_level", 1) != 0
                or getattr(pr, "_postlane_batched", False)
                or inspect.getgeneratorstate(it) != inspect.GEN_CREATED):
            continue  # read-committed, already ours, or aiokafka began reading it
        pr._records_iterator = _rec_batches(pr)
        pr._postlane_batched = True


def _recs(topic: str, partition: int, records: list[Any]) -> list[Rec]:
    """The records getmany gave for one partition as ``Rec``: lists of them
    (``_rec_batches``) or aiokafka's ConsumerRecords."""
    if not records:
        return []
    if type(records[0]) is list:
        if len(records) == 1:
            return records[0]  # type: ignore[no-any-return]
        out: list[Rec] = []
        for chunk in records:
            out.extend(chunk)
        return out
    return [Rec(topic, partition, r.offset, r.timestamp, r.key, r.value) for r in records]


async def aread(s: Settings, topics: list[str], since: float | None = None,
                until: float | None = None,
                progress: Callable[[int, int], None] | None = None,
                share: tuple[int, int] | None = None,
                ) -> AsyncIterator[list[Rec]]:
    """Batches of records of ``topics`` (full names; a missing topic has no
    records) with ``since <= timestamp <= until`` (unix seconds; None: open).
    ``progress(read, total)`` is called after each fetch (total: the records
    between offset 0 and the end when the read began). ``share=(i, n)``:
    only the i-th of every n topic-partitions (readers in n processes)."""
    install_zstd_codec()  # zstd batches without a new context each (streams/codecs.py)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=100, max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024, client_id="postlane-logread",
    )
    try:
        await consumer.start()
    except Exception as exc:  # noqa: BLE001 - aiokafka raises several kinds for "no broker"
        raise unavailable(s, exc) from exc
    try:
        await consumer._client.force_metadata_update()  # type: ignore[attr-defined]
        tps: list[AIOTopicPartition] = []
        for topic in topics:
            parts = consumer.partitions_for_topic(topic) or set()
            tps.extend(AIOTopicPartition(topic, p) for p in sorted(parts))
        if share is not None:
            tps = [tp for i, tp in enumerate(tps) if i % share[1] == share[0]]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(consumer, tps)
        total = sum(ends.values())
        todo = {tp for tp in tps if ends.get(tp, 0) > 0}
        read = 0
        lo = None if since is None else since * 1000.0
        hi = None if until is None else until * 1000.0
        last = time.monotonic()
        while todo:
            # only what was fetched already, made ``_rec_batches`` first (a
            # result fetched while getmany waited would come the slow way)
            _batched(consumer)
            batch = await consumer.getmany(*todo, timeout_ms=0, max_records=50000)
            if not batch:
                await asyncio.sleep(0.002)  # the fetch runs on this loop meanwhile
            out: list[Rec] = []
            for tp, got in batch.items():
                end = ends[tp]
                records = _recs(tp.topic, tp.partition, got)
                past = bool(records) and records[-1].offset >= end
                if past:  # written after the read began
                    records = [r for r in records if r.offset < end]
                read += len(records)
                if lo is None and hi is None:
                    out.extend(records)
                else:
                    out.extend([r for r in records
                                if (lo is None or r.timestamp_ms >= lo)
                                and (hi is None or r.timestamp_ms <= hi)])
                if records:
                    last = time.monotonic()
                if past or (records and records[-1].offset + 1 >= end):
                    todo.discard(tp)
            for tp in list(todo):  # a partition whose end was reached without records
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
            if progress is not None:
                progress(read, total)
            if out:
                yield out
            if time.monotonic() - last > 15:
                raise BrokerUnavailable(
                    f"reading {', '.join(sorted({tp.topic for tp in todo}))} stalled for 15 s "
                    f"before its end ({read} of {total} records read)")
    finally:
        await consumer.stop()


def read_batches(s: Settings, topics: list[str], since: float | None = None,
                 until: float | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 share: tuple[int, int] | None = None) -> Iterator[list[Rec]]:
    """``aread`` for synchronous callers: the read runs on its own event
    loop in a thread, a few batches ahead of the caller."""
    q: queue.Queue[list[Rec] | BaseException | None] = queue.Queue(maxsize=8)

    async def pump() -> None:
        async for batch in aread(s, topics, since, until, progress, share):
            await asyncio.get_running_loop().run_in_executor(None, q.put, batch)

    def run() -> None:
        try:
            asyncio.run(pump())
            q.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            q.put(exc)

    thread = threading.Thread(target=run, name="logread", daemon=True)
    thread.start()
    while True:
        item = q.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def read_all(s: Settings, topics: list[str], since: float | None = None,
             until: float | None = None) -> list[Rec]:
    out: list[Rec] = []
    for batch in read_batches(s, topics, since, until):
        out.extend(batch)
    return out
