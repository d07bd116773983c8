"""Test harness: real worker processes against the embedded broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas import Event, decode_any
from streams.client import Record, read_topic
from streams.settings import Settings
from streams.topics import TopicSpec


def isolated_settings(port: int, data_dir: Path, **overrides: Any) -> Settings:
    """Settings with a unique topic prefix and group prefix, so tests can
    share one broker without seeing each other's events."""
    tag = uuid.uuid4().hex[:8]
    return Settings.from_env(
        environ={}, embedded_port=port, data_dir=str(data_dir),
        topic_prefix=f"t{tag}.", app_prefix=f"t{tag}", **overrides,
    )


def settings_env(s: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTLANE_")}
    for name in ("embedded_port", "data_dir", "topic_prefix", "app_prefix", "partitions",
                 "retry_first", "retry_max", "retry_give_up", "smtp_timeout",
                 "attempt_deadline", "broker"):
        env[f"POSTLANE_{name.upper()}"] = str(getattr(s, name))
    return env


class Worker:
    """``postlane worker NAMES`` as a subprocess, stopped by its PID."""

    def __init__(self, s: Settings, *names: str, log: Path, extra_env: dict[str, str] | None
                 = None) -> None:
        self.settings = s
        self.names = names
        self.log = log
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postlane", "worker", *self.names, "--loglevel", "info"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**settings_env(self.settings), **self.extra_env},
        )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def read_events(s: Settings, spec: TopicSpec, registry: dict[str, type[Event]],
                idle: float = 0.3) -> list[tuple[Record, Event]]:
    out = []
    for rec in read_topic(s, spec.full(s), idle=idle):
        out.append((rec, decode_any(registry, rec.value)))
    return out


def wait_for(fn: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5,
             what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def committed_everywhere(s: Settings, processors: tuple[str, ...],
                         specs: tuple[TopicSpec, ...]) -> bool:
    """The group of a worker running ``processors`` has committed an offset on
    every partition of ``specs`` (a worker killed before its group's first
    commit on a partition loses that input on restart: README "Known limits")."""
    from kafka import KafkaAdminClient

    group = f"{s.app_prefix}-{'-'.join(sorted(processors))}"
    admin = KafkaAdminClient(bootstrap_servers=s.bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    done = {(tp.topic, tp.partition) for tp, om in offsets.items() if om.offset > 0}
    return all((spec.full(s), p) in done for spec in specs for p in range(s.partitions))
