"""Folding a batch of events into the status table. Pure: no Faust, no I/O.

The status agent takes its input in batches (``status_batch`` events, at
most ``status_batch_wait`` s apart). A mail usually has several events in a
batch (its request, routing, release, start and outcome arrive within a
fraction of a second of each other), and each of them used to cost a table
row (the whole status with its history, on the changelog) and a
MessageStatusChanged. Per batch now:

- every event is folded in order, with ``agent.apply`` semantics (``evolve``,
  or ``acknowledge`` for an ``ack``);
- the table gets one row per mail: its value after the batch;
- the answers to ``ack`` are all published, in order;
- the status topic gets one MessageStatusChanged per mail for the batch's
  state changes: the last one, with ``previous`` set to what the first one
  moved from (a reader sees ``queued -> sent`` instead of ``queued ->
  sending``, ``sending -> sent``); its event_id is the last change's, so a
  redelivered batch gives the same id. History-only changes (an ops command
  or its answer, ``note`` set) are all published, each after the state
  change pending before it, so the order a reader folds stays the order of
  the log.

A batch is acknowledged only after its rows are written, so a crash
mid-batch redelivers the whole batch: the folds are deterministic and the
event ids derived from their causes, so readers drop what they saw twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from schemas import Event, MessageStatusChanged, QueueCommandIssued

from .core import AckResult, MessageStatus, acknowledge, evolve


def apply(
    old: MessageStatus | None, ev: Event
) -> tuple[MessageStatus | None, AckResult | None, MessageStatusChanged | None]:
    """One event on a status: the new value, the answer to publish (for
    ``ack`` only) and the visible change."""
    if isinstance(ev, QueueCommandIssued) and ev.command == "ack":
        return acknowledge(old, ev)
    new, changed = evolve(old, ev)
    return new, None, changed


@dataclass
class Folded:
    """What a batch gives: the rows to write (message_id -> status), the
    events to publish in this order (answers and changes), and the events
    that could not be folded, with the reason (to dead-letter)."""

    rows: dict[str, MessageStatus] = field(default_factory=dict)
    publish: list[Event] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)  # (index in the batch, reason)


def merge_change(pending: MessageStatusChanged | None,
                 change: MessageStatusChanged) -> MessageStatusChanged:
    """Two state changes of one mail in one batch as one: the later one,
    moving from where the earlier one started."""
    if pending is None or pending.previous == change.previous:
        return change
    return change.derive(previous=pending.previous)


def fold_batch(load: Callable[[str], MessageStatus | None],
               events: list[Event | None]) -> Folded:
    """Fold ``events`` (None: an input already dead-lettered, skipped) in
    order; ``load(message_id)`` gives a mail's value before the batch."""
    out = Folded()
    values: dict[str, MessageStatus | None] = {}
    pending: dict[str, MessageStatusChanged] = {}  # message_id -> merged state change
    for index, ev in enumerate(events):
        if ev is None:
            continue
        mid: str = ev.message_id  # type: ignore[attr-defined]
        try:
            old = values[mid] if mid in values else load(mid)
            new, result, changed = apply(old, ev)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the projection
            out.failed.append((index, f"status projection failed: {exc!r}"))
            continue
        values[mid] = old
        if new is None or new is old:  # a duplicate: nothing to record
            continue
        values[mid] = new
        out.rows[mid] = new
        if result is not None:
            out.publish.append(result)
        if changed is None:
            continue
        if changed.note:  # history only: published as it is, in its place
            if mid in pending:
                out.publish.append(pending.pop(mid))
            out.publish.append(changed)
        else:
            pending[mid] = merge_change(pending.get(mid), changed)
    out.publish.extend(pending.values())
    return out
