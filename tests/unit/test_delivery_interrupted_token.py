"""An attempt interrupted by a restart, under a limit: the retry asks the
quota while the ledger is still in flight, and the grant delivers it as
interrupted (found by the replay e2e test: the grant was dropped as stale
and the mail stayed in flight in the ledger for good)."""

from __future__ import annotations

from processors.delivery import core, tokens
from schemas import QuotaGranted

from .test_limiter_delivery_tokens import LIMITS, T0, ledger


def test_interrupted_attempt_asks_and_the_grant_delivers_it_as_interrupted() -> None:
    running, _ = core.start(ledger(attempt=0, token=0), core.Action("deliver"), "w1")
    assert running.inflight and running.attempt == 1
    assert core.orphaned(running, running=False)  # w1 was killed: the timer signals it
    due = core.on_retry_due(running, running.attempt, T0)
    assert due.kind == "deliver" and due.interrupted
    assert tokens.needs_token(running, LIMITS)  # attempt 2 asks first
    asked = tokens.ask(running)
    assert asked.attempt == 2
    granted, action = tokens.on_answer(running, QuotaGranted(
        ask_id=asked.ask_id, message_id="m1", by="delivery", at=T0, attempt=2), T0)
    assert action.kind == "deliver" and action.interrupted
    assert granted is not None and granted.token == 2
    again, _ = core.start(granted, action, "w2")
    assert again.attempt == 2 and again.interrupted_attempts == 1
