"""streams/partitioning.py: the workers' partitioner puts every key where
aiokafka's (and the Java client's) default partitioner does."""

from __future__ import annotations

import uuid

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from streams.partitioning import partition_for, partitioner


@given(st.binary(max_size=64), st.integers(min_value=1, max_value=64))
def test_same_partition_as_aiokafka_for_any_key(key: bytes, n: int) -> None:
    parts = list(range(n))
    want = DefaultPartitioner()(key, parts, parts)
    assert partitioner(key, parts, parts) == want
    assert partitioner(key, parts, parts) == want  # remembered: the same again
    assert partitioner(bytearray(key), parts, parts) == want
    assert partition_for(key, n) == want


def test_message_ids_as_the_producers_place_them() -> None:
    parts = [0, 1, 2, 3]
    for _ in range(2000):
        mid = f"<{uuid.uuid4()}@example.test>".encode()
        assert partitioner(mid, parts, parts) == DefaultPartitioner()(mid, parts, parts)
        assert partition_for(mid.decode(), 4) == DefaultPartitioner()(mid, parts, parts)


def test_a_key_less_record_goes_to_an_available_partition() -> None:
    assert partitioner(None, [0, 1, 2], [2]) == 2
    assert partitioner(None, [0, 1, 2], []) in (0, 1, 2)
