"""The adaptive fetch wait (streams/fetch_wait.py) against the embedded broker:
quick while records flow, the long wait once idle, and what it buys per hop."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.embedded import EmbeddedBroker
from streams.fetch_wait import next_wait_ms
from streams.upstream_patches import adapt_fetch_wait, disabled

pytestmark = pytest.mark.e2e
FIX = "fix_fetch_answered_at_half_the_remaining_wait"


def test_the_wait_is_quick_after_records_and_doubles_while_none_come() -> None:
    assert next_wait_ms(100, True, 5, 100) == 5
    assert [next_wait_ms(w, False, 5, 100) for w in (5, 10, 40, 80, 100)] == [
        10, 20, 80, 100, 100]


async def _hop_ms(bootstrap: str, topic: str, n: int) -> tuple[list[float], list[int]]:
    """Produce one record at a time and time it to the consumer; the
    fetcher's wait seen after each record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await producer.start()
    await consumer.start()
    hops: list[float] = []
    waits: list[int] = []
    try:
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.getone()
        for _ in range(n):
            await asyncio.sleep(0.02)  # the record arrives during a fetch's wait
            sent = time.monotonic()
            await producer.send_and_wait(topic, b"x")
            await consumer.getone()
            hops.append((time.monotonic() - sent) * 1000)
            waits.append(consumer._fetcher._fetch_max_wait_ms)
        await asyncio.sleep(1.5)  # idle: the wait doubled back to the long one
        waits.append(consumer._fetcher._fetch_max_wait_ms)
    finally:
        await consumer.stop()
        await producer.stop()
    return hops, waits


def test_a_consumer_polls_quickly_while_records_flow_and_slowly_when_idle(
        broker: EmbeddedBroker) -> None:
    adapt_fetch_wait(5, 100)
    with disabled() if os.environ.get("TEST_UNPATCHED") != FIX else disabled(FIX):
        hops, waits = asyncio.run(_hop_ms(broker.bootstrap, f"fw-{uuid.uuid4().hex}", 20))
    # records came: quick again (or doubled once or twice by empty polls
    # between the record's send and its fetch)
    assert max(waits[:-1]) <= 20, waits
    assert waits[-1] == 100, waits  # idle for 1.5 s: the long wait again
    # with the long wait a record waits up to half of it on Tansu (~25 ms
    # on average); quick, a few ms
    hops.sort()
    assert hops[len(hops) // 2] < 15, hops
