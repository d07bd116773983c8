"""The limiter's pure core: which held mail may go now, and why the rest waits.

No Faust, no I/O: the agent passes the partition's meters, the mail it holds
(in order) and the clock; replay tools and tests call the same functions.

Shares. The limiter runs once per partition of its input (keyed by
message_id), and each partition meters on its own: a server's or tenant's
daily limit L is split over the N partitions (``L // N``, the remainder to
the lowest partitions; together exactly L), and a rate R gives each
partition R / N. No partition ever asks another, so a busy server's quota
scales with the partition count; the price is that one partition may defer
mail while another still has share left (with N = 4 and L = 200, each has
50). Choose N small when limits are small; see the README.

Order. Transactional mail goes first, in arrival order; mass mail after, in
creation order, only while the partition has fewer than ``mass_window``
mass mails released and not yet attempted by delivery (so delivery's input
never holds more than that much mass ahead of an invoice), and never with a
rate bucket a waiting transactional mail needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from schemas import plain
from schemas.addresses import AddressError, split_address

from .windows import next_window, window_start, words

VerdictKind = Literal["release", "scheduled", "daily_limit", "paced", "busy"]
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


def daily_share(limit: int, partitions: int, partition: int, day: int = 0) -> int:
    """Partition ``partition``'s share of a daily ``limit`` on window ``day``
    (the shares add up to the limit). The remainder goes to different
    partitions each day, so with a limit below the partition count no
    partition has a share of 0 for ever."""
    base, extra = divmod(limit, partitions)
    return base + (1 if (partition - day) % partitions < extra else 0)


@dataclass
class Meters:
    """One partition's counters: mails released in the current window per
    ``server:<name>`` / ``tenant:<name>``, rate buckets per ``server:<name>``
    / ``domain:<domain>`` (``[tokens, at]``; a bucket that has refilled is
    dropped), and mass mail released and not yet started by delivery
    (message_id -> released at)."""

    partition: int
    window: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    buckets: dict[str, list[float]] = field(default_factory=dict)
    inflight: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, partition: int) -> Meters:
        if not data:
            return cls(partition=partition)
        return cls(
            partition=int(data.get("partition", partition)),
            window=float(data.get("window", 0.0)),
            counts=dict(data.get("counts", {})),
            buckets={k: list(v) for k, v in dict(data.get("buckets", {})).items()},
            inflight=dict(data.get("inflight", {})),
        )

    def copy(self) -> Meters:
        return Meters.from_dict(self.to_dict(), self.partition)


@dataclass(frozen=True)
class Mail:
    """A routed mail the limiter holds. ``why``/``until``: its current visible
    hold ("" when none was announced); ``step``: limiter events so far."""

    message_id: str
    lane: str
    seq: int
    decision: dict[str, Any]
    received_at: float
    why: str = ""
    until: float = 0.0
    step: int = 0

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

    def domains(self) -> list[str]:
        out: list[str] = []
        for fname in ("to", "cc", "bcc"):
            values = self.request.get(fname)
            for value in values if isinstance(values, list) else []:
                try:
                    domain = split_address(str(value))[1].rpartition("@")[2].lower()
                except AddressError:
                    continue
                if domain and domain not in out:
                    out.append(domain)
        return out

    def to_dict(self) -> dict[str, Any]:
        return plain(self)  # a deep copy, as plain JSON values

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Mail:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    until: float = 0.0
    reason: str = ""
    scopes: tuple[str, ...] = ()  # the rate buckets a paced mail needs (reserved for it)


@dataclass
class Pass:
    """What one scheduling pass decided."""

    meters: Meters
    released: list[Mail] = field(default_factory=list)
    holds: list[tuple[Mail, Verdict]] = field(default_factory=list)  # announce and record


# --- meters ------------------------------------------------------------------------------


def roll(meters: Meters, now: float, limits: Limits) -> Meters:
    """A new window resets the counts; mass mail released too long ago stops
    counting against the mass window (its attempt was lost or skipped)."""
    out = meters.copy()
    opened = window_start(now, limits.timezone, limits.day_start)
    if out.window != opened:
        out.window, out.counts = opened, {}
    cutoff = now - limits.inflight_timeout
    out.inflight = {k: v for k, v in out.inflight.items() if v > cutoff}
    # a bucket that has refilled is the same as no bucket: drop it, so one
    # per recipient domain ever seen does not pile up in the meters row
    kept: dict[str, list[float]] = {}
    for scope, bucket in out.buckets.items():
        rate = _scope_rate(scope, limits)
        if rate > 0 and _bucket(out, scope, rate, now) < max(1.0, rate):
            kept[scope] = bucket
    out.buckets = kept
    return out


def _scope_rate(scope: str, limits: Limits) -> float:
    """The per-partition rate of a bucket's scope now (0: no longer paced)."""
    kind, _, name = scope.partition(":")
    if kind == "server":
        server = limits.servers.get(name)
        return server.rate / limits.partitions if server else 0.0
    rate, _ = limits.domains.get(name) or limits.domains.get("*") or (0.0, "")
    return rate / limits.partitions


def attempted(meters: Meters, message_id: str) -> Meters:
    """Delivery started a mail: it no longer counts against the mass window."""
    if message_id not in meters.inflight:
        return meters
    out = meters.copy()
    del out.inflight[message_id]
    return out


def _bucket(meters: Meters, scope: str, rate: float, now: float) -> float:
    """Tokens in ``scope``'s bucket now (capacity: one second's worth, >= 1)."""
    cap = max(1.0, rate)
    tokens, at = meters.buckets.get(scope, [cap, now])
    return min(cap, tokens + max(0.0, now - at) * rate)


def _rates(mail: Mail, limits: Limits) -> list[tuple[str, float, str, str]]:
    """(scope, per-partition rate, configured text, who) for each bucket."""
    out: list[tuple[str, float, str, str]] = []
    server = limits.servers.get(mail.server)
    if server and server.rate > 0:
        out.append((f"server:{mail.server}", server.rate / limits.partitions, server.rate_text,
                    f"server {mail.server} sends at most {server.rate_text}"))
    for domain in mail.domains():
        rate, text = limits.domains.get(domain) or limits.domains.get("*") or (0.0, "")
        if rate > 0:
            out.append((f"domain:{domain}", rate / limits.partitions, text,
                        f"mail to {domain} goes at most {text}"))
    return out


def _dailies(mail: Mail, limits: Limits) -> list[tuple[str, int, str]]:
    """(scope, whole limit, who) for each daily limit that applies."""
    out: list[tuple[str, int, str]] = []
    server = limits.servers.get(mail.server)
    if server and server.daily > 0:
        out.append((f"server:{mail.server}", server.daily, f"server {mail.server}"))
    tenant_limit = limits.tenants.get(mail.tenant, 0) if mail.tenant else 0
    if tenant_limit > 0:
        out.append((f"tenant:{mail.tenant}", tenant_limit, f"tenant {mail.tenant}"))
    return out


def check(meters: Meters, mail: Mail, now: float, limits: Limits,
          reserved: Iterable[str] = ()) -> Verdict:
    """May ``mail`` go now? ``meters`` must be rolled to ``now``."""
    if mail.send_at > now:
        return Verdict("scheduled", mail.send_at,
                       f"scheduled for {words(mail.send_at, limits.timezone)}")
    if mail.lane == "mass" and len(meters.inflight) >= limits.mass_window:
        return Verdict("busy", reason="the mass window is full")
    for scope, limit, who in _dailies(mail, limits):
        day = int(meters.window // 86400)
        share = daily_share(limit, limits.partitions, meters.partition, day)
        if meters.counts.get(scope, 0) >= share:
            until = next_window(now, limits.timezone, limits.day_start)
            if limits.partitions > 1:
                reached = (f"this partition used its share ({share}) of {who}'s daily limit "
                           f"of {limit}")
            else:
                reached = f"{who} reached its daily limit of {limit}"
            return Verdict("daily_limit", until,
                           f"deferred: {reached}; next window {words(until, limits.timezone)}")
    blocked = set(reserved)
    waits: list[tuple[float, str, str]] = []
    rates = _rates(mail, limits)
    for scope, rate, _, who in rates:
        tokens = _bucket(meters, scope, rate, now)
        if tokens < 1.0 or scope in blocked:
            wait = max(0.0, (1.0 - tokens) / rate) if tokens < 1.0 else 1.0 / rate
            waits.append((now + wait, scope, who))
    if waits:
        until = max(w[0] for w in waits)
        # every bucket it needs is reserved for it (mass must not take them meanwhile)
        return Verdict("paced", until, "paced: " + "; ".join(w[2] for w in waits),
                       scopes=tuple(r[0] for r in rates))
    return Verdict("release")


def take(meters: Meters, mail: Mail, now: float, limits: Limits) -> Meters:
    """Count ``mail`` as released now: daily counts, rate tokens, mass window."""
    out = meters.copy()
    _take(out, mail, now, limits)
    return out


def _take(meters: Meters, mail: Mail, now: float, limits: Limits) -> None:
    """``take`` in place, on a pass's own copy (no copy per mail)."""
    for scope, _, _ in _dailies(mail, limits):
        meters.counts[scope] = meters.counts.get(scope, 0) + 1
    for scope, rate, _, _ in _rates(mail, limits):
        meters.buckets[scope] = [_bucket(meters, scope, rate, now) - 1.0, now]
    if mail.lane == "mass":
        meters.inflight[mail.message_id] = now


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
    """One pass over a partition's held mail: transactional first (arrival
    order), then mass (creation order). Pure."""
    p = Pass(meters=roll(meters, now, limits))
    reserved: set[str] = set()
    for mail in sorted(transactional, key=lambda m: m.seq):
        v = check(p.meters, mail, now, limits)
        if v.kind == "release":
            _take(p.meters, mail, now, limits)
            p.released.append(mail)
            continue
        if v.kind == "paced":
            reserved.update(v.scopes)
        if _announce(mail, v):
            p.holds.append((mail, v))
    for mail in sorted(mass, key=lambda m: m.seq):
        v = check(p.meters, mail, now, limits, reserved)
        if v.kind == "busy":
            break  # woken again when delivery attempts a released one
        if v.kind == "release":
            _take(p.meters, mail, now, limits)
            p.released.append(mail)
            continue
        if v.kind in ("scheduled", "daily_limit"):  # leaves the intake queue for the held table
            if _announce(mail, v):
                p.holds.append((mail, v))
            else:
                p.holds.append((mail, replace(v, reason="")))  # recorded, not announced
    return p


def force(meters: Meters, mail: Mail, now: float, limits: Limits) -> Meters:
    """An operator's send-now: released whatever the limits say, and counted."""
    return take(roll(meters, now, limits), mail, now, limits)
