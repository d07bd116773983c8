"""Every ``postlane worker`` serves Prometheus text at /metrics: a router
worker counts the records it took in and the dead letter it wrote (by
processor and reason), and a second worker on the same port runs on
without metrics, saying why. A status worker serves mails by state and
the request-to-sent latency, rebuilt from its table after a restart; two
status workers each serve their own partitions and their sum is the
whole."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.client import ensure_topics, publish
from streams.embedded import EmbeddedBroker, free_port
from streams.topics import SEND_REQUESTED

from .harness import Worker, isolated_settings, wait_for
from .test_status_e2e import mail_events, publish_mail

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


def samples(port: int, name: str) -> dict[str, float]:
    """``name``'s samples on one worker: label values joined by ',' -> value."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(scrape(port)):
        for sample in family.samples:
            if sample.name == name:
                out[",".join(sample.labels.values())] = sample.value
    return out


def mails(*ports: int) -> dict[str, float]:
    """postlane_mails summed over workers (what Prometheus' sum does), zeros left out."""
    total: dict[str, float] = {}
    for port in ports:
        for state, n in samples(port, "postlane_mails").items():
            total[state] = total.get(state, 0.0) + n
    return {state: n for state, n in total.items() if n}


def test_status_workers_serve_mails_by_state_rebuilt_after_a_restart(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.settings.embedded_port, tmp_path / "data", partitions=2)
    ensure_topics(s)
    ports = [free_port() for _ in range(3)]

    def status_worker(n: int) -> Worker:
        return Worker(s, "status", log=tmp_path / f"status{n}.log",
                      extra_env={"POSTLANE_METRICS_PORT": str(ports[n])}).start()

    t0 = time.time() - 60
    for i in range(3):  # three mails sent, 3 s from request to the accepted attempt
        mid = f"m-sent-{i}"
        publish_mail(s, mid, mail_events(mid, t0))
    waiting = mail_events("m-queued", t0)["request"]
    publish(s, SEND_REQUESTED, [("m-queued", waiting)])
    workers = [status_worker(0)]
    try:
        wait_for(lambda: mails(ports[0]) == {"sent": 3.0, "queued": 1.0}, timeout=90,
                 what="sent 3, queued 1 on the status worker")
        latency = samples(ports[0], "postlane_delivery_latency_seconds_bucket")
        assert latency["5.0"] == 3.0 and latency["2.5"] == 0.0, latency
        assert samples(ports[0], "postlane_delivery_latency_seconds_count") == {"": 3.0}
        workers.pop().stop()  # a restart: the counts come back from the status table
        workers.append(status_worker(1))
        wait_for(lambda: mails(ports[1]) == {"sent": 3.0, "queued": 1.0}, timeout=90,
                 what="sent 3, queued 1 after the restart")
        workers.append(status_worker(2))  # a second status worker: each its own partition
        try:
            wait_for(lambda: (all(mails(p) for p in ports[1:])
                              and mails(*ports[1:]) == {"sent": 3.0, "queued": 1.0}),
                     timeout=90, what="two status workers, each its own partition")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{[mails(p) for p in ports[1:]]}\n"
                                 f"{workers[0].log_text()[-3000:]}\n---\n"
                                 f"{workers[1].log_text()[-3000:]}") from None
    finally:
        for w in workers:
            w.stop()
