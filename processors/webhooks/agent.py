"""Webhooks processor (consumer group ``postlane-webhooks``): signed POSTs of
what became of each mail to the ``[[webhooks]]`` endpoints. Thin glue; the
decisions are core.py's, the HTTP is http.py's, the secret is read by
``streams.secrets``.

- ``postlane.webhooks-rekey`` reads ``bounces`` (keyed by address) and
  re-publishes the events that notify (bounces, complaints, unsubscribes) on
  ``webhook-events``, keyed by their message id (``core.rekey``).
- ``postlane.webhooks`` reads ``routing-decided(-mass)``, ``delivery`` and
  ``webhook-events``, all keyed by message id: a routing decision records
  the mail's tenant in ``webhook-tenants``; every other event becomes
  notifications (``core.notifications``) and a pending row per subscribed
  endpoint in ``webhook-outbox`` (keyed by lane: the message id), so the
  input is acknowledged once its rows are planned, whatever the endpoints do.
- The dispatcher task posts, per endpoint and lane, the earliest pending
  row (``core.heads``): one mail's notifications arrive in order at each
  endpoint, at most ``webhook_concurrency`` POSTs per endpoint are in flight,
  and a slow or dead endpoint holds up only its own rows (never another
  endpoint, never the input). Each answer is folded by
  ``core.after_attempt``; a WebhookDelivered / WebhookDeadLettered is
  published on ``webhooks`` and acknowledged before the row is written.

The agent and the dispatcher are the outbox's one writer: they run in one
process under one lock (as the limiter's agent and tick). At-least-once:
a redelivered input finds its rows planned (same delivery ids) and posts
nothing again; a crash between an endpoint's 2xx and the row's write posts
that notification again after the restart, with the same ``id``, which
receivers use to drop the repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from schemas import (
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    Event,
    InvalidEvent,
    RoutingDecided,
    UnsubscribeRequested,
    WebhookConfigured,
    decode_any,
    encode,
)
from streams import tables
from streams.acked import acked, write_row
from streams.topics import (
    BOUNCES,
    DEAD_LETTER,
    DELIVERY,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    WEBHOOK_EVENTS,
    WEBHOOKS,
)

from ..deadletter import send_dead_letter
from ..runtime import Runtime
from . import core
from .http import Poster

NAME = "webhooks"
log = logging.getLogger("postlane.webhooks")
_BOUNCES: dict[str, type[Event]] = {c.__name__: c for c in core.BOUNCE_TOPIC_EVENTS}
_INPUTS: dict[str, type[Event]] = {c.__name__: c for c in (
    RoutingDecided, DeliveryAttempted, BounceRecorded, ComplaintReceived, UnsubscribeRequested)}
_SCAN_EVERY = 5.0  # seconds between full scans of the outbox (rows recovered on a rebalance)
_PRUNE_EVERY = 60.0  # seconds between two prunes of finished rows (at most; core.prune)


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    results = rt.topic(WEBHOOKS)
    events_out = rt.topic(WEBHOOK_EVENTS)
    dlq = rt.topic(DEAD_LETTER)
    webhook_events = WEBHOOK_EVENTS.full(s)
    tenants = rt.table(tables.WEBHOOK_TENANTS)
    outbox = rt.table(tables.WEBHOOK_OUTBOX)
    lock = asyncio.Lock()
    wake = asyncio.Event()
    poster = Poster(s.webhook_timeout)
    lanes: set[bytes] = set()  # lanes with pending rows
    inflight: set[str] = set()  # delivery ids being posted
    answers: list[tuple[bytes, str, core.Answer, float]] = []
    limits: dict[str, asyncio.Semaphore] = {}
    secrets: dict[tuple[str, str, str], bytes] = {}
    tasks: set[asyncio.Task[None]] = set()

    @app.agent(rt.raw_topic(BOUNCES), name="postlane.webhooks-rekey")
    async def rekey(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            if not rt.config.view.webhooks:
                continue  # no endpoint: nothing to notify
            try:
                ev = decode_any(_BOUNCES, message.value)
            except InvalidEvent:
                continue  # other events of the topic; its owner dead-letters garbage
            key = core.rekey(ev)
            if key is not None:
                await events_out.send(key=key.encode(), value=message.value)

    @app.agent(rt.raw_topic(ROUTING_DECIDED, ROUTING_DECIDED_MASS, DELIVERY, WEBHOOK_EVENTS),
               name="postlane.webhooks", concurrency=1)
    async def intake(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            if not rt.config.view.webhooks:
                continue  # no endpoint: nothing to plan (the pipeline pays no more than this)
            try:
                ev = decode_any(_INPUTS, message.value)
            except InvalidEvent as exc:
                if message.topic == webhook_events:  # ours: nothing else writes there
                    await send_dead_letter(dlq, NAME, message, str(exc))
                continue  # other events of the shared topics (their owners judge them)
            key: bytes = message.key or b""
            if isinstance(ev, RoutingDecided):
                tenant = core.tenant_of(ev)
                if tenant and tenants.get(key) != tenant:
                    tenants[key] = tenant
                continue
            mid: str = getattr(ev, "message_id", "")
            known = tenants.get(mid.encode()) if mid else None
            notes = core.notifications(ev, str(known or ""))
            if not notes:
                continue
            async with lock:
                hooks = list(rt.config.view.webhooks.values())
                new = core.plan(outbox.get(key), notes, hooks, time.time())
                if new is not None:
                    await acked([await write_row(outbox, key, new)])
                    lanes.add(key)
                    wake.set()

    def secret_of(hook: WebhookConfigured) -> bytes:
        from streams.secrets import webhook_secret

        ident = (hook.name, hook.secret_env, hook.secret_file)
        if ident not in secrets:
            secrets[ident] = webhook_secret(hook)
        return secrets[ident]

    async def post(lane: bytes, row: dict[str, Any], hook: WebhookConfigured) -> None:
        sem = limits.setdefault(hook.name, asyncio.Semaphore(max(1, s.webhook_concurrency)))
        async with sem:
            from streams.secrets import SecretUnavailable

            try:
                secret = secret_of(hook)
            except SecretUnavailable as exc:
                answer = core.Answer(False, True, 0, str(exc))
            else:
                note = row["notification"]
                answer = await poster.post(
                    hook.url, core.body_of(note), secret, time.time(),
                    {"Postlane-Event": note["type"], "Postlane-Delivery": row["delivery_id"]})
            answers.append((lane, row["delivery_id"], answer, time.time()))
            wake.set()

    async def apply_answers() -> None:
        """Fold the answers in: publish the outcomes, then write the rows."""
        taken = answers[:]
        del answers[:len(taken)]
        changed: dict[bytes, dict[str, Any]] = {}
        sent = []
        for lane, did, answer, at in taken:
            value = changed.get(lane) or outbox.get(lane)
            if not value or did not in value.get("rows", {}):
                inflight.discard(did)
                continue
            row, outcome = core.after_attempt(value["rows"][did], answer, at, s)
            if outcome is not None:
                sent.append(await results.send(key=lane, value=encode(outcome)))
                if row["state"] == "dead":
                    log.warning("webhook %s: %s dead-lettered: %s", row["webhook"], did,
                                row["last"])
            elif not answer.ok:
                log.info("webhook %s: %s will be retried: %s", row["webhook"], did,
                         answer.reason)
            changed[lane] = {"rows": {**value["rows"], did: row}}
        await acked(sent)
        rows = [await write_row(outbox, lane, value) for lane, value in changed.items()]
        await acked(rows)
        for _, did, _, _ in taken:
            inflight.discard(did)

    async def dispatch(now: float) -> None:
        view = rt.config.view
        for lane in list(lanes):
            value = outbox.get(lane)
            if value is None or not core.pending(value):
                lanes.discard(lane)
                continue
            gone = []
            for row in core.heads(value, now):
                if row["delivery_id"] in inflight:
                    continue
                hook = view.webhooks.get(row["webhook"])
                if hook is None:
                    gone.append(row)
                    continue
                inflight.add(row["delivery_id"])
                task = asyncio.create_task(post(lane, row, hook))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            for row in gone:
                answers.append((lane, row["delivery_id"], core.removed(row["webhook"]), now))
                inflight.add(row["delivery_id"])

    async def prune(now: float) -> None:
        """Drop the rows finished more than ``webhook_keep`` ago (lanes left
        empty are deleted); a lane with a row in flight is left for later."""
        writes = []
        pruned = 0
        for key, value in list(outbox.items()):
            if any(did in inflight for did in (value or {}).get("rows", {})):
                continue
            changed, new = core.prune(value, now, s.webhook_keep)
            if not changed:
                continue
            pruned += 1
            if new is None:
                del outbox[key]
                lanes.discard(key)
            else:
                writes.append(await write_row(outbox, key, new))
        await acked(writes)
        if pruned:
            log.info("webhook outbox: finished rows pruned from %d lanes", pruned)

    @app.task
    async def dispatcher() -> None:
        await rt.config.wait_ready()
        last_scan = last_prune = 0.0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=s.webhook_tick)
            wake.clear()
            try:
                async with lock:
                    if answers:
                        await apply_answers()
                    now = time.time()
                    if now - last_scan >= _SCAN_EVERY:
                        last_scan = now
                        lanes.update(k for k, v in list(outbox.items_if(core.may_be_pending))
                                     if core.pending(v))
                    if now - last_prune >= min(_PRUNE_EVERY, max(1.0, s.webhook_keep / 2)):
                        last_prune = now
                        await prune(now)
                    await dispatch(now)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the dispatcher must keep running
                log.exception("webhook dispatch failed; retrying next tick")
                await asyncio.sleep(0.5)

    async def _close(app_: Any, *_: Any, **__: Any) -> None:
        await poster.close()

    app.on_before_shutdown.connect(_close)  # type: ignore[arg-type]
