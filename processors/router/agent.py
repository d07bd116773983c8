"""Router agent (consumer group ``postlane-router``): SendRequested ->
RoutingDecided. Stateless but for the config view and the blacklist view
(blacklisted recipients are suppressed); keyed by message_id, so
it scales to as many workers as there are partitions. A redelivered
request gives the same decision again; delivery's ledger drops the
duplicate."""

from __future__ import annotations

from typing import Any

from schemas import InvalidEvent, SendRequested, decode, encode
from streams.topics import DEAD_LETTER, ROUTING_DECIDED, SEND_REQUESTED

from ..blacklist.reader import BlacklistReader
from ..deadletter import send_dead_letter
from ..runtime import Runtime
from .core import decide

NAME = "router"


def register(rt: Runtime) -> None:
    out = rt.topic(ROUTING_DECIDED)
    dlq = rt.topic(DEAD_LETTER)
    blacklist = BlacklistReader(rt.settings)  # see processors/blacklist/reader.py
    rt.extras["blacklist"] = blacklist

    @rt.app.task
    async def _start_blacklist_reader() -> None:
        blacklist.start()

    @rt.app.agent(rt.topic(SEND_REQUESTED), name="postlane.router")
    async def route(stream: Any) -> None:
        await rt.config.wait_ready()
        await blacklist.wait_ready()
        async for event in stream.events():
            message = event.message
            try:
                request = decode(SendRequested, message.value)
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                continue
            decision = decide(rt.config.view, request, blacklist.view.as_mapping())
            await out.send(key=request.message_id.encode(), value=encode(decision))
