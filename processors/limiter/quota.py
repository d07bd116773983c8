"""The quota processor's pure core: one accounting of every limited SMTP transaction.

Why one. Mail is spread over the partitions by message_id, but a limit is
not: a server's daily limit L holds for the server, whatever partition a
mail landed on. So the limiter partitions (and delivery, before a retry, a
failover or an operator's retry) do not count; they ask (``QuotaAsked`` on
the one-partition ``quota`` topic) and this core, run by the one worker
that owns that partition, counts each transaction against every limit it
falls under and answers (``QuotaGranted`` / ``QuotaRefused``, keyed by
message_id, back to the asker's partition). One writer, one order: L is
exactly L for any ``POSTLANE_PARTITIONS`` and any number of limiter workers.

What is counted, per transaction (all or nothing, in one step):

- daily limits of the server and of the tenant: a count per window; at the
  limit the ask is refused until the next window, in words;
- rates of the server and of each recipient domain (``*`` for domains not
  listed), as a virtual schedule (GCRA: a theoretical arrival time per
  scope, a burst of one second's worth, at least 1): a transaction is given
  the earliest slot every one of its rates allows, possibly in the future
  (``QuotaGranted.at``; the limiter holds the mail until then, "paced").
  A mass mail is refused instead when its slot is more than ``mass_ahead``
  seconds away (it asks again then), so mass never books far ahead and a
  transactional mail asking later gets the next slot;
- ``force`` (an operator's send-now): counted, never refused;
- order: within one batch of asks (from every partition and worker),
  transactional asks are decided before mass asks (``ordered``), so the
  last tokens of a daily limit go to waiting transactional mail first;
- ``give_back`` (the mail of a granted ask was cancelled): the grant stops
  counting against the daily limits, and its rate slots are freed: each of
  its rate schedules goes back to the latest grant still counted on it
  (``_free_slots``). When it was the last one booked on a scope, that is as
  if it had never been granted; when later grants were booked after it,
  the schedule is unchanged (they keep their slots, so a rate is never
  exceeded by a give-back). Recorded as a row of its own (``returns``),
  kept as long as the grant it returns; ``restore`` does the same.

A limiter's transactional ask carries its mail (``mail``, JSON text the
quota does not parse) and the answer carries it back: the limiter writes
no row for a mail while it asks.

The record of a grant is the fact. The grants of one batch of asks are one
row of the quota table (``record``: batch key -> its grants; one changelog
record per batch, not per mail) written, and acknowledged by the broker,
before the answers are published; the counts and schedules are
rebuilt from those rows (``restore``) after a restart or a move of the
partition. The same ask again (the asker crashed, or its answer was lost)
finds its row and gets the same answer, uncounted. A refusal changes
nothing and is not recorded: asked again, it is decided again.

Pure: no Faust, no I/O. ``decide`` updates the ``Quota`` it is given (the
processor's own state; tests and replay build theirs with ``restore``).
Asks and answers are plain values here (``Ask``, ``Answer``): the agent
reads them from QuotasAsked / QuotaAsked and writes them as QuotasAnswered
items / QuotaGranted / QuotaRefused (a Faust record per mail cost more CPU
than the counting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import QuotaAsked

from .core import Limits, limited

__all__ = ["Answer", "Ask", "Quota", "decide", "give_back", "limited", "ordered", "prunable",
           "record", "restore"]
from .windows import next_window, window_start, words

# a row kept after its window and its rates no longer count: an ask repeated
# within this long (a crashed asker asking again) still finds its answer
DEDUPE_SECONDS = 600.0


@dataclass
class Quota:
    """The counts of the current window (``window`` .. ``next``) per daily
    scope (``server:<name>``, ``tenant:<name>``), the theoretical arrival
    time per rate scope (``server:<name>``, ``domain:<domain>``) and every
    grant row still kept (ask_id -> row)."""

    window: float = 0.0
    next: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    tats: dict[str, float] = field(default_factory=dict)
    grants: dict[str, dict[str, Any]] = field(default_factory=dict)
    batches: dict[str, set[str]] = field(default_factory=dict)  # table key -> its ask_ids
    returned: set[str] = field(default_factory=set)  # grants given back (not counted)


@dataclass(frozen=True, slots=True)
class Ask:
    """One transaction's ask (the fields of a QuotaAsked)."""

    ask_id: str
    message_id: str
    server: str
    by: str = "limiter"
    lane: str = "transactional"
    tenant: str = ""
    domains: tuple[str, ...] = ()
    force: bool = False
    attempt: int = 0
    partition: int = -1  # the asker's partition (-1: not said)
    mail: str | None = None  # the limiter's mail (JSON text), carried back in the answer
    give_back: bool = False

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Ask:
        """From a QuotaAsked as data (an item of a QuotasAsked, already
        checked to have the required string fields)."""
        return cls(ask_id=data["ask_id"], message_id=data["message_id"],
                   server=data["server"], by=data.get("by", "limiter"),
                   lane=data.get("lane", "transactional"), tenant=data.get("tenant", ""),
                   domains=tuple(data.get("domains", ())), force=bool(data.get("force")),
                   attempt=int(data.get("attempt", 0)), partition=int(data.get("partition", -1)),
                   mail=_text(data.get("mail")), give_back=bool(data.get("give_back")))

    @classmethod
    def of_event(cls, event: QuotaAsked) -> Ask:
        return cls.of(event.to_representation())


@dataclass(frozen=True, slots=True)
class Answer:
    """A QuotaGranted (``granted``: ``at``, ``reason``) or a QuotaRefused
    (``why``, ``until``, ``reason``), as a plain value."""

    granted: bool
    ask_id: str
    message_id: str
    by: str = "limiter"
    attempt: int = 0
    at: float = 0.0
    why: str = ""
    until: float = 0.0
    reason: str = ""
    mail: str | None = None  # the ask's mail (JSON text), carried back

    def to_data(self) -> dict[str, Any]:
        """The QuotaGranted / QuotaRefused fields (with ``type``)."""
        out: dict[str, Any] = {"type": "QuotaGranted" if self.granted else "QuotaRefused",
                               "ask_id": self.ask_id, "message_id": self.message_id,
                               "by": self.by, "attempt": self.attempt, "reason": self.reason}
        if self.granted:
            out["at"] = self.at
        else:
            out.update(why=self.why, until=self.until)
        if self.mail is not None:
            out["mail"] = self.mail
        return out

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Answer:
        granted = data.get("type") == "QuotaGranted"
        return cls(granted=granted, ask_id=str(data["ask_id"]),
                   message_id=str(data["message_id"]), by=str(data.get("by", "limiter")),
                   attempt=int(data.get("attempt", 0)), at=float(data.get("at", 0.0)),
                   why=str(data.get("why", "")), until=float(data.get("until", 0.0)),
                   reason=str(data.get("reason", "")),
                   mail=_text(data.get("mail")))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _roll(q: Quota, now: float, limits: Limits) -> None:
    if q.window <= now < q.next:
        return
    q.window = window_start(now, limits.timezone, limits.day_start)
    q.next = next_window(now, limits.timezone, limits.day_start)
    q.counts = {}
    for ask_id, row in q.grants.items():
        if row.get("window") == q.window and ask_id not in q.returned and "returns" not in row:
            for scope in row.get("daily", []):
                q.counts[scope] = q.counts.get(scope, 0) + 1


def record(q: Quota, key: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The table value (under ``key``) of one batch's grant rows."""
    for row in rows:
        row["batch"] = key
    q.batches[key] = {str(row["ask_id"]) for row in rows}
    return {"grants": rows}


def restore(values: Iterable[Mapping[str, Any]], now: float, limits: Limits) -> Quota:
    """The state the quota table's rows give: what a new owner of the partition starts from."""
    q = Quota()
    for value in values:
        rows = value.get("grants", []) if isinstance(value, Mapping) else []
        for row in rows:
            if not isinstance(row, Mapping) or not row.get("ask_id"):
                continue
            q.grants[str(row["ask_id"])] = dict(row)
            q.batches.setdefault(str(row.get("batch", "")), set()).add(str(row["ask_id"]))
            if row.get("returns"):
                q.returned.add(str(row["returns"]))
    for ask_id, row in q.grants.items():  # a given-back grant holds no slot (give_back)
        if ask_id not in q.returned:
            for scope, tat in dict(row.get("tats", {})).items():
                q.tats[scope] = max(q.tats.get(scope, 0.0), float(tat))
    _roll(q, now, limits)
    return q


def dailies(ask: Ask, limits: Limits) -> list[tuple[str, int, str]]:
    """(scope, limit, who) for each daily limit the transaction falls under."""
    out: list[tuple[str, int, str]] = []
    server = limits.servers.get(ask.server)
    if server and server.daily > 0:
        out.append((f"server:{ask.server}", server.daily, f"server {ask.server}"))
    tenant = limits.tenants.get(ask.tenant, 0) if ask.tenant else 0
    if tenant > 0:
        out.append((f"tenant:{ask.tenant}", tenant, f"tenant {ask.tenant}"))
    return out


def rates(ask: Ask, limits: Limits) -> list[tuple[str, float, str]]:
    """(scope, mails per second, who) for each rate the transaction falls under."""
    out: list[tuple[str, float, str]] = []
    server = limits.servers.get(ask.server)
    if server and server.rate > 0:
        out.append((f"server:{ask.server}", server.rate,
                    f"server {ask.server} sends at most {server.rate_text}"))
    for domain in ask.domains:
        rate, text = limits.domains.get(domain) or limits.domains.get("*") or (0.0, "")
        if rate > 0:
            out.append((f"domain:{domain}", rate, f"mail to {domain} goes at most {text}"))
    return out


def _earliest(q: Quota, scope: str, rate: float, now: float) -> float:
    """The earliest time this scope's schedule admits one more transaction."""
    tat = q.tats.get(scope, 0.0)
    tolerance = (max(1.0, rate) - 1.0) / rate  # a burst of one second's worth
    return max(now, tat - tolerance)


def _granted(ask: Ask, row: Mapping[str, Any]) -> Answer:
    return Answer(True, ask.ask_id, ask.message_id, ask.by, ask.attempt,
                  at=float(row.get("slot", 0.0)), reason=str(row.get("reason", "")),
                  mail=ask.mail)


def give_back(q: Quota, ask: Ask, now: float, limits: Limits) -> dict[str, Any] | None:
    """The grant of ``ask.ask_id`` is given back (its mail was cancelled):
    it no longer counts against the daily limits of its window. Returns
    the row to store (None: no such grant, or given back already)."""
    _roll(q, now, limits)
    grant = q.grants.get(ask.ask_id)
    if grant is None or ask.ask_id in q.returned or "returns" in grant:
        return None
    q.returned.add(ask.ask_id)
    if grant.get("window") == q.window:
        for scope in grant.get("daily", []):
            q.counts[scope] = max(0, q.counts.get(scope, 0) - 1)
    _free_slots(q, grant)
    row: dict[str, Any] = {
        "ask_id": f"{ask.ask_id}:returned", "returns": ask.ask_id,
        "message_id": ask.message_id, "by": ask.by, "at": now,
        "window": grant.get("window"), "daily": list(grant.get("daily", [])), "tats": {}}
    q.grants[str(row["ask_id"])] = row
    return row


def _free_slots(q: Quota, grant: Mapping[str, Any]) -> None:
    """A given-back grant (already in ``q.returned``) stops holding its rate
    slots: each schedule it was booked on goes back to the latest grant still
    counted on that scope (0: none). So the last grant booked on a scope is
    undone (the next ask may take its slot), one with later grants after it
    changes nothing (they keep their slots); ``restore`` gives the same."""
    for scope, tat in dict(grant.get("tats", {})).items():
        if q.tats.get(scope, 0.0) > float(tat):
            continue  # a later grant, still counted, holds the schedule
        q.tats[scope] = max(
            (float(row["tats"][scope]) for ask_id, row in q.grants.items()
             if ask_id not in q.returned and scope in row.get("tats", {})), default=0.0)


def ordered(asks: Iterable[Ask]) -> list[Ask]:
    """The order the quota decides one batch of asks in, whatever partition
    or worker they came from: tokens given back first (they free a count),
    then transactional asks, then mass asks, each in arrival order. So when
    the last tokens of a daily limit are asked for in one batch, a waiting
    transactional mail gets one before mass mail does."""
    give = [a for a in asks if a.give_back]
    trans = [a for a in asks if not a.give_back and a.lane != "mass"]
    mass = [a for a in asks if not a.give_back and a.lane == "mass"]
    return give + trans + mass


def decide(q: Quota, ask: Ask, now: float, limits: Limits,
           ) -> tuple[Answer, dict[str, Any] | None]:
    """Count ``ask`` (updating ``q``) or refuse it. Returns the answer and
    the grant row to store (None: nothing new to store, the answer is a
    refusal or the repeat of a stored grant)."""
    _roll(q, now, limits)
    known = q.grants.get(ask.ask_id)
    if known is not None:
        return _granted(ask, known), None
    daily = dailies(ask, limits)
    if not ask.force:
        for scope, limit, who in daily:
            if q.counts.get(scope, 0) >= limit:
                return Answer(
                    False, ask.ask_id, ask.message_id, ask.by, ask.attempt,
                    why="daily_limit", until=q.next,
                    reason=f"deferred: {who} reached its daily limit of {limit}; "
                           f"next window {words(q.next, limits.timezone)}",
                    mail=ask.mail), None
    paced = rates(ask, limits)
    earliest = {scope: _earliest(q, scope, rate, now) for scope, rate, _ in paced}
    slot = now if ask.force else max(earliest.values(), default=now)
    waits = [who for scope, _, who in paced if earliest[scope] > now]
    reason = "paced: " + "; ".join(waits) if waits and slot > now else ""
    if ask.lane == "mass" and slot > now + limits.mass_ahead:
        return Answer(False, ask.ask_id, ask.message_id, ask.by, ask.attempt, why="paced",
                      until=slot - limits.mass_ahead, reason=reason, mail=ask.mail), None
    tats: dict[str, float] = {}
    for scope, rate, _ in paced:
        tats[scope] = q.tats[scope] = max(q.tats.get(scope, 0.0), slot) + 1.0 / rate
    for scope, _, _ in daily:
        q.counts[scope] = q.counts.get(scope, 0) + 1
    row = {"ask_id": ask.ask_id, "message_id": ask.message_id, "by": ask.by, "at": now,
           "slot": slot, "window": q.window, "daily": [s for s, _, _ in daily], "tats": tats,
           "reason": reason, "force": ask.force}
    q.grants[ask.ask_id] = row
    return _granted(ask, row), row


def prunable(q: Quota, now: float, keep: float = DEDUPE_SECONDS) -> list[str]:
    """Drop from ``q`` the grants that no longer count (not of the current
    window's daily counts, their rate slots in the past, older than
    ``keep``) and the rate schedules that ran out (the same as none); the
    table keys whose every grant is dropped are returned (to delete)."""
    out = []
    for ask_id, row in q.grants.items():
        if row.get("daily") and row.get("window") == q.window:
            continue
        if float(row.get("at", 0.0)) > now - keep:
            continue
        if max(dict(row.get("tats", {})).values(), default=0.0) > now:
            continue
        out.append(ask_id)
    keys = []
    for ask_id in out:
        q.returned.discard(ask_id)
        key = str(q.grants.pop(ask_id).get("batch", ""))
        left = q.batches.get(key)
        if left is not None:
            left.discard(ask_id)
            if not left:
                del q.batches[key]
                keys.append(key)
    q.tats = {k: v for k, v in q.tats.items() if v > now}
    return keys
