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


# --- holding a moving mail's changes (one row and one change per mail, not per batch) ----------

# states a mail passes through on its way: only these are held
MOVING = frozenset({"queued", "sending"})


@dataclass
class Held:
    """A mail whose latest changes are folded but not yet written: its
    value, its state change not yet published (merged), what must be
    published before it (answers, history notes, in order), the inputs to
    acknowledge once it is written (opaque to this module), and when its
    first unwritten change was folded."""

    value: MessageStatus
    since: float
    change: MessageStatusChanged | None = None
    publish: list[Event] = field(default_factory=list)
    tokens: list[object] = field(default_factory=list)


@dataclass
class Flush:
    """What the agent writes now, in this order: the events to publish, the
    rows, then the inputs to acknowledge; and the inputs that could not be
    folded, with the reason (dead-letter them, then acknowledge)."""

    publish: list[Event] = field(default_factory=list)
    rows: dict[str, MessageStatus] = field(default_factory=dict)
    tokens: list[object] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def hold_batch(held: dict[str, Held], load: Callable[[str], MessageStatus | None],
               events: list[Event | None], tokens: list[object], now: float,
               hold: float, max_held: int) -> Flush:
    """Fold ``events`` (None: nothing to fold; its token is acknowledged at
    once) into ``held`` (updated in place: the agent's state between
    batches) and say what to write now.

    A mail moving through the pipeline has five events within a fraction of
    a second when nothing waits, spread over seconds when every hop has a
    backlog. Writing a row and a change per batch cost ~4 of each per mail
    under load; here a mail's changes are held and written once:

    - at once when the mail came to rest: a final state (``send --wait``
      and webhooks see ``sent`` without delay) or ``deferred`` (its answer
      is shown even when the retry follows within ``hold``); and when it
      has an answer or a history note to publish (so the order a reader
      folds stays the log's);
    - otherwise ``hold`` seconds after its first unwritten change (the
      table is never more than ``hold`` plus a batch behind);
    - and the oldest first when more than ``max_held`` mails are held.

    An input is acknowledged only once every change it made is written, so
    a crash redelivers what was held (the fold is idempotent: duplicates
    change nothing)."""
    out = Flush()
    touched: list[str] = []
    for index, ev in enumerate(events):
        token = tokens[index]
        if ev is None:
            out.tokens.append(token)
            continue
        mid: str = ev.message_id  # type: ignore[attr-defined]
        h = held.get(mid)
        old = h.value if h is not None else load(mid)
        try:
            new, result, changed = apply(old, ev)
        except Exception as exc:  # noqa: BLE001 - a bad event must not stop the projection
            out.failed.append((index, f"status projection failed: {exc!r}"))
            out.tokens.append(token)
            continue
        if new is None or new is old:  # a duplicate: nothing to record
            out.tokens.append(token)
            continue
        if h is None:
            h = held[mid] = Held(value=new, since=now)
        h.value = new
        h.tokens.append(token)
        touched.append(mid)
        if result is not None:
            h.publish.append(result)
        if changed is None:
            continue
        if changed.note:  # history only: after the change pending before it
            if h.change is not None:
                h.publish.append(h.change)
                h.change = None
            h.publish.append(changed)
        else:
            h.change = merge_change(h.change, changed)
    due: dict[str, None] = {}
    for mid in touched:
        h = held[mid]
        if h.publish or h.value.state not in MOVING:
            due[mid] = None
    # oldest first (a dict keeps the order mails were first held in)
    over = len(held) - max_held
    for mid, h in held.items():
        if now - h.since < hold and over <= 0:
            break
        due[mid] = None
        over -= 1
    for mid in due:
        h = held.pop(mid)
        out.publish.extend(h.publish)
        if h.change is not None:
            out.publish.append(h.change)
        out.rows[mid] = h.value
        out.tokens.extend(h.tokens)
    return out
