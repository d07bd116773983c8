"""Every worker checks that its broker is still the one it started with.

A broker that comes back without its log (the embedded broker keeps topics
in memory; a Kafka cluster rebuilt from scratch) is a new cluster: its
cluster id differs (the embedded broker takes a new one at each start,
``streams/embedded.py``). A worker that carried on would run on tables,
offsets and a configuration the log no longer holds: router and status kept
routing with the old servers while ``config show`` listed none, and new mail
stayed ``queued``. So the worker asks for the cluster id every
``broker_watch_interval`` seconds (one Metadata request for no topic) and,
when it changed, says what happened and what to do in one sentence and
exits with ``EXIT_BROKER_LOST``; a supervisor that restarts it starts it on
the new broker, from that broker's log.

The decision is ``verdict`` (pure); ``install`` is the glue.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

from .settings import Settings

log = logging.getLogger("postlane.broker")

EXIT_BROKER_LOST = 3


def verdict(started_with: str, now: str, bootstrap: str) -> str | None:
    """None while the broker is the one the worker started with; else the
    sentence to say. An empty id (a broker that gives none) proves nothing."""
    if not started_with or not now or now == started_with:
        return None
    return (
        f"the broker at {bootstrap} is not the one this worker started with (cluster id "
        f"{started_with!r}, now {now!r}): it was restarted without its log, so every queued "
        "mail, table and the configuration it held are gone (the embedded broker keeps them "
        "in memory). This worker stops rather than run on state the log no longer holds: "
        "apply the configuration again (postlane config apply FILE), start the workers "
        "again, and have services send again what they sent before the restart."
    )


async def cluster_id(client: Any) -> str:
    """The cluster id the broker answers with (Metadata v2+, no topics)."""
    from aiokafka.protocol.metadata import MetadataRequest

    node = client.get_random_node()
    if node is None:
        return ""
    response = await client.send(node, MetadataRequest([], allow_auto_topic_creation=False))
    return str(getattr(response, "cluster_id", "") or "")


async def watch(settings: Settings, interval: float) -> str:
    """Until the broker changes: then the sentence (never returns otherwise).
    An unreachable broker is not a change: the clients say that themselves."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=settings.bootstrap, client_id="postlane-watch",
                            request_timeout_ms=int(max(5.0, interval * 3) * 1000))
    started_with = ""
    try:
        while True:
            try:
                if not client.cluster.brokers():
                    await client.bootstrap()
                now = await cluster_id(client)
            except Exception as exc:  # noqa: BLE001 - a broker away is not a broker changed
                log.debug("broker watch: no answer from %s: %r", settings.bootstrap, exc)
                now = ""
            started_with = started_with or now
            said = verdict(started_with, now, settings.bootstrap)
            if said:
                return said
            await asyncio.sleep(interval)
    finally:
        await client.close()


def install(app: Any, settings: Settings) -> None:
    """The watch as a task of ``app``; exits the process when the broker changed."""
    if settings.broker_watch_interval <= 0:
        return

    @app.task
    async def _broker_watch() -> None:
        said = await watch(settings, settings.broker_watch_interval)
        log.critical(said)
        print(f"postlane: {said}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(EXIT_BROKER_LOST)  # nothing to flush: the log it would go to is gone
