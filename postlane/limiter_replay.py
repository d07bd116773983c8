"""Replay of the limiter's tables (kept apart from ``replayops`` so a rework
of the limiter changes this module only).

- ``limiter-held`` (message_id -> held / released / cancelled): folded from
  the limiter's own events: ``MailHeld`` (held), ``MailReleased`` (released)
  and its ``MessageCancelled`` (cancelled). A hold the limiter announces
  with no event (a mass mail waiting for room in the mass window, silently)
  has no record on the log, so a replay cannot show it; it shows once the
  mail is released.
- ``limiter-mass`` (mass mail taken in and still waiting): the mass lane's
  routed decisions (``processors.limiter.core.Mail``, as the intake agent
  makes them) minus those released or cancelled (the prune timer drops
  their rows within a second).

The meters row (mass in flight per partition) depends on the clock of
each scheduling pass and is not replayed; neither is the "asking" state of
a mail waiting for the quota's answer (no event: a few ms, and no row).
Released and
cancelled markers older than ``held_keep`` (an hour) before the last
record folded are left out, as the limiter deletes them.
"""

from __future__ import annotations

from typing import Any

from schemas import (
    Event,
    InvalidEvent,
    MailHeld,
    MailReleased,
    MessageCancelled,
    RoutingDecided,
    decode_any,
)
from streams.settings import Settings
from streams.topics import COMMAND_RESULTS, HELD, RELEASED, ROUTING_DECIDED_MASS

from .logread import Rec
from .replayops import Folded, TableReplay, in_order

NAME = "limiter"  # the ``by`` of the limiter's MessageCancelled
_EVENTS: dict[str, type[Event]] = {c.__name__: c for c in (
    MailHeld, MailReleased, MessageCancelled, RoutingDecided)}


def _fold(s: Settings, recs: list[Rec]) -> tuple[dict[str, str], dict[str, Any], Folded]:
    from processors.limiter import core

    out = Folded()
    held: dict[str, str] = {}
    done_at: dict[str, float] = {}  # when a mail was released / cancelled
    last = 0.0
    mass: dict[str, Any] = {}
    mass_topic = ROUTING_DECIDED_MASS.full(s)
    for rec in in_order(recs, (ROUTING_DECIDED_MASS, HELD, RELEASED, COMMAND_RESULTS), s):
        try:
            ev = decode_any(_EVENTS, rec.value)
        except InvalidEvent:
            continue  # other events of these topics (commands, answers)
        mid: str = ev.message_id  # type: ignore[attr-defined]
        if rec.key != mid.encode():
            out.skipped += 1
            continue
        out.folded += 1
        at = rec.timestamp_ms / 1000.0
        last = max(last, at)
        if isinstance(ev, RoutingDecided):
            if rec.topic != mass_topic or ev.outcome != "routed":
                continue
            if mid in mass or mid in held:
                continue  # redelivered: taken in already (as the intake agent decides)
            mass[mid] = core.Mail(message_id=mid, lane="mass", seq=rec.offset,
                                  decision=dict(ev.to_representation()),
                                  received_at=rec.timestamp_ms / 1000.0)
        elif isinstance(ev, MailHeld):
            if held.get(mid) not in ("released", "cancelled"):
                held[mid] = "held"
        elif isinstance(ev, MailReleased):
            if held.get(mid) != "cancelled":
                held[mid] = "released"
                done_at[mid] = at
            mass.pop(mid, None)
        elif isinstance(ev, MessageCancelled) and ev.by == NAME:
            held[mid] = "cancelled"
            done_at[mid] = at
            mass.pop(mid, None)
    keep = core.Limits().held_keep
    held = {m: v for m, v in held.items()
            if v == "held" or done_at.get(m, last) >= last - keep}
    return held, mass, out


def fold_held(s: Settings, recs: list[Rec]) -> Folded:
    held, _, out = _fold(s, recs)
    out.rows = {k: {"state": v} for k, v in held.items()}
    return out


def fold_mass(s: Settings, recs: list[Rec]) -> Folded:
    _, mass, out = _fold(s, recs)
    out.rows = {k: {"waiting": True, "lane": m.lane} for k, m in mass.items()}
    return out


def _held_live(_s: Settings, _key: str, value: Any) -> Any:
    return {"state": value.get("state")} if isinstance(value, dict) else value


def _mass_live(_s: Settings, _key: str, value: Any) -> Any:
    return {"waiting": True, "lane": value.get("lane")} if isinstance(value, dict) else value


def tables() -> list[TableReplay]:
    sources = (ROUTING_DECIDED_MASS, HELD, RELEASED, COMMAND_RESULTS)
    return [
        TableReplay("limiter-held", "limiter-held", "limiter", sources, fold_held, _held_live,
                    "message_id -> held / released / cancelled"),
        TableReplay("limiter-mass", "limiter-mass", "limiter", sources, fold_mass, _mass_live,
                    "mass mail taken in and still waiting"),
    ]

