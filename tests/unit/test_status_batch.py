"""The status projection's batch fold: one row and one state change per mail
per batch, history-only changes kept in their place, bad events reported."""

from __future__ import annotations

from processors.status.batch import fold_batch
from processors.status.core import MessageStatus, fold
from schemas import Event, MessageStatusChanged, QueueCommandIssued, QueueCommandRefused
from tests.unit.test_status_core import MID, OK, SOFT, attempted, request, routed, started

OTHER = "m-2"


def changes(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.message_id, e.previous, e.state) for e in events  # type: ignore[attr-defined]
            if isinstance(e, MessageStatusChanged)]


def test_a_mail_in_one_batch_is_one_row_and_one_change() -> None:
    events: list[Event | None] = [request(), routed(), started(), attempted(OK)]
    out = fold_batch(lambda mid: None, events)
    assert list(out.rows) == [MID]
    # the row is what folding one event at a time gives
    assert out.rows[MID] == fold(list(e for e in events if e is not None))
    assert out.rows[MID].state == "sent"
    assert changes(out.publish) == [(MID, "", "sent")]
    # the change's id is the last change's: a redelivered batch gives the same
    assert out.publish[0].event_id == fold_batch(lambda mid: None, events).publish[0].event_id
    assert out.failed == []


def test_the_next_batch_starts_from_the_loaded_row() -> None:
    start = started()
    first = fold_batch(lambda mid: None, [request(), routed(), start])
    assert changes(first.publish) == [(MID, "", "sending")]
    rows: dict[str, MessageStatus] = dict(first.rows)
    second = fold_batch(rows.get, [attempted(SOFT, next_at=1_795_000_900.0)])
    assert changes(second.publish) == [(MID, "sending", "deferred")]
    # a redelivered event already folded changes nothing
    again = fold_batch(dict(second.rows).get, [start])
    assert again.rows == {} and again.publish == []


def test_mails_are_kept_apart() -> None:
    other = request(message_id=OTHER)
    out = fold_batch(lambda mid: None, [request(), other, routed()])
    assert set(out.rows) == {MID, OTHER}
    assert sorted(changes(out.publish)) == [(MID, "", "queued"), (OTHER, "", "queued")]


def test_a_history_entry_follows_the_state_change_before_it() -> None:
    cmd = QueueCommandIssued(message_id=MID, command="retry", operator="ops",
                             occurred_at=1_795_000_010.0)
    refused = QueueCommandRefused(message_id=MID, command_id=cmd.event_id, command="retry",
                                  by="delivery", reason="it was sent",
                                  occurred_at=1_795_000_011.0)
    out = fold_batch(lambda mid: None, [request(), routed(), cmd, started(), refused])
    kinds = [(e.state, e.note != "") for e in out.publish  # type: ignore[attr-defined]
             if isinstance(e, MessageStatusChanged)]
    # queued (pending) is published before the command's entry, then the
    # start and the answer's entry in their order
    assert kinds == [("queued", False), ("queued", True), ("sending", False), ("sending", True)]


def test_an_event_that_cannot_be_folded_is_reported_and_the_rest_go_on() -> None:
    def load(mid: str) -> MessageStatus | None:
        if mid == OTHER:
            raise ValueError("broken row")
        return None

    out = fold_batch(load, [None, request(message_id=OTHER), request()])
    assert out.failed == [(1, "status projection failed: ValueError('broken row')")]
    assert list(out.rows) == [MID]
