"""Delivery's tokens (processors/delivery/tokens.py): every SMTP transaction
after the first asks the quota, on the server that will take it."""

from __future__ import annotations

from dataclasses import replace

from processors.delivery import core, tokens
from processors.limiter.core import Limits, ServerLimits
from schemas import QuotaGranted, QuotaRefused

T0 = 1_800_000_000.0
LIMITS = Limits(servers={"backup": ServerLimits(daily=5)}, tenants={"acme": 9})


def ledger(**kw: object) -> core.Ledger:
    decision = {"message_id": "m1", "outcome": "routed", "server": "primary",
                "request": {"message_id": "m1", "to": ["a@x.test"], "tenant": "acme"}}
    base = core.Ledger(message_id="m1", decision=decision, server="primary",
                       pending=["a@x.test"], attempt=1, next_at=T0)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_the_first_attempt_has_its_token_from_the_release_later_ones_ask() -> None:
    assert not tokens.needs_token(ledger(attempt=0), LIMITS)
    assert tokens.needs_token(ledger(), LIMITS)  # the tenant's limit applies
    failover = ledger(server="backup", decision={"server": "backup", "request": {}})
    assert tokens.needs_token(failover, LIMITS)
    assert tokens.ask(failover).server == "backup"  # counted where it goes
    assert tokens.ask(failover).ask_id == "m1:attempt:2"
    assert not tokens.needs_token(ledger(decision={"request": {}}), LIMITS)  # no limit


def test_granted_now_delivers_once_granted_later_waits_for_the_slot() -> None:
    now = tokens.on_answer(ledger(), QuotaGranted(ask_id="m1:attempt:2", message_id="m1",
                                                  by="delivery", at=T0, attempt=2), T0)
    granted, action = now
    assert action.kind == "deliver" and granted is not None and granted.token == 2
    assert not tokens.needs_token(granted, LIMITS)
    started, _ = core.start(granted, action, "w")
    again = tokens.on_answer(started, QuotaGranted(ask_id="m1:attempt:2", message_id="m1",
                                                   by="delivery", at=T0, attempt=2), T0)
    assert again == (started, again[1]) and again[1].kind == "skip"  # repeated: nothing
    later, action = tokens.on_answer(ledger(), QuotaGranted(
        ask_id="m1:attempt:2", message_id="m1", by="delivery", at=T0 + 5, attempt=2), T0)
    assert action.kind == "skip" and later is not None and later.next_at == T0 + 5
    assert core.on_retry_due(later, 1, T0 + 5).kind == "deliver"
    assert not tokens.needs_token(later, LIMITS)


def test_refused_waits_until_the_next_window_and_asks_again_then() -> None:
    new, action = tokens.on_answer(ledger(), QuotaRefused(
        ask_id="m1:attempt:2", message_id="m1", by="delivery", why="daily_limit",
        reason="deferred: ...", until=T0 + 3600, attempt=2), T0)
    assert action.kind == "skip" and new is not None and new.next_at == T0 + 3600
    assert core.on_retry_due(new, 1, T0 + 10).kind == "skip"
    assert core.on_retry_due(new, 1, T0 + 3600).kind == "deliver"
    assert tokens.needs_token(new, LIMITS)
