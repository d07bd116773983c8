"""Status agent (consumer group ``postlane-status``): SendRequested,
RoutingDecided, the limiter's MailHeld / MailReleased, DeliveryStarted,
DeliveryAttempted, MessageCancelled and the ops commands with their
answers -> the ``status`` table and MessageStatusChanged on the status
topic.

One agent (concurrency 1) reads every source topic, all keyed by
message_id with the same partition count, so every event of a mail reaches
the same partition of the table, and this agent is the table's only
writer. The table value is the ``MessageStatus`` as JSON (see core.py); it
is rebuilt from its changelog when a worker starts or takes over a
partition.

Ops commands (``commands`` topic): each goes into the mail's history. This
processor owns ``ack``: it answers it (QueueCommandApplied / Refused on
``command-results``) and publishes the change (``acknowledged``). The other
commands are answered by the limiter or delivery; their answers and the
events that follow arrive here like any other. The copies of commands the
limiter forwards to delivery on ``released`` are ignored (the original
came on ``commands``).

At-least-once: the answer and the change are sent before the table is
updated, and their event_ids are derived from the cause's, so a redelivered
event either is a duplicate in the table (nothing sent) or gives the same
answer and change again (readers drop the repeated event_id).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from schemas import Event, MessageStatusChanged, QueueCommandIssued, encode
from streams.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    DEAD_LETTER,
    DELIVERY,
    HELD,
    RELEASED,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
    SEND_REQUESTED_MASS,
    STATUS,
)

from ..deadletter import decode_or_dead_letter, send_dead_letter
from ..runtime import Runtime
from .core import FOLDED_EVENTS, AckResult, MessageStatus, acknowledge, evolve

NAME = "status"
TABLE = "status"
REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
SOURCES = (
    SEND_REQUESTED, SEND_REQUESTED_MASS, ROUTING_DECIDED, ROUTING_DECIDED_MASS, HELD, RELEASED,
    DELIVERY, COMMANDS, COMMAND_RESULTS,
)

log = logging.getLogger("postlane.status")


def load(raw: bytes | None) -> MessageStatus | None:
    """A table value (JSON bytes) as a MessageStatus."""
    return None if raw is None else MessageStatus.from_dict(orjson.loads(raw))


def dump(status: MessageStatus) -> bytes:
    return orjson.dumps(status.to_dict())


def apply(
    old: MessageStatus | None, ev: Event
) -> tuple[MessageStatus | None, AckResult | None, MessageStatusChanged | None]:
    """One event on the table's value: the new value, the answer to publish
    (for ``ack`` only) and the visible change."""
    if isinstance(ev, QueueCommandIssued) and ev.command == "ack":
        return acknowledge(old, ev)
    new, changed = evolve(old, ev)
    return new, None, changed


def register(rt: Runtime) -> None:
    s = rt.settings
    source = rt.raw_topic(*SOURCES)
    out = rt.topic(STATUS)
    results = rt.topic(COMMAND_RESULTS)
    dlq = rt.topic(DEAD_LETTER)
    released = RELEASED.full(s)
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
            if isinstance(ev, QueueCommandIssued) and message.topic == released:
                continue  # the limiter's forwarded copy; the original came on commands
            try:
                old = load(table.get(key))
                new, result, changed = apply(old, ev)
            except Exception as exc:  # noqa: BLE001 - a bad event must not stop the projection
                log.exception("status projection failed on %s", ev.event_id)
                await send_dead_letter(dlq, NAME, message, f"status projection failed: {exc!r}")
                continue
            if new is None or new is old:  # a duplicate: nothing to record
                continue
            if result is not None:
                await results.send(key=key, value=encode(result))
            if changed is not None:
                await out.send(key=key, value=encode(changed))
            table[key] = dump(new)
