"""A fetch wait that is short while records flow and long when idle.

A consumer's fetch request asks the broker to hold the answer until data
arrives or ``fetch_max_wait_ms`` passes. Tansu does not answer when data
arrives: it looks again after half the remaining wait, then half of what
is left, and so on (docs/embedded-broker.md). A record produced just after a
fetch began therefore waits up to half the wait: with 100 ms, ~50 ms per
consumer hop, 4 hops per mail. A 5 ms wait makes a hop ~3 ms, but an idle
worker then sends ~200 fetches a second, each a round trip through
aiokafka's and Faust's Python code.

So each aiokafka ``Fetcher`` here uses the quick wait for ``quick_for``
seconds after its last fetch that returned records, and the long one once
it has been idle that long: a pipeline with mail flowing pays one quick
poll per hop; an idle one polls as before. The first mail after a quiet
spell pays one long wait per hop.

It wraps aiokafka's ``Fetcher._proc_fetch_request`` (which answers whether
the fetch returned records) and changes only the wait of the next request.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

_WAIT: dict[str, float] = {"quick_ms": 0.0, "idle_ms": 0.0, "quick_for": 0.0}


def next_wait_ms(last_data_at: float, now: float, quick_ms: float, idle_ms: float,
                 quick_for: float) -> int:
    """The fetch wait for the next request: quick while records came in the
    last ``quick_for`` seconds, else the idle one."""
    return int(quick_ms if now - last_data_at < quick_for else idle_ms)


def adapt_fetch_wait(quick_ms: int, idle_ms: int, quick_for: float) -> None:
    """Apply to every aiokafka consumer of this process (idempotent; the
    last call's values hold). ``quick_ms`` 0 or >= ``idle_ms``: off."""
    _WAIT.update(quick_ms=quick_ms, idle_ms=idle_ms, quick_for=quick_for)
    if getattr(Fetcher, "_postlane_adaptive_wait", False):
        return
    original = Fetcher._proc_fetch_request

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any,
                                  request: Any) -> bool:
        got: bool = await original(self, assignment, node_id, request)
        quick, idle = _WAIT["quick_ms"], _WAIT["idle_ms"]
        if 0 < quick < idle:
            now = time.monotonic()
            if got:
                self._postlane_data_at = now
            self._fetch_max_wait_ms = next_wait_ms(
                getattr(self, "_postlane_data_at", 0.0), now, quick, idle, _WAIT["quick_for"])
        return got

    Fetcher._proc_fetch_request = _proc_fetch_request  # type: ignore[method-assign]
    Fetcher._postlane_adaptive_wait = True  # type: ignore[attr-defined]
