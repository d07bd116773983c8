"""Broker loss is detected and said (issue 20), with brokers of their own.

- A worker whose broker is restarted without its log (a new cluster id)
  stops with one sentence and exit code 3, instead of routing on a
  configuration the new broker no longer holds.
- ``postlane dev`` exits with the sentence when its broker child dies, and
  its broker dies with it when ``postlane dev`` is killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from postlane.publisher import Publisher
from postlane.statusview import read_status
from streams.broker_watch import EXIT_BROKER_LOST
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port, port_open
from streams.settings import Settings

from .harness import Worker, isolated_settings, settings_env, wait_for

pytestmark = pytest.mark.e2e


def _start_and_route_a_mail(s: Settings, worker: Worker) -> None:
    """The topics made, ``worker`` (router and status) started, and a mail
    routed: with no server configured the router answers, status records it."""
    ensure_topics(s)
    worker.start()
    with Publisher(settings=s) as pub:
        mid = pub.send(from_="a@a.test", to=["b@b.test"], subject="s", text="t")
    wait_for(lambda: (read_status(s, mid, timeout=1) or {}).get("state") not in
             (None, "queued"), timeout=60, what="the mail routed")


def test_a_worker_stops_in_words_when_its_broker_comes_back_empty(tmp_path: Path) -> None:
    s = isolated_settings(free_port(), tmp_path / "data", partitions=1)
    first = EmbeddedBroker(s).start()
    second: EmbeddedBroker | None = None
    worker = Worker(s, "router", "status", log=tmp_path / "worker.log",
                    extra_env={"POSTLANE_WEB_PORT": str(free_port())})
    try:
        _start_and_route_a_mail(s, worker)
        first.stop()
        second = EmbeddedBroker(s).start()
        assert second.cluster_id != first.cluster_id
        assert worker.proc is not None
        wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None,
                 timeout=60, what="the worker to stop")
        assert worker.proc.returncode == EXIT_BROKER_LOST, worker.log_text()[-3000:]
        said = worker.log_text()
        assert f"is not the one this worker started with (cluster id {first.cluster_id!r}, " \
               f"now {second.cluster_id!r})" in said, said[-3000:]
        assert "postlane config apply" in said
    finally:
        worker.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_a_worker_whose_broker_is_gone_stops_on_sigterm(tmp_path: Path) -> None:
    """The broker stopped for good, then SIGTERM: the worker stops (before
    fix_stop_fails_while_a_fetch_backs_off its consumer thread died in
    stop() and the worker waited for it forever)."""
    s = isolated_settings(free_port(), tmp_path / "data", partitions=1)
    broker = EmbeddedBroker(s).start()
    worker = Worker(s, "router", "status", log=tmp_path / "worker.log",
                    extra_env={"POSTLANE_WEB_PORT": str(free_port())})
    try:
        _start_and_route_a_mail(s, worker)
        broker.stop()
        wait_for(lambda: "Unable connect to node" in worker.log_text(), timeout=30,
                 what="the worker's fetches failing")
        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        try:
            worker.proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker did not stop within 30 s of SIGTERM: "
                                 + worker.log_text()[-3000:]) from None
        assert "Exception in thread" not in worker.log_text()
    finally:
        worker.stop()
        broker.stop()


def _dev(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    s = isolated_settings(port, tmp_path / "data")
    env = {**settings_env(s), "POSTLANE_WEB_PORT": str(free_port()),
           "POSTLANE_CAPTURE_SMTP_PORT": str(free_port()),
           "POSTLANE_INGRESS_PORT": str(free_port()),
           "POSTLANE_UNSUBSCRIBE_PORT": str(free_port()),
           "POSTLANE_CAPTURE_DIR": str(tmp_path / "captured")}
    log = open(tmp_path / "dev.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "postlane", "dev"], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def _started(tmp_path: Path, dev: subprocess.Popen[bytes]) -> None:
    wait_for(lambda: "postlane dev:" in (tmp_path / "dev.log").read_text(errors="replace")
             or dev.poll() is not None, timeout=60, what="postlane dev to start")
    assert dev.poll() is None, (tmp_path / "dev.log").read_text(errors="replace")[-3000:]


def test_dev_ends_with_its_broker_and_its_broker_with_it(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    dev = _dev(tmp_path / "a", free_port())
    try:
        _started(tmp_path / "a", dev)
        [broker_pid] = _children(dev.pid)
        os.kill(broker_pid, signal.SIGKILL)
        dev.wait(30)
        said = (tmp_path / "a" / "dev.log").read_text(errors="replace")
        assert dev.returncode == EXIT_BROKER_LOST, said[-3000:]
        assert f"the embedded broker (pid {broker_pid}) exited with code -9" in said
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(10)

    port = free_port()
    (tmp_path / "b").mkdir()
    dev = _dev(tmp_path / "b", port)
    try:
        _started(tmp_path / "b", dev)
        [broker_pid] = _children(dev.pid)
        dev.kill()  # SIGKILL: no finally runs in postlane dev
        dev.wait(10)
        wait_for(lambda: not Path(f"/proc/{broker_pid}").exists()
                 or "Z" in Path(f"/proc/{broker_pid}/stat").read_text().split()[2],
                 timeout=15, what="the broker to die with postlane dev")
        wait_for(lambda: not port_open("127.0.0.1", port), timeout=10,
                 what="the broker's port to be free")
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait(10)
