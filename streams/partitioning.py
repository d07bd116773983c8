"""Which partition a key lands on: the producers' default partitioner
(murmur2, as the Java client, aiokafka and kafka-python), so a processor
can tell which keys a partition it holds is responsible for."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: str | bytes, partitions: int) -> int:
    data = key.encode() if isinstance(key, str) else key
    return int((murmur2(data) & 0x7FFFFFFF) % partitions)
