"""``replay blacklist`` folds the bounces grouped by key (each address's
records in their order, one address after the other): the same rows and
the same counts as folding them in the log's order, with malformed
records, records keyed by another address, redeliveries and every kind of
event of the topic interleaved."""

from __future__ import annotations

import random

import pytest

from postlane import blacklistops, replayops
from postlane.logread import Rec
from processors.blacklist.core import Rules, comparable
from schemas import (
    BlacklistEdited,
    BounceDiscounted,
    BounceRecorded,
    ComplaintReceived,
    MailReceivedFrom,
    encode,
)
from streams.settings import Settings

S = Settings.from_env(environ={}, topic_prefix="t.", app_prefix="t")
DAY = 86400.0
T0 = 1_790_000_000.0
REASONS = ("unknown_user", "mailbox_full", "blocked", "expired", "other")


def _records(seed: int) -> list[Rec]:
    rnd = random.Random(seed)
    addresses = [f"user{i}@dest{i % 3}.test" for i in range(6)]
    out: list[Rec] = []
    for k in range(300):
        addr = rnd.choice(addresses)
        at = T0 + rnd.choice([0, 1, 2, 9, 20, 40]) * DAY + rnd.random()
        roll = rnd.random()
        ev: object
        if roll < 0.7:
            reason = rnd.choice(REASONS)
            ev = BounceRecorded(bounce_id=f"b{k % 120}-{addr}", address=addr, bounced_at=at,
                                reason=reason, hard=reason == "unknown_user", status="5.1.1",
                                diagnostic="550 5.1.1 user unknown", occurred_at=at)
        elif roll < 0.78:
            ev = BounceDiscounted(address=addr, bounce_id=f"b{rnd.randrange(120)}-{addr}",
                                  outage="burst", occurred_at=at)
        elif roll < 0.84:
            ev = MailReceivedFrom(address=addr, received_at=at, occurred_at=at)
        elif roll < 0.9:
            ev = BlacklistEdited(address=addr, action=rnd.choice(["add", "remove"]),
                                 occurred_at=at)
        else:
            ev = ComplaintReceived(complaint_id=f"c{k}", address=addr, complained_at=at,
                                   tenant="acme", occurred_at=at)
        value = encode(ev)  # type: ignore[arg-type]
        key = addr.encode()
        if rnd.random() < 0.05:
            value = b"{not json"
        elif rnd.random() < 0.05:
            key = rnd.choice(addresses).encode()  # keyed by another address
        out.append(Rec("t.bounces", 0, k, int(at * 1000), key, value))
        if rnd.random() < 0.1:
            out.append(out[-1])  # redelivered
    return out


@pytest.mark.parametrize("seed", range(30))
def test_grouped_by_key_folds_as_the_log_order(seed: int) -> None:
    recs = _records(seed)
    rules = Rules.from_settings(S)
    assert replayops.by_key(recs) != recs  # interleaved: grouping moved records
    in_log_order = blacklistops.fold_records(iter(recs), rules)  # type: ignore[arg-type]
    grouped = replayops.fold_blacklist(S, recs)
    assert grouped.rows == {a: comparable(st, rules) for a, st in in_log_order.states.items()}
    assert grouped.skipped == in_log_order.skipped > 0
    assert grouped.folded == in_log_order.records - in_log_order.skipped
    # and the states themselves, field by field
    again = blacklistops.fold_records(iter(replayops.by_key(recs)), rules)  # type: ignore[arg-type]
    assert {a: st.to_dict() for a, st in again.states.items()} == {
        a: st.to_dict() for a, st in in_log_order.states.items()}


def test_by_key_keeps_each_keys_order() -> None:
    recs = [Rec("t", 0, i, i, key, b"") for i, key in enumerate([b"a", b"b", b"a", None, b"b"])]
    assert [r.offset for r in replayops.by_key(recs)] == [0, 2, 1, 4, 3]
    assert replayops.by_key(recs[:2]) == recs[:2]
