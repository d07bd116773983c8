"""A fetch wait that is short while records flow and long when idle.

A consumer's fetch request asks the broker to hold the answer until data
arrives or ``fetch_max_wait_ms`` passes. Tansu does not answer when data
arrives: it looks again after half the remaining wait, then half of what
is left, and so on (docs/embedded-broker.md). A record produced just after a
fetch began therefore waits up to half the wait: with 100 ms, ~50 ms per
consumer hop, 4 hops per mail. A 5 ms wait makes a hop ~3 ms, but an idle
worker then sends ~200 fetches a second, each a round trip through
aiokafka's and Faust's Python code.

So each aiokafka ``Fetcher`` here goes back to the quick wait whenever a
fetch returned records, and doubles the wait after each fetch that did not,
up to the long one: while mail flows a consumer polls a few times between
records, quickly at first; an idle one is back at the long wait after a
handful of polls. The first mail after a quiet spell pays one long wait per
hop. (A fixed 5 ms wait for a second after the last records cost separate
workers 4.5 ms of CPU per mail at full load, mostly the broker answering
empty fetches: measured, bench/README.md.)

It wraps aiokafka's ``Fetcher._proc_fetch_request`` (which answers whether
the fetch returned records) and changes only the wait of the next request.
"""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import Fetcher

_WAIT: dict[str, float] = {"quick_ms": 0.0, "idle_ms": 0.0}


def next_wait_ms(previous_ms: float, got_records: bool, quick_ms: float,
                 idle_ms: float) -> int:
    """The fetch wait after a fetch: the quick one when it returned records,
    else twice the previous one, between the quick and the idle one."""
    if got_records:
        return int(quick_ms)
    return int(min(idle_ms, max(quick_ms, previous_ms * 2)))


def adapt_fetch_wait(quick_ms: int, idle_ms: int) -> None:
    """Apply to every aiokafka consumer of this process (idempotent; the
    last call's values hold). ``quick_ms`` 0 or >= ``idle_ms``: off. Applied
    by ``streams.upstream_patches`` (``fix_fetch_answered_at_half_the_
    remaining_wait``), which checks the wrapped method's source first."""
    from .upstream_patches import _installed, _replace, original

    _WAIT.update(quick_ms=quick_ms, idle_ms=idle_ms)
    if _installed(Fetcher, "_proc_fetch_request"):
        return
    upstream = original(Fetcher, "_proc_fetch_request")

    async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any,
                                  request: Any) -> bool:
        got: bool = await upstream(self, assignment, node_id, request)
        quick, idle = _WAIT["quick_ms"], _WAIT["idle_ms"]
        if 0 < quick < idle:
            self._fetch_max_wait_ms = next_wait_ms(self._fetch_max_wait_ms, got, quick, idle)
        return got

    _replace(Fetcher, "_proc_fetch_request", _proc_fetch_request,
             "fix_fetch_answered_at_half_the_remaining_wait")
