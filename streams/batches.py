"""Batches of events for an agent: ``async for batch in batches(stream, n, within)``.

Faust's ``Stream.take_events(n, within)`` (faust-streaming 0.15.3) is the
model; this is that method with two changes, made where every agent that
batches (delivery, limiter, status) needs them:

- **A batch is acknowledged only when its body finished.** Faust acks the
  batch in a ``finally``: when the body raised or was cancelled (a
  rebalance, a shutdown, a crash mid-batch), every event of the batch was
  acked anyway, and a commit then went past events whose effects were never
  written (the status projection lost rows this way in a SIGTERM test). Here
  such a batch stays unacknowledged: its offsets are not committed, and it is
  delivered again after the restart or to the partition's next owner.
- **A batch is handed over as soon as the stream has nothing more waiting**
  (``eager``, the default), not only when ``n`` events are buffered or ``within`` seconds passed:
  ``take_events`` always waited out ``within`` (5 ms per hop for a mail in a
  quiet pipeline, every hop). Under load, events that arrive while a batch
  is being processed form the next one (group commit).

Built on Faust's ``Stream`` internals (``add_processor``, ``_enable_passive``,
``_stopped`` with mode's ``Event._waiters``,
``current_event``, ``enable_acks``, ``ack``); ``streams/upstream_patches.py``
checks at start-up that faust-streaming is the version this was written
against.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any


class _Wake:
    """An event to wait on with a timeout at the cost of one future and one
    timer (mode's ``wait_for_stopped`` makes a task per waitable, and a batch
    is waited for that way once per batch: under a trickle, once per event).
    The stream stopping ends the wait too: the waiter is put among the
    waiters of the stream's ``_stopped`` event (mode's ``Event`` resolves
    every future in its ``_waiters`` when set)."""

    __slots__ = ("flag", "waiter", "stopped")

    def __init__(self, stopped: Any) -> None:
        self.flag = False
        self.waiter: asyncio.Future[Any] | None = None
        self.stopped = stopped

    def set(self) -> None:
        self.flag = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self.flag = False

    async def wait(self, timeout: float) -> None:
        """Until set, the stream stopped, or ``timeout`` seconds."""
        if self.flag or self.stopped.is_set():
            return
        loop = asyncio.get_running_loop()
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _wake, waiter)
        waiters = self.stopped._waiters
        waiters.append(waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
            try:
                waiters.remove(waiter)
            except ValueError:
                pass


def _wake(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _waiting(stream: Any) -> int:
    """Events queued for the stream and not yet taken by it (0 when the
    channel does not say)."""
    queue = getattr(stream.channel, "queue", None)
    try:
        return int(queue.qsize()) if queue is not None else 0
    except (AttributeError, NotImplementedError):
        return 0


async def batches(stream: Any, max_: int, within: float, eager: bool = True,
                  ack: bool = True, idle: bool = False) -> AsyncGenerator[list[Any], None]:
    """Lists of at most ``max_`` events (Faust ``EventT``; ``event.message``
    is the record): handed over when ``max_`` are buffered, when nothing
    more is waiting on the stream (``eager``; without it a batch collects
    for ``within`` seconds, to fold more events of one key together), or
    ``within`` seconds after the previous batch at the latest. Each batch is
    acknowledged once the loop body that took it finished without an
    exception. Close it when the loop ends, whatever ends it
    (``async with contextlib.aclosing(batches(...)) as taken``): a loop left
    by an exception otherwise leaves the generator suspended with its
    processor on the stream, and the restarted agent's events wait behind
    it forever.

    ``ack=False``: the caller acknowledges each event itself
    (``await stream.ack(event)``), when what it made is written: an agent
    that holds some events' effects across batches (the status projection).
    ``idle=True``: an empty batch is handed over when ``within`` passed with
    nothing to take, so such an agent can write what it held."""
    events: list[Any] = []
    ready = _Wake(stream._stopped)  # hand the buffer over
    consumed = asyncio.Event()  # the buffer was handed over and processed
    consuming: asyncio.Future[None] | None = None
    enable_acks: bool = stream.enable_acks

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        if consuming is not None:  # a batch is being processed: wait for it
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("batches() found no current event")
        events.append(event)
        if len(events) >= max_:
            ready.set()
            consumed.clear()
            await stream.wait(consumed)  # never more than max_ in a batch
        elif eager and not _waiting(stream):
            ready.set()
        return value

    stream.enable_acks = False  # acked below, after the body
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await ready.wait(within)
            if not events:
                ready.clear()
                if idle:
                    yield []
                continue
            consuming = asyncio.get_running_loop().create_future()
            batch = list(events)
            finished = False
            try:
                yield batch
                finished = True
            finally:
                events.clear()
                if finished and ack:
                    for event in batch:
                        await stream.ack(event)
                ready.clear()
                if consuming is not None and not consuming.done():
                    consuming.set_result(None)
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
