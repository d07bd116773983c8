"""``postlane_mails{state}`` and ``postlane_delivery_latency_seconds``,
served by every worker that runs the status processor, for the partitions
of the status table it holds.

Counted from the status table itself (no agent holds a metrics call):

- the metrics sensor (``streams/metrics.py``) sees every write of the table
  (``on_table_set``) before the store takes it, so the row's previous value
  is still in the store: the mail moves from its old state to its new one
  (a removed row leaves its state);
- when a rebalance ends (``app.on_rebalance_complete``: after the table's
  recovery from its changelog, before the streams resume) the counts are
  rebuilt from the rows of the partitions this worker now holds. So they
  are right after a restart (the table is rebuilt from its changelog) and
  after partitions moved between status workers. Between a revocation and
  the end of that rebalance (seconds) a worker still counts what it gave up.
- Several status workers: each serves its own partitions' mails; the total
  is Prometheus' sum, ``sum by (state) (postlane_mails)``.
- Latency: when a row turns ``sent``, its ``updated_at - created_at`` (the
  request's time to the accepted attempt's, the times the status fold
  keeps) is observed once. A histogram is counters: it starts from zero
  when the worker restarts (``rate()`` and ``histogram_quantile()`` expect
  that); only mails that reach ``sent`` while this worker holds their
  partition are observed.

The state is read from the row's JSON without parsing it: the status
table's value is ``orjson.dumps(MessageStatus)`` whose second field is
``state`` (``message_id`` first, a string, which cannot hold an unescaped
quote), so the first ``"state":"`` is the mail's own. The unit test
checks this against a real row.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

from schemas.status import STATES

from .partitioning import partition_for

log = logging.getLogger("postlane.metrics")

TABLE = "status"  # processors/status/agent.py's TABLE (streams does not import processors)
_STATE = b'"state":"'


def state_of(raw: Any) -> str | None:
    """A status row's state (None: no row, or not readable)."""
    if raw is None:
        return None
    if isinstance(raw, bytes | bytearray):
        i = raw.find(_STATE)
        if i >= 0:
            start = i + len(_STATE)
            end = raw.find(b'"', start)
            if end > start:
                return bytes(raw[start:end]).decode("ascii", "replace")
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    if isinstance(raw, dict) and isinstance(raw.get("state"), str):
        return str(raw["state"])
    return None


def latency_of(raw: Any) -> float | None:
    """Request to sent of a row that is ``sent``: ``updated_at - created_at``."""
    try:
        row = orjson.loads(raw) if isinstance(raw, bytes | bytearray) else raw
        created, updated = float(row["created_at"]), float(row["updated_at"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return updated - created if created > 0 and updated >= created else None


class MailCounts:
    """Mails by state of the rows this worker holds. Pure: ``publish`` is
    given the states whose counts changed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def rebuild(self, rows: Iterable[Any]) -> set[str]:
        before = set(self.counts)
        self.counts = Counter(s for s in map(state_of, rows) if s is not None)
        return before | set(self.counts) | set(STATES)

    def change(self, old: Any, new: Any) -> tuple[set[str], float | None]:
        """A row written: the states whose count changed, and the latency
        to observe when the mail just turned sent."""
        was, now = state_of(old), state_of(new)
        if was == now:
            return set(), None
        changed = set()
        if was is not None:
            self.counts[was] -= 1
            changed.add(was)
        if now is not None:
            self.counts[now] += 1
            changed.add(now)
        return changed, latency_of(new) if now == "sent" else None


def held_rows(app: Any, table: Any) -> list[Any]:
    """The values of the table's rows in the partitions this worker holds
    as active. The in-memory store keeps rows of partitions given up
    (Faust drops only the recovered ones), so rows are filtered by their
    key's partition when this worker does not hold them all."""
    n = int(getattr(table, "partitions", None) or app.conf.topic_partitions)
    changelog = table.changelog_topic_name
    held = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog}
    store = table.data
    items = list(store.items())
    if held >= set(range(n)):
        return [v for _, v in items]
    known: dict[Any, int] = getattr(store, "_key_partition", {})  # memory store: recovered keys
    return [v for k, v in items
            if (known.get(k) if k in known else partition_for(k, n)) in held]


class MailStates:
    """The counts of one Faust app and their gauge (see the module's doc)."""

    def __init__(self, app: Any, gauge: Any, histogram: Any) -> None:
        self.app, self.gauge, self.histogram = app, gauge, histogram
        self.counts = MailCounts()

    def install(self) -> MailStates:
        self.app.on_rebalance_complete.connect(self.on_rebalance_complete)
        return self

    async def on_rebalance_complete(self, sender: Any, **kwargs: Any) -> None:
        table = self.app.tables.get(TABLE)
        if table is None:  # this worker does not run the status processor
            return
        try:
            self._publish(self.counts.rebuild(held_rows(self.app, table)))
        except Exception:  # noqa: BLE001 - a metric never stops a worker; say why
            log.warning("postlane_mails not rebuilt from the status table", exc_info=True)

    def on_set(self, table: Any, key: Any, value: Any) -> None:
        """The sensor's ``on_table_set``: the store still holds the old row."""
        changed, latency = self.counts.change(table.data.get(key), value)
        self._publish(changed)
        if latency is not None:
            self.histogram.observe(latency)

    def on_del(self, table: Any, key: Any) -> None:
        changed, _ = self.counts.change(table.data.get(key), None)
        self._publish(changed)

    def _publish(self, states: Iterable[str]) -> None:
        for state in states:
            self.gauge.labels(state).set(self.counts.counts.get(state, 0))
