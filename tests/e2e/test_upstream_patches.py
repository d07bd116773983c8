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
from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from streams import upstream_patches
from streams.app import create_app
from streams.embedded import EmbeddedBroker
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
