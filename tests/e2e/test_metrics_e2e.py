"""Every ``postlane worker`` serves Prometheus text at /metrics: a router
worker counts the records it took in and the dead letter it wrote (by
processor and reason), and a second worker on the same port runs on
without metrics, saying why."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port

from .harness import Worker, isolated_settings, wait_for

pytestmark = pytest.mark.e2e


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def test_a_worker_serves_its_metrics(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.settings.embedded_port, tmp_path / "data", partitions=1)
    ensure_topics(s)
    port = free_port()
    env = {"POSTLANE_METRICS_PORT": str(port)}
    first = Worker(s, "router", log=tmp_path / "router.log", extra_env=env).start()
    second = Worker(s, "status", log=tmp_path / "status.log", extra_env=env)
    try:
        wait_for(lambda: "postlane_events_in_total" in scrape(port), timeout=60,
                 what="/metrics of the router worker")
        producer = KafkaProducer(bootstrap_servers=s.bootstrap)
        producer.send(s.topic("send-requested"), key=b"m-bad",
                      value=b'{"message_id": "m-bad", "to": "nobody"}').get(10)
        producer.close()
        line = ('postlane_dead_letters_total{processor="router",'
                'reason="invalid SendRequested"} 1.0')
        text = wait_for(lambda: (t := scrape(port)) and line in t and t, timeout=60,
                        what="the dead letter counted")
        taken = f'postlane_events_in_total{{topic="{s.topic("send-requested")}"}} 1.0'
        assert taken in text, text
        assert re.search(r'postlane_events_out_total\{topic="[^"]+dead-letter"\} 1\.0', text)
        second.start()
        wait_for(lambda: "give this worker its own POSTLANE_METRICS_PORT" in second.log_text(),
                 timeout=30, what="the second worker's warning")
        assert second.proc is not None and second.proc.poll() is None
    finally:
        second.stop()
        first.stop()
