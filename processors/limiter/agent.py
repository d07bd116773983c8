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
  ``limiter-held`` (message_id -> held / released / cancelled; released and
  cancelled markers are deleted after ``held_keep``) and ``limiter-meters``
  (one row per partition: the mass in flight). The agent and the tick run
  in one process and take one lock.
- ``postlane.limiter.quota`` (quota_agent.py) counts every limited
  transaction of every partition and of delivery's retries, in one place:
  a mail under a limit is "asking" (a held row, not visible) until it
  answers; the asks of a pass go out as one QuotasAsked.

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
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import orjson

from schemas import (
    Event,
    InvalidEvent,
    MailHeld,
    MailReleased,
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    QuotaGranted,
    QuotaRefused,
    QuotasAnswered,
    QuotasAsked,
    RoutingDecided,
    decode,
    decode_any,
    encode,
)
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
from . import core, quota
from .index import Index, meters_key
from .limits import LimitsCache
from .quota_agent import register_quota

NAME = "limiter"
log = logging.getLogger("postlane.limiter")
RESULT_NS = uuid.UUID("3b8f6a52-9c1e-4d7a-b0e4-5a2c9d1f7e63")


_WHERE = {"daily_limit": "deferred (daily limit)", "scheduled": "scheduled", "paced": "paced"}


def result_id(command_id: str, what: str = "result") -> str:
    """The event_id of a command's answer: a redelivered command answers the same."""
    return uuid.uuid5(RESULT_NS, f"{what}:{command_id}").hex


class _Out:
    """What a pass publishes, and the table rows it writes once they are acknowledged."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, bytes, bytes]] = []
        self.rows: dict[bytes, Any] = {}
        self.meters: set[int] = set()
        self.done_mass: list[bytes] = []  # mass mail that left: prunable once rows are written
        self.asks: list[dict[str, Any]] = []  # to the quota, in one QuotasAsked

    def ask(self, ask: dict[str, Any]) -> None:
        self.asks.append(ask)

    def send(self, topic: Any, message_id: str, event: Event | bytes) -> None:
        value = event if isinstance(event, bytes) else encode(event)
        self.events.append((topic, message_id.encode(), value))


_ANSWERS: dict[str, type[Event]] = {"QuotaGranted": QuotaGranted, "QuotaRefused": QuotaRefused}
_BATCH: dict[str, type[Event]] = {"QuotasAnswered": QuotasAnswered, **_ANSWERS}


def _ask(mail: core.Mail, ask_id: str, partition: int, force: bool = False) -> dict[str, Any]:
    """A QuotaAsked as data, an item of the pass's QuotasAsked."""
    return {"type": "QuotaAsked", "ask_id": ask_id, "message_id": mail.message_id,
            "server": mail.server, "by": "limiter", "lane": mail.lane, "tenant": mail.tenant,
            "domains": mail.domains(), "force": force, "partition": partition}


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    n = s.partitions
    clock: Callable[[], float] = rt.extras.get("clock", time.time)
    released_topic, held_topic = rt.topic(RELEASED), rt.topic(HELD)
    quota_topic = rt.topic(QUOTA)
    register_quota(rt)
    results_topic, dlq = rt.topic(COMMAND_RESULTS), rt.topic(DEAD_LETTER)

    def table(name: str, help_: str) -> Any:
        return app.Table(name, default=None, key_type=bytes, partitions=n,
                         use_partitioner=True, help=help_)

    mass_table = table("limiter-mass", "message_id -> mass Mail taken in (intake agent only)")
    held_table = table("limiter-held", "message_id -> held/released/cancelled (scheduler only)")
    meters_table = table("limiter-meters", "one row per partition: counts, buckets, window")
    index = Index(partitions=n)
    lock = asyncio.Lock()
    wake = asyncio.Event()
    limits = LimitsCache(rt.config, s)
    rt.extras["limiter_index"] = index

    def assigned() -> frozenset[int]:
        name = ROUTING_DECIDED.full(s)
        return frozenset(tp.partition for tp in app.assignor.assigned_actives()
                         if tp.topic == name)

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

    # --- the mass lane: intake only, pulled at the pace it is released ----------------------

    mass_topic = ROUTING_DECIDED_MASS.full(s)

    def _pace_intake() -> None:
        """Fetch a partition's mass lane only while fewer than
        ``mass_intake_ahead`` of its mass mails wait here (taken in, or held
        by a daily limit or a send_at); resume at half. A campaign of
        100,000 then waits in its topic, not in this process's memory and
        tables, and is taken in as fast as it goes out."""
        ahead = s.mass_intake_ahead
        for p in index.assigned:
            waiting = len(index.pending[p]) + sum(
                1 for m in index.held[p].values() if m.lane == "mass")
            if waiting >= ahead:
                set_fetching(app, mass_topic, p, False)
            elif waiting <= ahead // 2:
                set_fetching(app, mass_topic, p, True)

    @app.agent(rt.raw_topic(ROUTING_DECIDED_MASS), name="postlane.limiter.mass")
    async def intake(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            decision = await _decision(message)
            if decision is None:
                continue
            key = message.key
            if mass_table.get(key) is not None or held_table.get(key) is not None:
                continue  # redelivered: taken in already (maybe released and pruned)
            mail = core.Mail(message_id=decision.message_id, lane="mass", seq=message.offset,
                             decision=dict(decision.to_representation()),
                             received_at=clock())
            mass_table[key] = mail.to_dict()
            p = message.partition
            if index.built and p in index.assigned and held_table.get(key) is None:
                index.pending[p][mail.seq] = mail
                if len(index.pending[p]) >= s.mass_intake_ahead:
                    set_fetching(app, mass_topic, p, False)  # enough ahead: see _pace_intake
                if len(index.meters[p].inflight) < s.mass_window:
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

    async def _decision(message: Any) -> RoutingDecided | None:
        try:
            decision = decode(RoutingDecided, message.value)
        except InvalidEvent as exc:
            await send_dead_letter(dlq, NAME, message, str(exc))
            return None
        if message.key != decision.message_id.encode():
            await send_dead_letter(dlq, NAME, message, f"key {message.key!r} is not the "
                                   f"message_id {decision.message_id!r}")
            return None
        # direct: the router released it itself (nothing of ours applied), delivery has it
        return decision if decision.outcome == "routed" and not decision.direct else None

    # --- transactional lane, commands, delivery's attempts ----------------------------------

    @app.agent(rt.raw_topic(ROUTING_DECIDED, COMMANDS, DELIVERY, QUOTA_ANSWERS),
               name="postlane.limiter")
    async def limit(stream: Any) -> None:
        await rt.config.wait_ready()
        # closed when the loop ends, also by an exception: a batch left at its
        # yield would hold the stream (streams/batches.py)
        async with aclosing(batches(stream, 64, within=0.005)) as taken:
            async for batch in taken:
                async with lock:
                    while not ensure_index():
                        await asyncio.sleep(0.05)
                    out = _Out()
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
                    for p in sorted(touched):
                        _pass(p, out)
                    await _commit(out)

    async def _take(message: Any, out: _Out, touched: set[int]) -> None:
        topic = message.topic
        p = message.partition
        if p not in index.assigned:
            return
        if topic == DELIVERY.full(s):
            data = orjson.loads(message.value) if message.value else None
            # delivery started (or finished) it: it has left delivery's input
            if isinstance(data, dict) and data.get("type") in ("DeliveryStarted",
                                                               "DeliveryAttempted"):
                mid = str(data.get("message_id", ""))
                meters = index.meters[p]
                if mid in meters.inflight:
                    index.meters[p] = core.attempted(meters, mid)
                    out.meters.add(p)
                    touched.add(p)
            return
        if topic == QUOTA_ANSWERS.full(s):
            try:
                got = decode_any(_BATCH, message.value)
                answers = [quota.Answer.of(a) for a in (
                    got.answers if isinstance(got, QuotasAnswered)
                    else [got.to_representation()])]
            except (InvalidEvent, KeyError, TypeError, ValueError) as exc:
                await send_dead_letter(dlq, NAME, message, f"unreadable quota answer: {exc}")
                return
            for answer in answers:
                _answer(p, answer, touched, out)
            return
        if topic == COMMANDS.full(s):
            try:
                command = decode(QueueCommandIssued, message.value)
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                return
            _command(p, command, out)
            return
        decision = await _decision(message)
        if decision is None:
            return
        mid = decision.message_id
        if held_table.get(message.key) is not None or mid in index.held[p]:
            return  # redelivered: held, released or cancelled already
        index.held[p][mid] = core.Mail(
            message_id=mid, lane="transactional", seq=message.offset,
            decision=dict(decision.to_representation()), received_at=clock(),
        )
        touched.add(p)

    def _answer(p: int, answer: quota.Answer, touched: set[int], out: _Out) -> None:
        """The quota answered an ask: the mail goes (in this batch's pass) or waits."""
        mail = index.held[p].get(answer.message_id)
        if mail is None or not mail.asked or mail.ask_id != answer.ask_id:
            return  # stale or repeated: released, held or asking again already
        now = clock()
        if answer.granted:
            result = core.answered(index.meters[p], mail, True, now, at=answer.at,
                                   reason=answer.reason)
        else:
            result = core.answered(index.meters[p], mail, False, now, why=answer.why,
                                   until=answer.until, reason=answer.reason)
        if result.meters is not index.meters[p]:
            index.meters[p] = result.meters
            out.meters.add(p)
        if result.hold is not None:
            _hold(p, result.mail, result.hold, out)
        else:  # granted now: released by this batch's pass
            index.held[p][mail.message_id] = result.mail
            out.rows[mail.message_id.encode()] = {"state": "held", "mail": result.mail.to_dict()}
        touched.add(p)

    def _command(p: int, command: QueueCommandIssued, out: _Out) -> None:
        mid, cid, what = command.message_id, command.event_id, command.command
        if what == "ack":
            return  # the status processor owns acknowledgements
        key = mid.encode()
        row = held_table.get(key) or out.rows.get(key)
        if isinstance(row, dict) and cid in row.get("commands", []):
            return  # redelivered: applied already
        mail = index.held[p].get(mid)
        if mail is None:
            mail = next((m for m in index.pending[p].values() if m.message_id == mid), None)
        if mail is None:
            if isinstance(row, dict) and row.get("state") == "cancelled":
                out.send(results_topic, mid, QueueCommandRefused(
                    message_id=mid, command_id=cid, command=what, by=NAME,
                    reason=f"{mid} was cancelled: it will not be sent",
                    event_id=result_id(cid)))
                return
            out.send(released_topic, mid, command)  # delivery owns it now (or nobody: it says)
            return
        now = clock()
        where = _WHERE.get(mail.why, "queued")
        if what == "retry":
            out.send(results_topic, mid, QueueCommandRefused(
                message_id=mid, command_id=cid, command=what, by=NAME,
                reason=f"{mid} is {where}, not failed: nothing to retry "
                       "(use send-now to skip the wait)", event_id=result_id(cid)))
            return
        _forget(p, mail, out)
        if what == "cancel":
            out.send(results_topic, mid, MessageCancelled(
                message_id=mid, command_id=cid, by=NAME,
                reason=f"cancelled by {command.operator or 'an operator'}",
                event_id=result_id(cid, "cancelled")))
            out.send(results_topic, mid, QueueCommandApplied(
                message_id=mid, command_id=cid, command=what, by=NAME,
                detail=f"cancelled while {where}", event_id=result_id(cid)))
            out.rows[key] = {"state": "cancelled", "at": now, "commands": [cid]}
            return
        # send_now: released whatever the limits say, and counted by the quota
        index.meters[p] = core.force(index.meters[p], mail, now, limits())
        out.meters.add(p)
        if core.limited(mail.server, mail.tenant, mail.domains(), limits()):
            out.ask(_ask(mail, f"{mid}:force:{cid}", p, force=True))
        out.send(released_topic, mid, MailReleased(
            message_id=mid, lane=mail.lane, decision=mail.decision, forced=True,
            command_id=cid, held_for=round(now - mail.received_at, 3), step=mail.step + 1))
        out.send(results_topic, mid, QueueCommandApplied(
            message_id=mid, command_id=cid, command=what, by=NAME,
            detail=f"released now (was {where})", event_id=result_id(cid)))
        out.rows[key] = {"state": "released", "at": now, "commands": [cid]}

    def _forget(p: int, mail: core.Mail, out: _Out) -> None:
        index.held[p].pop(mail.message_id, None)
        if mail.lane == "mass":
            index.pending[p].pop(mail.seq, None)
            out.done_mass.append(mail.message_id.encode())

    # --- a scheduling pass over one partition --------------------------------------------------

    def _pass(p: int, out: _Out) -> None:
        now = clock()
        lim = limits()
        held = index.held[p]
        due = [m for m in held.values() if core.due(m, now, lim)]
        trans = [m for m in due if m.lane == "transactional"]
        due_mass = sorted((m for m in due if m.lane == "mass"), key=lambda m: m.seq)
        pending = itertools.islice(index.pending[p].values(), s.mass_lookahead)
        mass = list(heapq.merge(due_mass, pending, key=lambda m: m.seq))
        result = core.schedule(index.meters[p], trans, mass, now, lim)
        if result.meters != index.meters[p]:
            index.meters[p] = result.meters
            out.meters.add(p)
        for mail in result.released:
            _forget(p, mail, out)
            out.send(released_topic, mail.message_id, MailReleased(
                message_id=mail.message_id, lane=mail.lane, decision=mail.decision,
                held_for=round(now - mail.received_at, 3), step=mail.step + 1))
            out.rows[mail.message_id.encode()] = {"state": "released", "at": now}
        for mail in result.asks:  # asking: held (not visibly) until the quota answers
            if mail.lane == "mass":
                index.pending[p].pop(mail.seq, None)
            held[mail.message_id] = asking = replace(mail, asked=now)
            out.rows[mail.message_id.encode()] = {"state": "held", "mail": asking.to_dict()}
            out.ask(_ask(mail, mail.ask_id, p))
        for mail, verdict in result.holds:
            _hold(p, mail, verdict, out)
        index.refresh_due(p, lim.ask_timeout)

    def _hold(p: int, mail: core.Mail, verdict: core.Verdict, out: _Out) -> None:
        """Record a hold (and announce it when it has a reason)."""
        held = index.held[p]
        step = mail.step + 1 if verdict.reason else mail.step
        new = replace(mail, why=verdict.kind, until=verdict.until, step=step)
        if new == held.get(mail.message_id):
            return
        if verdict.reason:
            out.send(held_topic, mail.message_id, MailHeld(
                message_id=mail.message_id, lane=mail.lane, why=verdict.kind,
                reason=verdict.reason, until=verdict.until, step=step))
        if mail.lane == "mass":
            index.pending[p].pop(mail.seq, None)
        held[mail.message_id] = new
        out.rows[mail.message_id.encode()] = {"state": "held", "mail": new.to_dict()}

    async def _commit(out: _Out) -> None:
        """Publish, wait for the acknowledgements, then write the tables (see the module docstring).
        The index already reflects ``out``, so it must land: a failed publish
        is retried (the lock is held: nothing else moves meanwhile); a send
        that did reach the broker before the failure is a duplicate delivery
        drops."""
        if out.asks:  # one record for the pass's asks
            key = out.asks[0]["message_id"]
            out.send(quota_topic, key, QuotasAsked(asks=out.asks))
            out.asks = []
        if not out.events and not out.rows and not out.meters:
            return
        delay = 0.5
        while True:
            try:
                sent = [await topic.send(key=key, value=value)
                        for topic, key, value in out.events]
                await acked(sent)  # ours on the log, not everything the producer holds
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker is away: try again
                log.exception("limiter could not publish %d events; retrying in %.1f s",
                              len(out.events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        # the meters first: a crash between the writes then counts a mail
        # that is released again after the restart (sends less), never the
        # other way round (a released row without its count sends more)
        for p in out.meters:
            meters_table[meters_key(p, n)] = index.meters[p].to_dict()
        for key, row in out.rows.items():
            held_table[key] = row
            if row.get("state") in ("released", "cancelled"):
                index.done_held.append((float(row["at"]), key))
        index.done_mass.extend(out.done_mass)

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
                    now = clock()
                    out = _Out()
                    for p in sorted(index.assigned):
                        if index.pending.get(p) or index.next_due.get(p, float("inf")) <= now:
                            _pass(p, out)
                    await _commit(out)
                    _pace_intake()
                    for key in index.prunable_held(now, limits().held_keep):
                        row = held_table.get(key)
                        if isinstance(row, dict) and row.get("state") in ("released",
                                                                          "cancelled"):
                            del held_table[key]
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the tick must keep running
                log.exception("limiter tick failed; retrying next tick")
