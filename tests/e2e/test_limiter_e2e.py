"""The limiter end to end, through the embedded broker with a real aiosmtpd
server: daily limit with deferral in words, a SIGKILL and restart in the
middle of the window (counts come back from the log: nothing re-sent,
nothing over-sent), the ops commands the limiter owns, lanes (an invoice
published after two campaigns goes out before them; campaigns in creation
order) and send_at.

Exact limits (issue 15): 4 partitions and 2 limiter workers, a daily limit of
10 and 25 mails send exactly 10 (15 deferred, in words), also when the
worker owning the quota is killed with SIGKILL after 5 sends; a tenant's
limit over two servers; a failover and a 4xx retry counted on the server
that took them; a server rate and a domain rate held within 5% by 2 limiter
workers over 4 partitions."""

from __future__ import annotations

import bisect
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from postlane.configops import publish_config
from postlane.publisher import Publisher
from processors.limiter.windows import next_window, words
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    DomainPaceConfigured,
    Event,
    EventDeadLettered,
    MailHeld,
    MailReleased,
    MessageCancelled,
    MessageStatusChanged,
    OutgoingServerConfigured,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    QuotaAsked,
    QuotaGranted,
    QuotaRefused,
    QuotasAnswered,
    QuotasAsked,
    SettingsChanged,
    TenantConfigured,
)
from streams.client import ensure_topics, publish
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import (
    COMMAND_RESULTS,
    COMMANDS,
    DEAD_LETTER,
    DELIVERY,
    DELIVERY_QUOTA,
    HELD,
    QUOTA,
    QUOTA_ANSWERS,
    RELEASED,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    STATUS,
)
from tests.smtp.conftest import HOST

from .harness import Worker, isolated_settings, read_events, wait_for
from .test_delivery_e2e import Sink, server, sinks  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

PROCESSORS = ("router", "limiter", "delivery", "status")
RETRY = dict(retry_first=1, retry_max=2, retry_give_up=30, attempt_deadline=5, smtp_timeout=3)
RESULTS: dict[str, type[Event]] = {c.__name__: c for c in (
    QueueCommandApplied, QueueCommandRefused, MessageCancelled)}


def configure(s: Settings, port: int, **limits: Any) -> None:
    srv = OutgoingServerConfigured(name="primary", host=HOST, port=port, security="none",
                                   **limits)
    publish_config(s, [("settings", SettingsChanged(catchall_domain="mycompany.test")),
                       (srv.key, srv)])


def start(s: Settings, tmp_path: Path, n: int, **env: str) -> Worker:
    extra = {"POSTLANE_WEB_PORT": str(free_port()), **env}
    return Worker(s, *PROCESSORS, log=tmp_path / f"worker{n}.log", extra_env=extra).start()


def started(s: Settings) -> list[DeliveryStarted]:
    registry: dict[str, type[Event]] = {"DeliveryStarted": DeliveryStarted,
                                        "DeliveryAttempted": DeliveryAttempted}
    return [e for _, e in read_events(s, DELIVERY, registry) if isinstance(e, DeliveryStarted)]


def holds(s: Settings) -> dict[str, MailHeld]:
    # the topic also carries the quota's refusals of delivery retries (for the status)
    registry: dict[str, type[Event]] = {"MailHeld": MailHeld, "QuotaRefused": QuotaRefused}
    return {e.message_id: e for _, e in read_events(s, HELD, registry)
            if isinstance(e, MailHeld)}


def command(s: Settings, mid: str, what: str) -> Event:
    """Issue a command as `postlane cancel|send-now|retry` does; its answer."""
    issued = QueueCommandIssued(message_id=mid, command=what, operator="test@host")
    publish(s, COMMANDS, [(mid, issued)])

    def answer() -> Event | None:
        for _, e in read_events(s, COMMAND_RESULTS, RESULTS):
            if isinstance(e, QueueCommandApplied | QueueCommandRefused) and \
                    e.command_id == issued.event_id:
                return e
        return None

    result: Event = wait_for(answer, timeout=30, what=f"the answer to {what} {mid}")
    return result


def test_daily_limit_defers_restart_keeps_counts_and_ops_commands(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=1, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink), daily_limit=3)
    worker = start(s, tmp_path, 1)
    try:
        # bad input on each limiter input is dead-lettered; nothing else is lost
        raw = KafkaProducer(bootstrap_servers=s.bootstrap)
        for spec, key in ((ROUTING_DECIDED, b"bad1"), (ROUTING_DECIDED_MASS, b"bad2"),
                          (COMMANDS, b"bad3")):
            raw.send(spec.full(s), key=key, value=b"{not json").get(10)
        raw.send(COMMANDS.full(s), key=b"bad4",
                 value=b'{"type":"QueueCommandIssued","message_id":"x","command":"explode"}'
                 ).get(10)
        raw.close()
        with Publisher(settings=s) as pub:
            mids = [pub.send(from_="app@a.test", to=[f"u{i}@dest.test"], subject=f"n{i}",
                             text="hello") for i in range(5)]
        wait_for(lambda: len(holds(s)) == 2, what="two mails deferred")
        dead = read_events(s, DEAD_LETTER, {"EventDeadLettered": EventDeadLettered})
        by_limiter = {e.key: e.error for _, e in dead
                      if isinstance(e, EventDeadLettered) and e.processor == "limiter"}
        assert set(by_limiter) == {"bad1", "bad2", "bad3", "bad4"}, by_limiter
        assert "command 'explode' must be one of" in by_limiter["bad4"]
        wait_for(lambda: len(sink.messages) == 3, what="three mails sent")
        held = holds(s)
        assert set(held) == set(mids[3:])
        window = words(next_window(time.time()))
        assert held[mids[3]].reason == (
            f"deferred: server primary reached its daily limit of 3; next window {window}")
        assert held[mids[3]].why == "daily_limit"

        # SIGKILL mid-window; the new worker rebuilds counts and held mail from the log
        worker.kill()
        # the killed member's session runs out first: on Tansu a replacement that
        # joins while that expiry happens can sit idle with every partition
        # assigned (see test_status_e2e; twice in CI on a loaded session broker)
        time.sleep(s.session_timeout)
        worker = start(s, tmp_path, 2)
        # published once the new worker is up: a record handed over while Faust's
        # flow control is still stopped (table recovery) is skipped by the stream
        # that reads it then and stays unrouted until the next restart, while the
        # status agent of the same worker takes it (seen in CI; README known limits)
        wait_for(lambda: "limiter index rebuilt" in worker.log_text(), timeout=60,
                 what="the restarted worker ready")
        with Publisher(settings=s) as pub:
            late = pub.send(from_="app@a.test", to=["late@dest.test"], subject="late",
                            text="after the restart")
        wait_for(lambda: late in holds(s), what="the mail after the restart deferred")
        time.sleep(2)
        assert len(sink.messages) == 3, "re-sent or over-sent after the restart"
        assert len({e.message_id for e in started(s)}) == 3

        # the commands the limiter owns
        now_ = command(s, mids[3], "send_now")
        assert isinstance(now_, QueueCommandApplied) and now_.by == "limiter", now_
        wait_for(lambda: len(sink.messages) == 4, what="the sent-now mail delivered")
        cancel = command(s, mids[4], "cancel")
        assert isinstance(cancel, QueueCommandApplied) and cancel.by == "limiter", cancel
        again = command(s, mids[4], "cancel")
        assert isinstance(again, QueueCommandRefused) and "was cancelled" in again.reason
        retry = command(s, late, "retry")
        assert isinstance(retry, QueueCommandRefused)
        assert retry.reason.startswith(f"{late} is deferred (daily limit), not failed")
        cancelled = [e for _, e in read_events(s, COMMAND_RESULTS, RESULTS)
                     if isinstance(e, MessageCancelled)]
        assert [e.message_id for e in cancelled] == [mids[4]]
        time.sleep(1.5)
        assert len(sink.messages) == 4  # the cancelled one never goes
        forced = [e for _, e in read_events(s, RELEASED, {"MailReleased": MailReleased,
                                                       "QueueCommandIssued": QueueCommandIssued})
                  if isinstance(e, MailReleased) and e.forced]
        assert [e.message_id for e in forced] == [mids[3]]
    finally:
        worker.stop()


def test_lanes_campaign_order_and_send_at(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=1, **RETRY)
    ensure_topics(s)
    sink = Sink()
    sink.data_delay = 0.03  # 30 ms per mail: the campaigns take a few seconds
    configure(s, sinks(sink))
    worker = start(s, tmp_path, 1, POSTLANE_MASS_WINDOW="4")
    try:
        with Publisher(settings=s) as pub:
            pub.send(from_="billing@a.test", to=["warm@dest.test"], subject="Warm-up",
                     text="the pipeline is up")
            wait_for(lambda: len(sink.messages) == 1, what="the warm-up mail")
            a = [pub.send(from_="news@a.test", to=[f"a{i}@dest.test"], subject=f"A{i}",
                          text="campaign A", kind="mass") for i in range(60)]
            b = [pub.send(from_="news@a.test", to=[f"b{i}@dest.test"], subject=f"B{i}",
                          text="campaign B", kind="mass") for i in range(60)]
            t_invoice = time.time()
            invoice = pub.send(from_="billing@a.test", to=["client@dest.test"],
                               subject="Invoice 7", text="due")
            t_published = time.time()
            at = time.time() + 4
            later = pub.send(from_="billing@a.test", to=["client@dest.test"],
                             subject="Reminder", text="later", send_at=at)
        wait_for(lambda: len(sink.messages) >= 123, timeout=90, what="every mail delivered")
        order = [m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode()
                 for m in sink.messages][1:]
        assert sorted(order) == sorted([f"A{i}" for i in range(60)] +
                                       [f"B{i}" for i in range(60)] + ["Invoice 7", "Reminder"])
        # the invoice came after 120 campaign mails and went out before most of
        # them: once it was published, only the mass window (4 released, not yet
        # started) and what started while the router routed it went first. (Not
        # its place at the sink: a faster router lets the campaign start while
        # it is still being published, by 20 or more mails on a loaded machine.)
        invoice_at = min(e.occurred_at for e in started(s) if e.message_id == invoice)
        ahead = {e.message_id for e in started(s)
                 if e.message_id in set(a + b) and t_published < e.occurred_at < invoice_at}
        assert len(ahead) <= 10, (len(ahead), order.index("Invoice 7"))
        assert order.index("Invoice 7") < 100, order
        # campaigns released in creation order; delivery runs the (at most 4)
        # released mails concurrently, so at the sink a mail is at most 4 places off
        created = a + b
        registry: dict[str, type[Event]] = {"MailReleased": MailReleased,
                                            "QueueCommandIssued": QueueCommandIssued}
        released = [e.message_id for _, e in read_events(s, RELEASED, registry)
                    if isinstance(e, MailReleased) and e.lane == "mass"]
        assert released == created
        mass = [x for x in order if x[0] in "AB"]
        expected = [f"A{i}" for i in range(60)] + [f"B{i}" for i in range(60)]
        assert max(abs(i - expected.index(x)) for i, x in enumerate(mass)) <= 4
        # send_at: held until then, in words
        assert holds(s)[later].why == "scheduled"
        assert holds(s)[later].reason.startswith("scheduled for ")
        first = min(e.occurred_at for e in started(s) if e.message_id == later)
        assert first >= at
        assert len(a) + len(b) + 3 == len({m.content for m in sink.messages})  # no duplicate
        invoice_started = min(e.occurred_at for e in started(s) if e.message_id == invoice)
        print(f"invoice behind 120 campaign mails: attempt started after "
              f"{invoice_started - t_invoice:.3f} s")
    finally:
        worker.stop()


def test_server_rate_paces_delivery_and_says_so(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=1, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink), rate="2/s")
    worker = start(s, tmp_path, 1)
    try:
        with Publisher(settings=s) as pub:
            pub.send(from_="app@a.test", to=["warm@dest.test"], subject="warm", text="up")
            wait_for(lambda: len(sink.messages) == 1, what="the warm-up mail")
            time.sleep(1.5)  # the bucket refills
            mids = [pub.send(from_="app@a.test", to=[f"r{i}@dest.test"], subject=f"r{i}",
                             text="paced") for i in range(6)]
        wait_for(lambda: len(sink.messages) == 7, what="the paced mails delivered")
        starts = sorted(e.occurred_at for e in started(s) if e.message_id in mids)
        # a bucket of 2, then one every 0.5 s: the sixth starts >= 2 s after the first
        assert starts[-1] - starts[0] >= 1.8, starts
        paced = {m: h for m, h in holds(s).items() if h.why == "paced"}
        assert paced and set(paced) < set(mids)
        assert {h.reason for h in paced.values()} == {"paced: server primary sends at most 2/s"}
    finally:
        worker.stop()


# --- exact limits whatever the partitions and workers (issue 15) ----------------------------

DEFERRED_10 = "deferred: server primary reached its daily limit of 10; next window {}"


def split_workers(s: Settings, tmp_path: Path, limiters: int) -> tuple[Worker, list[Worker]]:
    """Router, delivery and status in one worker; ``limiters`` limiter workers
    (one consumer group: they share the partitions, one of them owns the quota)."""
    env = {"POSTLANE_WEB_PORT": str(free_port())}
    rest = Worker(s, "router", "delivery", "status", log=tmp_path / "rest.log",
                  extra_env=env).start()
    return rest, [Worker(s, "limiter", log=tmp_path / f"limiter{i}.log",
                         extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()
                  for i in range(limiters)]


def owned(worker: Worker) -> list[int]:
    """The partitions the worker's limiter indexed last (from its log)."""
    lines = [x for x in worker.log_text().splitlines() if "limiter index rebuilt" in x]
    if not lines:
        return []
    listed = lines[-1].split("partitions [", 1)[1].split("]", 1)[0]
    return [int(p) for p in listed.split(",") if p.strip()]


def asks(s: Settings) -> list[QuotaAsked]:
    """Every ask on the quota topic (the limiter's come a pass at a time)."""
    out: list[QuotaAsked] = []
    for _, e in read_events(s, QUOTA, {"QuotaAsked": QuotaAsked, "QuotasAsked": QuotasAsked}):
        if isinstance(e, QuotasAsked):
            out += [QuotaAsked(**a) for a in e.asks]
        elif isinstance(e, QuotaAsked):
            out.append(e)
    return out


def answers(s: Settings) -> list[QuotaGranted | QuotaRefused]:
    """Every answer of the quota, to the limiter and to delivery."""
    registry: dict[str, type[Event]] = {"QuotaGranted": QuotaGranted,
                                        "QuotaRefused": QuotaRefused,
                                        "QuotasAnswered": QuotasAnswered}
    out: list[QuotaGranted | QuotaRefused] = []
    for spec in (QUOTA_ANSWERS, DELIVERY_QUOTA):
        for _, e in read_events(s, spec, registry):
            if isinstance(e, QuotasAnswered):
                out += [(QuotaGranted if a["type"] == "QuotaGranted" else QuotaRefused)(**a)
                        for a in e.answers]
            elif isinstance(e, QuotaGranted | QuotaRefused):
                out.append(e)
    return out


def send_many(s: Settings, n: int, start: int = 0) -> list[str]:
    with Publisher(settings=s) as pub:
        return [pub.send(from_="app@a.test", to=[f"u{i}@dest.test"], subject=f"n{i}",
                         text="hello") for i in range(start, start + n)]


def assert_exactly_ten(s: Settings, sink: Sink, mids: list[str]) -> None:
    wait_for(lambda: len(sink.messages) >= 10 and len(holds(s)) >= 15, timeout=90,
             what="10 sent and 15 deferred")
    time.sleep(2)  # nothing more goes
    sent = sink.by_postlane_id()
    assert len(sink.messages) == 10 and set(sent) <= set(mids) and len(sent) == 10, sent
    held = holds(s)
    assert set(held) == set(mids) - set(sent)
    window = words(next_window(time.time()))
    assert {h.reason for h in held.values()} == {DEFERRED_10.format(window)}
    # the mails were spread over the partitions: the limit held across them
    registry: dict[str, type[Event]] = {"MailReleased": MailReleased,
                                        "QueueCommandIssued": QueueCommandIssued}
    released = {r.partition for r, e in read_events(s, RELEASED, registry)
                if isinstance(e, MailReleased)}
    assert len(released) > 1, released


def test_daily_limit_is_exact_over_4_partitions_and_2_limiter_workers(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=4, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink), daily_limit=10)
    rest, limiters = split_workers(s, tmp_path, 2)
    try:
        wait_for(lambda: all(owned(w) for w in limiters), what="both limiters own partitions")
        mids = send_many(s, 25)
        assert_exactly_ten(s, sink, mids)
        assert len({e.message_id for e in asks(s)}) == 25  # every limited mail asked once
        assert sorted(owned(limiters[0]) + owned(limiters[1])) == [0, 1, 2, 3]
    finally:
        for w in (*limiters, rest):
            w.stop()


def test_daily_limit_stays_exact_when_the_quota_owner_is_killed_after_5_sends(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=4, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink), daily_limit=10)
    rest, limiters = split_workers(s, tmp_path, 2)
    try:
        wait_for(lambda: all(owned(w) for w in limiters), what="both limiters own partitions")
        first = send_many(s, 5)
        wait_for(lambda: len(sink.messages) == 5, what="five mails sent")
        # SIGKILL the worker that counts (it owns the quota's one partition) and
        # its share of the limiter partitions; the other takes both over
        [owner] = [w for w in limiters if "quota rebuilt" in w.log_text()]
        [other] = [w for w in limiters if w is not owner]
        # past the commit interval: the 5 asks are committed, so the new owner
        # counts from the grant rows, not by deciding the same asks again
        time.sleep(3.5)
        owner.kill()
        rest_of = send_many(s, 20, start=5)
        assert_exactly_ten(s, sink, first + rest_of)
        assert "quota rebuilt from 5 grant rows" in other.log_text()
        assert sorted(owned(other)) == [0, 1, 2, 3]
        assert len({e.message_id for e in started(s)}) == 10  # none started twice
    finally:
        for w in (*limiters, rest):
            w.stop()


def test_a_tenant_limit_holds_over_two_servers(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=4, **RETRY)
    ensure_topics(s)
    one, two = Sink(), Sink()
    tenant = TenantConfigured(name="acme", daily_limit=4)
    publish_config(s, [("settings", SettingsChanged(catchall_domain="mycompany.test")),
                       *((x.key, x) for x in (server("one", sinks(one), "a.test"),
                                              server("two", sinks(two), "b.test"), tenant))])
    worker = start(s, tmp_path, 1)
    try:
        with Publisher(settings=s) as pub:
            mids = [pub.send(from_=f"app@{d}", to=[f"t{i}@dest.test"], subject=f"t{i}",
                             text="tenant", tenant="acme")
                    for i, d in enumerate(["a.test", "b.test"] * 3)]
            free = pub.send(from_="app@a.test", to=["x@dest.test"], subject="other tenant",
                            text="not acme", tenant="other")
        wait_for(lambda: len(one.messages) + len(two.messages) >= 5 and len(holds(s)) >= 2,
                 what="4 of acme's mails and the other tenant's sent, 2 deferred")
        time.sleep(2)
        assert len(one.messages) + len(two.messages) == 5
        assert one.messages and two.messages  # both servers took acme's mail
        held = holds(s)
        assert set(held) < set(mids) and len(held) == 2 and free not in held
        assert all(h.reason.startswith("deferred: tenant acme reached its daily limit of 4; ")
                   for h in held.values())
    finally:
        worker.stop()


def test_a_failover_and_a_4xx_retry_take_their_token_on_the_server_that_took_them(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=4, **RETRY)
    ensure_topics(s)
    backup, grey = Sink(), Sink()
    grey.data_replies = ["451 4.7.1 greylisted, try again later"]
    dead = server("dead", free_port(), "d.test", priority=1)  # nothing listens there
    failover = OutgoingServerConfigured(name="backup", host=HOST, port=sinks(backup),
                                        security="none", from_filter="d.test", priority=2,
                                        daily_limit=1)
    greyed = OutgoingServerConfigured(name="grey", host=HOST, port=sinks(grey),
                                      security="none", from_filter="g.test", daily_limit=2)
    publish_config(s, [("settings", SettingsChanged(catchall_domain="mycompany.test")),
                       *((x.key, x) for x in (dead, failover, greyed))])
    worker = start(s, tmp_path, 1)
    try:
        with Publisher(settings=s) as pub:
            m1 = pub.send(from_="app@d.test", to=["a@dest.test"], subject="f1", text="1")
            g1 = pub.send(from_="app@g.test", to=["b@dest.test"], subject="g1", text="grey")
        wait_for(lambda: len(backup.messages) == 1 and len(grey.messages) == 1,
                 what="the failover and the greylisted mail sent")
        with Publisher(settings=s) as pub:
            m2 = pub.send(from_="app@d.test", to=["c@dest.test"], subject="f2", text="2")
            g2 = pub.send(from_="app@g.test", to=["d@dest.test"], subject="g2", text="grey2")
        def refused() -> dict[str, str]:
            return {e.message_id: e.reason for e in answers(s) if isinstance(e, QuotaRefused)}

        wait_for(lambda: {m2, g2} <= set(refused()), what="m2 and g2 refused their tokens")
        reasons = refused()
        # m2's failover to backup: backup's one transaction of the day went to m1's failover
        assert reasons[m2].startswith("deferred: server backup reached its daily limit of 1")
        # g2's release: grey's two went to g1's 451 and its retry
        assert reasons[g2].startswith("deferred: server grey reached its daily limit of 2")
        assert {(e.message_id, e.server, e.by, e.attempt) for e in asks(s)} >= {
            (m1, "backup", "delivery", 2), (g1, "grey", "limiter", 0),
            (g1, "grey", "delivery", 2), (m2, "backup", "delivery", 2),
            (g2, "grey", "limiter", 0)}
        assert not any(e.server == "dead" for e in asks(s))  # no limit there: nothing to ask

        def m2_status() -> MessageStatusChanged | None:
            changes = [e for _, e in read_events(s, STATUS, {
                "MessageStatusChanged": MessageStatusChanged})
                if isinstance(e, MessageStatusChanged) and e.message_id == m2]
            return changes[-1] if changes else None

        # the retry the quota refused is in m2's status, in words
        last = wait_for(lambda: (c := m2_status()) and c.reason.endswith(
            "(attempt 2 waits for it)") and c, what="m2's status says why it waits")
        assert last.state == "deferred" and last.reason.startswith(
            "deferred: server backup reached its daily limit of 1; next window "), last.reason
        time.sleep(1.5)
        assert len(backup.messages) == 1 and len(grey.messages) == 1
    finally:
        worker.stop()


def most_in_any(times: list[float], width: float) -> int:
    """The most timestamps in any window of ``width`` seconds."""
    return max((bisect.bisect_right(times, t + width) - i for i, t in enumerate(times)),
               default=0)


def test_rates_hold_within_5_percent_over_4_partitions_and_2_limiter_workers(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    """A server rate of 600/min and a recipient domain's 120/min, mail spread
    over 4 partitions owned by 2 limiter workers: measured on the limiter's
    own MailReleased timestamps, never more than the rate allows in any
    window (plus its burst of one second's worth), and the server's rate
    reached (within 5%), not merely respected."""
    s = isolated_settings(broker.port, tmp_path / "data", partitions=4, **RETRY)
    ensure_topics(s)
    sink = Sink()
    slow = DomainPaceConfigured(domain="slow.test", rate="120/min")
    configure(s, sinks(sink), rate="600/min")
    publish_config(s, [(slow.key, slow)])
    rest, limiters = split_workers(s, tmp_path, 2)
    try:
        wait_for(lambda: all(owned(w) for w in limiters), what="both limiters own partitions")
        with Publisher(settings=s) as pub:
            fast = [pub.send(from_="app@a.test", to=[f"f{i}@dest.test"], subject=f"f{i}",
                             text="paced") for i in range(120)]
        wait_for(lambda: len(sink.messages) >= 120, timeout=60, what="120 paced mails sent")
        with Publisher(settings=s) as pub:
            slowed = [pub.send(from_="app@a.test", to=[f"s{i}@slow.test"], subject=f"s{i}",
                               text="slow domain") for i in range(12)]
        wait_for(lambda: len(sink.messages) >= 132, timeout=30, what="12 slow-domain mails")
        registry: dict[str, type[Event]] = {"MailReleased": MailReleased,
                                            "QueueCommandIssued": QueueCommandIssued}
        released = [(r.partition, e) for r, e in read_events(s, RELEASED, registry)
                    if isinstance(e, MailReleased)]
        at = {e.message_id: e.occurred_at for _, e in released}
        assert len(at) == 132 == len(released)  # each released once
        # both workers released some: the quota paced them together
        parts = {p for p, _ in released}
        assert parts & set(owned(limiters[0])) and parts & set(owned(limiters[1])), parts
        # the server: 10/s, a burst of 10. A release is stamped when the limiter's
        # pass runs, which a busy machine can delay by up to a tick: mail whose
        # slots came meanwhile go out together (CI saw 31 in 2 s). So a window
        # of `width` s holds at most the slots of `width` + 1 s, plus the burst;
        # the steady rate below is the exact check.
        times = sorted(at[m] for m in fast)
        for width in (1.0, 2.0, 5.0, 10.0):
            assert most_in_any(times, width) <= 10 * (width + 1) + 10, (width, times)
        steady = (len(times) - 10) / (times[-1] - times[0])  # after the first second's burst
        assert 9.5 <= steady <= 10.5, steady
        # over a minute that is 610 at most against 600: within 5%
        # slow.test: 2/s, a burst of 2
        times = sorted(at[m] for m in slowed)
        for width in (1.0, 2.0, 4.0):
            assert most_in_any(times, width) <= 2 * (width + 1) + 2, (width, times)
        assert (len(times) - 2) / (times[-1] - times[0]) <= 2 * 1.05
        held = holds(s)
        reasons = {h.reason for m, h in held.items() if m in slowed}
        # the domain's rate is named (alone, or with the server's when that one was
        # binding too at the moment: which depends on the machine's pace)
        assert any("mail to slow.test goes at most 120/min" in r for r in reasons), reasons
        assert reasons <= {
            "paced: mail to slow.test goes at most 120/min",
            "paced: server primary sends at most 600/min",
            "paced: server primary sends at most 600/min; mail to slow.test goes at most "
            "120/min"}
    finally:
        for w in (*limiters, rest):
            w.stop()
