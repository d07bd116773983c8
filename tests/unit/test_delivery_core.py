"""The delivery ledger (processors/delivery/core.py), pure: state and an
event in, new state and events out. What makes "never twice" hold."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from processors.delivery import core
from processors.delivery.core import Action, Ledger
from schemas import RoutingDecided, SendRequested

T0 = 1_800_000_000.0
A, B = "a@dest.test", "b@dest.test"


@dataclass(frozen=True)
class Retry:
    retry_first: float = 60.0
    retry_max: float = 600.0
    retry_give_up: float = 3600.0


RETRY = Retry()


def decision(mid: str = "m1", server: str = "primary", outcome: str = "routed",
             to: tuple[str, ...] = (A, B)) -> RoutingDecided:
    req = SendRequested(message_id=mid, from_="app@example.com", to=list(to), subject="s",
                        text="t", occurred_at=T0)
    if outcome != "routed":
        return RoutingDecided(message_id=mid, outcome=outcome, reason="no",
                              request=req.to_representation())
    return RoutingDecided(message_id=mid, outcome="routed", server=server,
                          header_from="app@example.com",
                          envelope_from=f"bounce+{mid}@example.com", rule="from_filter_domain",
                          request=req.to_representation())


def ok(rcpt: str) -> dict[str, object]:
    return {"recipient": rcpt, "status": "accepted", "code": 250, "enhanced": "2.0.0",
            "text": "OK queued"}


def refused(rcpt: str, code: int, text: str) -> dict[str, object]:
    status = "failed" if code >= 500 else "deferred"
    return {"recipient": rcpt, "status": status, "code": code, "enhanced": text.split()[0],
            "text": text}


def routed(now: float = T0, to: tuple[str, ...] = (A, B)) -> tuple[Ledger, Action]:
    ledger, action = core.on_routed(None, decision(to=to), list(to), now)
    assert ledger is not None
    return ledger, action


def started(now: float = T0, to: tuple[str, ...] = (A, B)) -> Ledger:
    ledger, action = routed(now, to)
    ledger, _ = core.start(ledger, action, "w1")
    return ledger


# --- on_routed ------------------------------------------------------------------------------


def test_first_routing_delivers_with_a_new_ledger() -> None:
    ledger, action = routed()
    assert action == Action("deliver")
    assert ledger.message_id == "m1" and ledger.server == "primary"
    assert ledger.pending == [A, B] and ledger.accepted == [] and ledger.failed == {}
    assert ledger.attempt == 0 and not ledger.inflight and not ledger.done
    assert ledger.first_at == T0
    assert ledger.decision["request"]["to"] == [A, B]
    assert Ledger.from_dict(ledger.to_dict()) == ledger  # the table value round-trips


def test_not_routed_or_no_recipient_is_skipped_without_a_ledger() -> None:
    ledger, action = core.on_routed(None, decision(outcome="no_server"), [A], T0)
    assert ledger is None and action.kind == "skip"
    ledger, action = core.on_routed(None, decision(), [], T0)
    assert ledger is None and action.kind == "skip"


def test_duplicate_decision_after_done_is_skipped() -> None:
    ledger = started()
    ledger, _ = core.finish(ledger, [ok(A), ok(B)], now=T0 + 1, duration=0.1, settings=RETRY)
    assert ledger.done
    same, action = core.on_routed(ledger, decision(), [A, B], T0 + 2)
    assert action.kind == "skip" and "duplicate" in action.reason
    assert same == ledger


def test_decision_while_waiting_for_retry_is_skipped_and_delivered_once_due() -> None:
    ledger = started()
    ledger, _ = core.finish(ledger, [refused(A, 451, "4.7.1 later"), ok(B)], now=T0 + 1,
                            duration=0.1, settings=RETRY)
    assert ledger.next_at == T0 + 1 + 60
    _, action = core.on_routed(ledger, decision(), [A, B], T0 + 30)
    assert action.kind == "skip" and "retry" in action.reason
    _, action = core.on_routed(ledger, decision(), [A, B], T0 + 61)
    assert action == Action("deliver")


def test_inflight_ledger_is_delivered_again_as_interrupted_and_counted() -> None:
    """A crash between start and finish: the server may have the mail, so
    the retry may duplicate; it says so, and the count shows it."""
    ledger = started()
    assert ledger.inflight and ledger.attempt == 1 and ledger.run == core.RUN
    # the restarted worker (another process): the same decision arrives again
    same, action = core.on_routed(ledger, decision(), [A, B], T0 + 10, run="restarted")
    assert action.kind == "deliver" and action.interrupted
    assert same is ledger
    again, ev = core.start(same, action, "w2")
    assert again.attempt == 2 and again.inflight
    assert again.interrupted_attempts == 1
    assert ev.attempt == 2 and ev.worker == "w2" and ev.recipients == [A, B]
    done, attempted = core.finish(again, [ok(A), ok(B)], now=T0 + 11, duration=0.2,
                                  settings=RETRY, interrupted=action.interrupted)
    assert attempted.interrupted and attempted.attempt == 2
    assert done.done and done.interrupted_attempts == 1
    # a retry signal for an inflight ledger is an interruption too
    assert core.on_retry_due(ledger, 1, T0 + 10) == Action(
        "deliver", "attempt interrupted by a restart", interrupted=True)


def test_a_duplicate_decision_while_this_process_sends_it_starts_no_second_attempt() -> None:
    """A release delivered twice (a limiter restarted before committing its
    offsets) whose duplicate arrives while this process sends the mail: not
    an interrupted attempt, so no second SMTP transaction."""
    ledger = started()
    same, action = core.on_routed(ledger, decision(), [A, B], T0 + 0.5)
    assert same is ledger and action.kind == "skip" and "duplicate" in action.reason
    # the attempt's outcome then arrives as usual, counted once
    done, attempted = core.finish(ledger, [ok(A), ok(B)], now=T0 + 1, duration=0.2,
                                  settings=RETRY)
    assert done.done and done.attempt == 1 and done.interrupted_attempts == 0
    assert done.run == "" and not attempted.interrupted
    # had the attempt died here without an outcome, the retry timer retries it
    assert core.orphaned(ledger, running=False)
    assert core.on_retry_due(ledger, 1, T0 + 2).interrupted


def test_start_records_the_attempt_before_smtp() -> None:
    ledger, action = routed()
    new, ev = core.start(ledger, action, "host:1")
    assert new.inflight and new.attempt == 1 and new.next_at == 0.0
    assert new.tried_servers == ["primary"] and new.interrupted_attempts == 0
    assert (ev.message_id, ev.attempt, ev.server, ev.recipients, ev.worker) == (
        "m1", 1, "primary", [A, B], "host:1")
    assert not core.due(new, T0 + 10_000)  # the timer never signals an attempt in flight


# --- finish -----------------------------------------------------------------------------------


def test_finish_all_accepted_is_done() -> None:
    ledger = started()
    new, ev = core.finish(ledger, [ok(A), ok(B)], now=T0 + 1, duration=0.1234567,
                          settings=RETRY, smtp_message_id="<m1@example.com>")
    assert new.done and not new.inflight and new.pending == [] and new.next_at == 0
    assert new.accepted == [A, B]
    assert ev.attempt == 1 and ev.server == "primary" and ev.next_attempt_at == 0
    assert [o["status"] for o in ev.outcomes] == ["accepted", "accepted"]
    assert all(o["server"] == "primary" for o in ev.outcomes)
    assert ev.smtp_message_id == "<m1@example.com>" and ev.duration == 0.123457
    assert not ev.interrupted and ev.error == ""
    assert not core.due(new, T0 + 10_000)


def test_5xx_for_one_of_two_fails_it_with_the_answer_and_accepts_the_other() -> None:
    ledger = started()
    bad = refused(B, 550, "5.1.1 <b@dest.test>: no such user")
    new, ev = core.finish(ledger, [ok(A), bad], now=T0 + 1, duration=0.1, settings=RETRY)
    assert new.done and new.pending == []
    assert new.accepted == [A]
    assert new.failed[B]["code"] == 550
    assert new.failed[B]["text"] == "5.1.1 <b@dest.test>: no such user"
    assert new.failed[B]["server"] == "primary"
    assert ev.next_attempt_at == 0
    assert {o["recipient"]: o["status"] for o in ev.outcomes} == {A: "accepted", B: "failed"}


def test_4xx_defers_with_backoff_and_keeps_pending() -> None:
    ledger = started()
    new, ev = core.finish(ledger, [ok(A), refused(B, 451, "4.3.0 try later")], now=T0 + 5,
                          duration=0.1, settings=RETRY)
    assert not new.done and not new.inflight
    assert new.pending == [B] and new.accepted == [A]
    assert new.next_at == T0 + 5 + 60  # retry_first after attempt 1
    assert ev.next_attempt_at == new.next_at and ev.next_server == ""
    assert {o["recipient"]: o["status"] for o in ev.outcomes} == {A: "accepted", B: "deferred"}
    assert not core.due(new, T0 + 64) and core.due(new, T0 + 65)
    # the retry sends to B only, and the back-off doubles
    new2, ev2 = core.start(new, Action("deliver"), "w")
    assert ev2.attempt == 2 and ev2.recipients == [B]
    new3, ev3 = core.finish(new2, [refused(B, 421, "4.4.2 busy")], now=T0 + 70, duration=0.1,
                            settings=RETRY)
    assert new3.next_at == T0 + 70 + 120 and new3.pending == [B] and new3.accepted == [A]
    assert [o["recipient"] for o in ev3.outcomes] == [B]


def test_recipient_without_answer_is_deferred_with_the_session_error() -> None:
    ledger = started()
    new, ev = core.finish(ledger, [], now=T0 + 1, duration=3.0, settings=RETRY,
                          session_error="connection refused by 127.0.0.1:1")
    assert new.pending == [A, B] and new.next_at == T0 + 61
    assert ev.error == "connection refused by 127.0.0.1:1"
    assert [o["status"] for o in ev.outcomes] == ["deferred", "deferred"]
    assert all(o["text"] == "connection refused by 127.0.0.1:1" for o in ev.outcomes)


def test_give_up_after_retry_give_up_fails_the_deferred_recipients() -> None:
    ledger = replace(started(), attempt=7)
    late = T0 + RETRY.retry_give_up + 1
    new, ev = core.finish(ledger, [ok(A), refused(B, 451, "4.7.1 greylisted")], now=late,
                          duration=0.1, settings=RETRY)
    assert new.done and new.pending == [] and new.next_at == 0
    assert new.accepted == [A]
    assert new.failed[B]["status"] == "failed"
    assert new.failed[B]["code"] == 451
    assert new.failed[B]["text"] == "4.7.1 greylisted (gave up after 7 attempts)"
    assert ev.next_attempt_at == 0
    assert {o["recipient"]: o["status"] for o in ev.outcomes} == {A: "accepted", B: "failed"}


def test_next_decision_moves_the_server_and_retries_now() -> None:
    ledger = started()
    other = decision(server="backup")
    new, ev = core.finish(ledger, [], now=T0 + 2, duration=0.01, settings=RETRY,
                          session_error="connection refused", next_decision=other)
    assert new.server == "backup" and new.decision["server"] == "backup"
    assert new.next_at == T0 + 2 and core.due(new, T0 + 2)
    assert new.pending == [A, B] and not new.done
    assert ev.server == "primary" and ev.next_server == "backup"
    assert ev.next_attempt_at == T0 + 2
    # the retry signal for attempt 1 starts attempt 2 on the new server
    assert core.on_retry_due(new, 1, T0 + 2) == Action("deliver")
    moved, ev2 = core.start(new, Action("deliver"), "w")
    assert ev2.server == "backup" and ev2.attempt == 2
    assert moved.tried_servers == ["primary", "backup"]


def test_next_decision_for_the_same_server_is_plain_backoff() -> None:
    ledger = started()
    new, ev = core.finish(ledger, [], now=T0 + 2, duration=0.01, settings=RETRY,
                          session_error="x", next_decision=decision(server="primary"))
    assert new.server == "primary" and new.next_at == T0 + 62 and ev.next_server == ""


# --- on_retry_due -------------------------------------------------------------------------------


def deferred_ledger() -> Ledger:
    new, _ = core.finish(started(), [refused(A, 451, "4.7.1 later"), ok(B)], now=T0 + 1,
                         duration=0.1, settings=RETRY)
    return new


def test_on_retry_due_delivers_the_attempt_that_is_due() -> None:
    assert core.on_retry_due(deferred_ledger(), 1, T0 + 61) == Action("deliver")


@pytest.mark.parametrize(("attempt", "now"), [
    (0, T0 + 61),  # an older attempt's signal
    (2, T0 + 61),  # a signal from the future
    (1, T0 + 30),  # not due yet
])
def test_on_retry_due_stale_signal_is_skipped(attempt: int, now: float) -> None:
    action = core.on_retry_due(deferred_ledger(), attempt, now)
    assert action.kind == "skip" and "stale" in action.reason


def test_on_retry_due_after_the_retry_started_is_stale() -> None:
    ledger, _ = core.start(deferred_ledger(), Action("deliver"), "w")
    ledger, _ = core.finish(ledger, [refused(A, 451, "4.7.1 again")], now=T0 + 62,
                            duration=0.1, settings=RETRY)
    # a redelivered signal for attempt 1, when attempt 2 is the one waiting
    assert core.on_retry_due(ledger, 1, T0 + 500).kind == "skip"
    assert core.on_retry_due(ledger, 2, T0 + 500) == Action("deliver")


def test_on_retry_due_for_done_or_unknown_is_skipped() -> None:
    done, _ = core.finish(started(), [ok(A), ok(B)], now=T0, duration=0, settings=RETRY)
    assert core.on_retry_due(done, 1, T0 + 1).kind == "skip"
    assert core.on_retry_due(None, 1, T0 + 1).kind == "skip"


def test_orphaned_attempt_is_one_in_flight_that_no_batch_runs() -> None:
    """The retry timer signals such a ledger: its input may be committed
    (agent crash, cancel on rebalance), so nothing else would retry it."""
    ledger = started()
    assert core.orphaned(ledger, running=False)
    assert not core.orphaned(ledger, running=True)
    assert not core.orphaned(deferred_ledger(), running=False)
    done, _ = core.finish(ledger, [ok(A), ok(B)], now=T0, duration=0, settings=RETRY)
    assert not core.orphaned(done, running=False)
    # the signal it gets retries it as interrupted, whatever attempt it names
    assert core.on_retry_due(ledger, ledger.attempt, T0).interrupted


def test_the_retry_timer_parses_only_open_rows() -> None:
    """``open_row`` is read on the raw table value; every ledger that is
    due or orphaned must pass it, finished ones must not."""
    waiting = deferred_ledger()
    flight = started()
    finished = replace(flight, done=True, inflight=False)
    cancelled = replace(waiting, cancelled=True)
    for ledger in (waiting, flight):
        assert core.due(ledger, waiting.next_at + 1) or core.orphaned(ledger, running=False)
        assert core.open_row(ledger.to_dict())
    for ledger in (finished, cancelled):
        assert not core.due(ledger, waiting.next_at + 1)
        assert not core.orphaned(ledger, running=False)
        assert not core.open_row(ledger.to_dict())
    assert not core.open_row(None) and not core.open_row({})


def test_a_sent_mails_row_drops_the_body_and_still_refuses_it_again() -> None:
    ledger = started()
    assert core.row(ledger)["decision"]["request"]["text"] == "t"  # in flight: all of it
    new, _ = core.finish(ledger, [ok(A), ok(B)], now=T0 + 1, duration=0.1, settings=RETRY)
    value = core.row(new)
    assert "text" not in value["decision"]["request"]
    assert value["decision"]["request"]["to"] == [A, B]
    assert set(value["decision"]) == {"event_id", "server", "request"}
    back = Ledger.from_dict(value)
    assert back is not None and back.done
    # a redelivered decision is still a duplicate, a retry still refused
    assert core.on_routed(back, decision(), [A, B], T0 + 2)[1].kind == "skip"
    # a mail with a failed recipient keeps its body: a retry re-sends it
    bad = refused(B, 550, "5.1.1 no such user")
    failed, _ = core.finish(started(), [ok(A), bad], now=T0 + 1, duration=0.1, settings=RETRY)
    assert core.row(failed)["decision"]["request"]["text"] == "t"


def test_a_row_leaves_out_defaults_and_reads_back_as_the_same_ledger() -> None:
    """Rows (``core.row``) omit the fields at their default and keep
    ``done``; ``from_dict`` gives the same ledger, ``may_be_open`` and
    ``open_row`` read them as before."""
    from streams.tables import encode_row

    for ledger in (started(), deferred_ledger(), replace(started(), done=True, inflight=False)):
        value = core.row(ledger)
        assert "done" in value and "token" not in value and "commands" not in value
        if ledger.done:
            continue  # a sent mail's row drops the body (test above)
        assert Ledger.from_dict(value) == ledger
        assert core.may_be_open(encode_row(value)) and core.open_row(value)
    done = replace(started(), done=True, inflight=False, pending=[], accepted=[A, B])
    assert not core.may_be_open(encode_row(core.row(done)))


def test_the_ledger_keeps_what_delivery_sends_with_not_the_routers_words() -> None:
    """``kept_decision``: no reason, suppressed or event times, no request
    field at its default; read back (``carried``) it is the decision and
    request delivery sends with."""
    from schemas.base import carried

    d = decision()
    d.reason = "a long explanation of the cascade " * 4
    d.suppressed = {"x@dest.test": "hard_bounce"}
    kept = core.kept_decision(d)
    assert set(kept) == {"event_id", "message_id", "outcome", "server", "header_from",
                         "envelope_from", "rule", "request"}
    assert not {"cc", "bcc", "html", "headers", "attachments"} & set(kept["request"])
    back = carried(RoutingDecided, kept)
    for name in ("message_id", "server", "header_from", "envelope_from", "rule", "direct"):
        assert getattr(back, name) == getattr(d, name)
    assert carried(SendRequested, kept["request"]) == SendRequested.from_data(d.request)
    # a decision carrying the whole request (records written before) is cut the same way
    assert core.kept_decision(d) == core.new_ledger(d, [A, B], T0).decision
