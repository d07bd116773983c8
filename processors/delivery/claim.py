"""Reading a mail's decision back from the record its attempt came from.

The ledger row of a first attempt in flight leaves the decision and the
request's body out (``core.row``): they are on the log already, in the record the attempt
started from (``Ledger.body_at``: the router's direct RoutingDecided on
``routing-decided``, or the limiter's MailReleased on ``released``). When a
restart leaves that attempt to be retried:

- the input was not acknowledged (a batch is acknowledged only when it
  finished, streams/batches.py), so the same record is delivered again and
  carries the decision: nothing is read here;
- otherwise (the attempt raised, or the retry timer found it orphaned
  first) the agent reads that one record here, by its offset.

I/O only: one consumer (no group), started on first use, kept for the next
read (its partition paused in between), stopped when the worker stops
(``close``, called by the delivery agent's stop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from schemas import InvalidEvent, MailReleased, RoutingDecided, SendRequested, decode_any
from schemas.base import carried
from schemas.errors import PostlaneError
from streams.settings import Settings

log = logging.getLogger("postlane.delivery")
_CARRIERS: dict[str, type[Any]] = {"RoutingDecided": RoutingDecided,
                                   "MailReleased": MailReleased}


class DecisionUnreadable(PostlaneError, RuntimeError):
    """The record a ledger's attempt came from cannot be read (gone from the
    log, or not a decision): its mail cannot be sent again from here."""

    def __init__(self, message_id: str, body_at: str, why: str) -> None:
        self.message_id, self.body_at = message_id, body_at
        parts = body_at.rsplit(":", 2)
        where = ("{} partition {} offset {}".format(*parts) if len(parts) == 3
                 else repr(body_at))
        super().__init__(
            f"{message_id}: the decision and request of its interrupted attempt are not "
            f"readable at {where} ({why}); the ledger keeps it in flight. Publish the mail "
            f"again (a new message_id) if it must still go out")


def decision_of(raw: bytes | None, message_id: str) -> RoutingDecided | None:
    """The routing decision (with its request) a RoutingDecided or
    MailReleased record carries, when it is this mail's (None otherwise)."""
    try:
        event = decode_any(_CARRIERS, raw)
        if isinstance(event, MailReleased):
            event = carried(RoutingDecided, event.decision)
        if not isinstance(event, RoutingDecided) or event.message_id != message_id:
            return None
        carried(SendRequested, event.request)  # a request that reads
    except (InvalidEvent, TypeError, ValueError):
        return None
    return event


class DecisionReader:
    """Reads one record by (topic, partition, offset)."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout
        self.consumer: AIOKafkaConsumer | None = None
        self.lock = asyncio.Lock()
        self.reads = 0  # records read back (metrics, tests)

    async def decision(self, message_id: str, body_at: str) -> RoutingDecided:
        """The decision (with the request) of ``message_id`` carried by the
        record at ``body_at`` (``topic:partition:offset``)."""
        try:
            topic, part, off = body_at.rsplit(":", 2)
            partition, offset = int(part), int(off)
        except ValueError as exc:
            raise DecisionUnreadable(message_id, body_at, "not a topic, partition, offset") from exc
        async with self.lock:
            raw = await self._read(topic, partition, offset)
        if raw is None:
            raise DecisionUnreadable(message_id, body_at, f"no record within {self.timeout:.0f} s")
        decision = decision_of(raw, message_id)
        if decision is None:
            raise DecisionUnreadable(message_id, body_at, "not this mail's decision")
        self.reads += 1
        log.info("%s: decision read back from %s partition %d offset %d", message_id, topic,
                 partition, offset)
        return decision

    async def _read(self, topic: str, partition: int, offset: int) -> bytes | None:
        if self.consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.bootstrap, group_id=None,
                enable_auto_commit=False, fetch_max_wait_ms=100,
                client_id="postlane-delivery-claim")
            await consumer.start()
            self.consumer = consumer
        consumer = self.consumer
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        try:
            deadline = time.monotonic() + self.timeout
            while time.monotonic() < deadline:
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=50)
                for rec in batch.get(tp, []):
                    if rec.offset == offset:
                        return rec.value  # type: ignore[no-any-return]
                    if rec.offset > offset:
                        return None  # not there (compacted or deleted)
            return None
        finally:
            # paused until the next read (which assigns afresh): an assigned
            # partition is fetched on and on, ~10 long polls a second at its end
            consumer.pause(tp)

    async def close(self) -> None:
        """Stop the consumer, if one was started (the worker's stop,
        ``agent.py``); a later read starts a new one."""
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()
