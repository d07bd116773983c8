"""``limiter_replay.fold_quota``: the quota's grant rows from the log alone
(asks, answers naming their row and moment, the config of that moment),
equal to what the quota agent stored: the agent's steps are done here with
the same core (``quota.decide``, ``quota.record``) in its order, including
a timed-out repeat of an ask in the same batch and a refused ask granted
later."""

from __future__ import annotations

from typing import Any

import orjson

from postlane.limiter_replay import _quota_comparable, fold_quota
from postlane.logread import Rec
from processors.config.view import ConfigView, evolve
from processors.limiter import quota
from processors.limiter.limits import limits_from
from schemas import OutgoingServerConfigured, QuotasAnswered, QuotasAsked, encode
from streams.settings import Settings

S = Settings.from_env(environ={}, topic_prefix="t.", app_prefix="t")
T0 = 1_796_540_000.0
SERVER = OutgoingServerConfigured(name="main", host="127.0.0.1", port=25, security="none",
                                  from_filter="a.test", daily_limit=2, rate="100/s",
                                  occurred_at=T0 - 100)


SLOW = OutgoingServerConfigured(name="slow", host="127.0.0.1", port=25, security="none",
                                from_filter="b.test", rate="1/s", occurred_at=T0 - 100)


def ask(mid: str, step: int = 0, force: bool = False, server: str = "main",
        give_back: bool = False, lane: str = "transactional") -> dict[str, Any]:
    return {"type": "QuotaAsked", "ask_id": f"{mid}:{step}", "message_id": mid,
            "server": server, "by": "limiter", "force": force, "partition": 0,
            "give_back": give_back, "lane": lane}


class Log:
    """The records the quota agent's inputs and outputs leave on the topics."""

    def __init__(self) -> None:
        self.recs: list[Rec] = [Rec(S.topic("config"), 0, i, int((T0 - 100) * 1000), name,
                                    encode(event))
                                for i, (name, event) in enumerate(((b"main", SERVER),
                                                                   (b"slow", SLOW)))]
        self.offsets: dict[str, int] = {}

    def add(self, topic: str, at: float, value: bytes) -> None:
        off = self.offsets.get(topic, 0)
        self.offsets[topic] = off + 1
        self.recs.append(Rec(S.topic(topic), 0, off, int(at * 1000), b"k", value))


def agent_batch(log: Log, q: quota.Quota, now: float, asked: list[tuple[float, list[dict]]],
                live: dict[str, Any]) -> None:
    """One batch of the quota agent (quota_agent._decide): decide each ask in
    order, record the grants under the batch key, answer naming the row."""
    limits = limits_from(evolve(evolve(ConfigView(), SERVER), SLOW), S)
    rows, items, granted = [], [], []
    for at, asks in asked:
        log.add("quota", at, encode(QuotasAsked(asks=asks, occurred_at=at)))
    # the batch's asks in the quota's order (quota.ordered: transactional before mass)
    for one in quota.ordered([quota.Ask.of(a) for _, asks in asked for a in asks]):
        if one.give_back:  # recorded, not answered
            returned = quota.give_back(q, one, now, limits)
            if returned is not None:
                rows.append(returned)
            continue
        answer, row = quota.decide(q, one, now, limits)
        if row is not None:
            rows.append(row)
        data = answer.to_data()
        if answer.granted:
            grant = q.grants.get(one.ask_id) or {}
            data.update(batch=grant.get("batch", ""), decided_at=grant.get("at", now))
            granted.append(data)
        items.append(data)
    key = f"{now:.6f}:{rows[0]['ask_id']}" if rows else ""
    for data in granted:
        data["batch"] = data["batch"] or key
    if rows:
        live[key] = orjson.loads(orjson.dumps(quota.record(q, key, rows)))
    log.add("quota-answers", now + 0.002, encode(QuotasAnswered(answers=items,
                                                                occurred_at=now + 0.002)))


def test_fold_quota_gives_the_agents_rows() -> None:
    log, q, live = Log(), quota.Quota(), {}
    # batch 1: a, a again (the limiter timed out and asked again: answered from the row), b
    agent_batch(log, q, T0, [(T0 - 0.5, [ask("a"), ask("b")]), (T0 - 0.1, [ask("a")])], live)
    # batch 2: c refused (the daily limit of 2 is reached), d sent now (force: counted)
    agent_batch(log, q, T0 + 1, [(T0 + 0.9, [ask("c"), ask("d", force=True)])], live)
    # batch 3: c asked again later (still refused), e forced
    agent_batch(log, q, T0 + 5, [(T0 + 4.9, [ask("c"), ask("e", 1, force=True)])], live)
    folded = fold_quota(S, log.recs)
    last = max(r["at"] for v in live.values() for r in v["grants"])
    limits = limits_from(evolve(evolve(ConfigView(), SERVER), SLOW), S)
    expected = _quota_comparable(live, last, limits)
    assert folded.rows == expected
    grants = {a: g for rows in folded.rows.values() for a, g in rows.items()}
    assert set(grants) == {"a:0", "b:0", "d:0", "e:1"}
    assert grants["d:0"]["force"] and grants["a:0"]["tats"]["server:main"] > T0
    assert folded.folded == 4


def test_a_grant_whose_answer_does_not_name_its_row_is_skipped() -> None:
    log = Log()
    log.add("quota", T0, encode(QuotasAsked(asks=[ask("a")], occurred_at=T0)))
    old = {"type": "QuotaGranted", "ask_id": "a:0", "message_id": "a", "at": T0}
    log.add("quota-answers", T0 + 0.01, encode(QuotasAnswered(answers=[old])))
    folded = fold_quota(S, log.recs)
    assert folded.rows == {} and folded.skipped == 1


def test_a_token_given_back_is_replayed_at_its_moment_and_frees_its_slot() -> None:
    log, q, live = Log(), quota.Quota(), {}
    # slow sends 1/s: x goes now, y is paced to T0 + 1
    agent_batch(log, q, T0, [(T0 - 0.1, [ask("x", server="slow"), ask("y", server="slow")])],
                live)
    # y is cancelled: its token comes back (its slot is free again); z then takes that slot
    agent_batch(log, q, T0 + 0.3, [(T0 + 0.2, [ask("y", server="slow", give_back=True)])],
                live)
    agent_batch(log, q, T0 + 0.6, [(T0 + 0.5, [ask("z", server="slow")])], live)
    z = next(g for v in live.values() for g in v["grants"] if g["ask_id"] == "z:0")
    assert z["slot"] - T0 == 1.0
    folded = fold_quota(S, log.recs)
    last = max(r["at"] for v in live.values() for r in v["grants"])
    limits = limits_from(evolve(evolve(ConfigView(), SERVER), SLOW), S)
    expected = _quota_comparable(live, last, limits)
    assert folded.rows == expected
    grants = {a: g for rows in folded.rows.values() for a, g in rows.items()}
    assert grants["y:0"]["returned"] and "returned" not in grants["z:0"]
    assert grants["z:0"]["slot"] - T0 == 1.0


def test_a_batch_is_replayed_transactional_first_as_the_quota_decided_it() -> None:
    log, q, live = Log(), quota.Quota(), {}
    # the daily limit of 2: two mass asks written first, an invoice last, in one batch
    agent_batch(log, q, T0, [(T0 - 0.2, [ask("m1", lane="mass"), ask("m2", lane="mass")]),
                             (T0 - 0.1, [ask("invoice")])], live)
    folded = fold_quota(S, log.recs)
    grants = {a for rows in folded.rows.values() for a in rows}
    assert grants == {"invoice:0", "m1:0"}
    last = max(r["at"] for v in live.values() for r in v["grants"])
    limits = limits_from(evolve(evolve(ConfigView(), SERVER), SLOW), S)
    assert folded.rows == _quota_comparable(live, last, limits)
