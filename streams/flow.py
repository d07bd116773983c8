"""Pulling a lane at the pace it is used: pause and resume fetching one
partition of an agent's input in the worker's consumer (Faust's
``pause_partitions``; a paused partition stays paused across a rebalance
while it stays assigned, and is dropped when revoked).

Records already fetched or in the agent's buffer are still handed over, so a
paused partition overshoots by at most a fetch and a buffer; nothing is lost
(the records stay in the topic, read when resumed)."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TP


def set_fetching(app: faust.App, topic: str, partition: int, fetch: bool) -> bool:
    """Make ``topic[partition]`` fetched (``fetch``) or paused; True when
    that changed something. Only for a partition this worker is assigned."""
    consumer: Any = app.consumer
    tp = TP(topic, partition)
    paused = tp in consumer._paused_partitions
    if fetch and paused:
        consumer.resume_partitions({tp})
        return True
    if not fetch and not paused:
        consumer.pause_partitions({tp})
        return True
    return False
