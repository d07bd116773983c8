"""Run a coroutine at once, in the caller's task, until it first waits.

Faust's consumer hands every fetched record to the agents with
``await self.wait_first(callback(record), self.suspend_flow.wait())``
(faust-streaming 0.15.3, ``Consumer._drain_messages``). mode's
``Service.wait_first`` makes four tasks for that (the callback, the flow's
event, the service's stopped and crashed events), waits for the first and
cancels the other three: per record, while the callback almost always
finishes without waiting at all (it decodes the record and puts it on a
queue with room). ``wait_first`` here runs the callback eagerly first
(``start``): when it finishes without waiting, that is the answer, with no
task made (then one turn of the loop, so the agent that got the record
runs before the next one is handed over, as before); when it waits (a
full queue, suspended flow), the rest of it
runs as a task under mode's ``wait_first`` exactly as before
(``resume``), so a rebalance can still cut it short. What Python 3.12's
eager tasks do, for this one call.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

from mode.services import WaitResults


class Started:
    """A coroutine that ran until it waited on ``waiting`` (a future, or
    None for a bare ``yield``, as ``asyncio.sleep(0)`` does)."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` in the current task until it finishes or first waits:
    ``(True, its result)``, or ``(False, Started)`` to be ``resume``d.
    Its exception, if it raises before waiting, propagates."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, Started(coro, waiting)


async def resume(started: Started) -> Any:
    """Run a started coroutine on to its end, as its own task would have:
    each future it waits on is awaited, then the coroutine is resumed; a
    cancellation cancels what it waits on and is thrown into it."""
    coro, waiting = started.coro, started.waiting
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
        except asyncio.CancelledError as exc:
            if waiting is not None:
                waiting.cancel()
            try:
                waiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


def eager_wait_first(upstream: Callable[..., Any]) -> Callable[..., Any]:
    """``Service.wait_first`` for the Faust consumer: with no timeout, a
    running service and a coroutine first, that coroutine is started eagerly
    (``start``). Finished: mode's answer for it alone, and the other
    awaitables (never started) are closed. Otherwise ``upstream`` waits as
    always, the started coroutine resumed in its task."""

    async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
        if (timeout is not None or not coros or not inspect.iscoroutine(coros[0])
                or self._stopped.is_set() or self._crashed.is_set()):
            return await upstream(self, *coros, timeout=timeout)
        first, rest = coros[0], coros[1:]
        try:
            done, value = start(first)
        except BaseException:
            _close(rest)
            raise
        if done:
            _close(rest)
            # one turn of the loop, as the tasks gave: the agent that got the
            # record runs before the next is handed over (a lane pauses its
            # partition in time; an invoice's agent is not behind a fetch's worth)
            await asyncio.sleep(0)
            return WaitResults([first], [value], False)
        return await upstream(self, resume(value), *rest, timeout=timeout)

    return wait_first


def _close(awaitables: tuple[Any, ...]) -> None:
    for aw in awaitables:
        if inspect.iscoroutine(aw):
            aw.close()  # never started: no "was never awaited" warning
