"""End offsets as they are: the offset after each partition's last record.

The embedded broker (Tansu 0.6.0, docs/embedded-broker.md) answers
ListOffsets(LATEST) with the first offset of the partition's last stored
batch + 1, not the offset after its last record: with several records per
producer batch every client's ``end_offsets`` (and ``seek_to_end``) stops
short of the records after the first of that batch. Its Fetch responses are
right: their high watermark is the true end, and the batches they carry end
where the log ends. So ask ListOffsets as usual, then, for each partition
with records, fetch from one before the answer (the first offset of the last
batch the broker counted) and take the greatest of the answer, the Fetch
response's high watermark and the end of the batches it returned.

On Apache Kafka the three agree; the fetch costs one round trip per broker.

- ``true_end_offsets(consumer, partitions)``: for an aiokafka consumer
  (``await``), the same answer as ``consumer.end_offsets`` should give;
- ``true_end_offsets_sync(consumer, partitions)``: for a kafka-python
  consumer (blocks; the fetch goes through a short-lived aiokafka client).

Worker processes on the embedded broker also get aiokafka's
``AIOKafkaConsumer.end_offsets`` answered this way
(``streams/upstream_patches.py``), which covers Faust's changelog recovery.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

log = logging.getLogger("postlane.offsets")

K = TypeVar("K")  # the caller's topic-partition type (aiokafka's, kafka-python's, Faust's TP)

# bytes asked for per partition: enough for a producer batch (Kafka answers
# with at least the first whole batch anyway); the high watermark needs none
_PARTITION_BYTES = 1024 * 1024
_READ_UNCOMMITTED = 0
_WAIT_MS = 100
_ROUNDS = 3  # fetches asking again for partitions a response left out


async def listed_end_offsets(consumer: AIOKafkaConsumer, partitions: Iterable[K]) -> dict[K, int]:
    """What the broker answers to ListOffsets(LATEST), as aiokafka's own
    ``end_offsets`` asks it (this bypasses a patched ``end_offsets``)."""
    tps = list(partitions)
    fetcher: Any = consumer._fetcher  # type: ignore[attr-defined]
    answer = await fetcher.end_offsets(tps, consumer._request_timeout_ms)  # type: ignore[attr-defined]
    return {tp: answer[tp] for tp in tps if tp in answer}


async def true_end_offsets(consumer: AIOKafkaConsumer, partitions: Iterable[K]) -> dict[K, int]:
    """The offset after each partition's last record, for an aiokafka
    consumer (started; it need not be assigned the partitions, and its
    positions do not move)."""
    listed = await listed_end_offsets(consumer, partitions)
    return await exact_ends(consumer._client, listed)  # type: ignore[attr-defined]


def true_end_offsets_sync(consumer: Any, partitions: Iterable[K],
                          timeout: float = 30.0) -> dict[K, int]:
    """The offset after each partition's last record, for a kafka-python
    ``KafkaConsumer`` (blocks). Its ``end_offsets`` gives the broker's answer;
    the fetch that corrects it runs on a short-lived aiokafka client in a
    thread of its own (so this may be called from anywhere, an event loop's
    thread included)."""
    listed: dict[K, int] = dict(consumer.end_offsets(list(partitions)))
    if not any(end > 0 for end in listed.values()):
        return listed
    bootstrap = consumer.config["bootstrap_servers"]

    async def correct() -> dict[K, int]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, client_id="postlane-end-offsets",
                                request_timeout_ms=int(timeout * 1000))
        await client.bootstrap()
        try:
            for topic in {_topic_partition(tp).topic for tp in listed}:
                await client.add_topic(topic)
            return await exact_ends(client, listed)
        finally:
            await client.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="end-offsets") as pool:
        return pool.submit(asyncio.run, correct()).result(timeout)


async def exact_ends(client: AIOKafkaClient, listed: Mapping[K, int]) -> dict[K, int]:
    """``listed`` (ListOffsets answers) corrected by a Fetch from one before
    each answer (one request per broker, asked again for partitions a
    response left out). A partition the fetch cannot answer for (no leader
    known, an error) keeps its listed end, with a warning."""
    ends = dict(listed)
    todo: dict[tuple[str, int], K] = {}
    for key, end in listed.items():
        if end is not None and end > 0:  # 0: empty, nothing to correct
            tp = _topic_partition(key)
            todo[(tp.topic, tp.partition)] = key
    for _ in range(_ROUNDS):
        if not todo:
            break
        by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
        for (topic, partition), key in list(todo.items()):
            node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            if node is None or node < 0:
                log.warning("%s[%d]: no leader known; its end offset %d is the broker's "
                            "ListOffsets answer", topic, partition, listed[key])
                del todo[(topic, partition)]
                continue
            by_node.setdefault(node, {}).setdefault(topic, []).append(
                (partition, listed[key] - 1, _PARTITION_BYTES))
        for node, topics in by_node.items():
            # Tansu answers a fetch with no wait with no records at all: wait up to
            # _WAIT_MS (the records are there, so the answer comes at once)
            request = FetchRequest(_WAIT_MS, 1, _PARTITION_BYTES * 8, _READ_UNCOMMITTED,
                                   list(topics.items()))
            response = await client.send(node, request)
            for topic, partitions in response.topics:
                for partition, error_code, highwater, *data in partitions:
                    if (topic, partition) not in todo:
                        continue
                    key = todo.pop((topic, partition))
                    if error_code:
                        log.warning("%s[%d]: fetching its last batch failed (%s); its end "
                                    "offset %d is the broker's ListOffsets answer", topic,
                                    partition, for_code(error_code).__name__, listed[key])
                        continue
                    ends[key] = max(listed[key], highwater, _batches_end(data[-1]))
    for (topic, partition), key in todo.items():
        log.warning("%s[%d]: no fetch answer for its last batch; its end offset %d is the "
                    "broker's ListOffsets answer", topic, partition, listed[key])
    return ends


def _batches_end(data: bytes | None) -> int:
    """The offset after the last whole batch in a fetched record set (0 if none)."""
    if not data:
        return 0
    records = MemoryRecords(data)
    end = 0
    while records.has_next():
        batch = records.next_batch()
        if batch is None:
            break
        end = batch.next_offset
    return end


def _topic_partition(key: Any) -> TopicPartition:
    return TopicPartition(key.topic, key.partition)
