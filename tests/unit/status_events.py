"""One mail's events (``m-1``) as the status tests build them: each
builder gives the event with the fields a test varies as arguments, and
``life_event(cls, n)`` the event of type ``cls`` with its attempt or step
at ``n`` (every type of ``processors.status.core.LIFE_EVENTS``)."""

from __future__ import annotations

from typing import Any

from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MailHeld,
    MailReleased,
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    QuotaRefused,
    RoutingDecided,
    SendRequested,
)

MID = "m-1"
T0 = 1_795_000_000.0
OPS = "ops@host"
BOB = "bob@dest.test"
LIMIT_REASON = ("deferred: server primary reached its daily limit of 200; "
                "next window 2026-11-23 00:00 UTC")


def request() -> SendRequested:
    return SendRequested(message_id=MID, from_="admin@example.com", to=[f"Bob <{BOB}>"],
                         subject="Invoice 42", text="hello", occurred_at=T0)


def routed(**kw: Any) -> RoutingDecided:
    fields: dict[str, Any] = dict(
        message_id=MID, outcome="routed", server="primary", header_from="admin@example.com",
        envelope_from="bounce@example.com", rule="from_filter_domain", reason="because",
        request=request().to_representation(), occurred_at=T0 + 1,
    )
    fields.update(kw)
    return RoutingDecided(**fields)


def no_server() -> RoutingDecided:
    return routed(outcome="no_server", server="", header_from="", rule="none",
                  reason="no outgoing server can send from admin@example.com")


def held(why: str = "daily_limit", step: int = 1, until: float = T0 + 50_000,
         reason: str = LIMIT_REASON, at: float = T0 + 2) -> MailHeld:
    return MailHeld(message_id=MID, lane="transactional", why=why, reason=reason, until=until,
                    step=step, occurred_at=at)


def released(step: int = 2, held_for: float = 3 * 3600 + 125, forced: bool = False,
             command_id: str = "", at: float = T0 + 3) -> MailReleased:
    return MailReleased(message_id=MID, lane="transactional",
                        decision=routed().to_representation(), forced=forced,
                        command_id=command_id, held_for=held_for, step=step, occurred_at=at)


def started(attempt: int = 1, at: float = T0 + 4) -> DeliveryStarted:
    return DeliveryStarted(message_id=MID, attempt=attempt, server="primary", recipients=[BOB],
                           occurred_at=at)


def attempted(status: str, attempt: int = 1, next_at: float = 0.0,
              at: float = T0 + 5) -> DeliveryAttempted:
    code = {"accepted": 250, "deferred": 451, "failed": 550}[status]
    return DeliveryAttempted(
        message_id=MID, attempt=attempt, server="primary", next_attempt_at=next_at,
        occurred_at=at,
        outcomes=[{"recipient": BOB, "status": status, "code": code, "text": "answer"}])


def command(what: str, at: float = T0 + 10, note: str = "") -> QueueCommandIssued:
    return QueueCommandIssued(message_id=MID, command=what, operator=OPS, note=note,
                              occurred_at=at)


def applied(cmd: QueueCommandIssued, by: str = "limiter", detail: str = "done",
            at: float = T0 + 11) -> QueueCommandApplied:
    return QueueCommandApplied(message_id=MID, command_id=cmd.event_id, command=cmd.command,
                               by=by, detail=detail, occurred_at=at)


def refused(cmd: QueueCommandIssued, by: str = "delivery", reason: str = "m-1 is sent",
            at: float = T0 + 11) -> QueueCommandRefused:
    return QueueCommandRefused(message_id=MID, command_id=cmd.event_id, command=cmd.command,
                               by=by, reason=reason, occurred_at=at)


def cancelled(cmd: QueueCommandIssued, reason: str = "", by: str = "limiter",
              at: float = T0 + 11) -> MessageCancelled:
    return MessageCancelled(message_id=MID, command_id=cmd.event_id, by=by, reason=reason,
                            occurred_at=at)


def quota_refused(attempt: int = 1, at: float = T0 + 6) -> QuotaRefused:
    return QuotaRefused(ask_id=f"{MID}:{attempt}", message_id=MID, why="daily_limit",
                        reason=LIMIT_REASON, until=T0 + 50_000, by="limiter", attempt=attempt,
                        occurred_at=at)


def life_event(cls: type[Event], n: int) -> Event:
    """The event of type ``cls`` in this mail's life, at attempt or step
    ``n`` where it has one."""
    made: dict[type[Event], Any] = {
        SendRequested: request,
        RoutingDecided: routed,
        MailHeld: lambda: held(step=n),
        MailReleased: lambda: released(step=n),
        DeliveryStarted: lambda: started(attempt=n),
        DeliveryAttempted: lambda: attempted("deferred", attempt=n),
        MessageCancelled: lambda: cancelled(command("cancel")),
        QuotaRefused: lambda: quota_refused(attempt=n),
    }
    return made[cls]()  # type: ignore[no-any-return]
