"""Fetcher (consumer group ``postlane-fetcher``): polls the configured
incoming IMAP servers and publishes each new mail to ``inbound``.

Which worker polls which server: the one holding the partition of the
server's name on ``incoming-status`` (the topic its reports go to), so two
fetcher workers never poll the same mailbox and a server moves to another
worker when its owner stops. The checkpoints (table
``incoming-checkpoints``, key = server name, written with the same
partitioner) are recovered before a worker starts polling; every poller is
stopped as soon as a rebalance revokes partitions. See core.py for the
checkpoint protocol that makes a restart neither lose nor re-publish mail.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import (
    Event,
    IncomingServerChecked,
    IncomingServerConfigured,
    InvalidEvent,
    decode,
    decode_any,
    encode,
)
from streams import tables
from streams.partitioning import partition_for
from streams.topics import INBOUND, INCOMING_STATUS

from ..runtime import Runtime
from . import core
from .poller import Poller

NAME = "fetcher"
log = logging.getLogger("postlane.fetcher")
_META = ("type", "schema", "event_id", "occurred_at")
_INBOUND_TYPES = ("InboundMailReceived", "InboundMailRejected")


def _same(a: IncomingServerConfigured, b: IncomingServerConfigured) -> bool:
    fields = [f for f in a._options.fields if f not in _META]
    return all(getattr(a, f) == getattr(b, f) for f in fields)


class TableStore:
    def __init__(self, rt: Runtime, table: Any) -> None:
        self.rt = rt
        self.table = table

    def get(self, name: str) -> core.Checkpoint:
        return core.Checkpoint.from_dict(self.table.get(name.encode()))

    async def put(self, name: str, cp: core.Checkpoint, flush: bool) -> None:
        self.table[name.encode()] = cp.to_dict()
        if flush:
            await self.rt.app.producer.flush()


class KafkaBus:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.inbound = rt.topic(INBOUND)
        self.status = rt.topic(INCOMING_STATUS)
        self._consumer: AIOKafkaConsumer | None = None

    async def publish(self, key: str, event: Event) -> None:
        fut = await self.inbound.send(key=key.encode(), value=encode(event))
        await fut  # acknowledged by the broker (acks=all)

    async def report(self, event: IncomingServerChecked) -> None:
        fut = await self.status.send(key=event.server.encode(), value=encode(event))
        await fut

    async def _client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.rt.settings.bootstrap, group_id=None,
                enable_auto_commit=False, fetch_max_wait_ms=100,
                max_partition_fetch_bytes=self.rt.settings.max_request_bytes,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    def _tps(self) -> list[TopicPartition]:
        topic = INBOUND.full(self.rt.settings)
        return [TopicPartition(topic, p) for p in range(INBOUND.partitions(self.rt.settings))]

    async def ends(self) -> dict[int, int]:
        consumer = await self._client()
        offsets = await consumer.end_offsets(self._tps())
        return {tp.partition: int(o) for tp, o in offsets.items()}

    async def scan(self, since: dict[int, int], ids: set[str]) -> dict[str, bool]:
        """Inbound ids among ``ids`` published since the given offsets, and
        whether each was taken in whole."""
        consumer = await self._client()
        tps = [tp for tp in self._tps() if tp.partition in since]
        found: dict[str, bool] = {}
        if not tps:
            return found
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, since[tp.partition])
        todo = {tp for tp in tps if since[tp.partition] < ends[tp]}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for records in batch.values():
                for rec in records:
                    try:
                        ev = decode_any(_REGISTRY, rec.value)
                    except InvalidEvent:
                        continue
                    inbound_id = getattr(ev, "inbound_id", "")
                    if inbound_id in ids:
                        found[inbound_id] = ev.type == "InboundMailReceived"
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        consumer.assign([])
        return found

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


def _registry() -> dict[str, type[Event]]:
    from schemas import InboundMailReceived, InboundMailRejected

    return {"InboundMailReceived": InboundMailReceived,
            "InboundMailRejected": InboundMailRejected}


_REGISTRY = _registry()


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    n = INCOMING_STATUS.partitions(s)
    status_topic = INCOMING_STATUS.full(s)
    checkpoints = rt.table(tables.INCOMING_CHECKPOINTS)
    states = rt.table(tables.INCOMING_STATUS)
    store = TableStore(rt, checkpoints)
    bus = KafkaBus(rt)
    pollers: dict[str, tuple[IncomingServerConfigured, Poller, asyncio.Task[None]]] = {}

    @app.agent(rt.topic(INCOMING_STATUS), name="postlane.fetcher-status")
    async def keep_status(stream: Any) -> None:
        async for event in stream.events():
            try:
                ev = decode(IncomingServerChecked, event.message.value)
            except InvalidEvent:
                continue
            states[ev.server.encode()] = ev.to_representation()

    async def stop(name: str) -> None:
        _, _, task = pollers.pop(name)
        task.cancel()
        await asyncio.wait({task}, timeout=15)

    async def stop_all() -> None:
        for name in list(pollers):
            await stop(name)

    async def on_revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        if pollers:
            log.info("partitions revoked: stopping %d poller(s)", len(pollers))
        await stop_all()

    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]

    def owned() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives()
                if tp.topic == status_topic}

    @app.task
    async def supervise() -> None:
        await rt.config.wait_ready()
        try:
            while True:
                await asyncio.sleep(0.5)
                recovery = app.tables.recovery  # type: ignore[attr-defined]
                if app.rebalancing or not recovery.completed.is_set():
                    continue
                mine = owned()
                wanted = {
                    name: srv for name, srv in rt.config.view.incoming.items()
                    if srv.active and partition_for(name, n) in mine
                }
                for name, (srv, _, task) in list(pollers.items()):
                    if name not in wanted or not _same(srv, wanted[name]) or task.done():
                        await stop(name)
                for name, srv in wanted.items():
                    if name not in pollers:
                        poller = Poller(srv, s, store, bus)
                        task = asyncio.ensure_future(poller.run())
                        pollers[name] = (srv, poller, task)
                        log.info("polling incoming server %s (%s port %d, folder %r)",
                                 name, srv.host, srv.port, srv.folder)
        finally:
            await stop_all()
            await bus.close()
