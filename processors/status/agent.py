"""Status agent (consumer group ``postlane-status``): SendRequested,
RoutingDecided, DeliveryStarted and DeliveryAttempted -> the ``status``
table and MessageStatusChanged on the status topic.

One agent (concurrency 1) reads the three topics, all keyed by message_id
with the same partition count, so every event of a mail reaches the same
partition of the table, and this agent is the table's only writer. The
table value is the ``MessageStatus`` as JSON (see core.py); it is rebuilt
from its changelog when a worker starts or takes over a partition.

At-least-once: the change is sent before the table is updated, and its
event_id is derived from the cause's, so a redelivered event either is a
duplicate in the table (nothing sent) or gives the same change again
(readers drop the repeated event_id).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from schemas import Event, encode
from streams.topics import (
    DEAD_LETTER,
    DELIVERY,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
    SEND_REQUESTED_MASS,
    STATUS,
)

from ..deadletter import decode_or_dead_letter, send_dead_letter
from ..runtime import Runtime
from .core import FOLDED_EVENTS, MessageStatus, evolve

NAME = "status"
TABLE = "status"
REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
SOURCES = (SEND_REQUESTED, SEND_REQUESTED_MASS, ROUTING_DECIDED, ROUTING_DECIDED_MASS, DELIVERY)

log = logging.getLogger("postlane.status")


def load(raw: bytes | None) -> MessageStatus | None:
    """A table value (JSON bytes) as a MessageStatus."""
    return None if raw is None else MessageStatus.from_dict(orjson.loads(raw))


def dump(status: MessageStatus) -> bytes:
    return orjson.dumps(status.to_dict())


def register(rt: Runtime) -> None:
    s = rt.settings
    source = rt.app.topic(
        *(spec.full(s) for spec in SOURCES),
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
    )
    out = rt.topic(STATUS)
    dlq = rt.topic(DEAD_LETTER)
    table = rt.app.Table(
        TABLE, default=None, key_type=bytes, value_type=bytes, partitions=s.partitions,
        help="message_id -> MessageStatus (JSON); written only by the status agent",
    )
    rt.extras["status_table"] = table

    @rt.app.agent(source, name="postlane.status", concurrency=1)
    async def project(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            ev = await decode_or_dead_letter(dlq, NAME, message, REGISTRY)
            if ev is None:
                continue
            key = ev.message_id.encode()  # type: ignore[attr-defined]
            if message.key != key:
                await send_dead_letter(
                    dlq, NAME, message,
                    f"key {message.key!r} is not the message_id {ev.message_id!r}: "  # type: ignore[attr-defined]
                    "every event of a mail must be keyed by its message_id",
                )
                continue
            try:
                old = load(table.get(key))
                new, changed = evolve(old, ev)
            except Exception as exc:  # noqa: BLE001 - a bad event must not stop the projection
                log.exception("status projection failed on %s", ev.event_id)
                await send_dead_letter(dlq, NAME, message, f"status projection failed: {exc!r}")
                continue
            if new is old:  # a duplicate: nothing to record
                continue
            if changed is not None:
                await out.send(key=key, value=encode(changed))
            table[key] = dump(new)
