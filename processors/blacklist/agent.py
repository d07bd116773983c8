"""Blacklist processor (consumer group ``postlane-blacklist``): the
``bounces`` topic -> the ``blacklist`` table and ``BlacklistChanged`` on the
``blacklist`` topic. Keyed by address: every event of one address is on one
partition, in order, and this agent is the table's only writer. The fold is
core.py's ``evolve``, the same function ``postlane replay blacklist`` uses.

At-least-once: the change is sent before the table is updated, with an id
derived from its cause; a redelivered event is found in the state's ``seen``
ids (or by its bounce id) and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from schemas import Event, encode
from streams import tables
from streams.topics import BLACKLIST, BOUNCES, DEAD_LETTER

from ..deadletter import decode_or_dead_letter, send_dead_letter
from ..runtime import Runtime
from .core import FOLDED_EVENTS, AddressState, Rules, address_of, evolve

NAME = "blacklist"
REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
log = logging.getLogger("postlane.blacklist")


def load(raw: bytes | None) -> AddressState | None:
    return None if raw is None else AddressState.from_dict(orjson.loads(raw))


def dump(state: AddressState) -> bytes:
    return orjson.dumps(state.to_dict())


def register(rt: Runtime) -> None:
    s = rt.settings
    rules = Rules.from_settings(s)
    out = rt.topic(BLACKLIST)
    dlq = rt.topic(DEAD_LETTER)
    table = rt.table(tables.BLACKLIST)

    @rt.app.agent(rt.topic(BOUNCES), name="postlane.blacklist", concurrency=1)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            ev = await decode_or_dead_letter(dlq, NAME, message, REGISTRY)
            if ev is None:
                continue
            key = address_of(ev).encode()
            if message.key != key:
                await send_dead_letter(
                    dlq, NAME, message,
                    f"key {message.key!r} is not the address {ev.address!r}: "  # type: ignore[attr-defined]
                    "every event of an address must be keyed by it",
                )
                continue
            try:
                old = load(table.get(key))
                new, changed = evolve(old, ev, rules)
            except Exception as exc:  # noqa: BLE001 - a bad event must not stop the count
                log.exception("blacklist fold failed on %s", ev.event_id)
                await send_dead_letter(dlq, NAME, message, f"blacklist fold failed: {exc!r}")
                continue
            if changed is not None:
                log.info("%s %s: %s", changed.address,
                         "blacklisted" if changed.blacklisted else "lifted", changed.reason)
                await out.send(key=key, value=encode(changed))
            table[key] = dump(new)
