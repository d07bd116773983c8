"""Waiting for one's own records, not for the whole producer.

``app.producer.flush()`` waits for everything the process has queued: every
agent's sends and every table's changelog writes. On the embedded broker each
record is its own batch (docs/embedded-broker.md), so a partition moves one
record per produce round trip and, while a campaign is taken in, that queue
holds seconds of other agents' work. A pass that must know its events are on
the log before it writes a table waits for exactly those (the limiter).
Delivery still flushes: its ledger rows are table writes that must be on the
log before SMTP, and waiting for its events alone lost them after a crash.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any


async def acked(futures: Iterable[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged each of ``futures`` (what
    ``await topic.send(...)`` returns); raise the first failure, after all
    of them settled (no un-retrieved exceptions left behind)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
