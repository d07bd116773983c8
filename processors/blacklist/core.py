"""Counting bounces and the blacklist: a pure fold per address.

``evolve(state, event, rules)`` applies one event of the ``bounces`` topic
(all keyed by the address) and says when the address's blacklisting
changed. The processor and ``postlane replay blacklist`` use the same
function, so a replay from offset 0 gives the live table again.

The rule: an address is blacklisted when its counted bounces within the
window (``blacklist_window_days``, 13 weeks) weigh at least
``blacklist_threshold`` (5) and the first and last of them are more than
``blacklist_min_spread_days`` (7) apart; or at once when one counted bounce
alone weighs the threshold (``bounce_weight_hard`` = 5: one hard "user
unknown" is enough). Time is the bounces' own time, never the clock, so a
replay decides alike.

What counts: failures that say something about the address (unknown user,
no such domain, full mailbox, expired in a queue, unclassified). What does
not: network failures and sending-side refusals (blocked, spam, rejected,
authentication), which are about us or the path, not the address; bounces
of an outage burst (``outage`` set by the outage check, or withdrawn later
by ``BounceDiscounted``); complaints (kept for ``why``, never counted).

A mail received from the address (``MailReceivedFrom``) ends the count:
earlier bounces stop counting and an automatic blacklisting is lifted (the
address works). Ops' ``BlacklistEdited`` add blacklists at once (manual,
kept through resets); remove lifts it and clears the count.

A blacklisting stays until removed or reset: bounces leaving the window do
not lift it.

Suppressions by type, folded by the same function from the same topic: the
blacklisting above is the type ``hard_bounce`` (``manual`` when ops added
it); a ``ComplaintReceived`` suppresses at once (type ``complaint``, for its
tenant, or every tenant when unknown); an ``UnsubscribeRequested`` is type
``unsubscribe`` for its tenant and list (mass mail only); a
``SuppressionEdited`` adds or lifts one by hand, per tenant or global.
``suppressions(st)`` is the whole set of an address, published on every
change in ``BlacklistChanged.suppressions``; ``applies`` says whether an
entry stops a given mail (tenant, kind, list).
"""

from __future__ import annotations

import copy
import time
import uuid
from bisect import bisect_right, insort_right
from dataclasses import dataclass, field, fields
from functools import lru_cache
from operator import itemgetter
from typing import Any

from schemas import (
    BlacklistChanged,
    BlacklistEdited,
    BounceDiscounted,
    BounceRecorded,
    ComplaintReceived,
    Event,
    MailReceivedFrom,
    SuppressionEdited,
    UnsubscribeRequested,
    ids,
    plain,
)
from streams.settings import Settings

COUNTED_REASONS = frozenset({"unknown_user", "host_unknown", "mailbox_full", "expired", "other"})
NOT_COUNTED_WHY = {
    "network_error": "a network failure, not the address's",
    "blocked": "a refusal of the sender (policy, block list, relay): the sending side",
    "spam": "the content was refused as spam: the sending side",
    "rejected": "the message was refused (size, content, protocol): the sending side",
    "auth_failure": "an authentication failure: the sending side",
}
FOLDED_EVENTS: tuple[type[Event], ...] = (
    BounceRecorded, BounceDiscounted, MailReceivedFrom, BlacklistEdited,
    ComplaintReceived, UnsubscribeRequested, SuppressionEdited,
)
MAX_KEPT = 100  # bounces kept per address (for why), newest first out
_AT = itemgetter("at")  # a bounce's time (the sort key)
DAY = 86400.0
_NS = ids.BLACKLIST_CHANGED


@dataclass(frozen=True)
class Rules:
    threshold: float = 5.0
    window: float = 91 * DAY
    min_spread: float = 7 * DAY
    weight_hard: float = 1.0
    weight_soft: float = 1.0

    @classmethod
    def from_settings(cls, s: Settings) -> Rules:
        return cls(
            threshold=s.blacklist_threshold,
            window=s.blacklist_window_days * DAY,
            min_spread=s.blacklist_min_spread_days * DAY,
            weight_hard=s.bounce_weight_hard,
            weight_soft=s.bounce_weight_soft,
        )


@dataclass
class AddressState:
    """One address. ``bounces``: the recent ones, each ``{"bounce_id", "at",
    "message_id", "status", "replycode", "hard", "reason", "diagnostic",
    "server", "source", "kind", "counted", "weight", "why"}`` (``why``: why
    it does not count). ``seen``: event ids applied (recent), for
    redeliveries."""

    address: str
    blacklisted: bool = False
    manual: bool = False
    since: float = 0.0
    reason: str = ""
    bounces: list[dict[str, Any]] = field(default_factory=list)
    reset_at: float = 0.0
    last_at: float = 0.0
    seen: list[str] = field(default_factory=list)
    # suppressions other than the blacklisting: {"type", "tenant", "list_id",
    # "reason", "since"}, one per (type, tenant, list_id)
    scoped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AddressState:
        known = {f.name for f in fields(cls)}
        st = cls(**copy.deepcopy({k: v for k, v in data.items() if k in known}))
        # _step keeps the bounces sorted by time (each new one inserted in
        # its place): a row is read as sorted, whatever wrote it (stably, as
        # the sort every bounce made before did; a row that cannot be sorted
        # is left for _step to fail on as it did)
        try:
            st.bounces.sort(key=_AT)
        except (KeyError, TypeError, AttributeError):
            pass
        return st

    def counted(self, rules: Rules) -> list[dict[str, Any]]:
        """The bounces that count now, oldest first."""
        edge = self.last_at - rules.window
        return sorted([b for b in self.bounces if b["counted"] and b["at"] > edge], key=_AT)


def address_of(event: Event) -> str:
    """The address an event of the bounces topic is about, as it is keyed
    (lower-cased: an ``UnsubscribeRequested`` may carry it as typed)."""
    return str(event.address).strip().lower()  # type: ignore[attr-defined]


def _when(ts: float) -> str:
    if 0 <= ts < 253402300800:  # 1970 to 9999: the minute's text, remembered
        return _minute_words(int(ts) // 60)
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


@lru_cache(maxsize=4096)
def _minute_words(minute: int) -> str:
    """``_when`` of any time within ``minute`` (gmtime floors to the
    second, and the text names the minute)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(minute * 60))


@lru_cache(maxsize=1024)
def _days(seconds: float) -> str:
    return f"{seconds / DAY:.1f}".rstrip("0").rstrip(".")


def _answer(b: dict[str, Any]) -> str:
    """``5.1.1 user unknown``, without repeating a status the text has."""
    status, text = str(b.get("status") or ""), str(b.get("diagnostic") or "")
    if status and status in text:
        return text
    # " ".join of those not empty, without the generator
    return f"{status} {text}" if status and text else status or text


def rule_holds(counted: list[dict[str, Any]], rules: Rules) -> bool:
    """``rule_met(counted, rules)[0]`` without making the sentence (most
    bounces do not blacklist: their sentence would be thrown away)."""
    if not counted:
        return False
    threshold = rules.threshold
    total = 0.0
    for b in counted:
        weight = float(b["weight"])
        if weight >= threshold:
            return True  # decisive
        total += weight
    if total < threshold:
        return False
    return counted[-1]["at"] - counted[0]["at"] > rules.min_spread


def counted_rule_holds(bounces: list[dict[str, Any]], rules: Rules) -> bool:
    """``rule_holds([b for b in bounces if b["counted"]], rules)`` in one
    pass, without the list (every counted bounce asks it)."""
    threshold = rules.threshold
    total = 0.0
    first: dict[str, Any] | None = None
    last: dict[str, Any] = {}
    for b in bounces:
        if b["counted"]:
            weight = float(b["weight"])
            if weight >= threshold:
                return True  # decisive
            total += weight
            if first is None:
                first = b
            last = b
    if first is None or total < threshold:
        return False
    return last["at"] - first["at"] > rules.min_spread


def rule_met(counted: list[dict[str, Any]], rules: Rules) -> tuple[bool, str]:
    """(blacklist?, the sentence why or why not yet)."""
    if not counted:
        return False, "no counted bounce"
    threshold = rules.threshold
    total = 0.0
    decisive: dict[str, Any] | None = None  # the last bounce weighing the threshold alone
    for b in counted:
        weight = float(b["weight"])
        total += weight
        if weight >= threshold:
            decisive = b
    last = counted[-1]
    answer = _answer(last)[:160]
    if decisive is not None:
        b = decisive
        return True, (
            f"one {'hard' if b['hard'] else 'soft'} {str(b['reason']).replace('_', ' ')} bounce "
            f"weighs {float(b['weight']):g} (threshold {threshold:g}) on {_when(b['at'])}: "
            f"{answer}"
        )
    what = _reasons_words(tuple([str(b["reason"]) for b in counted]))
    spread = last["at"] - counted[0]["at"]
    n = len(counted)
    head = (f"{n} counted bounce{'s' if n != 1 else ''} (weight {total:g}) between "
            f"{_when(counted[0]['at'])} and {_when(last['at'])}, "
            f"{_days(spread)} days apart, within {_days(rules.window)} days: {what}")
    if total < threshold:
        return False, f"{head}; {threshold:g} needed"
    if spread <= rules.min_spread:
        return False, (f"{head}; not blacklisted yet: they must be more than "
                       f"{_days(rules.min_spread)} days apart (an outage lasts days, a dead "
                       "address stays)")
    return True, f"{head}; last: {answer}"


_COUNT = itemgetter(1)


@lru_cache(maxsize=1024)
def _reasons_words(reasons: tuple[str, ...]) -> str:
    """``unknown user x3, mailbox full``: the reasons by how often, the most
    frequent first (ties: in the order first met), as Counter.most_common
    gives them. Remembered: an address's counted reasons repeat."""
    counts: dict[str, int] = {}
    for r in reasons:
        reason = r.replace("_", " ")
        counts[reason] = counts.get(reason, 0) + 1
    ranked = (sorted(counts.items(), key=_COUNT, reverse=True) if len(counts) > 1
              else counts.items())
    return ", ".join(f"{r} x{n}" if n > 1 else r for r, n in ranked)


def _summary(b: dict[str, Any]) -> dict[str, Any]:
    return {k: b.get(k) for k in ("bounce_id", "at", "reason", "status", "hard", "weight",
                                  "message_id", "diagnostic")}


def _not_counted(ev: dict[str, Any], st: AddressState) -> str:
    """Why a bounce (its fields: ``_fields``) does not count ("": it counts)."""
    if ev["kind"] == "complaint":
        return "a complaint (feedback report), not a delivery failure"
    if ev["unattributed"]:
        return f"unattributed: {ev['unattributed']}"
    if ev["outage"]:
        return f"outage: {ev['outage']}"
    reason = ev["reason"]
    if reason not in COUNTED_REASONS:
        return f"{reason.replace('_', ' ')}: {NOT_COUNTED_WHY.get(reason, 'not counted')}"
    if st.reset_at and ev["bounced_at"] <= st.reset_at:
        return f"before mail was received from the address ({_when(st.reset_at)})"
    return ""


def _fields(event: BounceRecorded) -> dict[str, Any]:
    """The bounce's field values: its ``__dict__``. Every way an event is
    made (Faust's ``__init__``, ``construct``, the decoders, ``derive``)
    puts every field there, and every field of every event is plain (no
    lazy coercion: ``schemas.base._Shape.fast``), so Faust's descriptor
    would return the same value from there, at a C call per read (a
    bounce's step reads twenty)."""
    return event.__dict__


def evolve(
    state: AddressState | None, event: Event, rules: Rules
) -> tuple[AddressState, BlacklistChanged | None]:
    """Apply one event of the address; returns the new state (``state`` is
    not modified) and the change of its blacklisting, if any."""
    address = address_of(event)
    st = AddressState(address=address) if state is None else AddressState.from_dict(
        state.to_dict())
    if _step(st, event, rules, tell=True):
        return st, changed(st, event, rules)
    return st, None


def fold_in_place(state: AddressState | None, event: Event, rules: Rules) -> AddressState:
    """The state ``evolve`` gives for one event, made by changing ``state``
    itself and without the BlacklistChanged: for a replay, which keeps only
    each address's last state (the same transitions, none of the copying)."""
    st = _new_state(address_of(event)) if state is None else state
    _step(st, event, rules, tell=False)
    return st


def _new_state(address: str) -> AddressState:
    """``AddressState(address=address)`` without the dataclass ``__init__``
    and its default factories: the same fields in the same order, each list
    its own."""
    st = object.__new__(AddressState)
    st.__dict__.update({
        "address": address, "blacklisted": False, "manual": False, "since": 0.0, "reason": "",
        "bounces": [], "reset_at": 0.0, "last_at": 0.0, "seen": [], "scoped": [],
    })
    return st


def _step(st: AddressState, event: Event, rules: Rules, tell: bool) -> bool:
    """Apply ``event`` to ``st`` (changed in place). With ``tell``: True
    when the blacklisting or the suppression set changed (a BlacklistChanged
    is due); without, always False (nothing compared)."""
    f = event.__dict__  # the field values (see _fields)
    event_id = f["event_id"]
    seen = st.seen
    if event_id in seen:
        return False
    if len(seen) < 200:  # the state's own list (evolve copies it first): appended to
        seen.append(event_id)
    else:
        st.seen = [*seen[-199:], event_id]
    if tell:
        before = (st.blacklisted, st.manual)
        sets_before = suppressions(st)
    if isinstance(event, BounceRecorded):
        ev = f  # _fields(event)
        bounce_id = ev["bounce_id"]
        for b in st.bounces:
            if b["bounce_id"] == bounce_id:
                return False
        bounced_at = ev["bounced_at"]
        why = _not_counted(ev, st)
        weight = rules.weight_hard if ev["hard"] else rules.weight_soft
        bounced = {
            "bounce_id": bounce_id, "at": bounced_at,
            "message_id": ev["message_id"], "status": ev["status"],
            "replycode": ev["replycode"], "hard": ev["hard"], "reason": ev["reason"],
            "diagnostic": ev["diagnostic"][:300], "server": ev["server"],
            "source": ev["source"], "kind": ev["kind"], "counted": not why,
            "weight": weight if not why else 0.0, "why": why,
        }
        if bounced_at > st.last_at:  # max() without the call
            st.last_at = bounced_at
        edge = st.last_at - rules.window
        # sorted by time, inside the window, the last MAX_KEPT: the bounces
        # are sorted already (every step keeps them so, from_dict sorts), so
        # the new one is inserted after those of its time or before (as a
        # stable sort of the list with it appended puts it), and what falls
        # out of the window is a prefix
        bounces = st.bounces
        if bounces and bounced_at < bounces[-1]["at"]:
            insort_right(bounces, bounced, key=_AT)
        else:
            bounces.append(bounced)
        if bounces[0]["at"] <= edge:
            del bounces[:bisect_right(bounces, edge, key=_AT)]
        if len(bounces) > MAX_KEPT:
            del bounces[:-MAX_KEPT]
        # st.counted(rules): the same edge (last_at is as above), so every
        # bounce kept is inside it, and they are sorted already
        if not st.blacklisted and not why and counted_rule_holds(bounces, rules):
            counted = [b for b in bounces if b["counted"]]
            st.blacklisted, st.manual = True, False
            st.since, st.reason = bounced_at, rule_met(counted, rules)[1]
    elif isinstance(event, BounceDiscounted):
        for b in st.bounces:
            if b["bounce_id"] == event.bounce_id and b["counted"]:
                b["counted"], b["weight"], b["why"] = False, 0.0, f"outage: {event.outage}"
        if st.blacklisted and not st.manual and not rule_holds(st.counted(rules), rules):
            st.blacklisted = False
            st.reason = f"lifted: a bounce that led there was part of an outage ({event.outage})"
    elif isinstance(event, MailReceivedFrom):
        address = address_of(event)
        st.reset_at = max(st.reset_at, event.received_at)
        for b in st.bounces:
            if b["counted"] and b["at"] <= event.received_at:
                b["counted"], b["weight"] = False, 0.0
                b["why"] = ("reset: mail was received from the address on "
                            f"{_when(event.received_at)}")
        if st.blacklisted and not st.manual:
            st.blacklisted = False
            st.reason = (f"lifted: mail was received from {address} on "
                         f"{_when(event.received_at)} ({event.source or 'inbound'})")
    elif isinstance(event, BlacklistEdited):
        by = event.by or "ops"
        if event.action == "add":
            st.blacklisted, st.manual, st.since = True, True, event.occurred_at
            st.reason = f"added by {by}" + (f": {event.reason}" if event.reason else "")
        else:
            _clear_counts(st, f"cleared when {by} removed the address from the blacklist")
            st.blacklisted, st.manual = False, False
            st.reason = f"removed by {by}" + (f": {event.reason}" if event.reason else "")
    elif isinstance(event, ComplaintReceived):
        about = f" about message {event.message_id}" if event.message_id else ""
        fmt = f", {event.format}" if event.format else ""
        _put(st, "complaint", event.tenant, "", event.complained_at or event.occurred_at,
             f"complaint (feedback-type {event.feedback_type or 'abuse'}{fmt}){about} on "
             f"{_when(event.complained_at)}")
    elif isinstance(event, UnsubscribeRequested):
        at = event.requested_at or event.occurred_at
        what = f"list {event.list_id}" if event.list_id else "every list"
        of = f" of tenant {event.tenant}" if event.tenant else ""
        _put(st, "unsubscribe", event.tenant, event.list_id, at,
             f"unsubscribed from {what}{of} ({event.via}) on {_when(at)}")
    elif isinstance(event, SuppressionEdited):
        by = event.by or "ops"
        why = f": {event.reason}" if event.reason else ""
        kind = event.suppression_type
        if event.action == "add":
            _put(st, kind, event.tenant, event.list_id, event.occurred_at,
                 f"added by {by}{why}")
        elif kind == "hard_bounce" or (kind == "manual" and st.manual and not event.tenant
                                       and not event.list_id):
            if st.blacklisted and (kind == "manual") == st.manual:
                _clear_counts(st, f"cleared when {by} lifted the {kind} suppression")
                st.blacklisted, st.manual = False, False
                st.reason = f"removed by {by}{why}"
        if event.action == "remove":
            st.scoped = [e for e in st.scoped if not (
                e["type"] == kind and e["tenant"] == event.tenant
                and e["list_id"] == event.list_id)]
    else:
        raise TypeError(f"the blacklist does not fold {type(event).__name__}")
    if not tell:
        return False
    return not ((st.blacklisted, st.manual) == before and suppressions(st) == sets_before)


def _clear_counts(st: AddressState, why: str) -> None:
    for b in st.bounces:
        if b["counted"]:
            b["counted"], b["weight"], b["why"] = False, 0.0, why


def _put(st: AddressState, kind: str, tenant: str, list_id: str, since: float,
         reason: str) -> None:
    """Add (or renew) the suppression of this type and scope; the first
    ``since`` is kept."""
    for e in st.scoped:
        if (e["type"], e["tenant"], e["list_id"]) == (kind, tenant, list_id):
            e["reason"] = reason
            return
    st.scoped.append({"type": kind, "tenant": tenant, "list_id": list_id, "reason": reason,
                      "since": since})


def suppressions(st: AddressState) -> list[dict[str, Any]]:
    """The whole suppression set of an address, the blacklisting first."""
    out: list[dict[str, Any]] = []
    if st.blacklisted:
        out.append({"type": "manual" if st.manual else "hard_bounce", "tenant": "",
                    "list_id": "", "reason": st.reason, "since": st.since})
    out.extend(copy.deepcopy(sorted(st.scoped, key=lambda e: (e["type"], e["tenant"],
                                                              e["list_id"]))))
    return out


def applies(entry: dict[str, Any], tenant: str, kind: str, list_id: str) -> bool:
    """Does this suppression stop a mail of ``tenant``, ``kind``
    (transactional or mass) and ``list_id``? Tenant: an entry's empty tenant
    is every tenant. An unsubscribe stops mass mail only (of its list, or of
    every list when its list_id is empty); any entry with a list_id stops
    only mass mail of that list; the others stop every mail."""
    if entry.get("tenant") and entry["tenant"] != tenant:
        return False
    scoped_list = str(entry.get("list_id") or "")
    if entry.get("type") == "unsubscribe" or scoped_list:
        if kind != "mass":
            return False
        return not scoped_list or scoped_list == list_id
    return True


def describe(entry: dict[str, Any]) -> str:
    """``complaint (every tenant): ...``: the type first, then the scope."""
    scope = []
    scope.append(f"tenant {entry['tenant']}" if entry.get("tenant") else "every tenant")
    if entry.get("list_id"):
        scope.append(f"list {entry['list_id']}")
    return f"{entry['type']} ({', '.join(scope)}): {entry.get('reason') or ''}".rstrip(": ")


def changed(st: AddressState, cause: Event, rules: Rules) -> BlacklistChanged:
    """The public event; its id is derived from the cause's, so a
    redelivered cause gives the same id."""
    return BlacklistChanged(
        event_id=uuid.uuid5(_NS, f"{cause.event_id}/{st.address}").hex,
        occurred_at=cause.occurred_at,
        address=st.address,
        blacklisted=st.blacklisted,
        reason=st.reason,
        since=st.since if st.blacklisted else 0.0,
        manual=st.manual,
        bounces=[_summary(b) for b in st.counted(rules)] if st.blacklisted else [],
        suppressions=suppressions(st),
    )


def fold(events: list[Event], rules: Rules,
         states: dict[str, AddressState] | None = None) -> dict[str, AddressState]:
    """Apply events in order (replay, tests): address -> state."""
    out = dict(states or {})
    for event in events:
        addr = address_of(event)
        out[addr], _ = evolve(out.get(addr), event, rules)
    return out


def comparable(st: AddressState, rules: Rules) -> dict[str, Any]:
    """What replay compares with the live table: the blacklisting and the
    bounces that count."""
    edge = st.last_at - rules.window  # st.counted(rules)'s, without its sort by time
    counted = []  # (a loop: a comprehension is a call, and a row has a few bounces)
    bounces = st.bounces
    for b in bounces:
        if b["counted"] and b["at"] > edge:
            counted.append(b["bounce_id"])
    counted.sort()
    return {
        "blacklisted": st.blacklisted,
        "manual": st.manual,
        "counted": counted,
        "bounces": len(bounces),
        "suppressions": _suppression_keys(st),
    }


def _suppression_keys(st: AddressState) -> list[tuple[str, str, str]]:
    """``[(type, tenant, list_id) for e in suppressions(st)]`` without the
    entries (and their deep copy)."""
    out = [("manual" if st.manual else "hard_bounce", "", "")] if st.blacklisted else []
    if st.scoped:
        out.extend(sorted((e["type"], e["tenant"], e["list_id"]) for e in st.scoped))
    return out


def explain(st: AddressState, rules: Rules) -> list[str]:
    """``postlane blacklist why``: the state and every bounce kept."""
    head = (f"{st.address}: blacklisted since {_when(st.since)}" if st.blacklisted
            else f"{st.address}: not blacklisted")
    lines = [head + (" (by ops)" if st.manual else "")]
    if st.reason:
        lines.append(f"  {st.reason}")
    if not st.blacklisted:
        lines.append(f"  now: {rule_met(st.counted(rules), rules)[1]}")
    if st.reset_at:
        lines.append(f"  last mail received from it: {_when(st.reset_at)}")
    sup = suppressions(st)
    lines.append(f"  suppressions: {len(sup) or 'none'}")
    for e in sup:
        lines.append(f"    {describe(e)} (since {_when(float(e.get('since') or 0))})")
    for b in st.bounces:
        mark = f"counts {float(b['weight']):g}" if b["counted"] else f"not counted: {b['why']}"
        answer = _answer(b)
        mid = f" (message {b['message_id']})" if b.get("message_id") else ""
        lines.append(f"  {_when(b['at'])}  {'hard' if b['hard'] else 'soft'} "
                     f"{b['reason']}{mid}: {answer[:120]}")
        lines.append(f"      {mark}")
    return lines
