"""Faust's table-write buffer, flushed before every offset commit: with
``streams/app.py``'s patch, flush returns only once every queued write has
been handed to the producer, however slow a hand-over is. Faust's own gave up
after one hand-over slower than 0.1 s, so a commit could overtake the table
writes of the records it committed (lost by a crash)."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.producer import ProducerBuffer

from streams.app import _patch_buffer_flush


class _Channel:
    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(0.25)  # slower than the 0.1 s Faust waited
        fut.handed_over = True


class _Pending:
    def __init__(self) -> None:
        self.message = type("M", (), {"channel": _Channel()})()
        self.handed_over = False


def test_flush_waits_for_every_queued_table_write() -> None:
    _patch_buffer_flush()

    async def run() -> list[bool]:
        buffer = ProducerBuffer()
        buffer.app = type("App", (), {"conf": type("Conf", (), {"producer_threaded": False})()})()
        await buffer.start()
        writes = [_Pending() for _ in range(3)]
        for w in writes:
            buffer.put(w)  # type: ignore[arg-type]
        await buffer.flush()
        done = [w.handed_over for w in writes]
        await buffer.stop()
        return done

    assert asyncio.run(run()) == [True, True, True]
