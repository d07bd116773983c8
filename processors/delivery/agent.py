"""Delivery agent (consumer group ``postlane-delivery``; scale by running
more workers, up to the partition count).

Input: the limiter's releases (MailReleased, carrying the routing decision),
the router's ``direct`` decisions (RoutingDecided on ``routing-decided`` that
no limit applied to: released by the router itself; the others are the
limiter's and are skipped here),
the operators' commands it forwards (QueueCommandIssued: retry, send_now,
cancel) and retry signals, all keyed by message_id and
co-partitioned with the ``ledger`` table. The agent (concurrency 1) is the
ledger's only writer; it takes up to ``delivery_batch`` events at a time and
runs their SMTP sessions concurrently. Per batch:

1. decide with the pure core; record each attempt in the ledger and
   publish DeliveryStarted, then wait until the broker acknowledged those
   records: the attempt is on the log before any SMTP command;
2. deliver concurrently (connections reused per server);
3. publish DeliveryAttempted and wait for its acks, then record the
   outcomes in the ledger (so a ledger never says done for an outcome not
   on the log) and wait for those rows too.

Delivery waits for its own records only (``streams/acked.py``), never for
``producer.flush()``: that waits for every table write the other agents of
the process have queued, and while a campaign is taken in, an invoice in
this batch waited seconds behind them. The ledger's rows therefore bypass
Faust's table-write buffer (``write_row``); every ledger write goes that
way, so the rows of a key reach the log in the order they were written.

A command is decided by the pure core (``core.on_command``): its answer
(QueueCommandApplied / QueueCommandRefused, and MessageCancelled for an
applied cancel) goes to the command-results topic, keyed by message_id, and
is acknowledged by the broker before the ledger records the command (a
crash in between answers the redelivered command again, with the same
event ids). A retry
or send-now then starts an attempt in the same batch, like a release.

A timer (a ledger reader) publishes RetryTimeReached for deferred mail
whose time has come, and for attempts left in flight that no batch here
is running (an agent crash or a cancel on rebalance after the input was
committed: nothing would redeliver it); the agent decides on it like on
any other input (an in-flight ledger is retried as interrupted).

When the worker stops, once its agents have stopped, delivery sends QUIT to
each SMTP session its pool holds and stops the claim reader's consumer
(``close``, on the app's exit stack).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from contextlib import aclosing
from typing import Any

from schemas import (
    Event,
    InvalidEvent,
    MailReleased,
    QueueCommandIssued,
    QuotaGranted,
    QuotaRefused,
    RetryTimeReached,
    RoutingDecided,
    SendRequested,
    decode,
    decode_any,
    encode,
)
from schemas.base import carried, construct
from streams import tables
from streams.acked import acked, write_row
from streams.batches import batches
from streams.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    DELIVERY,
    DELIVERY_DUE,
    DELIVERY_QUOTA,
    QUOTA,
    RELEASED,
    ROUTING_DECIDED,
)

from ..deadletter import send_dead_letter
from ..limiter.limits import LimitsCache
from ..runtime import Runtime
from . import claim, core, tokens
from .sender import Sender

NAME = "delivery"
log = logging.getLogger("postlane.delivery")
_INPUTS: dict[str, type[Event]] = {
    "MailReleased": MailReleased,
    "RoutingDecided": RoutingDecided,
    "QueueCommandIssued": QueueCommandIssued,
    "RetryTimeReached": RetryTimeReached,
    "QuotaGranted": QuotaGranted,
    "QuotaRefused": QuotaRefused,
}


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    out = rt.topic(DELIVERY)
    results_topic = rt.topic(COMMAND_RESULTS)
    due_topic = rt.topic(DELIVERY_DUE)
    dlq = rt.topic(DEAD_LETTER)
    source = rt.raw_topic(RELEASED, ROUTING_DECIDED, DELIVERY_DUE, DELIVERY_QUOTA)
    quota_topic = rt.topic(QUOTA)
    limits = LimitsCache(rt.config, s)
    ledger_table = rt.table(tables.DELIVERY_LEDGER)
    sender = Sender(rt)
    reader = claim.DecisionReader(s)  # decisions read back by their offset (claim.py)
    worker_id = f"{socket.gethostname()}:{os.getpid()}"
    signalled: dict[str, int] = {}  # message_id -> attempt already signalled (timer dedupe)
    running: set[str] = set()  # message_ids of the batch in progress here (not orphaned)

    @app.agent(source, name="postlane.delivery")
    async def deliver(stream: Any) -> None:
        await rt.config.wait_ready()
        # closed when the loop ends, also by an exception: a batch left at its
        # yield would hold the stream (streams/batches.py)
        async with aclosing(batches(stream, s.delivery_batch, within=0.005)) as taken:
            async for batch in taken:
                in_batch: set[str] = set()
                try:
                    await _run_batch(batch, in_batch)
                finally:
                    # an attempt this batch left in flight (agent crash, cancel on
                    # rebalance) is orphaned now: the retry timer signals it
                    running.difference_update(in_batch)

    async def _run_batch(batch: list[Any], in_batch: set[str]) -> None:
        started: list[tuple[core.Ledger, core.Action, SendRequested]] = []
        sent: list[Any] = []  # acks of this batch's ledger rows and events
        for event in batch:
            try:
                item = await _decide(event.message, sent)
            except Exception as exc:  # noqa: BLE001 - one bad input must not stop the batch
                log.exception("delivery could not decide on %r", event.message.key)
                item = f"delivery could not decide on this event: {exc!r}"
            if isinstance(item, str):
                await send_dead_letter(dlq, NAME, event.message, item)
                continue
            if item is None:
                continue
            ledger, action, request = item
            if ledger.message_id in in_batch:  # a duplicate input in the same batch
                continue
            in_batch.add(ledger.message_id)
            running.add(ledger.message_id)
            ledger, started_event = core.start(ledger, action, worker_id)
            key = ledger.message_id.encode()
            sent.append(await write_row(ledger_table, key, core.row(ledger)))
            sent.append(await out.send(key=key, value=encode(started_event)))
            started.append((ledger, action, request))
        await acked(sent)  # the attempts (and commands' rows) are on the log before SMTP
        if not started:
            return
        results = await asyncio.gather(
            *(sender.attempt(ledger, action, request) for ledger, action, request in started),
            return_exceptions=True,  # one mail's failure must not lose the batch's outcomes
        )
        finished: list[core.Ledger] = []
        sent = []
        for (ledger, _, _), result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                # outcome unknown (the server may have the mail): left in
                # flight, retried as interrupted once the batch is over
                log.error("%s: attempt %d failed with %r; it will be retried as interrupted",
                          ledger.message_id, ledger.attempt, result, exc_info=result)
                continue
            done, attempted = result
            sent.append(await out.send(key=done.message_id.encode(), value=encode(attempted)))
            finished.append(done)
        # The outcomes are on the log before the ledger records them: a
        # crash in between retries the attempt as interrupted (a duplicate
        # the log shows), never a ledger that says done for an outcome
        # nobody will ever see (the mail's status would stay "sending").
        await acked(sent)
        rows = [await write_row(ledger_table, done.message_id.encode(), core.row(done))
                for done in finished]
        for done in finished:
            signalled.pop(done.message_id, None)
        await acked(rows)

    async def _decide(
        message: Any, sent: list[Any],
    ) -> tuple[core.Ledger, core.Action, SendRequested] | str | None:
        """What to do with one input: an attempt to start (the ledger and
        action for ``core.start``), nothing (None), or a reason to
        dead-letter it (str). A command's answers are published here, its
        ledger row written; their acks are added to ``sent``."""
        try:
            event = decode_any(_INPUTS, message.value)
            if isinstance(event, RoutingDecided) and not event.direct:
                return None  # the limiter's: it comes as a MailReleased when it may go
            if isinstance(event, MailReleased):
                event = decode(RoutingDecided, event.decision)
            if isinstance(event, RoutingDecided) and event.outcome == "routed":
                try:  # checked as it is built (a quarter of from_data's cost)
                    request = construct(SendRequested, event.request)
                except TypeError:  # a field this version does not know: ignored, as before
                    request = SendRequested.from_data(event.request)
                    request.__post_init__()  # validate the carried request
        except (InvalidEvent, TypeError, ValueError) as exc:
            return str(exc)
        now = time.time()
        key = event.message_id.encode()  # type: ignore[attr-defined]
        ledger = core.Ledger.from_dict(ledger_table.get(key))
        stored = ledger
        if isinstance(event, QueueCommandIssued):
            new, action, answers = core.on_command(ledger, event, now)
            answered = []
            for answer in answers:
                answered.append(await results_topic.send(key=key, value=encode(answer)))
                log.info("%s: %s %s: %s", event.message_id, event.command,
                         type(answer).__name__, getattr(answer, "detail", "")
                         or getattr(answer, "reason", ""))
            # answers on the log before the ledger records the command
            await acked(answered)
            if new is not None and new is not ledger and action.kind != "deliver":
                sent.append(await write_row(ledger_table, key, core.row(new)))
            ledger = new  # with deliver: written by core.start in the batch
        elif isinstance(event, RoutingDecided):
            if event.outcome != "routed":
                return None
            recipients = sender.recipients(event, request)
            # the record the request is in: a first attempt's rows refer to it
            source = (message.topic, message.partition, message.offset)
            ledger, action = core.on_routed(ledger, event, recipients, now, source=source)
            if (core.needs_body(stored) and ledger is not None and stored is not None
                    and core.is_its_decision(stored, event)):
                ledger = core.with_decision(ledger, event)  # redelivered: it carries it
                stored = None
        elif isinstance(event, QuotaGranted | QuotaRefused):
            new, action = tokens.on_answer(ledger, event, now)
            if new is not ledger and new is not None and action.kind != "deliver":
                sent.append(await write_row(ledger_table, key, core.row(new)))
                signalled.pop(event.message_id, None)  # the timer signals it when due
            ledger = new
        else:
            assert isinstance(event, RetryTimeReached)
            action = core.on_retry_due(ledger, event.attempt, now)
        if action.kind == "deliver" and ledger is not None and tokens.needs_token(
                ledger, limits()):
            # a later SMTP transaction: it starts once the quota granted its token
            sent.append(await quota_topic.send(key=key, value=encode(tokens.ask(ledger))))
            if isinstance(event, QueueCommandIssued):  # its ledger (command id) is kept
                sent.append(await write_row(ledger_table, key, core.row(ledger)))
            return None
        if action.kind != "deliver" or ledger is None:
            if action.reason:
                log.debug("%s: %s", event.message_id, action.reason)  # type: ignore[attr-defined]
            return None
        if core.needs_body(stored):  # a restart left the first attempt to retry
            try:
                ledger = core.with_decision(ledger, await reader.decision(
                    ledger.message_id, ledger.body_at))
            except claim.DecisionUnreadable as exc:
                log.error("%s", exc)
                return str(exc)
        request = carried(SendRequested, ledger.decision["request"])
        return ledger, action, request

    async def close() -> None:
        """At the worker's stop, once its agents have stopped (the app's exit
        stack is left after its children): QUIT to each of the pool's SMTP
        sessions and stop the claim reader's consumer. Never raises: the
        worker is stopping either way."""
        sessions, closed = await asyncio.gather(sender.pool.close_all(), reader.close(),
                                                return_exceptions=True)
        for what, result in (("the SMTP pool", sessions), ("the claim reader", closed)):
            if isinstance(result, BaseException):
                log.warning("delivery: closing %s failed: %r", what, result)
        log.info("delivery stopped: SMTP pool closed (%s session(s)), claim reader closed "
                 "(%d decision(s) read back)",
                 sessions if isinstance(sessions, int) else "?", reader.reads)

    app.async_exit_stack.push_async_callback(close)

    @app.timer(interval=1.0)
    async def retry_timer() -> None:
        now = time.time()
        for key, value in list(ledger_table.items_if(core.may_be_open)):
            if not core.open_row(value):
                continue  # done or cancelled: never due (not parsed, see open_row)
            ledger = core.Ledger.from_dict(value)
            if ledger is None or not (
                core.due(ledger, now) or core.orphaned(ledger, ledger.message_id in running)
            ):
                continue
            if signalled.get(ledger.message_id) == ledger.attempt:
                continue
            signalled[ledger.message_id] = ledger.attempt
            event = RetryTimeReached(message_id=ledger.message_id, attempt=ledger.attempt)
            await due_topic.send(key=key, value=encode(event))

