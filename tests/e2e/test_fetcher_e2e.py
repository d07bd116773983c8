"""The fetcher against a real Dovecot and the embedded broker: every mail
appended to the mailbox reaches the inbound topic exactly once across
restarts (SIGTERM and SIGKILL mid-stream), is marked seen only after it is
on the log, an over-size mail is recorded as rejected without being
fetched, and IDLE delivers without waiting for the poll."""

from __future__ import annotations

import collections
import time
import uuid
from pathlib import Path

import pytest

from postlane.configfile import load, plan
from postlane.configops import current_view, publish_config
from schemas import (
    InboundMailReceived,
    InboundMailRejected,
    InboundMailRouted,
    IncomingServerChecked,
    decode,
)
from streams.client import ensure_topics
from streams.topics import INBOUND, INBOUND_ROUTED, INCOMING_STATUS
from tests.conftest import IMAP_USERS
from tests.imap.dovecot import Dovecot

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

PW_ENV = {"PL_TEST_IMAP_PASSWORD": IMAP_USERS["gateway"]}
INBOUND_TYPES = {"InboundMailReceived": InboundMailReceived,
                 "InboundMailRejected": InboundMailRejected}


def incoming(dovecot: Dovecot, name: str, folder: str, **extra: object) -> str:
    lines = [
        "[[incoming]]", f'name = "{name}"', 'host = "127.0.0.1"', f"port = {dovecot.port}",
        'security = "none"', 'username = "gateway"', 'password_env = "PL_TEST_IMAP_PASSWORD"',
        f'folder = "{folder}"',
    ]
    for k, v in extra.items():
        lines.append(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}")
    return "\n".join(lines) + "\n"


def configure(s, tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "postlane.toml"
    cfg.write_text('[settings]\ncatchall_domain = "mycompany.com"\n' + text)
    publish_config(s, plan(current_view(s), load(cfg)))


def new_folder(dovecot: Dovecot) -> str:
    folder = f"F{uuid.uuid4().hex[:10]}"
    c = dovecot.client("gateway")
    assert c.create(folder)[0] == "OK"
    c.logout()
    return folder


def mail(n: int, tag: str, size: int = 0, sender: str = "ann@client.org") -> bytes:
    body = "x" * size if size else f"mail {n}"
    return (f"From: Ann <{sender}>\r\nTo: sales@mycompany.com\r\nSubject: {tag} {n}\r\n"
            f"Message-ID: <{tag}.{n}@client.org>\r\n\r\n{body}\r\n").encode()


def inbound(s) -> list:
    return [e for _, e in read_events(s, INBOUND, INBOUND_TYPES, idle=0.2)]


def received_uids(s, server: str) -> collections.Counter[int]:
    return collections.Counter(e.uid for e in inbound(s)
                               if isinstance(e, InboundMailReceived) and e.server == server)


def test_exactly_once_across_restarts(broker, dovecot: Dovecot, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    folder = new_folder(dovecot)
    configure(s, tmp_path, incoming(dovecot, "box", folder, poll_interval=1.0, use_idle=False,
                                    max_message_bytes=4000))
    tag = uuid.uuid4().hex[:6]
    old = dovecot.append("gateway", mail(0, tag), folder, seen=True)  # read before Postlane
    first = [dovecot.append("gateway", mail(i, tag), folder) for i in range(1, 4)]
    env = {**PW_ENV, "POSTLANE_FETCH_BATCH": "1"}
    worker = Worker(s, "fetcher", log=tmp_path / "fetcher1.log", extra_env=env).start()
    try:
        wait_for(lambda: sum(received_uids(s, "box").values()) >= 3, timeout=60,
                 what="the first three mails")
        flags = dovecot.flags("gateway", folder)
        assert all("\\Seen" in flags[u] for u in first)
        assert old not in received_uids(s, "box")  # first start takes unseen mail only

        big = dovecot.append("gateway", mail(4, tag, size=6000), folder)
        more = [dovecot.append("gateway", mail(i, tag), folder) for i in range(5, 7)]
        wait_for(lambda: sum(received_uids(s, "box").values()) >= 5, timeout=30,
                 what="mail appended while running")
        rejected = [e for e in inbound(s) if isinstance(e, InboundMailRejected)]
        assert [r.uid for r in rejected] == [big]
        assert "over the limit of 4000 bytes" in rejected[0].reason
        assert f"Message-ID: <{tag}.4@client.org>" in rejected[0].headers
        assert "\\Seen" not in dovecot.flags("gateway", folder)[big]  # left for a person

        # a graceful restart with mail arriving while it is down
        worker.stop()
        later = [dovecot.append("gateway", mail(i, tag), folder) for i in range(7, 9)]
        time.sleep(s.session_timeout)  # the old member's session expires (see test_status_e2e)
        worker = Worker(s, "fetcher", log=tmp_path / "fetcher2.log", extra_env=env).start()
        wait_for(lambda: sum(received_uids(s, "box").values()) >= 7, timeout=60,
                 what="mail appended while stopped")

        # SIGKILL in the middle of a stream of mails, then start again
        watcher = _Watcher(s)
        burst = dovecot.append_many("gateway", [mail(i, tag) for i in range(9, 409)], folder)
        watcher.wait_for_any(set(burst))
        worker.kill()
        at_kill = sum(received_uids(s, "box").values())
        time.sleep(s.session_timeout)
        assert at_kill < 7 + len(burst), "the kill should land in the middle of the burst"
        worker = Worker(s, "fetcher", log=tmp_path / "fetcher3.log", extra_env=env).start()
        expected = [*first, *more, *later, *burst]
        got = wait_for(lambda: (c := received_uids(s, "box")) and set(expected) <= set(c) and c,
                       timeout=90, what="every mail after the kill")
        time.sleep(2.5)  # two more polls: nothing may come twice
        resumed = "resumed an interrupted batch" in worker.log_text()
        print(f"\nkilled after {at_kill - 7} of {len(burst)} burst mails; "
              f"interrupted batch resumed: {resumed}")
        got = received_uids(s, "box")
        assert sorted(got) == sorted(expected)
        assert set(got.values()) == {1}, {u: n for u, n in got.items() if n > 1}
        flags = dovecot.flags("gateway", folder)
        assert all("\\Seen" in flags[u] for u in expected)
    finally:
        worker.stop()
    for log in tmp_path.glob("fetcher*.log"):
        assert IMAP_USERS["gateway"] not in log.read_text(errors="replace")


class _Watcher:
    """Follows the inbound topic with a short fetch wait, to kill the
    fetcher right after the first mail of a burst is on the log."""

    def __init__(self, s) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                      enable_auto_commit=False, fetch_max_wait_ms=10)
        tps = [TopicPartition(INBOUND.full(s), p) for p in range(s.partitions)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def wait_for_any(self, uids: set[int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                for records in self.consumer.poll(timeout_ms=10).values():
                    for rec in records:
                        ev = INBOUND_TYPES["InboundMailReceived"]
                        if b'"InboundMailReceived"' in rec.value and \
                                decode(ev, rec.value).uid in uids:
                            return
            raise AssertionError("no mail of the burst reached the inbound topic")
        finally:
            self.consumer.close()


def _latency(s, dovecot: Dovecot, folder: str, server: str, tag: str, n: int) -> float:
    """Seconds from the APPEND to the fetcher taking the mail in (the
    event's received_at; the broker hop adds milliseconds)."""
    t0 = time.time()
    uid = dovecot.append("gateway", mail(n, tag), folder)
    got = wait_for(lambda: [e for e in inbound(s) if isinstance(e, InboundMailReceived)
                            and e.server == server and e.uid == uid], timeout=60,
                   interval=0.05, what=f"mail {n} on {server}")
    return float(got[0].received_at - t0)


def test_idle_delivers_without_waiting_for_the_poll(broker, dovecot: Dovecot,
                                                    tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    idle_folder, poll_folder = new_folder(dovecot), new_folder(dovecot)
    configure(s, tmp_path, incoming(dovecot, "idlebox", idle_folder, poll_interval=300.0)
              + 'tenant = "acme"\n'
              + incoming(dovecot, "pollbox", poll_folder, poll_interval=4.0, use_idle=False)
              + '[[aliases]]\nalias = "sales"\ntarget = "crm.lead"\n')
    worker = Worker(s, "fetcher", "inbound", log=tmp_path / "worker.log",
                    extra_env=PW_ENV).start()
    try:
        def ready() -> dict[str, IncomingServerChecked]:
            st = {e.server: e for _, e in read_events(
                s, INCOMING_STATUS, {"IncomingServerChecked": IncomingServerChecked}, idle=0.2)}
            return st if {"idlebox", "pollbox"} <= set(st) else {}

        states = wait_for(ready, timeout=60, what="both servers reported")
        assert states["idlebox"].ok and states["idlebox"].idle
        assert "IDLE" in states["idlebox"].sentence
        assert states["pollbox"].ok and not states["pollbox"].idle
        time.sleep(1.0)
        tag = uuid.uuid4().hex[:6]
        idle = [_latency(s, dovecot, idle_folder, "idlebox", tag, i) for i in range(3)]
        polled = [_latency(s, dovecot, poll_folder, "pollbox", tag, 10 + i) for i in range(3)]
        print(f"\nfetch latency, append -> inbound topic: IDLE {[f'{x:.2f}' for x in idle]} s; "
              f"polling every 4 s {[f'{x:.2f}' for x in polled]} s")
        assert max(idle) < 5.0, idle  # the poll interval is 300 s
        # a burst: mail arriving while the fetcher is busy must not wait for the poll
        t0 = time.monotonic()
        many = [mail(100 + i, tag, sender=f"p{i}@client.org") for i in range(300)]
        burst = dovecot.append_many("gateway", many, idle_folder)
        wait_for(lambda: set(burst) <= set(received_uids(s, "idlebox")), timeout=60,
                 what="a burst over IDLE")
        print(f"300 mails appended one by one over IDLE: all on the topic after "
              f"{time.monotonic() - t0:.1f} s")
        # and the fetched mail is routed: alias, with the server's tenant
        got = wait_for(lambda: len(r := [e for _, e in read_events(
            s, INBOUND_ROUTED, {"InboundMailRouted": InboundMailRouted}, idle=0.2)
            if e.server == "idlebox"]) >= 303 and r, timeout=60, what="routing decisions")
        assert {(e.route, e.target, e.tenant) for e in got} == {("alias", "crm.lead", "acme")}
        assert len(got) == 3 + 300
    finally:
        worker.stop()
