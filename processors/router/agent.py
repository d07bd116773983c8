"""Router agent (consumer group ``postlane-router``): SendRequested ->
RoutingDecided, once per lane: ``send-requested`` -> ``routing-decided``
(transactional) and ``send-requested-mass`` -> ``routing-decided-mass``. Two
agents, so a campaign's backlog waits in its own stream buffer, never in
front of an invoice. Stateless but for the config view and the blacklist view
(blacklisted recipients are suppressed); keyed by message_id, so
it scales to as many workers as there are partitions. A redelivered
request gives the same decision again; delivery's ledger drops the
duplicate.

A routed transactional mail that no limit, rate or ``send_at`` applies to
is marked ``direct`` (``core.direct``): delivery takes it from
``routing-decided`` and the limiter lets it pass
(``POSTLANE_DIRECT_RELEASE=false`` sends every mail through the limiter)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from schemas import encode
from streams.topics import (
    DEAD_LETTER,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
    SEND_REQUESTED_MASS,
    TopicSpec,
)

from ..blacklist.reader import BlacklistReader
from ..deadletter import send_dead_letter
from ..limiter.limits import LimitsCache
from ..runtime import Runtime
from .core import decide
from .intake import take

NAME = "router"
# the mass lane lets the loop run other agents after this many requests (a
# campaign's buffered backlog is otherwise routed in one go, an invoice behind it)
MASS_YIELD_EVERY = 16


def register(rt: Runtime) -> None:
    dlq = rt.topic(DEAD_LETTER)
    blacklist = BlacklistReader(rt.settings)  # see processors/blacklist/reader.py
    limits = LimitsCache(rt.config, rt.settings) if rt.settings.direct_release else None

    @rt.app.task
    async def _start_blacklist_reader() -> None:
        blacklist.start()

    def lane(source: TopicSpec, target: TopicSpec, name: str, yield_every: int) -> None:
        out = rt.topic(target)

        @rt.app.agent(rt.topic(source), name=name)
        async def route(stream: Any) -> None:
            await rt.config.wait_ready()
            await blacklist.wait_ready()
            taken_since = 0
            async for event in stream.events():
                if yield_every:
                    taken_since += 1
                    if taken_since >= yield_every:
                        # sends go straight to the client and do not wait: give
                        # the invoice's lane its turn within a campaign's backlog
                        taken_since = 0
                        await asyncio.sleep(0)
                message = event.message
                taken = take(message.value, message.key, rt.settings.max_request_bytes)
                if taken.request is None:
                    await send_dead_letter(dlq, NAME, message, taken.error)
                    if taken.answer is not None:
                        await out.send(key=message.key, value=encode(taken.answer))
                    continue
                request = taken.request
                decision = decide(rt.config.view, request, blacklist.view.as_mapping(),
                                  limits() if limits is not None else None, time.time())
                await out.send(key=request.message_id.encode(), value=encode(decision))

    lane(SEND_REQUESTED, ROUTING_DECIDED, "postlane.router", 0)
    lane(SEND_REQUESTED_MASS, ROUTING_DECIDED_MASS, "postlane.router.mass", MASS_YIELD_EVERY)
