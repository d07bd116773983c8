"""Shared pieces of the fuzz tests (``test_fuzz_*.py``): hypothesis settings
that keep the suite reproducible and fast, and the per-input time bound.

``derandomize=True``: the same examples on every run and machine (CI is
reproducible; a failure found once is found again). ``deadline=None``:
hypothesis' own deadline flakes on a busy machine; each input is timed by
``bounded`` instead, against a bound that is a correctness limit (no input
may take a processor over a second), not a speed measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

LIMIT = 1.0  # seconds any single input may take


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,  # derandomized: nothing to replay from a database
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.filter_too_much],
        print_blob=True,
    )


def bounded(fn: Callable[..., T], *args: Any, what: str = "", **kwargs: Any) -> T:
    """``fn(*args)``, failing when it takes more than LIMIT seconds of this
    process's CPU (not wall time: other processes on a busy machine once made
    a fast decode look slow, and hypothesis then shrank for five minutes)."""
    t0 = time.process_time()
    try:
        return fn(*args, **kwargs)
    finally:
        took = time.process_time() - t0
        assert took <= LIMIT, f"{what or fn.__name__} took {took:.2f} s (limit {LIMIT:g} s)"


class Counter:
    """How many generated inputs a test really ran (hypothesis may stop
    early when it exhausts a strategy; the count is asserted)."""

    def __init__(self) -> None:
        self.n: dict[str, int] = {}

    def add(self, key: str, k: int = 1) -> None:
        self.n[key] = self.n.get(key, 0) + k
