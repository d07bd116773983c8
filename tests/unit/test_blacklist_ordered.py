"""The blacklist's bounce list kept sorted by inserting each bounce in its
place (no re-sort per bounce), and ``rule_met`` / ``_when`` written without
Counter and with the minute's text remembered: each against the way it was
done before, kept here as the reference (bounces out of order, of equal
times, older than the window, more than ``MAX_KEPT``)."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from processors.blacklist.core import (
    MAX_KEPT,
    AddressState,
    Rules,
    _when,
    comparable,
    evolve,
    fold_in_place,
    rule_met,
)
from schemas import BounceRecorded, MailReceivedFrom

from .test_blacklist_core import ADDR, DAY, T0

REASONS = ("unknown_user", "mailbox_full", "blocked", "expired", "host_unknown", "other")


def _old_when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _old_answer(b: dict[str, Any]) -> str:
    status, text = str(b.get("status") or ""), str(b.get("diagnostic") or "")
    return text if status and status in text else " ".join(x for x in (status, text) if x)


def _old_days(seconds: float) -> str:
    return f"{seconds / DAY:.1f}".rstrip("0").rstrip(".")


def old_rule_met(counted: list[dict[str, Any]], rules: Rules) -> tuple[bool, str]:
    """``rule_met`` as it was (Counter, sum, the decisive list)."""
    if not counted:
        return False, "no counted bounce"
    total = sum(float(b["weight"]) for b in counted)
    decisive = [b for b in counted if float(b["weight"]) >= rules.threshold]
    reasons = Counter(str(b["reason"]).replace("_", " ") for b in counted)
    what = ", ".join(f"{r} x{n}" if n > 1 else r for r, n in reasons.most_common())
    last = counted[-1]
    answer = _old_answer(last)[:160]
    if decisive:
        b = decisive[-1]
        return True, (
            f"one {'hard' if b['hard'] else 'soft'} {str(b['reason']).replace('_', ' ')} bounce "
            f"weighs {float(b['weight']):g} (threshold {rules.threshold:g}) on "
            f"{_old_when(b['at'])}: {answer}"
        )
    spread = counted[-1]["at"] - counted[0]["at"]
    n = len(counted)
    head = (f"{n} counted bounce{'s' if n != 1 else ''} (weight {total:g}) between "
            f"{_old_when(counted[0]['at'])} and {_old_when(counted[-1]['at'])}, "
            f"{_old_days(spread)} days apart, within {_old_days(rules.window)} days: {what}")
    if total < rules.threshold:
        return False, f"{head}; {rules.threshold:g} needed"
    if spread <= rules.min_spread:
        return False, (f"{head}; not blacklisted yet: they must be more than "
                       f"{_old_days(rules.min_spread)} days apart (an outage lasts days, a dead "
                       "address stays)")
    return True, f"{head}; last: {answer}"


def _at(b: dict[str, Any]) -> float:
    return float(b["at"])


@pytest.mark.parametrize("seed", range(60))
def test_rule_met_says_what_it_said(seed: int) -> None:
    rnd = random.Random(seed)
    for _ in range(30):
        counted: list[dict[str, Any]] = [
            {"bounce_id": f"b{i}", "at": T0 + rnd.choice([0, 1, 3.5, 9, 20]) * DAY
             + rnd.random() * 100, "weight": rnd.choice([0.5, 1.0, 2.0, 5.0]),
             "reason": rnd.choice(REASONS), "hard": rnd.random() < 0.5,
             "status": rnd.choice(["5.1.1", "", "4.2.2"]),
             "diagnostic": rnd.choice(["550 5.1.1 no such user", "full", ""])}
            for i in range(rnd.randint(0, 9))]
        counted.sort(key=_at)
        rules = Rules(threshold=rnd.choice([2.0, 5.0, 6.0]),
                      min_spread=rnd.choice([0.0, 7 * DAY, 30 * DAY]))
        assert rule_met(counted, rules) == old_rule_met(counted, rules)


def test_when_is_strftime() -> None:
    rnd = random.Random(1)
    times = [0.0, 59.999, 60.0, 86399.5, T0, T0 + 0.999999, 253402300799.9, 253402300800.0,
             -0.5, -61.0, 1e11]
    times += [rnd.uniform(0, 4e9) for _ in range(2000)]
    times += [float(rnd.randrange(0, 4_000_000_000 // 60) * 60) + d
              for d in (-1e-6, 0.0, 1e-6) for _ in range(300)]
    for ts in times:
        assert _when(ts) == _old_when(ts), ts
    assert _when(int(T0) + 61) == _old_when(int(T0) + 61)


def _bounce(k: int, at: float, reason: str) -> BounceRecorded:
    return BounceRecorded(bounce_id=f"b{k}", address=ADDR, bounced_at=at, reason=reason,
                          hard=reason == "unknown_user", status="5.1.1",
                          diagnostic="550 5.1.1 user unknown", message_id=f"m{k}",
                          server="mx.example.net")


@pytest.mark.parametrize("seed", range(40))
def test_bounces_out_of_order_are_kept_as_a_sort_would(seed: int) -> None:
    """Out of order, equal times, redelivered, older than the window, more
    than MAX_KEPT: after every bounce the list is what appending it and
    sorting (stably) the ones inside the window gave, and the blacklisting
    is the rule's on them."""
    rnd = random.Random(seed)
    rules = Rules(threshold=rnd.choice([5.0, 20.0, 200.0]), window=rnd.choice([91, 10]) * DAY,
                  min_spread=7 * DAY)
    n = rnd.choice([12, 60, 260])
    days = [rnd.choice([0, 1, 2, 2, 5, 30, 100, 120]) + rnd.choice([0.0, 0.0, 0.25])
            for _ in range(n)]
    events: list[Any] = [_bounce(k, T0 + d * DAY, rnd.choice(REASONS)) for k, d in enumerate(days)]
    events += rnd.sample(events, 5)  # redelivered
    rnd.shuffle(events)
    if rnd.random() < 0.3:
        events.insert(len(events) // 2, MailReceivedFrom(address=ADDR, received_at=T0 + 3 * DAY))
    st: AddressState | None = None
    live: AddressState | None = None
    ref: list[tuple[str, float]] = []  # (bounce_id, at), kept as the sort did
    last_at = 0.0
    seen: set[str] = set()
    for ev in events:
        st = fold_in_place(st, ev, rules)
        live, _ = evolve(live, ev, rules)
        assert live.to_dict() == st.to_dict()
        if isinstance(ev, BounceRecorded) and ev.bounce_id not in seen:
            seen.add(ev.bounce_id)
            last_at = max(last_at, ev.bounced_at)
            edge = last_at - rules.window
            ref.append((ev.bounce_id, ev.bounced_at))
            ref = sorted([r for r in ref if r[1] > edge], key=lambda r: r[1])[-MAX_KEPT:]
        assert [(b["bounce_id"], b["at"]) for b in st.bounces] == ref
        counted = st.counted(rules)
        assert comparable(st, rules)["counted"] == sorted(b["bounce_id"] for b in counted)
    assert st is not None and len(st.bounces) <= MAX_KEPT


def test_a_row_read_unsorted_is_sorted() -> None:
    """A table row whose bounces are not in time order (none written by
    this code) is read sorted, stably, so the next bounce lands where the
    old re-sort put it."""
    rules = Rules()
    st = fold_in_place(None, _bounce(1, T0 + 5 * DAY, "mailbox_full"), rules)
    st = fold_in_place(st, _bounce(2, T0 + 2 * DAY, "mailbox_full"), rules)
    st = fold_in_place(st, _bounce(3, T0 + 2 * DAY, "mailbox_full"), rules)
    row = st.to_dict()
    row["bounces"].reverse()
    back = AddressState.from_dict(row)
    assert [b["bounce_id"] for b in back.bounces] == ["b3", "b2", "b1"]
    after, _ = evolve(back, _bounce(4, T0 + 2 * DAY, "mailbox_full"), rules)
    assert [b["bounce_id"] for b in after.bounces] == ["b3", "b2", "b4", "b1"]


def test_a_bounces_fields_are_its_dict_however_it_was_made() -> None:
    """``_step`` reads a bounce's fields from its ``__dict__``: every way a
    BounceRecorded is made has every field there, as the attribute reads."""
    from processors.blacklist.core import _fields
    from schemas import decode, decode_any, encode
    from schemas.base import _shape, decode_any_owned

    assert _shape(BounceRecorded).fast  # plain fields: no lazy coercion in the descriptor
    kw: dict[str, Any] = {"bounce_id": "x", "address": ADDR, "bounced_at": T0,
                          "reason": "blocked", "hard": False}
    made = BounceRecorded(**kw)
    faust = BounceRecorded.__new__(BounceRecorded)
    BounceRecorded._faust_init(faust, **kw)  # type: ignore[attr-defined]
    registry: dict[str, Any] = {"BounceRecorded": BounceRecorded}
    raw = encode(made)
    for ev in (made, faust, BounceRecorded.from_data(dict(kw)), made.derive(reason="other"),
               decode(BounceRecorded, raw), decode_any(registry, raw),
               decode_any_owned(registry, raw), decode(BounceRecorded, dict(kw))):
        values = _fields(ev)
        for name in BounceRecorded._options.fields:
            assert values[name] is getattr(ev, name) or values[name] == getattr(ev, name)


def test_a_new_state_is_the_dataclasss() -> None:
    from processors.blacklist.core import _new_state

    made, fast = AddressState(address=ADDR), _new_state(ADDR)
    assert list(fast.__dict__.items()) == list(made.__dict__.items()) and fast == made
    other = _new_state(ADDR)
    assert other.bounces is not fast.bounces and other.seen is not fast.seen
    assert other.scoped is not fast.scoped
