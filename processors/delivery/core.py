"""Delivery's pure core: the ledger of one message and its decisions.

The ledger (a Faust table keyed by message_id, written only by the
delivery agent) is what makes "never twice" hold:

- an attempt is recorded (``start``) and flushed to the changelog before
  any SMTP command, so a redelivered or replayed routing decision for a
  message that was accepted, or that waits for a retry, does nothing;
- a ledger found with an attempt in flight (a crash after ``start`` and
  before the outcome) is the one case that may duplicate: the server may
  have accepted the mail before the crash. It is retried, marked
  ``interrupted`` on the DeliveryAttempted event, and counted in
  ``interrupted_attempts`` so it shows in the status history and metrics.

Everything here is pure: state and an event in, new state and events out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from schemas import DeliveryAttempted, DeliveryStarted, RoutingDecided

from .backoff import RetrySettings, next_attempt_at

ActionKind = Literal["deliver", "skip"]


@dataclass(frozen=True)
class Ledger:
    message_id: str
    decision: dict[str, Any]  # the RoutingDecided (with the request) being delivered
    server: str
    pending: list[str]  # recipients not yet accepted or failed
    accepted: list[str] = field(default_factory=list)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)
    attempt: int = 0  # the last attempt started
    inflight: bool = False  # attempt started, outcome not recorded
    first_at: float = 0.0
    next_at: float = 0.0  # when a deferred message is due again; 0: not waiting
    done: bool = False
    tried_servers: list[str] = field(default_factory=list)
    interrupted_attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Ledger | None:
        if not data:
            return None
        return cls(**data)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str = ""
    interrupted: bool = False


def new_ledger(decision: RoutingDecided, recipients: list[str], now: float) -> Ledger:
    return Ledger(
        message_id=decision.message_id,
        decision=dict(decision.to_representation()),
        server=decision.server,
        pending=list(recipients),
        first_at=now,
    )


def on_routed(
    ledger: Ledger | None, decision: RoutingDecided, recipients: list[str], now: float
) -> tuple[Ledger | None, Action]:
    """A routing decision arrived (first time, or redelivered)."""
    if decision.outcome != "routed":
        return ledger, Action("skip", f"not routed ({decision.outcome})")
    if ledger is None:
        if not recipients:
            return None, Action("skip", "no recipient left (all suppressed)")
        return new_ledger(decision, recipients, now), Action("deliver")
    if ledger.done:
        return ledger, Action("skip", "already delivered: duplicate decision")
    if ledger.inflight:
        return ledger, Action("deliver", "attempt interrupted by a restart", interrupted=True)
    if ledger.next_at > now:
        return ledger, Action("skip", "waiting for its retry time")
    return ledger, Action("deliver")


def on_retry_due(ledger: Ledger | None, attempt: int, now: float) -> Action:
    """The retry timer says attempt ``attempt``'s deferral has ended."""
    if ledger is None or ledger.done:
        return Action("skip", "nothing to retry")
    if ledger.inflight:
        return Action("deliver", "attempt interrupted by a restart", interrupted=True)
    if ledger.attempt != attempt or ledger.next_at == 0 or ledger.next_at > now:
        return Action("skip", "stale retry signal")
    return Action("deliver")


def due(ledger: Ledger, now: float) -> bool:
    return not ledger.done and not ledger.inflight and 0 < ledger.next_at <= now


def orphaned(ledger: Ledger, running: bool) -> bool:
    """An attempt recorded as started that no local batch is ``running``:
    its worker crashed, or the agent was restarted or lost the partition
    after its input was committed. Nothing will redeliver that input, so
    the retry timer signals it (``on_retry_due`` then retries it as
    interrupted)."""
    return ledger.inflight and not ledger.done and not running


def start(ledger: Ledger, action: Action, worker: str) -> tuple[Ledger, DeliveryStarted]:
    """Record that an attempt begins (before any SMTP command)."""
    attempt = ledger.attempt + 1
    new = replace(
        ledger,
        attempt=attempt,
        inflight=True,
        next_at=0.0,
        tried_servers=_add(ledger.tried_servers, ledger.server),
        interrupted_attempts=ledger.interrupted_attempts + (1 if action.interrupted else 0),
    )
    event = DeliveryStarted(
        message_id=ledger.message_id, attempt=attempt, server=ledger.server,
        recipients=list(ledger.pending), worker=worker,
    )
    return new, event


def finish(
    ledger: Ledger,
    outcomes: list[dict[str, Any]],
    *,
    now: float,
    duration: float,
    settings: RetrySettings,
    session_error: str = "",
    interrupted: bool = False,
    smtp_message_id: str = "",
    next_decision: RoutingDecided | None = None,
) -> tuple[Ledger, DeliveryAttempted]:
    """Fold one attempt's per-recipient outcomes. Deferred recipients get a
    next attempt time (exponential back-off) or, past the give-up time, fail.
    ``next_decision``: a routing decision for a different matching server to
    move the mail to (after a session-level failure); the retry then goes
    there at once."""
    by_rcpt = {o["recipient"]: o for o in outcomes}
    accepted = list(ledger.accepted)
    failed = dict(ledger.failed)
    pending: list[str] = []
    final_outcomes: list[dict[str, Any]] = []
    deferred: list[dict[str, Any]] = []
    for rcpt in ledger.pending:
        o = by_rcpt.get(rcpt) or {
            "recipient": rcpt, "status": "deferred", "code": 0, "enhanced": "",
            "text": session_error or "no answer for this recipient",
        }
        o = {**o, "server": ledger.server}
        if o["status"] == "accepted":
            accepted.append(rcpt)
            final_outcomes.append(o)
        elif o["status"] == "failed":
            failed[rcpt] = o
            final_outcomes.append(o)
        else:
            pending.append(rcpt)
            deferred.append(o)
    next_at = 0.0
    server = ledger.server
    decision = ledger.decision
    if pending:
        if next_decision is not None and next_decision.server != ledger.server:
            next_at, server = now, next_decision.server
            decision = dict(next_decision.to_representation())
        else:
            at = next_attempt_at(ledger.attempt, ledger.first_at, now, settings)
            if at is None:
                gave_up = f"gave up after {ledger.attempt} attempts"
                for o in deferred:
                    o2 = {**o, "status": "failed", "text": f"{o['text']} ({gave_up})"}
                    failed[o["recipient"]] = o2
                    final_outcomes.append(o2)
                deferred, pending = [], []
            else:
                next_at = at
    new = replace(
        ledger, accepted=accepted, failed=failed, pending=pending, inflight=False,
        next_at=next_at, done=not pending, server=server, decision=decision,
    )
    event = DeliveryAttempted(
        message_id=ledger.message_id, attempt=ledger.attempt, server=ledger.server,
        outcomes=final_outcomes + deferred, duration=round(duration, 6),
        next_attempt_at=next_at, next_server=server if server != ledger.server else "",
        smtp_message_id=smtp_message_id, error=session_error, interrupted=interrupted,
    )
    return new, event


def _add(items: list[str], item: str) -> list[str]:
    return items if item in items else [*items, item]
