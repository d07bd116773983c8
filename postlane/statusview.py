"""The read side of mail status for the CLI, without a Faust worker.

The status projection publishes MessageStatusChanged to the status topic
keyed by message_id. Kafka's default partitioner (murmur2 of the key, the
same in kafka-python, aiokafka and the Java client) says which partition
holds a key, so a reader reads that one partition from offset 0 and folds
the changes of its key. The projection writes each partition alone and in
order, so the last change wins; a change seen twice (same event_id, after
a redelivery) counts once.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner import murmur2

from schemas import InvalidEvent, MessageStatusChanged, decode
from streams.client import unavailable
from streams.offsets import true_end_offsets_sync
from streams.settings import Settings
from streams.topics import STATUS

FINAL_STATES = frozenset({"sent", "failed", "cancelled", "rejected", "bounced", "suppressed"})


def partition_for(key: bytes, partitions: set[int] | list[int]) -> int:
    """The partition Kafka's default partitioner gives a keyed record."""
    ordered = sorted(partitions)
    if not ordered:
        raise ValueError("the topic has no partitions")
    return ordered[(murmur2(key) & 0x7FFFFFFF) % len(ordered)]


def fold_change(status: dict[str, Any] | None, change: MessageStatusChanged) -> dict[str, Any]:
    """Apply one MessageStatusChanged to the reader's status dict:
    ``{message_id, state, reason, server, attempt, recipients, acknowledged,
    updated_at, history: [{at, state, previous, reason, server, attempt,
    event_id}]}``."""
    out: dict[str, Any] = (
        copy.deepcopy(status) if status else {"message_id": change.message_id, "history": []}
    )
    history: list[dict[str, Any]] = out["history"]
    if any(h.get("event_id") == change.event_id for h in history):
        return out
    if change.note:  # an ops command or its answer: history only
        history.append({"at": change.occurred_at, "state": change.state,
                        "previous": change.previous, "reason": change.note,
                        "server": change.server, "attempt": change.attempt,
                        "event_id": change.event_id, "note": True})
        out["acknowledged"] = change.acknowledged
        return out
    out.update(
        state=change.state,
        reason=change.reason,
        server=change.server,
        attempt=change.attempt,
        recipients=copy.deepcopy(change.recipients),
        acknowledged=change.acknowledged,
        updated_at=change.occurred_at,
    )
    history.append({
        "at": change.occurred_at,
        "state": change.state,
        "previous": change.previous,
        "reason": change.reason,
        "server": change.server,
        "attempt": change.attempt,
        "event_id": change.event_id,
    })
    return out


class StatusReader:
    """Follows the status-topic partition that holds one message_id."""

    def __init__(self, settings: Settings, message_id: str) -> None:
        self.topic = STATUS.full(settings)
        self.message_id = message_id
        self.key = message_id.encode()
        self.status: dict[str, Any] | None = None
        self.tp: TopicPartition | None = None
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=settings.bootstrap, group_id=None, enable_auto_commit=False,
                client_id="postlane-status-view", fetch_max_wait_ms=100,
                request_timeout_ms=15000,
            )
        except KafkaError as exc:
            raise unavailable(settings, exc) from exc

    def close(self) -> None:
        self.consumer.close()

    def __enter__(self) -> StatusReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def assign(self) -> bool:
        """Assign the key's partition from offset 0; False while the topic
        does not exist yet."""
        if self.tp is not None:
            return True
        parts = self.consumer.partitions_for_topic(self.topic)
        if not parts:
            return False
        self.tp = TopicPartition(self.topic, partition_for(self.key, parts))
        self.consumer.assign([self.tp])
        self.consumer.seek_to_beginning(self.tp)
        return True

    def poll(self, timeout: float) -> int:
        """Fold what arrives within ``timeout`` seconds; returns the number
        of records read (of any key)."""
        if not self.assign():
            time.sleep(min(timeout, 0.2))
            return 0
        batch = self.consumer.poll(timeout_ms=int(timeout * 1000), max_records=5000)
        n = 0
        for records in batch.values():
            for r in records:
                n += 1
                if r.key != self.key:
                    continue
                try:
                    change = decode(MessageStatusChanged, r.value)
                except InvalidEvent:
                    continue  # not ours to judge; the projection writes valid events
                if change.message_id == self.message_id:
                    self.status = fold_change(self.status, change)
        return n

    def caught_up(self) -> bool:
        """At the partition's end (the true one: the embedded broker's
        ListOffsets answer stops at the start of its last batch + 1)."""
        if self.tp is None:
            return False
        end = true_end_offsets_sync(self.consumer, [self.tp]).get(self.tp, 0)
        return bool(self.consumer.position(self.tp) >= end)

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.get("state") in FINAL_STATES


def read_status(
    settings: Settings, message_id: str, timeout: float = 10.0
) -> dict[str, Any] | None:
    """The status of one mail as the status topic has it now; None when the
    topic holds nothing for it."""
    deadline = time.monotonic() + timeout
    with StatusReader(settings, message_id) as reader:
        if not reader.assign():
            return None
        while time.monotonic() < deadline:
            n = reader.poll(0.2)
            if n == 0 and reader.caught_up():
                break
        return reader.status


def wait_final(settings: Settings, message_id: str, timeout: float) -> dict[str, Any] | None:
    """Follow the mail's status until its latest state is final (sent,
    failed, cancelled, rejected, bounced, suppressed); None when it is not
    within ``timeout`` seconds. The consumer stays open and follows the
    partition, so each change costs one fetch, not a re-read."""
    deadline = time.monotonic() + timeout
    with StatusReader(settings, message_id) as reader:
        while True:
            reader.poll(max(min(0.5, deadline - time.monotonic()), 0.01))
            # final, and the latest: an earlier failure may have been retried
            if reader.final and reader.caught_up():
                return reader.status
            if time.monotonic() >= deadline:
                return None
