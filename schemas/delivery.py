"""Delivery events: an attempt is recorded before SMTP starts, and its
outcome per recipient after."""

from __future__ import annotations

from typing import Any

from .base import Event

RCPT_STATUSES = ("accepted", "deferred", "failed")


class DeliveryStarted(Event):
    """Written (and acknowledged by the broker) before the SMTP session
    for ``attempt`` starts; an attempt with a start and no outcome is one
    that a crash interrupted."""

    message_id: str
    attempt: int
    server: str
    recipients: list[str]
    worker: str = ""


class DeliveryAttempted(Event):
    """The outcome of one attempt. ``outcomes``: one object per recipient,
    ``{"recipient", "status": accepted|deferred|failed, "code": int,
    "enhanced": "5.1.1", "text": server's answer}``. ``next_attempt_at``
    (unix seconds) is set when some recipient is deferred and will be
    retried; 0 when this attempt is final. ``next_server`` is the server
    the retry will use when a soft failure moved the mail."""

    message_id: str
    attempt: int
    server: str
    outcomes: list[dict[str, Any]]
    duration: float = 0.0
    next_attempt_at: float = 0.0
    next_server: str = ""
    smtp_message_id: str = ""
    error: str = ""  # session-level error (connect, TLS, auth), in words
    interrupted: bool = False  # a crash left the previous attempt without outcome

    def problems(self) -> list[str]:
        f = self.__dict__  # the field values (see RoutingDecided.problems)
        out = Event.problems(self)
        for o in f["outcomes"]:
            if not isinstance(o, dict) or o.get("status") not in RCPT_STATUSES:
                out.append(f"outcome {o!r} needs status in {', '.join(RCPT_STATUSES)}")
        return out


class RetryTimeReached(Event):
    """The retry timer saw that ``attempt``'s deferral of ``message_id``
    ended; the delivery agent (sole writer of the ledger) decides."""

    message_id: str
    attempt: int
