"""The upstream patches (streams/upstream_patches.py) whose defect shows on
the embedded broker, against it: Faust apps and aiokafka clients run in the
test's own event loop (so a patch can be turned off for a test), on the
shared session broker with their own topic and group prefix.

``TEST_UNPATCHED=fix_name[,fix_name]`` in the environment turns those fixes
off for these tests (their upstream originals restored, ``create_app`` not
applying them), to see which tests fail without them. The patches whose
defect is in Faust's own logic are tested in
tests/unit/test_upstream_patches.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from kafka import KafkaAdminClient, KafkaConsumer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.admin import NewTopic

from streams import upstream_patches
from streams.app import create_app
from streams.embedded import EmbeddedBroker, free_port
from streams.offsets import listed_end_offsets, true_end_offsets, true_end_offsets_sync
from streams.settings import Settings
from streams.upstream_patches import FIXES

from .harness import isolated_settings

pytestmark = pytest.mark.e2e

UNPATCHED = tuple(n for n in os.environ.get("TEST_UNPATCHED", "").split(",") if n)


@pytest.fixture(autouse=True)
def upstream() -> Iterator[None]:
    with upstream_patches.disabled(*UNPATCHED):
        yield


def create_topics(s: Settings, *names: str, partitions: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()


def raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions)


def ready(app: faust.App) -> bool:
    return bool(app.consumer.assignment() and app.tables.recovery.completed.is_set()
                and not app.rebalancing)


@contextlib.asynccontextmanager
async def running(app: faust.App, timeout: float = 30.0) -> AsyncIterator[faust.App]:
    """The app started in this event loop, its partitions assigned and its
    tables recovered; stopped on exit."""
    t0 = time.monotonic()
    await app.start()
    try:
        while not ready(app):
            assert time.monotonic() - t0 < timeout, "the app did not get ready"
            await asyncio.sleep(0.05)
        yield app
    finally:
        await app.stop()


@contextlib.asynccontextmanager
async def producer(s: Settings, **config: Any) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap, **config)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def counting_app(s: Settings, app_name: str, table_name: str, topic: str,
                 partitions: int) -> tuple[faust.App, Any]:
    """An app whose agent counts in a table: an input of value ``N`` adds
    one to each of ``<its key>-0`` .. ``<its key>-<N-1>``."""
    app = create_app(app_name, s)
    table = app.Table(table_name, default=int, partitions=partitions, key_type=bytes)

    @app.agent(raw_topic(app, topic, partitions))
    async def count(stream: Any) -> None:
        async for key, value in stream.items():
            for i in range(int(value)):
                table[key + b"-%d" % i] += 1

    return app, table


# --- fix_fetch_wait_fixed_at_1500ms ------------------------------------------------------


async def test_a_consumer_hop_takes_milliseconds_not_the_fetch_wait(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Faust fixed aiokafka's fetch wait at 1.5 s, and Tansu's long poll
    sleeps half the remaining wait between polls: a record published to an
    idle consumer waited ~0.4 s. With the embedded setting (100 ms) a hop
    takes milliseconds."""
    s = isolated_settings(broker.port, tmp_path, partitions=1)
    assert s.fetch_max_wait_ms == 100
    app = create_app("hop", s)
    name = s.topic("hop")
    create_topics(s, name, partitions=1)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    @app.agent(raw_topic(app, name, 1))
    async def hop(stream: Any) -> None:
        async for _ in stream:
            arrived.put_nowait(time.monotonic())

    latencies = []
    async with running(app), producer(s) as p:
        for _ in range(12):
            await asyncio.sleep(0.15)  # the consumer is idle in its long poll
            sent = time.monotonic()
            await p.send_and_wait(name, b"x")
            latencies.append(await asyncio.wait_for(arrived.get(), 5) - sent)
    median = statistics.median(latencies)
    assert median < 0.15, f"median hop {median * 1000:.0f} ms: " + " ".join(
        f"{x * 1000:.0f}" for x in latencies)


# --- fix_leave_group_skipped_at_generation_0 ----------------------------------------------


async def group_members(s: Settings, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [(error, _group, _state, _ptype, _protocol, members, *_)] = response.groups
        assert error == 0, error
        return [m[0] for m in members]
    finally:
        await admin.close()


async def test_a_stopped_first_member_leaves_its_group(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Tansu numbers a new group's first generation 0, and aiokafka sent
    LeaveGroup only above 0: the first worker of a group stopped cleanly
    stayed a member until its session expired, and the next one waited."""
    s = isolated_settings(broker.port, tmp_path, partitions=1)
    FIXES["fix_leave_group_skipped_at_generation_0"](s, create_app("leave", s))
    name, group = s.topic("leave"), f"{s.app_prefix}-leave-group"
    create_topics(s, name, partitions=1)
    consumer = AIOKafkaConsumer(name, bootstrap_servers=s.bootstrap, group_id=group,
                                session_timeout_ms=int(s.session_timeout * 1000),
                                heartbeat_interval_ms=int(s.heartbeat_interval * 1000))
    await consumer.start()
    try:
        deadline = time.monotonic() + 20
        while not consumer.assignment():
            assert time.monotonic() < deadline, "never joined"
            await asyncio.sleep(0.05)
        coordinator: Any = consumer._coordinator
        assert coordinator.generation == 0  # Tansu's first generation
        assert await group_members(s, group) == [coordinator.member_id]
    finally:
        await consumer.stop()
    assert await group_members(s, group) == []


# --- fix_seek_to_committed_skips_uncommitted_partitions -----------------------------------


async def test_perform_seek_takes_a_never_committed_partition_back_to_its_start(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Faust drops records fetched while its flow is stopped and seeks back
    to the committed offsets; aiokafka skips partitions never committed, so
    such a partition stayed past what was dropped. Here Faust's
    ``AIOKafkaConsumerThread.seek_to_committed`` runs on a real group
    member that read 10 records and committed nothing: its position must go
    back to 0. (That Faust then loses input was not reproduced: an aiokafka
    rebalance resets a re-assigned partition's position anyway; this shows
    the seek, on the real broker.)"""
    s = isolated_settings(broker.port, tmp_path, partitions=1)
    FIXES["fix_seek_to_committed_skips_uncommitted_partitions"](s, create_app("seek", s))
    name = s.topic("seek")
    create_topics(s, name, partitions=1)
    async with producer(s) as p:
        for _ in range(10):
            await p.send_and_wait(name, b"x", partition=0)
    tp = TopicPartition(name, 0)
    consumer = AIOKafkaConsumer(name, bootstrap_servers=s.bootstrap,
                                group_id=f"{s.app_prefix}-seek-group",
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=int(s.session_timeout * 1000),
                                heartbeat_interval_ms=int(s.heartbeat_interval * 1000))
    await consumer.start()
    try:
        read = 0
        deadline = time.monotonic() + 20
        while read < 10:
            assert time.monotonic() < deadline, f"read {read} of 10"
            batch = await consumer.getmany(timeout_ms=500)
            read += sum(len(records) for records in batch.values())
        assert await consumer.position(tp) == 10

        async def call_thread(fn: Any, *args: Any) -> Any:
            return await fn(*args)

        # Faust's consumer thread, as far as seek_to_committed uses it
        thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: consumer)
        committed = await AIOKafkaConsumerThread.seek_to_committed(thread)  # type: ignore[arg-type]
        assert not committed.get(tp)
        assert await consumer.position(tp) == 0
    finally:
        await consumer.stop()


# --- fix_end_offsets_at_last_batch_start ------------------------------------------------------


async def test_true_end_offsets_reach_past_the_last_batch(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Tansu answers ListOffsets(LATEST) with the start of a partition's last
    batch + 1; ``streams.offsets`` finds the true end for aiokafka and
    kafka-python callers, and (fixed) aiokafka's own ``end_offsets`` too."""
    s = isolated_settings(broker.port, tmp_path, partitions=3)
    FIXES["fix_end_offsets_at_last_batch_start"](s, create_app("ends", s))
    name = s.topic("ends")
    create_topics(s, name, partitions=3)
    async with producer(s, linger_ms=50) as p:
        for n in (5, 7):  # partition 0: a batch of 5 (0-4), then one of 7 (5-11)
            await asyncio.gather(*[await p.send(name, b"x", partition=0) for _ in range(n)])
        await p.send_and_wait(name, b"x", partition=1)  # partition 1: one record; 2: none
    tps = [TopicPartition(name, i) for i in range(3)]
    true = {tps[0]: 12, tps[1]: 1, tps[2]: 0}
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        listed = await listed_end_offsets(consumer, tps)
        # Tansu 0.6.0's answer: if this fails, the broker got fixed
        assert listed == {tps[0]: 6, tps[1]: 1, tps[2]: 0}
        assert await true_end_offsets(consumer, tps) == true
        assert await consumer.end_offsets(tps) == true
        assert consumer.assignment() == set()  # nothing assigned, nothing moved
    finally:
        await consumer.stop()
    kconsumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
    try:
        ktps = [KafkaTopicPartition(name, i) for i in range(3)]
        assert kconsumer.end_offsets(ktps) == dict(zip(ktps, listed.values(), strict=True))
        assert true_end_offsets_sync(kconsumer, ktps) == dict(zip(ktps, true.values(),
                                                                  strict=True))
    finally:
        kconsumer.close()


async def test_a_table_recovers_exactly_from_a_changelog_written_in_batches(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A table written with producer batching (each input event updates 8
    keys, so each changelog partition's batches, the last one included, hold
    several records), then read back by a new worker from its changelog:
    the same table. Faust takes aiokafka's end offsets as the changelog's
    end; with Tansu's, recovery stopped after the first record of the last
    batch (the embedded default was one record per batch because of it)."""
    # a linger of 200 ms makes the producer gather each partition's changelog
    # records into batches of several (without it, which batches form was up
    # to timing: a faster pipeline ended both partitions in a one-record
    # batch in a CI run, and the test then checked nothing)
    s = isolated_settings(broker.port, tmp_path, partitions=2, producer_linger_ms=200)
    assert s.producer_max_batch_size > 1
    name = s.topic("count")
    create_topics(s, name, partitions=2)

    def build() -> tuple[faust.App, Any]:
        return counting_app(s, "recover", "counts", name, partitions=2)

    app, table = build()
    async with running(app):
        async with producer(s) as p:
            for j in range(24):  # 3 keys per partition, 8 table keys each
                await p.send_and_wait(name, b"8", key=b"k%d" % (j % 6), partition=j % 2)
        deadline = time.monotonic() + 20
        while sum(table.values()) < 24 * 8:
            assert time.monotonic() < deadline, f"counted {sum(table.values())} of {24 * 8}"
            await asyncio.sleep(0.1)
        written = dict(table.items())
    assert len(written) == 6 * 8

    changelog = [TopicPartition(f"{app.conf.id}-counts-changelog", i) for i in range(2)]
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        listed = await listed_end_offsets(consumer, changelog)
        ends = await true_end_offsets(consumer, changelog)
    finally:
        await consumer.stop()
    assert sum(ends.values()) == 24 * 8  # one changelog record per update
    # both partitions must end in a batch of several records
    assert all(listed[tp] < ends[tp] for tp in changelog), (
        f"a last batch of one record tests nothing: listed {listed}, true {ends}")

    app2, table2 = build()
    async with running(app2):
        recovered = dict(table2.items())
    assert recovered == written


# --- fix_one_linger_for_every_topic ------------------------------------------


async def test_a_lingering_tables_changelog_goes_out_in_full_batches(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A table declared ``linger`` in streams/tables.py (here one named
    "status"), one update per input and each input published alone: its
    changelog records wait ``background_linger_ms`` for more of their
    partition, so they go out many to a batch, and a new worker recovers
    the same table from them. Without the fix each update went out nearly
    alone (the producer sends as soon as its last request is answered)."""
    from bench.batches import count_batches

    s = isolated_settings(broker.port, tmp_path, partitions=1, background_linger_ms=300)
    name = s.topic("updates")
    create_topics(s, name, partitions=1)

    def build() -> tuple[faust.App, Any]:
        return counting_app(s, "linger", "status", name, partitions=1)

    app, table = build()
    changelog = f"{app.conf.id}-status-changelog"
    async with running(app):
        async with producer(s) as p:
            for j in range(100):  # one at a time: the agent sees each alone
                await p.send_and_wait(name, b"1", key=b"k%d" % (j % 10), partition=0)
                await asyncio.sleep(0.002)
        deadline = time.monotonic() + 20
        while sum(table.values()) < 100:
            assert time.monotonic() < deadline, f"counted {sum(table.values())} of 100"
            await asyncio.sleep(0.05)
        written = dict(table.items())
    assert written == {b"k%d-0" % i: 10 for i in range(10)}

    batches, records, _ = (await count_batches(s.bootstrap, topics=(changelog,)))[changelog]
    assert records == 100  # one changelog record per update
    assert batches <= 20, (
        f"{records} changelog records went out in {batches} batches: they did not linger")

    app2, table2 = build()
    async with running(app2):
        recovered = dict(table2.items())
    assert recovered == written


async def test_a_flush_sends_a_lingering_changelog_record_at_once(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Faust flushes the producer before every offset commit, also from its
    drain loop (every 10,000 acks): a flush sends the lingering changelog
    records at once instead of waiting out their linger (5 s here), and
    they are on the log when it returns."""
    s = isolated_settings(broker.port, tmp_path, partitions=1, background_linger_ms=5000)
    name = s.topic("updates")
    create_topics(s, name, partitions=1)
    app, table = counting_app(s, "flush", "status", name, partitions=1)
    changelog = TopicPartition(f"{app.conf.id}-status-changelog", 0)
    async with running(app):
        async with producer(s) as p:
            await p.send_and_wait(name, b"1", key=b"k", partition=0)
        deadline = time.monotonic() + 20
        while table[b"k-0"] < 1:
            assert time.monotonic() < deadline, "the input was not counted"
            await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await app.producer.flush()
        took = time.monotonic() - t0
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            ends = await true_end_offsets(consumer, [changelog])
        finally:
            await consumer.stop()
    assert ends[changelog] == 1, "the flush returned before the record was on the log"
    assert took < 2.5, f"the flush waited {took:.1f} s: the lingering record was not sent at once"


# --- fix_stop_fails_while_a_fetch_backs_off ------------------------------------------------


async def test_a_consumer_whose_broker_is_gone_stops(tmp_path: Path) -> None:
    """aiokafka's ``Fetcher.close`` awaited a fetch it had cancelled in the
    back-off after a failed request, and raised its CancelledError: Faust's
    consumer thread died in ``stop()`` and a worker whose broker was gone
    never stopped on SIGTERM."""
    s = isolated_settings(free_port(), tmp_path, partitions=1)
    own = EmbeddedBroker(s, log_path=tmp_path / "tansu.log").start()
    FIXES["fix_stop_fails_while_a_fetch_backs_off"](s, create_app("gone", s))
    name = s.topic("gone")
    consumer: AIOKafkaConsumer | None = None
    try:
        create_topics(s, name, partitions=1)
        # a long back-off: a fetch that fails waits in it when stop() comes
        consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                    retry_backoff_ms=5000, fetch_max_wait_ms=100)
        await consumer.start()
        consumer.assign([TopicPartition(name, 0)])
        await consumer.getmany(timeout_ms=300)  # fetching
        own.stop()
        fetcher: Any = consumer._fetcher
        deadline = time.monotonic() + 10
        while not fetcher._pending_tasks:  # the next fetch, failing into its back-off
            assert time.monotonic() < deadline, "no fetch pending after the broker stopped"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stopping = asyncio.ensure_future(consumer.stop())
        done, _ = await asyncio.wait([stopping], timeout=15)
        assert stopping in done, "stop() did not return within 15 s"
        assert not stopping.cancelled(), "stop() ended in CancelledError"
        stopping.result()
        consumer = None
    finally:
        if consumer is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(consumer.stop(), 5)
        own.stop()
