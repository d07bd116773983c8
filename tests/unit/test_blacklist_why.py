"""The ``why`` a bounce's row stores, its ``counted`` and its weight are
``_not_counted``'s answer for every kind, attribution, outage, reason and
reset (before or after the bounce), in both folds (``evolve`` and
``fold_in_place``)."""

from __future__ import annotations

import itertools

import pytest

from processors.blacklist.core import (
    AddressState,
    Rules,
    _new_state,
    _not_counted,
    evolve,
    fold_in_place,
)
from schemas import BounceRecorded

from .test_blacklist_core import ADDR, DAY, T0

CASES = list(itertools.product(
    ("failed", "complaint"), ("", "not a recipient"), ("", "burst of 20"),
    ("unknown_user", "mailbox_full", "blocked", "network_error", "other"),
    (0.0, T0 - DAY, T0, T0 + DAY),  # no reset, before, at and after the bounce
))


@pytest.mark.parametrize(("kind", "unattributed", "outage", "reason", "reset_at"), CASES)
def test_the_stored_why_is_not_counteds(kind: str, unattributed: str, outage: str,
                                        reason: str, reset_at: float) -> None:
    ev = BounceRecorded(bounce_id="b-1", address=ADDR, bounced_at=T0, reason=reason,
                        hard=reason == "unknown_user", kind=kind, unattributed=unattributed,
                        outage=outage, message_id="m-1" if not unattributed else "m-2")
    before = _new_state(ADDR)
    before.reset_at = reset_at
    want = _not_counted(ev.__dict__, before)
    in_place = _new_state(ADDR)
    in_place.reset_at = reset_at
    in_place = fold_in_place(in_place, ev, Rules())
    copied = AddressState(address=ADDR, reset_at=reset_at)
    copied, _ = evolve(copied, ev, Rules())
    for st in (in_place, copied):
        (b,) = st.bounces
        assert b["why"] == want
        assert b["counted"] is (not want)
        assert b["weight"] == (0.0 if want else 1.0)
