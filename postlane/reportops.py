"""Deliverability reports from the topics (``postlane report deliverability``).

Read once, from offset 0, filtered on the records' own timestamps: the
requests (tenant, creation time), routing decisions (server, suppressed
recipients), delivery attempts (one outcome per recipient and attempt), and
the ``bounces`` topic (bounces, complaints, unsubscribes). ``aggregate`` is
pure: records in, rows out.

Per group (``server``, recipient ``domain``, ``reason``, ``tenant`` or UTC
``day``):

- ``sent``: recipients accepted (once per mail and recipient, also when an
  interrupted attempt sent it twice); ``deferred``: temporary failures (each
  attempt counts); ``failed``: recipients failed for good (5xx, gave up);
- ``hard_bounces`` / ``soft_bounces``: ``BounceRecorded`` (bounce mails and
  5xx answers at delivery), ``complaints``: ``ComplaintReceived``,
  ``unsubscribes``: ``UnsubscribeRequested``, ``suppressed``: recipients
  the router did not mail (blacklist, suppressions);
- ``latency_p50`` / ``latency_p99``: seconds from the request to the
  attempt that was accepted, per accepted recipient.

A recipient's ``reason`` is the bounce classification
(``processors/bounces/classify.py``: unknown_user, mailbox_full, ...) for
failures, ``accepted`` for sent mail, the router's reason type for
suppressions.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from streams.settings import Settings

from .logread import Rec, gc_paused, read_batches

GROUPS = ("server", "domain", "reason", "tenant", "day")
COUNTS = ("sent", "deferred", "failed", "hard_bounces", "soft_bounces", "complaints",
          "unsubscribes", "suppressed")
SOURCES = ("send-requested", "send-requested-mass", "routing-decided", "routing-decided-mass",
           "delivery", "bounces")


@dataclass
class Row:
    group: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    latencies: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, **self.counts,
                "latency_p50": percentile(self.latencies, 50),
                "latency_p99": percentile(self.latencies, 99)}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (None without values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 3)


def _domain(address: str) -> str:
    address = address.strip().strip("<>").lower()
    return address.rpartition("@")[2] or "?"


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts)) if ts else "?"


def _reason(outcome: dict[str, Any]) -> str:
    from processors.bounces.classify import reason_of

    try:
        return reason_of(str(outcome.get("enhanced") or ""), int(outcome.get("code") or 0),
                         str(outcome.get("text") or ""))
    except (TypeError, ValueError):
        return "other"


@dataclass
class _Mail:
    tenant: str = ""
    created: float = 0.0
    server: str = ""


def aggregate(records: Iterable[Rec], by: str, s: Settings) -> list[Row]:
    """The report's rows, one per group, in group order. Records of every
    source topic, in any order across topics (mails are joined by id)."""
    if by not in GROUPS:
        raise ValueError(f"--by {by!r} must be one of {', '.join(GROUPS)}")
    names = {s.topic(t): t for t in SOURCES}
    mails: dict[str, _Mail] = {}
    facts: list[tuple[str, str, str, str, float, str, float | None]] = []
    # (count, message_id, server, address, at, reason, latency)
    seen: set[str] = set()
    for rec in records:
        topic = names.get(rec.topic)
        try:
            data = orjson.loads(rec.value or b"null")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        etype = data.get("type") or ("SendRequested" if topic and topic.startswith("send-")
                                     else "")
        eid = str(data.get("event_id", ""))
        if eid and eid in seen:
            continue  # a redelivered event published again with its id
        if eid:
            seen.add(eid)
        mid = str(data.get("message_id", ""))
        at = float(data.get("occurred_at") or rec.timestamp_ms / 1000.0)
        if etype == "SendRequested":
            m = mails.setdefault(mid, _Mail())
            m.tenant, m.created = str(data.get("tenant", "")), at
        elif etype == "RoutingDecided":
            m = mails.setdefault(mid, _Mail())
            m.server = str(data.get("server", "")) or m.server
            req = data.get("request")
            if isinstance(req, dict):
                m.tenant = m.tenant or str(req.get("tenant", ""))
                m.created = m.created or float(req.get("occurred_at") or 0.0)
            supp = data.get("suppressed")
            for address, why in (supp.items() if isinstance(supp, dict) else ()):
                kind = str(why).split(" ", 1)[0].rstrip(":") or "suppressed"
                facts.append(("suppressed", mid, m.server, str(address), at, kind, None))
        elif etype == "DeliveryAttempted":
            server = str(data.get("server", ""))
            for o in data.get("outcomes") or []:
                if not isinstance(o, dict):
                    continue
                address, status = str(o.get("recipient", "")), o.get("status")
                if status == "accepted":
                    facts.append(("sent", mid, server, address, at, "accepted", at))
                elif status == "failed":
                    facts.append(("failed", mid, server, address, at, _reason(o), None))
                elif status == "deferred":
                    facts.append(("deferred", mid, server, address, at, _reason(o), None))
        elif etype == "BounceRecorded":
            if data.get("kind", "failed") != "failed" or data.get("unattributed"):
                continue
            count = "hard_bounces" if data.get("hard") else "soft_bounces"
            facts.append((count, str(data.get("message_id", "")), "", str(data.get("address")),
                          float(data.get("bounced_at") or at), str(data.get("reason", "other")),
                          None))
        elif etype == "ComplaintReceived":
            facts.append(("complaints", str(data.get("message_id", "")), "",
                          str(data.get("address", "")), float(data.get("complained_at") or at),
                          str(data.get("feedback_type", "")), None))
            cmid = str(data.get("message_id", ""))
            if data.get("tenant") and cmid:
                cm = mails.setdefault(cmid, _Mail())
                cm.tenant = cm.tenant or str(data["tenant"])
        elif etype == "UnsubscribeRequested":
            facts.append(("unsubscribes", str(data.get("message_id", "")), "",
                          str(data.get("address", "")), float(data.get("requested_at") or at),
                          f"via {data.get('via', '')}", None))
    rows: dict[str, Row] = {}
    once: set[tuple[str, str, str]] = set()  # (count, message_id, recipient) of sent/failed
    for count, mid, server, address, at, reason, done in facts:
        if count in ("sent", "failed"):
            # a recipient sent again after an interrupted attempt (at-least-once)
            # is one delivery; a failure retried by an operator counts once
            if (count, mid, address) in once:
                continue
            once.add((count, mid, address))
        m = mails.get(mid) or _Mail()
        key = {"server": server or m.server or "?", "domain": _domain(address),
               "reason": reason or "?", "tenant": m.tenant or "(none)", "day": _day(at)}[by]
        row = rows.setdefault(key, Row(key))
        row.counts[count] += 1
        if done is not None and m.created:
            row.latencies.append(max(0.0, done - m.created))
    return [rows[k] for k in sorted(rows)]


def report(s: Settings, by: str, since: float | None = None,
           until: float | None = None) -> list[Row]:
    """Read the sources and aggregate (the record timestamps decide the range)."""
    topics = [s.topic(t) for t in SOURCES]

    def records() -> Iterable[Rec]:
        for batch in read_batches(s, topics, since, until):
            yield from batch

    with gc_paused():
        return aggregate(records(), by, s)


def totals(rows: list[Row]) -> Row:
    out = Row("total")
    for row in rows:
        for k in COUNTS:
            out.counts[k] += row.counts[k]
        out.latencies.extend(row.latencies)
    return out


def plot(rows: list[Row], by: str, path: str) -> None:
    """A grouped bar chart of the counts per group (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [c for c in COUNTS if any(r.counts[c] for r in rows)] or ["sent"]
    groups = [r.group for r in rows] or ["(no mail)"]
    width = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.5))
    for i, name in enumerate(shown):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [r.counts[name] for r in rows] or [0], width, label=name.replace("_", " "))
    ax.set_xticks([j + width * (len(shown) - 1) / 2 for j in range(len(groups))])
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 4 else 0, ha="right"
                       if len(groups) > 4 else "center")
    ax.set_ylabel("recipients / events")
    ax.set_title(f"Deliverability by {by}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
