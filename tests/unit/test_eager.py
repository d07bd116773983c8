"""streams/eager.py and the patch that uses it
(``fix_four_tasks_per_record_handed_over``): Faust's consumer hands a record
over without making a task when the hand-over does not wait, and exactly as
before (a task mode can cancel) when it does."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer

from streams import upstream_patches
from streams.eager import resume, start
from streams.settings import Settings

FIX = "fix_four_tasks_per_record_handed_over"
UNPATCHED = tuple(n for n in os.environ.get("TEST_UNPATCHED", "").split(",") if n)


@pytest.fixture(autouse=True)
def upstream() -> Iterator[None]:
    """``TEST_UNPATCHED=fix_four_tasks_per_record_handed_over`` runs these
    with mode's own ``wait_first``, to see which fail without the fix."""
    with upstream_patches.disabled(*UNPATCHED):
        yield


@pytest.fixture
async def wait_first() -> AsyncIterator[Any]:
    """The Faust consumer's ``wait_first`` with the fix applied, bound to a
    stand-in holding what mode's method reads (its loop and events)."""
    upstream_patches.FIXES[FIX](Settings(), SimpleNamespace())  # type: ignore[arg-type]
    service = SimpleNamespace(_stopped=asyncio.Event(), _crashed=asyncio.Event(),
                              loop=asyncio.get_running_loop())

    async def call(*coros: Any, timeout: Any = None) -> Any:
        method: Any = faust_consumer.Consumer.wait_first
        return await method(service, *coros, timeout=timeout)

    yield call


class TaskCount:
    def __init__(self) -> None:
        self.made = 0

    def __call__(self, loop: Any, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        self.made += 1
        return asyncio.Task(coro, loop=loop, **kwargs)


@pytest.fixture
async def tasks() -> AsyncIterator[TaskCount]:
    loop = asyncio.get_running_loop()
    count = TaskCount()
    before = loop.get_task_factory()
    loop.set_task_factory(count)
    try:
        yield count
    finally:
        loop.set_task_factory(before)


async def test_a_hand_over_that_does_not_wait_makes_no_task(wait_first: Any,
                                                            tasks: TaskCount) -> None:
    flow = asyncio.Event()
    handed: list[str] = []

    async def callback(record: str) -> str:
        handed.append(record)
        return "put"

    before = tasks.made
    for record in ("a", "b", "c"):
        result = await wait_first(callback(record), flow.wait())
        assert result.done and result.results == ["put"] and not result.stopped
    assert handed == ["a", "b", "c"]
    assert tasks.made - before == 0  # mode's wait_first alone makes four per call


async def test_a_hand_over_that_waits_finishes_as_a_task(wait_first: Any) -> None:
    flow = asyncio.Event()
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def callback() -> str:
        steps.append("decoded")
        await asyncio.sleep(0)
        got = await room  # a full queue
        steps.append(f"put after {got}")
        return "put"

    asyncio.get_running_loop().call_later(0.01, room.set_result, "room")
    result = await wait_first(callback(), flow.wait())
    assert result.results == ["put"]
    assert steps == ["decoded", "put after room"]


async def test_a_suspended_flow_still_cuts_a_waiting_hand_over_short(wait_first: Any) -> None:
    flow = asyncio.Event()
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def callback() -> None:
        try:
            await room
            steps.append("put")
        finally:
            steps.append("left")

    asyncio.get_running_loop().call_later(0.01, flow.set)
    result = await wait_first(callback(), flow.wait())
    await asyncio.sleep(0.01)  # the cancelled hand-over's task finishes
    assert result.results == [True]  # the flow's event won
    assert steps == ["left"] and room.cancelled()


async def test_an_error_before_waiting_is_raised_to_the_caller(wait_first: Any) -> None:
    flow = asyncio.Event()

    async def callback() -> None:
        raise ValueError("undecodable")

    with pytest.raises(ValueError, match="undecodable"):
        await wait_first(callback(), flow.wait())


async def test_start_then_resume_gives_what_awaiting_gives() -> None:
    async def twice(x: int) -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return 2 * x

    done, started = start(twice(21))
    assert not done
    assert await resume(started) == 42
    assert start(asyncio.sleep(0, result="x")) != (True, "x")  # sleep(0) yields once
