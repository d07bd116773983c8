"""The status fold of the limiter's events (held, released, cancelled), the
ops commands (history only) and ``acknowledge`` (the status processor's own
command)."""

from __future__ import annotations

import pytest

from processors.status.batch import apply
from processors.status.core import (
    MessageStatus,
    acknowledge,
    duration_words,
    evolve,
    progress_of,
    result_id,
    utc_words,
)
from schemas import (
    Event,
    MessageStatusChanged,
    QueueCommandApplied,
    QueueCommandRefused,
    decode,
    encode,
)

from .status_events import (
    BOB,
    LIMIT_REASON,
    MID,
    OPS,
    T0,
    applied,
    attempted,
    cancelled,
    command,
    held,
    no_server,
    refused,
    released,
    request,
    routed,
    started,
)


def run(*events: Event, start: MessageStatus | None = None
        ) -> tuple[MessageStatus, list[MessageStatusChanged | None]]:
    st = start
    changes: list[MessageStatusChanged | None] = []
    for e in events:
        st, ch = evolve(st, e)
        changes.append(ch)
    assert st is not None
    return st, changes


def words(st: MessageStatus) -> list[str]:
    return [h["reason"] for h in st.history]


# --- places in the mail's life ------------------------------------------------------------------


def test_limiter_events_sit_between_routing_and_delivery() -> None:
    assert progress_of(routed()) < progress_of(held(step=1)) < progress_of(released(step=2))
    assert progress_of(released(step=9)) < progress_of(started(attempt=1))
    assert progress_of(attempted("deferred", attempt=7)) < progress_of(
        cancelled(command("cancel")))


# --- held and released --------------------------------------------------------------------------


def test_daily_limit_is_deferred_with_the_limiters_words() -> None:
    st, changes = run(request(), routed(), held())
    assert (st.state, st.reason) == ("deferred", LIMIT_REASON)
    assert st.next_attempt_at == T0 + 50_000
    assert st.server == "primary"
    ch = changes[-1]
    assert ch is not None and (ch.previous, ch.state, ch.reason) == (
        "queued", "deferred", LIMIT_REASON)


@pytest.mark.parametrize("why", ["scheduled", "paced"])
def test_scheduled_or_paced_is_queued_with_reason(why: str) -> None:
    reason = f"{why}: may go at {utc_words(T0 + 60)}"
    st, _ = run(request(), routed(), held(why=why, reason=reason, until=T0 + 60))
    assert (st.state, st.reason, st.next_attempt_at) == ("queued", reason, T0 + 60)


def test_released_says_how_long_it_waited() -> None:
    st, changes = run(request(), routed(), held(), released())
    assert (st.state, st.reason) == ("queued", "released to delivery after 3 h 2 min")
    assert st.next_attempt_at == 0.0
    assert changes[-1] is not None and changes[-1].previous == "deferred"


def test_released_without_wait_and_then_delivered() -> None:
    st, _ = run(request(), routed(), released(step=1, held_for=0), started(), attempted("accepted"))
    assert st.state == "sent"
    assert [h["state"] for h in st.history] == ["queued", "queued", "queued", "sending", "sent"]
    assert st.history[2]["reason"] == "released to delivery"


def test_forced_release_names_the_operator() -> None:
    send_now = command("send_now")
    st, _ = run(request(), routed(), held(), send_now,
                released(forced=True, command_id=send_now.event_id, held_for=60),
                applied(send_now, detail="released now (was deferred)"))
    assert (st.state, st.reason) == ("queued", f"sent now by {OPS}")
    assert words(st)[-3:] == [
        f"send-now requested by {OPS}",
        f"sent now by {OPS}",
        "send-now applied by limiter: released now (was deferred)",
    ]


def test_forced_release_before_its_command_says_an_operator() -> None:
    st, _ = run(request(), routed(), held(), released(forced=True, command_id="c-unknown"))
    assert st.reason == "sent now by an operator"


def test_release_fills_the_summary_when_it_comes_first() -> None:
    st, changes = run(released(step=1, held_for=0))
    assert (st.state, st.subject, st.server) == ("queued", "Invoice 42", "primary")
    assert BOB in st.recipients
    assert changes[0] is not None and changes[0].previous == ""


def test_held_after_delivery_started_is_out_of_order() -> None:
    st, changes = run(request(), routed(), released(step=2), started(), held(step=1))
    assert st.state == "sending"
    assert changes[-1] is None
    assert st.history[-1]["reason"] == "arrived out of order (after sending): state kept"


def test_a_later_hold_replaces_an_earlier_one() -> None:
    st, _ = run(request(), routed(), held(why="paced", reason="paced", step=1),
                held(step=2, at=T0 + 3))
    assert (st.state, st.reason) == ("deferred", LIMIT_REASON)
    st2, changes = run(held(why="paced", reason="paced", step=1), start=st)
    assert (st2.state, st2.reason) == ("deferred", LIMIT_REASON)  # older step: kept
    assert changes == [None]


def test_duplicate_limiter_event_does_nothing() -> None:
    h = held()
    st, _ = run(request(), routed(), h)
    again, ch = evolve(st, h)
    assert again is st and ch is None


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_by_the_limiter_is_final_and_says_what_it_was() -> None:
    cancel = command("cancel")
    st, changes = run(request(), routed(), held(), cancel, cancelled(cancel),
                      applied(cancel, detail="cancelled while deferred"))
    assert st.state == "cancelled" and st.final
    assert st.reason == f"cancelled by {OPS} (was {LIMIT_REASON})"
    assert st.recipients[BOB]["state"] == "cancelled"
    assert [(c.state, c.note) for c in changes[-3:] if c] == [
        ("deferred", f"cancel requested by {OPS}"), ("cancelled", ""),
        ("cancelled", "cancel applied by limiter: cancelled while deferred")]
    assert words(st)[-3:] == [
        f"cancel requested by {OPS}",
        st.reason,
        "cancel applied by limiter: cancelled while deferred",
    ]


def test_cancel_uses_the_owners_sentence_when_it_says_who() -> None:
    cancel = command("cancel")
    st, _ = run(request(), routed(), started(),
                attempted("deferred", next_at=T0 + 600),
                cancelled(cancel, by="delivery",
                          reason=f"cancelled by {OPS} while deferred; not sent to {BOB}"))
    assert st.state == "cancelled"
    assert st.reason.startswith(f"cancelled by {OPS} while deferred; not sent to {BOB} (was "
                                "deferred: 451 answer (server primary); next attempt")


def test_cancel_with_a_note_and_before_its_command() -> None:
    cancel = command("cancel")
    st, _ = run(request(), routed(), cancelled(cancel, reason="duplicate campaign"))
    assert st.reason == "cancelled by an operator: duplicate campaign (was queued: routed to " \
                        "primary)"


def test_cancelled_is_final_for_older_events() -> None:
    cancel = command("cancel")
    st, changes = run(request(), routed(), held(), cancelled(cancel), released(step=2),
                      started())
    assert st.state == "cancelled"
    assert changes[-2:] == [None, None]
    assert st.history[-1]["reason"] == "arrived after the mail was cancelled: state kept"


# --- commands and answers are history only ------------------------------------------------------


def test_commands_and_answers_never_change_the_state() -> None:
    retry = command("retry")
    st, _ = run(request(), routed(), started(), attempted("accepted"))
    progress = list(st.progress)
    st2, changes = run(retry, refused(retry, reason="m-1 is sent: nothing to retry"), start=st)
    # published for the history `postlane status` shows, with the state as it was
    assert [(c.state, c.reason, c.note) for c in changes if c] == [
        ("sent", st.reason, f"retry requested by {OPS}"),
        ("sent", st.reason, "retry refused by delivery: m-1 is sent: nothing to retry")]
    assert (st2.state, st2.progress, st2.updated_at) == ("sent", progress, st.updated_at)
    assert words(st2)[-2:] == [f"retry requested by {OPS}",
                               "retry refused by delivery: m-1 is sent: nothing to retry"]
    assert [h["state"] for h in st2.history[-2:]] == ["sent", "sent"]
    assert st2.history[-2]["operator"] == OPS
    assert st2.history[-1]["command_id"] == retry.event_id


def test_answer_before_its_command_is_still_history_only() -> None:
    cancel = command("cancel")
    st, _ = run(request(), routed(), held())
    st2, changes = run(applied(cancel), cancel, start=st)
    assert [c.state for c in changes if c] == ["deferred", "deferred"]
    assert st2.state == "deferred"
    assert "arrived out of order" not in " ".join(words(st2))


def test_command_note_is_in_the_history() -> None:
    st, _ = run(request(), command("retry", note="customer called"))
    assert words(st)[-1] == f"retry requested by {OPS}: customer called"


def test_duplicate_command_does_nothing() -> None:
    retry = command("retry")
    st, _ = run(request(), retry)
    again, ch = evolve(st, retry)
    assert again is st and ch is None


def test_command_for_an_unknown_mail_is_recorded_but_not_published() -> None:
    st, changes = run(command("cancel"))
    assert changes == [None] and not st.known
    st2, (ch,) = run(request(), start=st)
    assert ch is not None and ch.previous == "" and ch.state == "queued"
    assert st2.known and len(st2.history) == 2


def test_retry_after_a_failure_leaves_failed() -> None:
    retry = command("retry")
    st, _ = run(request(), routed(), started(), attempted("failed"), retry,
                applied(retry, by="delivery"), started(attempt=2, at=T0 + 20))
    assert (st.state, st.attempt) == ("sending", 2)


# --- ack ----------------------------------------------------------------------------------------


def failed_mail() -> MessageStatus:
    st, _ = run(request(), no_server())
    assert st.state == "failed"
    return st


def test_ack_of_a_failed_mail_is_applied() -> None:
    st = failed_mail()
    ack = command("ack")
    new, result, change = acknowledge(st, ack)
    assert new is not None and new is not st and not st.acknowledged
    assert isinstance(result, QueueCommandApplied)
    assert (result.message_id, result.command_id, result.command, result.by) == (
        MID, ack.event_id, "ack", "status")
    assert result.event_id == result_id(ack.event_id)
    assert (new.state, new.acknowledged, new.reason) == ("failed", True, st.reason)
    assert change is not None
    assert (change.state, change.previous, change.acknowledged) == ("failed", "failed", True)
    assert change.reason == st.reason
    assert words(new)[-2:] == [f"ack requested by {OPS}", f"ack applied by status: {result.detail}"]
    assert decode(MessageStatusChanged, encode(change)).acknowledged is True


def test_ack_twice_is_refused() -> None:
    first, _, _ = acknowledge(failed_mail(), command("ack"))
    second = command("ack", at=T0 + 20)
    new, result, change = acknowledge(first, second)
    assert isinstance(result, QueueCommandRefused) and change is None
    assert result.reason == f"{MID} was already acknowledged"
    assert new is not None and new.acknowledged
    assert words(new)[-1] == f"ack refused by status: {MID} was already acknowledged"


def test_redelivered_ack_answers_nothing() -> None:
    ack = command("ack")
    first, _, _ = acknowledge(failed_mail(), ack)
    again, result, change = acknowledge(first, ack)
    assert again is first and result is None and change is None


def test_same_ack_on_the_same_state_gives_the_same_answer() -> None:
    st, ack = failed_mail(), command("ack")
    _, r1, c1 = acknowledge(st, ack)
    _, r2, c2 = acknowledge(st, ack)
    assert r1 is not None and r2 is not None and c1 is not None and c2 is not None
    assert encode(r1) == encode(r2) and c1.event_id == c2.event_id


def test_ack_of_a_sent_mail_is_refused() -> None:
    st, _ = run(request(), routed(), started(), attempted("accepted"))
    new, result, change = acknowledge(st, command("ack"))
    assert isinstance(result, QueueCommandRefused) and change is None
    assert result.reason == f"{MID} is sent: only failed mail can be acknowledged"
    assert new is not None and new.state == "sent" and not new.acknowledged


def test_ack_of_an_unknown_mail_is_refused() -> None:
    new, result, change = acknowledge(None, command("ack"))
    assert isinstance(result, QueueCommandRefused) and change is None
    assert result.reason == f"{MID} is unknown to the status projection"
    assert new is not None and not new.known


def test_own_answer_coming_back_is_a_duplicate() -> None:
    new, result, _ = acknowledge(failed_mail(), command("ack"))
    assert new is not None and result is not None
    again, ch = evolve(new, result)
    assert again is new and ch is None


def test_acknowledgement_is_cleared_when_the_mail_leaves_failed() -> None:
    st, _ = run(request(), routed(), started(), attempted("failed"))
    acked, _, _ = acknowledge(st, command("ack"))
    assert acked is not None and acked.acknowledged
    after, (ch,) = run(started(attempt=2, at=T0 + 30), start=acked)
    assert after.state == "sending" and not after.acknowledged
    assert ch is not None and ch.acknowledged is False


def test_ack_requires_an_ack_command() -> None:
    with pytest.raises(ValueError):
        acknowledge(failed_mail(), command("retry"))


def test_agent_apply_routes_ack_to_acknowledge_and_the_rest_to_evolve() -> None:
    st = failed_mail()
    new, result, change = apply(st, command("ack"))
    assert isinstance(result, QueueCommandApplied) and change is not None
    new2, result2, change2 = apply(new, command("retry"))
    assert result2 is None and new2 is not None
    assert change2 is not None and change2.note == f"retry requested by {OPS}"
    assert words(new2)[-1] == f"retry requested by {OPS}"


def test_status_round_trips_with_acknowledged() -> None:
    new, _, _ = acknowledge(failed_mail(), command("ack"))
    assert new is not None
    assert MessageStatus.from_dict(new.to_dict()) == new
    # a table value written before the field existed
    old = new.to_dict()
    del old["acknowledged"]
    assert MessageStatus.from_dict(old).acknowledged is False


@pytest.mark.parametrize("seconds,text", [
    (0, "0 s"), (45, "45 s"), (720, "12 min"), (3 * 3600 + 125, "3 h 2 min"),
    (7200, "2 h"), (2 * 86400 + 3 * 3600 + 5, "2 d 3 h"), (86400, "1 d"),
])
def test_duration_words(seconds: float, text: str) -> None:
    assert duration_words(seconds) == text
