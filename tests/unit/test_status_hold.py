"""The status projection holds a moving mail's changes across batches: one
row and one state change per mail once it is final or has waited ``hold``
seconds, answers and notes at once, inputs acknowledged only once written."""

from __future__ import annotations

from processors.status.batch import Held, hold_batch
from processors.status.core import MessageStatus, fold
from schemas import Event, MessageStatusChanged, QueueCommandIssued
from tests.unit.test_status_core import MID, OK, SOFT, attempted, request, routed, started

OTHER = "m-2"
HOLD = 1.0


def changes(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.message_id, e.previous, e.state) for e in events  # type: ignore[attr-defined]
            if isinstance(e, MessageStatusChanged)]


def run(held: dict[str, Held], events: list[Event | None], now: float,
        table: dict[str, MessageStatus] | None = None, max_held: int = 100,
        ) -> tuple[list[Event], dict[str, MessageStatus], list[object]]:
    rows = {} if table is None else table
    tokens: list[object] = [f"t{now}:{i}" for i in range(len(events))]
    out = hold_batch(held, rows.get, events, tokens, now, HOLD, max_held)
    rows.update(out.rows)
    return out.publish, out.rows, out.tokens


def test_a_moving_mail_over_several_batches_is_written_once_when_final() -> None:
    held: dict[str, Held] = {}
    table: dict[str, MessageStatus] = {}
    life: list[Event] = [request(), routed(), started(), attempted(OK)]
    pub, rows, acked = run(held, life[:1], 0.0, table)
    assert (pub, rows, acked) == ([], {}, [])  # held: nothing written, nothing acked
    pub, rows, acked = run(held, life[1:2], 0.3, table)
    assert (pub, rows, acked) == ([], {}, [])
    pub, rows, acked = run(held, life[2:], 0.6, table)
    assert changes(pub) == [(MID, "", "sent")]
    assert rows[MID] == fold(life)
    assert acked == ["t0.0:0", "t0.3:0", "t0.6:0", "t0.6:1"]  # every input, once written
    assert held == {}


def test_a_resting_mail_is_written_hold_seconds_after_its_first_change() -> None:
    held: dict[str, Held] = {}
    table: dict[str, MessageStatus] = {}
    run(held, [request(), routed()], 0.0, table)
    pub, rows, acked = run(held, [], 0.9, table)  # an idle wake: not yet
    assert rows == {} and acked == []
    pub, rows, acked = run(held, [], 1.0, table)
    assert changes(pub) == [(MID, "", "queued")] and rows[MID].state == "queued"
    assert acked == ["t0.0:0", "t0.0:1"]
    # the next change starts from the written row and is held anew
    pub, rows, acked = run(held, [started()], 5.0, table)
    assert rows == {} and MID in held
    pub, rows, acked = run(held, [], 5.9, table)
    assert rows == {}
    pub, rows, acked = run(held, [], 6.0, table)  # sending, stuck: written after `hold`
    assert changes(pub) == [(MID, "queued", "sending")]


def test_an_answer_or_note_writes_the_mail_at_once_in_log_order() -> None:
    held: dict[str, Held] = {}
    run(held, [request(), routed()], 0.0)
    cmd = QueueCommandIssued(message_id=MID, command="retry", operator="ops",
                             occurred_at=1_795_000_010.0)
    pub, rows, _ = run(held, [cmd], 0.1)
    kinds = [(e.state, e.note != "") for e in pub  # type: ignore[attr-defined]
             if isinstance(e, MessageStatusChanged)]
    assert kinds == [("queued", False), ("queued", True)]  # the held change first
    assert MID in rows and held == {}


def test_duplicates_and_unfoldable_inputs_are_acknowledged_at_once() -> None:
    held: dict[str, Held] = {}
    table: dict[str, MessageStatus] = {}
    req = request()
    run(held, [req, routed(), started(), attempted(OK)], 0.0, table)
    assert held == {}
    pub, rows, acked = run(held, [req, None], 0.1, table)  # redelivered, and a dead letter
    assert (pub, rows) == ([], {}) and acked == ["t0.1:0", "t0.1:1"]


def test_the_oldest_are_written_first_beyond_max_held() -> None:
    held: dict[str, Held] = {}
    run(held, [request()], 0.0, max_held=1)
    pub, rows, _ = run(held, [request(message_id=OTHER)], 0.1, max_held=1)
    assert list(rows) == [MID] and list(held) == [OTHER]


def test_mails_are_kept_apart() -> None:
    held: dict[str, Held] = {}
    run(held, [request(), request(message_id=OTHER)], 0.0)
    pub, rows, acked = run(held, [routed(), started(), attempted(OK)], 0.5)
    assert list(rows) == [MID] and list(held) == [OTHER]
    assert "t0.0:1" not in acked  # the other mail's request waits with it


def test_a_deferral_is_written_at_once_even_when_the_retry_follows_quickly() -> None:
    held: dict[str, Held] = {}
    run(held, [request(), routed(), started()], 0.0)
    pub, rows, _ = run(held, [attempted(SOFT, next_at=1_795_000_001.0)], 0.1)
    assert changes(pub) == [(MID, "", "deferred")] and rows[MID].state == "deferred"
