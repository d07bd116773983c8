"""The status table's row (``processors.status.agent.dump``): the fields at
their default that a row leaves out come back when it is read (``load``)."""

from __future__ import annotations

import orjson

from processors.status.agent import dump, load
from processors.status.core import evolve
from schemas import DeliveryAttempted, DeliveryStarted, SendRequested
from streams.tables import decode_row, encode_row


def test_a_row_leaves_out_defaults_and_reads_back_as_the_same_status() -> None:
    req = SendRequested(message_id="m1", from_="a@x.test", to=["b@y.test"], subject="s",
                        text="t", occurred_at=100.0)
    queued, _ = evolve(None, req)
    sending, _ = evolve(queued, DeliveryStarted(message_id="m1", attempt=1, server="s1",
                                                recipients=["b@y.test"], occurred_at=101.0))
    deferred, _ = evolve(sending, DeliveryAttempted(
        message_id="m1", attempt=1, server="s1", occurred_at=103.0, next_attempt_at=200.0,
        outcomes=[{"recipient": "b@y.test", "status": "deferred", "code": 451, "text": "later"}]))
    sent, _ = evolve(deferred, DeliveryAttempted(
        message_id="m1", attempt=2, server="s1", occurred_at=203.0,
        outcomes=[{"recipient": "b@y.test", "status": "accepted", "code": 250}]))
    for st in (queued, sending, deferred, sent):
        assert st is not None
        raw = encode_row(dump(st))
        assert load(decode_row(raw)) == st
        row = orjson.loads(raw)
        assert list(row)[:2] == ["message_id", "state"]  # mail_states reads state first
    assert deferred is not None and sent is not None
    assert orjson.loads(encode_row(dump(deferred)))["next_attempt_at"] == 200.0
    assert not {"reason", "next_attempt_at", "acknowledged"} & set(
        orjson.loads(encode_row(dump(sent))))
