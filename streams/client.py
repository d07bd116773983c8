"""Plain kafka-python clients for tools (CLI, publisher, replay): create the
topics, publish events (each acknowledged before the next is sent), and read
a topic from offset 0 to its end.

The end is the true one (``streams.offsets.true_end_offsets_sync``): the
embedded broker's ListOffsets answer stops at the start of a partition's
last batch + 1.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from schemas import Event, encode
from schemas.errors import PostlaneError

from .offsets import true_end_offsets_sync
from .settings import Settings
from .topics import ALL_TOPICS, TopicSpec


class BrokerUnavailable(PostlaneError, RuntimeError):
    """No broker answered at the configured address."""


def broker_hint(settings: Settings) -> str:
    """What the operator should do when no broker answered (every client's
    words for it: these tools' and the publisher's)."""
    if settings.embedded:
        return ("start it with `postlane broker` (or `postlane dev`), or set POSTLANE_BROKER "
                "to your Kafka")
    return "check POSTLANE_BROKER and that Kafka is up"


def unavailable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    """The error, in words, when no broker answered: what to start or check."""
    return BrokerUnavailable(f"no Kafka broker at {settings.bootstrap} ({exc}): "
                             f"{broker_hint(settings)}")


def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = ALL_TOPICS,
                  connect_timeout: float = 30.0) -> list[str]:
    """Create missing topics; returns the names created. Raises
    BrokerUnavailable when no broker answered within ``connect_timeout``
    seconds (kafka-python's bootstrap wait)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap, client_id="postlane-admin",
                                 request_timeout_ms=10000,
                                 bootstrap_timeout_ms=int(connect_timeout * 1000))
    except KafkaError as exc:
        raise unavailable(settings, exc) from exc
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                s.full(settings), num_partitions=s.partitions(settings), replication_factor=1,
                topic_configs={"cleanup.policy": "compact"} if s.compacted else {},
            )
            for s in specs
            if s.full(settings) not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
        return [t.name for t in new]
    finally:
        admin.close()


def producer(settings: Settings) -> KafkaProducer:
    try:
        return KafkaProducer(
            bootstrap_servers=settings.bootstrap,
            acks="all",
            linger_ms=0,
            retries=5,
            client_id="postlane-client",
            compression_type=settings.compression_type,
            max_in_flight_requests_per_connection=1,
            max_request_size=settings.max_request_bytes,
        )
    except KafkaError as exc:
        raise unavailable(settings, exc) from exc


def publish(
    settings: Settings,
    spec: TopicSpec,
    items: list[tuple[str, Event]],
    prod: KafkaProducer | None = None,
    timeout: float = 15.0,
) -> None:
    """Publish (key, event) pairs, each acknowledged before the next is sent."""
    own = prod is None
    p = prod or producer(settings)
    try:
        for key, event in items:
            p.send(spec.full(settings), key=key.encode(), value=encode(event)).get(timeout)
    finally:
        if own:
            p.close()


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


def read_all(settings: Settings, spec: TopicSpec, idle: float = 1.0) -> Iterator[Record]:
    """Every record of a topic from offset 0 to its current end."""
    return read_topic(settings, spec.full(settings), idle)


def read_topic(settings: Settings, topic: str, idle: float = 1.0) -> Iterator[Record]:
    """Records from offset 0 until ``idle`` seconds pass with nothing new
    after the end offsets (as they were when the read began) were reached."""
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.bootstrap, enable_auto_commit=False, group_id=None,
            client_id="postlane-reader", fetch_max_wait_ms=100,
        )
    except KafkaError as exc:
        raise unavailable(settings, exc) from exc
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = true_end_offsets_sync(consumer, tps)
        last_new = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=100, max_records=2000)
            for tp_records in batch.values():
                for r in tp_records:
                    yield Record(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value)
                last_new = time.monotonic()
            reached = all(consumer.position(tp) >= ends[tp] for tp in tps)
            if reached and time.monotonic() - last_new >= idle:
                return
            if not batch and time.monotonic() - last_new >= max(idle, 10.0):
                return
    finally:
        consumer.close()
