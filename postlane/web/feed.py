"""The console's reading edge: follow the topics the CLI reads, from offset 0,
outside any consumer group, and fold each record into the ``ConsoleState``
(``model.fold``); every 10 s ask the broker which processors' consumer
groups have members and how far behind they are.

Runs on the console's event loop, so handlers and folding never race.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import metrics
from streams.settings import Settings
from streams.topics import (
    BLACKLIST,
    BOUNCES,
    CONFIG,
    DEAD_LETTER,
    INCOMING_STATUS,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
    SEND_REQUESTED_MASS,
    STATUS,
    TopicSpec,
)

from . import model

log = logging.getLogger("postlane.web.feed")

FOLLOWED: tuple[TopicSpec, ...] = (
    CONFIG, SEND_REQUESTED, SEND_REQUESTED_MASS, ROUTING_DECIDED, ROUTING_DECIDED_MASS, STATUS,
    DEAD_LETTER, BLACKLIST, BOUNCES, INCOMING_STATUS,
)


class Feed:
    def __init__(self, settings: Settings, state: model.ConsoleState) -> None:
        self.settings = settings
        self.state = state
        self.processors: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._names = {spec.full(settings): spec.name for spec in FOLLOWED}

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._run()),
                       asyncio.ensure_future(self._groups())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        self._tasks = []

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - keep the console alive, say why
                log.exception("console feed failed; reading the topics again in 2 s")
                # read again from offset 0 into an empty view (same window rules)
                self.state.__init__(  # type: ignore[misc]
                    timezone=self.state.timezone, day_start=self.state.day_start)
                await asyncio.sleep(2)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms, client_id="postlane-console",
            max_partition_fetch_bytes=self.settings.consumer_max_fetch_size,
        )
        await consumer.start()
        try:
            tps: list[TopicPartition] = []
            while True:  # topics appear when the first worker starts
                tps = [TopicPartition(topic, p) for topic in self._names
                       for p in sorted(consumer.partitions_for_topic(topic) or ())]
                if {tp.topic for tp in tps} == set(self._names):
                    break
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.5)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pruned = time.time()
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=200, max_records=5000)
                now = time.time()
                for tp, records in batch.items():
                    name = self._names[tp.topic]
                    for rec in records:
                        model.fold(self.state, name, rec.value, now)
                if not self.ready.is_set() and await _at_end(consumer, tps, ends):
                    log.info("console view ready: %d mails", len(self.state.mails))
                    self.ready.set()
                if now - pruned > 30:
                    model.prune(self.state, now)
                    pruned = now
                if batch:
                    await asyncio.sleep(0)  # let pages answer between batches
        finally:
            await consumer.stop()

    async def _groups(self) -> None:
        reader: GroupReader | None = None
        try:
            while True:
                try:
                    if reader is None:
                        reader = await asyncio.to_thread(GroupReader, self.settings)
                    self.processors = await asyncio.to_thread(reader.read)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the page says it, the rest works
                    self.processors = [{"group": "?", "members": 0, "lag": None,
                                        "state": "", "worst": "",
                                        "error": f"consumer groups not readable: {exc}"}]
                    if reader is not None:
                        await asyncio.to_thread(reader.close)
                        reader = None
                await asyncio.sleep(10)
        finally:
            if reader is not None:
                reader.close()


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                  ends: dict[TopicPartition, int]) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


class GroupReader:
    """Each consumer group of this deployment (``{app_prefix}-...``): its
    members (workers) and its lag (end offsets minus committed, summed over
    partitions, with the worst partition). Blocking clients, kept open
    between reads: run it in a thread."""

    def __init__(self, s: Settings) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer

        self.s = s
        self.admin = KafkaAdminClient(bootstrap_servers=s.bootstrap,
                                      client_id="postlane-console", request_timeout_ms=5000)
        # Tansu answers DescribeGroups with authorized operations kafka-python
        # has no name for (15): keep them as numbers (they are not shown)
        self.admin._process_acl_operations = lambda d: d  # type: ignore[method-assign]
        self.consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                      enable_auto_commit=False,
                                      client_id="postlane-console-lag")

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def read(self) -> list[dict[str, Any]]:
        from streams.offsets import true_end_offsets_sync

        s = self.s
        groups = sorted(str(g["group_id"]) for g in self.admin.list_groups()
                        if str(g["group_id"]).startswith(f"{s.app_prefix}-"))
        described = self.admin.describe_groups(groups) if groups else {}
        committed: dict[str, Any] = {}
        for group in groups:  # one at a time: brokers before OffsetFetch v8 take one
            committed.update(self.admin.list_group_offsets(group))
        out = []
        for group in groups:
            mine = {tp: meta.offset for tp, meta in committed.get(group, {}).items()
                    if tp.topic.startswith(s.topic_prefix) and meta.offset >= 0}
            ends = true_end_offsets_sync(self.consumer, list(mine)) if mine else {}
            lags = {(tp.topic, tp.partition): max(ends.get(tp, off) - off, 0)
                    for tp, off in mine.items()}
            for (topic, part), lag in lags.items():
                metrics.CONSUMER_LAG.labels(group, topic, str(part)).set(lag)
            d = described.get(group) or {}
            worst = max(lags.items(), key=lambda kv: kv[1]) if lags else (("", 0), 0)
            out.append({
                "group": group, "members": len(d.get("members") or []),
                "state": d.get("group_state", ""), "lag": sum(lags.values()),
                "worst": (f"{worst[0][0][len(s.topic_prefix):]}[{worst[0][1]}]: {worst[1]}"
                          if worst[1] else ""), "error": d.get("error") or ""})
        return out
