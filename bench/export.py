"""Export speed (not in CI): events/s written to Parquet, CSV and JSONL,
against a raw aiokafka read of the same topics in the same run (the anchor).

    .venv/bin/python bench/export.py [--mails 20000] [--topics delivery,status,routing-decided]

Starts its own embedded broker and writes the events of ``--mails`` mails
(``bench/replay.py``'s), then exports the topics with ``postlane.exportops``
(the code behind ``postlane export``) and reads each file back with pyarrow
to check one row per event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.csv as pacsv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.replay import produce, raw_read  # noqa: E402
from postlane import exportops  # noqa: E402
from streams.client import ensure_topics  # noqa: E402
from streams.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.settings import Settings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=20000)
    ap.add_argument("--topics", default="delivery,status,routing-decided")
    args = ap.parse_args()
    topics = args.topics.split(",")
    with tempfile.TemporaryDirectory() as d:
        s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=d,
                              topic_prefix="bench.", app_prefix="bench")
        broker = EmbeddedBroker(s, log_path=Path(d) / "tansu.log").start()
        try:
            ensure_topics(s)
            n = asyncio.run(produce(s, args.mails, 0))
            print(f"wrote {n} events of {args.mails} mails")
            w0 = time.perf_counter()
            raw = asyncio.run(raw_read(s, [s.topic(t) for t in topics]))
            print(f"raw aiokafka read of {','.join(topics)}: {raw} records, "
                  f"{raw / (time.perf_counter() - w0):,.0f}/s")
            for fmt, jobs in [(f, 1) for f in exportops.FORMATS] + [("parquet", 2)]:
                out = Path(d) / f"export.{fmt}"
                t0 = os.times()
                done = exportops.export(s, topics, fmt, out, jobs=jobs)
                t1 = os.times()  # this process only: jobs=1
                user, system = t1.user - t0.user, t1.system - t0.system
                cpu = user + system
                if fmt == "parquet":
                    back = pq.read_table(out).num_rows
                elif fmt == "csv":
                    back = pacsv.read_csv(out).num_rows
                else:
                    back = len(out.read_bytes().splitlines())
                assert back == done.rows == raw, (back, done.rows, raw)
                # (the system part moves from run to run on this VM: 0.05-0.9 s
                # for the same export; the user part does not)
                per_cpu = (f"{done.rows / cpu:9,.0f}/s per CPU s (user {user:.2f} s, "
                           f"system {system:.2f} s)") if jobs == 1 else f"{jobs} processes"
                print(f"export {fmt:8s} {done.rows} events: {done.rows / done.seconds:9,.0f}/s "
                      f"wall, {per_cpu}, {out.stat().st_size:,} bytes")
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
