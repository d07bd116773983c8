"""The SMTP trouble policy (processors/delivery/policy.py): every rule that
decides defer, fail or fail over, and the error root its errors share."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from processors.delivery import core, policy
from processors.delivery.diagnose import KINDS, Facts
from processors.delivery.errors import SmtpSessionError, session_error
from schemas.errors import PostlaneError
from tests.unit.test_delivery_core import RETRY, T0, decision

A = "a@dest.test"


@pytest.mark.parametrize(("code", "stage", "status"), [
    (550, "rcpt", "failed"), (553, "mail", "failed"), (554, "data", "failed"),
    (552, "rcpt", "deferred"),  # RFC 5321 4.5.3.1.10: "too many recipients"
    (552, "data", "failed"),  # ... only at RCPT
    (450, "rcpt", "deferred"), (421, "mail", "deferred"), (0, "data", "deferred"),
    (250, "rcpt", "deferred"), (354, "data", "deferred"),  # a refusal is never "accepted"
])
def test_a_refusal_as_a_recipient_status(code: int, stage: str, status: str) -> None:
    assert policy.recipient_status(code, stage) == status


@pytest.mark.parametrize(("kind", "code", "needs"), [
    ("auth_failed", 535, True), ("certificate", 0, True), ("refused", 0, True),
    ("no_password", 0, True), ("tls_unexpected", 0, True),
    ("timeout", 0, False), ("disconnected", 0, False), ("deadline", 0, False),
    ("greeting_refused", 554, True), ("greeting_refused", 421, False),
])
def test_which_session_failures_need_an_operator(kind: str, code: int, needs: bool) -> None:
    assert policy.needs_operator(kind, code) is needs


def test_operator_kinds_are_diagnosed_kinds() -> None:
    assert policy.OPERATOR_KINDS <= set(KINDS)
    assert policy.TIMEOUT_KINDS <= set(KINDS)


@pytest.mark.parametrize(("kind", "code", "text", "said"), [
    ("auth_failed", 535, "5.7.8 bad credentials", (0, "4.7.8")),  # waits: never 5.x.x
    ("greeting_refused", 421, "4.3.2 busy", (421, "4.3.2")),
    ("timeout", 0, "", (0, "4.4.1")), ("no_greeting", 0, "", (0, "4.4.1")),
    ("refused", 0, "", (0, "4.4.2")), ("disconnected", 0, "", (0, "4.4.2")),
])
def test_a_session_failure_defers_with_a_temporary_code(
        kind: str, code: int, text: str, said: tuple[int, str]) -> None:
    assert policy.session_deferral(kind, code, text) == said


def test_only_a_session_failure_or_a_server_gone_fails_over() -> None:
    assert policy.fails_over("session") and policy.fails_over("server_gone")
    assert not policy.fails_over("local")


@dataclass(frozen=True)
class Gives:
    deferred: bool
    attempt: int
    now: float
    next_server: str
    step: policy.Next


@pytest.mark.parametrize("case", [
    Gives(False, 1, T0 + 5, "", policy.Next("done", 0.0, "primary")),
    Gives(True, 1, T0 + 5, "backup", policy.Next("move", T0 + 5, "backup")),
    Gives(True, 1, T0 + 5, "primary", policy.Next("retry", T0 + 65, "primary")),
    Gives(True, 3, T0 + 100, "", policy.Next("retry", T0 + 340, "primary")),
    Gives(True, 9, T0 + 100, "", policy.Next("retry", T0 + 700, "primary")),  # capped
    Gives(True, 4, T0 + 3601, "", policy.Next("give_up", 0.0, "primary")),
    Gives(True, 4, T0 + 3601, "backup", policy.Next("move", T0 + 3601, "backup")),
], ids=lambda c: c.step.kind)
def test_after_an_attempt(case: Gives) -> None:
    step = policy.after_attempt(deferred=case.deferred, attempt=case.attempt, first_at=T0,
                                now=case.now, settings=RETRY, server="primary",
                                next_server=case.next_server)
    assert step == case.step


@pytest.mark.parametrize("next_server", ["", "backup"])
@pytest.mark.parametrize("now", [T0 + 5, T0 + 3601])
def test_the_delivery_core_folds_an_attempt_as_the_policy_says(
        next_server: str, now: float) -> None:
    """core.finish and policy.after_attempt agree (a deferral, a move, the
    give-up), until core.finish calls the policy itself."""
    ledger, action = core.on_routed(None, decision(to=(A,)), [A], T0)
    assert ledger is not None
    ledger, _ = core.start(ledger, action, "w1")
    nxt = decision(server=next_server, to=(A,)) if next_server else None
    new, event = core.finish(ledger, [], now=now, duration=0.1, settings=RETRY,
                             session_error="lost", next_decision=nxt)
    step = policy.after_attempt(deferred=True, attempt=ledger.attempt, first_at=ledger.first_at,
                                now=now, settings=RETRY, server=ledger.server,
                                next_server=next_server)
    assert new.server == step.server and new.next_at == step.at
    assert new.done == (step.kind == "give_up")
    if step.kind == "give_up":
        assert event.outcomes[0]["status"] == "failed"
        assert policy.gave_up(ledger.attempt) in event.outcomes[0]["text"]


def test_a_session_error_is_a_postlane_error_with_its_facts() -> None:
    exc = session_error("auth_failed", Facts(server="primary", host="smtp.example", port=587,
                                             code=535, text="5.7.8 no"))
    assert isinstance(exc, PostlaneError) and isinstance(exc, SmtpSessionError)
    assert (exc.processor, exc.server, exc.code) == ("delivery", "primary", 535)
    assert exc.details() == {"processor": "delivery", "server": "primary", "code": 535}
    assert exc.needs_operator
    deferred = exc.deferred([A, A.upper()])
    assert [(r.recipient, r.status, r.code, r.enhanced) for r in deferred] == [
        (A, "deferred", 0, "4.7.8")]
