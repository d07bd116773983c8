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

from schemas import Event
from streams import tables
from streams.topics import BLACKLIST, BOUNCES, DEAD_LETTER

from ..fold import Check, Fold, run
from ..runtime import Runtime
from .core import FOLDED_EVENTS, AddressState, Rules, address_of, evolve

NAME = "blacklist"
REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
log = logging.getLogger("postlane.blacklist")


def load(row: dict[str, Any]) -> AddressState:
    return AddressState.from_dict(row)


def dump(state: AddressState) -> dict[str, Any]:
    return state.to_dict()


def counting(rules: Rules) -> Fold[AddressState]:
    """The blacklist's fold: ``evolve`` per address; a change is sent on
    the ``blacklist`` topic before the row is written."""

    def fold(old: AddressState | None, ev: Event) -> tuple[AddressState, list[Any]]:
        new, changed = evolve(old, ev, rules)
        if changed is None:
            return new, []
        log.info("%s %s: %s", changed.address,
                 "blacklisted" if changed.blacklisted else "lifted", changed.reason)
        return new, [(BLACKLIST, address_of(ev), changed)]

    return Fold(Check(NAME, REGISTRY, key_of=address_of, what="the address"),
                load=load, dump=dump, fold=fold, doing="blacklist fold")


def register(rt: Runtime) -> None:
    spec = counting(Rules.from_settings(rt.settings))
    dlq = rt.topic(DEAD_LETTER)
    table = rt.table(tables.BLACKLIST)

    @rt.app.agent(rt.topic(BOUNCES), name="postlane.blacklist", concurrency=1)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            await run(spec, event.message, table, dlq, rt.topic)
