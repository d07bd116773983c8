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

``streams/upstream_patches.py`` (``fix_fetch_answered_at_half_the_remaining_
wait``) wraps aiokafka's ``Fetcher._proc_fetch_request`` (which answers
whether the fetch returned records) and sets the next request's wait with
``next_wait_ms``.
"""

from __future__ import annotations


def next_wait_ms(previous_ms: float, got_records: bool, quick_ms: float,
                 idle_ms: float) -> int:
    """The fetch wait after a fetch: the quick one when it returned records,
    else twice the previous one, between the quick and the idle one."""
    if got_records:
        return int(quick_ms)
    return int(min(idle_ms, max(quick_ms, previous_ms * 2)))
