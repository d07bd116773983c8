"""Delivery end to end: publisher -> router -> delivery -> real SMTP
(aiosmtpd on loopback) -> status, through the shared embedded broker.

One worker process runs router, delivery and status together (one
consumer group: each group join costs seconds on Tansu), with short retry
settings. Two tests:

- every path a mail can take, in one worker run: sent (envelope, headers,
  body), 451 on DATA then sent, 550 for one of two recipients, and a
  session failure on the first server moving the mail to the second;
- kill-restart: SIGKILL the worker in the middle of 200 mails, start a new
  one; nothing is lost, a mail goes out twice only when an attempt was
  interrupted (and then the DeliveryAttempted says ``interrupted``), and
  the ledger came back from its changelog, co-partitioned with the input.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from kafka import KafkaAdminClient

from postlane.configops import publish_config
from postlane.publisher import Publisher
from postlane.statusview import FINAL_STATES, fold_change, partition_for, wait_final
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    MessageStatusChanged,
    OutgoingServerConfigured,
    SettingsChanged,
)
from streams.client import ensure_topics, read_topic
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import (
    DELIVERY,
    RELEASED,
    ROUTING_DECIDED,
    SEND_REQUESTED,
    STATUS,
)
from tests.smtp.conftest import HOST, Recorder

from .harness import Worker, committed_everywhere, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

CATCHALL = "mycompany.test"
RETRY = dict(retry_first=1, retry_max=2, retry_give_up=30, attempt_deadline=5, smtp_timeout=3)
PROCESSORS = ("router", "limiter", "delivery", "status")  # one worker, one consumer group
DELIVERY_EVENTS = {"DeliveryStarted": DeliveryStarted, "DeliveryAttempted": DeliveryAttempted}
_POSTLANE_ID = re.compile(rb"^X-Postlane-Id:\s*(\S+)", re.MULTILINE | re.IGNORECASE)


class Sink(Recorder):
    """The tests' Recorder, plus scripted answers to the next DATAs."""

    def __init__(self, data_delay: float = 0.0) -> None:
        super().__init__()
        self.data_replies: list[str] = []
        self.data_delay = data_delay

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_replies:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
            return self.data_replies.pop(0)
        return await super().handle_DATA(server, session, envelope)

    def by_postlane_id(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for m in list(self.messages):
            found = _POSTLANE_ID.search(m.content)
            if found:
                out[found.group(1).decode()] += 1
        return out


@pytest.fixture
def sinks() -> Iterator[Any]:
    """``start(sink) -> port``: aiosmtpd on 127.0.0.1, stopped at teardown."""
    started: list[Controller] = []

    def start(handler: Sink) -> int:
        port = free_port()
        controller = Controller(handler, hostname=HOST, port=port, server_hostname="mx.test",
                                ready_timeout=5.0)
        controller.start()
        started.append(controller)
        return port

    yield start
    for controller in started:
        controller.stop()


def server(name: str, port: int, domain: str, priority: int = 10) -> OutgoingServerConfigured:
    return OutgoingServerConfigured(name=name, host=HOST, port=port, security="none",
                                    from_filter=domain, priority=priority)


def configure(s: Settings, *servers: OutgoingServerConfigured) -> None:
    items: list[tuple[str, Any]] = [("settings", SettingsChanged(catchall_domain=CATCHALL))]
    items += [(srv.key, srv) for srv in servers]
    publish_config(s, items)


def start_worker(s: Settings, tmp_path: Path, n: int) -> Worker:
    return Worker(s, *PROCESSORS, log=tmp_path / f"worker{n}.log",
                  extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()


def delivery_events(s: Settings) -> list[Any]:
    return [e for _, e in read_events(s, DELIVERY, DELIVERY_EVENTS)]


def statuses(s: Settings) -> dict[str, dict[str, Any]]:
    """Every mail's status, folded from the whole status topic."""
    out: dict[str, dict[str, Any]] = {}
    for _, change in read_events(s, STATUS, {"MessageStatusChanged": MessageStatusChanged}):
        assert isinstance(change, MessageStatusChanged)
        out[change.message_id] = fold_change(out.get(change.message_id), change)
    return out


def final(s: Settings, mid: str, worker: Worker) -> dict[str, Any]:
    status = wait_final(s, mid, timeout=60)
    assert status is not None, f"{mid} never final\n" + worker.log_text()[-4000:]
    return status


def test_delivery_paths_sent_deferred_failed_and_failover(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", **RETRY)
    ensure_topics(s)
    main, grey, backup = Sink(), Sink(), Sink()
    grey.data_replies = ["451 4.7.1 greylisted, try again later"]
    main.rcpt_replies["nobody@dest.test"] = ["550 5.1.1 <nobody@dest.test>: no such user"]
    dead_port = free_port()  # nothing listens there
    configure(
        s,
        server("main", sinks(main), "a.test"),
        server("grey", sinks(grey), "b.test"),
        server("dead", dead_port, "d.test", priority=1),
        server("backup", sinks(backup), "d.test", priority=2),
    )
    worker = start_worker(s, tmp_path, 1)
    try:
        with Publisher(settings=s) as pub:
            m_sent = pub.send(from_='"App" <app@a.test>', to=["Bob <bob@dest.test>"],
                              subject="Invoice 42", text="Please find the invoice.")
            m_grey = pub.send(from_="app@b.test", to=["carol@dest.test"], subject="grey",
                              text="greylisted first")
            m_half = pub.send(from_="app@a.test", to=["dave@dest.test", "nobody@dest.test"],
                              subject="half", text="one of two")
            m_fail = pub.send(from_="app@d.test", to=["erin@dest.test"], subject="failover",
                              text="via backup")

        # (a) sent: envelope, headers and body at the sink, then the status
        st = final(s, m_sent, worker)
        assert st["state"] == "sent", st
        assert st["server"] == "main" and st["attempt"] == 1
        rcpt = st["recipients"]["bob@dest.test"]
        assert rcpt["state"] == "sent" and rcpt["code"] == 250 and rcpt["server"] == "main"
        assert rcpt["attempt"] == 1 and "queued" in rcpt["text"]
        got = [m for m in main.messages if b"Invoice 42" in m.content]
        assert len(got) == 1
        assert got[0].mail_from == f"bounce+{m_sent}@{CATCHALL}"
        assert got[0].rcpt_tos == ["bob@dest.test"]
        mail = message_from_bytes(got[0].content, policy=policy.default)
        assert mail["Message-ID"] == f"<{m_sent}@a.test>"
        assert mail["X-Postlane-Id"] == m_sent
        assert mail["From"] == '"App" <app@a.test>' or mail["From"] == "App <app@a.test>"
        assert mail["Subject"] == "Invoice 42"
        assert mail.get_content().strip() == "Please find the invoice."

        # (b) 451 on the first DATA: deferred, then sent by attempt 2
        st = final(s, m_grey, worker)
        assert st["state"] == "sent", st
        assert st["attempt"] == 2
        states = [h["state"] for h in st["history"]]
        assert "deferred" in states and states[-1] == "sent"
        assert states.index("deferred") < len(states) - 1
        deferred = next(h for h in st["history"] if h["state"] == "deferred")
        assert "451" in deferred["reason"] and deferred["attempt"] == 1
        assert st["recipients"]["carol@dest.test"]["attempt"] == 2
        assert len(grey.messages) == 1

        # (c) 550 for one of two: that one failed with the answer kept, the other sent once
        st = final(s, m_half, worker)
        assert st["state"] == "failed", st
        bad, good = st["recipients"]["nobody@dest.test"], st["recipients"]["dave@dest.test"]
        assert bad["state"] == "failed" and bad["code"] == 550
        assert bad["enhanced"] == "5.1.1" and "no such user" in bad["text"]
        assert good["state"] == "sent" and good["code"] == 250
        assert "1 of 2 recipients failed" in st["reason"]
        half = [m for m in main.messages if b"one of two" in m.content]
        assert [m.rcpt_tos for m in half] == [["dave@dest.test"]]

        # (d) nothing listens on the first server: the mail moves to the second
        st = final(s, m_fail, worker)
        assert st["state"] == "sent", st
        assert st["server"] == "backup" and st["attempt"] == 2
        assert st["recipients"]["erin@dest.test"]["server"] == "backup"
        assert len(backup.messages) == 1 and backup.messages[0].rcpt_tos == ["erin@dest.test"]
        attempts = [e for e in delivery_events(s)
                    if isinstance(e, DeliveryAttempted) and e.message_id == m_fail]
        assert [(a.attempt, a.server, a.next_server) for a in attempts] == [
            (1, "dead", "backup"), (2, "backup", "")]
        assert attempts[0].error  # the session error, in words
    finally:
        worker.stop()
    # each mail reached its sink exactly once (no duplicate without a crash)
    assert len(main.messages) == 2 and len(grey.messages) == 1 and len(backup.messages) == 1


def explain_stuck(s: Settings, mids: list[str], sink: Sink) -> str:
    """For a failure: the mails not final, where their inputs sit, and the
    group's committed offsets."""
    st = statuses(s)
    stuck = {m for m in mids if st.get(m, {}).get("state") not in FINAL_STATES}
    counts = sink.by_postlane_id()
    lines = [f"{len(stuck)} mails not final"]
    events = delivery_events(s)
    released = {(r.key or b"").decode(): (r.partition, r.offset)
                for r in read_topic(s, RELEASED.full(s), idle=0.3)}
    for m in sorted(stuck)[:3]:
        history = [(h["state"], h.get("reason", "")) for h in st.get(m, {}).get("history", [])]
        mine = [(type(e).__name__, e.attempt) for e in events if e.message_id == m]
        lines.append(f"  {m}: {counts[m]} at the sink, status {history}, delivery events {mine}"
                     f", released at {released.get(m)}")
    group = f"{s.app_prefix}-{'-'.join(sorted(PROCESSORS))}"
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    for tp, om in sorted(offsets.items()):
        if "changelog" not in tp.topic:
            lines.append(f"  committed {tp.topic} {tp.partition}: {om.offset}")
    for spec in (SEND_REQUESTED, ROUTING_DECIDED):
        for r in read_topic(s, spec.full(s), idle=0.3):
            if r.key and r.key.decode() in stuck:
                lines.append(f"  {spec.name} {r.partition}@{r.offset}: {r.key.decode()}")
    return "\n".join(lines[:200])


def test_kill_restart_loses_nothing_and_duplicates_only_interrupted(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any
) -> None:
    """SIGKILL mid-stream, restart: every mail is delivered, and a mail is
    delivered twice only as often as attempts were interrupted.

    The first 40 mails go out and the group commits its offsets before the
    other 160 are published and the worker is killed among them. (A worker
    killed before its group's first commit on a partition loses that
    partition's input on restart: Faust drops what aiokafka fetched while
    the tables recover, and ``perform_seek`` has no committed offset to
    go back to. That is a Faust/streams issue, reported, not delivery's.)"""
    first, n = 40, 200
    s = isolated_settings(broker.port, tmp_path / "data", **RETRY)
    ensure_topics(s)
    sink = Sink(data_delay=0.005)
    configure(s, server("main", sinks(sink), "a.test"))
    w1 = start_worker(s, tmp_path, 1)
    w2: Worker | None = None

    def publish(start: int, stop: int) -> list[str]:
        with Publisher(settings=s) as pub:
            return [pub.send(from_="app@a.test", to=[f"user{i}@dest.test"],
                             subject=f"mail {i}", text=f"body {i}") for i in range(start, stop)]

    try:
        mids = publish(0, first)
        wait_for(lambda: len(sink.messages) >= first, timeout=90, what="the first mails")
        # no limit is configured: the router releases every mail itself
        # (RoutingDecided.direct), so nothing goes through `released`
        wait_for(lambda: committed_everywhere(
                     s, PROCESSORS, (SEND_REQUESTED, ROUTING_DECIDED, DELIVERY)),
                 timeout=30, what="the group's first commit")
        # the rest published from a thread, so the kill below comes while they
        # are still being published and delivered (publishing alone, one
        # acknowledged mail at a time, can outlast delivery of them all)
        rest: list[str] = []
        publishing = threading.Thread(target=lambda: rest.extend(publish(first, n)))
        publishing.start()
        # SIGKILL once some, not all, of the rest are delivered
        deadline = time.monotonic() + 60
        while len(sink.messages) < first + (n - first) // 4:
            assert time.monotonic() < deadline, "no delivery\n" + w1.log_text()[-4000:]
            assert w1.proc is not None and w1.proc.poll() is None, w1.log_text()[-4000:]
            time.sleep(0.005)
        w1.kill()
        at_kill = len(sink.messages)
        publishing.join(60)
        mids += rest
        assert len(mids) == n
        assert at_kill < n, "every mail went out before the kill: nothing was tested"

        # the new worker joins once the dead one's session has expired, as a
        # supervisor's restart delay would have it. Joining while the dead
        # member is still in the group makes two rebalances at start, and
        # Faust then sometimes loses fetched input (README, known limits)
        time.sleep(s.tuned().session_timeout + 1)
        w2 = start_worker(s, tmp_path, 2)

        def all_final() -> bool:
            st = statuses(s)
            return all(st.get(m, {}).get("state") in FINAL_STATES for m in mids)

        try:
            wait_for(all_final, timeout=90, interval=1.0, what="every mail final")
        except AssertionError:
            print(explain_stuck(s, mids, sink))
            raise
        st = statuses(s)
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()

    counts = sink.by_postlane_id()
    lost = [m for m in mids if counts[m] == 0]
    duplicated = [m for m in mids if counts[m] > 1]
    attempted = [e for e in delivery_events(s) if isinstance(e, DeliveryAttempted)]
    interrupted = [e for e in attempted if e.interrupted]
    print(f"\nkill-restart: {n} mails, {at_kill} at the sink at the kill, "
          f"delivered {sum(1 for m in mids if counts[m])} (total {sum(counts.values())} "
          f"DATA), duplicates {len(duplicated)}, interrupted attempts {len(interrupted)}")
    assert not lost, f"lost: {lost[:5]}"
    assert {st[m]["state"] for m in mids} == {"sent"}
    assert len(duplicated) <= len(interrupted), (duplicated, interrupted)
    assert set(duplicated) <= {e.message_id for e in interrupted}
    assert set(counts) <= set(mids)
    # the restarted worker rebuilt the ledger from its changelog, which is
    # co-partitioned with the input (the key's default-partitioner partition)
    assert w2 is not None and "Error in recovery" not in w2.log_text()
    changelog = f"{s.app_prefix}-{'-'.join(sorted(PROCESSORS))}-delivery-ledger-changelog"
    ledger_keys = {(r.key or b"", r.partition) for r in read_topic(s, changelog, idle=0.3)}
    assert {k.decode() for k, _ in ledger_keys} == set(mids)
    assert all(p == partition_for(k, list(range(s.partitions))) for k, p in ledger_keys)
