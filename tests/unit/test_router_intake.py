"""The router's intake (pure): what happens to a request it cannot carry or read."""

from __future__ import annotations

import orjson

from processors.router.intake import ENVELOPE_BYTES, carried_limit, take
from schemas import SendRequested


def _raw(mid: str = "m-1", **fields: object) -> bytes:
    data = dict(SendRequested(message_id=mid, from_="a@a.test", to=["b@b.test"],
                              text="hi").to_representation())
    data.update(fields)
    return orjson.dumps(data)


def test_a_good_request_is_routed_with_or_without_its_type() -> None:
    assert take(_raw(), b"m-1", 1 << 20).request is not None
    data = orjson.loads(_raw())
    del data["type"]
    assert take(orjson.dumps(data), b"m-1", 1 << 20).request is not None


def test_too_large_is_rejected_with_the_sizes_in_words() -> None:
    raw = _raw(text="x" * 200_000)
    taken = take(raw, b"m-1", 100_000 + ENVELOPE_BYTES)
    assert taken.request is None
    assert f"is {len(raw)} bytes encoded, over the 100000 bytes" in taken.error
    assert taken.answer is not None and taken.answer.outcome == "rejected"
    assert taken.answer.message_id == "m-1" and "send a link" in taken.answer.reason
    assert carried_limit(10) == 0


def test_unreadable_is_rejected_only_when_the_id_is_the_key() -> None:
    bad = _raw(to="not-a-list")
    taken = take(bad, b"m-1", 1 << 20)
    assert taken.request is None and taken.answer is not None
    assert taken.answer.reason.startswith("rejected before routing: invalid SendRequested")
    # keyed by something else: the answer would land on another partition
    assert take(bad, b"other", 1 << 20).answer is None
    for raw in (b"{not json", b"[1]", orjson.dumps({"message_id": "a\nb"}), None):
        taken = take(raw, b"a\nb", 1 << 20)
        assert taken.request is None and taken.error and taken.answer is None
