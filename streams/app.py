"""The Faust app factory and topic objects.

Each processor runs in its own consumer group: ``create_app("router")`` has
the id ``postlane-router``. ``postlane dev`` puts every processor in one app
(``postlane-dev``). When the broker is the embedded Tansu, the settings that
make a processor ready in seconds and table recovery exact are applied (see
docs/embedded-broker.md): 6 s session, 1 s heartbeat, 100 ms fetch wait,
one record per producer batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from schemas.base import CODEC

from .settings import Settings
from .topics import ALL_TOPICS, TopicSpec

_FETCH_WAIT_MS = {"value": 1500}


def _patch_fetch_wait() -> None:
    """Faust fixes aiokafka's fetch_max_wait_ms at 1500 ms; on Tansu that
    costs ~0.4 s per hop. Set the aiokafka attribute before it starts."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_postlane_patched", False):
        return
    original = cls._create_worker_consumer

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = _FETCH_WAIT_MS["value"]
        return consumer

    cls._create_worker_consumer = create  # type: ignore[method-assign]
    cls._postlane_patched = True  # type: ignore[attr-defined]


def _patch_leave_group() -> None:
    """Tansu numbers a new group's first generation 0, and aiokafka sends
    LeaveGroup only when the generation is above 0: the first worker of a
    group stopped with SIGTERM stayed a member until its session expired,
    delaying the takeover. Leave whenever we hold a member id."""
    from aiokafka.consumer import group_coordinator as gc

    cls = gc.GroupCoordinator
    if getattr(cls, "_postlane_patched", False):
        return

    async def maybe_leave_group(self: Any) -> None:
        if self.generation >= 0 and self.member_id and self._group_instance_id is None:
            try:
                await self._send_req(gc.LeaveGroupRequest(self.group_id, self.member_id))
            except gc.Errors.KafkaError as err:
                gc.log.error("LeaveGroup request failed: %s", err)
        self.reset_generation()

    cls._maybe_leave_group = maybe_leave_group  # type: ignore[method-assign]
    cls._postlane_patched = True  # type: ignore[attr-defined]


def _patch_seek_to_committed() -> None:
    """Faust drops records fetched while tables recover, then seeks back
    only partitions with a committed offset above 0 (aiokafka skips 0 and
    None): a partition never committed stayed past the dropped records, and
    a worker killed before its group's first commit lost that input. Our
    apps reset to earliest, so seek those partitions to the beginning."""
    cls = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(cls, "_postlane_seek_patched", False):
        return

    async def _seek(consumer: Any) -> Any:
        offsets = await consumer.seek_to_committed()
        for tp, offset in offsets.items():
            if not offset or offset <= 0:
                consumer._fetcher.seek_to(tp, 0)
        return offsets

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(_seek, self._ensure_consumer())

    cls.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    cls._postlane_seek_patched = True  # type: ignore[attr-defined]


async def _next_records(consumer: Any, timeout: float) -> tuple[Any, Any]:
    """Faust's ``Consumer._wait_next_records`` with lanes: fetched records of
    the worker's other partitions are handed over before any of a
    low-priority topic (the mass lane). aiokafka returns fetched records
    partition by partition, up to ``max_poll_records`` per call, and the
    conductor hands each call's records to the agents before the next: with
    a campaign fetched ahead (about 1 MiB per partition), an invoice's
    record waited behind thousands of mass records in every worker of the
    pipeline, for seconds. Mass records are still taken whenever nothing
    else is waiting, so the mass lane yields, never stops."""
    if not consumer.flow_active:
        await consumer.wait(consumer.can_resume_flow)
    try:
        consumer.not_waiting_next_records.set()
        if consumer.app.client_only:
            return await consumer._getmany(active_partitions=None, timeout=timeout), None
        active = consumer._get_active_partitions()
        if not active:
            await consumer.sleep(1)  # Faust's: still release the event loop
            return {}, active
        low: frozenset[str] = getattr(consumer.app, "_postlane_low_priority", frozenset())
        first = {tp for tp in active if tp.topic not in low}
        if low and first and len(first) < len(active):
            records = await consumer._getmany(active_partitions=first, timeout=0)
            if records:
                return records, active
        return await consumer._getmany(active_partitions=active, timeout=timeout), active
    finally:
        consumer.not_waiting_next_records.set()


_HOLE_FETCHES = 3  # times a hole is fetched again before it is taken as gone from the broker
_getmany_log = logging.getLogger("postlane.getmany")


def _skipped_before(consumer: Any, tp: Any, offset: int,
                    contiguous: frozenset[str]) -> int | None:
    """Where to fetch ``tp`` again from, if handing over the record at
    ``offset`` would skip records; else None. Faust counts records between
    the last one handed over (its read offset) and the next one as a gap,
    and a gap as acked: meant for compacted topics and transaction markers,
    it commits over records a Faust path fetched and dropped (seen after a
    SIGKILL and restart: 22 released mails never reached delivery while the
    status projection had them). Our topics are not compacted and not
    transactional, so their offsets have no holes: a jump is a skip. Unless
    the broker deleted those records (retention, while a group was away):
    the same hole found ``_HOLE_FETCHES`` times in a row is let through,
    with an error, rather than fetched forever."""
    if tp.topic not in contiguous:
        return None
    read = consumer._read_offset.get(tp)
    if not read or offset - read <= 1:  # Faust's own test for a gap
        return None
    # after a seek the read offset is the next to read (equal to the
    # committed offset); otherwise the last handed over
    committed = consumer._committed_offset.get(tp)
    first = read if committed is not None and read <= committed else read + 1
    holes: dict[Any, tuple[int, int]] = consumer.__dict__.setdefault("_postlane_holes", {})
    seen, times = holes.get(tp, (-1, 0))
    times = times + 1 if seen == first else 1
    if times > _HOLE_FETCHES:
        del holes[tp]
        _getmany_log.error("%s[%d]: records %d-%d are still missing after %d fetches: not on "
                           "the broker any more (retention?); going on from %d", tp.topic,
                           tp.partition, first, offset - 1, _HOLE_FETCHES, offset)
        return None
    holes[tp] = (first, times)
    _getmany_log.warning("%s[%d]: record %d handed over after %s, records in between never "
                         "were: fetching them again from %d", tp.topic, tp.partition, offset,
                         read, first)
    return first


def _patch_getmany() -> None:
    """Faust's ``Consumer.getmany`` takes a batch from aiokafka (moving its
    fetch position past it) and stops handing it over when the consumer
    generation changes or flow stops mid-batch, or skips records of a
    partition that is not active; nothing seeks back. The next record of
    that partition then looks like a gap, which Faust counts as acked, and
    the dropped records are committed over: lost (seen after a SIGKILL and
    restart, 26 of 200 mails). This is Faust's method with three changes:
    every record not handed over is sought back to, so it is fetched again;
    a record that would be handed over after a hole (``_skipped_before``)
    is not, and the hole is fetched again; and records come from
    ``_next_records`` (lanes: the mass topics last)."""
    cls = faust_consumer.Consumer
    if getattr(cls, "_postlane_getmany_patched", False):
        return
    log = _getmany_log

    async def getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        records, active_partitions = await _next_records(self, timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        contiguous: frozenset[str] = getattr(self.app, "_postlane_contiguous", frozenset())
        skipped: set[Any] = set()  # partitions whose records before this batch were skipped
        # tp -> first offset of this batch not yet handed over
        undelivered = {tp: batch[0].offset for tp, batch in records.items() if batch}
        last = {tp: batch[-1].offset for tp, batch in records.items() if batch}
        try:
            if not self.flow_active:
                await self.perform_seek()  # Faust's own answer: back to committed
                undelivered.clear()
                return
            for tp, record in self.scheduler.iterate(records):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    break
                if tp in skipped:
                    continue
                if (active_partitions is None or tp in active_partitions
                        or tp in self._buffered_partitions):
                    first = _skipped_before(self, tp, record.offset, contiguous)
                    if first is not None:
                        skipped.add(tp)
                        undelivered[tp] = first
                        continue
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    yield tp, self._to_message(tp, record)
                    undelivered[tp] = record.offset + 1
        finally:
            for tp, offset in undelivered.items():
                if offset > last[tp] and tp not in skipped:
                    continue
                try:
                    await self.seek(tp, offset)
                    log.info("%s[%d]: records from %d were fetched but not handed over: "
                             "fetching them again", tp.topic, tp.partition, offset)
                except Exception as exc:  # noqa: BLE001 - e.g. no longer assigned
                    log.debug("no seek back on %s: %r", tp, exc)

    cls.getmany = getmany  # type: ignore[method-assign,assignment]
    cls._postlane_getmany_patched = True  # type: ignore[attr-defined]


def _patch_buffer_flush() -> None:
    """Faust's ``ProducerBuffer.flush`` (table writes waiting to be handed to
    the producer) gives up as soon as one hand-over takes more than 0.1 s,
    with writes still in the buffer. Faust calls it right before committing
    offsets, so under load a commit could get ahead of the table writes of
    the records it commits, and a crash then lost those writes for good.
    Flush here means: nothing queued and nothing being handed over."""
    from faust.transport.producer import ProducerBuffer

    if getattr(ProducerBuffer, "_postlane_patched", False):
        return

    send_pending = ProducerBuffer._send_pending

    async def _send_pending(self: Any, fut: Any) -> None:
        self._postlane_handing = True  # taken off the queue, not yet handed over
        try:
            await send_pending(self, fut)
        finally:
            self._postlane_handing = False

    async def flush(self: Any) -> None:
        while self.size or getattr(self, "_postlane_handing", False):
            if self.state != "running":
                raise RuntimeError("Cannot flush: Producer not Running")
            self.message_sent.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)

    ProducerBuffer._send_pending = _send_pending  # type: ignore[method-assign]
    ProducerBuffer.flush = flush  # type: ignore[method-assign]
    ProducerBuffer._postlane_patched = True  # type: ignore[attr-defined]


class _Stall:
    """What the fetch watchdog last saw of one partition."""

    def __init__(self, read: int | None, position: int) -> None:
        self.read, self.position, self.seen = read, position, 1


def _watch_dropped_fetches(app: faust.App, interval: float = 2.0, patience: int = 3) -> None:
    """Faust takes a batch of records from aiokafka (moving its position)
    and drops the rest of the batch when the consumer generation changes
    or flow stops mid-iteration; nothing seeks back, so a partition can sit
    with records fetched and never delivered until the next rebalance (seen
    after a SIGKILL and restart: the new worker never read three topics).
    Every ``interval`` s, a partition whose position is ahead of what Faust
    delivered, with the delivered offset unchanged for ``patience`` checks,
    flow active and its buffers not full (a full buffer stalls legitimately),
    is sought back to the first undelivered record. (A stall with a full
    producer buffer is legitimate too: skipped.) Delivered twice at worst,
    which every processor here tolerates; never lost."""
    log = logging.getLogger("postlane.fetchwatch")
    seen: dict[Any, _Stall] = {}

    @app.timer(interval=interval)
    async def _fetch_watchdog() -> None:
        consumer: Any = app.consumer
        buffer: Any = app.producer.buffer  # over max_messages, delivery to agents waits
        if (app.rebalancing or getattr(app, "in_recovery", False) or not consumer.flow_active
                or buffer.size > buffer.max_messages):
            seen.clear()
            return
        for tp in list(consumer.assignment()):
            if (tp.topic.endswith("-changelog") or tp in consumer._buffered_partitions
                    or tp in consumer._paused_partitions):  # paused: legitimately not read
                seen.pop(tp, None)
                continue
            read = consumer._read_offset.get(tp)
            committed = consumer._committed_offset.get(tp)
            position = await consumer.position(tp)
            # after a seek Faust sets the read offset to the committed one (the
            # next to read); otherwise it is the last delivered. Equal to the
            # committed offset, it may be either: re-read that one record
            if read is None:
                first = committed or 0
            elif committed is not None and read <= committed:
                first = read
            else:
                first = read + 1
            # records beyond the last delivered one sit fetched: had they been
            # handed over, the read offset would have moved (a slow agent does
            # not stop delivery into its buffer)
            beyond = (read + 1) if read is not None else first
            if position is None or position <= beyond:
                seen.pop(tp, None)
                continue
            stall = seen.get(tp)
            if stall is None or stall.read != read:
                seen[tp] = _Stall(read, position)
                continue
            stall.seen += 1
            if stall.seen >= patience:
                log.warning("%s[%d]: records up to %d fetched but only up to %s delivered "
                            "for %.0f s: seeking back to %d", tp.topic, tp.partition,
                            position - 1, read, interval * patience, first)
                await consumer.seek(tp, first)
                seen.pop(tp, None)


def create_app(name: str, settings: Settings) -> faust.App:
    _FETCH_WAIT_MS["value"] = settings.fetch_max_wait_ms
    _patch_fetch_wait()
    _patch_seek_to_committed()
    _patch_getmany()
    _patch_buffer_flush()
    if settings.embedded:
        _patch_leave_group()
    Path(settings.data_dir, name).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_prefix}-{name}",
        broker=settings.faust_broker,
        store=settings.store,
        datadir=f"{settings.data_dir}/{name}",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_request_timeout=max(40.0, settings.session_timeout + 5),
        producer_max_batch_size=settings.producer_max_batch_size,
        producer_max_request_size=settings.max_request_bytes,
        producer_linger=0.0,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.web_enabled,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=settings.web_port,
        key_serializer="raw",  # table keys are bytes (message ids, addresses)
        value_serializer=CODEC,  # table values are plain dicts, as JSON
        table_cleanup_interval=60.0,
        table_standby_replicas=0,  # timers scan only active partitions
        stream_wait_empty=False,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        consumer_max_fetch_size=settings.consumer_max_fetch_size,
        broker_max_poll_records=settings.consumer_max_poll_records,
    )
    app.producer.buffer.max_messages = settings.producer_buffer_max
    app._postlane_low_priority = frozenset(  # type: ignore[attr-defined]
        spec.full(settings) for spec in ALL_TOPICS if spec.low_priority)
    app._postlane_contiguous = frozenset(  # type: ignore[attr-defined]
        spec.full(settings) for spec in ALL_TOPICS if not spec.compacted)
    _watch_dropped_fetches(app)
    return app


def topic(app: faust.App, settings: Settings, spec: TopicSpec) -> faust.TopicT:
    """The Faust topic for a spec, carrying raw bytes: processors decode and
    validate themselves so bad input is dead-lettered, not crashed on."""
    return app.topic(
        spec.full(settings),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions(settings),
        compacting=spec.compacted or None,
        internal=False,
    )
