"""The console's view of the log, and the page models: pure, no I/O.

``ConsoleState`` is folded from the topics the CLI reads (status,
send-requested and its mass lane, routing-decided and its mass lane,
config, dead-letter, blacklist, bounces) by ``fold``: one record at a time,
in each partition's order, so a mail's row is what ``postlane status``
would fold. The page functions (``overview``, ``queue``, ``message``,
``limits``, ...) turn it into the dicts the templates render; handlers do
nothing else with it.

Counts the overview needs (mails by state, per-minute outcomes, sent per
server and tenant today) are kept up to date as records are folded, so no
page scans the 100,000 rows for them.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.config.view import ConfigView, evolve
from processors.limiter.windows import next_window, window_start
from schemas import CONFIG_EVENTS, InvalidEvent, decode_any

STATES = ("queued", "sending", "deferred", "sent", "failed", "bounced", "rejected",
          "suppressed", "cancelled")
PER_MINUTE = ("sent", "deferred", "failed")
DEAD_LETTERS_KEPT = 1000
PAGE_SIZE = 100
TIMELINE_SLACK = 100_000  # superseded timeline places kept before they are dropped


@dataclass
class MailRow:
    message_id: str
    state: str = "queued"
    reason: str = ""
    server: str = ""
    attempt: int = 0
    recipients: dict[str, Any] = field(default_factory=dict)
    acknowledged: bool = False
    updated_at: float = 0.0
    requested_at: float = 0.0
    subject: str = ""
    from_: str = ""
    to: list[str] = field(default_factory=list)
    tenant: str = ""
    kind: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    rule: str = ""
    header_from: str = ""
    envelope_from: str = ""
    search: str = ""  # every recipient, lower case, for the queue's recipient filter
    seq: int = -1  # its place in ConsoleState.timeline (its last change)
    # each status change folded, with its event id (a redelivered one counts once)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ConsoleState:
    mails: dict[str, MailRow] = field(default_factory=dict)
    by_state: Counter[str] = field(default_factory=Counter)
    # state -> the ids of the mails in it (an ordered set): a queue page of
    # one state looks only at those
    ids_by_state: dict[str, dict[str, None]] = field(default_factory=dict)
    # message ids in the order their changes were folded (a mail is current
    # only at its row's ``seq``): the unfiltered queue, newest first, without a sort
    timeline: list[str] = field(default_factory=list)
    # lower-cased address -> the mails sent to it (add-only: a candidate is
    # still checked), so a queue page for one full address reads only those
    by_recipient: dict[str, set[str]] = field(default_factory=dict)
    per_minute: dict[int, Counter[str]] = field(default_factory=dict)
    # mails sent in the limiter's current daily window, per (server, tenant)
    sent_today: Counter[tuple[str, str]] = field(default_factory=Counter)
    timezone: str = "UTC"  # the limiter's window: POSTLANE_LIMIT_TIMEZONE ...
    day_start: str = "00:00"  # ... and POSTLANE_LIMIT_DAY_START
    window: tuple[float, float] = (0.0, 0.0)  # [opened, next) of the window counted
    config: ConfigView = field(default_factory=ConfigView)
    dead_letters: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=DEAD_LETTERS_KEPT))
    dead_letter_count: Counter[str] = field(default_factory=Counter)
    blacklist: dict[str, Any] = field(default_factory=dict)  # address -> BlacklistChanged dict
    bounces: Counter[str] = field(default_factory=Counter)  # reason -> count
    complaints: Counter[str] = field(default_factory=Counter)  # feedback type -> count
    incoming_status: dict[str, dict[str, Any]] = field(default_factory=dict)  # the fetcher's
    records: int = 0


def _row(state: ConsoleState, mid: str) -> MailRow:
    row = state.mails.get(mid)
    if row is None:
        row = state.mails[mid] = MailRow(message_id=mid)
        state.by_state["queued"] += 1
        state.ids_by_state.setdefault("queued", {})[mid] = None
        _touch(state, row)
    return row


def _window(state: ConsoleState, ts: float) -> tuple[float, float]:
    """The limiter's daily window holding ``ts`` (``processors.limiter.windows``)."""
    opened, nxt = state.window
    if opened <= ts < nxt:
        return state.window
    opened = window_start(ts, state.timezone, state.day_start)
    return opened, next_window(ts, state.timezone, state.day_start)


def fold(state: ConsoleState, topic: str, value: bytes | None, now: float) -> None:
    """Fold one record of ``topic`` (its name without the prefix)."""
    if value is None:
        return
    state.records += 1
    if topic == "config":
        try:
            state.config = evolve(state.config, decode_any(CONFIG_EVENTS, value))
        except InvalidEvent:
            pass
        return
    try:
        ev = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if not isinstance(ev, dict):
        return
    kind = ev.get("type") or ("SendRequested" if topic.startswith("send-requested") else "")
    if topic == "status" and kind == "MessageStatusChanged":
        _fold_status(state, ev, now)
    elif topic.startswith("send-requested") and kind == "SendRequested":
        _fold_request(state, ev)
    elif topic.startswith("routing-decided") and kind == "RoutingDecided":
        mid = str(ev.get("message_id", ""))
        if mid:
            row = _row(state, mid)
            row.rule = str(ev.get("rule", ""))
            row.header_from = str(ev.get("header_from", ""))
            row.envelope_from = str(ev.get("envelope_from", ""))
    elif topic == "dead-letter" and kind == "EventDeadLettered":
        state.dead_letters.append(ev)
        state.dead_letter_count[str(ev.get("processor", ""))] += 1
    elif topic == "blacklist" and kind == "BlacklistChanged":
        state.blacklist[str(ev.get("address", "")).lower()] = ev
    elif topic == "bounces" and kind == "BounceRecorded" and not ev.get("unattributed"):
        state.bounces[str(ev.get("reason", ""))] += 1
    elif topic == "bounces" and kind == "ComplaintReceived":
        state.complaints[str(ev.get("feedback_type", ""))] += 1
    elif topic == "incoming-status" and kind == "IncomingServerChecked":
        state.incoming_status[str(ev.get("server", ""))] = ev


def _fold_request(state: ConsoleState, ev: dict[str, Any]) -> None:
    mid = str(ev.get("message_id", ""))
    if not mid:
        return
    row = _row(state, mid)
    row.subject = str(ev.get("subject", ""))
    row.from_ = str(ev.get("from_", ""))
    to = ev.get("to")
    row.to = [str(t) for t in to] if isinstance(to, list) else []
    row.tenant = str(ev.get("tenant", ""))
    row.kind = str(ev.get("kind", "transactional"))
    headers = ev.get("headers")
    row.headers = {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) \
        else {}
    row.requested_at = float(ev.get("occurred_at") or 0.0)
    _index(state, row)


def _fold_status(state: ConsoleState, ev: dict[str, Any], now: float) -> None:
    mid = str(ev.get("message_id", ""))
    if not mid:
        return
    row = _row(state, mid)
    event_id = str(ev.get("event_id", ""))
    if any(h["event_id"] == event_id for h in row.history):
        return
    at = float(ev.get("occurred_at") or 0.0)
    entry = {"event_id": event_id, "at": at, "state": ev.get("state", ""),
             "previous": ev.get("previous", ""),
             "reason": ev.get("note") or ev.get("reason", ""), "server": ev.get("server", ""),
             "attempt": ev.get("attempt", 0), "note": bool(ev.get("note"))}
    row.history.append(entry)
    row.acknowledged = bool(ev.get("acknowledged"))
    if ev.get("note"):
        return
    new = str(ev.get("state", ""))
    if new != row.state:
        state.by_state[row.state] -= 1
        state.by_state[new] += 1
        state.ids_by_state.get(row.state, {}).pop(mid, None)
        state.ids_by_state.setdefault(new, {})[mid] = None
    row.state = new
    row.reason = str(ev.get("reason", ""))
    row.server = str(ev.get("server", ""))
    row.attempt = int(ev.get("attempt") or 0)
    recipients = ev.get("recipients")
    row.recipients = recipients if isinstance(recipients, dict) else {}
    row.updated_at = at
    _index(state, row)
    _touch(state, row)
    if new in PER_MINUTE:
        minute = int(at // 60)
        if minute >= int(now // 60) - 60:
            state.per_minute.setdefault(minute, Counter())[new] += 1
    if new == "sent":
        window = _window(state, at)
        if window[0] > state.window[0]:
            state.window, state.sent_today = window, Counter()
        if window == state.window:
            state.sent_today[(row.server, row.tenant)] += 1


def _touch(state: ConsoleState, row: MailRow) -> None:
    row.seq = len(state.timeline)
    state.timeline.append(row.message_id)
    if len(state.timeline) > 4 * len(state.mails) + TIMELINE_SLACK:  # drop superseded places
        current = [mid for i, mid in enumerate(state.timeline) if state.mails[mid].seq == i]
        for i, mid in enumerate(current):
            state.mails[mid].seq = i
        state.timeline = current


def _latest(state: ConsoleState, n: int) -> list[MailRow]:
    """The ``n`` mails changed last, newest first (fold order)."""
    out: list[MailRow] = []
    mails, timeline = state.mails, state.timeline
    for i in range(len(timeline) - 1, -1, -1):
        row = mails[timeline[i]]
        if row.seq == i:
            out.append(row)
            if len(out) == n:
                break
    return out


def _index(state: ConsoleState, row: MailRow) -> None:
    row.search = "\n".join([*row.to, *row.recipients]).lower()
    for addr in row.search.split("\n"):
        _, _, bare = addr.rpartition("<")  # "Name <a@b>" -> a@b
        state.by_recipient.setdefault(bare.rstrip(">").strip(), set()).add(row.message_id)


def prune(state: ConsoleState, now: float) -> None:
    """Drop per-minute buckets older than an hour."""
    floor = int(now // 60) - 60
    for minute in [m for m in state.per_minute if m < floor]:
        del state.per_minute[minute]


# --- page models ---------------------------------------------------------------------------------


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else ""


def overview(state: ConsoleState, now: float, processors: list[dict[str, Any]]
             ) -> dict[str, Any]:
    """Mails by state, sent/deferred/failed per minute over the last hour,
    bounce and complaint rates, the processors with workers and lag."""
    this = int(now // 60)
    minutes: list[dict[str, Any]] = []
    peak = 1
    for m in range(this - 59, this + 1):
        c = state.per_minute.get(m, Counter())
        counts = {k: c.get(k, 0) for k in PER_MINUTE}
        peak = max(peak, *counts.values())
        minutes.append({"minute": time.strftime("%H:%M", time.gmtime(m * 60)), **counts})
    sent = state.by_state.get("sent", 0) + state.by_state.get("bounced", 0)
    bounces = sum(state.bounces.values())
    complaints = sum(state.complaints.values())
    return {
        "states": [(s, state.by_state.get(s, 0)) for s in STATES],
        "total": len(state.mails),
        "minutes": minutes, "peak": peak,
        "hour": {k: sum(r[k] for r in minutes) for k in PER_MINUTE},
        "bounces": bounces, "complaints": complaints,
        "bounce_rate": _rate(bounces, sent), "complaint_rate": _rate(complaints, sent),
        "bounce_reasons": state.bounces.most_common(5),
        "processors": processors,
        "dead_letters": sum(state.dead_letter_count.values()),
    }


def _rate(n: int, of: int) -> str:
    return f"{100.0 * n / of:.2f}%" if of else "-"


@dataclass(frozen=True)
class QueueFilter:
    state: str = ""  # "" = open states (queued, sending, deferred, failed); "all" = every state
    server: str = ""
    tenant: str = ""
    recipient: str = ""
    since: float = 0.0  # updated at or after (unix seconds); 0: any time
    until: float = 0.0
    page: int = 1

    @classmethod
    def from_query(cls, q: dict[str, str], now: float) -> QueueFilter:
        """From the query string: state, server, tenant, recipient, minutes
        (updated within the last N), page."""
        try:
            minutes = float(q.get("minutes") or 0)
        except ValueError:
            minutes = 0.0
        try:
            page = max(int(q.get("page") or 1), 1)
        except ValueError:
            page = 1
        since = _utc(q.get("from", ""))
        if minutes > 0:
            since = max(since, now - minutes * 60)
        return cls(state=q.get("state", "").strip(), server=q.get("server", "").strip(),
                   tenant=q.get("tenant", "").strip(),
                   recipient=q.get("recipient", "").strip().lower(),
                   since=since, until=_utc(q.get("to", "")), page=page)


def _utc(text: str) -> float:
    """``2026-12-06T04:10`` (a datetime-local field, read as UTC) -> unix
    seconds; 0 when empty or unreadable."""
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return 0.0


OPEN_STATES = frozenset({"queued", "sending", "deferred", "failed"})


def matches(row: MailRow, f: QueueFilter) -> bool:
    """Everything but the state, which ``candidates`` chose by."""
    if not f.state and row.acknowledged and row.state == "failed":
        return False  # acknowledged failures leave the open queue
    if f.server and row.server != f.server:
        return False
    if f.tenant and row.tenant != f.tenant:
        return False
    if f.since and row.updated_at < f.since:
        return False
    if f.until and row.updated_at > f.until:
        return False
    if f.recipient and f.recipient not in row.search:
        return False
    return True


def candidates(state: ConsoleState, f: QueueFilter) -> list[MailRow]:
    """The mails in the filter's state(s), from the per-state index, or
    those sent to the filter's recipient when it is a full address."""
    exact = state.by_recipient.get(f.recipient) if f.recipient else None
    if exact is not None:
        rows = [state.mails[mid] for mid in exact]
        if f.state == "all":
            return rows
        allowed = {f.state} if f.state else OPEN_STATES
        return [r for r in rows if r.state in allowed]
    if f.state == "all":
        return list(state.mails.values())
    wanted = [f.state] if f.state else [s for s in STATES if s in OPEN_STATES]
    mails = state.mails
    return [mails[mid] for s in wanted for mid in state.ids_by_state.get(s, ())]


def queue(state: ConsoleState, f: QueueFilter) -> dict[str, Any]:
    """One page of matching mails, newest update first, and the count."""
    upto = f.page * PAGE_SIZE
    if f.state == "all" and not (f.server or f.tenant or f.since or f.until or f.recipient):
        return _page(state, f, _latest(state, upto)[upto - PAGE_SIZE:], len(state.mails))
    found = candidates(state, f)
    if not f.state or f.server or f.tenant or f.since or f.until or f.recipient:
        found = [r for r in found if matches(r, f)]
    if upto <= 1000:  # the first pages: a partial sort
        newest = heapq.nlargest(upto, found, key=_by_update)
    else:  # deep pages: one full sort is cheaper than a heap of that size
        newest = sorted(found, key=_by_update, reverse=True)[:upto]
    return _page(state, f, newest[upto - PAGE_SIZE:], len(found))


def _page(state: ConsoleState, f: QueueFilter, page: list[MailRow], count: int
          ) -> dict[str, Any]:
    return {
        "rows": [_queue_row(r) for r in page], "count": count, "page": f.page,
        "pages": max((count + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        "servers": sorted(state.config.servers), "states": STATES, "filter": f,
    }


def _by_update(r: MailRow) -> float:
    return r.updated_at


def _queue_row(r: MailRow) -> dict[str, Any]:
    return {"message_id": r.message_id, "state": r.state, "reason": r.reason,
            "server": r.server, "tenant": r.tenant, "subject": r.subject,
            "to": ", ".join(r.to) or ", ".join(r.recipients), "updated": when(r.updated_at),
            "acknowledged": r.acknowledged, "answers": _answers(r)}


def _answers(r: MailRow) -> list[dict[str, Any]]:
    """Each recipient's outcome with the server's answer."""
    out = []
    for addr, info in sorted(r.recipients.items()):
        info = info if isinstance(info, dict) else {"state": str(info)}
        said = str(info.get("text") or "")
        enhanced = str(info.get("enhanced") or "")
        parts = [str(info.get("code") or ""),
                 "" if said.startswith(enhanced) else enhanced, said]
        out.append({"recipient": addr, "state": info.get("state", ""),
                    "answer": " ".join(p for p in parts if p)})
    return out


def message(state: ConsoleState, mid: str) -> dict[str, Any] | None:
    r = state.mails.get(mid)
    if r is None:
        return None
    history = sorted(r.history, key=lambda h: h["at"])
    return {
        **_queue_row(r), "from": r.from_, "kind": r.kind, "rule": r.rule,
        "header_from": r.header_from, "envelope_from": r.envelope_from,
        "requested": when(r.requested_at), "attempt": r.attempt,
        "history": [{**h, "when": when(h["at"])} for h in history],
        "headers": sorted(r.headers.items()),
        "raw_headers": _raw_headers(r),
    }


def _raw_headers(r: MailRow) -> str:
    """The headers the request carries, as they go on the wire (Postlane
    adds Message-ID, Date, DKIM-Signature ... at delivery)."""
    lines = [f"From: {r.header_from or r.from_}", f"To: {', '.join(r.to)}",
             f"Subject: {r.subject}"]
    lines += [f"{k}: {v}" for k, v in sorted(r.headers.items())]
    if r.envelope_from:
        lines.append(f"Return-Path: <{r.envelope_from}>")
    return "\n".join(lines)


def limits(state: ConsoleState, now: float) -> dict[str, Any]:
    """Each server and tenant with its daily limit and what was sent in the
    limiter's current daily window."""
    current = _window(state, now)
    today = state.sent_today if current == state.window else Counter()
    per_server: Counter[str] = Counter()
    per_tenant: Counter[str] = Counter()
    for (server, tenant), n in today.items():
        per_server[server] += n
        if tenant:
            per_tenant[tenant] += n
    servers = [{"name": s.name, "limit": s.daily_limit, "used": per_server.get(s.name, 0),
                "rate": getattr(s, "rate", "")}
               for s in sorted(state.config.servers.values(), key=lambda s: (s.priority, s.name))]
    tenants = [{"name": t.name, "limit": t.daily_limit, "used": per_tenant.get(t.name, 0)}
               for t in sorted(state.config.tenants.values(), key=lambda t: t.name)]
    for name in sorted(set(per_tenant) - {t["name"] for t in tenants}):
        tenants.append({"name": name, "limit": 0, "used": per_tenant[name]})
    domains = [{"domain": d.domain, "rate": d.rate}
               for d in sorted(state.config.domains.values(), key=lambda d: d.domain)]
    return {"servers": servers, "tenants": tenants, "domains": domains,
            "window": f"{when(current[0])} to {when(current[1])} UTC "
                      f"({state.timezone}, day starting {state.day_start})"}


def incoming(state: ConsoleState) -> list[dict[str, Any]]:
    """Incoming servers with the fetcher's last report on each (as
    ``postlane incoming list``)."""
    out = []
    for name in sorted(state.config.incoming):
        srv = state.config.incoming[name]
        st = state.incoming_status.get(name)
        out.append({"name": name, "host": srv.host, "port": srv.port,
                    "security": srv.security, "folder": srv.folder, "active": srv.active,
                    "tenant": srv.tenant,
                    "state": "not polled yet" if st is None else
                    ("ok" if st.get("ok") else "failing"),
                    "sentence": "" if st is None else st.get("sentence", ""),
                    "checked": "" if st is None else when(float(st.get("occurred_at") or 0))})
    return out


def dead_letters(state: ConsoleState) -> dict[str, Any]:
    rows = [{**d, "when": when(float(d.get("occurred_at") or 0))}
            for d in reversed(state.dead_letters)]
    return {"rows": rows, "by_processor": sorted(state.dead_letter_count.items())}


def suppression_rows(state: ConsoleState) -> list[dict[str, Any]]:
    """One row per (address, suppression), as ``postlane suppressions list``."""
    out = []
    for addr, change in sorted(state.blacklist.items()):
        entries = change.get("suppressions") or ([{
            "type": "manual" if change.get("manual") else "hard_bounce", "tenant": "",
            "list_id": "", "reason": change.get("reason", ""), "since": change.get("since", 0)}]
            if change.get("blacklisted") else [])
        for e in entries:
            out.append({"address": addr, "type": e.get("type", ""), "tenant": e.get("tenant", ""),
                        "list_id": e.get("list_id", ""), "reason": e.get("reason", ""),
                        "since": when(float(e.get("since") or 0))})
    return out
