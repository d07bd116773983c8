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


def register(rt: Runtime) -> None:
    dlq = rt.topic(DEAD_LETTER)
    blacklist = BlacklistReader(rt.settings)  # see processors/blacklist/reader.py
    limits = LimitsCache(rt.config, rt.settings) if rt.settings.direct_release else None

    @rt.app.task
    async def _start_blacklist_reader() -> None:
        blacklist.start()

    def lane(source: TopicSpec, target: TopicSpec, name: str) -> None:
        out = rt.topic(target)

        @rt.app.agent(rt.topic(source), name=name)
        async def route(stream: Any) -> None:
            await rt.config.wait_ready()
            await blacklist.wait_ready()
            async for event in stream.events():
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

    lane(SEND_REQUESTED, ROUTING_DECIDED, "postlane.router")
    lane(SEND_REQUESTED_MASS, ROUTING_DECIDED_MASS, "postlane.router.mass")
