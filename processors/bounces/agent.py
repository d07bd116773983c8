"""Bounce processor (consumer group ``postlane-bounces``): bounce mails and
delivery answers -> ``BounceRecorded`` & co. on the ``bounces`` topic, keyed
by address, for the counting processor. Thin glue; see core.py.

- ``intake`` reads ``inbound-routed`` (the inbound router's decisions: route
  ``bounce`` carries the mail; replies and alias mail name a sender whose
  count restarts), ``bounce-mail`` (raw bounce mails from anywhere else,
  ``postlane bounces submit``) and ``delivery`` (5xx at delivery time, and
  how many recipients each domain was sent). Stateless: failures go to
  ``bounce-domains`` keyed by the recipient's domain.
- ``attribution`` reads ``delivery`` (``DeliveryStarted``: who each mail
  went to) and ``bounce-attribution`` (parsed bounces naming one of our
  mails), both keyed by message_id, and owns the ``bounce-recipients``
  table: a bounce goes on to the outage check only for its mail's
  recipients (attribution.py).
- ``outage`` reads ``bounce-domains`` and owns the ``bounce-domains`` table
  (domain -> recent errors and mail sent): the outage check.

At-least-once: event ids are derived from the input, so a redelivered input
gives the same events and the counting fold drops the repeat.
"""

from __future__ import annotations

import logging
from typing import Any

from schemas import (
    BounceMailReceived,
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    InboundMailRouted,
    InvalidEvent,
    RecipientBounced,
    RecipientsMailed,
    decode_any,
    encode,
)
from streams import tables
from streams.topics import (
    BOUNCE_ATTRIBUTION,
    BOUNCE_DOMAINS,
    BOUNCE_MAIL,
    DEAD_LETTER,
    DELIVERY,
    INBOUND_ROUTED,
)

from ..deadletter import send_dead_letter
from ..fold import Check, Fold, run
from ..runtime import Runtime
from . import attribution, core

NAME = "bounces"
log = logging.getLogger("postlane.bounces")
_INTAKE: dict[str, type[Event]] = {
    c.__name__: c for c in (InboundMailRouted, BounceMailReceived, DeliveryAttempted,
                            DeliveryStarted)
}
_OUTAGE: dict[str, type[Event]] = {c.__name__: c for c in (RecipientBounced, RecipientsMailed)}
_ATTRIBUTION: dict[str, type[Event]] = {
    c.__name__: c for c in (DeliveryStarted, DeliveryAttempted, RecipientBounced)}


def _same(row: Any) -> Any:
    return row


def attribution_fold(own_topic: str) -> Fold[Any]:
    """message_id -> its recipients: a DeliveryStarted is remembered, a
    RecipientBounced attributed (counted only for an address the mail was
    sent to). Records of ``delivery`` are judged by its owner."""

    def fold(row: Any, ev: Event) -> tuple[Any, core.Out]:
        if isinstance(ev, DeliveryStarted):
            return attribution.remember(row, ev), []
        assert isinstance(ev, RecipientBounced)
        return None, attribution.attribute(row, ev)

    return Fold(Check(NAME, _ATTRIBUTION,
                      key_of=lambda ev: ev.message_id,  # type: ignore[attr-defined]
                      what="the message_id", accepts=(DeliveryStarted, RecipientBounced),
                      judges=lambda topic: topic == own_topic),
                load=_same, dump=_same, fold=fold, doing="bounce attribution")


def _domain_key(ev: Event) -> str:
    if isinstance(ev, RecipientsMailed):
        return ev.domain
    return core.domain_of(ev.address)  # type: ignore[attr-defined]


def outage_fold(rules: core.BurstRules) -> Fold[core.DomainState]:
    """recipient domain -> recent errors and mail sent: the outage check."""
    return Fold(Check(NAME, _OUTAGE, key_of=_domain_key, what="the domain"),
                load=core.DomainState.from_dict, dump=lambda state: state.to_dict(),
                fold=lambda state, ev: core.check_outage(state, ev, rules),
                doing="outage check")


def register(rt: Runtime) -> None:
    s = rt.settings
    app = rt.app
    dlq = rt.topic(DEAD_LETTER)
    rules = core.BurstRules.from_settings(s)
    source = rt.raw_topic(INBOUND_ROUTED, BOUNCE_MAIL, DELIVERY)
    domains_in = rt.raw_topic(BOUNCE_DOMAINS)
    table = rt.table(tables.BOUNCE_DOMAINS)
    bounce_mail_topic = BOUNCE_MAIL.full(s)
    attribution_in = rt.raw_topic(DELIVERY, BOUNCE_ATTRIBUTION)
    attribution_topic = BOUNCE_ATTRIBUTION.full(s)
    recipients = rt.table(tables.BOUNCE_RECIPIENTS)
    attributing = attribution_fold(attribution_topic)
    checking = outage_fold(rules)

    async def send_all(out: core.Out) -> None:
        for spec, key, event in out:
            await rt.topic(spec).send(key=key.encode(), value=encode(event))

    @app.agent(source, name="postlane.bounces")
    async def intake(stream: Any) -> None:
        await rt.config.wait_ready()
        async for event in stream.events():
            message = event.message
            try:
                ev = decode_any(_INTAKE, message.value)
            except InvalidEvent as exc:
                if str(message.topic) == bounce_mail_topic:  # ours; the others' owners judge
                    await send_dead_letter(dlq, NAME, message, str(exc))
                continue
            try:
                if isinstance(ev, InboundMailRouted):
                    out, words = core.intake_routed(rt.config.view, ev)
                elif isinstance(ev, BounceMailReceived):
                    out, words = core.intake_bounce_mail(rt.config.view, ev)
                elif isinstance(ev, DeliveryAttempted):
                    out, words = core.intake_delivery(ev), ""
                else:
                    continue
            except Exception as exc:  # noqa: BLE001 - a bad mail must not stop the processor
                log.exception("bounce intake failed on %s", ev.event_id)
                await send_dead_letter(dlq, NAME, message, f"bounce intake failed: {exc!r}")
                continue
            if words:
                log.info("%s", words)
            await send_all(out)

    @app.agent(attribution_in, name="postlane.bounce-attribution", concurrency=1)
    async def attribute(stream: Any) -> None:
        async for event in stream.events():
            await run(attributing, event.message, recipients, dlq, rt.topic)

    @app.agent(domains_in, name="postlane.bounce-outage", concurrency=1)
    async def outage(stream: Any) -> None:
        async for event in stream.events():
            await run(checking, event.message, table, dlq, rt.topic)
