"""Limiter agents (consumer group of the app, e.g. ``postlane-limiter``):
between the router and delivery. Daily limits, pacing, lanes, send_at, and
the ops commands for mail it holds.

- ``postlane.limiter.mass`` takes in the mass lane (``routing-decided-mass``)
  and only appends each routed mail to the ``limiter-mass`` table (the mass
  lane is its only writer: this agent adds, its prune timer drops the rows of
  mail the scheduler released or cancelled). It is pulled, not pushed: the
  worker stops fetching a partition's mass lane while ``mass_intake_ahead``
  of its mass mails wait here, so a campaign of 100,000 waits in its topic
  and is taken in as it goes out; and the consumer hands mass records over
  only when no other record is waiting (``low_priority`` topics,
  streams/upstream_patches.py).
- ``postlane.limiter`` reads transactional decisions, ops commands,
  delivery's attempts (which free the mass window) and the quota's answers
  (``quota-answers``); with the scheduler tick it is the only writer of
  ``limiter-held`` (message_id -> held / released / cancelled; the mail a
  pass released is one row for the pass, ``steps.pass_key`` -> ``ids``;
  released and cancelled markers are deleted after ``held_keep``) and ``limiter-meters``
  (one row per partition: the mass in flight). The agent and the tick run
  in one process and take one lock.
- ``postlane.limiter.quota`` (quota_agent.py) counts every limited
  transaction of every partition and of delivery's retries, in one place:
  a mail under a limit is "asking" (not visible, no row: a transactional
  ask carries its mail and the answer brings it back; a mass mail has its
  limiter-mass row) until it answers; the asks of a pass go out as one
  QuotasAsked.

Glue only: every decision is in steps.py (state + input -> new state +
what to publish and write) and core.py / quota.py; this module decodes,
takes the lock, calls them, publishes, waits, writes.

Each scheduling pass: decide with the pure core, publish MailReleased /
MailHeld / command results, wait until the broker acknowledged them (those
records only, streams/acked.py), then write the tables. A crash after the
acknowledgement and before the write releases the mail again after the
restart (the delivery ledger drops the duplicate) and counts it once; a
crash before it may have published some of them, released again the same
way. So a restarted limiter resumes with the counts of
what it released: it neither re-sends nor over-sends.

Keys: every input is keyed by message_id; the meters row of partition p has
a key the partitioner puts on p (index.meters_key), so it is recovered by
whichever worker owns p, and so has the QuotasAnswered for p's mail. Limits
are counted by the quota, not per partition (core.py, quota.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import orjson

from schemas import (
    InvalidEvent,
    QueueCommandIssued,
    QuotasAsked,
    RoutingDecided,
    decode,
    encode,
)
from streams import tables
from streams.acked import acked
from streams.batches import batches
from streams.flow import set_fetching
from streams.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    DEAD_LETTER,
    DELIVERY,
    HELD,
    QUOTA,
    QUOTA_ANSWERS,
    RELEASED,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
)

from ..deadletter import send_dead_letter
from ..runtime import Runtime
from . import core, steps
from .index import Index, meters_key
from .limits import LimitsCache
from .quota_agent import register_quota

NAME = steps.NAME
log = logging.getLogger("postlane.limiter")
result_id = steps.result_id  # the command answers' event ids (kept importable here)


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    n = s.partitions
    clock: Callable[[], float] = time.time
    topics = {steps.RELEASED: rt.topic(RELEASED), steps.HELD: rt.topic(HELD),
              steps.RESULTS: rt.topic(COMMAND_RESULTS)}
    quota_topic = rt.topic(QUOTA)
    register_quota(rt)
    dlq = rt.topic(DEAD_LETTER)

    mass_table = rt.table(tables.LIMITER_MASS)
    held_table = rt.table(tables.LIMITER_HELD)
    meters_table = rt.table(tables.LIMITER_METERS)
    index = Index(partitions=n)
    lock = asyncio.Lock()
    wake = asyncio.Event()
    limits = LimitsCache(rt.config, s)
    names = {spec.full(s): spec for spec in (ROUTING_DECIDED, COMMANDS, DELIVERY, QUOTA_ANSWERS)}

    mine: dict[str, Any] = {"generation": -1, "assigned": frozenset()}

    def assigned() -> frozenset[int]:
        """The partitions of this worker, computed once per rebalance (asked
        only when ``ready``: the assignment of that generation is complete)."""
        if mine["generation"] != app.rebalancing_count:
            name = ROUTING_DECIDED.full(s)
            mine["assigned"] = frozenset(tp.partition for tp in app.assignor.assigned_actives()
                                         if tp.topic == name)
            mine["generation"] = app.rebalancing_count
        got: frozenset[int] = mine["assigned"]
        return got

    def ready() -> bool:
        recovery: Any = getattr(app.tables, "recovery")  # noqa: B009 - not in the stubs
        return not app.rebalancing and not recovery.in_recovery and recovery.completed.is_set()

    def ensure_index() -> bool:
        if not ready():
            index.built = False
            return False
        now_assigned = assigned()
        if not index.built or index.assigned != now_assigned:
            index.rebuild(now_assigned, list(mass_table.items()), dict(held_table.items()),
                          dict(meters_table.items()))
            log.info("limiter index rebuilt: partitions %s, %d pending mass, %d held",
                     sorted(now_assigned), sum(map(len, index.pending.values())),
                     sum(map(len, index.held.values())))
        return True

    def held_row(key: bytes) -> Any:
        """A limiter-held row, None when there is none (most lookups: a new
        mail; the table's ``get`` finds that out through a KeyError)."""
        return held_table.get(key) if key in held_table else None

    # --- the mass lane: intake only, pulled at the pace it is released ----------------------

    mass_topic = ROUTING_DECIDED_MASS.full(s)

    def _pace_intake() -> None:
        """Fetch a partition's mass lane only while fewer than
        ``mass_intake_ahead`` of its mass mails wait here (steps.intake_fetching):
        a campaign of 100,000 then waits in its topic, not in this process's
        memory and tables, and is taken in as fast as it goes out."""
        for p, fetch in steps.intake_fetching(index, s.mass_intake_ahead).items():
            set_fetching(app, mass_topic, p, fetch)

    @app.agent(rt.raw_topic(ROUTING_DECIDED_MASS), name="postlane.limiter.mass")
    async def intake(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            decision = await _decision(message)
            if decision is None:
                continue
            key = message.key
            mail = core.Mail(message_id=str(decision["message_id"]), lane="mass",
                             seq=message.offset, decision=decision, received_at=clock())
            store, full, room = steps.take_mass(
                index, message.partition, mail, mass_table.get(key), held_row(key),
                s.mass_intake_ahead, s.mass_window)
            if store:
                mass_table[key] = mail.to_dict()
            if full:
                set_fetching(app, mass_topic, message.partition, False)  # see _pace_intake
            if room:
                wake.set()  # room in the mass window: release without waiting a tick

    @app.timer(interval=1.0)
    async def prune_mass() -> None:
        """The mass lane's other write: drop the limiter-mass row of mass
        mail the scheduler released or cancelled (its limiter-held row, which
        answers a redelivery, is written first), so the table holds what
        waits, not every mass mail ever sent."""
        while index.done_mass:
            key = index.done_mass.pop()
            if key in mass_table:
                del mass_table[key]

    async def _decision(message: Any) -> dict[str, Any] | None:
        """The routed decision as data, or None (not ours; dead-lettered when bad)."""
        data = steps.plain_decision(message.value)  # the common case, without a Record
        if data is None:  # anything unusual: the full decode, and its words if it fails
            try:
                data = dict(decode(RoutingDecided, message.value).to_representation())
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                return None
        if message.key != str(data["message_id"]).encode():
            await send_dead_letter(dlq, NAME, message, f"key {message.key!r} is not the "
                                   f"message_id {data['message_id']!r}")
            return None
        # direct: the router released it itself (nothing of ours applied), delivery has it
        return data if data["outcome"] == "routed" and not data.get("direct") else None

    # --- transactional lane, commands, delivery's attempts ----------------------------------

    @app.agent(rt.raw_topic(ROUTING_DECIDED, COMMANDS, DELIVERY, QUOTA_ANSWERS),
               name="postlane.limiter")
    async def limit(stream: Any) -> None:
        await rt.config.wait_ready()
        # closed when the loop ends, also by an exception: a batch left at its
        # yield would hold the stream (streams/batches.py)
        async with aclosing(batches(stream, 256, within=0.005)) as taken:
            async for batch in taken:
                async with lock:
                    while not ensure_index():
                        await asyncio.sleep(0.05)
                    out = steps.Out()
                    touched: set[int] = set()
                    # commands last: a cancel must not overtake the release of its
                    # own mail taken from another topic in this batch
                    commands = COMMANDS.full(s)
                    batch = sorted(batch, key=lambda e: e.message.topic == commands)
                    for event in batch:
                        try:
                            await _take(event.message, out, touched)
                        except Exception as exc:  # noqa: BLE001 - one bad input must not stop us
                            log.exception("limiter failed on %r", event.message.key)
                            await send_dead_letter(dlq, NAME, event.message,
                                                   f"limiter failed on this event: {exc!r}")
                    now, lim = clock(), limits()
                    for p in sorted(touched):
                        steps.run_pass(index, p, now, lim, s.mass_lookahead, out)
                    await _commit(out)

    async def _take(message: Any, out: steps.Out, touched: set[int]) -> None:
        p = message.partition
        if p not in index.assigned:
            return
        spec = names.get(message.topic)
        if spec is DELIVERY:
            # most of delivery's records are of no interest: read one only while mass
            # mail of its partition is in flight, and only a start or an outcome
            value = message.value
            if not (index.meters[p].inflight and value and steps.is_attempt(value)):
                return
            data = orjson.loads(value)
            # delivery started (or finished) it: it has left delivery's input
            if isinstance(data, dict) and data.get("type") in ("DeliveryStarted",
                                                               "DeliveryAttempted"):
                if steps.take_attempt(index, p, str(data.get("message_id", "")), out):
                    touched.add(p)
            return
        if spec is QUOTA_ANSWERS:
            try:
                data = orjson.loads(message.value)
                answers = steps.answers_of(data)
            except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError,
                    ValueError) as exc:
                await send_dead_letter(dlq, NAME, message, f"unreadable quota answer: {exc}")
                return
            now, lim = clock(), limits()
            for answer in answers:
                if steps.take_answer(index, p, answer, now, held_row, lim, out):
                    touched.add(p)
            return
        if spec is COMMANDS:
            try:
                command = decode(QueueCommandIssued, message.value)
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                return
            steps.command(index, p, command, clock(), held_row, limits(), out)
            return
        decision = await _decision(message)
        if decision is None:
            return
        mail = core.Mail(message_id=str(decision["message_id"]), lane="transactional",
                         seq=message.offset, decision=decision, received_at=clock())
        if steps.take_routed(index, p, mail, held_row):
            touched.add(p)

    async def _commit(out: steps.Out) -> None:
        """Publish, wait for the acknowledgements, then write the tables (see the module docstring).
        The index already reflects ``out``, so it must land: a failed publish
        is retried (the lock is held: nothing else moves meanwhile); a send
        that did reach the broker before the failure is a duplicate delivery
        drops."""
        if out.empty():
            return
        sends: list[tuple[Any, bytes, bytes]] = [
            (topics[where], mid.encode(), event if isinstance(event, bytes) else encode(event))
            for where, mid, event in out.events]
        if out.asks:  # one record for the pass's asks
            sends.append((quota_topic, str(out.asks[0]["message_id"]).encode(),
                          encode(QuotasAsked(asks=out.asks))))
        delay = 0.5
        while True:
            try:
                # plain key and value, no partition: streams/direct.py's fast send
                sent = [await topic.send(key=key, value=value) for topic, key, value in sends]
                await acked(sent)  # ours on the log, not everything the producer holds
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker is away: try again
                log.exception("limiter could not publish %d events; retrying in %.1f s",
                              len(sends), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        # the meters first: a crash between the writes then counts a mail
        # that is released again after the restart (sends less), never the
        # other way round (a released row without its count sends more)
        for p in out.meters:
            meters_table[meters_key(p, n)] = index.meters[p].to_dict()
        for key, row in out.rows.items():
            held_table[key] = row
        steps.written(index, out)

    # --- the tick: held mail whose time has come, mass mail as the window frees ----------------

    @app.task
    async def scheduler() -> None:
        await rt.config.wait_ready()
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=s.limiter_tick)
            wake.clear()
            try:
                async with lock:
                    if not ensure_index():
                        continue
                    now, lim = clock(), limits()
                    out = steps.Out()
                    for p in steps.due_partitions(index, now):
                        steps.run_pass(index, p, now, lim, s.mass_lookahead, out)
                    await _commit(out)
                    _pace_intake()
                    for key in index.prunable_held(now, lim.held_keep):
                        row = held_table.get(key)
                        if isinstance(row, dict) and row.get("state") in ("released",
                                                                          "cancelled"):
                            del held_table[key]
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the tick must keep running
                log.exception("limiter tick failed; retrying next tick")
