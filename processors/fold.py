"""The one keyed fold an agent runs per input: decode -> key check -> fold
-> dead-letter -> write. Two parts:

- ``admit`` (with a ``Check``): decode one record and check its key. Every
  keyed consumer of events uses it: the keyed folds below and the status
  projection, which folds whole batches itself (processors/status).
- ``step`` (with a ``Fold``, which holds its ``Check``): admit, then fold
  the row; ``run`` is the glue that does what ``step`` decided (send the
  outputs, then write the row: at-least-once, a redelivered input finds the
  row it already made). Used by the blacklist agent (bounces -> the
  ``blacklist`` table) and the bounces processor's outage and attribution
  agents.

A ``Check`` says what a consumer accepts:

- ``registry``: the event types it reads (others in its input are invalid);
- ``accepts``: the decoded types it folds (others are skipped: a shared
  topic carries events for other readers);
- ``key_of``: the key an event must have (``what`` names it in the refusal);
- ``judges``: the topics whose invalid or mis-keyed records this processor
  dead-letters (on a topic another processor owns, its owner judges them);
- ``untyped``: full topic name -> the type its records without ``type``
  are read as (streams.topics.untyped_by_topic).

A ``Fold`` adds the fold itself:

- ``load`` / ``dump``: a row (the table's JSON value, ``streams.tables.Rows``)
  <-> state;
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
class Check:
    """What a keyed consumer accepts (see the module's doc)."""

    processor: str
    registry: dict[str, type[Event]]
    key_of: Callable[[Event], str]
    what: str  # what the key is, for the refusal ("the address")
    accepts: tuple[type[Event], ...] = ()  # () = every type of the registry
    judges: Callable[[str], bool] = field(default=lambda topic: True)
    untyped: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Admitted:
    """One record checked: ``admit`` it (its ``event`` under ``key``),
    ``skip`` it, or ``dead_letter`` it with ``reason``. ``event`` is set
    whenever the record decoded."""

    kind: Literal["admit", "skip", "dead_letter"]
    reason: str = ""
    key: bytes = b""
    event: Event | None = None


def admit(check: Check, topic: str, key: bytes | None, value: bytes | None) -> Admitted:
    """Decode and key check one record (pure: bytes in, the verdict out)."""
    try:
        ev = decode_any(check.registry, value, check.untyped.get(topic, ""))
    except InvalidEvent as exc:
        return Admitted("dead_letter", str(exc)) if check.judges(topic) else Admitted("skip")
    if check.accepts and not isinstance(ev, check.accepts):
        return Admitted("skip", event=ev)
    want = check.key_of(ev).encode()
    if key != want:
        if not check.judges(topic):
            return Admitted("skip", event=ev)
        return Admitted("dead_letter", f"key {key!r} is not {check.what} "
                        f"{want.decode()!r}: every event must be keyed by it", event=ev)
    return Admitted("admit", key=want, event=ev)


@dataclass(frozen=True)
class Fold(Generic[S]):
    check: Check
    load: Callable[[Any], S]  # a row (JSON value) -> state
    dump: Callable[[S], Any]  # state -> a row (what streams.tables.Rows encodes)
    fold: Callable[[S | None, Event], tuple[S | None, Out]]
    doing: str = "fold"  # what the fold is, for the refusal when it raises


@dataclass(frozen=True)
class Step:
    """What to do with one input: ``skip`` it, ``dead_letter`` it (with
    ``reason``), or send ``outputs`` then write ``row`` at ``key`` (no write
    when ``row`` is None)."""

    kind: Literal["skip", "dead_letter", "write"]
    reason: str = ""
    key: bytes = b""
    row: Any = None
    outputs: Out = ()
    event: Event | None = None


def step(spec: Fold[Any], topic: str, key: bytes | None, value: bytes | None,
         get_row: Callable[[bytes], Any]) -> Step:
    """The decision for one record (``get_row`` reads the table's row)."""
    admitted = admit(spec.check, topic, key, value)
    ev, want = admitted.event, admitted.key
    if admitted.kind == "skip":
        return Step("skip", event=ev)
    if admitted.kind == "dead_letter":
        return Step("dead_letter", admitted.reason, event=ev)
    assert ev is not None
    try:
        row = get_row(want)
        new, outputs = spec.fold(None if row is None else spec.load(row), ev)
        new_row = None if new is None else spec.dump(new)
    except Exception as exc:  # noqa: BLE001 - a bad input must not stop the fold
        log.exception("%s: %s failed on %s", spec.check.processor, spec.doing, ev.event_id)
        return Step("dead_letter", f"{spec.doing} failed: {exc!r}", event=ev)
    return Step("write", key=want, row=new_row, outputs=list(outputs), event=ev)


async def run(spec: Fold[Any], message: Any, table: Any, dlq: Any,
              topic: Callable[[TopicSpec], Any]) -> Step:
    """Do ``step`` for one Faust message: dead-letter, or send the outputs
    and then write the row."""
    did = step(spec, str(message.topic), message.key, message.value, table.get)
    if did.kind == "dead_letter":
        await send_dead_letter(dlq, spec.check.processor, message, did.reason)
    elif did.kind == "write":
        for out_spec, out_key, event in did.outputs:
            await topic(out_spec).send(key=out_key.encode(), value=encode(event))
        if did.row is not None:
            table[did.key] = did.row
    return did
