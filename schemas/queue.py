"""The limiter's facts (held, released, cancelled) and the ops queue commands.

A command is a fact too: an operator issued it (``QueueCommandIssued`` on the
commands topic, keyed by message_id; its ``event_id`` is the command id). The
processor that owns the mail's state at that moment applies or refuses it,
once, and says so with ``QueueCommandApplied`` / ``QueueCommandRefused`` on the
command-results topic (their event_id is derived from the command id, so a
redelivered command gives the same answer and readers drop the repeat).
"""

from __future__ import annotations

from typing import Any

from .base import Event

LANES = ("transactional", "mass")
HOLDS = ("scheduled", "daily_limit", "paced")
COMMANDS = ("retry", "send_now", "cancel", "ack")


class MailHeld(Event):
    """The limiter holds a mail. ``why``: scheduled (its send_at), daily_limit
    (a server's or tenant's limit is reached; ``until`` is the next window),
    or paced (a rate; ``until`` is the earliest it may go). ``reason`` is the
    sentence a person reads. ``step`` orders the limiter's events of a mail."""

    message_id: str
    lane: str
    why: str
    reason: str
    until: float = 0.0
    step: int = 1

    def problems(self) -> list[str]:
        out = super().problems()
        if self.lane not in LANES:
            out.append(f"lane {self.lane!r} must be one of {', '.join(LANES)}")
        if self.why not in HOLDS:
            out.append(f"why {self.why!r} must be one of {', '.join(HOLDS)}")
        return out


class MailReleased(Event):
    """The limiter lets a routed mail go to delivery. ``decision`` is the
    RoutingDecided (with the request). ``forced``: an operator's send-now
    (``command_id``) skipped the hold. ``held_for``: seconds it waited."""

    message_id: str
    lane: str
    decision: dict[str, Any]
    forced: bool = False
    command_id: str = ""
    held_for: float = 0.0
    step: int = 1
    token: str = ""  # the ask id of the quota grant it goes with ("": no limit, or forced)

    def problems(self) -> list[str]:
        f = self.__dict__  # the field values (see RoutingDecided.problems)
        out = Event.problems(self)
        lane = f["lane"]
        if lane not in LANES:
            out.append(f"lane {lane!r} must be one of {', '.join(LANES)}")
        if f["decision"].get("message_id") != f["message_id"]:
            out.append("decision must be this mail's RoutingDecided")
        return out


class MessageCancelled(Event):
    """An operator cancelled a queued or deferred mail (``by`` the processor
    that held it); it will not be sent."""

    message_id: str
    command_id: str
    by: str
    reason: str = ""


class QueueCommandIssued(Event):
    """An operator asked for ``command`` on one mail (``postlane retry|send-now|
    cancel|ack``). ``operator``: who (user@host)."""

    message_id: str
    command: str
    operator: str = ""
    note: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.command not in COMMANDS:
            out.append(f"command {self.command!r} must be one of {', '.join(COMMANDS)}")
        if not self.message_id:
            out.append("message_id is required")
        return out


class QueueCommandApplied(Event):
    message_id: str
    command_id: str
    command: str
    by: str
    detail: str = ""


class QueueCommandRefused(Event):
    """The command did not apply; ``reason`` says why, in words."""

    message_id: str
    command_id: str
    command: str
    by: str
    reason: str


# --- the quota: one accounting of every limited SMTP transaction ---------------------------

ASKERS = ("limiter", "delivery")


class QuotaAsked(Event):
    """A limiter partition (before it releases a mail) or delivery (before a
    retry, a failover or an operator's retry) asked the quota processor for
    one token of every limit the transaction falls under. ``ask_id`` names
    the ask (the same ask again after a crash gets the same answer and is
    counted once); ``server``/``tenant``/``domains``: what the limits apply
    to; ``force``: an operator's send-now, counted and never refused;
    ``by``: who asked (the answer goes back there, keyed by message_id)."""

    ask_id: str
    message_id: str
    server: str
    by: str = "limiter"
    lane: str = "transactional"
    tenant: str = ""
    domains: list[str] = []
    force: bool = False
    attempt: int = 0  # delivery: the attempt the token is for
    partition: int = -1  # the limiter's partition of the mail (answers go there)
    mail: str = ""  # the limiter's transactional mail (JSON), carried back in the answer
    give_back: bool = False  # the mail of this granted ask was cancelled: not counted

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.ask_id or not self.message_id or not self.server:
            out.append("ask_id, message_id and server are required")
        if self.by not in ASKERS:
            out.append(f"by {self.by!r} must be one of {', '.join(ASKERS)}")
        if self.lane not in LANES:
            out.append(f"lane {self.lane!r} must be one of {', '.join(LANES)}")
        return out


class QuotaGranted(Event):
    """The quota processor counted one transaction of ``ask_id`` against
    every limit it falls under. ``at``: the earliest it may start (later
    than now when a rate reserved it a future slot; ``reason`` then says
    which rate, in words). ``batch``: the key of the ``limiter-quota`` row
    that holds the grant, ``decided_at``: when the quota counted it (what a
    replay of that table needs; empty/0 from before they were recorded)."""

    ask_id: str
    message_id: str
    by: str = "limiter"
    at: float = 0.0
    reason: str = ""
    attempt: int = 0
    batch: str = ""
    decided_at: float = 0.0
    mail: str = ""  # the ask's ``mail``, carried back


class QuotaRefused(Event):
    """The quota processor did not count ``ask_id``: a daily limit is
    reached (``why`` daily_limit, ``until`` the next window) or a mass
    mail's rate slot is too far ahead (``why`` paced). ``reason`` is the
    sentence a person reads."""

    ask_id: str
    message_id: str
    why: str
    reason: str
    until: float = 0.0
    by: str = "limiter"
    attempt: int = 0
    mail: str = ""  # the ask's ``mail``, carried back

    def problems(self) -> list[str]:
        out = super().problems()
        if self.why not in HOLDS:
            out.append(f"why {self.why!r} must be one of {', '.join(HOLDS)}")
        return out


class QuotasAsked(Event):
    """The asks of one limiter pass in one record (one record per pass, not
    per mail): each item is a QuotaAsked as data."""

    asks: list[dict[str, Any]] = []

    def problems(self) -> list[str]:
        out = super().problems()
        if not all(isinstance(a, dict) and a.get("type") in (None, "", "QuotaAsked")
                   and all(isinstance(a.get(f), str) and a.get(f)
                           for f in ("ask_id", "message_id", "server"))
                   for a in self.asks):
            out.append("every ask must be a QuotaAsked object with ask_id, message_id "
                       "and server")
        return out


class QuotasAnswered(Event):
    """The quota's answers to the asks of one partition of the limiter, in
    one record (keyed to land on that partition): each item is a
    QuotaGranted or a QuotaRefused as data (with its ``type``)."""

    answers: list[dict[str, Any]] = []

    def problems(self) -> list[str]:
        out = super().problems()
        if not all(isinstance(a, dict) and a.get("type") in ("QuotaGranted", "QuotaRefused")
                   for a in self.answers):
            out.append("every answer must be a QuotaGranted or QuotaRefused object")
        return out
