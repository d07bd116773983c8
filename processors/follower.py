"""Glue shared by the per-worker views (config, blacklist): follow every
partition of one topic from offset 0, outside any consumer group, so each
worker of a scaled processor sees every record, and say when the view has
caught up with the end the broker reported at start.

A subclass gives ``what`` (for log lines), ``topic_name``, ``reset`` (an
empty view) and ``apply`` (fold one record's value)."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.settings import Settings

log = logging.getLogger("postlane.follower")


class TopicFollower:
    what = "topic"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reset()

    # -- for subclasses -------------------------------------------------------
    def topic_name(self) -> str:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def apply(self, value: bytes | None, offset: int) -> None:
        raise NotImplementedError

    def summary(self) -> str:
        return ""

    # -- life cycle ---------------------------------------------------------------
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

    async def caught_up(self) -> None:
        """Wait until the view has caught up (or the timeout passed)."""
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.config_ready_timeout)
        except TimeoutError:
            log.warning("%s topic not caught up after %.0fs; going on with %s", self.what,
                        self.settings.config_ready_timeout, self.summary())
            self._ready.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the view alive, say why
                log.exception("%s reader failed; reading the topic again in 2 s", self.what)
                self.reset()
                await asyncio.sleep(2)

    async def _follow(self) -> None:
        topic = self.topic_name()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None,
            enable_auto_commit=False, fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            while not consumer.partitions_for_topic(topic):  # wait for the topic
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.5)
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                if not self._ready.is_set():
                    positions = [await consumer.position(tp) for tp in tps]
                    if all(p >= ends[tp] for p, tp in zip(positions, tps, strict=True)):
                        log.info("%s view ready: %s", self.what, self.summary())
                        self._ready.set()
                batch = await consumer.getmany(*tps, timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        self.apply(rec.value, rec.offset)
        finally:
            await consumer.stop()
