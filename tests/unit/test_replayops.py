"""Replay folds (pure parts): records in, comparable rows out."""

from __future__ import annotations

import orjson

from postlane import replayops
from postlane.logread import Rec
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    MailReleased,
    RoutingDecided,
    SendRequested,
    encode,
)
from streams.settings import Settings

S = Settings.from_env(environ={}, topic_prefix="t.", app_prefix="t")
RCPT = "bob@x.test"


def rec(topic: str, key: str, event: object, at: float, offset: int = 0) -> Rec:
    return Rec(f"t.{topic}", 0, offset, int(at * 1000), key.encode(), encode(event))  # type: ignore[arg-type]


def mail(mid: str, t0: float) -> list[Rec]:
    req = SendRequested(message_id=mid, from_="a@a.test", to=[RCPT], subject="s", text="t",
                        occurred_at=t0)
    dec = RoutingDecided(message_id=mid, outcome="routed", server="main",
                         header_from="a@a.test", request=req.to_representation(),
                         occurred_at=t0 + 1)
    return [rec("send-requested", mid, req, t0), rec("routing-decided", mid, dec, t0 + 1),
            rec("released", mid, MailReleased(message_id=mid, lane="transactional",
                                              decision=dec.to_representation(),
                                              occurred_at=t0 + 2), t0 + 2)]


def test_ledger_interrupted_attempt_and_duplicates() -> None:
    mid = "m-1"
    recs = mail(mid, 100.0)
    s1 = DeliveryStarted(message_id=mid, attempt=1, server="main", recipients=[RCPT],
                         occurred_at=103.0)
    s2 = DeliveryStarted(message_id=mid, attempt=2, server="main", recipients=[RCPT],
                         occurred_at=110.0)
    ok = DeliveryAttempted(message_id=mid, attempt=2, server="main", interrupted=True,
                           outcomes=[{"recipient": RCPT, "status": "accepted", "code": 250}],
                           occurred_at=111.0)
    recs += [rec("delivery", mid, s1, 103.0, 1), rec("delivery", mid, s1, 103.5, 2),
             rec("delivery", mid, s2, 110.0, 3), rec("delivery", mid, ok, 111.0, 4)]
    rows = replayops.fold_ledger(S, recs).rows
    assert rows[mid] == {"server": "main", "attempt": 2, "inflight": False, "done": True,
                         "cancelled": False, "pending": [], "accepted": [RCPT], "failed": [],
                         "interrupted_attempts": 1, "commands": []}


def test_status_rows_from_every_source_in_time_order() -> None:
    mid = "m-2"
    recs = mail(mid, 200.0)
    recs.append(rec("delivery", mid, DeliveryStarted(
        message_id=mid, attempt=1, server="main", recipients=[RCPT], occurred_at=203.0), 203.0))
    recs.append(rec("delivery", mid, DeliveryAttempted(
        message_id=mid, attempt=1, server="main", occurred_at=204.0,
        outcomes=[{"recipient": RCPT, "status": "failed", "code": 550, "enhanced": "5.1.1"}]),
        204.0))
    recs.append(Rec("t.delivery", 0, 9, 205_000, b"m-2", b"garbage"))
    folded = replayops.fold_status(S, list(reversed(recs)))  # any read order: time decides
    row = folded.rows[mid]
    assert row["state"] == "failed" and row["attempt"] == 1
    assert row["recipients"][RCPT]["state"] == "failed"
    assert row["recipients"][RCPT]["code"] == 550
    assert folded.skipped == 1 and len(row["events"]) == 5


def test_changelog_choice_and_differences() -> None:
    topics = ["t-dev-status-changelog", "t-delivery-limiter-router-status-status-changelog"]
    assert replayops.pick_changelog(S, "status", "status", topics) == topics[1]
    assert replayops.pick_changelog(S, "status", "status", ["t-dev-status-changelog"]) \
        == "t-dev-status-changelog"
    assert replayops.pick_changelog(S, "status", "status", []) is None
    diffs = replayops.differences({"a": {"x": 1}, "b": {"x": 2}}, {"a": {"x": 1}, "c": {}})
    assert diffs == ['b: replay {"x":2} / live none', "c: replay none / live {}"]


def _limited(mid: str, t0: float, dec: RoutingDecided, decision: dict[str, object]) -> list[Rec]:
    """A non-direct decision ``dec`` on routing-decided, then its release
    carrying ``decision`` and an attempt started."""
    start = DeliveryStarted(message_id=mid, attempt=1, server="main", recipients=[RCPT],
                            occurred_at=t0 + 3)
    return [rec("routing-decided", mid, dec, t0 + 1),
            Rec("t.released", 0, 0, int((t0 + 2) * 1000), mid.encode(), orjson.dumps({
                **MailReleased(message_id=mid, lane="transactional", decision=dict(dec.asdict()),
                               occurred_at=t0 + 2).to_representation(), "decision": decision})),
            rec("delivery", mid, start, t0 + 3, 1)]


def test_ledger_release_takes_the_limiters_decision_only_when_its_json_is_the_same() -> None:
    mid = "m-3"
    req = SendRequested(message_id=mid, from_="a@a.test", to=[RCPT], subject="s", text="t",
                        occurred_at=300.0)
    dec = RoutingDecided(message_id=mid, outcome="routed", server="main", direct=False,
                         header_from="a@a.test", request=req.to_representation(),
                         occurred_at=301.0)
    decision = dec.to_representation()
    same = replayops.fold_ledger(S, _limited(mid, 300.0, dec, dict(decision)))
    assert same.skipped == 0 and same.rows[mid]["attempt"] == 1 and same.rows[mid]["inflight"]
    # equal in Python (1 == 1.0) but not the same JSON: decoded on its own, and
    # refused as the delivery processor refuses it (schema must be an int)
    other = replayops.fold_ledger(S, _limited(mid, 300.0, dec, {**decision, "schema": 1.0}))
    assert other.skipped == 2 and mid not in other.rows  # the release, then its start


def test_ledger_routing_record_after_its_release_is_decoded_unless_the_same_json() -> None:
    mid = "m-4"
    req = SendRequested(message_id=mid, from_="a@a.test", to=[RCPT], subject="s", text="t",
                        occurred_at=400.0)
    dec = RoutingDecided(message_id=mid, outcome="routed", server="main", direct=False,
                         header_from="a@a.test", request=req.to_representation(),
                         occurred_at=401.0)
    decision = dec.to_representation()
    late = 402_500  # the record on routing-decided after the release (t0 + 2)
    recs = _limited(mid, 400.0, dec, dict(decision))
    same = [*recs[1:], Rec("t.routing-decided", 0, 5, late, mid.encode(), encode(dec))]
    folded = replayops.fold_ledger(S, same)
    assert folded.skipped == 0 and folded.folded == 2 and folded.rows[mid]["attempt"] == 1
    # the same decision but not the same JSON (schema 1.0): decoded, and refused
    other = [*recs[1:], Rec("t.routing-decided", 0, 5, late, mid.encode(),
                            orjson.dumps({**decision, "schema": 1.0}))]
    folded = replayops.fold_ledger(S, other)
    assert folded.skipped == 1 and folded.rows[mid]["attempt"] == 1


def test_in_order_is_time_then_topic_then_offset() -> None:
    import random

    from streams.topics import DELIVERY, RELEASED, ROUTING_DECIDED

    specs = (RELEASED, ROUTING_DECIDED, DELIVERY)
    rank = {spec.full(S): i for i, spec in enumerate(specs)}
    rnd = random.Random(7)
    topics = [*rank, "t.other"]
    recs = [Rec(rnd.choice(topics), rnd.randrange(4), rnd.randrange(50),
                rnd.choice([-1, 0, 5, 1_700_000_000_000, 1_700_000_000_001]), b"k", b"v")
            for _ in range(3000)]  # many ties of time, of topic and of offset
    want = sorted(recs, key=lambda r: (r.timestamp_ms, rank.get(r.topic, 99), r.offset))
    got = replayops.in_order(recs, specs, S)
    # records equal in all three keep their order in both: compare the keys and the records
    assert [(r.timestamp_ms, r.topic, r.offset) for r in got] == \
        [(r.timestamp_ms, r.topic, r.offset) for r in want]
    assert got == want


def test_a_changelog_is_named_as_faust_names_it() -> None:
    import faust

    from streams.tables import STATUS, changelog_topic

    app = faust.App("postlane-limiter-status", broker="kafka://127.0.0.1:1")
    table = app.Table(STATUS.name)
    assert STATUS.changelog(app.conf.id) == table.changelog_topic.get_topic_name()
    assert changelog_topic("postlane-dev", "status") == "postlane-dev-status-changelog"
