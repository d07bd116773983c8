"""The one keyed fold (processors/fold.py: decode -> key check -> fold ->
dead-letter -> write) as the blacklist and bounces agents use it."""

from __future__ import annotations

from typing import Any

import orjson

from processors.blacklist.agent import counting
from processors.blacklist.core import Rules
from processors.bounces.agent import attribution_fold, outage_fold
from processors.bounces.core import BurstRules
from processors.fold import step
from schemas import BlacklistChanged, DeliveryAttempted, DeliveryStarted, encode
from streams.settings import Settings
from streams.topics import BLACKLIST, BOUNCE_DOMAINS
from tests.unit.test_blacklist_core import ADDR, T0, bounce, rb

OWN = "postlane.bounce-attribution"


def apply(spec: Any, table: dict[bytes, bytes], value: bytes, key: bytes, topic: str = "t"):
    did = step(spec, topic, key, value, table.get)
    if did.kind == "write" and did.row is not None:
        table[did.key] = did.row
    return did


def test_the_blacklist_folds_per_address_and_sends_the_change() -> None:
    spec, table = counting(Rules.from_settings(Settings(bounce_weight_hard=5))), {}
    did = apply(spec, table, encode(bounce(0)), ADDR.encode())
    assert did.kind == "write" and did.key == ADDR.encode()
    [(topic, key, change)] = did.outputs
    assert topic is BLACKLIST and key == ADDR and isinstance(change, BlacklistChanged)
    assert orjson.loads(table[ADDR.encode()])["blacklisted"] is True
    again = apply(spec, table, encode(bounce(0)), ADDR.encode())  # redelivered
    assert again.kind == "write" and again.outputs == []


def test_a_mis_keyed_or_invalid_record_is_dead_lettered_and_nothing_written() -> None:
    spec, table = counting(Rules()), {}
    did = apply(spec, table, encode(bounce(0)), b"someone@else.example")
    assert did.kind == "dead_letter" and "is not the address 'bob@example.net'" in did.reason
    did = apply(spec, table, b"{not json", ADDR.encode())
    assert did.kind == "dead_letter" and did.reason
    assert table == {}


def test_a_fold_that_raises_dead_letters_the_input_and_keeps_the_row() -> None:
    spec, table = outage_fold(BurstRules()), {b"big.example": b'"not a row"'}
    did = apply(spec, table, encode(rb(1, T0)), b"big.example")
    assert did.kind == "dead_letter" and did.reason.startswith("outage check failed:")
    assert table == {b"big.example": b'"not a row"'}


def test_the_outage_check_writes_its_row_and_passes_the_bounce_on() -> None:
    spec, table = outage_fold(BurstRules()), {}
    did = apply(spec, table, encode(rb(1, T0)), b"big.example")
    assert did.kind == "write" and b"big.example" in table and did.outputs


def test_attribution_remembers_recipients_then_attributes_a_bounce() -> None:
    spec, table = attribution_fold(OWN), {}
    started = DeliveryStarted(message_id="m1", attempt=1, server="s",
                              recipients=["User1@Big.Example"])
    assert apply(spec, table, encode(started), b"m1", "postlane.delivery").kind == "write"
    assert orjson.loads(table[b"m1"]) == ["user1@big.example"]
    bounced = rb(1, T0).__class__(**{**rb(1, T0).asdict(), "message_id": "m1"})
    did = apply(spec, table, encode(bounced), b"m1", OWN)
    assert did.kind == "write" and did.row is None  # attributed, the row unchanged
    assert [(t, k) for t, k, _ in did.outputs] == [(BOUNCE_DOMAINS, "big.example")]


def test_attribution_judges_only_its_own_topic() -> None:
    spec, table = attribution_fold(OWN), {}
    attempted = DeliveryAttempted(message_id="m1", attempt=1, server="s", outcomes=[])
    assert apply(spec, table, encode(attempted), b"m1", "postlane.delivery").kind == "skip"
    assert apply(spec, table, b"junk", b"m1", "postlane.delivery").kind == "skip"
    started = DeliveryStarted(message_id="m1", attempt=1, server="s", recipients=["a@b.c"])
    assert apply(spec, table, encode(started), b"other", "postlane.delivery").kind == "skip"
    assert apply(spec, table, b"junk", b"m1", OWN).kind == "dead_letter"
    assert table == {}


def test_admit_reads_an_untyped_record_as_its_topic_says() -> None:
    from processors.fold import Fold, admit
    from schemas import SendRequested

    spec = Fold("status", {"SendRequested": SendRequested}, key_of=lambda ev: ev.message_id,
                what="the message_id", load=orjson.loads, dump=orjson.dumps,
                fold=lambda row, ev: (row, []),
                untyped={"postlane.send-requested": "SendRequested"})
    request = orjson.loads(encode(SendRequested(message_id="m1", from_="a@b.c", to=["d@e.f"],
                                                subject="s", text="t")))
    del request["type"]
    raw = orjson.dumps(request)
    did = admit(spec, "postlane.send-requested", b"m1", raw)
    assert did.kind == "write" and did.key == b"m1" and isinstance(did.event, SendRequested)
    assert admit(spec, "postlane.other", b"m1", raw).kind == "dead_letter"
