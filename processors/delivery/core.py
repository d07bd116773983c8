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
  Only when the attempt was started by another process (``run``, this
  process's ``RUN``): a duplicate decision that finds the attempt started
  by this very process (a redelivered release while it sends) is skipped,
  so no second SMTP transaction begins; if that attempt died without an
  outcome, the retry timer finds it orphaned and retries it as interrupted.

Operators' commands (``on_command``: retry, send_now, cancel, forwarded by
the limiter for mail it no longer holds) are applied to the ledger once:
the ledger keeps the ids of the commands it applied or refused, so a
redelivered command does nothing. Each answer is a QueueCommandApplied or
QueueCommandRefused whose event_id is ``result_id(command_id)``; an applied
cancel also gives a MessageCancelled (event_id ``cancelled_id(command_id)``).

Everything here is pure: state and an event in, new state and events out.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any, Literal

from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    RoutingDecided,
    SendRequested,
    compact,
    ids,
    plain,
)

from .policy import RetrySettings, after_attempt, gave_up

ActionKind = Literal["deliver", "skip"]
# this process's incarnation: a ledger's attempt in flight says which process
# started it (``Ledger.run``), so a duplicate decision is told from a restart
RUN = uuid.uuid4().hex
BY = "delivery"  # the ``by`` of the command answers and MessageCancelled
# event ids of the answers, derived from the command id (a redelivered
# command gives the same ids, and readers drop the repeat)
_RESULT_NS = ids.DELIVERY_COMMAND_RESULT
_CANCELLED_NS = ids.DELIVERY_CANCELLED


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
    commands: list[str] = field(default_factory=list)  # ids of commands applied or refused
    cancelled: bool = False  # an operator cancelled it (done; ``pending`` never sent)
    token: int = 0  # the attempt the quota granted a token for (tokens.py)
    run: str = ""  # the process (its RUN) that started the attempt in flight; "": none
    # the claim check: "topic:partition:offset" of the record (the router's
    # direct RoutingDecided, or the limiter's MailReleased) that carries the
    # request of the first attempt, in flight; its rows leave the body out
    # (``row``), finishing the attempt clears it. "": the row has the request
    body_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Ledger | None:
        """The table value; ledgers written before a field existed get its
        default, fields this version does not know are ignored."""
        if not data:
            return None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_LEDGER_FIELDS = frozenset(f.name for f in fields(Ledger))
# every field in order with its default (the required ones filled by new_ledger)
_NEW_LEDGER: dict[str, Any] = {
    f.name: None if f.default is MISSING else f.default for f in fields(Ledger)}
# fields a row leaves out at their default (``row``); never ``done``
_ROW_DEFAULTS = tuple(
    (f.name, f.default if f.default is not MISSING else f.default_factory())  # type: ignore[operator]
    for f in fields(Ledger)
    if f.name != "done" and (f.default is not MISSING or f.default_factory is not MISSING))
_LEDGER_FACTORIES = tuple((f.name, f.default_factory) for f in fields(Ledger)
                          if f.default_factory is not MISSING)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    reason: str = ""
    interrupted: bool = False


def new_ledger(decision: RoutingDecided, recipients: list[str], now: float,
               source: tuple[str, int, int] | None = None) -> Ledger:
    # Ledger(message_id=..., decision=..., server=..., pending=..., first_at=now)
    # without the frozen dataclass's __init__ (a setattr per field)
    new = object.__new__(Ledger)
    values = new.__dict__
    values.update(_NEW_LEDGER)
    for name, factory in _LEDGER_FACTORIES:  # each ledger its own lists and dicts
        values[name] = factory()
    values.update(
        message_id=decision.message_id,
        decision=kept_decision(decision),
        server=decision.server,
        pending=list(recipients),
        first_at=now,
        body_at=body_at(*source) if source else "",
    )
    return new


def on_routed(
    ledger: Ledger | None, decision: RoutingDecided, recipients: list[str], now: float,
    run: str = RUN, source: tuple[str, int, int] | None = None,
) -> tuple[Ledger | None, Action]:
    """A routing decision arrived (first time, or redelivered); ``run``: the
    process deciding (see ``start``); ``source``: the record that carried
    it (topic, partition, offset: ``Ledger.body_at``)."""
    if decision.outcome != "routed":
        return ledger, Action("skip", f"not routed ({decision.outcome})")
    if ledger is None:
        if not recipients:
            return None, Action("skip", "no recipient left (all suppressed)")
        return new_ledger(decision, recipients, now, source), Action("deliver")
    if ledger.cancelled:
        return ledger, Action("skip", "cancelled by an operator: duplicate decision")
    if ledger.done:
        return ledger, Action("skip", "already delivered: duplicate decision")
    if ledger.inflight:
        if ledger.run == run:
            # started by this process: it is being sent now (a duplicate release,
            # e.g. a limiter restarted before its offsets were committed). Not a
            # second transaction; an attempt that died here is orphaned, and
            # the retry timer retries it as interrupted
            return ledger, Action("skip", "being sent by this process: duplicate decision")
        # started by another process (a restart: nothing runs it any more);
        # within a batch the agent never starts one mail twice
        return ledger, Action("deliver", "attempt interrupted by a restart", interrupted=True)
    if ledger.next_at > now:
        return ledger, Action("skip", "waiting for its retry time")
    return ledger, Action("deliver")


def on_retry_due(ledger: Ledger | None, attempt: int, now: float) -> Action:
    """The retry timer says attempt ``attempt``'s deferral has ended."""
    if ledger is None or ledger.done or ledger.cancelled:
        return Action("skip", "nothing to retry")
    if ledger.inflight:
        return Action("deliver", "attempt interrupted by a restart", interrupted=True)
    if ledger.attempt != attempt or ledger.next_at == 0 or ledger.next_at > now:
        return Action("skip", "stale retry signal")
    return Action("deliver")


# what the ledger keeps of a routing decision: what delivery sends with (the
# request, server, From and envelope sender) and which decision it was; not
# the router's explanation, the suppressed recipients or the event's times
_KEPT_OF_DECISION = ("event_id", "message_id", "outcome", "server", "header_from",
                     "envelope_from", "rule", "request", "direct")
# what a sent mail's row keeps of its decision and request: which decision,
# server and mail it was, not the mail (the ledger's message_id says whose)
_KEPT_OF_SENT = ("event_id", "server", "request")
_KEPT_OF_REQUEST = ("from_", "to", "cc", "bcc", "subject", "tenant", "kind",
                    "campaign", "list_id")


def kept_decision(decision: RoutingDecided) -> dict[str, Any]:
    """The ``decision`` a ledger keeps: ``_KEPT_OF_DECISION`` of it, fields
    at their default left out (``schemas.compact``, also in the request it
    carries), ``carried(RoutingDecided, ...)`` fills them in again. The
    router's ``reason`` alone was ~140 bytes of each of a mail's rows. The
    fields are read from the event's ``__dict__`` (every plain field is
    there however the event was made: tests/unit/test_schema_construct.py),
    not ``to_representation()``, which built the whole event's dict per
    decision (12% of the ledger replay's fold)."""
    data = decision.__dict__
    # compact(RoutingDecided, {k: data[k] for k in _KEPT_OF_DECISION}) with
    # the request compacted first, in one pass (the same keys in the same
    # order); the request as ``compact`` makes it, one loop
    kept: dict[str, Any] = {}
    default = _DECISION_DEFAULTS.get
    for k in _KEPT_OF_DECISION:
        if k in data:
            v = data[k]
            if k == "request" and isinstance(v, dict):
                v = compact(SendRequested, v)
            if default(k, _NO_DEFAULT) != v:
                kept[k] = v
    return kept


_DECISION_DEFAULTS: dict[str, Any] = dict(RoutingDecided._options.defaults)
_NO_DEFAULT = object()


def row(ledger: Ledger) -> dict[str, Any]:
    """The table value of ``ledger``: its fields, without those at their
    default (``Ledger.from_dict`` fills them in; ``done`` is always
    written, see ``may_be_open``). A mail every recipient accepted can
    never be sent again (a retry re-sends failed recipients only), so its
    row keeps of the decision only its id, server and the request's
    addresses and subject: a redelivered decision or command only needs to
    find it done, and nothing sends with it again. The row of a first
    attempt in flight (``body_at`` set) keeps as little: the decision is on
    the log at ``body_at``, and the agent reads it back from there
    (``with_decision``) when a restart leaves that attempt to retry (see
    agent.py). Every ledger write goes through here."""
    value = ledger.to_dict()
    for name, default in _ROW_DEFAULTS:
        if value[name] == default:
            del value[name]
    if ledger.body_at or (
            ledger.done and not ledger.pending and not ledger.failed and not ledger.cancelled):
        decision = value["decision"]
        request = decision.get("request") or {}
        decision = {k: decision[k] for k in _KEPT_OF_SENT if k in decision}
        decision["request"] = {k: request[k] for k in _KEPT_OF_REQUEST if k in request}
        value["decision"] = decision
    return value


def body_at(topic: str, partition: int, offset: int) -> str:
    """``Ledger.body_at`` of a record (a topic name holds no ``:``)."""
    return f"{topic}:{partition}:{offset}"


def needs_body(stored: Ledger | None) -> bool:
    """Whether ``stored`` (a ledger read from its row) lacks its decision
    and request: its attempt started from the record at ``body_at``, which
    the agent reads again (``with_decision``) before sending."""
    return stored is not None and bool(stored.body_at)


def is_its_decision(stored: Ledger, decision: RoutingDecided) -> bool:
    """Whether ``decision`` is the one ``stored`` was started from (the
    record at ``body_at`` delivered again, or its release)."""
    return bool(decision.event_id) and decision.event_id == stored.decision.get("event_id")


def with_decision(ledger: Ledger, decision: RoutingDecided) -> Ledger:
    """``ledger`` with its whole decision and request back (read from the
    record at ``body_at``, or that record redelivered)."""
    return changed(ledger, decision=kept_decision(decision))


def may_be_open(raw: bytes) -> bool:
    """Whether a ledger row's bytes (``streams.tables.encode_row``: compact
    JSON, fields in the Ledger's order) may be ``open_row``: False only when
    its top-level ``done`` is true. The retry timer looks at every row each
    second and decodes only these (``Rows.items_if``): 100,000 rows took
    1.8-2.6 s decoded, 46 ms so (bench/table_encoding.py). The last ``"done":``
    in the bytes is the top-level one: every field after ``done`` holds
    strings, numbers or booleans (``test_tables.py`` pins that), and a
    string never holds an unescaped ``"`` followed by ``done":``."""
    i = raw.rfind(b'"done":')
    return i < 0 or not raw.startswith(b"true", i + 7)


def open_row(row: dict[str, Any] | None) -> bool:
    """Whether a ledger row (the table value, not yet parsed) can still be
    ``due`` or ``orphaned``: not done and not cancelled. The retry timer
    looks at every row each second; parsing each finished one made it most
    of the worker's time after tens of thousands of mails (a 100,000-mail
    campaign slowed to ~50 mails/s)."""
    return bool(row) and not row.get("done") and not row.get("cancelled")  # type: ignore[union-attr]


def due(ledger: Ledger, now: float) -> bool:
    return (not ledger.done and not ledger.cancelled and not ledger.inflight
            and 0 < ledger.next_at <= now)


def orphaned(ledger: Ledger, running: bool) -> bool:
    """An attempt recorded as started that no local batch is ``running``:
    its worker crashed, or the agent was restarted or lost the partition
    after its input was committed. Nothing will redeliver that input, so
    the retry timer signals it (``on_retry_due`` then retries it as
    interrupted)."""
    return ledger.inflight and not ledger.done and not ledger.cancelled and not running


def changed(ledger: Ledger, **changes: Any) -> Ledger:
    """``dataclasses.replace(ledger, **changes)``, made without calling
    ``__init__`` (the Ledger is frozen, with no ``__post_init__``, no
    init-less field): the same fields in the same order, a shallow copy.
    ``replace`` was a tenth of a ledger's fold."""
    if not changes.keys() <= _LEDGER_FIELDS:
        return replace(ledger, **changes)  # its own TypeError
    new = object.__new__(Ledger)
    values = new.__dict__
    values.update(ledger.__dict__)
    values.update(changes)
    return new


def started(ledger: Ledger, action: Action, run: str = "") -> Ledger:
    """The ledger ``start`` records (without its DeliveryStarted: a replay
    keeps only the ledger, and no process's ``run``)."""
    return changed(
        ledger,
        attempt=ledger.attempt + 1,
        inflight=True,
        run=run,
        next_at=0.0,
        tried_servers=_add(ledger.tried_servers, ledger.server),
        interrupted_attempts=ledger.interrupted_attempts + (1 if action.interrupted else 0),
    )


def start(ledger: Ledger, action: Action, worker: str,
          run: str = RUN) -> tuple[Ledger, DeliveryStarted]:
    """Record that an attempt begins (before any SMTP command), by the
    process ``run`` (this one)."""
    new = started(ledger, action, run)
    event = DeliveryStarted(
        message_id=ledger.message_id, attempt=new.attempt, server=ledger.server,
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
    new, outcomes_out, next_at, server = _finish(ledger, outcomes, now, settings,
                                                 session_error, next_decision)
    event = DeliveryAttempted(
        message_id=ledger.message_id, attempt=ledger.attempt, server=ledger.server,
        outcomes=outcomes_out, duration=round(duration, 6),
        next_attempt_at=next_at, next_server=server if server != ledger.server else "",
        smtp_message_id=smtp_message_id, error=session_error, interrupted=interrupted,
    )
    return new, event


def finished(ledger: Ledger, outcomes: list[dict[str, Any]], *, now: float,
             settings: RetrySettings, session_error: str = "",
             next_decision: RoutingDecided | None = None) -> Ledger:
    """The ledger ``finish`` records (without its DeliveryAttempted: a
    replay keeps only the ledger)."""
    return _finish(ledger, outcomes, now, settings, session_error, next_decision)[0]


def _finish(ledger: Ledger, outcomes: list[dict[str, Any]], now: float,
            settings: RetrySettings, session_error: str,
            next_decision: RoutingDecided | None,
            ) -> tuple[Ledger, list[dict[str, Any]], float, str]:
    """``finish``'s ledger, its event's outcomes, next time and server."""
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
    step = after_attempt(deferred=bool(pending), attempt=ledger.attempt,
                         first_at=ledger.first_at, now=now, settings=settings,
                         server=ledger.server,
                         next_server=next_decision.server if next_decision else "")
    next_at, server, decision = step.at, step.server, ledger.decision
    if step.kind == "move":
        assert next_decision is not None
        decision = kept_decision(next_decision)
    elif step.kind == "give_up":
        for o in deferred:
            o2 = {**o, "status": "failed", "text": f"{o['text']} ({gave_up(ledger.attempt)})"}
            failed[o["recipient"]] = o2
            final_outcomes.append(o2)
        deferred, pending = [], []
    new = changed(
        ledger, accepted=accepted, failed=failed, pending=pending, inflight=False,
        next_at=next_at, done=not pending, server=server, decision=decision, run="",
        body_at="",
    )
    return new, final_outcomes + deferred, next_at, server


# --- operators' commands ----------------------------------------------------------------------


def result_id(command_id: str) -> str:
    """The event_id of the QueueCommandApplied/Refused answering a command."""
    return uuid.uuid5(_RESULT_NS, command_id).hex


def cancelled_id(command_id: str) -> str:
    """The event_id of the MessageCancelled an applied cancel gives."""
    return uuid.uuid5(_CANCELLED_NS, command_id).hex


def on_command(
    ledger: Ledger | None, command: QueueCommandIssued, now: float
) -> tuple[Ledger | None, Action, list[Event]]:
    """Apply an operator's command (forwarded by the limiter) once.

    - ``retry``: a mail done with failed recipients: they become pending
      again, the back-off/give-up clock restarts (``first_at`` = now), and
      it is delivered now (a normal attempt, the next number);
    - ``send_now``: a deferred mail (waiting for its retry time) is
      delivered now;
    - ``cancel``: a deferred mail is marked done and cancelled (``pending``
      kept for the record, never sent); gives a MessageCancelled.

    Every other state is refused, in words. The answers (QueueCommandApplied
    / QueueCommandRefused, event_id ``result_id(command id)``) are returned
    with the new ledger, which records the command id: the same command
    again (its id known) does nothing and answers nothing. ``ack`` (the
    status processor's) and unknown commands are ignored. A returned
    ledger that is not ``ledger`` must be written; with a ``deliver``
    action it is written through ``start``. It has ``next_at`` = now, so
    even written without ``start`` the retry timer would pick it up."""
    cid, what, mid = command.event_id, command.command, command.message_id
    if what not in ("retry", "send_now", "cancel"):
        return ledger, Action("skip", f"{what!r} is not delivery's command"), []
    if ledger is None:
        return None, Action("skip", "no delivery record"), [_refused(
            command, now,
            f"{mid} has no delivery record: it failed before delivery (no server / "
            f"rejected) or has not been released yet; see `postlane status {mid}`",
        )]
    if cid in ledger.commands:
        return ledger, Action("skip", f"command {cid} already answered"), []
    seen = changed(ledger, commands=[*ledger.commands, cid])
    refusal = _refusal(ledger, what, now)
    if refusal:
        return seen, Action("skip", refusal), [_refused(command, now, refusal)]
    if what == "retry":
        again = [r for r in ledger.failed if r not in ledger.pending]
        new = changed(
            seen, pending=[*ledger.pending, *again], failed={}, done=False, first_at=now,
            next_at=now, tried_servers=[],
        )
        detail = (f"{mid}: retrying {_count(again, 'failed recipient')} now "
                  f"({', '.join(again)}), attempt {ledger.attempt + 1} via {ledger.server}")
        return new, Action("deliver", "retry by an operator"), [_applied(command, now, detail)]
    if what == "send_now":
        detail = (f"{mid}: sending now instead of {_next_words(ledger, now)}, "
                  f"attempt {ledger.attempt + 1} via {ledger.server}")
        return (changed(seen, next_at=now), Action("deliver", "send-now by an operator"),
                [_applied(command, now, detail)])
    # cancel
    new = changed(seen, done=True, cancelled=True, next_at=0.0)
    who = command.operator or "an operator"
    reason = f"cancelled by {who} while deferred; not sent to {', '.join(ledger.pending)}"
    if ledger.accepted:
        reason += f" (already sent to {', '.join(ledger.accepted)})"
    if command.note:
        reason += f": {command.note}"
    cancelled = MessageCancelled(
        message_id=mid, command_id=cid, by=BY, reason=reason,
        event_id=cancelled_id(cid), occurred_at=now,
    )
    detail = f"{mid} cancelled: {_count(ledger.pending, 'recipient')} will not be sent"
    return new, Action("skip", "cancelled by an operator"), [
        _applied(command, now, detail), cancelled]


def _refusal(ledger: Ledger, what: str, now: float) -> str:
    """Why ``what`` does not apply to ``ledger`` (empty: it applies)."""
    mid = ledger.message_id
    if ledger.cancelled:
        return (f"{mid} is already cancelled" if what == "cancel" else
                f"{mid} was cancelled: it is not sent again (send it anew)")
    if ledger.inflight:
        if what == "cancel":
            return f"{mid} is being sent now (attempt {ledger.attempt}): it cannot be stopped"
        return f"{mid} is being sent now (attempt {ledger.attempt}): wait for its outcome"
    if ledger.done and not ledger.failed:
        return {
            "retry": f"{mid} was sent to every recipient: nothing to retry",
            "send_now": f"{mid} was sent to every recipient: nothing to send",
            "cancel": f"{mid} is sent: nothing to cancel",
        }[what]
    if ledger.done:
        failed = _count(list(ledger.failed), "recipient")
        return {
            "retry": "",
            "send_now": f"{mid} has failed ({failed}): use retry to try again",
            "cancel": f"{mid} has failed ({failed}): use ack to acknowledge it",
        }[what]
    # waiting for its retry time (or due now: the timer is about to start it)
    if what == "retry":
        return f"{mid} is deferred, {_next_words(ledger, now)}: use send-now"
    return ""


def _next_words(ledger: Ledger, now: float) -> str:
    if ledger.next_at > now:
        return "next attempt " + time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                               time.gmtime(ledger.next_at))
    return "next attempt due now"


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}" + ("" if len(items) == 1 else "s")


def _applied(command: QueueCommandIssued, now: float, detail: str) -> QueueCommandApplied:
    return QueueCommandApplied(
        message_id=command.message_id, command_id=command.event_id, command=command.command,
        by=BY, detail=detail, event_id=result_id(command.event_id), occurred_at=now,
    )


def _refused(command: QueueCommandIssued, now: float, reason: str) -> QueueCommandRefused:
    return QueueCommandRefused(
        message_id=command.message_id, command_id=command.event_id, command=command.command,
        by=BY, reason=reason, event_id=result_id(command.event_id), occurred_at=now,
    )


def _add(items: list[str], item: str) -> list[str]:
    return items if item in items else [*items, item]
