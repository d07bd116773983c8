"""The status of one mail, folded from its events. Pure: no Faust, no I/O.

``evolve(status, event)`` applies one SendRequested, RoutingDecided,
MailHeld, MailReleased, DeliveryStarted, DeliveryAttempted or
MessageCancelled and says what a person would see change (a
MessageStatusChanged), or None when nothing visible changed.

The events of one mail come from several topics, so they can arrive in any
order. Each event has a place in the mail's life (request < routing <
the limiter's holds and release, by their ``step`` < attempt 1 started <
attempt 1 outcome < attempt 2 started ... < cancelled); the status
remembers the furthest place it has applied, and an event from before it
only fills in details (subject, recipients it did not know), never the
state. A final state is never left because of such an older event;
``failed`` alone may be left by a newer one (a retry or re-route).
An event whose ``event_id`` is already in the history is a duplicate and
changes nothing.

Ops commands (QueueCommandIssued) and their answers (QueueCommandApplied,
QueueCommandRefused) are history only: they have no place in the mail's
life and never change the state; the owner's following events do (a
MailReleased for send-now, a MessageCancelled, a DeliveryStarted for a
retry). ``ack`` is the exception: this projection owns it, and
``acknowledge`` applies it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MailHeld,
    MailReleased,
    MessageCancelled,
    MessageStatusChanged,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    QuotaRefused,
    RoutingDecided,
    SendRequested,
    ids,
    plain,
)
from schemas.addresses import AddressError, split_address
from schemas.base import construct

FINAL_STATES = frozenset({"sent", "failed", "cancelled", "rejected", "bounced", "suppressed"})
# final states a newer event (an ops retry, a re-route) may still leave
RETRYABLE_STATES = frozenset({"failed"})
# delivery's per-recipient status -> the recipient's state
RCPT_STATE = {"accepted": "sent", "deferred": "deferred", "failed": "failed"}
OUTCOME_STATES = ("sent", "deferred", "failed")
# events with a place in the mail's life (see progress_of)
LIFE_EVENTS: tuple[type[Event], ...] = (
    SendRequested, RoutingDecided, MailHeld, MailReleased, DeliveryStarted, DeliveryAttempted,
    MessageCancelled, QuotaRefused,
)
# ops commands and their answers: history only
COMMAND_EVENTS: tuple[type[Event], ...] = (
    QueueCommandIssued, QueueCommandApplied, QueueCommandRefused,
)
FOLDED_EVENTS: tuple[type[Event], ...] = LIFE_EVENTS + COMMAND_EVENTS
_STATUS_NS = ids.STATUS_CHANGED
_STATUS_NS_BYTES = _STATUS_NS.bytes


@dataclass
class MessageStatus:
    """One mail's status. ``recipients``: address -> ``{"state", "code",
    "enhanced", "text", "server", "attempt"}``. ``history``: one entry per
    event applied, ``{"at", "state", "reason", "event", "event_id"}`` (an
    ops command's entry adds ``command_id``, ``command`` and ``operator``).
    ``progress`` is the furthest place in the mail's life applied so far
    (see ``progress_of``; ``[-1, 0, 0]``: none yet, the mail is unknown).
    ``acknowledged``: an operator acknowledged this failure (``postlane
    ack``); cleared when the mail leaves ``failed``. ``to_dict``/
    ``from_dict`` give the table value."""

    message_id: str
    state: str = "queued"
    server: str = ""
    attempt: int = 0
    reason: str = ""
    next_attempt_at: float = 0.0
    recipients: dict[str, dict[str, Any]] = field(default_factory=dict)
    subject: str = ""
    from_: str = ""
    to: list[str] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    progress: list[int] = field(default_factory=lambda: [-1, 0, 0])
    acknowledged: bool = False

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def known(self) -> bool:
        """Some event of the mail's life (not only ops commands) was applied."""
        return self.progress[0] >= 0

    def seen(self, event_id: str) -> bool:
        for h in self.history:
            if h.get("event_id") == event_id:
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, fresh: bool = False) -> MessageStatus:
        """The status a table value describes; unknown keys are ignored.
        ``fresh``: ``data`` was just parsed and is nobody else's, so it is
        used as it is instead of deep-copied."""
        known = _FIELDS
        values = {k: v for k, v in data.items() if k in known}
        return cls(**(values if fresh else plain(values)))

    def copy(self) -> MessageStatus:
        """A copy ``evolve`` may change without changing this one: its own
        recipients (each its own dict), history list, ``to`` and
        ``progress``. History entries are shared: an entry is never changed
        once appended. (It was a deep copy through JSON: a quarter of
        ``evolve``'s time, growing with the history.)"""
        new = object.__new__(MessageStatus)
        new.__dict__.update(self.__dict__)
        new.recipients = _copy_recipients(self.recipients)
        new.history = list(self.history)
        new.to = list(self.to)
        new.progress = list(self.progress)
        return new


def _copy_recipients(recipients: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each recipient's dict copied (its values are strings and numbers;
    transitions replace or set them, never change one in place)."""
    return {addr: dict(r) if type(r) is dict else plain(r) for addr, r in recipients.items()}


_FIELDS = frozenset(f.name for f in fields(MessageStatus))


_FIXED_RANKS: dict[type[Event], tuple[int, int, int]] = {
    SendRequested: (0, 0, 0), RoutingDecided: (1, 0, 0), MessageCancelled: (3, 0, 0)}


def progress_of(event: Event) -> tuple[int, int, int]:
    """The event's place in a mail's life, comparable as a tuple."""
    rank = _FIXED_RANKS.get(type(event))
    if rank is not None:
        return rank
    ranked = _RANKED.get(type(event))  # the chain below for these exact types, one lookup
    if ranked is not None:
        return ranked(event.__dict__)  # type: ignore[no-any-return]
    if isinstance(event, SendRequested):
        return (0, 0, 0)
    if isinstance(event, RoutingDecided):
        return (1, 0, 0)
    if isinstance(event, DeliveryStarted):
        return (2, event.attempt, 0)
    if isinstance(event, MailHeld | MailReleased):
        return (1, event.step, 0)
    if isinstance(event, DeliveryAttempted):
        return (2, event.attempt, 1)
    if isinstance(event, MessageCancelled):
        return (3, 0, 0)
    if isinstance(event, QuotaRefused):  # delivery's next attempt waits for its token
        return (2, max(event.attempt - 1, 0), 2)
    raise TypeError(f"the status projection does not fold {type(event).__name__}")


# progress_of's answer for these exact types, from the event's fields (see _step)
_RANKED: dict[type[Event], Any] = {
    DeliveryStarted: lambda f: (2, f["attempt"], 0),
    MailHeld: lambda f: (1, f["step"], 0),
    MailReleased: lambda f: (1, f["step"], 0),
    DeliveryAttempted: lambda f: (2, f["attempt"], 1),
}


def evolve(
    status: MessageStatus | None, event: Event
) -> tuple[MessageStatus, MessageStatusChanged | None]:
    """Apply one event; returns the new status (``status`` itself is not
    modified) and the visible change, or None when there is none."""
    if status is not None and status.seen(event.event_id):
        return status, None
    if status is None:
        st = _new_status(event.message_id, event.occurred_at)  # type: ignore[attr-defined]
    else:
        st = status.copy()
    before = st.state
    if _step(st, event):  # an ops command or its answer
        if not st.known:
            return st, None
        # visible in the history `postlane status` shows; the state stays
        return st, status_changed(st, st.state, event, note=st.history[-1]["reason"])
    if status is not None and status.known and _visible(status) == _visible(st):
        return st, None
    return st, status_changed(st, before if status is not None and status.known else "", event)


def fold_in_place(status: MessageStatus | None, event: Event) -> MessageStatus | None:
    """The status ``batch.apply`` gives for one event (``evolve``'s, or
    ``acknowledge``'s for an ``ack``), made by changing ``status`` itself
    and without the MessageStatusChanged: for a replay, which keeps only the
    last value of each mail (the same transitions as ``evolve``; a quarter
    of its cost)."""
    if isinstance(event, QueueCommandIssued) and event.command == "ack":
        return acknowledge(status, event)[0]
    f = event.__dict__  # the field values (see _step)
    if status is None:
        status = _new_status(f["message_id"], f["occurred_at"])
    elif status.seen(f["event_id"]):
        return status
    _step(status, event)
    return status


def _new_status(message_id: str, created_at: float) -> MessageStatus:
    """``MessageStatus(message_id=..., created_at=...)`` without the
    dataclass ``__init__`` and its default factories: the same fields, in
    the same order, each list and dict its own."""
    st = object.__new__(MessageStatus)
    st.__dict__.update({
        "message_id": message_id, "state": "queued", "server": "", "attempt": 0,
        "reason": "", "next_attempt_at": 0.0, "recipients": {}, "subject": "", "from_": "",
        "to": [], "created_at": created_at, "updated_at": 0.0, "history": [],
        "progress": [-1, 0, 0], "acknowledged": False,
    })
    return st


def _step(st: MessageStatus, event: Event) -> bool:
    """Apply ``event`` to ``st`` (changed in place); True when it was an ops
    command or an answer (history only)."""
    kind = type(event)
    apply = _APPLY.get(kind)  # the common case: one lookup, no isinstance chain
    if apply is None and isinstance(event, COMMAND_EVENTS):
        record_command(st, event)
        return True
    # the fields from the event's __dict__: every way an event is made puts
    # every field there, and every field is plain (no lazy coercion:
    # schemas.base._Shape.fast), so Faust's descriptor would give the same
    # value, at a C call per read
    f = event.__dict__
    rank = _FIXED_RANKS.get(kind)  # progress_of(event), its lookups here
    if rank is None:
        ranked = _RANKED.get(kind)
        rank = ranked(f) if ranked is not None else progress_of(event)
    state = st.state
    advance = rank >= tuple(st.progress) and (
        state not in FINAL_STATES or state in RETRYABLE_STATES
    )
    if apply is not None:
        apply(st, event, advance)
    elif isinstance(event, SendRequested):
        _apply_request(st, event, advance)
    elif isinstance(event, RoutingDecided):
        _apply_routing(st, event, advance)
    elif isinstance(event, DeliveryStarted):
        _apply_started(st, event, advance)
    elif isinstance(event, DeliveryAttempted):
        _apply_attempted(st, event, advance)
    elif isinstance(event, MailHeld):
        _apply_held(st, event, advance)
    elif isinstance(event, MailReleased):
        _apply_released(st, event, advance)
    elif isinstance(event, MessageCancelled):
        _apply_cancelled(st, event, advance)
    elif isinstance(event, QuotaRefused) and advance:
        st.state, st.next_attempt_at = "deferred", event.until
        st.reason = f"{event.reason} (attempt {event.attempt} waits for it)"
    if st.state != "failed":
        st.acknowledged = False  # an acknowledgement is of one failure
    if advance:
        st.progress = list(rank)
        entry_reason = st.reason
    elif st.final:
        entry_reason = f"arrived after the mail was {st.state}: state kept"
    else:
        entry_reason = f"arrived out of order (after {st.state}): state kept"
    at = f["occurred_at"]
    if not st.created_at or at < st.created_at:  # min(), max() without the calls
        st.created_at = at
    if at > st.updated_at:
        st.updated_at = at
    st.history.append({
        "at": at,
        "state": st.state,
        "reason": entry_reason,
        "event": kind.__name__,
        "event_id": f["event_id"],
    })
    return False


def fold(events: list[Event], status: MessageStatus | None = None) -> MessageStatus | None:
    """Apply events in order (replay, tests)."""
    for event in events:
        status, _ = evolve(status, event)
    return status


def status_changed(st: MessageStatus, previous: str, cause: Event,
                   note: str = "") -> MessageStatusChanged:
    """The public event for ``st``. Its event_id is derived from the cause's,
    so a redelivered cause gives the same id and readers can drop it."""
    return construct(MessageStatusChanged, {
        "message_id": st.message_id,
        "state": st.state,
        "previous": previous,
        "reason": st.reason,
        "server": st.server,
        "attempt": st.attempt,
        "recipients": _copy_recipients(st.recipients),
        "acknowledged": st.acknowledged,
        "note": note,
        "event_id": derived_id(_STATUS_NS_BYTES, cause.event_id),
        "occurred_at": cause.occurred_at,
    })


def derived_id(namespace: bytes, name: str) -> str:
    """``uuid.uuid5(UUID(bytes=namespace), name).hex``, without building
    two UUID objects (a tenth of ``evolve``)."""
    digest = bytearray(hashlib.sha1(namespace + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


# --- ops commands -----------------------------------------------------------------------------

ACK_BY = "status"  # QueueCommandApplied/Refused.by for ack
_RESULT_NS = ids.STATUS_COMMAND_RESULT  # answers to ack


def result_id(command_id: str) -> str:
    """The event_id of the answer to a command: derived from the command's
    id, so a redelivered command gives the same answer (readers drop it)."""
    return derived_id(_RESULT_NS.bytes, command_id)


def command_words(command: str) -> str:
    """``send_now`` -> ``send-now`` (as the CLI spells it)."""
    return command.replace("_", "-")


def command_entry_reason(event: Event) -> str:
    """The history words for a command or its answer."""
    if isinstance(event, QueueCommandIssued):
        words = f"{command_words(event.command)} requested by {event.operator or 'an operator'}"
        return words + (f": {event.note}" if event.note else "")
    if isinstance(event, QueueCommandApplied):
        words = f"{command_words(event.command)} applied by {event.by}"
        return words + (f": {event.detail}" if event.detail else "")
    if isinstance(event, QueueCommandRefused):
        return f"{command_words(event.command)} refused by {event.by}: {event.reason}"
    raise TypeError(f"{type(event).__name__} is not an ops command or answer")


def record_command(st: MessageStatus, event: Event) -> None:
    """Append a command's (or an answer's) history entry; the state stays."""
    if isinstance(event, QueueCommandIssued):
        command_id, command, operator = event.event_id, event.command, event.operator
    elif isinstance(event, QueueCommandApplied | QueueCommandRefused):
        command_id, command, operator = event.command_id, event.command, ""
    else:
        raise TypeError(f"{type(event).__name__} is not an ops command or answer")
    st.history.append({
        "at": event.occurred_at,
        "state": st.state,
        "reason": command_entry_reason(event),
        "event": type(event).__name__,
        "event_id": event.event_id,
        "command_id": command_id,
        "command": command,
        "operator": operator,
    })


def operator_of(st: MessageStatus, command_id: str) -> str:
    """Who issued ``command_id``, when its QueueCommandIssued was folded."""
    for h in st.history:
        if h.get("event") == "QueueCommandIssued" and h.get("event_id") == command_id:
            return str(h.get("operator") or "")
    return ""


AckResult = QueueCommandApplied | QueueCommandRefused


def acknowledge(
    status: MessageStatus | None, command: QueueCommandIssued
) -> tuple[MessageStatus | None, AckResult | None, MessageStatusChanged | None]:
    """Apply an ``ack`` command: a failed mail not yet acknowledged becomes
    acknowledged (it stays failed; ``postlane queue`` hides it unless
    ``--all``). Returns the new status (``status`` itself is not modified),
    the answer (QueueCommandApplied or QueueCommandRefused, event_id derived
    from the command's) and the visible change (only when applied).

    The command and the answer both go into the history. A command already
    in the history is a redelivery: its answer was sent before the table was
    written, so ``(status, None, None)``."""
    if command.command != "ack":
        raise ValueError(f"acknowledge applies ack, not {command.command!r}")
    if status is not None and status.seen(command.event_id):
        return status, None, None
    mid = command.message_id
    if status is None:
        st = MessageStatus(message_id=mid, created_at=command.occurred_at)
    else:
        st = status.copy()
    record_command(st, command)
    refusal = ""
    if not st.known:
        refusal = f"{mid} is unknown to the status projection"
    elif st.state != "failed":
        refusal = f"{mid} is {st.state}: only failed mail can be acknowledged"
    elif st.acknowledged:
        refusal = f"{mid} was already acknowledged"
    common: dict[str, Any] = dict(
        message_id=mid, command_id=command.event_id, command="ack", by=ACK_BY,
        event_id=result_id(command.event_id), occurred_at=command.occurred_at,
    )
    result: AckResult
    if refusal:
        result = QueueCommandRefused(reason=refusal, **common)
        record_command(st, result)
        return st, result, None
    st.acknowledged = True
    who = command.operator or "an operator"
    result = QueueCommandApplied(
        detail=f"failure acknowledged by {who}; `postlane queue` lists it only with --all",
        **common,
    )
    record_command(st, result)
    st.updated_at = max(st.updated_at, command.occurred_at)
    return st, result, status_changed(st, st.state, command)


def duration_words(seconds: float) -> str:
    """``3 h 2 min``, ``12 min``, ``45 s``, ``2 d 3 h``."""
    total = max(int(round(seconds)), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def utc_words(ts: float) -> str:
    """``2026-11-22 11:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def answer_text(rcpt: dict[str, Any]) -> str:
    """``451 4.7.1 try later (server primary)``."""
    code = rcpt.get("code") or 0
    parts = [str(code) if code else "", str(rcpt.get("enhanced") or ""),
             str(rcpt.get("text") or "")]
    text = " ".join(p for p in parts if p).strip() or "no answer"
    server = rcpt.get("server")
    return f"{text} (server {server})" if server else text


# --- the transitions ------------------------------------------------------------------------


def _visible(st: MessageStatus) -> tuple[Any, ...]:
    return (st.state, st.reason, st.server, st.attempt, st.recipients, st.acknowledged)


def _rcpt(state: str, *, code: int = 0, enhanced: str = "", text: str = "", server: str = "",
          attempt: int = 0) -> dict[str, Any]:
    return {"state": state, "code": code, "enhanced": enhanced, "text": text,
            "server": server, "attempt": attempt}


def _key(recipients: dict[str, dict[str, Any]], addr: str) -> str:
    """The existing key for ``addr`` (addresses compare without case)."""
    low = addr.lower()
    for key in recipients:
        if key.lower() == low:
            return key
    return addr


def _bare_addresses(values: list[Any]) -> tuple[str, ...]:
    """The bare addresses of ``values`` (strings that are no address and
    other values left out), each once whatever its case, in order.
    Remembered per list (a mail's request comes in three events)."""
    try:
        return _bare_remembered(tuple(values))
    except TypeError:  # an unhashable value (a list or an object): not a string anyway
        return tuple(_bare(values))


@lru_cache(maxsize=16384)
def _bare_remembered(values: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple(_bare(values))


def _bare(values: Any) -> list[str]:
    out: list[str] = []
    lowered: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        try:
            addr = split_address(value)[1]
        except AddressError:
            continue
        low = addr.lower()
        if low not in lowered:
            lowered.add(low)
            out.append(addr)
    return out


def _summarize(st: MessageStatus, request: dict[str, Any]) -> None:
    """Fill the subject/from/to summary and the recipients still unknown
    (only before any delivery: afterwards delivery's list is the truth)."""
    if not st.subject and isinstance(request.get("subject"), str):
        st.subject = request["subject"]
    if not st.from_ and isinstance(request.get("from_"), str):
        st.from_ = request["from_"]
    to = request.get("to")
    if not st.to and isinstance(to, list):
        st.to = [v for v in to if isinstance(v, str)]
    if st.progress[0] >= 2:
        return
    every: list[Any] = []
    for fname in ("to", "cc", "bcc"):
        value = request.get(fname)
        if isinstance(value, list):
            every.extend(value)
    recipients = st.recipients
    for addr in _bare_addresses(every):
        if addr in recipients:
            continue  # _key finds a key of recipients: nothing to add (a request's 2nd, 3rd time)
        key = _key(recipients, addr)
        if key not in recipients:
            recipients[key] = _rcpt("queued")


def _apply_request(st: MessageStatus, ev: SendRequested, advance: bool) -> None:
    f = ev.__dict__  # the field values (see _step)
    _summarize(st, f)  # its subject, from_, to, cc, bcc
    if advance:
        st.state = "queued"
        send_at = f["send_at"]
        st.reason = f"scheduled for {utc_words(send_at)}" if send_at > f["occurred_at"] else ""


def _apply_routing(st: MessageStatus, ev: RoutingDecided, advance: bool) -> None:
    f = ev.__dict__  # the field values (see _step)
    request = f["request"]
    if isinstance(request, dict):
        _summarize(st, request)
    for addr, why in (f["suppressed"] or {}).items():  # blacklisted: never sent, whatever comes
        st.recipients[_key(st.recipients, addr)] = _rcpt("suppressed", text=why)
    if not advance:
        return
    st.next_attempt_at = 0.0
    outcome = f["outcome"]
    if outcome == "suppressed":
        st.state = "suppressed"
        st.reason = ev.reason or "every recipient is blacklisted"
    elif outcome == "routed":
        server = f["server"]
        st.state, st.server, st.reason = "queued", server, f"routed to {server}"
        if isinstance(request, dict) and request.get("kind") == "mass":
            st.reason += ("; mass mail waits its turn in the mass lane (taken in as the "
                          "mass mail routed before it goes out, after transactional mail)")
    elif outcome == "no_server":
        st.state = "failed"
        st.reason = ev.reason or "no outgoing server can send this mail"
    else:
        st.state = "rejected"
        st.reason = ev.reason or "the router rejected this mail"


def _apply_started(st: MessageStatus, ev: DeliveryStarted, advance: bool) -> None:
    if not advance:
        return
    f = ev.__dict__  # the field values (see _step)
    server, attempt = f["server"], f["attempt"]
    st.state, st.server, st.attempt = "sending", server, attempt
    st.next_attempt_at = 0.0
    st.reason = f"attempt {attempt} via {server}"
    recipients = st.recipients
    for addr in f["recipients"]:
        key = _key(recipients, addr)
        if recipients.get(key, {}).get("state") == "sent":
            continue
        recipients[key] = _rcpt("sending", server=server, attempt=attempt)


def _apply_held(st: MessageStatus, ev: MailHeld, advance: bool) -> None:
    if not advance:
        return
    st.next_attempt_at = ev.until
    st.state = "deferred" if ev.why == "daily_limit" else "queued"
    st.reason = ev.reason or f"held by the limiter ({ev.why})"


def _apply_released(st: MessageStatus, ev: MailReleased, advance: bool) -> None:
    f = ev.__dict__  # the field values (see _step)
    decision = f["decision"]
    request = decision.get("request")
    if isinstance(request, dict):
        _summarize(st, request)
    if not advance:
        return
    server = decision.get("server")
    if not st.server and isinstance(server, str):
        st.server = server
    st.state, st.next_attempt_at = "queued", 0.0
    if f["forced"]:
        st.reason = f"sent now by {operator_of(st, f['command_id']) or 'an operator'}"
    elif f["held_for"] >= 1:
        st.reason = f"released to delivery after {duration_words(f['held_for'])}"
    else:
        st.reason = "released to delivery"


def _apply_cancelled(st: MessageStatus, ev: MessageCancelled, advance: bool) -> None:
    if not advance:
        return
    was = st.state
    if st.reason:
        was = st.reason if st.reason.startswith(f"{st.state}:") else f"{st.state}: {st.reason}"
    who = f"cancelled by {operator_of(st, ev.command_id) or 'an operator'}"
    if ev.reason.startswith("cancelled"):
        who = ev.reason  # the owner said who (it had the command)
    elif ev.reason:
        who += f": {ev.reason}"
    st.state, st.next_attempt_at = "cancelled", 0.0
    st.reason = f"{who} (was {was})"
    for r in st.recipients.values():
        if r.get("state") not in ("sent", "failed", "suppressed"):
            r["state"] = "cancelled"


def _outcome_rcpt(ev: DeliveryAttempted, o: dict[str, Any]) -> dict[str, Any]:
    code = o.get("code")
    f = ev.__dict__  # the field values (see _step)
    return {"state": RCPT_STATE[o["status"]],
            "code": code if isinstance(code, int) and not isinstance(code, bool) else 0,
            "enhanced": str(o.get("enhanced") or ""),
            "text": str(o.get("text") or "") or f["error"],
            "server": f["server"], "attempt": f["attempt"]}  # _rcpt's row


def _apply_attempted(st: MessageStatus, ev: DeliveryAttempted, advance: bool) -> None:
    if not advance:
        # an older or overtaken outcome: only fill recipients without one
        for o in ev.outcomes:
            addr = str(o.get("recipient") or "").strip()
            key = _key(st.recipients, addr)
            if addr and st.recipients.get(key, {}).get("state") not in OUTCOME_STATES:
                st.recipients[key] = _outcome_rcpt(ev, o)
        return
    answered: set[str] = set()
    f = ev.__dict__  # the field values (see _step)
    attempt = f["attempt"]
    recipients = st.recipients
    for o in f["outcomes"]:
        addr = str(o.get("recipient") or "").strip()
        if not addr:
            continue
        key = _key(recipients, addr)
        if int(recipients.get(key, {}).get("attempt") or 0) > attempt:
            continue
        recipients[key] = _outcome_rcpt(ev, o)
        answered.add(key)
    retry = f["next_attempt_at"] > 0
    for key, r in list(st.recipients.items()):
        if key not in answered and r.get("state") == "sending":
            # in an attempt but no answer of its own: the session failed
            text = ev.error or (
                "the attempt was interrupted" if ev.interrupted else "no answer for this recipient"
            )
            st.recipients[key] = _rcpt("deferred" if retry else "failed", text=text,
                                       server=ev.server, attempt=ev.attempt)
    gave_up = False
    if not retry:
        for r in st.recipients.values():
            if r.get("state") == "deferred":
                r["state"] = "failed"
                gave_up = True
    st.server, st.attempt = f["server"], attempt
    st.next_attempt_at = 0.0
    by_state: dict[str, dict[str, dict[str, Any]]] = {"sent": {}, "deferred": {}, "failed": {}}
    for key, r in st.recipients.items():
        group = by_state.get(r.get("state"))  # type: ignore[arg-type]
        if group is not None:
            group[key] = r
    touched = len(by_state["sent"]) + len(by_state["deferred"]) + len(by_state["failed"])
    attempts = f"{attempt} attempt" + ("" if attempt == 1 else "s")
    if touched == 0:
        text = ev.error or "delivery reported no recipient outcome"
        if retry:
            st.state, st.next_attempt_at = "deferred", ev.next_attempt_at
            st.reason = f"deferred: {text}; next attempt {utc_words(ev.next_attempt_at)}"
        else:
            st.state, st.reason = "failed", text
    elif by_state["deferred"]:
        st.state, st.next_attempt_at = "deferred", ev.next_attempt_at
        via = f" via {ev.next_server}" if ev.next_server and ev.next_server != ev.server else ""
        st.reason = (
            f"deferred: {_answers(by_state['deferred'], touched > 1)}; "
            f"next attempt {utc_words(ev.next_attempt_at)}{via}"
        )
    elif by_state["failed"]:
        st.state = "failed"
        failed = by_state["failed"]
        prefix = f"gave up after {attempts}: " if gave_up else ""
        if by_state["sent"]:
            prefix += f"{len(failed)} of {touched} recipients failed: "
        st.reason = prefix + _answers(failed, touched > 1)
    else:
        st.state, st.reason = "sent", ""


def _answers(recipients: dict[str, dict[str, Any]], with_address: bool) -> str:
    """Recipients grouped by the answer they got: ``a@x, b@y: 550 5.1.1
    no such user (server primary); c@z: 552 ...``."""
    groups: dict[str, list[str]] = {}
    for addr, r in recipients.items():
        groups.setdefault(answer_text(r), []).append(addr)
    if not with_address and len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(addrs)}: {answer}" for answer, addrs in groups.items())


# event type -> its transition (``_step``'s isinstance chain for these exact types)
_APPLY: dict[type[Event], Any] = {
    SendRequested: _apply_request, RoutingDecided: _apply_routing,
    DeliveryStarted: _apply_started, DeliveryAttempted: _apply_attempted, MailHeld: _apply_held,
    MailReleased: _apply_released, MessageCancelled: _apply_cancelled,
}
