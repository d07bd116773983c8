"""The status projection end to end: `postlane worker status` as its own
process, events published with the plain client, and the CLI's read side
(statusview) following the status topic. Uses the shared session broker
(tests/e2e/conftest.py) with its own topic and group prefix
(harness.isolated_settings).

The worker is restarted (SIGTERM) half way: the table must come back from
its changelog, so an older event for the first mail changes nothing while
a second mail still goes through.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, TopicPartition

from postlane.cli import main
from postlane.statusview import partition_for, read_status, wait_final
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    MessageStatusChanged,
    RoutingDecided,
    SendRequested,
    decode,
    encode,
)
from schemas.deadletter import EventDeadLettered
from streams.client import ensure_topics, producer, publish, read_all
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import DEAD_LETTER, DELIVERY, ROUTING_DECIDED, SEND_REQUESTED, STATUS

from .harness import Worker, isolated_settings, settings_env

pytestmark = pytest.mark.e2e

RCPT = "bob@dest.test"


def mail_events(mid: str, t0: float) -> dict[str, Any]:
    req = SendRequested(message_id=mid, from_="admin@example.com", to=[f"Bob <{RCPT}>"],
                        subject=f"hello {mid}", text="hi", occurred_at=t0)
    return {
        "request": req,
        "routing": RoutingDecided(
            message_id=mid, outcome="routed", server="primary", header_from="admin@example.com",
            envelope_from="bounce@example.com", rule="from_filter_domain", reason="test",
            request=req.to_representation(), occurred_at=t0 + 1),
        "started": DeliveryStarted(message_id=mid, attempt=1, server="primary",
                                   recipients=[RCPT], occurred_at=t0 + 2),
        "attempted": DeliveryAttempted(
            message_id=mid, attempt=1, server="primary", occurred_at=t0 + 3,
            outcomes=[{"recipient": RCPT, "status": "accepted", "code": 250,
                       "enhanced": "2.0.0", "text": "Ok: queued as X1"}]),
    }


def publish_mail(s: Settings, mid: str, ev: dict[str, Any]) -> None:
    publish(s, SEND_REQUESTED, [(mid, ev["request"])])
    publish(s, ROUTING_DECIDED, [(mid, ev["routing"])])
    publish(s, DELIVERY, [(mid, ev["started"]), (mid, ev["attempted"])])


def same_partition_id(first: str, partitions: int) -> str:
    want = partition_for(first.encode(), list(range(partitions)))
    for i in range(1000):
        candidate = f"{first}-second-{i}"
        if partition_for(candidate.encode(), list(range(partitions))) == want:
            return candidate
    raise AssertionError("no id on the same partition")


def explain(s: Settings, w: Worker) -> str:
    """What the status topic holds, and the worker's log tail, for a failure message."""
    changes = [decode(MessageStatusChanged, r.value) for r in read_all(s, STATUS, idle=0.3)]
    held = [(c.message_id, c.previous, c.state) for c in changes]
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=f"{s.app_prefix}-status",
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(spec.full(s), p) for spec in (SEND_REQUESTED, ROUTING_DECIDED,
                                                            DELIVERY) for p in range(s.partitions)]
        ends = consumer.end_offsets(tps)
        offsets = {f"{tp.topic}[{tp.partition}]": (consumer.committed(tp), ends[tp]) for tp in tps}
    finally:
        consumer.close()
    return (f"status topic: {held}\ncommitted/end offsets: {offsets}\n"
            f"worker log:\n{w.log_text()[-3000:]}")


def start_worker(s: Settings, tmp_path: Path, n: int) -> Worker:
    return Worker(s, "status", log=tmp_path / f"worker{n}.log",
                  extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()


def stop_worker(w: Worker) -> None:
    """SIGTERM by PID; the worker must exit cleanly."""
    w.stop()
    assert w.proc is not None and w.proc.returncode == 0, w.log_text()[-4000:]


def test_status_projection_survives_a_restart(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    m1 = "e2e-status-1"
    m2 = same_partition_id(m1, s.partitions)  # ordered after m1's events on each topic
    first = mail_events(m1, 1_795_000_000.0)

    w1 = start_worker(s, tmp_path, 1)
    try:
        publish_mail(s, m1, first)
        # garbage on an input topic is dead-lettered, not crashed on
        p = producer(s)
        try:
            p.send(DELIVERY.full(s), key=b"junk", value=b"{not json").get(10)
            # a valid event under another key would split a mail's status
            # over two partitions: refused too
            other = mail_events("other-mail", 1_795_000_000.0)["request"]
            p.send(SEND_REQUESTED.full(s), key=b"wrong-key", value=encode(other)).get(10)
        finally:
            p.close()
        status = wait_final(s, m1, timeout=40)
        assert status is not None, explain(s, w1)
        assert status["state"] == "sent"
        assert status["server"] == "primary" and status["attempt"] == 1
        assert status["recipients"][RCPT] == {
            "state": "sent", "code": 250, "enhanced": "2.0.0", "text": "Ok: queued as X1",
            "server": "primary", "attempt": 1,
        }
        # one agent reads three topics: Faust interleaves them in any order
        # (routing often comes after the delivery events), so only the end is fixed
        states = [h["state"] for h in status["history"]]
        assert states[-1] == "sent" and set(states) <= {"queued", "sending", "sent"}
    finally:
        stop_worker(w1)
    # Tansu numbers a new group's first generation 0, and aiokafka sends
    # LeaveGroup only when generation > 0: the first worker never leaves, and
    # stays a member until its session (6 s) expires. A replacement joining
    # while that expiry happens once sat idle with every partition assigned;
    # let the session run out first.
    time.sleep(s.session_timeout)

    w2 = start_worker(s, tmp_path, 2)
    try:
        # an older event for m1 (a redelivered start with a new event_id):
        # only a rebuilt table knows it is older than the outcome
        stale = DeliveryStarted(message_id=m1, attempt=1, server="primary", recipients=[RCPT],
                                occurred_at=1_795_000_002.0)
        publish(s, DELIVERY, [(m1, stale)])
        publish_mail(s, m2, mail_events(m2, 1_795_000_100.0))
        status2 = wait_final(s, m2, timeout=40)
        assert status2 is not None, explain(s, w2)
        assert status2["state"] == "sent"
        assert status2["recipients"][RCPT]["code"] == 250
        assert read_status(s, m1) == status  # unchanged: the table was rebuilt
    finally:
        stop_worker(w2)

    dead = [decode(EventDeadLettered, r.value) for r in read_all(s, DEAD_LETTER, idle=0.3)]
    by_key = {d.key: d for d in dead}
    assert sorted(by_key) == ["junk", "wrong-key"]
    assert all(d.processor == "status" for d in dead)
    assert "not JSON" in by_key["junk"].error
    assert "is not the message_id 'other-mail'" in by_key["wrong-key"].error

    # the CLI reads the same status
    env = {k: v for k, v in settings_env(s).items() if k.startswith("POSTLANE_")}
    runner = CliRunner()
    out = runner.invoke(main, ["status", m1, "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert orjson.loads(out.output)["state"] == "sent"
    out = runner.invoke(main, ["status", m1], env=env)
    assert out.exit_code == 0, out.output
    assert out.output.startswith(f"{m1} sent\n")
    assert f"{RCPT}  sent      250 2.0.0 Ok: queued as X1" in out.output
    out = runner.invoke(main, ["status", "no-such-mail"], env=env)
    assert out.exit_code == 1
