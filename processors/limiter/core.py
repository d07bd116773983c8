"""The limiter's pure core: which held mail may go now, which must ask the
quota first, and why the rest waits.

No Faust, no I/O: the agent passes the partition's meters, the mail it holds
(in order) and the clock; replay tools and tests call the same functions.

Limits. The limiter runs once per partition of its input (keyed by
message_id), but it does not count limits itself: a mail that falls under
a daily limit or a rate (of its server, its tenant or a recipient domain)
asks the quota processor for its token (quota.py: one partition, one
writer, so a daily limit L is exactly L for any partition count) and waits,
"asking", for the answer: granted (release, at once or at the slot a rate
gave it) or refused (held until the next window, in words, or, for mass
mail, until its rate has a slot). A mail under no limit is released at once.

Order. Transactional mail goes first, in arrival order; mass mail after, in
creation order, only while the partition has fewer than ``mass_window``
mass mails asking, granted or released and not yet attempted by delivery
(so delivery's input never holds more than that much mass ahead of an
invoice). Across partitions the quota decides the asks of one batch
transactional first, then mass, each in the order they arrived; a
mass mail never books a rate slot more than ``mass_ahead`` seconds ahead,
so a transactional mail asking later gets the next slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from schemas import plain
from schemas.addresses import AddressError, split_address

from .windows import words

VerdictKind = Literal["release", "ask", "scheduled", "daily_limit", "paced", "busy"]
# holds a person sees (MailHeld); "busy" (mass window full) is not one
VISIBLE = ("scheduled", "daily_limit", "paced")


@dataclass(frozen=True)
class ServerLimits:
    daily: int = 0  # mails per window, whole server; 0: none
    rate: float = 0.0  # mails per second, whole server; 0: none
    rate_text: str = ""  # as configured, for the words


@dataclass(frozen=True)
class Limits:
    partitions: int = 1
    servers: Mapping[str, ServerLimits] = field(default_factory=dict)
    tenants: Mapping[str, int] = field(default_factory=dict)  # tenant -> daily limit
    domains: Mapping[str, tuple[float, str]] = field(default_factory=dict)  # "*": default
    timezone: str = "UTC"
    day_start: str = "00:00"
    mass_window: int = 32
    inflight_timeout: float = 300.0
    mass_ahead: float = 1.0  # seconds a mass mail may book a rate slot ahead
    ask_timeout: float = 30.0  # an ask unanswered this long is asked again (same ask_id)
    held_keep: float = 3600.0  # released / cancelled markers are deleted after this long


@dataclass
class Meters:
    """One partition's counters: mass mail asking, granted or released and
    not yet started by delivery (message_id -> since when). The limits
    themselves are counted by the quota processor (quota.py)."""

    partition: int
    inflight: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, partition: int) -> Meters:
        if not data:
            return cls(partition=partition)
        return cls(partition=int(data.get("partition", partition)),
                   inflight=dict(data.get("inflight", {})))

    def copy(self) -> Meters:
        return Meters.from_dict(self.to_dict(), self.partition)


@dataclass(frozen=True)
class Mail:
    """A routed mail the limiter holds. ``why``/``until``: its current visible
    hold ("" when none was announced); ``step``: limiter events so far;
    ``asked``: when it asked the quota for its token (0: not asking);
    ``slot``: the time its granted token allows it to go (0: no token);
    ``token``: the ask id its token was granted for ("" : none yet)."""

    message_id: str
    lane: str
    seq: int
    decision: dict[str, Any]
    received_at: float
    why: str = ""
    until: float = 0.0
    step: int = 0
    asked: float = 0.0
    slot: float = 0.0
    token: str = ""

    @property
    def server(self) -> str:
        return str(self.decision.get("server", ""))

    @property
    def request(self) -> dict[str, Any]:
        req = self.decision.get("request")
        return req if isinstance(req, dict) else {}

    @property
    def tenant(self) -> str:
        return str(self.request.get("tenant", ""))

    @property
    def send_at(self) -> float:
        value = self.request.get("send_at", 0.0)
        return float(value) if isinstance(value, int | float) else 0.0

    @property
    def ask_id(self) -> str:
        """The id of this mail's ask for a token: the same until a visible
        hold changes its step, so an ask repeated after a crash or a timeout
        is the same ask (counted once)."""
        return f"{self.message_id}:{self.step}"

    def domains(self) -> list[str]:
        return recipient_domains(self.request)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mail:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def recipient_domains(request: Mapping[str, Any]) -> list[str]:
    """The recipient domains of a SendRequested (as data), lower-cased, once each."""
    out: list[str] = []
    for fname in ("to", "cc", "bcc"):
        values = request.get(fname)
        for value in values if isinstance(values, list) else []:
            try:
                domain = split_address(str(value))[1].rpartition("@")[2].lower()
            except AddressError:
                continue
            if domain and domain not in out:
                out.append(domain)
    return out


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    until: float = 0.0
    reason: str = ""


@dataclass
class Pass:
    """What one scheduling pass decided."""

    meters: Meters
    released: list[Mail] = field(default_factory=list)
    asks: list[Mail] = field(default_factory=list)  # ask the quota (marked asking)
    holds: list[tuple[Mail, Verdict]] = field(default_factory=list)  # announce and record


# --- meters ------------------------------------------------------------------------------


def roll(meters: Meters, now: float, limits: Limits) -> Meters:
    """Mass mail in the window too long ago stops counting against it (its
    answer or its attempt was lost or skipped)."""
    out = meters.copy()
    cutoff = now - limits.inflight_timeout
    out.inflight = {k: v for k, v in out.inflight.items() if v > cutoff}
    return out


def attempted(meters: Meters, message_id: str) -> Meters:
    """Delivery started a mail (or the quota refused it): it no longer
    counts against the mass window."""
    if message_id not in meters.inflight:
        return meters
    out = meters.copy()
    del out.inflight[message_id]
    return out


def limited(server: str, tenant: str, domains: Iterable[str], limits: Limits) -> bool:
    """Does a daily limit or a rate apply to a transaction through
    ``server`` for ``tenant`` to ``domains`` (it must ask the quota for a
    token; else it needs none, and no ask is made)?"""
    s = limits.servers.get(server)
    if s and (s.daily > 0 or s.rate > 0):
        return True
    if tenant and limits.tenants.get(tenant, 0) > 0:
        return True
    default = limits.domains.get("*")
    return any((limits.domains.get(d) or default or (0.0, ""))[0] > 0 for d in domains)


def mail_limited(mail: Mail, limits: Limits) -> bool:
    """``limited`` for a mail; its recipient domains are parsed only when a
    domain rate is configured (the parse is most of the cost)."""
    if limited(mail.server, mail.tenant, (), limits):
        return True
    return bool(limits.domains) and limited("", "", mail.domains(), limits)


def due(mail: Mail, now: float, limits: Limits) -> bool:
    """Is a held mail to be looked at now? Granted: once its slot came.
    Asking: not until the ask timed out. Else once its hold ran out."""
    if mail.slot:
        return mail.slot <= now
    if mail.asked and mail.asked > now - limits.ask_timeout:
        return False
    return mail.until <= now or not mail.why


def check(meters: Meters, mail: Mail, now: float, limits: Limits) -> Verdict:
    """May ``mail`` go now, or must it ask the quota? ``meters`` rolled to ``now``."""
    if mail.slot:
        return Verdict("release") if mail.slot <= now else Verdict("paced", mail.slot)
    if mail.send_at > now:
        return Verdict("scheduled", mail.send_at,
                       f"scheduled for {words(mail.send_at, limits.timezone)}")
    if (mail.lane == "mass" and mail.message_id not in meters.inflight
            and len(meters.inflight) >= limits.mass_window):
        return Verdict("busy", reason="the mass window is full")
    if mail_limited(mail, limits):
        return Verdict("ask")
    return Verdict("release")


def _in_window(meters: Meters, mail: Mail, now: float) -> None:
    """A mass mail takes its place in the mass window (in place, on a pass's copy)."""
    if mail.lane == "mass":
        meters.inflight.setdefault(mail.message_id, now)


# --- a scheduling pass -------------------------------------------------------------------


def _announce(mail: Mail, verdict: Verdict) -> bool:
    """Is this hold news to a person (a MailHeld worth sending)?"""
    if verdict.kind not in VISIBLE:
        return False
    if verdict.kind == "paced":  # mass pacing is the normal pace: no event per mail
        return mail.lane == "transactional" and mail.why != "paced"
    return mail.why != verdict.kind or abs(mail.until - verdict.until) > 1.0


def schedule(meters: Meters, transactional: Iterable[Mail], mass: Iterable[Mail], now: float,
             limits: Limits) -> Pass:
    """One pass over a partition's due mail (see ``due``): transactional
    first (arrival order), then mass (creation order). Pure."""
    p = Pass(meters=roll(meters, now, limits))
    for mail in sorted(transactional, key=lambda m: m.seq):
        v = check(p.meters, mail, now, limits)
        if v.kind == "release":
            p.released.append(mail)
        elif v.kind == "ask":
            p.asks.append(mail)
        elif _announce(mail, v):
            p.holds.append((mail, v))
    for mail in sorted(mass, key=lambda m: m.seq):
        v = check(p.meters, mail, now, limits)
        if v.kind == "busy":
            break  # woken again when delivery attempts a released one
        if v.kind in ("release", "ask"):
            _in_window(p.meters, mail, now)
            (p.released if v.kind == "release" else p.asks).append(mail)
            continue
        if v.kind == "scheduled":  # leaves the intake queue for the held table
            if _announce(mail, v):
                p.holds.append((mail, v))
            else:
                p.holds.append((mail, replace(v, reason="")))  # recorded, not announced
    return p


@dataclass(frozen=True)
class Answered:
    """What a quota answer does to the mail that asked: its new state, and
    whether it goes now (``release``) or waits (``hold``: to record, and
    announce when it has a reason)."""

    meters: Meters
    mail: Mail
    release: bool = False
    hold: Verdict | None = None


def answered(meters: Meters, mail: Mail, granted: bool, now: float, *, at: float = 0.0,
             why: str = "", until: float = 0.0, reason: str = "") -> Answered:
    """The quota answered ``mail``'s ask (the agent checked that the answer
    is for its current ask_id). Granted: it goes at ``at`` (now, or the
    slot a rate gave it: held "paced" until then). Refused: held ``why``
    until ``until``; a mass mail leaves the mass window."""
    if granted:
        new = replace(mail, asked=0.0, slot=max(at, 1e-9), token=mail.ask_id)
        if at <= now:
            return Answered(meters, new, release=True)
        v = Verdict("paced", at, reason)
        if not _announce(mail, v):
            v = replace(v, reason="")
        return Answered(meters, new, hold=v)
    new = replace(mail, asked=0.0)
    v = Verdict(why if why in VISIBLE else "paced", until, reason)  # type: ignore[arg-type]
    if not _announce(mail, v):
        v = replace(v, reason="")
    return Answered(attempted(meters, mail.message_id), new, hold=v)


def force(meters: Meters, mail: Mail, now: float, limits: Limits) -> Meters:
    """An operator's send-now: released whatever the limits say (the agent
    asks the quota to count it, ``force``), in the mass window while sent."""
    out = roll(meters, now, limits)
    _in_window(out, mail, now)
    return out
