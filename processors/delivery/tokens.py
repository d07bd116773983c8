"""Delivery's tokens: every SMTP transaction after the first takes one from the quota.

The limiter's release is the token of a mail's first attempt (counted by
the quota on the server it was routed to). Every later attempt (a retry
after a 4xx or a dropped connection, a failover to the next server, an
operator's retry or send-now, an attempt a crash interrupted) is one more
SMTP transaction: before it starts, delivery asks the quota
(``QuotaAsked``, ``by`` delivery, ask_id ``<message_id>:attempt:<n>``) for a
token of every limit of the server that will take it (and of the tenant
and the recipient domains), and starts it only when granted (at once, or
at the slot a rate gave it). Refused (a daily limit is reached), the
attempt waits until the next window and asks again then.

Pure: no Faust, no I/O. The ledger keeps the attempt a token was granted
for (``Ledger.token``), so an answer repeated or arriving late does nothing.
"""

from __future__ import annotations

from dataclasses import replace

from processors.limiter.core import Limits, limited, recipient_domains
from schemas import QuotaAsked, QuotaGranted, QuotaRefused

from .core import Action, Ledger


def ask_id(message_id: str, attempt: int) -> str:
    return f"{message_id}:attempt:{attempt}"


def needs_token(ledger: Ledger, limits: Limits) -> bool:
    """Must the attempt about to start (``ledger.attempt + 1``) ask first?"""
    n = ledger.attempt + 1
    if n < 2 or ledger.token == n:
        return False
    request = ledger.decision.get("request") or {}
    return limited(ledger.server, str(request.get("tenant", "")),
                   recipient_domains(request), limits)


def ask(ledger: Ledger) -> QuotaAsked:
    request = ledger.decision.get("request") or {}
    n = ledger.attempt + 1
    return QuotaAsked(ask_id=ask_id(ledger.message_id, n), message_id=ledger.message_id,
                      server=ledger.server, by="delivery", attempt=n,
                      lane="mass" if request.get("kind") == "mass" else "transactional",
                      tenant=str(request.get("tenant", "")),
                      domains=recipient_domains(request))


def on_answer(ledger: Ledger | None, answer: QuotaGranted | QuotaRefused,
              now: float) -> tuple[Ledger | None, Action]:
    """The quota answered an ask for attempt ``answer.attempt``. Granted
    now: deliver. Granted for later: wait until the slot (the retry timer
    signals it then). Refused: wait until ``answer.until`` (the timer
    signals it and the attempt asks again). A ledger that moved on (the
    attempt started, the mail is done or cancelled) is left as it is. A
    ledger still in flight asked for the attempt that retries an
    interrupted one (a restart): granted, that one is delivered as
    interrupted (it used to be dropped as stale, leaving the mail in flight
    for good)."""
    if (ledger is None or ledger.done or ledger.cancelled
            or ledger.attempt + 1 != answer.attempt or ledger.token == answer.attempt):
        return ledger, Action("skip", "stale quota answer")
    if isinstance(answer, QuotaRefused):
        return (replace(ledger, next_at=max(answer.until, now)),
                Action("skip", f"attempt {answer.attempt} waits: {answer.reason}"))
    granted = replace(ledger, token=answer.attempt, next_at=max(answer.at, now))
    if answer.at > now:
        return granted, Action("skip", f"attempt {answer.attempt} paced: {answer.reason}")
    return granted, Action("deliver", "token granted", interrupted=ledger.inflight)
