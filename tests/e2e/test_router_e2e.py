"""The router end to end through the embedded broker: decisions, restart
rebuilding the config view from the log, dead-lettering, and no secret on
any topic."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka import KafkaProducer

from postlane.configfile import load, plan
from postlane.configops import current_view, publish_config
from postlane.publisher import Publisher
from processors.config.view import ConfigView
from schemas import EventDeadLettered, RoutingDecided
from streams.client import ensure_topics, read_topic
from streams.topics import (
    ALL_TOPICS,
    DEAD_LETTER,
    ROUTING_DECIDED,
    ROUTING_DECIDED_MASS,
    SEND_REQUESTED,
)

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

SECRET = "s3cr3t-Pa55w0rd-never-on-a-topic"

CONFIG = """
[settings]
default_from = "notifications"
catchall_domain = "mycompany.com"
[[servers]]
name = "transactional"
host = "127.0.0.1"
port = 2525
security = "none"
username = "noreply@mycompany.com"
password_env = "PL_TEST_SMTP_PASSWORD"
from_filter = "mycompany.com"
priority = 5
kind = "transactional"
[[servers]]
name = "mass"
host = "127.0.0.1"
port = 2526
security = "none"
from_filter = "mycompany.com"
priority = 10
kind = "mass"
"""


def decisions(s) -> dict[str, RoutingDecided]:
    """Both lanes: mass mail is routed onto routing-decided-mass."""
    registry = {"RoutingDecided": RoutingDecided}
    return {e.message_id: e for spec in (ROUTING_DECIDED, ROUTING_DECIDED_MASS)
            for _, e in read_events(s, spec, registry)}


def test_router_end_to_end_restart_deadletter_and_no_secret(broker, tmp_path: Path,
                                                            monkeypatch) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    cfg = tmp_path / "postlane.toml"
    cfg.write_text(CONFIG)
    publish_config(s, plan(ConfigView(), load(cfg)))
    assert set(current_view(s).servers) == {"transactional", "mass"}

    worker = Worker(s, "router", log=tmp_path / "router.log",
                    extra_env={"PL_TEST_SMTP_PASSWORD": SECRET}).start()
    try:
        with Publisher(settings=s) as pub:
            m1 = pub.send(from_='"Admin" <admin@example.com>', to=["b@example.org"],
                          subject="Invoice", text="hello")
            m2 = pub.send(from_="news@mycompany.com", to=["c@example.org"], subject="News",
                          text="x", kind="mass")
        got = wait_for(lambda: (d := decisions(s)) and {m1, m2} <= set(d) and d, timeout=90,
                       what="routing decisions")
        assert got[m1].server == "transactional"
        assert got[m1].rule == "default_from_domain"
        assert got[m1].header_from == '"Admin" <notifications@mycompany.com>'
        assert got[m1].envelope_from == f"bounce+{m1}@mycompany.com"
        assert got[m2].server == "mass" and got[m2].rule == "from_filter_domain"

        # malformed input is dead-lettered and the router keeps going
        raw = KafkaProducer(bootstrap_servers=s.bootstrap)
        raw.send(SEND_REQUESTED.full(s), key=b"bad1", value=b"{not json").get(10)
        raw.send(SEND_REQUESTED.full(s), key=b"bad2",
                 value=b'{"message_id":"x","from_":"a@b.com","to":["c@d.com"],'
                       b'"subject":"a\\r\\nBcc: evil@x.com","text":"t"}').get(10)
        raw.close()
        with Publisher(settings=s) as pub:
            m3 = pub.send(from_="boss@mycompany.com", to=["d@example.org"], text="after")
        wait_for(lambda: m3 in decisions(s), timeout=60, what="decision after bad input")
        dead = [e for _, e in read_events(s, DEAD_LETTER, {"EventDeadLettered":
                                                           EventDeadLettered})]
        assert {d.key for d in dead} == {"bad1", "bad2"}
        assert any("line break" in d.error for d in dead)
        assert all(d.processor == "router" for d in dead)

        # restart: the new worker rebuilds its config view from the log
        worker.stop()
        worker = Worker(s, "router", log=tmp_path / "router2.log").start()
        with Publisher(settings=s) as pub:
            m4 = pub.send(from_="boss@mycompany.com", to=["e@example.org"], text="again",
                          kind="mass")
        got = wait_for(lambda: (d := decisions(s)) and m4 in d and d, timeout=90,
                       what="decision after restart")
        assert got[m4].server == "mass"
        assert got[m4].rule == "from_filter_domain"
        assert "config view ready: 3 events, 2 servers" in worker.log_text()
    finally:
        worker.stop()

    # no secret on any topic: read every topic back and search for it
    seen = 0
    for spec in ALL_TOPICS:
        for rec in read_topic(s, spec.full(s), idle=0.2):
            seen += 1
            assert SECRET.encode() not in (rec.value or b"")
            assert SECRET.encode() not in (rec.key or b"")
    assert seen > 6
    for log in tmp_path.glob("*.log"):
        assert SECRET not in log.read_text(errors="replace")
