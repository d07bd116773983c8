"""Operators' commands on the delivery ledger (``core.on_command``), pure:
retry, send-now and cancel against each state a ledger can be in, the
words of every refusal, the answers' derived ids, and "once" (a redelivered
command does nothing)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from processors.delivery import core
from processors.delivery.core import Action, Ledger
from schemas import (
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    RoutingDecided,
    SendRequested,
    decode,
    encode,
)

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
A, B = "a@dest.test", "b@dest.test"
MID = "m-1"


@dataclass(frozen=True)
class Retry:
    retry_first: float = 60.0
    retry_max: float = 600.0
    retry_give_up: float = 3600.0


RETRY = Retry()


def decision() -> RoutingDecided:
    req = SendRequested(message_id=MID, from_="app@example.com", to=[A, B], subject="s",
                        text="t", occurred_at=T0)
    return RoutingDecided(message_id=MID, outcome="routed", server="primary",
                          header_from="app@example.com", envelope_from=f"bounce+{MID}@x.test",
                          rule="from_filter_domain", request=req.to_representation())


def ok(rcpt: str) -> dict[str, object]:
    return {"recipient": rcpt, "status": "accepted", "code": 250, "enhanced": "2.0.0",
            "text": "OK"}


def no(rcpt: str, code: int) -> dict[str, object]:
    return {"recipient": rcpt, "status": "failed" if code >= 500 else "deferred",
            "code": code, "enhanced": f"{code // 100}.1.1", "text": "nope"}


def command(what: str, cid: str = "c-1", operator: str = "ann@ops", note: str = "",
            mid: str = MID) -> QueueCommandIssued:
    return QueueCommandIssued(message_id=mid, command=what, operator=operator, note=note,
                              event_id=cid, occurred_at=T0)


# --- ledgers in each state --------------------------------------------------------------------


def inflight() -> Ledger:
    ledger, action = core.on_routed(None, decision(), [A, B], T0)
    assert ledger is not None
    ledger, _ = core.start(ledger, action, "w")
    return ledger


def finished(*outcomes: dict[str, object], now: float = T0 + 1) -> Ledger:
    ledger, _ = core.finish(inflight(), list(outcomes), now=now, duration=0.1, settings=RETRY)
    return ledger


def sent() -> Ledger:
    return finished(ok(A), ok(B))


def failed() -> Ledger:
    return finished(no(A, 550), no(B, 550))


def half_failed() -> Ledger:
    return finished(ok(A), no(B, 550))


def deferred() -> Ledger:
    return finished(ok(A), no(B, 451))  # next attempt at T0 + 61


def cancelled() -> Ledger:
    ledger, _, _ = core.on_command(deferred(), command("cancel", "c-0"), T0 + 2)
    assert ledger is not None and ledger.cancelled
    return ledger


NOW = T0 + 10  # when the commands arrive (the deferred mail waits until T0 + 61)


def run(ledger: Ledger | None, what: str, cid: str = "c-1", now: float = NOW,
        **kw: str) -> tuple[Ledger | None, Action, list[object]]:
    new, action, events = core.on_command(ledger, command(what, cid, **kw), now)
    return new, action, list(events)


def refusal(events: list[object]) -> str:
    assert len(events) == 1 and isinstance(events[0], QueueCommandRefused), events
    return events[0].reason


def applied(events: list[object]) -> QueueCommandApplied:
    assert isinstance(events[0], QueueCommandApplied), events
    return events[0]


# --- retry ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [failed, half_failed])
def test_retry_of_a_failed_mail_puts_its_failed_recipients_back_and_delivers_now(
    make: Callable[[], Ledger],
) -> None:
    before = make()
    new, action, events = run(before, "retry")
    assert action.kind == "deliver" and not action.interrupted
    assert new is not None
    failed_rcpts = list(before.failed)
    assert new.pending == failed_rcpts and new.failed == {}
    assert new.accepted == before.accepted  # never sent again to who has it
    assert not new.done and not new.inflight and not new.cancelled
    assert new.first_at == NOW  # the back-off / give-up clock restarts
    assert new.next_at == NOW  # due: even written without start, the timer starts it
    assert new.commands == ["c-1"]
    answer = applied(events)
    assert len(events) == 1
    assert (answer.message_id, answer.command_id, answer.command, answer.by) == (
        MID, "c-1", "retry", "delivery")
    assert answer.event_id == core.result_id("c-1") and answer.occurred_at == NOW
    assert f"retrying {len(failed_rcpts)} failed recipient" in answer.detail
    assert "attempt 2 via primary" in answer.detail and B in answer.detail
    # the attempt it starts is a normal one: the next number, the failed recipients
    started, ev = core.start(new, action, "w")
    assert ev.attempt == 2 and ev.recipients == failed_rcpts and started.inflight
    assert started.interrupted_attempts == 0
    done, attempted = core.finish(started, [ok(r) for r in failed_rcpts], now=NOW + 1,
                                  duration=0.1, settings=RETRY)
    assert done.done and sorted(done.accepted) == [A, B] and done.failed == {}
    assert attempted.attempt == 2 and not attempted.interrupted


def test_retry_restarts_the_give_up_clock() -> None:
    """A mail that gave up after days is retried with the whole back-off again."""
    late = T0 + RETRY.retry_give_up + 100
    new, action, _ = run(failed(), "retry", now=late)
    assert new is not None
    started, _ = core.start(new, action, "w")
    again, ev = core.finish(started, [no(A, 451), no(B, 451)], now=late + 1, duration=0.1,
                            settings=RETRY)
    assert not again.done and again.next_at == late + 1 + 120  # deferred, not given up
    assert ev.next_attempt_at == again.next_at


@pytest.mark.parametrize(("make", "words"), [
    (sent, "m-1 was sent to every recipient: nothing to retry"),
    (inflight, "m-1 is being sent now (attempt 1): wait for its outcome"),
    (cancelled, "m-1 was cancelled: it is not sent again (send it anew)"),
    (deferred, "m-1 is deferred, next attempt 2027-01-15 08:01:01 UTC: use send-now"),
])
def test_retry_is_refused_with_words(make: Callable[[], Ledger], words: str) -> None:
    before = make()
    new, action, events = run(before, "retry")
    assert action.kind == "skip"
    assert refusal(events) == words
    assert new is not None and new == replace(before, commands=[*before.commands, "c-1"])
    ev = events[0]
    assert isinstance(ev, QueueCommandRefused)
    assert (ev.command_id, ev.command, ev.by, ev.event_id) == (
        "c-1", "retry", "delivery", core.result_id("c-1"))


# --- send_now ---------------------------------------------------------------------------------


def test_send_now_of_a_deferred_mail_delivers_now() -> None:
    before = deferred()
    new, action, events = run(before, "send_now")
    assert action.kind == "deliver" and not action.interrupted
    assert new is not None and new.pending == [B] and new.accepted == [A]
    assert new.next_at == NOW and new.commands == ["c-1"]
    assert new.first_at == before.first_at  # the give-up clock goes on
    answer = applied(events)
    assert answer.command == "send_now" and answer.event_id == core.result_id("c-1")
    assert "instead of next attempt 2027-01-15 08:01:01 UTC" in answer.detail
    assert "attempt 2 via primary" in answer.detail
    started, ev = core.start(new, action, "w")
    assert ev.attempt == 2 and ev.recipients == [B] and started.next_at == 0
    # the timer's signal for the deferral it replaced (read after this batch) is stale
    done, _ = core.finish(started, [no(B, 451)], now=NOW + 1, duration=0.1, settings=RETRY)
    assert core.on_retry_due(done, 1, T0 + 61).kind == "skip"
    assert core.on_retry_due(done, 2, done.next_at).kind == "deliver"


def test_send_now_of_a_mail_already_due_delivers_now() -> None:
    new, action, events = run(deferred(), "send_now", now=T0 + 100)
    assert action.kind == "deliver" and new is not None
    assert "instead of next attempt due now" in applied(events).detail


@pytest.mark.parametrize(("make", "words"), [
    (sent, "m-1 was sent to every recipient: nothing to send"),
    (failed, "m-1 has failed (2 recipients): use retry to try again"),
    (half_failed, "m-1 has failed (1 recipient): use retry to try again"),
    (inflight, "m-1 is being sent now (attempt 1): wait for its outcome"),
    (cancelled, "m-1 was cancelled: it is not sent again (send it anew)"),
])
def test_send_now_is_refused_with_words(make: Callable[[], Ledger], words: str) -> None:
    before = make()
    new, action, events = run(before, "send_now")
    assert action.kind == "skip" and refusal(events) == words
    assert new == replace(before, commands=[*before.commands, "c-1"])


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_of_a_deferred_mail_marks_it_done_and_says_who_and_what() -> None:
    before = deferred()
    new, action, events = run(before, "cancel", operator="ann@ops", note="wrong customer")
    assert action.kind == "skip"
    assert new is not None and new.done and new.cancelled and new.next_at == 0
    assert new.pending == [B]  # kept for the record, never sent
    assert new.accepted == [A] and new.commands == ["c-1"]
    assert len(events) == 2
    answer, gone = applied(events), events[1]
    assert answer.command == "cancel" and answer.by == "delivery"
    assert answer.detail == "m-1 cancelled: 1 recipient will not be sent"
    assert isinstance(gone, MessageCancelled)
    assert (gone.message_id, gone.command_id, gone.by) == (MID, "c-1", "delivery")
    assert gone.reason == (f"cancelled by ann@ops while deferred; not sent to {B} "
                           f"(already sent to {A}): wrong customer")
    assert gone.event_id == core.cancelled_id("c-1") != answer.event_id
    assert gone.occurred_at == NOW


def test_a_cancelled_ledger_is_never_due_orphaned_or_delivered() -> None:
    ledger = cancelled()
    for later in (T0 + 61, T0 + 10_000):
        assert not core.due(ledger, later)
        assert core.on_retry_due(ledger, ledger.attempt, later).kind == "skip"
    assert not core.orphaned(ledger, running=False)
    # even one that claims an attempt in flight (it never does)
    assert not core.orphaned(replace(ledger, inflight=True), running=False)
    assert not core.due(replace(ledger, done=False), T0 + 10_000)
    # the original release, redelivered, is skipped
    same, action = core.on_routed(ledger, decision(), [A, B], T0 + 100)
    assert action.kind == "skip" and "cancelled" in action.reason and same is ledger


@pytest.mark.parametrize(("make", "words"), [
    (sent, "m-1 is sent: nothing to cancel"),
    (failed, "m-1 has failed (2 recipients): use ack to acknowledge it"),
    (inflight, "m-1 is being sent now (attempt 1): it cannot be stopped"),
    (cancelled, "m-1 is already cancelled"),
])
def test_cancel_is_refused_with_words(make: Callable[[], Ledger], words: str) -> None:
    before = make()
    new, action, events = run(before, "cancel")
    assert action.kind == "skip" and refusal(events) == words
    assert new == replace(before, commands=[*before.commands, "c-1"])


# --- every command: no ledger, ack, once ------------------------------------------------------


@pytest.mark.parametrize("what", ["retry", "send_now", "cancel"])
def test_no_ledger_is_refused_and_the_same_answer_comes_again(what: str) -> None:
    new, action, events = run(None, what)
    assert new is None and action.kind == "skip"
    assert refusal(events) == (
        "m-1 has no delivery record: it failed before delivery (no server / rejected) or has "
        "not been released yet; see `postlane status m-1`")
    # nothing records it: redelivered, the same answer with the same id
    _, _, again = run(None, what, now=NOW + 5)
    assert [e.event_id for e in again] == [e.event_id for e in events]  # type: ignore[attr-defined]


@pytest.mark.parametrize("make", [sent, failed, deferred, inflight, cancelled])
def test_ack_is_not_delivery_s_command(make: Callable[[], Ledger]) -> None:
    before = make()
    new, action, events = run(before, "ack")
    assert new is before and action.kind == "skip" and events == []
    assert run(None, "ack")[2] == []


@pytest.mark.parametrize(("make", "what"), [
    (failed, "retry"), (deferred, "send_now"), (deferred, "cancel"),  # applied
    (sent, "retry"), (inflight, "cancel"), (cancelled, "send_now"),  # refused
])
def test_a_redelivered_command_does_nothing(make: Callable[[], Ledger], what: str) -> None:
    once, _, events = run(make(), what)
    assert once is not None and events
    twice, action, again = run(once, what, now=NOW + 30)
    assert twice is once and action.kind == "skip" and again == []
    # also after its attempt ran: the ledger still knows the command
    if what in ("retry", "send_now"):
        started, _ = core.start(once, Action("deliver"), "w")
        done, _ = core.finish(started, [ok(A), ok(B)], now=NOW + 1, duration=0.1,
                              settings=RETRY)
        later, action, again = run(done, what, now=NOW + 60)
        assert later is done and action.kind == "skip" and again == []


def test_a_second_command_is_answered_on_its_own() -> None:
    new, _, _ = run(deferred(), "cancel", cid="c-1")
    again, _, events = run(new, "cancel", cid="c-2")
    assert refusal(events) == "m-1 is already cancelled"
    assert again is not None and again.commands == ["c-1", "c-2"]
    assert events[0].event_id == core.result_id("c-2") != core.result_id("c-1")  # type: ignore[attr-defined]


def test_a_redelivered_release_after_a_retry_does_not_start_a_second_attempt() -> None:
    new, action, _ = run(failed(), "retry")
    assert new is not None
    started, _ = core.start(new, action, "w")
    # the agent never starts one mail twice in a batch; while this process
    # sends it, a redelivered release is a duplicate (skipped); after a restart
    # (another process) it is the interrupted attempt, never a fresh concurrent one
    same, again = core.on_routed(started, decision(), [A, B], NOW + 1)
    assert same is started and again.kind == "skip"
    same, again = core.on_routed(started, decision(), [A, B], NOW + 1, run="restarted")
    assert same is started and again.interrupted
    done, _ = core.finish(started, [ok(A), ok(B)], now=NOW + 2, duration=0.1, settings=RETRY)
    same, again = core.on_routed(done, decision(), [A, B], NOW + 3)
    assert again.kind == "skip" and "duplicate" in again.reason


# --- the wire and the table -------------------------------------------------------------------


def test_answers_round_trip_on_the_wire() -> None:
    _, _, events = run(deferred(), "cancel")
    for ev, cls in zip(events, (QueueCommandApplied, MessageCancelled), strict=True):
        assert isinstance(ev, cls)
        back = decode(cls, encode(ev))
        assert back.to_representation() == ev.to_representation()


def test_ledger_reads_old_table_values_and_round_trips_the_new_fields() -> None:
    old = sent().to_dict()
    del old["commands"], old["cancelled"]
    ledger = Ledger.from_dict(old)
    assert ledger is not None and ledger.commands == [] and not ledger.cancelled
    new = cancelled()
    assert Ledger.from_dict(new.to_dict()) == new
    assert Ledger.from_dict({**new.to_dict(), "from_a_newer_version": 1}) == new


def test_ids_are_derived_from_the_command_id() -> None:
    assert core.result_id("c-1") == core.result_id("c-1") != core.result_id("c-2")
    assert core.cancelled_id("c-1") != core.result_id("c-1")
    assert len(core.result_id("c-1")) == 32
