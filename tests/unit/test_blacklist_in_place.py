"""``blacklist.core.fold_in_place`` (what replay folds with) gives, event
for event, the state ``evolve`` gives (what the agent folds with): random
orders, subsets and repeats of an address's events of every kind."""

from __future__ import annotations

import random

import pytest

from processors.blacklist.core import (
    AddressState,
    Rules,
    comparable,
    evolve,
    fold_in_place,
    suppressions,
)
from schemas import (
    BlacklistEdited,
    BounceDiscounted,
    ComplaintReceived,
    Event,
    MailReceivedFrom,
    SuppressionEdited,
    UnsubscribeRequested,
)

from .test_blacklist_core import ADDR, DAY, T0, bounce


def pool() -> list[Event]:
    return [
        *[bounce(d, n) for d, n in ((0, 0), (1, 0), (3, 1), (9, 0), (200, 0))],
        bounce(2, reason="mailbox_full", hard=False), bounce(4, reason="blocked"),
        bounce(5, outage="burst of 20"),
        BounceDiscounted(address=ADDR, bounce_id=f"b{1}-0-{ADDR}", outage="burst of 20"),
        MailReceivedFrom(address=ADDR, received_at=T0 + 2 * DAY, source="reply"),
        BlacklistEdited(address=ADDR, action="add", reason="asked us", by="ops"),
        BlacklistEdited(address=ADDR, action="remove", by="ops"),
        ComplaintReceived(complaint_id="c-1", address=ADDR, complained_at=T0, tenant="acme"),
        UnsubscribeRequested(address=ADDR.upper(), tenant="acme", list_id="news", via="http",
                             requested_at=T0, token_id="t-1"),
        SuppressionEdited(address=ADDR, action="add", tenant="acme", reason="asked", by="ops",
                          occurred_at=T0),
        SuppressionEdited(address=ADDR, action="remove", suppression_type="complaint",
                          occurred_at=T0 + 1),
        SuppressionEdited(address=ADDR, action="remove", suppression_type="hard_bounce"),
    ]


@pytest.mark.parametrize("seed", range(150))
def test_in_place_equals_evolve(seed: int) -> None:
    rnd = random.Random(seed)
    events = pool()
    chosen = rnd.sample(events, rnd.randint(1, len(events)))
    chosen += rnd.sample(chosen, min(3, len(chosen)))  # some redelivered
    rules = Rules(threshold=rnd.choice([5.0, 2.0]), weight_hard=rnd.choice([1.0, 5.0]))
    live: AddressState | None = None
    replayed: AddressState | None = None
    for ev in chosen:
        live, _change = evolve(live, ev, rules)
        replayed = fold_in_place(replayed, ev, rules)
        assert replayed.to_dict() == live.to_dict(), (seed, type(ev).__name__)
        # what the replay compares: the suppression keys as suppressions() lists them
        assert comparable(replayed, rules)["suppressions"] == [
            (e["type"], e["tenant"], e["list_id"]) for e in suppressions(replayed)]
        # what _step's counted bounces rely on: kept sorted, inside the window
        assert replayed.bounces == sorted(replayed.bounces, key=lambda b: b["at"])
        assert [b for b in replayed.bounces if b["counted"]] == replayed.counted(rules)


@pytest.mark.parametrize("seed", range(50))
def test_rule_holds_is_rule_mets_answer(seed: int) -> None:
    from processors.blacklist.core import rule_holds, rule_met

    rnd = random.Random(seed)
    for _ in range(40):
        counted = sorted(({"bounce_id": f"b{i}", "at": T0 + rnd.uniform(0, 20) * DAY,
                           "weight": rnd.choice([0.5, 1.0, 2.0, 5.0]), "reason": "unknown_user",
                           "hard": True, "status": "5.1.1", "diagnostic": "no"}
                          for i in range(rnd.randint(0, 7))), key=lambda b: b["at"])
        rules = Rules(threshold=rnd.choice([2.0, 5.0, 6.0]),
                      min_spread=rnd.choice([0.0, 7 * DAY, 30 * DAY]))
        assert rule_holds(counted, rules) == rule_met(counted, rules)[0]


@pytest.mark.parametrize("seed", range(50))
def test_counted_rule_holds_is_rule_holds_of_the_counted(seed: int) -> None:
    """``counted_rule_holds`` (one pass over an address's bounces, counted
    or not) answers as ``rule_holds`` of the counted ones."""
    from processors.blacklist.core import counted_rule_holds, rule_holds

    rnd = random.Random(seed)
    for _ in range(40):
        bounces = sorted(({"bounce_id": f"b{i}",  # equal times and spreads too
                           "at": T0 + rnd.choice([0.0, 0.0, 7.0, 7.0, 30.0, rnd.uniform(0, 40)])
                           * DAY,
                           "weight": rnd.choice([0.0, 0.5, 1.0, 2.0, 5.0]),
                           "counted": rnd.random() < 0.7}
                          for i in range(rnd.randint(0, 8))), key=lambda b: b["at"])
        rules = Rules(threshold=rnd.choice([2.0, 5.0, 6.0]),
                      min_spread=rnd.choice([0.0, 7 * DAY, 30 * DAY]))
        counted = [b for b in bounces if b["counted"]]
        assert counted_rule_holds(bounces, rules) == rule_holds(counted, rules)
