"""Glue: every worker keeps its own ConfigView by reading the config topic
from offset 0 (no consumer group, so each worker of a scaled processor
sees every change) and folding it with ``view.evolve``."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import CONFIG_EVENTS, InvalidEvent, decode_any
from streams.settings import Settings
from streams.topics import CONFIG

from .view import ConfigView, evolve

log = logging.getLogger("postlane.config")


class ConfigReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.view = ConfigView()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.skipped = 0

    async def wait_ready(self) -> ConfigView:
        try:
            await asyncio.wait_for(self._ready.wait(), self.settings.config_ready_timeout)
        except TimeoutError:
            log.warning(
                "config topic not caught up after %.0fs; going on with %d events folded",
                self.settings.config_ready_timeout, self.view.version,
            )
            self._ready.set()
        return self.view

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

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the view alive, say why
                log.exception("config reader failed; reading the config topic again in 2 s")
                self.view = ConfigView()
                await asyncio.sleep(2)

    async def _follow(self) -> None:
        topic = CONFIG.full(self.settings)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None,
            enable_auto_commit=False, fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            while not consumer.partitions_for_topic(topic):  # wait for the topic
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.5)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            if end == 0:
                self._ready.set()
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for rec in batch.get(tp, []):
                    self._apply(rec.value, rec.offset)
                if not self._ready.is_set() and await consumer.position(tp) >= end:
                    log.info("config view ready: %d events, %d servers",
                             self.view.version, len(self.view.servers))
                    self._ready.set()
        finally:
            await consumer.stop()

    def _apply(self, value: bytes | None, offset: int) -> None:
        try:
            event = decode_any(CONFIG_EVENTS, value)
        except InvalidEvent as exc:
            self.skipped += 1
            log.error("config offset %d skipped: %s", offset, exc)
            return
        self.view = evolve(self.view, event)
