"""``limiter_replay.fold_quota``: the quota's grant rows from the log alone
(asks, answers naming their row and moment, the config of that moment),
equal to what the quota agent stored: the agent's steps are done here with
the same core (``quota.decide``, ``quota.record``) in its order, including
a timed-out repeat of an ask in the same batch and a refused ask granted
later."""

from __future__ import annotations

from typing import Any

import orjson

from postlane.limiter_replay import GIVEN_BACK, _quota_comparable, fold_quota
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


def ask(mid: str, step: int = 0, force: bool = False) -> dict[str, Any]:
    return {"type": "QuotaAsked", "ask_id": f"{mid}:{step}", "message_id": mid,
            "server": "main", "by": "limiter", "force": force, "partition": 0}


class Log:
    """The records the quota agent's inputs and outputs leave on the topics."""

    def __init__(self) -> None:
        self.recs: list[Rec] = [Rec(S.topic("config"), 0, 0, int((T0 - 100) * 1000), b"main",
                                    encode(SERVER))]
        self.offsets: dict[str, int] = {}

    def add(self, topic: str, at: float, value: bytes) -> None:
        off = self.offsets.get(topic, 0)
        self.offsets[topic] = off + 1
        self.recs.append(Rec(S.topic(topic), 0, off, int(at * 1000), b"k", value))


def agent_batch(log: Log, q: quota.Quota, now: float, asked: list[tuple[float, list[dict]]],
                live: dict[str, Any]) -> None:
    """One batch of the quota agent (quota_agent._decide): decide each ask in
    order, record the grants under the batch key, answer naming the row."""
    limits = limits_from(evolve(ConfigView(), SERVER), S)
    rows, items, granted = [], [], []
    for at, asks in asked:
        log.add("quota", at, encode(QuotasAsked(asks=asks, occurred_at=at)))
        for a in asks:
            if a.get("give_back"):  # recorded, not answered (quota_agent._decide)
                returned = quota.give_back(q, quota.Ask.of(a), now, limits)
                if returned is not None:
                    rows.append(returned)
                continue
            answer, row = quota.decide(q, quota.Ask.of(a), now, limits)
            if row is not None:
                rows.append(row)
            data = answer.to_data()
            if answer.granted:
                grant = q.grants.get(a["ask_id"]) or {}
                data.update(batch=grant.get("batch", ""), decided_at=grant.get("at", now))
                granted.append(data)
            items.append(data)
    key = f"{now:.6f}:{rows[0]['ask_id']}" if rows else ""
    for data in granted:
        data["batch"] = data["batch"] or key
    if rows:
        live[key] = orjson.loads(orjson.dumps(quota.record(q, key, rows)))
    if items:
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
    limits = limits_from(evolve(ConfigView(), SERVER), S)
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


def give_back(mid: str, step: int = 0) -> dict[str, Any]:
    """The limiter's give-back of a cancelled mail's grant (steps.give_back)."""
    return {"type": "QuotaAsked", "ask_id": f"{mid}:{step}", "message_id": mid,
            "server": "main", "by": "limiter", "give_back": True, "partition": 0}


def test_give_backs_are_folded_as_the_quota_records_them() -> None:
    log, q, live = Log(), quota.Quota(), {}
    agent_batch(log, q, T0, [(T0 - 0.5, [ask("a"), ask("b")])], live)  # the daily 2 used
    # a's mail cancelled: its grant given back, alone in a batch (no answer at all)
    agent_batch(log, q, T0 + 2, [(T0 + 1.99, [give_back("a")])], live)
    agent_batch(log, q, T0 + 3, [(T0 + 2.9, [ask("c")])], live)  # room again: granted
    # b given back in the same batch as d's ask: d granted after it
    agent_batch(log, q, T0 + 4, [(T0 + 3.9, [ask("x"), give_back("b"), ask("d")])], live)
    agent_batch(log, q, T0 + 5, [(T0 + 4.9, [give_back("b")])], live)  # again: nothing new
    folded = fold_quota(S, log.recs)
    last = max(r["at"] for v in live.values() for r in v["grants"] if not r.get("returns"))
    limits = limits_from(evolve(ConfigView(), SERVER), S)
    expected = _quota_comparable(live, last, limits)
    assert folded.rows == expected
    grants = {a for key, rows in folded.rows.items() if key != GIVEN_BACK for a in rows}
    assert grants == {"a:0", "b:0", "c:0", "d:0"}  # x came before b was given back
    returns = folded.rows[GIVEN_BACK]
    assert set(returns) == {"a:0:returned", "b:0:returned"}
    assert returns["a:0:returned"]["returns"] == "a:0"
    assert returns["b:0:returned"]["daily"] == ["server:main"]
