"""The quota agent (``postlane.limiter.quota``, in every limiter worker; the
one that owns the one partition of the ``quota`` topic does the counting).

Input: QuotasAsked (the asks of one limiter pass, and the tokens it gives
back) and QuotaAsked (delivery's) (see quota.py for what is counted and
why in one place). Per batch: decide each
ask with the pure core; write the batch's grants as one row of the
``limiter-quota`` table (batch key -> grants; this agent is its only
writer) straight to the changelog and wait until the broker acknowledged
it; then publish the answers and wait for those: to the limiter one
QuotasAnswered per partition of ``quota-answers`` (keyed to land on the
partition of the mails it answers), to delivery one QuotaGranted /
QuotaRefused per ask on ``delivery-quota``, keyed by message_id (a refusal
also on ``held``, with the limiter's MailHeld, where the status processor
folds it: the mail's status says why its next attempt waits). A batch
costs the quota a few records, not a few per mail. The batch is acknowledged after that.

So a grant is counted exactly when its row is on the log: a crash before
the row leaves the ask unacknowledged (decided again after the restart); a
crash after it answers the repeated ask from the row, uncounted. A worker
that takes the partition over (a rebalance, a SIGKILLed owner) rebuilds the
counts and rate schedules from the rows (``quota.restore``) before it
decides anything. Rows that no longer count are deleted, at most every
``PRUNE_EVERY`` seconds, by this agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Any

from schemas import (
    Event,
    InvalidEvent,
    QuotaAsked,
    QuotaGranted,
    QuotaRefused,
    QuotasAnswered,
    QuotasAsked,
    decode_any,
    encode,
)
from streams import tables
from streams.acked import acked, write_row
from streams.batches import batches
from streams.partitioning import partition_for
from streams.topics import DEAD_LETTER, DELIVERY_QUOTA, HELD, QUOTA, QUOTA_ANSWERS

from ..deadletter import send_dead_letter
from ..runtime import Runtime
from . import quota
from .index import key_on
from .limits import LimitsCache

NAME = "limiter"
log = logging.getLogger("postlane.limiter.quota")
PRUNE_EVERY = 10.0
_ASKS: dict[str, type[Event]] = {"QuotaAsked": QuotaAsked, "QuotasAsked": QuotasAsked}


def register_quota(rt: Runtime) -> None:
    s, app = rt.settings, rt.app
    limits = LimitsCache(rt.config, s)
    reply = {"limiter": rt.topic(QUOTA_ANSWERS), "delivery": rt.topic(DELIVERY_QUOTA)}
    dlq = rt.topic(DEAD_LETTER)
    held = rt.topic(HELD)
    table = rt.table(tables.LIMITER_QUOTA)
    state: dict[str, Any] = {"quota": None, "generation": -1, "pruned": 0.0}

    def ready() -> bool:
        recovery: Any = getattr(app.tables, "recovery")  # noqa: B009 - not in the stubs
        return not app.rebalancing and not recovery.in_recovery and recovery.completed.is_set()

    def current(now: float) -> quota.Quota:
        """The counts as the rows on the log say, rebuilt after every rebalance."""
        if state["quota"] is None or state["generation"] != app.rebalancing_count:
            q = quota.restore(list(table.values()), now, limits())
            state["quota"], state["generation"] = q, app.rebalancing_count
            log.info("quota rebuilt from %d grant rows: %s", len(q.grants), q.counts)
        out: quota.Quota = state["quota"]
        return out

    @app.agent(rt.raw_topic(QUOTA), name="postlane.limiter.quota")
    async def count(stream: Any) -> None:
        await rt.config.wait_ready()
        async with aclosing(batches(stream, 256, within=0.005)) as taken:
            async for batch in taken:
                while not ready():
                    await asyncio.sleep(0.05)
                await _decide(batch)

    async def _decide(batch: list[Any]) -> None:
        now = time.time()
        q, lim = current(now), limits()
        n = s.partitions
        rows: list[dict[str, Any]] = []
        answers: list[tuple[Any, bytes, bytes]] = []
        to_limiter: dict[int, list[dict[str, Any]]] = {}
        to_delivery: list[tuple[Any, bytes, dict[str, Any]]] = []
        granted: list[dict[str, Any]] = []  # answers that name their grant's row (replay)
        asks: list[quota.Ask] = []
        for event in batch:
            message = event.message
            try:
                got = decode_any(_ASKS, message.value)
                asks += ([quota.Ask.of(a) for a in got.asks] if isinstance(got, QuotasAsked)
                         else [quota.Ask.of_event(got)])  # type: ignore[arg-type]
            except InvalidEvent as exc:
                await send_dead_letter(dlq, NAME, message, str(exc))
                continue
        for ask in quota.ordered(asks):  # transactional before mass (quota.ordered)
            if ask.give_back:  # a cancelled mail's token: recorded, not answered
                returned = quota.give_back(q, ask, now, lim)
                if returned is not None:
                    rows.append(returned)
                continue
            answer, row = quota.decide(q, ask, now, lim)
            if row is not None:
                rows.append(row)
            data = answer.to_data()
            if answer.granted:
                grant = q.grants.get(ask.ask_id) or {}
                data.update(batch=grant.get("batch", ""), decided_at=grant.get("at", now))
                granted.append(data)
            if ask.by == "limiter":
                p = ask.partition if 0 <= ask.partition < n else partition_for(
                    ask.message_id, n)
                to_limiter.setdefault(p, []).append(data)
            else:
                to_delivery.append((reply[ask.by], ask.message_id.encode(), data))
        key = f"{now:.6f}:{rows[0]['ask_id']}" if rows else ""
        for data in granted:  # a grant of this batch: its row is written under ``key``
            data["batch"] = data["batch"] or key
        for topic, mid, data in to_delivery:
            event = (QuotaGranted if data["type"] == "QuotaGranted" else QuotaRefused)(**data)
            value = encode(event)
            answers.append((topic, mid, value))
            if isinstance(event, QuotaRefused):  # the mail's status says why the attempt waits
                answers.append((held, mid, value))
        for p, items in sorted(to_limiter.items()):
            answers.append((reply["limiter"], key_on("answers", p, n),
                            encode(QuotasAnswered(answers=items))))
        written: list[tuple[bytes, Any]] = []
        if rows:
            written.append((key.encode(), quota.record(q, key, rows)))
        delay = 0.5
        while True:  # rows and answers are idempotent: sent again until they are on the log
            try:
                # the grants are on the log before anyone hears of them
                await acked([await write_row(table, key, value) for key, value in written])
                await acked([await topic.send(key=key, value=value)
                             for topic, key, value in answers])
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - e.g. the broker is away: try again
                log.exception("quota could not write %d grants / %d answers; retrying in "
                              "%.1f s", len(rows), len(answers), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if now - state["pruned"] >= PRUNE_EVERY:
            state["pruned"] = now
            for key in quota.prunable(q, now):
                if key.encode() in table:
                    del table[key.encode()]
