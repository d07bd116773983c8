"""Delivery reads a mail's decision back from the record its first attempt
came from (``processors/delivery/claim.py``), on the real broker: records
written in one producer batch, read by the offset of one in the middle. A
worker that read one back and is then stopped (SIGTERM) sends QUIT to its
SMTP server and stops the claim reader's consumer (tests/e2e/test_delivery_stop_e2e.py
checks that in-process)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.smtp import Envelope, Session
from kafka import KafkaConsumer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from postlane.publisher import Publisher
from processors.delivery import claim, core
from schemas import DeliveryAttempted, MailReleased, RoutingDecided, SendRequested, encode
from streams.client import ensure_topics, producer, read_topic
from streams.embedded import EmbeddedBroker
from streams.offsets import true_end_offsets_sync
from streams.settings import Settings
from streams.topics import RELEASED, ROUTING_DECIDED, SEND_REQUESTED, TopicSpec

from .harness import Worker, isolated_settings, wait_for
from .test_delivery_e2e import (
    PROCESSORS,
    RETRY,
    Sink,
    configure,
    delivery_events,
    server,
    sinks,  # noqa: F401 - the fixture
    start_worker,
)

pytestmark = pytest.mark.e2e


def decision(i: int) -> RoutingDecided:
    req = SendRequested(message_id=f"m{i}", from_="app@a.test", to=[f"u{i}@dest.test"],
                        subject=f"mail {i}", text=f"body {i}\n" * 50)
    return RoutingDecided(message_id=f"m{i}", outcome="routed", server="main",
                          header_from="app@a.test", envelope_from="bounce@a.test",
                          rule="first_server", request=req.to_representation(), direct=True)


def test_a_request_is_read_back_by_its_offset(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    p = producer(s)
    decided, released = ROUTING_DECIDED.full(s), RELEASED.full(s)
    try:
        # sent without waiting in between: several share a producer batch
        futures = [p.send(decided, key=f"m{i}".encode(), value=encode(decision(i)), partition=1)
                   for i in range(10)]
        offsets = [f.get(15).offset for f in futures]
        rel = MailReleased(message_id="m3", lane="transactional",
                           decision=decision(3).to_representation())
        rel_offset = p.send(released, key=b"m3", value=encode(rel), partition=0).get(15).offset
    finally:
        p.close()

    async def run() -> None:
        reader = claim.DecisionReader(s, timeout=3.0)
        try:
            got = await reader.decision("m6", core.body_at(decided, 1, offsets[6]))
            assert got.message_id == "m6" and got.request["text"] == "body 6\n" * 50
            got = await reader.decision("m2", core.body_at(decided, 1, offsets[2]))  # backwards
            assert got.request["subject"] == "mail 2"
            got = await reader.decision("m3", core.body_at(released, 0, rel_offset))
            assert got.request["to"] == ["u3@dest.test"] and got.header_from == "app@a.test"
            assert reader.reads == 3
            with pytest.raises(claim.DecisionUnreadable, match="not this mail's decision"):
                await reader.decision("m7", core.body_at(decided, 1, offsets[6]))
            with pytest.raises(claim.DecisionUnreadable, match="no record within"):
                await reader.decision("m6", core.body_at(decided, 1, offsets[-1] + 5))
        finally:
            await reader.close()

    asyncio.run(run())


class HangFirstData(Sink):
    """Answers the first DATA only after ``hang`` s (the worker sending it
    is killed meanwhile); every later one at once."""

    def __init__(self, hang: float) -> None:
        super().__init__()
        self.hang = hang
        self.hung = 0
        self.quits = 0

    async def handle_QUIT(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if not self.hung:
            self.hung = 1
            await asyncio.sleep(self.hang)
            return "451 4.3.0 too late"
        return await super().handle_DATA(server, session, envelope)


class AsFaust(RangePartitionAssignor):
    """The range assignor under the name of Faust's: the broker keeps the
    group's protocol, and a member of another one may not join."""

    name = "faust"


def commit_past_everything(s: Settings, specs: tuple[TopicSpec, ...]) -> None:
    """Commit the worker group's offsets at the end of ``specs``: the input
    of the attempt in flight is not delivered again after the restart."""
    group = f"{s.app_prefix}-{'-'.join(sorted(PROCESSORS))}"
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=group,
                             enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000,
                             partition_assignment_strategy=[AsFaust])
    try:
        tps = [KafkaTopicPartition(spec.full(s), p) for spec in specs
               for p in range(s.partitions)]
        consumer.subscribe([spec.full(s) for spec in specs])  # a member: it may commit
        deadline = time.monotonic() + 30
        while set(consumer.assignment()) != set(tps):
            assert time.monotonic() < deadline, f"not assigned: {consumer.assignment()}"
            consumer.poll(timeout_ms=200, max_records=1)
        ends = true_end_offsets_sync(consumer, tps)
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in tps})
    finally:
        consumer.close()


def test_a_restart_reads_the_decision_back_when_its_input_is_not_redelivered(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any,  # noqa: F811 - the fixture
) -> None:
    """A worker killed during a mail's first SMTP transaction, with the
    group's offsets past the mail's records (as when the attempt's batch
    was acknowledged): the restarted worker's ledger row holds no decision
    and no body, nothing delivers the input again; the retry timer finds
    the attempt orphaned and delivery reads the decision back from the
    record at ``body_at``. The mail goes out once, marked interrupted."""
    s = isolated_settings(broker.port, tmp_path / "data", **{
        **RETRY, "smtp_timeout": 60, "attempt_deadline": 120})
    ensure_topics(s)
    sink = HangFirstData(hang=90)
    configure(s, server("main", sinks(sink), "a.test"))
    w1 = start_worker(s, tmp_path, 1)
    w2: Worker | None = None
    try:
        with Publisher(settings=s) as pub:
            mid = pub.send(from_="app@a.test", to=["user@dest.test"], subject="once",
                           text="the body the ledger row does not carry\n" * 20)
        wait_for(lambda: sink.hung, timeout=60, what="the first DATA")
        w1.kill()
        changelog = f"{s.app_prefix}-{'-'.join(sorted(PROCESSORS))}-delivery-ledger-changelog"
        rows = [orjson.loads(r.value) for r in read_topic(s, changelog, idle=0.3)
                if r.key == mid.encode() and r.value]
        assert rows and rows[-1]["inflight"] and rows[-1]["body_at"], rows
        assert "text" not in rows[-1]["decision"]["request"]
        time.sleep(s.tuned().session_timeout + 1)  # the dead member leaves the group
        commit_past_everything(s, (SEND_REQUESTED, ROUTING_DECIDED))
        w2 = start_worker(s, tmp_path, 2)
        wait_for(lambda: sink.by_postlane_id()[mid] >= 1, timeout=90,
                 what="the mail at the sink\n" + w2.log_text()[-3000:])
        time.sleep(2)  # a duplicate would come now
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()
    assert sink.by_postlane_id()[mid] == 1
    got = [m.content for m in sink.messages]
    assert b"the body the ledger row does not carry" in got[0]
    attempted = [e for e in delivery_events(s) if isinstance(e, DeliveryAttempted)]
    assert [(e.attempt, e.interrupted) for e in attempted] == [(2, True)], attempted
    assert "decision read back from" in w2.log_text()
    # stopped with SIGTERM: the pool's session got a QUIT (w1, killed, sent none),
    # and the claim reader's consumer was stopped
    assert sink.quits >= 1, w2.log_text()[-3000:]
    assert "claim reader closed (1 decision(s) read back)" in w2.log_text()
