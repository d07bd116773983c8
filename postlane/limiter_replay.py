"""Replay of the limiter's tables (kept apart from ``replayops`` so a rework
of the limiter changes this module only).

- ``limiter-held`` (message_id -> held / released / cancelled): folded from
  the limiter's own events: ``MailHeld`` (held), ``MailReleased`` (released)
  and its ``MessageCancelled`` (cancelled). The live table holds the
  released markers of one scheduling pass as one row (``ids``); the
  comparison reads it as a marker per mail (``held_live_all``). A hold the limiter announces
  with no event (a mass mail waiting for room in the mass window, silently)
  has no record on the log, so a replay cannot show it; it shows once the
  mail is released.
- ``limiter-mass`` (mass mail taken in and still waiting): the mass lane's
  routed decisions (``processors.limiter.core.Mail``, as the intake agent
  makes them) minus those released or cancelled (the prune timer drops
  their rows within a second).

- ``limiter-quota`` (batch key -> the grants the quota counted in one
  batch): each granted ask of the ``quota`` topic decided again with
  ``processors.limiter.quota.decide`` at the moment the quota decided it,
  under the limits of the config as of then, in the quota's order (by that
  moment, transactional before mass, then the ask's offset), and recorded
  with ``quota.record`` under the batch key. The answers (QuotasAnswered items on ``quota-answers``,
  QuotaGranted on ``delivery-quota``) say which asks were granted, in which
  batch and when (``batch``, ``decided_at``); refusals change no count and
  are not recorded, so they are not needed. A grant whose answer does not
  say (written before they did) cannot be replayed and is counted as
  skipped. Rows the quota prunes are compared only while they still count:
  both sides leave out the grants ``quota.prunable`` drops as of the last
  decision. A token given back (a cancelled mail's: a ``give_back`` item of
  a QuotasAsked, never answered) is applied with ``quota.give_back`` at the
  moment its record was written, in the same order; both sides show it as
  ``returned`` on the grant it gives back (the live row that records it is
  under the key of the quota batch that read it, which the log does not
  say). A give-back the quota read a few ms after a later grant's batch may
  then be ordered before that grant.

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
    QuotaAsked,
    QuotasAsked,
    RoutingDecided,
    decode_any,
)
from streams import tables as T
from streams.settings import Settings
from streams.topics import (
    COMMAND_RESULTS,
    CONFIG,
    DELIVERY_QUOTA,
    HELD,
    QUOTA,
    QUOTA_ANSWERS,
    RELEASED,
    ROUTING_DECIDED_MASS,
)

from .logread import Rec
from .replayops import Folded, TableReplay, in_order

NAME = "limiter"  # the ``by`` of the limiter's MessageCancelled
_EVENTS: dict[str, type[Event]] = {c.__name__: c for c in (
    MailHeld, MailReleased, MessageCancelled, RoutingDecided)}
_ASKS: dict[str, type[Event]] = {c.__name__: c for c in (QuotaAsked, QuotasAsked)}


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
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("ids"), list):  # a pass row: the mail one pass released
        return {"state": value.get("state"), "ids": value["ids"]}
    return {"state": value.get("state")}


def held_live_all(_s: Settings, values: dict[str, Any]) -> dict[str, Any]:
    """The live rows by message_id: a pass row (the limiter writes one
    per scheduling pass for the mail it released, ``ids``) stands for a
    released marker of each of its mails."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        ids = value.get("ids") if isinstance(value, dict) else None
        if isinstance(ids, list):
            for mid in ids:
                out[str(mid)] = {"state": value.get("state")}
        else:
            out.setdefault(key, value)
    return out


def _mass_live(_s: Settings, _key: str, value: Any) -> Any:
    return {"waiting": True, "lane": value.get("lane")} if isinstance(value, dict) else value


# --- limiter-quota ---------------------------------------------------------------------------


def fold_quota(s: Settings, recs: list[Rec]) -> Folded:
    import orjson

    from processors.config.view import ConfigView, evolve
    from processors.limiter import quota
    from processors.limiter.limits import limits_from
    from schemas import CONFIG_EVENTS

    out = Folded()
    config: list[tuple[int, Event]] = []  # (timestamp ms, config event)
    asks: dict[str, list[tuple[int, int, int, quota.Ask]]] = {}  # ask_id -> (ts, off, i, ask)
    grants: dict[str, tuple[str, float]] = {}  # ask_id -> (batch key, decided_at)
    refused: dict[str, list[int]] = {}  # ask_id -> when refusals of it were answered (ms)
    gives: list[tuple[float, int, int, str | None, quota.Ask]] = []  # tokens given back
    topic = {t.full(s): t.name for t in (CONFIG, QUOTA, QUOTA_ANSWERS, DELIVERY_QUOTA)}
    for rec in recs:
        name = topic.get(rec.topic)
        try:
            data = orjson.loads(rec.value or b"null")
        except orjson.JSONDecodeError:
            out.skipped += 1
            continue
        if not isinstance(data, dict):
            out.skipped += 1
            continue
        try:
            if name == "config":
                config.append((rec.timestamp_ms, decode_any(CONFIG_EVENTS, rec.value)))
            elif name == "quota":
                items = data.get("asks") if data.get("type") == "QuotasAsked" else [data]
                ev = decode_any(_ASKS, rec.value)  # validated as the quota agent does
                for i, item in enumerate(items if isinstance(items, list) else []):
                    ask = quota.Ask.of(item if data.get("type") == "QuotasAsked"
                                       else ev.to_representation())
                    if ask.give_back:  # applied when it was written (it has no answer)
                        gives.append((rec.timestamp_ms / 1000.0, rec.offset, i, None, ask))
                        continue
                    asks.setdefault(ask.ask_id, []).append(
                        (rec.timestamp_ms, rec.offset, i, ask))
            else:
                answers = data.get("answers") if data.get("type") == "QuotasAnswered" else [data]
                for item in answers if isinstance(answers, list) else []:
                    if isinstance(item, dict) and item.get("type") == "QuotaRefused":
                        refused.setdefault(str(item.get("ask_id", "")), []).append(
                            rec.timestamp_ms)
                    if not isinstance(item, dict) or item.get("type") != "QuotaGranted":
                        continue
                    ask_id, batch = str(item.get("ask_id", "")), str(item.get("batch") or "")
                    at = item.get("decided_at")
                    if ask_id and batch and isinstance(at, int | float) and at > 0:
                        grants.setdefault(ask_id, (batch, float(at)))
                    elif ask_id not in grants:
                        out.skipped += 1  # from before answers named their row
        except (InvalidEvent, KeyError, TypeError, ValueError):
            out.skipped += 1
    # the quota's order: by the moment of each batch, then the asks' offsets. The ask
    # decided is the first one written after its last refusal before that moment (an
    # ask the limiter repeated, timed out, in the same batch is answered from the row;
    # one repeated after the grant too)
    todo: list[tuple[float, int, int, str | None, quota.Ask]] = list(gives)
    for ask_id, (batch, at) in grants.items():
        seen = asks.get(ask_id)
        if not seen:
            out.skipped += 1
            continue
        until = at * 1000.0 + 1
        after = max((t for t in refused.get(ask_id, ()) if t <= until), default=-1)
        chosen = [a for a in seen if after < a[0] <= until] or seen[:1]
        _ts, off, i, ask = chosen[0]
        todo.append((at, off, i, batch, ask))
    # within a batch (one moment) transactional asks before mass (quota.ordered)
    todo.sort(key=lambda t: (t[0], t[4].lane == "mass", t[1], t[2]))
    config.sort(key=lambda c: c[0])
    view, c = ConfigView(), 0
    q = quota.Quota()
    batches: dict[str, list[dict[str, Any]]] = {}
    last = 0.0
    for at, _off, _i, in_batch, ask in todo:
        while c < len(config) and config[c][0] <= at * 1000.0:
            view = evolve(view, config[c][1])
            c += 1
        if in_batch is None:  # a cancelled mail's token given back: its grant is marked
            quota.give_back(q, ask, at, limits_from(view, s))
            last = max(last, at)
            continue
        answer, row = quota.decide(q, ask, at, limits_from(view, s))
        if row is None:
            out.skipped += 1  # refused now: the limits of that moment are not the config's
            continue
        out.folded += 1
        batches.setdefault(in_batch, []).append(row)
        last = max(last, at)
    values = {key: quota.record(q, key, rows) for key, rows in batches.items()}
    out.rows = _quota_comparable(values, last, limits_from(view, s), returned=q.returned)
    return out


def _quota_comparable(values: dict[str, Any], now: float, limits: Any,
                      returned: set[str] | None = None) -> dict[str, Any]:
    """Batch key -> its grants that still count at ``now`` (ask_id -> the
    row without its batch; a grant given back marked ``returned``), batches
    with none left out: what the quota keeps whenever it pruned. The rows
    that record a give-back (``returns``) are read as that mark: the batch
    they were written in is the quota's moment, not on the log (the replay
    passes the grants it saw given back as ``returned``)."""
    from processors.limiter import quota

    if not values:
        return {}
    q = quota.restore(list(values.values()), now, limits)
    given = set(q.returned) | (returned or set())
    quota.prunable(q, now)
    out: dict[str, Any] = {}
    for key, value in values.items():
        rows = value.get("grants", []) if isinstance(value, dict) else []
        kept = {str(r["ask_id"]): {k: v for k, v in r.items() if k != "batch"}
                for r in rows if isinstance(r, dict) and str(r.get("ask_id")) in q.grants
                and not r.get("returns")}
        for ask_id, row in kept.items():
            if ask_id in given:
                row["returned"] = True
        if kept:
            out[key] = kept
    return out


def _quota_live_all(s: Settings, values: dict[str, Any]) -> dict[str, Any]:
    from processors.limiter.limits import limits_from

    from .configops import current_view

    last = max((float(r.get("at", 0.0)) for v in values.values() if isinstance(v, dict)
                for r in v.get("grants", []) if isinstance(r, dict)), default=0.0)
    return _quota_comparable(values, last, limits_from(current_view(s), s))


def _same_value(_s: Settings, _key: str, value: Any) -> Any:
    return value


def tables() -> list[TableReplay]:
    sources = (ROUTING_DECIDED_MASS, HELD, RELEASED, COMMAND_RESULTS)
    return [
        TableReplay(T.LIMITER_HELD, sources, fold_held, _held_live,
                    "message_id -> held / released / cancelled", live_all=held_live_all),
        TableReplay(T.LIMITER_MASS, sources, fold_mass, _mass_live,
                    "mass mail taken in and still waiting"),
        TableReplay(T.LIMITER_QUOTA,
                    (CONFIG, QUOTA, QUOTA_ANSWERS, DELIVERY_QUOTA), fold_quota, _same_value,
                    "batch key -> the grants the quota counted in it (those still counting)",
                    live_all=_quota_live_all),
    ]

