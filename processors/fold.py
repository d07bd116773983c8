"""The one keyed fold an agent runs per input: decode -> key check -> fold
-> dead-letter -> write. ``step`` is the decision (pure: bytes in, what to
do out), ``run`` the glue that does it (send the outputs, then write the
row: at-least-once, a redelivered input finds the row it already made).

Used by the blacklist agent (bounces -> the ``blacklist`` table) and the
bounces processor's outage and attribution agents. A processor says what
its fold is with a ``Fold``:

- ``registry``: the event types it reads (others in its input are invalid);
- ``accepts``: the decoded types it folds (others are skipped: a shared
  topic carries events for other readers);
- ``key_of``: the key an event must have (``what`` names it in the refusal);
- ``judges``: the topics whose invalid or mis-keyed records this processor
  dead-letters (on a topic another processor owns, its owner judges them);
- ``load`` / ``dump``: a row's bytes <-> state;
- ``fold``: (state or None, event) -> (new state or None for no write,
  outputs ``[(topic spec, key, event)]``); it may raise: the input is then
  dead-lettered with the reason and the row is left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from schemas import Event, InvalidEvent, decode_any, encode
from streams.topics import TopicSpec

from .deadletter import send_dead_letter

S = TypeVar("S")
Out = Sequence[tuple[TopicSpec, str, Event]]
log = logging.getLogger("postlane.fold")


@dataclass(frozen=True)
class Fold(Generic[S]):
    processor: str
    registry: dict[str, type[Event]]
    key_of: Callable[[Event], str]
    what: str  # what the key is, for the refusal ("the address")
    load: Callable[[bytes], S]
    dump: Callable[[S], bytes]
    fold: Callable[[S | None, Event], tuple[S | None, Out]]
    accepts: tuple[type[Event], ...] = ()  # () = every type of the registry
    judges: Callable[[str], bool] = field(default=lambda topic: True)
    doing: str = "fold"  # what the fold is, for the refusal when it raises
    # full topic name -> the type its records without ``type`` are read as
    # (streams.topics.untyped_by_topic)
    untyped: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """What to do with one input: ``skip`` it, ``dead_letter`` it (with
    ``reason``), or send ``outputs`` then write ``row`` at ``key`` (no write
    when ``row`` is None)."""

    kind: Literal["skip", "dead_letter", "write"]
    reason: str = ""
    key: bytes = b""
    row: bytes | None = None
    outputs: Out = ()
    event: Event | None = None


def admit(spec: Fold[Any], topic: str, key: bytes | None, value: bytes | None) -> Step:
    """Decode and key check one record: ``write`` (with ``event`` and ``key``)
    when it is to be folded, else ``skip`` or ``dead_letter``. A batching
    agent calls this per record and folds the batch itself."""
    try:
        ev = decode_any(spec.registry, value, spec.untyped.get(topic, ""))
    except InvalidEvent as exc:
        return Step("dead_letter", str(exc)) if spec.judges(topic) else Step("skip")
    if spec.accepts and not isinstance(ev, spec.accepts):
        return Step("skip", event=ev)
    want = spec.key_of(ev).encode()
    if key != want:
        if not spec.judges(topic):
            return Step("skip", event=ev)
        return Step("dead_letter", f"key {key!r} is not {spec.what} {want.decode()!r}: "
                    "every event must be keyed by it", event=ev)
    return Step("write", key=want, event=ev)


def step(spec: Fold[Any], topic: str, key: bytes | None, value: bytes | None,
         get_row: Callable[[bytes], bytes | None]) -> Step:
    """The decision for one record (``get_row`` reads the table)."""
    admitted = admit(spec, topic, key, value)
    if admitted.kind != "write":
        return admitted
    ev, want = admitted.event, admitted.key
    assert ev is not None
    try:
        raw = get_row(want)
        new, outputs = spec.fold(None if raw is None else spec.load(raw), ev)
        row = None if new is None else spec.dump(new)
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the fold
        log.exception("%s: %s failed on %s", spec.processor, spec.doing, ev.event_id)
        return Step("dead_letter", f"{spec.doing} failed: {exc!r}", event=ev)
    return Step("write", key=want, row=row, outputs=list(outputs), event=ev)


async def run(spec: Fold[Any], message: Any, table: Any, dlq: Any,
              topic: Callable[[TopicSpec], Any]) -> Step:
    """Do ``step`` for one Faust message: dead-letter, or send the outputs
    and then write the row."""
    did = step(spec, str(message.topic), message.key, message.value, table.get)
    if did.kind == "dead_letter":
        await send_dead_letter(dlq, spec.processor, message, did.reason)
    elif did.kind == "write":
        for out_spec, out_key, event in did.outputs:
            await topic(out_spec).send(key=out_key.encode(), value=encode(event))
        if did.row is not None:
            table[did.key] = did.row
    return did
