"""The router's view of the blacklist: every router worker folds the
``blacklist`` topic (all partitions, from offset 0, outside any consumer
group) into its own ``BlacklistView``, as it does with the config topic.

Why a view and not a join: the blacklist is keyed by address, the router by
message id, and one mail has many addresses on different partitions. A join
would re-key every mail by each recipient and back (two more hops and a
fan-in per mail) for a table that changes rarely: the ``blacklist`` topic
carries only changes of the blacklisting, not every bounce, so even a large
list (one small record per blacklisted address) fits in each worker's memory
and is read in seconds at start. The price is that a router learns of a new
blacklisting a moment after it happens, and a mail routed in that moment is
sent; a bounce takes minutes to arrive anyway, and five of them over a week
are needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import BlacklistChanged, InvalidEvent, decode
from streams.settings import Settings
from streams.topics import BLACKLIST

log = logging.getLogger("postlane.blacklist")


@dataclass
class BlacklistView:
    """address -> the sentence why it is blacklisted (only blacklisted ones)."""

    entries: dict[str, str] = field(default_factory=dict)
    version: int = 0

    def reason(self, address: str) -> str | None:
        return self.entries.get(address.strip().lower())

    def as_mapping(self) -> Mapping[str, str]:
        return self.entries


def apply(view: BlacklistView, event: BlacklistChanged) -> None:
    """Fold one change (the latest per address wins)."""
    view.version += 1
    if event.blacklisted:
        view.entries[event.address] = event.reason or "blacklisted"
    else:
        view.entries.pop(event.address, None)


class BlacklistReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = BlacklistView()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
            self._task = None

    async def wait_ready(self) -> BlacklistView:
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.config_ready_timeout)
        except TimeoutError:
            log.warning("blacklist topic not caught up after %.0fs; going on with %d entries",
                        self.settings.config_ready_timeout, len(self.view.entries))
            self._ready.set()
        return self.view

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep following, say why
                log.exception("blacklist reader failed; reading the topic again in 2 s")
                self.view = BlacklistView()
                await asyncio.sleep(2)

    async def _follow(self) -> None:
        topic = BLACKLIST.full(self.settings)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None,
            enable_auto_commit=False, fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            while not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        try:
                            apply(self.view, decode(BlacklistChanged, rec.value))
                        except InvalidEvent as exc:
                            log.error("blacklist offset %d skipped: %s", rec.offset, exc)
                if not self._ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                        log.info("blacklist view ready: %d addresses", len(self.view.entries))
                        self._ready.set()
        finally:
            await consumer.stop()
