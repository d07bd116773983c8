"""What ``postlane_mails{state}`` costs a status worker (streams/mail_states.py).

    python -m bench.mail_states [--n 100000]

- per row written: the sensor's ``on_set`` (the old row's state and the new
  one's, read without parsing; the gauge set), against its anchor measured
  in the same run: ``orjson.loads`` + ``orjson.dumps`` of the same row, what
  the status agent itself does per row (``load`` before folding, ``dump``
  after);
- when a rebalance ends: the rebuild from N rows, holding every partition
  (no key hashed) and holding half of them (each key's partition computed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from types import SimpleNamespace
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge, Histogram

from processors.status.agent import dump
from processors.status.core import evolve
from schemas import DeliveryAttempted, DeliveryStarted, RoutingDecided, SendRequested
from streams import mail_states


def rows(mid: str) -> tuple[bytes, bytes]:
    """A mail's row before and after its accepted attempt (with its history)."""
    req = SendRequested(message_id=mid, from_="app@example.com", to=[f"{mid}@example.org"],
                        subject="Invoice", text="t", occurred_at=100.0)
    st, _ = evolve(None, req)
    st, _ = evolve(st, RoutingDecided(message_id=mid, outcome="routed", server="primary",
                                      header_from="app@example.com", rule="unfiltered_server",
                                      request=req.to_representation(), occurred_at=100.1))
    st, _ = evolve(st, DeliveryStarted(message_id=mid, attempt=1, server="primary",
                                       recipients=[f"{mid}@example.org"], occurred_at=100.2))
    before = dump(st)
    st, _ = evolve(st, DeliveryAttempted(
        message_id=mid, attempt=1, server="primary", occurred_at=100.5,
        outcomes=[{"recipient": f"{mid}@example.org", "status": "accepted", "code": 250,
                   "enhanced": "2.0.0", "text": "Ok: queued as ABC"}]))
    return before, dump(st)


def cpu() -> float:
    return time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    n = ap.parse_args().n
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}, load average {os.getloadavg()[0]:.2f}, {n} mails")
    pairs = [rows(f"m{i:07}") for i in range(n)]
    print(f"row size: {len(pairs[0][1])} bytes (sent, with its history)")
    registry = CollectorRegistry()
    states = mail_states.MailStates(SimpleNamespace(), Gauge("m", "", ["state"],
                                                          registry=registry),
                                    Histogram("l", "", registry=registry))
    store: dict[bytes, Any] = {f"m{i:07}".encode(): b for i, (b, _) in enumerate(pairs)}
    table = SimpleNamespace(data=store)

    t = cpu()
    for _, new in pairs:
        orjson.dumps(orjson.loads(new))
    anchor = (cpu() - t) / n
    t = cpu()
    for i, (_, new) in enumerate(pairs):
        states.on_set(table, f"m{i:07}".encode(), new)
    on_set = (cpu() - t) / n
    print(f"per row written: on_set {on_set * 1e6:.2f} us CPU; anchor (the agent's own "
          f"loads+dumps of the row) {anchor * 1e6:.2f} us ({on_set / anchor:.0%})")

    sent = [new for _, new in pairs]
    for held, label in ((2, "every partition held"), (1, "half of them held")):
        tps = [SimpleNamespace(topic="c", partition=p) for p in range(held)]
        app = SimpleNamespace(conf=SimpleNamespace(topic_partitions=2),
                              assignor=SimpleNamespace(assigned_actives=lambda tps=tps: tps))
        tbl = SimpleNamespace(partitions=2, changelog_topic_name="c",
                              data={f"m{i:07}".encode(): v for i, v in enumerate(sent)})
        t = cpu()
        counts = mail_states.MailCounts()
        counts.rebuild(mail_states.held_rows(app, tbl))
        print(f"rebuild of {n} rows, {label}: {(cpu() - t) * 1000:.0f} ms CPU "
              f"({sum(counts.counts.values())} counted)")


if __name__ == "__main__":
    main()
