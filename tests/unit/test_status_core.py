"""The status projection's fold: every transition, out of order, duplicates."""

from __future__ import annotations

from typing import Any

import pytest

from processors.status.core import (
    MessageStatus,
    answer_text,
    evolve,
    fold,
    progress_of,
    utc_words,
)
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MessageStatusChanged,
    RoutingDecided,
    SendRequested,
    decode,
    encode,
)

MID = "m-1"
T0 = 1_795_000_000.0  # 2026-11-18 11:06 UTC


def request(**kw: Any) -> SendRequested:
    fields: dict[str, Any] = dict(
        message_id=MID, from_='"Admin" <admin@example.com>', to=["Bob <bob@dest.test>"],
        subject="Invoice 42", text="hello", occurred_at=T0,
    )
    fields.update(kw)
    return SendRequested(**fields)


def routed(server: str = "primary", **kw: Any) -> RoutingDecided:
    fields: dict[str, Any] = dict(
        message_id=MID, outcome="routed", server=server, header_from="admin@example.com",
        envelope_from="bounce@example.com", rule="from_filter_domain", reason="because",
        request=request().to_representation(), occurred_at=T0 + 1,
    )
    fields.update(kw)
    return RoutingDecided(**fields)


def started(attempt: int = 1, recipients: list[str] | None = None, server: str = "primary",
            at: float = T0 + 2) -> DeliveryStarted:
    return DeliveryStarted(message_id=MID, attempt=attempt, server=server,
                           recipients=recipients or ["bob@dest.test"], occurred_at=at)


def outcome(rcpt: str, status: str, code: int, enhanced: str, text: str) -> dict[str, Any]:
    return {"recipient": rcpt, "status": status, "code": code, "enhanced": enhanced,
            "text": text}


OK = outcome("bob@dest.test", "accepted", 250, "2.0.0", "Ok: queued as ABC")
SOFT = outcome("bob@dest.test", "deferred", 451, "4.7.1", "try later")
HARD = outcome("bob@dest.test", "failed", 550, "5.1.1", "no such user")


def attempted(*outcomes: dict[str, Any], attempt: int = 1, next_at: float = 0.0,
              server: str = "primary", at: float = T0 + 3, **kw: Any) -> DeliveryAttempted:
    return DeliveryAttempted(message_id=MID, attempt=attempt, server=server,
                             outcomes=list(outcomes), next_attempt_at=next_at, occurred_at=at,
                             **kw)


def run(*events: Event) -> tuple[MessageStatus, list[MessageStatusChanged | None]]:
    st: MessageStatus | None = None
    changes: list[MessageStatusChanged | None] = []
    for e in events:
        st, ch = evolve(st, e)
        changes.append(ch)
    assert st is not None
    return st, changes


# --- one transition at a time -----------------------------------------------------------------


def test_send_requested_is_queued_with_summary() -> None:
    st, (ch,) = run(request(cc=["carol@dest.test"], bcc=["Bob <BOB@dest.test>"]))
    assert st.state == "queued" and st.reason == ""
    assert (st.subject, st.from_, st.to) == ("Invoice 42", '"Admin" <admin@example.com>',
                                             ["Bob <bob@dest.test>"])
    assert list(st.recipients) == ["bob@dest.test", "carol@dest.test"]  # bcc dup folded
    assert st.recipients["bob@dest.test"]["state"] == "queued"
    assert st.created_at == st.updated_at == T0
    assert ch is not None and ch.state == "queued" and ch.previous == ""
    assert ch.message_id == MID and ch.occurred_at == T0


def test_scheduled_request_says_when() -> None:
    st, _ = run(request(send_at=T0 + 3600))
    assert st.state == "queued"
    assert st.reason == f"scheduled for {utc_words(T0 + 3600)}"


def test_routed_stays_queued_with_server() -> None:
    st, (_, ch) = run(request(), routed())
    assert (st.state, st.server, st.reason) == ("queued", "primary", "routed to primary")
    assert ch is not None and (ch.previous, ch.state, ch.server) == ("queued", "queued", "primary")


def test_no_server_fails_with_reason() -> None:
    d = routed(outcome="no_server", server="", header_from="", rule="none",
               reason="no outgoing server is configured: add one")
    st, (_, ch) = run(request(), d)
    assert st.state == "failed"
    assert st.reason == "no outgoing server is configured: add one"
    assert ch is not None and ch.previous == "queued"


def test_rejected() -> None:
    d = routed(outcome="rejected", server="", header_from="", rule="none",
               reason="From 'x' is not usable")
    st, _ = run(request(), d)
    assert (st.state, st.reason) == ("rejected", "From 'x' is not usable")


def test_delivery_started_is_sending() -> None:
    st, changes = run(request(), routed(), started())
    assert (st.state, st.server, st.attempt) == ("sending", "primary", 1)
    assert st.recipients["bob@dest.test"] == {
        "state": "sending", "code": 0, "enhanced": "", "text": "", "server": "primary",
        "attempt": 1,
    }
    assert changes[-1] is not None and changes[-1].previous == "queued"


def test_all_accepted_is_sent() -> None:
    st, changes = run(request(), routed(), started(), attempted(OK))
    assert (st.state, st.reason, st.next_attempt_at) == ("sent", "", 0.0)
    assert st.recipients["bob@dest.test"] == {
        "state": "sent", "code": 250, "enhanced": "2.0.0", "text": "Ok: queued as ABC",
        "server": "primary", "attempt": 1,
    }
    ch = changes[-1]
    assert ch is not None and (ch.previous, ch.state) == ("sending", "sent")
    assert ch.recipients["bob@dest.test"]["code"] == 250
    assert [h["state"] for h in st.history] == ["queued", "queued", "sending", "sent"]
    assert [h["event"] for h in st.history] == [
        "SendRequested", "RoutingDecided", "DeliveryStarted", "DeliveryAttempted"]


def test_permanent_failure_is_failed_with_answer() -> None:
    st, _ = run(request(), routed(), started(), attempted(HARD))
    assert st.state == "failed"
    assert st.reason == "550 5.1.1 no such user (server primary)"
    assert st.recipients["bob@dest.test"]["state"] == "failed"


def test_deferred_says_next_attempt_in_utc_words() -> None:
    next_at = 1_795_345_500.0  # 2026-11-22 11:05 UTC
    st, _ = run(request(), routed(), started(), attempted(SOFT, next_at=next_at))
    assert st.state == "deferred"
    assert st.reason == (
        "deferred: 451 4.7.1 try later (server primary); next attempt 2026-11-22 11:05 UTC"
    )
    assert st.next_attempt_at == next_at


def test_deferred_via_another_server() -> None:
    st, _ = run(request(), routed(), started(),
                attempted(SOFT, next_at=T0 + 600, next_server="backup"))
    assert st.reason.endswith(f"next attempt {utc_words(T0 + 600)} via backup")


def test_deferred_then_sent() -> None:
    st, changes = run(
        request(), routed(), started(), attempted(SOFT, next_at=T0 + 300),
        started(attempt=2, at=T0 + 300), attempted(OK, attempt=2, at=T0 + 301),
    )
    assert [c.state if c else None for c in changes] == [
        "queued", "queued", "sending", "deferred", "sending", "sent"]
    assert (st.state, st.attempt, st.next_attempt_at) == ("sent", 2, 0.0)
    assert st.recipients["bob@dest.test"]["attempt"] == 2


def test_gave_up_after_retries_is_failed() -> None:
    st, _ = run(
        request(), routed(), started(), attempted(SOFT, next_at=T0 + 300),
        started(attempt=2, at=T0 + 300), attempted(SOFT, attempt=2, next_at=0, at=T0 + 301),
    )
    assert st.state == "failed"
    assert st.reason == "gave up after 2 attempts: 451 4.7.1 try later (server primary)"
    assert st.recipients["bob@dest.test"]["state"] == "failed"
    assert st.recipients["bob@dest.test"]["code"] == 451


def test_gave_up_after_one_attempt_grammar() -> None:
    st, _ = run(request(), routed(), started(), attempted(SOFT, next_at=0))
    assert st.reason.startswith("gave up after 1 attempt: ")


# --- several recipients -------------------------------------------------------------------------


TWO = ["bob@dest.test", "carol@other.test"]


def two_request() -> SendRequested:
    return request(to=["bob@dest.test", "carol@other.test"])


def test_partial_failure_lists_each_failed_recipient() -> None:
    st, _ = run(
        two_request(), routed(), started(recipients=TWO),
        attempted(OK, outcome("carol@other.test", "failed", 550, "5.1.1", "unknown user")),
    )
    assert st.state == "failed"
    assert st.reason == (
        "1 of 2 recipients failed: carol@other.test: 550 5.1.1 unknown user (server primary)"
    )
    assert st.recipients["bob@dest.test"]["state"] == "sent"
    assert st.recipients["carol@other.test"]["state"] == "failed"


def test_some_deferred_some_sent_is_deferred_then_only_retried_ones() -> None:
    soft_carol = outcome("carol@other.test", "deferred", 421, "4.4.2", "timeout")
    st, _ = run(two_request(), routed(), started(recipients=TWO),
                attempted(OK, soft_carol, next_at=T0 + 300))
    assert st.state == "deferred"
    assert st.reason.startswith("deferred: carol@other.test: 421 4.4.2 timeout (server primary)")
    # the retry carries only carol; bob stays sent
    ok_carol = outcome("carol@other.test", "accepted", 250, "2.0.0", "ok")
    st2, _ = run(two_request(), routed(), started(recipients=TWO),
                 attempted(OK, soft_carol, next_at=T0 + 300),
                 started(attempt=2, recipients=["carol@other.test"], at=T0 + 300),
                 attempted(ok_carol, attempt=2, at=T0 + 301))
    assert st2.state == "sent"
    assert st2.recipients["bob@dest.test"]["attempt"] == 1
    assert st2.recipients["carol@other.test"]["attempt"] == 2


def test_same_answer_groups_addresses() -> None:
    both = [outcome(a, "failed", 554, "5.7.1", "relay denied") for a in TWO]
    st, _ = run(two_request(), routed(), started(recipients=TWO), attempted(*both))
    assert st.reason == "bob@dest.test, carol@other.test: 554 5.7.1 relay denied (server primary)"


def test_session_error_without_outcomes() -> None:
    st, _ = run(request(), routed(), started(),
                attempted(next_at=T0 + 60, error="connection refused by smtp.example.com:587"))
    assert st.state == "deferred"
    assert st.recipients["bob@dest.test"]["state"] == "deferred"
    assert st.recipients["bob@dest.test"]["text"] == "connection refused by smtp.example.com:587"
    st2, _ = run(request(), routed(), started(), attempted(error="authentication failed"))
    assert st2.state == "failed"
    assert "authentication failed" in st2.reason


def test_recipient_case_is_merged() -> None:
    st, _ = run(request(to=["Bob@Dest.test"]), routed(), started(recipients=["bob@dest.test"]),
                attempted(OK))
    assert list(st.recipients) == ["Bob@Dest.test"]
    assert st.state == "sent"


# --- out of order -------------------------------------------------------------------------------


def test_request_after_routing_does_not_reset() -> None:
    st, changes = run(routed(), request())
    assert (st.state, st.server) == ("queued", "primary")
    assert st.subject == "Invoice 42"  # the routing event carried the request
    assert changes[1] is None
    assert st.history[-1]["reason"].startswith("arrived out of order")


def test_request_after_sent_keeps_sent_and_fills_summary() -> None:
    st, changes = run(started(), attempted(OK), routed(), request())
    assert st.state == "sent"
    assert changes[2] is None and changes[3] is None
    assert st.subject == "Invoice 42"
    assert st.history[-1]["reason"] == "arrived after the mail was sent: state kept"
    assert st.created_at == T0


def test_delivery_before_routing_and_request() -> None:
    st, changes = run(started(), routed(), request())
    assert st.state == "sending"
    assert [c is None for c in changes] == [False, True, True]


def test_old_started_after_outcome_is_ignored() -> None:
    st, changes = run(request(), routed(), started(), attempted(OK),
                      started())  # a redelivered start, new event_id
    assert st.state == "sent"
    assert changes[-1] is None


def test_final_never_regresses_on_older_events() -> None:
    for final_event in (attempted(HARD), attempted(OK)):
        st, _ = run(request(), routed(), started(), final_event)
        before = st.state
        for older in (request(), routed(), started()):
            st, ch = evolve(st, older)
            assert ch is None
            assert st.state == before


def test_rejected_is_kept_against_later_events() -> None:
    d = routed(outcome="rejected", server="", header_from="", rule="none", reason="bad From")
    st, _ = run(d, request())
    assert st.state == "rejected"


def test_failed_may_be_retried_by_a_newer_attempt() -> None:
    st, _ = run(request(), routed(), started(), attempted(HARD),
                started(attempt=2, at=T0 + 100))
    assert (st.state, st.attempt) == ("sending", 2)


def test_sent_is_not_left_even_by_a_newer_attempt() -> None:
    st, changes = run(request(), routed(), started(), attempted(OK),
                      started(attempt=2, at=T0 + 100))
    assert st.state == "sent" and changes[-1] is None


def test_older_outcome_fills_unknown_recipient_only() -> None:
    st, _ = run(started(attempt=2, recipients=["bob@dest.test"]),
                attempted(OK, attempt=2))
    carol = outcome("carol@other.test", "failed", 550, "5.1.1", "no")
    bob_soft = SOFT
    st, ch = evolve(st, attempted(bob_soft, carol, attempt=1, next_at=T0 + 10))
    assert st.state == "sent"
    assert st.recipients["bob@dest.test"]["state"] == "sent"
    assert st.recipients["carol@other.test"]["state"] == "failed"
    assert ch is not None and ch.previous == ch.state == "sent"


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicate_event_is_ignored() -> None:
    events = [request(), routed(), started(), attempted(SOFT, next_at=T0 + 60)]
    st, _ = run(*events)
    for e in events:
        st2, ch = evolve(st, e)
        assert ch is None
        assert st2 is st
    assert len(st.history) == 4


def test_same_fact_with_new_event_id_changes_nothing_visible() -> None:
    st, _ = run(request(), routed())
    st2, ch = evolve(st, routed())  # the router decided again after a redelivery
    assert ch is None
    assert len(st2.history) == 3


def test_change_event_id_is_derived_from_the_cause() -> None:
    e = request()
    _, a = evolve(None, e)
    _, b = evolve(None, e)
    assert a is not None and b is not None
    assert a.event_id == b.event_id != e.event_id


def test_evolve_does_not_modify_its_input() -> None:
    st, _ = run(request(), routed(), started())
    snapshot = st.to_dict()
    evolve(st, attempted(OK))
    assert st.to_dict() == snapshot


# --- representation -------------------------------------------------------------------------


def test_dict_round_trip() -> None:
    st, _ = run(two_request(), routed(), started(recipients=TWO), attempted(OK, HARD))
    d = st.to_dict()
    assert MessageStatus.from_dict(d) == st
    assert MessageStatus.from_dict({**d, "future_field": 1}) == st
    assert d["history"][0] == {
        "at": T0, "state": "queued", "reason": "", "event": "SendRequested",
        "event_id": d["history"][0]["event_id"],
    }


def test_change_event_encodes_and_decodes() -> None:
    _, changes = run(request(), routed(), started(), attempted(OK))
    for ch in changes:
        assert ch is not None
        assert decode(MessageStatusChanged, encode(ch)).to_representation() == \
            ch.to_representation()


def test_fold_and_progress() -> None:
    assert fold([]) is None
    st = fold([request(), routed()])
    assert st is not None and st.progress == [1, 0, 0]
    assert progress_of(started(2)) < progress_of(attempted(OK, attempt=2)) < \
        progress_of(started(3))
    with pytest.raises(TypeError):
        progress_of(MessageStatusChanged(message_id=MID, state="sent"))


def test_answer_text() -> None:
    assert answer_text({"code": 0, "enhanced": "", "text": "", "server": ""}) == "no answer"
    assert answer_text({"code": 421, "text": "busy", "server": "s"}) == "421 busy (server s)"


# --- the CLI's read side (pure parts) ---------------------------------------------------------


def test_partition_for_matches_the_producers_partitioners() -> None:
    from aiokafka.partitioner import DefaultPartitioner as AioPartitioner

    from postlane.statusview import partition_for

    for i in range(200):
        key = f"msg-{i}".encode()
        for n in (1, 3, 4, 12):
            parts = list(range(n))
            assert partition_for(key, set(parts)) == AioPartitioner()(key, parts, parts)


def test_fold_change_keeps_the_latest_and_drops_repeats() -> None:
    from postlane.statusview import fold_change

    _, changes = run(request(), routed(), started(), attempted(OK))
    view: dict[str, Any] | None = None
    for ch in changes:
        assert ch is not None
        view = fold_change(view, ch)
        view = fold_change(view, ch)  # a redelivered change counts once
    assert view is not None
    assert (view["state"], view["server"], view["attempt"]) == ("sent", "primary", 1)
    assert view["recipients"]["bob@dest.test"]["code"] == 250
    assert [h["state"] for h in view["history"]] == ["queued", "queued", "sending", "sent"]
    assert view["history"][-1]["previous"] == "sending"
