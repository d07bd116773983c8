"""A dead letter keeps a bounded excerpt of what it refused (it must fit the
broker's limit), with the whole input's size and digest."""

from __future__ import annotations

import base64
import hashlib
from typing import NamedTuple

from processors.deadletter import dead_letter_event
from schemas.deadletter import EXCERPT_BYTES, EventDeadLettered


class Message(NamedTuple):  # the fields a Faust Message carries that the dead letter reads
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def _letter(value: bytes) -> EventDeadLettered:
    return dead_letter_event("router", Message("t.send-requested", 0, 7, b"k", value), "bad")


def test_a_large_text_input_is_cut_at_a_character_and_says_so() -> None:
    raw = ("é" * EXCERPT_BYTES).encode()  # two bytes each: the cut falls inside one
    ev = _letter(raw)
    assert ev.truncated and ev.value_bytes == len(raw)
    assert ev.value == "é" * (EXCERPT_BYTES // 2)
    assert ev.value_sha256 == hashlib.sha256(raw).hexdigest()


def test_binary_input_is_kept_as_base64_and_small_input_whole() -> None:
    raw = b"\xff\x00" * EXCERPT_BYTES
    ev = _letter(raw)
    assert ev.value == "" and ev.truncated
    assert base64.b64decode(ev.value_b64) == raw[:EXCERPT_BYTES]
    small = _letter(b'{"a": 1}')
    assert small.value == '{"a": 1}' and not small.truncated
    assert _letter(b"").value_bytes == 0
