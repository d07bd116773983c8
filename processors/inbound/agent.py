"""Inbound router (consumer group ``postlane-inbound``): InboundMailReceived
-> one InboundMailRouted per mail, in the order of core.py. Thin glue; the
decisions are core.py's.

Partitioning: each table lives with the key it is looked up by, so every
read and write is local to the partition being processed:

- ``inbound`` is keyed by the normalized Message-ID. Stage 1 (``classify``)
  owns the ``inbound-seen`` table (Message-ID -> first inbound mail):
  duplicate, bounce, and the config-only steps.
- ``sent-ids`` and ``inbound-threads`` are keyed by a normalized RFC
  Message-ID. Stage 2 (``threads``) owns ``sent-index`` (Message-ID
  Postlane sent -> message id, thread_ref, tenant), written from
  SentMessageRecorded. A mail with In-Reply-To/References is re-keyed to
  its first candidate id; the hop looks up every candidate that lives on
  that partition, then re-keys to the next candidate that could still win,
  so a lookup takes at most one hop per partition, not one per id.
- ``inbound-aliases`` is keyed ``alias|sender``. Stage 3 (``aliases``) owns
  ``alias-loops`` (the loop counter).
- ``sent-ids`` itself is written by ``index``, which reads routing decisions
  and delivery attempts (keyed by message id, with the ``sent-threads``
  table for the thread of a mail whose Message-ID changed on a retry).

At-least-once: a redelivered input gives the same decision again with the
same ``event_id`` (derived from the inbound id), and a loop counter never
counts one inbound mail twice.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from schemas import (
    AliasConfigured,
    DeliveryAttempted,
    Event,
    InboundAliasMatched,
    InboundMailReceived,
    InboundMailRejected,
    InboundMailRouted,
    InboundReplyLookupRequested,
    InvalidEvent,
    RoutingDecided,
    SentMessageRecorded,
    UnsubscribeRequested,
    decode,
    decode_any,
    encode,
)
from schemas.ids import INBOUND_ROUTED as ROUTED_NS
from streams import tables
from streams.partitioning import partition_for
from streams.secrets import unsubscribe_secret
from streams.topics import (
    BOUNCES,
    DEAD_LETTER,
    DELIVERY,
    INBOUND,
    INBOUND_ALIASES,
    INBOUND_ROUTED,
    INBOUND_THREADS,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
    SENT_IDS,
)

from ..deadletter import decode_or_dead_letter, send_dead_letter
from ..runtime import Runtime
from . import core
from .mail import MalformedMail, ParsedMail, normalize_message_id, parse_mail

NAME = "inbound"
log = logging.getLogger("postlane.inbound")
_NS = ROUTED_NS
_INBOUND: dict[str, type[Event]] = {
    "InboundMailReceived": InboundMailReceived, "InboundMailRejected": InboundMailRejected,
}
_THREADS: dict[str, type[Event]] = {
    "SentMessageRecorded": SentMessageRecorded,
    "InboundReplyLookupRequested": InboundReplyLookupRequested,
}
_INDEX: dict[str, type[Event]] = {
    "RoutingDecided": RoutingDecided, "DeliveryAttempted": DeliveryAttempted,
}
_CARRY_MAIL = ("bounce", "reply", "alias")


def decision_event_id(inbound_id: str) -> str:
    return uuid.uuid5(_NS, f"{inbound_id}/routed").hex


def carried_mail(inbound: Any, parsed: Any) -> tuple[InboundMailReceived, ParsedMail]:
    """The mail and its parse a router-internal event carries, checked as
    strictly as an event on a topic (anyone can write those topics: a
    broken one is dead-lettered, never a crash of the agent)."""
    mail = decode(InboundMailReceived, inbound if isinstance(inbound, dict) else None)
    if not isinstance(parsed, dict):
        raise InvalidEvent("ParsedMail", [f"parsed must be an object, got {type(parsed).__name__}"])
    try:
        return mail, ParsedMail.from_dict(parsed)
    except TypeError as exc:
        raise InvalidEvent("ParsedMail", [str(exc)]) from None


def alias_key(alias: str, sender: str) -> str:
    return f"{alias.lower()}|{sender.lower()}"


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    n = s.partitions
    routed = rt.topic(INBOUND_ROUTED)
    threads_out = rt.topic(INBOUND_THREADS)
    aliases_out = rt.topic(INBOUND_ALIASES)
    sent_out = rt.topic(SENT_IDS)
    inbound_out = rt.topic(INBOUND)
    send_out = rt.topic(SEND_REQUESTED)
    bounces_out = rt.topic(BOUNCES)
    dlq = rt.topic(DEAD_LETTER)
    secret: list[bytes] = []  # the unsubscribe token secret, read once (secrets edge)

    def unsubscribe_check(now: float) -> core.UnsubscribeCheck:
        if not secret:
            secret.append(unsubscribe_secret(s.unsubscribe_secret_env,
                                             s.unsubscribe_secret_file, s.data_dir))
        return core.UnsubscribeCheck(s.unsubscribe_alias, secret[0], now)

    seen = rt.table(tables.INBOUND_SEEN)
    sent_index = rt.table(tables.SENT_INDEX)
    loops = rt.table(tables.ALIAS_LOOPS)
    sent_threads = rt.table(tables.SENT_THREADS)

    async def emit(route: core.Route, inbound: InboundMailReceived | InboundMailRejected,
                   key: str, mail: ParsedMail | None) -> None:
        """Publish the decision (and the bounce back it asks for)."""
        bounce_id = ""
        if route.unsubscribe:
            # the suppression log, keyed by the address; on the log before the decision
            fact = UnsubscribeRequested.from_data(route.unsubscribe)
            await bounces_out.send(key=fact.address.lower().encode(), value=encode(fact))
        if route.bounce_to and mail is not None:
            request = core.bounce_request(route, mail, inbound.inbound_id, rt.config.view.settings,
                                          inbound.tenant)
            if request is not None:
                await send_out.send(key=request.message_id.encode(), value=encode(request))
                bounce_id = request.message_id
        carried = isinstance(inbound, InboundMailReceived) and route.route in _CARRY_MAIL
        event = InboundMailRouted(
            event_id=decision_event_id(inbound.inbound_id),
            inbound_id=inbound.inbound_id,
            route=route.route, rule=route.rule, reason=route.reason, target=route.target,
            alias=route.alias, policy=route.policy,
            tenant=route.tenant or inbound.tenant, thread_ref=route.thread_ref,
            original_message_id=route.original_message_id,
            bounce_to=route.bounce_to if bounce_id else "", bounce_message_id=bounce_id,
            sender=mail.sender if mail else "", recipients=mail.recipients if mail else [],
            message_id=inbound.message_id, subject=mail.subject[:500] if mail else "",
            source=inbound.source, server=inbound.server, received_at=inbound.received_at,
            mail=inbound.mail if carried else "",  # type: ignore[union-attr]
        )
        log.info("inbound %s: %s %s (%s)", inbound.inbound_id, route.route, route.target,
                 route.rule)
        await routed.send(key=key.encode(), value=encode(event))

    async def dispatch(step: core.Route | core.AliasMatch | list[str],
                       inbound: InboundMailReceived, key: str, mail: ParsedMail) -> None:
        if isinstance(step, core.Route):
            await emit(step, inbound, key, mail)
        elif isinstance(step, core.AliasMatch):
            a = step.alias
            matched = InboundAliasMatched(
                inbound_key=key, alias=a.alias, target=a.target, tenant=a.tenant,
                policy=a.policy, rule=step.rule, sender=mail.sender, recipient=step.recipient,
                inbound=inbound.to_representation(), parsed=mail.to_dict(),
            )
            await aliases_out.send(key=alias_key(a.alias, mail.sender).encode(),
                                   value=encode(matched))
        else:
            lookup = InboundReplyLookupRequested(
                inbound_key=key, candidates=step, pending=list(range(len(step))),
                inbound=inbound.to_representation(), parsed=mail.to_dict(),
            )
            await threads_out.send(key=step[0].encode(), value=encode(lookup))

    # --- stage 1: duplicate, bounce, config-only steps -----------------------------------

    @app.agent(rt.raw_topic(INBOUND), name="postlane.inbound")
    async def classify(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            ev = await decode_or_dead_letter(dlq, NAME, message, _INBOUND)
            if ev is None:
                continue
            if isinstance(ev, InboundMailRejected):
                reason = f"not taken in: {ev.reason}"
                key = (message.key or b"").decode("utf-8", "replace") or ev.inbound_id
                await emit(core.Route("reject", "intake", reason), ev, key, None)
                continue
            assert isinstance(ev, InboundMailReceived)
            try:
                mail = parse_mail(ev.raw(), ev.envelope_to)
            except MalformedMail as exc:
                key = (message.key or b"").decode("utf-8", "replace") or ev.inbound_id
                await emit(core.malformed(exc), ev, key, None)
                continue
            key = mail.message_id or f"inbound:{ev.inbound_id}"
            if message.key != key.encode():
                # keyed by something else (another publisher): re-key it, so
                # the duplicate table sees every copy on one partition
                await inbound_out.send(key=key.encode(), value=message.value)
                continue
            if mail.message_id:
                entry = seen.get(key.encode())
                dup = core.duplicate(entry, ev.inbound_id, mail.message_id)
                if dup is not None:
                    await emit(dup, ev, key, mail)
                    continue
                first = core.first_seen(entry, ev.inbound_id, ev.server, ev.source,
                                        ev.received_at)
                if first is not None:
                    seen[key.encode()] = first
            check = unsubscribe_check(ev.received_at or time.time())
            await dispatch(core.classify(mail, rt.config.view, ev.tenant, check), ev, key, mail)

    # --- stage 2: the reply table ----------------------------------------------------------

    @app.agent(rt.raw_topic(SENT_IDS, INBOUND_THREADS), name="postlane.inbound-threads")
    async def threads(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            ev = await decode_or_dead_letter(dlq, NAME, message, _THREADS)
            if ev is None:
                continue
            if isinstance(ev, SentMessageRecorded):
                key = normalize_message_id(ev.smtp_message_id).encode()
                if message.key != key:
                    await sent_out.send(key=key, value=message.value)
                    continue
                sent_index[key] = core.sent_index_row(ev.message_id, ev.thread_ref, ev.tenant)
                continue
            assert isinstance(ev, InboundReplyLookupRequested)
            try:
                carried = carried_mail(ev.inbound, ev.parsed)
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                continue
            await lookup(ev, message, carried)

    async def lookup(ev: InboundReplyLookupRequested, message: Any,
                     carried: tuple[InboundMailReceived, ParsedMail]) -> None:
        keyed = (message.key or b"").decode("utf-8", "replace")
        here = int(message.partition)

        def local(candidate: str) -> int:
            # the keyed candidate is local whatever partitioner its producer used
            return here if candidate == keyed else partition_for(candidate, n)

        def get(candidate: str) -> dict[str, Any] | None:
            value = sent_index.get(candidate.encode())
            return value if isinstance(value, dict) else None

        pending, idx, found = core.lookup_here(
            ev.candidates, ev.pending, ev.found_index, ev.found, here, local, get)
        nxt = core.next_candidate(ev.candidates, pending, idx)
        if nxt is not None and nxt != keyed and ev.hops <= n + 1:
            forward = InboundReplyLookupRequested(
                inbound_key=ev.inbound_key, candidates=ev.candidates, pending=pending,
                inbound=ev.inbound, parsed=ev.parsed, found_index=idx, found=found,
                hops=ev.hops + 1,
            )
            await threads_out.send(key=nxt.encode(), value=encode(forward))
            return
        inbound, mail = carried
        if idx >= 0:
            route = core.reply(mail, ev.candidates[idx], core.SentInfo.from_dict(found))
            await emit(route, inbound, ev.inbound_key, mail)
            return
        step = core.recipients(mail, rt.config.view, inbound.tenant)
        await dispatch(step, inbound, ev.inbound_key, mail)

    # --- stage 3: loop prevention ----------------------------------------------------------

    @app.agent(rt.raw_topic(INBOUND_ALIASES), name="postlane.inbound-aliases")
    async def aliases(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            try:
                ev = decode(InboundAliasMatched, message.value)
                inbound, mail = carried_mail(ev.inbound, ev.parsed)
                alias = AliasConfigured(alias=ev.alias, target=ev.target, tenant=ev.tenant,
                                        policy=ev.policy)
            except (InvalidEvent, TypeError, ValueError) as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                continue
            key = message.key or alias_key(ev.alias, ev.sender).encode()
            view = rt.config.view
            state = core.LoopState.from_dict(loops.get(key))
            bounce_to, _ = core.bounce_target(mail, view)
            now = inbound.received_at or ev.occurred_at
            match = core.AliasMatch(alias, ev.recipient, ev.rule)
            new, route = core.loop(state, match, ev.sender, inbound.inbound_id, now,
                                   view.settings, bounce_to)
            await emit(route, inbound, ev.inbound_key, mail)
            if new != state:
                loops[key] = new.to_dict()

    # --- the Message-IDs Postlane sent -----------------------------------------------------

    async def record(message_id: str, smtp_id: str, info: dict[str, Any]) -> None:
        ev = SentMessageRecorded(
            smtp_message_id=smtp_id, message_id=message_id,
            thread_ref=str(info.get("thread_ref", "")), tenant=str(info.get("tenant", "")),
            header_from=str(info.get("header_from", "")),
        )
        await sent_out.send(key=normalize_message_id(smtp_id).encode(), value=encode(ev))

    @app.agent(rt.raw_topic(ROUTING_DECIDED, ROUTING_DECIDED_MASS, DELIVERY),
               name="postlane.inbound-index")
    async def index(stream: Any) -> None:
        async for event in stream.events():
            try:
                ev = decode_any(_INDEX, event.message.value)
            except InvalidEvent:
                continue  # other events of these topics, or garbage their owners dead-letter
            assert isinstance(ev, RoutingDecided | DeliveryAttempted)
            key = ev.message_id.encode()
            sent = core.sent_with(sent_threads.get(key), ev)
            if sent is not None:
                smtp_id, row = sent
                await record(ev.message_id, smtp_id, row)
                sent_threads[key] = row
