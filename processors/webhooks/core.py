"""The webhooks processor's pure core: which notifications an event gives,
which endpoints get them, in what order, and what an answer means.

Notifications (the JSON a service receives)::

    {"id": "...", "type": "sent" | "deferred" | "failed" | "bounced" |
     "complained" | "unsubscribed", "message_id": "...", "recipient": "...",
     "tenant": "...", "occurred_at": 1796000000.0, "details": {...}}

- ``DeliveryAttempted``: one per recipient outcome (accepted -> ``sent``,
  deferred -> ``deferred``, failed -> ``failed``); details: server, attempt,
  code, enhanced, text (and next_attempt_at for deferred).
- ``BounceRecorded`` (a failure attributed to a recipient: bounce mail or a
  5xx at delivery) -> ``bounced``; ``ComplaintReceived`` -> ``complained``;
  ``UnsubscribeRequested`` -> ``unsubscribed``.

``id`` is derived from the cause's event id and the recipient, so a
redelivered cause gives the same notification, and its outbox row (keyed
``delivery_id(webhook, id)``) is already there: it is not posted twice.

The outbox (a table keyed by *lane*: the message id, or the address for a
notification naming no mail) holds one row per (endpoint, notification).
Per endpoint and lane, only the earliest pending row (by ``seq``: the
event's time, then its id) may be in flight, so one mail's notifications
reach each endpoint in order; lanes and endpoints never wait for each
other. A row is retried with back-off (``retry_first`` doubling up to
``retry_max``) on timeouts, connection errors, garbage answers, 408, 429 and
5xx, for ``retry_for`` seconds from its first try; then, or at once for
another 4xx, it is dead-lettered with the reason.

A finished row (delivered or dead) stays in its lane so that a
redelivered cause finds it and posts nothing again; ``prune`` drops it
``webhook_keep`` seconds after it finished (a lane left empty is deleted).
A cause redelivered later than that (its worker crashed before committing
it and stayed down that long) is posted again, with the same ``id``.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from schemas import (
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    Event,
    RoutingDecided,
    UnsubscribeRequested,
    WebhookConfigured,
    WebhookDeadLettered,
    WebhookDelivered,
    ids,
)

_NOTE_NS = ids.WEBHOOK_NOTE
_DELIVERY_NS = ids.WEBHOOK_DELIVERY
OUTCOME_TYPES = {"accepted": "sent", "deferred": "deferred", "failed": "failed"}
SIGNATURE_HEADER = "Postlane-Signature"
# the events of the bounces topic that notify (re-keyed by message id)
BOUNCE_TOPIC_EVENTS: tuple[type[Event], ...] = (
    BounceRecorded, ComplaintReceived, UnsubscribeRequested)


class RetryPolicy(Protocol):
    @property
    def webhook_retry_for(self) -> float: ...
    @property
    def webhook_retry_first(self) -> float: ...
    @property
    def webhook_retry_max(self) -> float: ...


@dataclass(frozen=True)
class Notification:
    id: str
    type: str
    message_id: str
    recipient: str
    tenant: str
    occurred_at: float
    details: dict[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "message_id": self.message_id,
                "recipient": self.recipient, "tenant": self.tenant,
                "occurred_at": self.occurred_at, "details": self.details}

    @property
    def lane(self) -> str:
        return lane_of(self.message_id, self.recipient)


def lane_of(message_id: str, address: str) -> str:
    """The key notifications are ordered (and partitioned) by."""
    return message_id or address.lower()


def note_id(cause_id: str, recipient: str) -> str:
    return uuid.uuid5(_NOTE_NS, f"{cause_id}/{recipient.lower()}").hex


def delivery_id(webhook: str, notification_id: str) -> str:
    return uuid.uuid5(_DELIVERY_NS, f"{webhook}/{notification_id}").hex


def tenant_of(decision: RoutingDecided) -> str:
    request = decision.request or {}
    return str(request.get("tenant", "")) if isinstance(request, dict) else ""


def rekey(event: Event) -> str | None:
    """The key a bounces-topic event is re-published under on
    ``webhook-events`` (None: it notifies no one)."""
    if isinstance(event, BounceRecorded):
        if event.kind != "failed" or event.unattributed or event.outage:
            return None
        return lane_of(event.message_id, event.address)
    if isinstance(event, ComplaintReceived | UnsubscribeRequested):
        return lane_of(event.message_id, event.address)
    return None


def notifications(event: Event, tenant: str = "") -> list[Notification]:
    """The notifications ``event`` gives (``tenant``: the mail's, when the
    event does not carry one)."""
    if isinstance(event, DeliveryAttempted):
        out = []
        for o in event.outcomes:
            kind = OUTCOME_TYPES.get(str(o.get("status", "")))
            rcpt = str(o.get("recipient", ""))
            if kind is None or not rcpt:
                continue
            details: dict[str, Any] = {
                "server": event.server, "attempt": event.attempt, "code": o.get("code", 0),
                "enhanced": o.get("enhanced", ""), "text": o.get("text", "")}
            if kind == "deferred":
                details["next_attempt_at"] = event.next_attempt_at
            if kind == "sent" and event.smtp_message_id:
                details["smtp_message_id"] = event.smtp_message_id
            out.append(Notification(note_id(event.event_id, rcpt), kind, event.message_id,
                                    rcpt, tenant, event.occurred_at, details))
        return out
    if isinstance(event, BounceRecorded):
        if rekey(event) is None:
            return []
        return [Notification(
            note_id(event.event_id, event.address), "bounced", event.message_id, event.address,
            tenant, event.bounced_at or event.occurred_at,
            {"hard": event.hard, "reason": event.reason, "status": event.status,
             "diagnostic": event.diagnostic, "source": event.source,
             "reported_by": event.server})]
    if isinstance(event, ComplaintReceived):
        return [Notification(
            note_id(event.event_id, event.address), "complained", event.message_id,
            event.address, event.tenant or tenant, event.complained_at or event.occurred_at,
            {"feedback_type": event.feedback_type, "format": event.format,
             "reporting_mta": event.reporting_mta, "user_agent": event.user_agent})]
    if isinstance(event, UnsubscribeRequested):
        return [Notification(
            note_id(event.event_id, event.address), "unsubscribed", event.message_id,
            event.address, event.tenant or tenant, event.requested_at or event.occurred_at,
            {"list_id": event.list_id, "via": event.via})]
    return []


def wanted(hook: WebhookConfigured, note: Notification) -> bool:
    """Whether endpoint ``hook`` subscribed to ``note`` (type and tenant)."""
    if note.type not in hook.event_types():
        return False
    return not hook.tenant or hook.tenant == note.tenant


def seq_of(note: Notification) -> str:
    """Sortable order of notifications within a lane."""
    return f"{note.occurred_at:020.6f}|{note.id}"


def plan(lane: Mapping[str, Any] | None, notes: Iterable[Notification],
         hooks: Iterable[WebhookConfigured], now: float) -> dict[str, Any] | None:
    """The lane's outbox value with a pending row for every (endpoint,
    notification) not in it yet; None when nothing is new."""
    rows: dict[str, Any] = dict((lane or {}).get("rows", {}))
    added = False
    hook_list = list(hooks)
    for note in notes:
        for hook in hook_list:
            if not wanted(hook, note):
                continue
            did = delivery_id(hook.name, note.id)
            if did in rows:
                continue  # a redelivered cause: planned (maybe posted) already
            rows[did] = {"webhook": hook.name, "delivery_id": did, "seq": seq_of(note),
                         "notification": note.payload(), "state": "pending", "attempts": 0,
                         "first_at": 0.0, "next_at": now, "last": "", "status": 0}
            added = True
    return {"rows": rows} if added else None


def heads(lane: Mapping[str, Any], now: float) -> list[dict[str, Any]]:
    """The rows of a lane that may be posted now: per endpoint, its earliest
    pending row, when it is due."""
    first: dict[str, dict[str, Any]] = {}
    for row in lane.get("rows", {}).values():
        if row.get("state") != "pending":
            continue
        hook = row["webhook"]
        if hook not in first or row["seq"] < first[hook]["seq"]:
            first[hook] = row
    return [r for r in first.values() if r.get("next_at", 0.0) <= now]


def may_be_pending(raw: bytes) -> bool:
    """Whether a lane's bytes (``streams.tables.encode_row``: compact JSON)
    may be ``pending``: a pending row holds ``"state":"pending"``. The
    dispatcher's scan decodes only these lanes (``Rows.items_if``)."""
    return b'"state":"pending"' in raw


def pending(lane: Mapping[str, Any] | None) -> bool:
    return bool(lane) and any(r.get("state") == "pending"
                              for r in lane.get("rows", {}).values())  # type: ignore[union-attr]


FINISHED = frozenset({"delivered", "dead"})


def prune(lane: Mapping[str, Any] | None, now: float, keep: float
          ) -> tuple[bool, dict[str, Any] | None]:
    """The lane without its rows that finished more than ``keep`` seconds
    ago: ``(changed, value)``, value None when no row is left (delete the
    lane). A pending row is never dropped, however old. (Rows finished
    before ``done_at`` was recorded count from their first try.)"""
    if not lane:
        return False, None
    rows: dict[str, Any] = lane.get("rows", {})
    kept = {did: row for did, row in rows.items()
            if row.get("state") not in FINISHED
            or float(row.get("done_at") or row.get("first_at") or 0.0) > now - keep}
    if len(kept) == len(rows):
        return False, dict(lane)
    return True, ({**lane, "rows": kept} if kept else None)


@dataclass(frozen=True)
class Answer:
    """What one POST came to: ``ok`` (2xx), else whether it is worth
    retrying, the HTTP status (0: none) and the reason in words."""

    ok: bool
    retry: bool = False
    status: int = 0
    reason: str = ""


def answer_of_status(status: int, body_excerpt: str = "") -> Answer:
    """An HTTP status as an Answer: 2xx taken; 408, 429 and 5xx retried;
    any other status refused for good."""
    if 200 <= status < 300:
        return Answer(True, status=status)
    text = f"HTTP {status}" + (f": {body_excerpt}" if body_excerpt else "")
    if status in (408, 429) or status >= 500:
        return Answer(False, True, status, text)
    return Answer(False, False, status, f"{text} (the endpoint refused it; 4xx is not retried)")


def backoff(attempts: int, policy: RetryPolicy) -> float:
    return min(policy.webhook_retry_max, policy.webhook_retry_first * 2 ** max(0, attempts - 1))


def after_attempt(row: Mapping[str, Any], answer: Answer, now: float,
                  policy: RetryPolicy) -> tuple[dict[str, Any], Event | None]:
    """The row after one try and what to publish (WebhookDelivered or
    WebhookDeadLettered; None while it is retried)."""
    new = dict(row)
    new["attempts"] = int(row.get("attempts", 0)) + 1
    new["first_at"] = row.get("first_at") or now
    new["status"] = answer.status
    note = row["notification"]
    common: dict[str, Any] = dict(
        webhook=row["webhook"], delivery_id=row["delivery_id"], notification_id=note["id"],
        event=note["type"], message_id=note.get("message_id", ""),
        recipient=note.get("recipient", ""), attempts=new["attempts"], status=answer.status,
        first_tried_at=new["first_at"],
        event_id=uuid.uuid5(_DELIVERY_NS, f"{row['delivery_id']}/result").hex)
    if answer.ok:
        new.update(state="delivered", last="", done_at=now)
        return new, WebhookDelivered(**common)
    waited = now - new["first_at"]
    if answer.retry and waited < policy.webhook_retry_for:
        new.update(last=answer.reason, next_at=now + backoff(new["attempts"], policy))
        return new, None
    why = answer.reason
    if answer.retry:
        why = (f"{answer.reason}; retried {new['attempts']} times over "
               f"{_duration(waited)} (POSTLANE_WEBHOOK_RETRY_FOR is "
               f"{_duration(policy.webhook_retry_for)})")
    new.update(state="dead", last=why, done_at=now)
    payload = orjson.dumps(note).decode()
    return new, WebhookDeadLettered(reason=why, payload=payload, **common)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def removed(webhook: str) -> Answer:
    """The answer for a pending row whose endpoint is no longer configured:
    dead-lettered at once."""
    return Answer(False, False, 0, f"webhook {webhook!r} was removed from the configuration")


# --- signing ------------------------------------------------------------------------------


def body_of(payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches and is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance:
        return False
    want = sign(secret, t, body).split("v1=", 1)[1]
    return hmac.compare_digest(want, parts.get("v1", ""))


def ping(name: str, now: float) -> dict[str, Any]:
    """The body ``postlane webhooks test`` posts."""
    return {"id": uuid.uuid4().hex, "type": "ping", "message_id": "", "recipient": "",
            "tenant": "", "occurred_at": now,
            "details": {"webhook": name, "text": "a test from `postlane webhooks test`"}}
