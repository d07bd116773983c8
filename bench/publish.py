"""The publisher's CPU per mail (not in CI): the Publisher in this tree against
the Publisher of an earlier commit (the anchor), in the same run.

    .venv/bin/python -m bench.publish [--mails 2000] [--threads 4] [--rounds 5]
                                      [--base REV] [--only base|new] [--partitions 4]

Starts its own embedded broker on a free port, loads ``postlane/publisher.py``
as it was at ``--base`` (``git show``; default 01760a7, the kafka-python
publisher) next to the one in this tree, and publishes ``--mails`` mails with
each in turn, ``--rounds`` times, alternating which goes first. A mail is
what ``bench/pipeline.py``'s throughput phase publishes (one recipient, a
short text body; ``build()`` then ``publish()``), from ``--threads`` threads
with one acknowledged publish at a time in each. Per round it prints the CPU
time of this whole process (``time.process_time()``: every thread, the
clients' own I/O threads included; not wall time, other work shares the
machine) per mail, and mails/s of wall time; then the medians. At the end it
reads the topics back: every id published exactly once, on the partition
the workers' murmur2 partitioner gives its key.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from postlane import publisher as new_publisher  # noqa: E402
from streams.client import ensure_topics, read_topic  # noqa: E402
from streams.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.partitioning import partition_for  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import SEND_REQUESTED  # noqa: E402

# bench/pipeline.py's mail body (not imported: that module pulls the whole bench)
BODY = ("Hello,\n\nthis is a Postlane pipeline benchmark mail. It carries a few lines of "
        "text so the message is about the size of a short notification.\n\n-- \nbench\n")
BASE_REV = "01760a7"


def load_base(rev: str) -> ModuleType:
    """``postlane/publisher.py`` as it was at ``rev``, as a module of its own."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:postlane/publisher.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp(prefix="publisher-base-")) / "publisher_base.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("publisher_base", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def publish_mails(pub: Any, tag: str, n: int, threads: int) -> list[str]:
    """``n`` mails from ``threads`` threads, one acknowledged publish at a
    time in each; the ids the publisher returned."""
    ids: list[list[str]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            out = ids[k]
            for i in range(k, n, threads):
                event = pub.build(from_="app@bench.test", to=[f"rcpt{i % 100}@sink.test"],
                                  subject=f"bench {tag} {i}", text=BODY)
                out.append(pub.publish(event))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return [m for chunk in ids for m in chunk]


def machine_busy() -> float:
    """Cores' worth of CPU used by every process on the machine since boot
    (user + system + ...), in seconds; see ``others``."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(x) for i, x in enumerate(fields) if i not in (3, 4))  # not idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=2000, help="mails per round and publisher")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--base", default=BASE_REV, help="the commit whose publisher is the anchor")
    ap.add_argument("--only", choices=("base", "new"), help="one publisher (for py-spy)")
    args = ap.parse_args()

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                            "postlane/publisher.py"], capture_output=True, text=True).stdout
    mods = {"base": load_base(args.base), "new": new_publisher}
    names = {"base": f"base ({args.base})", "new": f"new ({head}{'+dirty' if dirty else ''})"}
    order = [args.only] if args.only else ["base", "new"]
    print(f"{args.mails} mails per round, {args.threads} threads, {args.rounds} rounds, "
          f"{args.partitions} partitions; load average {os.getloadavg()[0]:.2f}")

    with tempfile.TemporaryDirectory() as d:
        s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=d,
                              partitions=args.partitions, topic_prefix="bench.",
                              app_prefix="bench")
        broker = EmbeddedBroker(s, log_path=Path(d) / "tansu.log").start()
        pubs: dict[str, Any] = {}
        try:
            ensure_topics(s)
            for key in order:
                pubs[key] = mods[key].Publisher(settings=s)
                publish_mails(pubs[key], f"warm-{key}", 200, args.threads)  # connect, warm up
            cpu: dict[str, list[float]] = {k: [] for k in order}
            rate: dict[str, list[float]] = {k: [] for k in order}
            published: list[str] = []
            for r in range(args.rounds):
                for key in (order if r % 2 == 0 else order[::-1]):
                    m0, w0, c0 = machine_busy(), time.perf_counter(), time.process_time()
                    ids = publish_mails(pubs[key], f"{key}-{r}", args.mails, args.threads)
                    c1, w1, m1 = time.process_time(), time.perf_counter(), machine_busy()
                    assert len(ids) == args.mails, (key, len(ids))
                    published += ids
                    cpu[key].append((c1 - c0) / args.mails * 1000)
                    rate[key].append(args.mails / (w1 - w0))
                    others = max(0.0, (m1 - m0) - (c1 - c0)) / (w1 - w0)
                    print(f"  round {r + 1} {names[key]:24s} {cpu[key][-1]:6.3f} ms CPU/mail "
                          f"{rate[key][-1]:7.0f} mails/s  (other processes, broker "
                          f"included: {others * 100:.0f}% of a core)")
            print("medians:")
            for key in order:
                print(f"  {names[key]:24s} {statistics.median(cpu[key]):6.3f} ms CPU/mail "
                      f"{statistics.median(rate[key]):7.0f} mails/s")
            if len(order) == 2:
                ratio = statistics.median(cpu["base"]) / statistics.median(cpu["new"])
                print(f"  new costs 1/{ratio:.2f} of base's CPU per mail")
            for pub in pubs.values():
                pub.close()
            pubs = {}
            check(s, published, args.partitions)
        finally:
            for pub in pubs.values():
                pub.close()
            broker.stop()
    return 0


def check(s: Settings, published: list[str], partitions: int) -> None:
    """Every published id on send-requested once, on its murmur2 partition."""
    seen: Counter[str] = Counter()
    misplaced = 0
    for rec in read_topic(s, SEND_REQUESTED.full(s), idle=0.5):
        key = (rec.key or b"").decode()
        seen[key] += 1
        misplaced += rec.partition != partition_for(key, partitions)
    missing = [m for m in published if seen[m] == 0]
    twice = [m for m in published if seen[m] > 1]
    print(f"read back: {len(published)} published, {len(missing)} missing, "
          f"{len(twice)} more than once, {misplaced} records off their murmur2 partition")
    if missing or twice or misplaced:
        raise SystemExit("the read-back check failed")


if __name__ == "__main__":
    sys.exit(main())
