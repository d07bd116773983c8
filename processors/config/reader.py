"""Glue: every worker keeps its own ConfigView by reading the config topic
from offset 0 (no consumer group, so each worker of a scaled processor
sees every change) and folding it with ``view.evolve``."""

from __future__ import annotations

import logging

from schemas import CONFIG_EVENTS, InvalidEvent, decode_any
from streams.topics import CONFIG

from ..follower import TopicFollower
from .view import ConfigView, evolve

log = logging.getLogger("postlane.config")


class ConfigReader(TopicFollower):
    what = "config"

    def topic_name(self) -> str:
        return CONFIG.full(self.settings)

    def reset(self) -> None:
        self.view = ConfigView()
        self.skipped = 0

    def summary(self) -> str:
        return f"{self.view.version} events, {len(self.view.servers)} servers"

    async def wait_ready(self) -> ConfigView:
        await self.caught_up()
        return self.view

    def apply(self, value: bytes | None, offset: int) -> None:
        try:
            event = decode_any(CONFIG_EVENTS, value)
        except InvalidEvent as exc:
            self.skipped += 1
            log.error("config offset %d skipped: %s", offset, exc)
            return
        self.view = evolve(self.view, event)
