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

- ``limiter-quota`` (batch key -> the grants the quota counted in one
  batch): each granted ask of the ``quota`` topic decided again with
  ``processors.limiter.quota.decide`` at the moment the quota decided it,
  under the limits of the config as of then, in the quota's order (by that
  moment, then the ask's offset), and recorded with ``quota.record`` under
  the batch key. The answers (QuotasAnswered items on ``quota-answers``,
  QuotaGranted on ``delivery-quota``) say which asks were granted, in which
  batch and when (``batch``, ``decided_at``); refusals change no count and
  are not recorded, so they are not needed. A grant whose answer does not
  say (written before they did) cannot be replayed and is counted as
  skipped. Rows the quota prunes are compared only while they still count:
  both sides leave out the grants ``quota.prunable`` drops as of the last
  decision. Give-backs (``QuotaAsked.give_back``: a cancelled mail's grant
  stops counting against the daily limits) are folded with
  ``quota.give_back`` in the same order; the quota answers none, so the
  moment of one is its batch's (known from the grants around it) or else
  its own record's time, and its row is compared without its moment and
  batch (under ``GIVEN_BACK``).

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
    return {"state": value.get("state")} if isinstance(value, dict) else value


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
    gives: list[tuple[int, int, int, quota.Ask]] = []  # give-back asks (ts, off, i, ask)
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
                    # a give-back names the ask it returns (not an ask again)
                    (gives if ask.give_back else asks.setdefault(ask.ask_id, [])).append(
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
    todo: list[tuple[float, int, int, str, quota.Ask]] = []
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
    todo.extend(_give_back_moments(todo, gives))
    todo.sort(key=lambda t: (t[0], t[1], t[2]))
    config.sort(key=lambda c: c[0])
    view, c = ConfigView(), 0
    q = quota.Quota()
    batches: dict[str, list[dict[str, Any]]] = {}
    last = 0.0
    for at, _off, _i, batch, ask in todo:
        while c < len(config) and config[c][0] <= at * 1000.0:
            view = evolve(view, config[c][1])
            c += 1
        if ask.give_back:  # recorded as the agent does (not answered, not a grant)
            returned = quota.give_back(q, ask, at, limits_from(view, s))
            if returned is not None:
                batches.setdefault(batch or f"{at:.6f}:{returned['ask_id']}", []).append(
                    returned)
            continue
        answer, row = quota.decide(q, ask, at, limits_from(view, s))
        if row is None:
            out.skipped += 1  # refused now: the limits of that moment are not the config's
            continue
        out.folded += 1
        batches.setdefault(batch, []).append(row)
        last = max(last, at)
    values = {key: quota.record(q, key, rows) for key, rows in batches.items()}
    out.rows = _quota_comparable(values, last, limits_from(view, s))
    return out


def _give_back_moments(
    todo: list[tuple[float, int, int, str, Any]], gives: list[tuple[int, int, int, Any]],
) -> list[tuple[float, int, int, str, Any]]:
    """When and in which batch the quota recorded each give-back (it
    answers none). The quota takes consecutive asks of its one partition
    per batch: a give-back between two asks granted in the same batch was
    in that batch (its moment and key are the grants'); otherwise its own
    record's time stands for the moment (the quota decided it a few ms
    later) and the batch is left to be named by its row."""
    import bisect

    granted = sorted((off, i, at, batch) for at, off, i, batch, _ask in todo)
    out: list[tuple[float, int, int, str, Any]] = []
    for ts, off, i, ask in gives:
        k = bisect.bisect_left(granted, (off, i))
        before = granted[k - 1] if k > 0 else None
        after = granted[k] if k < len(granted) else None
        if before is not None and after is not None and before[3] == after[3]:
            out.append((before[2], off, i, before[3], ask))
        else:
            at = max(ts / 1000.0, before[2] if before is not None else 0.0)
            out.append((at, off, i, "", ask))
    return out


GIVEN_BACK = "(given back)"  # the comparable key of the give-back rows


def _quota_comparable(values: dict[str, Any], now: float, limits: Any) -> dict[str, Any]:
    """Batch key -> its grants that still count at ``now`` (ask_id -> the
    row without its batch), batches with none left out: what the quota keeps
    whenever it pruned. Give-back rows (``returns``) are under
    ``GIVEN_BACK`` without their moment and batch: the quota answers no
    give-back, so the log does not say exactly when it recorded one, only
    which grant it returned (``now`` is the last grant's moment)."""
    from processors.limiter import quota

    if not values:
        return {}
    q = quota.restore(list(values.values()), now, limits)
    quota.prunable(q, now)
    out: dict[str, Any] = {}
    returns: dict[str, Any] = {}
    for key, value in values.items():
        rows = value.get("grants", []) if isinstance(value, dict) else []
        kept: dict[str, Any] = {}
        for r in rows:
            if not isinstance(r, dict) or str(r.get("ask_id")) not in q.grants:
                continue
            if r.get("returns"):
                returns[str(r["ask_id"])] = {k: v for k, v in r.items()
                                             if k not in ("batch", "at")}
            else:
                kept[str(r["ask_id"])] = {k: v for k, v in r.items() if k != "batch"}
        if kept:
            out[key] = kept
    if returns:
        out[GIVEN_BACK] = returns
    return out


def _quota_live_all(s: Settings, values: dict[str, Any]) -> dict[str, Any]:
    from processors.limiter.limits import limits_from

    from .configops import current_view

    last = max((float(r.get("at", 0.0)) for v in values.values() if isinstance(v, dict)
                for r in v.get("grants", []) if isinstance(r, dict) and not r.get("returns")),
               default=0.0)
    return _quota_comparable(values, last, limits_from(current_view(s), s))


def _same_value(_s: Settings, _key: str, value: Any) -> Any:
    return value


def tables() -> list[TableReplay]:
    sources = (ROUTING_DECIDED_MASS, HELD, RELEASED, COMMAND_RESULTS)
    return [
        TableReplay(T.LIMITER_HELD, sources, fold_held, _held_live,
                    "message_id -> held / released / cancelled"),
        TableReplay(T.LIMITER_MASS, sources, fold_mass, _mass_live,
                    "mass mail taken in and still waiting"),
        TableReplay(T.LIMITER_QUOTA,
                    (CONFIG, QUOTA, QUOTA_ANSWERS, DELIVERY_QUOTA), fold_quota, _same_value,
                    "batch key -> the grants the quota counted in it (those still counting)",
                    live_all=_quota_live_all),
    ]

