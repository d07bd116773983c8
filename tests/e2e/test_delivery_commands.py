"""Operators' commands at the delivery processor, end to end: a real
``postlane worker delivery`` against the shared embedded broker and an
aiosmtpd server on loopback.

The limiter (which forwards commands for mail it no longer holds) is not
part of this run: the test publishes the MailReleased and the forwarded
QueueCommandIssued on ``released`` itself, and reads the answers on
``command-results`` and the attempts on ``delivery``. In one worker run:

- 550 -> failed; ``retry`` (published twice: a redelivery) is applied once,
  and attempt 2 delivers it to the server that now accepts;
- 451 -> deferred; ``cancel`` is applied (QueueCommandApplied and
  MessageCancelled), and the mail is never attempted again nor delivered;
- 451 -> deferred; ``send_now`` starts attempt 2 well before its retry time;
- refusals in words: ``retry`` of a sent mail, ``cancel`` of a mail
  delivery never saw; ``ack`` is not delivery's and gets no answer here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from postlane.configops import publish_config
from processors.delivery import core
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MailReleased,
    MessageCancelled,
    OutgoingServerConfigured,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
)
from streams.client import ensure_topics, publish
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import COMMAND_RESULTS, DELIVERY, RELEASED
from tests.smtp.conftest import HOST, Recorder

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

CATCHALL = "mycompany.test"
RETRY_FIRST = 12.0  # long enough for a command to land while the mail is deferred
SETTINGS = dict(retry_first=RETRY_FIRST, retry_max=24, retry_give_up=3600,
                attempt_deadline=5, smtp_timeout=3)
DELIVERY_EVENTS: dict[str, type[Event]] = {
    "DeliveryStarted": DeliveryStarted, "DeliveryAttempted": DeliveryAttempted}
RESULT_EVENTS: dict[str, type[Event]] = {
    "QueueCommandApplied": QueueCommandApplied, "QueueCommandRefused": QueueCommandRefused,
    "MessageCancelled": MessageCancelled}


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Recorder, int]]:
    sink = Recorder()
    port = free_port()
    controller = Controller(sink, hostname=HOST, port=port, server_hostname="mx.test",
                            ready_timeout=5.0)
    controller.start()
    yield sink, port
    controller.stop()


def released(mid: str, to: str) -> MailReleased:
    req = SendRequested(message_id=mid, from_="app@a.test", to=[to], subject=f"mail {mid}",
                        text=f"body of {mid}")
    decision = RoutingDecided(
        message_id=mid, outcome="routed", server="main", header_from="app@a.test",
        envelope_from=f"bounce+{mid}@{CATCHALL}", rule="from_filter_domain",
        request=req.to_representation())
    return MailReleased(message_id=mid, lane="transactional",
                        decision=dict(decision.to_representation()))


def command(mid: str, what: str, cid: str) -> QueueCommandIssued:
    return QueueCommandIssued(message_id=mid, command=what, operator="ann@ops", event_id=cid)


def attempts(s: Settings, mid: str) -> list[Any]:
    return [e for _, e in read_events(s, DELIVERY, DELIVERY_EVENTS) if e.message_id == mid]


def outcome(s: Settings, mid: str, attempt: int) -> DeliveryAttempted | None:
    for e in attempts(s, mid):
        if isinstance(e, DeliveryAttempted) and e.attempt == attempt:
            return e
    return None


def answers(s: Settings, cid: str) -> list[Any]:
    return [e for _, e in read_events(s, COMMAND_RESULTS, RESULT_EVENTS)
            if e.command_id == cid]


def test_retry_cancel_send_now_and_refusals(
    broker: EmbeddedBroker, tmp_path: Path, smtp_sink: tuple[Recorder, int]
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", **SETTINGS)
    ensure_topics(s)
    sink, port = smtp_sink
    sink.rcpt_replies["fail@dest.test"] = ["550 5.1.1 <fail@dest.test>: no such user"]
    sink.rcpt_replies["defer@dest.test"] = ["451 4.7.1 try again later"] * 20
    sink.rcpt_replies["grey@dest.test"] = ["451 4.7.1 greylisted"]
    main = OutgoingServerConfigured(name="main", host=HOST, port=port, security="none",
                                    from_filter="a.test")
    publish_config(s, [("settings", SettingsChanged(catchall_domain=CATCHALL)),
                       (main.key, main)])
    worker = Worker(s, "delivery", log=tmp_path / "worker.log",
                    extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()

    def fail_log(what: str) -> str:
        return f"{what}\n" + worker.log_text()[-4000:]

    m_fail, m_defer, m_grey, m_sent = "m-fail", "m-defer", "m-grey", "m-sent"
    try:
        publish(s, RELEASED, [(m, released(m, f"{m[2:]}@dest.test"))
                              for m in (m_fail, m_defer, m_grey, m_sent)])
        first: dict[str, DeliveryAttempted] = {}
        for m in (m_fail, m_defer, m_grey, m_sent):
            first[m] = wait_for(lambda m=m: outcome(s, m, 1),  # type: ignore[misc]
                                timeout=90, what=fail_log(m))
        assert [o["status"] for o in first[m_fail].outcomes] == ["failed"]
        assert [o["status"] for o in first[m_defer].outcomes] == ["deferred"]
        assert [o["status"] for o in first[m_grey].outcomes] == ["deferred"]
        assert [o["status"] for o in first[m_sent].outcomes] == ["accepted"]
        deferred_until = first[m_defer].next_attempt_at
        grey_until = first[m_grey].next_attempt_at
        assert deferred_until > time.time() and grey_until > time.time()

        retry, cancel, now = command(m_fail, "retry", "cmd-retry"), \
            command(m_defer, "cancel", "cmd-cancel"), command(m_grey, "send_now", "cmd-now")
        publish(s, RELEASED, [
            (m_defer, cancel), (m_grey, now), (m_fail, retry),
            (m_fail, retry),  # redelivered: applied once, answered once
            (m_sent, command(m_sent, "retry", "cmd-sent")),
            ("m-unknown", command("m-unknown", "cancel", "cmd-unknown")),
            (m_sent, command(m_sent, "ack", "cmd-ack")),
        ])

        # retry: applied once, attempt 2 delivers to the server that now accepts
        second = wait_for(lambda: outcome(s, m_fail, 2), timeout=60, what=fail_log("retry"))
        assert [o["status"] for o in second.outcomes] == ["accepted"]
        got = answers(s, "cmd-retry")
        assert len(got) == 1 and isinstance(got[0], QueueCommandApplied), got
        assert got[0].event_id == core.result_id("cmd-retry") and got[0].by == "delivery"
        assert "retrying 1 failed recipient" in got[0].detail
        started = [e for e in attempts(s, m_fail) if isinstance(e, DeliveryStarted)]
        assert [(e.attempt, e.recipients) for e in started] == [
            (1, ["fail@dest.test"]), (2, ["fail@dest.test"])]
        assert [m.rcpt_tos for m in sink.messages if b"body of m-fail" in m.content] == [
            ["fail@dest.test"]]

        # send-now: attempt 2 starts long before the retry time, and is accepted
        second = wait_for(lambda: outcome(s, m_grey, 2), timeout=30, what=fail_log("send_now"))
        assert [o["status"] for o in second.outcomes] == ["accepted"]
        started_2 = next(e for e in attempts(s, m_grey)
                         if isinstance(e, DeliveryStarted) and e.attempt == 2)
        assert started_2.occurred_at < grey_until - RETRY_FIRST / 3
        got = answers(s, "cmd-now")
        assert len(got) == 1 and isinstance(got[0], QueueCommandApplied), got

        # cancel: applied, MessageCancelled, never attempted again
        got = wait_for(lambda: answers(s, "cmd-cancel"), timeout=30, what=fail_log("cancel"))
        assert {type(e) for e in got} == {QueueCommandApplied, MessageCancelled}, got
        gone = next(e for e in got if isinstance(e, MessageCancelled))
        assert gone.event_id == core.cancelled_id("cmd-cancel") and gone.by == "delivery"
        assert "ann@ops" in gone.reason and "defer@dest.test" in gone.reason

        # refusals, in words; ack gets no answer from delivery
        got = wait_for(lambda: answers(s, "cmd-unknown"), timeout=30, what=fail_log("unknown"))
        assert len(got) == 1 and isinstance(got[0], QueueCommandRefused)
        assert got[0].reason.startswith("m-unknown has no delivery record")
        got = answers(s, "cmd-sent")
        assert len(got) == 1 and isinstance(got[0], QueueCommandRefused)
        assert got[0].reason == "m-sent was sent to every recipient: nothing to retry"
        assert answers(s, "cmd-ack") == []

        # past the cancelled mail's retry time: nothing more happened to it
        time.sleep(max(0.0, deferred_until + 4 - time.time()))
        assert [(type(e).__name__, e.attempt) for e in attempts(s, m_defer)] == [
            ("DeliveryStarted", 1), ("DeliveryAttempted", 1)]
        # a cancelled mail's release, redelivered, is skipped too
        publish(s, RELEASED, [(m_defer, released(m_defer, "defer@dest.test"))])
        time.sleep(3)
        assert len(attempts(s, m_defer)) == 2
        assert worker.proc is not None and worker.proc.poll() is None, fail_log("worker died")
    finally:
        worker.stop()
    assert not any(b"body of m-defer" in m.content for m in sink.messages)
    assert sum(b"body of m-grey" in m.content for m in sink.messages) == 1
    assert sum(b"body of m-sent" in m.content for m in sink.messages) == 1
    assert "Traceback" not in worker.log_text(), worker.log_text()[-4000:]
