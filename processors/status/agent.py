"""Status agent (consumer group ``postlane-status``): SendRequested,
RoutingDecided, the limiter's MailHeld / MailReleased, DeliveryStarted,
DeliveryAttempted, MessageCancelled and the ops commands with their
answers -> the ``status`` table and MessageStatusChanged on the status
topic.

One agent (concurrency 1) reads every source topic, all keyed by
message_id with the same partition count, so every event of a mail reaches
the same partition of the table, and this agent is the table's only
writer. The table row is the ``MessageStatus`` (see core.py); it
is rebuilt from its changelog when a worker starts or takes over a
partition. Events come ``status_batch`` at a time (the agent waits at most
``status_batch_wait`` s for a batch to fill); a mail's events in one batch
are folded in order. A mail's changes are held (``hold_batch``) until it is
final, has an answer or note to publish, or ``status_hold`` s passed since its
first unwritten change: then its row is written once and its state change
published once (under load ~1-2 of each per mail instead of one per hop). An
input is acknowledged only once everything it changed is written.

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
import time
from contextlib import aclosing
from dataclasses import fields
from typing import Any

from schemas import Event, MessageStatusChanged, QueueCommandIssued, encode
from streams import tables
from streams.acked import write_row
from streams.batches import batches
from streams.settings import Settings
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
    untyped_by_topic,
)

from ..deadletter import send_dead_letter
from ..fold import Admitted, Check, admit
from ..runtime import Runtime
from .batch import Held, hold_batch
from .core import FOLDED_EVENTS, MessageStatus

NAME = "status"
TABLE = tables.STATUS.name
REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
SOURCES = (
    SEND_REQUESTED, SEND_REQUESTED_MASS, ROUTING_DECIDED, ROUTING_DECIDED_MASS, HELD, RELEASED,
    DELIVERY, COMMANDS, COMMAND_RESULTS,
)

log = logging.getLogger("postlane.status")


def load(row: dict[str, Any] | None) -> MessageStatus | None:
    """A table row (``streams.tables.Rows`` decoded it) as a MessageStatus."""
    return None if row is None else MessageStatus.from_dict(row, fresh=True)


# fields a row leaves out when they hold their default (``load`` fills them
# in): the mail's reason and next attempt time, and its acknowledgement
_OMITTED_AT_DEFAULT = tuple((f.name, f.default) for f in fields(MessageStatus)
                            if f.name in ("reason", "next_attempt_at", "acknowledged"))


def dump(status: MessageStatus) -> dict[str, Any]:
    """The row to write: the status's fields in order (streams/mail_states.py
    reads ``state``, always written, from the bytes without parsing them),
    without ``_OMITTED_AT_DEFAULT`` at their default (~55 bytes of a sent
    mail's row)."""
    row = dict(status.__dict__)
    for name, default in _OMITTED_AT_DEFAULT:
        if row[name] == default:
            del row[name]
    return row


def checker(settings: Settings) -> Check:
    """The decode and key check of every input (shared with every keyed
    fold: processors/fold.py). Records without ``type`` on the request
    topics are read as SendRequested, as the router reads them."""
    return Check(NAME, REGISTRY, what="the message_id",
                 key_of=lambda ev: str(ev.message_id),  # type: ignore[attr-defined]
                 untyped=untyped_by_topic(settings))


def admit_status(check: Check, released: str, topic: str, key: bytes | None,
                 value: bytes | None) -> Admitted:
    """``fold.admit``, plus the projection's one rule of its own: the copy
    of an ops command the limiter forwards to delivery on ``released`` is
    skipped (the original came on ``commands``)."""
    admitted = admit(check, topic, key, value)
    if (admitted.kind == "admit" and isinstance(admitted.event, QueueCommandIssued)
            and topic == released):
        return Admitted("skip", event=admitted.event)
    return admitted


def register(rt: Runtime) -> None:
    s = rt.settings
    source = rt.raw_topic(*SOURCES)
    out = rt.topic(STATUS)
    results = rt.topic(COMMAND_RESULTS)
    dlq = rt.topic(DEAD_LETTER)
    released = RELEASED.full(s)
    check = checker(s)
    table = rt.table(tables.STATUS)

    held: dict[str, Held] = {}  # mails whose latest changes are not written yet

    @rt.app.agent(source, name="postlane.status", concurrency=1)
    async def project(stream: Any) -> None:
        held.clear()  # a restarted agent: what was held is delivered again
        # closed when the loop ends, also by an exception: a batch left at its
        # yield would hold the stream (streams/batches.py)
        async with aclosing(batches(stream, s.status_batch, within=s.status_batch_wait,
                                    eager=False, ack=False, idle=True)) as taken:
            async for batch in taken:
                messages = [event.message for event in batch]
                events = [await _checked(message) for message in messages]
                flush = hold_batch(held, lambda mid: load(table.get(mid.encode())), events,
                                   list(batch), time.monotonic(), s.status_hold,
                                   s.status_hold_max)
                for index, reason in flush.failed:
                    log.error("status projection failed on %r: %s", messages[index].key, reason)
                    await send_dead_letter(dlq, NAME, messages[index], reason)
                for ev in flush.publish:
                    topic = out if isinstance(ev, MessageStatusChanged) else results
                    await topic.send(key=ev.message_id.encode(),  # type: ignore[attr-defined]
                                     value=encode(ev))
                # after the answers and changes, as before: one row per mail
                for mid, value in flush.rows.items():  # straight to the producer
                    await write_row(table, mid.encode(), dump(value))
                for event in flush.tokens:  # its effects are written: commit past it
                    await stream.ack(event)

    async def on_revoked(sender: Any, revoked: Any = (), *args: Any, **kwargs: Any) -> None:
        """Partitions taken away: their held mails are the next owner's now
        (their inputs were not acknowledged, so it reads them again)."""
        gone = set(revoked)
        for mid in [mid for mid, h in held.items()
                    if any(event.message.tp in gone for event in h.tokens)]:  # type: ignore[attr-defined]
            del held[mid]

    rt.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    async def _checked(message: Any) -> Event | None:
        """The event in ``message``, or None when it was dead-lettered or is
        skipped (``admit_status`` decides); the fold is hold_batch's."""
        admitted = admit_status(check, released, str(message.topic), message.key,
                                message.value)
        if admitted.kind == "dead_letter":
            await send_dead_letter(dlq, NAME, message, admitted.reason)
        return admitted.event if admitted.kind == "admit" else None
