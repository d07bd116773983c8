"""``core.changed`` is ``dataclasses.replace`` for the Ledger, and
``started`` / ``finished`` are the ledgers ``start`` / ``finish`` record
(what a replay keeps), for every kind of outcome."""

from __future__ import annotations

from dataclasses import replace

import pytest

from processors.delivery import core
from processors.delivery.core import Action

from .test_delivery_core import RETRY, T0, A, B, decision, ok, refused, routed


def test_changed_is_replace() -> None:
    ledger, _ = routed()
    for changes in ({}, {"server": "other"}, {"attempt": 3, "inflight": True, "pending": [A]}):
        got, want = core.changed(ledger, **changes), replace(ledger, **changes)
        assert got == want and list(got.__dict__) == list(want.__dict__)
        assert got is not ledger
    with pytest.raises(TypeError):
        core.changed(ledger, colour="red")
    with pytest.raises(AttributeError):  # still frozen
        core.changed(ledger).server = "x"  # type: ignore[misc]


@pytest.mark.parametrize("interrupted", [False, True])
def test_started_is_starts_ledger(interrupted: bool) -> None:
    ledger, _ = routed()
    action = Action("deliver", interrupted=interrupted)
    new, event = core.start(ledger, action, "w1")
    assert core.started(ledger, action, core.RUN) == new
    assert core.started(ledger, action) == replace(new, run="")  # a replay names no process
    assert event.attempt == new.attempt == 1 and event.recipients == [A, B]


@pytest.mark.parametrize("outcomes,now,error,moved", [
    ([ok(A), ok(B)], T0 + 1, "", False),
    ([ok(A), refused(B, 550, "5.1.1 no such user")], T0 + 1, "", False),
    ([refused(A, 451, "4.7.1 later")], T0 + 1, "", False),  # B: no answer, deferred
    ([], T0 + 1, "connection refused", True),  # moved to another server
    ([refused(A, 451, "4.7.1 later"), ok(B)], T0 + 7200, "", False),  # given up
])
def test_finished_is_finishs_ledger(outcomes: list, now: float, error: str,
                                    moved: bool) -> None:
    ledger, action = routed()
    ledger = core.started(ledger, action)
    nxt = decision(server="backup") if moved else None
    new, event = core.finish(ledger, outcomes, now=now, duration=0.5, settings=RETRY,
                             session_error=error, next_decision=nxt)
    assert core.finished(ledger, outcomes, now=now, settings=RETRY, session_error=error,
                         next_decision=nxt) == new
    assert event.next_attempt_at == new.next_at


def test_new_ledger_is_the_dataclass_made() -> None:
    from processors.delivery.core import Ledger

    from .test_delivery_core import decision

    d = decision()
    got = core.new_ledger(d, [A, B], T0)
    want = Ledger(message_id=d.message_id, decision=core.kept_decision(d),
                  server=d.server, pending=[A, B], first_at=T0)
    assert got == want and list(got.__dict__.items()) == list(want.__dict__.items())
    other = core.new_ledger(d, [A], T0)
    assert other.accepted is not got.accepted and other.failed is not got.failed
    with pytest.raises(AttributeError):
        got.server = "x"  # type: ignore[misc]
