"""The consumer's fetch order (streams/upstream_patches.py ``_next_records``): records of
low-priority topics (the mass lane) are handed over only when no other
assigned partition has a fetched record waiting. Run against a stand-in for
Faust's consumer that holds fetched records per partition the way aiokafka
does (taken from the partitions asked for, up to a limit per call); the
end-to-end proof is tests/e2e/test_lanes_e2e.py."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from faust.types import TP

from streams.flow import set_fetching
from streams.upstream_patches import _next_records

MASS = "p.send-requested-mass"
TRANS = "p.send-requested"


class _App:
    client_only = False
    _postlane_low_priority = frozenset({MASS})


class FetchedConsumer:
    """Fetched records per partition; ``_getmany`` takes up to ``limit``
    from the partitions asked for, in partition order (as aiokafka does)."""

    flow_active = True

    def __init__(self, limit: int = 100) -> None:
        self.app = _App()
        self.limit = limit
        self.fetched: dict[TP, deque[int]] = {}
        self._active_partitions: set[TP] = set()
        self._paused_partitions: set[TP] = set()
        self.not_waiting_next_records = asyncio.Event()
        self.asked: list[set[TP] | None] = []

    def add(self, tp: TP, n: int) -> None:
        self._active_partitions.add(tp)
        q = self.fetched.setdefault(tp, deque())
        q.extend(range(len(q), len(q) + n))

    def _get_active_partitions(self) -> set[TP]:
        return self._active_partitions

    def pause_partitions(self, tps: Any) -> None:
        self._active_partitions.difference_update(tps)
        self._paused_partitions.update(tps)

    def resume_partitions(self, tps: Any) -> None:
        self._active_partitions.update(tps)
        self._paused_partitions.difference_update(tps)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        self.asked.append(None if active_partitions is None else set(active_partitions))
        out: dict[TP, list[int]] = {}
        room = self.limit
        for tp in sorted(self.fetched):
            if active_partitions is not None and tp not in active_partitions:
                continue
            q = self.fetched[tp]
            take = [q.popleft() for _ in range(min(room, len(q)))]
            if take:
                out[tp] = take
                room -= len(take)
            if not room:
                break
        return out


def run(consumer: FetchedConsumer) -> dict[TP, list[int]]:
    records, _active = asyncio.run(_next_records(consumer, timeout=0.1))
    return dict(records)


def test_other_partitions_first_while_mass_records_wait() -> None:
    c = FetchedConsumer(limit=100)
    c.add(TP(MASS, 0), 3000)
    c.add(TP(MASS, 1), 3000)
    c.add(TP(TRANS, 1), 2)
    assert run(c) == {TP(TRANS, 1): [0, 1]}
    # nothing else waiting: the mass lane, a fetch call's worth at a time
    got = run(c)
    assert sum(map(len, got.values())) == 100 and set(got) <= {TP(MASS, 0), TP(MASS, 1)}
    # an invoice fetched meanwhile goes before the 5,900 mass records still waiting
    c.add(TP(TRANS, 0), 1)
    assert run(c) == {TP(TRANS, 0): [0]}


def test_mass_alone_is_not_held_back() -> None:
    c = FetchedConsumer(limit=100)
    c.add(TP(MASS, 0), 50)
    assert run(c) == {TP(MASS, 0): list(range(50))}
    assert c.asked == [{TP(MASS, 0)}]  # one call: no other lane to ask first


def test_a_paused_mass_partition_is_not_fetched_and_resumes() -> None:
    c = FetchedConsumer(limit=100)
    c.add(TP(MASS, 0), 10)
    c.add(TP(MASS, 1), 10)
    app: Any = type("A", (), {"consumer": c})()
    assert set_fetching(app, MASS, 0, False) is True
    assert set_fetching(app, MASS, 0, False) is False  # already paused
    assert run(c) == {TP(MASS, 1): list(range(10))}
    assert run(c) == {}
    assert set_fetching(app, MASS, 0, True) is True
    assert run(c) == {TP(MASS, 0): list(range(10))}
