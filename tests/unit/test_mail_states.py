"""postlane_mails{state} and the request-to-sent latency, counted from the
status table's rows (streams/mail_states.py): the state read from a real
row, moves between states, a rebuild, and the rows of the partitions a
worker holds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge, Histogram

from processors.status.agent import dump
from processors.status.core import MessageStatus, evolve
from schemas import DeliveryAttempted, SendRequested
from streams import mail_states
from streams.partitioning import partition_for
from streams.tables import encode_row


def rows(mid: str) -> tuple[bytes, bytes]:
    """A mail's row after its request, and after its accepted attempt (3 s later)."""
    req = SendRequested(message_id=mid, from_="a@x.test", to=["b@y.test"], subject="s",
                        text="t", occurred_at=100.0)
    queued, _ = evolve(None, req)
    sent, _ = evolve(queued, DeliveryAttempted(
        message_id=mid, attempt=1, server="s1", occurred_at=103.0,
        outcomes=[{"recipient": "b@y.test", "status": "accepted", "code": 250}]))
    return encode_row(dump(queued)), encode_row(dump(sent))  # as the table holds them


def test_the_state_is_read_from_a_real_row_without_parsing_it() -> None:
    queued, sent = rows('m"1')  # a quote in the id is escaped: it cannot look like the key
    for raw in (queued, sent):
        assert mail_states.state_of(raw) == orjson.loads(raw)["state"]
    assert mail_states.state_of(sent) == "sent" and mail_states.latency_of(sent) == 3.0
    assert mail_states.state_of(None) is None and mail_states.state_of(b"not json") is None
    assert mail_states.state_of(orjson.dumps(MessageStatus(message_id="x", state="failed"))
                                ) == "failed"


def test_counts_follow_the_rows_written_and_observe_latency_once() -> None:
    counts = mail_states.MailCounts()
    q1, s1 = rows("m1")
    q2, _ = rows("m2")
    assert counts.change(None, q1) == ({"queued"}, None)
    assert counts.change(None, q2) == ({"queued"}, None)
    assert counts.change(q1, q1) == (set(), None)  # history only: no state change
    assert counts.change(q1, s1) == ({"queued", "sent"}, 3.0)
    assert counts.change(s1, s1) == (set(), None)  # sent again (a redelivery): not observed
    assert dict(+counts.counts) == {"queued": 1, "sent": 1}
    counts.change(q2, None)  # a row removed
    assert dict(+counts.counts) == {"sent": 1}
    changed = counts.rebuild([q1, q2, s1])
    assert dict(counts.counts) == {"queued": 2, "sent": 1} and "failed" in changed


def test_a_worker_counts_only_the_partitions_it_holds() -> None:
    keys = [f"m{i}".encode() for i in range(40)]
    mine = {partition_for(k, 4) for k in keys[:1]}
    store: dict[bytes, bytes] = {k: rows(k.decode())[0] for k in keys}
    table = SimpleNamespace(partitions=4, changelog_topic_name="p-status-changelog", data=store)

    def app(held: set[int]) -> Any:
        tps = [SimpleNamespace(topic="p-status-changelog", partition=p) for p in held]
        tps.append(SimpleNamespace(topic="p.send-requested", partition=3))  # not the table's
        return SimpleNamespace(conf=SimpleNamespace(topic_partitions=4),
                               assignor=SimpleNamespace(assigned_actives=lambda: tps))

    assert len(mail_states.held_rows(app({0, 1, 2, 3}), table)) == 40
    held = mail_states.held_rows(app(mine), table)
    assert len(held) == sum(1 for k in keys if partition_for(k, 4) in mine) < 40


async def test_the_gauge_is_rebuilt_when_a_rebalance_ends() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("t_mails", "", ["state"], registry=registry)
    hist = Histogram("t_latency", "", registry=registry)
    q1, s1 = rows("m1")
    store = {b"m1": q1}
    table = SimpleNamespace(name="status", partitions=1, changelog_topic_name="c", data=store)
    connected: list[Any] = []
    app = SimpleNamespace(
        tables={"status": table}, conf=SimpleNamespace(topic_partitions=1),
        assignor=SimpleNamespace(assigned_actives=lambda: [SimpleNamespace(topic="c",
                                                                           partition=0)]),
        on_rebalance_complete=SimpleNamespace(connect=connected.append))
    states = mail_states.MailStates(app, gauge, hist).install()
    await connected[0](app)
    assert registry.get_sample_value("t_mails", {"state": "queued"}) == 1.0
    assert registry.get_sample_value("t_mails", {"state": "sent"}) == 0.0
    states.on_set(table, b"m1", s1)  # the sensor sees the write before the store does
    assert registry.get_sample_value("t_mails", {"state": "sent"}) == 1.0
    assert registry.get_sample_value("t_mails", {"state": "queued"}) == 0.0
    assert registry.get_sample_value("t_latency_sum") == 3.0
