"""The limiter's steps: what one input (a routed mail, a quota answer, an
ops command, delivery's attempt) or one scheduling pass does to the
limiter's state, and what it publishes and writes.

State: the ``Index`` of the worker's partitions (index.py; the tables are
its truth) and, read only, the ``limiter-held`` rows (``row``: key ->
row or None). Output: an ``Out`` (events to publish, by where they go,
and the table rows to write once the broker acknowledged the events).
Pure: no Faust, no I/O, the clock is an argument; agent.py is the glue
(decode, lock, call these, publish, wait, write) and tests call these
directly (tests/unit/test_limiter_steps.py).

Where a mail is, in the index of its partition ``p``:
- ``pending[p]``: mass mail taken in, in creation order;
- ``asking[p]``: mail that asked the quota and waits for its answer (in
  the order it asked: the oldest ask first, for the timeout). A
  transactional ask carries its mail (``mail`` of the ask, returned in
  the answer): the ask on the ``quota`` topic and then the answer on
  ``quota-answers`` hold it until it is released or held, so no row is
  written for it; a mass mail's limiter-mass row brings it back;
- ``held[p]``: mail held in the held table (a send_at, a daily limit, a
  rate's slot), visible or not.
"""

from __future__ import annotations

import heapq
import itertools
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from schemas import (
    Event,
    MailHeld,
    MailReleased,
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    RoutingDecided,
    ids,
)

from . import core, quota
from .index import Index, key_on

NAME = "limiter"
RESULT_NS = ids.LIMITER_COMMAND_RESULT
# where an event goes (the agent maps these to its topics)
RELEASED, HELD, RESULTS = "released", "held", "results"
_WHERE = {"daily_limit": "deferred (daily limit)", "scheduled": "scheduled", "paced": "paced"}

Row = Callable[[bytes], Any]  # a limiter-held row by key (None: no row)


def result_id(command_id: str, what: str = "result") -> str:
    """The event_id of a command's answer: a redelivered command answers the same."""
    return uuid.uuid5(RESULT_NS, f"{what}:{command_id}").hex


@dataclass
class Out:
    """What a batch or a tick publishes, and the rows it writes once the
    events are acknowledged. ``events``: (where, message_id, event);
    ``asks``: QuotaAsked items, sent as one QuotasAsked; ``meters``: the
    partitions whose meters row changed; ``done_mass``: limiter-mass rows
    the mass lane may drop once the rows are written; ``returns``: ask ids
    whose grant is given back to the quota (a cancelled mail's token)."""

    events: list[tuple[str, str, Event | bytes]] = field(default_factory=list)
    rows: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    meters: set[int] = field(default_factory=set)
    done_mass: list[bytes] = field(default_factory=list)
    asks: list[dict[str, Any]] = field(default_factory=list)

    def send(self, where: str, message_id: str, event: Event | bytes) -> None:
        self.events.append((where, message_id, event))

    def empty(self) -> bool:
        return not (self.events or self.rows or self.meters or self.asks)


def ask_of(mail: core.Mail, ask_id: str, partition: int, limits: core.Limits, *,
           force: bool = False) -> dict[str, Any]:
    """A QuotaAsked as data, an item of the pass's QuotasAsked. Recipient
    domains only when a domain rate is configured (parsing them is most of
    an ask's cost); a transactional mail's ask carries the mail."""
    ask: dict[str, Any] = {
        "type": "QuotaAsked", "ask_id": ask_id, "message_id": mail.message_id,
        "server": mail.server, "by": NAME, "lane": mail.lane, "tenant": mail.tenant,
        "domains": mail.domains() if limits.domains else [], "force": force,
        "partition": partition}
    if mail.lane == "transactional":  # as JSON text: the quota passes it on unparsed
        ask["mail"] = orjson.dumps({
            "message_id": mail.message_id, "lane": mail.lane, "seq": mail.seq,
            "decision": mail.decision, "received_at": mail.received_at, "step": mail.step,
            "asked": mail.asked}).decode()
    return ask


def give_back(ask_id: str, message_id: str, server: str, partition: int) -> dict[str, Any]:
    """An item of a QuotasAsked that gives the token of ``ask_id`` back
    (its mail was cancelled): the quota stops counting it against the
    daily limits (quota.give_back). Not answered."""
    return {"type": "QuotaAsked", "ask_id": ask_id, "message_id": message_id,
            "server": server or "-", "by": NAME, "give_back": True, "partition": partition}


def _held_row(mail: core.Mail) -> dict[str, Any]:
    return {"state": "held", "mail": mail.to_dict()}


def known(index: Index, p: int, message_id: str) -> core.Mail | None:
    """The mail ``message_id`` if this partition's limiter holds it (in any way)."""
    mail = index.held[p].get(message_id) or index.asking[p].get(message_id)
    if mail is None:
        mail = next((m for m in index.pending[p].values() if m.message_id == message_id),
                    None)
    return mail


def forget(index: Index, p: int, mail: core.Mail, out: Out) -> None:
    """The mail leaves the limiter (released or cancelled)."""
    index.held[p].pop(mail.message_id, None)
    index.asking[p].pop(mail.message_id, None)
    index.rowed.discard(mail.message_id)
    if mail.lane == "mass":
        index.pending[p].pop(mail.seq, None)
        out.done_mass.append(mail.message_id.encode())


# --- inputs ----------------------------------------------------------------------------------


def take_mass(index: Index, p: int, mail: core.Mail, mass_row: Any, held_row: Any,
              lookahead_full: int, window: int) -> tuple[bool, bool, bool]:
    """The mass lane took in a routed mass mail. Returns (store its
    limiter-mass row, stop fetching the partition's mass lane: enough
    waits, wake the scheduler: room in the mass window)."""
    if (mass_row is not None or held_row is not None
            or mail.message_id.encode() in index.released):
        return False, False, False  # redelivered: taken in already (maybe released and pruned)
    if not (index.built and p in index.assigned):
        return True, False, False
    index.pending[p][mail.seq] = mail
    return (True, len(index.pending[p]) >= lookahead_full,
            len(index.meters[p].inflight) < window)


def take_routed(index: Index, p: int, mail: core.Mail, row: Row) -> bool:
    """A routed transactional mail: held (in memory) until this batch's
    pass decides. False: redelivered, the limiter has it or had it."""
    mid = mail.message_id
    if mid in index.held[p] or mid in index.asking[p]:
        return False
    key = mid.encode()
    if key in index.released or row(key) is not None:
        return False
    index.held[p][mid] = mail
    return True


def take_attempt(index: Index, p: int, message_id: str, out: Out) -> bool:
    """Delivery started (or finished) a mail: it left delivery's input, so
    it no longer counts against the partition's mass window."""
    meters = index.meters[p]
    if message_id not in meters.inflight:
        return False
    index.meters[p] = core.attempted(meters, message_id)
    out.meters.add(p)
    return True


def take_answer(index: Index, p: int, answer: quota.Answer, now: float, row: Row,
                limits: core.Limits, out: Out) -> bool:
    """The quota answered an ask: the mail goes (in this batch's pass: put
    back in ``held`` with its token) or waits (held, in words when it is
    news). An answer for a mail the index does not know (the limiter
    restarted while it asked) brings the mail back from the answer unless
    the limiter released, held or cancelled it meanwhile. False: stale or
    repeated, nothing to do."""
    mid = answer.message_id
    mail = index.asking[p].get(mid)
    if mail is None:
        if (answer.mail is None or mid in index.held[p] or mid.encode() in index.released
                or row(mid.encode()) is not None):
            gone = row(mid.encode())
            if answer.granted and _cancelled(gone):
                # granted after the mail was cancelled: the token goes back
                out.asks.append(give_back(answer.ask_id, mid, str(gone.get("server", "")), p))
            return False
        mail = core.Mail.from_dict(orjson.loads(answer.mail))
        if not mail.asked:
            mail = replace(mail, asked=now)
    elif mail.ask_id != answer.ask_id:
        return False
    index.asking[p].pop(mid, None)
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
        hold(index, p, result.mail, result.hold, out)
    else:  # granted now: released by this batch's pass (no row: it leaves in this batch)
        index.held[p][mid] = result.mail
    return True


def _cancelled(row: Any) -> bool:
    return isinstance(row, dict) and row.get("state") == "cancelled"


def command(index: Index, p: int, cmd: QueueCommandIssued, now: float, row: Row,
            limits: core.Limits, out: Out) -> None:
    """An ops command for a mail of partition ``p``: cancel, send-now or
    retry a mail the limiter holds; a mail it does not hold is delivery's
    (the command goes on to it), or was cancelled here (refused)."""
    mid, cid, what = cmd.message_id, cmd.event_id, cmd.command
    if what == "ack":
        return  # the status processor owns acknowledgements
    key = mid.encode()
    prior = out.rows.get(key) or row(key)
    if isinstance(prior, dict) and cid in prior.get("commands", []):
        return  # redelivered: applied already
    mail = known(index, p, mid)
    if mail is None:
        if _cancelled(prior):
            out.send(RESULTS, mid, QueueCommandRefused(
                message_id=mid, command_id=cid, command=what, by=NAME,
                reason=f"{mid} was cancelled: it will not be sent",
                event_id=result_id(cid)))
            return
        out.send(RELEASED, mid, cmd)  # delivery owns it now (or nobody: it says)
        return
    asking = mid in index.asking[p]
    where = "waiting for its quota token" if asking else _WHERE.get(mail.why, "queued")
    if what == "retry":
        out.send(RESULTS, mid, QueueCommandRefused(
            message_id=mid, command_id=cid, command=what, by=NAME,
            reason=f"{mid} is {where}, not failed: nothing to retry "
                   "(use send-now to skip the wait)", event_id=result_id(cid)))
        return
    forget(index, p, mail, out)
    if what == "cancel":
        if mail.token:  # its token was granted (a rate's future slot): given back
            out.asks.append(give_back(mail.token, mid, mail.server, p))
        # an ask still open is given back when its grant comes (take_answer)
        out.send(RESULTS, mid, MessageCancelled(
            message_id=mid, command_id=cid, by=NAME,
            reason=f"cancelled by {cmd.operator or 'an operator'}",
            event_id=result_id(cid, "cancelled")))
        out.send(RESULTS, mid, QueueCommandApplied(
            message_id=mid, command_id=cid, command=what, by=NAME,
            detail=f"cancelled while {where}", event_id=result_id(cid)))
        out.rows[key] = {"state": "cancelled", "at": now, "commands": [cid],
                         "server": mail.server}
        return
    # send_now: released whatever the limits say, and counted by the quota once:
    # a token granted already counts; an open ask is forced under its own id (the
    # quota counts whichever of the two it sees first, the other finds its row)
    index.meters[p] = core.force(index.meters[p], mail, now, limits)
    out.meters.add(p)
    if not mail.token and core.mail_limited(mail, limits):
        out.asks.append(ask_of(mail, mail.ask_id, p, limits, force=True))
    out.send(RELEASED, mid, MailReleased(
        message_id=mid, lane=mail.lane, decision=mail.decision, forced=True,
        command_id=cid, held_for=round(now - mail.received_at, 3), step=mail.step + 1))
    out.send(RESULTS, mid, QueueCommandApplied(
        message_id=mid, command_id=cid, command=what, by=NAME,
        detail=f"released now (was {where})", event_id=result_id(cid)))
    out.rows[key] = {"state": "released", "at": now, "commands": [cid]}


# --- a scheduling pass over one partition ----------------------------------------------------


def run_pass(index: Index, p: int, now: float, limits: core.Limits, lookahead: int,
             out: Out) -> None:
    """Decide partition ``p``'s due mail with the core (transactional
    first, then mass in creation order) and record what it decided: the
    released leave, the asking wait for the quota (an ask unanswered for
    ``ask_timeout`` asks again, same ask id), the rest are held."""
    held, asking = index.held[p], index.asking[p]
    cutoff = now - limits.ask_timeout
    while asking:  # oldest ask first: stop at the first one still fresh
        mid, mail = next(iter(asking.items()))
        if mail.asked > cutoff:
            break
        del asking[mid]
        held[mid] = replace(mail, asked=0.0)  # due again: it asks again, same ask_id
    due = [m for m in held.values() if core.due(m, now, limits)]
    trans = [m for m in due if m.lane == "transactional"]
    due_mass = sorted((m for m in due if m.lane == "mass"), key=lambda m: m.seq)
    pending = itertools.islice(index.pending[p].values(), lookahead)
    mass = list(heapq.merge(due_mass, pending, key=lambda m: m.seq))
    result = core.schedule(index.meters[p], trans, mass, now, limits)
    if result.meters != index.meters[p]:
        index.meters[p] = result.meters
        out.meters.add(p)
    ids: list[str] = []
    for mail in result.released:
        mid = mail.message_id
        if mid in index.rowed:  # its held row says released now
            out.rows[mid.encode()] = {"state": "released", "at": now}
        else:
            ids.append(mid)
        forget(index, p, mail, out)
        out.send(RELEASED, mid, released_event(mail, now))
    if ids:
        # the pass's row answers a redelivery of their decisions or answers after a
        # crash: without it, a mail would be released again while delivery may be
        # sending it (a duplicate it could take for an interrupted attempt)
        out.rows[pass_key(ids[0], now, p, index.partitions)] = {
            "state": "released", "at": now, "ids": ids}
    for mail in result.asks:
        held.pop(mail.message_id, None)
        if mail.lane == "mass":
            index.pending[p].pop(mail.seq, None)
        asking[mail.message_id] = now_asking = replace(mail, asked=now)
        out.asks.append(ask_of(now_asking, mail.ask_id, p, limits))
    for mail, verdict in result.holds:
        hold(index, p, mail, verdict, out)
    index.refresh_due(p, limits.ask_timeout)


def released_event(mail: core.Mail, now: float) -> bytes:
    """The MailReleased of a pass's release, encoded: what
    ``encode(MailReleased(...))`` gives (the same fields, in the same order,
    a new event_id), made as plain data (building and encoding the Record
    was most of a release's own cost). Its inputs were validated when the
    decision was read; tests/unit/test_limiter_steps.py checks it decodes to
    the Record's event."""
    return orjson.dumps({
        "type": "MailReleased", "schema": MailReleased.SCHEMA, "event_id": uuid.uuid4().hex,
        "occurred_at": time.time(), "message_id": mail.message_id, "lane": mail.lane,
        "decision": mail.decision, "forced": False, "command_id": "",
        "held_for": round(now - mail.received_at, 3), "step": mail.step + 1,
        "token": mail.token})


def hold(index: Index, p: int, mail: core.Mail, verdict: core.Verdict, out: Out) -> None:
    """Record a hold (and announce it when it has a reason)."""
    held = index.held[p]
    step = mail.step + 1 if verdict.reason else mail.step
    new = replace(mail, why=verdict.kind, until=verdict.until, step=step)
    if new == held.get(mail.message_id):
        return
    if verdict.reason:
        out.send(HELD, mail.message_id, MailHeld(
            message_id=mail.message_id, lane=mail.lane, why=verdict.kind,
            reason=verdict.reason, until=verdict.until, step=step))
    if mail.lane == "mass":
        index.pending[p].pop(mail.seq, None)
    held[mail.message_id] = new
    index.rowed.add(mail.message_id)
    out.rows[mail.message_id.encode()] = _held_row(new)


# --- the tick and the bookkeeping after a commit -----------------------------------------


def due_partitions(index: Index, now: float) -> list[int]:
    """The partitions the tick passes over: mass mail waiting, or held mail due."""
    return [p for p in sorted(index.assigned)
            if index.pending.get(p) or index.next_due.get(p, float("inf")) <= now]


def intake_fetching(index: Index, ahead: int) -> dict[int, bool]:
    """Per partition, fetch its mass lane (True), stop (False) or leave it
    (absent): stop while ``ahead`` of its mass mails wait here (taken in,
    asking, or held), fetch again at half."""
    out: dict[int, bool] = {}
    for p in index.assigned:
        waiting = len(index.pending[p]) + sum(
            1 for m in itertools.chain(index.held[p].values(), index.asking[p].values())
            if m.lane == "mass")
        if waiting >= ahead:
            out[p] = False
        elif waiting <= ahead // 2:
            out[p] = True
    return out


def written(index: Index, out: Out) -> None:
    """The rows of ``out`` are written: remember the markers to prune later
    and the limiter-mass rows the mass lane may drop now."""
    for key, row in out.rows.items():
        if row.get("state") in ("released", "cancelled"):
            index.done_held.append((float(row["at"]), key))
            if "ids" in row:
                index.add_pass(key, row["ids"])
    index.done_mass.extend(out.done_mass)


def pass_key(first: str, now: float, p: int, partitions: int) -> bytes:
    """The key of a pass row (the mail one pass released from partition
    ``p``, ``ids``): unique (its first mail is released once) and put on
    ``p`` by the partitioner, so it is recovered with the mail it answers for."""
    return key_on(f"released:{now:.6f}:{first}", p, partitions)


_ATTEMPTS = (b'"DeliveryStarted"', b'"DeliveryAttempted"')


def is_attempt(raw: bytes) -> bool:
    """May this record of delivery's topic be a DeliveryStarted or a
    DeliveryAttempted (the only ones the limiter reads)? A peek at the
    bytes, before any decode: False for certain is not one."""
    return any(t in raw for t in _ATTEMPTS)


def plain_decision(raw: bytes | None) -> dict[str, Any] | None:
    """A RoutingDecided as data when it is plainly well formed (JSON, its
    type, a schema this reader knows, the fields the limiter and the
    events it writes use, with their types; a routed one with its server,
    header_from and request), without building a Record (a third of a
    limited mail's decode and release in the limiter). None: anything
    else, for the full ``schemas.decode`` to accept or refuse in words."""
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("type") != "RoutingDecided" or "__faust" in data:
        return None
    schema = data.get("schema")
    if type(schema) is not int or not 1 <= schema <= RoutingDecided.SCHEMA:
        return None
    for name in ("message_id", "outcome", "server", "header_from", "event_id"):
        if not isinstance(data.get(name), str):
            return None
    if not data["message_id"] or not isinstance(data.get("request"), dict):
        return None
    if type(data.get("direct", False)) is not bool:
        return None
    if data["outcome"] != "routed":
        return None  # not ours anyway: the full decode says so, or dead-letters it
    if not (data["server"] and data["header_from"]):
        return None
    return data


def answers_of(data: Mapping[str, Any]) -> list[quota.Answer]:
    """The answers of a QuotasAnswered (or one QuotaGranted / QuotaRefused), as data."""
    items = data.get("answers") if data.get("type") == "QuotasAnswered" else [data]
    return [quota.Answer.of(a) for a in items or []]
