"""Which partition a key lands on: the producers' default partitioner
(murmur2, as the Java client, aiokafka and kafka-python), so a processor
can tell which keys a partition it holds is responsible for.

``partitioner`` is aiokafka's ``DefaultPartitioner`` with the hash of
recent keys remembered: aiokafka's murmur2 is pure Python (~20 µs a key),
and one mail's id is the key of about nine records (its request, decision,
attempts, ledger and status rows), so the workers' producers use this one
(``streams/app.py``)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=16384)
def _hashed(key: bytes) -> int:
    return int(murmur2(key) & 0x7FFFFFFF)


def key_hash(key: bytes | bytearray) -> int:
    return _hashed(key) if type(key) is bytes else int(murmur2(key) & 0x7FFFFFFF)


def partition_for(key: str | bytes, partitions: int) -> int:
    data = key.encode() if isinstance(key, str) else key
    return key_hash(data) % partitions


def partitioner(key: bytes | bytearray | None, all_partitions: list[Any],
                available: list[Any]) -> Any:
    """aiokafka's ``DefaultPartitioner.__call__``, the same answer for every key."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[key_hash(key) % len(all_partitions)]
