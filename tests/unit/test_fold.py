"""The one keyed fold (processors/fold.py: decode -> key check -> fold ->
dead-letter -> write) as the blacklist and bounces agents use it, over a
table in the one row encoding (streams.tables.Rows); and its decode and
key check alone (``admit``), as the status projection uses it."""

from __future__ import annotations

from typing import Any

import orjson

from processors.blacklist.agent import counting
from processors.blacklist.core import Rules
from processors.bounces.agent import attribution_fold, outage_fold
from processors.bounces.core import BurstRules
from processors.fold import Check, admit, step
from processors.status.agent import admit_status, checker
from schemas import (
    BlacklistChanged,
    DeliveryAttempted,
    DeliveryStarted,
    QueueCommandIssued,
    SendRequested,
    encode,
)
from streams.settings import Settings
from streams.tables import Rows
from streams.topics import (
    BLACKLIST,
    BOUNCE_DOMAINS,
    COMMANDS,
    DELIVERY,
    RELEASED,
    SEND_REQUESTED,
)
from tests.unit.test_blacklist_core import ADDR, T0, bounce, rb

OWN = "postlane.bounce-attribution"


def rows_of(rows: dict[bytes, bytes] | None = None) -> Rows:
    return Rows(dict(rows or {}))


def apply(spec: Any, table: Rows, value: bytes, key: bytes, topic: str = "t"):
    did = step(spec, topic, key, value, table.get)
    if did.kind == "write" and did.row is not None:
        table[did.key] = did.row
    return did


def test_the_blacklist_folds_per_address_and_sends_the_change() -> None:
    spec, table = counting(Rules.from_settings(Settings(bounce_weight_hard=5))), rows_of()
    did = apply(spec, table, encode(bounce(0)), ADDR.encode())
    assert did.kind == "write" and did.key == ADDR.encode()
    [(topic, key, change)] = did.outputs
    assert topic is BLACKLIST and key == ADDR and isinstance(change, BlacklistChanged)
    assert table[ADDR.encode()]["blacklisted"] is True
    assert orjson.loads(table.table[ADDR.encode()])["blacklisted"] is True  # as logged
    again = apply(spec, table, encode(bounce(0)), ADDR.encode())  # redelivered
    assert again.kind == "write" and again.outputs == []


def test_a_mis_keyed_or_invalid_record_is_dead_lettered_and_nothing_written() -> None:
    spec, table = counting(Rules()), rows_of()
    did = apply(spec, table, encode(bounce(0)), b"someone@else.example")
    assert did.kind == "dead_letter" and "is not the address 'bob@example.net'" in did.reason
    did = apply(spec, table, b"{not json", ADDR.encode())
    assert did.kind == "dead_letter" and did.reason
    assert len(table) == 0


def test_a_fold_that_raises_dead_letters_the_input_and_keeps_the_row() -> None:
    spec, rows = outage_fold(BurstRules()), rows_of({b"big.example": b'"not a row"'})
    did = apply(spec, rows, encode(rb(1, T0)), b"big.example")
    assert did.kind == "dead_letter" and did.reason.startswith("outage check failed:")
    assert rows.table == {b"big.example": b'"not a row"'}


def test_the_outage_check_writes_its_row_and_passes_the_bounce_on() -> None:
    spec, table = outage_fold(BurstRules()), rows_of()
    did = apply(spec, table, encode(rb(1, T0)), b"big.example")
    assert did.kind == "write" and b"big.example" in table and did.outputs


def test_attribution_remembers_recipients_then_attributes_a_bounce() -> None:
    spec, table = attribution_fold(OWN), rows_of()
    started = DeliveryStarted(message_id="m1", attempt=1, server="s",
                              recipients=["User1@Big.Example"])
    assert apply(spec, table, encode(started), b"m1", "postlane.delivery").kind == "write"
    assert table[b"m1"] == ["user1@big.example"]
    bounced = rb(1, T0).__class__(**{**rb(1, T0).asdict(), "message_id": "m1"})
    did = apply(spec, table, encode(bounced), b"m1", OWN)
    assert did.kind == "write" and did.row is None  # attributed, the row unchanged
    assert [(t, k) for t, k, _ in did.outputs] == [(BOUNCE_DOMAINS, "big.example")]


def test_attribution_judges_only_its_own_topic() -> None:
    spec, table = attribution_fold(OWN), rows_of()
    attempted = DeliveryAttempted(message_id="m1", attempt=1, server="s", outcomes=[])
    assert apply(spec, table, encode(attempted), b"m1", "postlane.delivery").kind == "skip"
    assert apply(spec, table, b"junk", b"m1", "postlane.delivery").kind == "skip"
    started = DeliveryStarted(message_id="m1", attempt=1, server="s", recipients=["a@b.c"])
    assert apply(spec, table, encode(started), b"other", "postlane.delivery").kind == "skip"
    assert apply(spec, table, b"junk", b"m1", OWN).kind == "dead_letter"
    assert len(table) == 0


# --- admit alone: the status projection's decode and key check ---------------------------

S = Settings()


def test_admit_reads_an_untyped_record_as_its_topic_says() -> None:
    check = checker(S)
    request = orjson.loads(encode(SendRequested(message_id="m1", from_="a@b.c", to=["d@e.f"],
                                                subject="s", text="t")))
    del request["type"]
    raw = orjson.dumps(request)
    did = admit(check, SEND_REQUESTED.full(S), b"m1", raw)
    assert did.kind == "admit" and did.key == b"m1" and isinstance(did.event, SendRequested)
    assert admit(check, DELIVERY.full(S), b"m1", raw).kind == "dead_letter"


def test_admit_refuses_a_mis_keyed_or_unknown_record_with_the_reason() -> None:
    check = checker(S)
    cmd = encode(QueueCommandIssued(message_id="m1", command="ack"))
    did = admit(check, COMMANDS.full(S), b"other-mail", cmd)
    assert did.kind == "dead_letter" and isinstance(did.event, QueueCommandIssued)
    assert "is not the message_id 'm1'" in did.reason
    junk = admit(check, COMMANDS.full(S), b"m1", b"{not json")
    assert junk.kind == "dead_letter" and junk.event is None and junk.reason
    other = encode(BlacklistChanged(address=ADDR, blacklisted=True, reason="r"))
    assert admit(check, COMMANDS.full(S), ADDR.encode(), other).kind == "dead_letter"


def test_admit_skips_what_another_processor_judges() -> None:
    check = Check("p", {"DeliveryStarted": DeliveryStarted}, key_of=lambda ev: "m1",
                  what="the message_id", judges=lambda topic: topic == "mine")
    assert admit(check, "theirs", b"m1", b"junk").kind == "skip"
    assert admit(check, "mine", b"m1", b"junk").kind == "dead_letter"


def test_status_skips_the_limiters_forwarded_command_only_on_released() -> None:
    check, released = checker(S), RELEASED.full(S)
    cmd = encode(QueueCommandIssued(message_id="m1", command="retry"))
    forwarded = admit_status(check, released, released, b"m1", cmd)
    assert forwarded.kind == "skip" and isinstance(forwarded.event, QueueCommandIssued)
    original = admit_status(check, released, COMMANDS.full(S), b"m1", cmd)
    assert original.kind == "admit" and isinstance(original.event, QueueCommandIssued)
    bad = admit_status(check, released, released, b"m2", cmd)  # still judged on released
    assert bad.kind == "dead_letter"
