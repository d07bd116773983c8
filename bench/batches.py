"""Record batches per topic on the embedded broker (not in CI).

Tansu keeps every record batch as it was produced, and a fetch costs it CPU
in proportion to the batches stored in the partition it reads, not to what
it answers (``bench/tansu_fetch.py`` measures it): a topic written one
record per batch slows every later read of it. ``count_batches`` reads
every topic from the beginning with aiokafka and counts the batches and
records it gets, per topic; the benches print it after a run.

    .venv/bin/python -m bench.batches BOOTSTRAP
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as TP
from aiokafka.consumer.fetcher import PartitionRecords

from streams.offsets import true_end_offsets


def _counting(seen: dict[str, list[int]]) -> Callable[[Any], Iterator[Any]]:
    """In place of aiokafka's ``PartitionRecords._unpack_records``: count
    each non-control batch (and its records at or past the fetch offset),
    move the fetch offset past it, yield nothing."""
    def unpack(pr: Any) -> Iterator[Any]:
        records = pr._records
        while records.has_next():
            batch = records.next_batch()
            start = pr.next_fetch_offset
            pr.next_fetch_offset = batch.next_offset
            if batch.is_control_batch:
                continue
            n = size = 0
            for r in batch:
                if r.offset >= start:
                    n += 1
                    size += len(r.key or b"") + len(r.value or b"")
            if n:
                c = seen.setdefault(pr._tp.topic, [0, 0, 0])
                c[0] += 1
                c[1] += n
                c[2] += size
        yield from ()
    return unpack


async def count_batches(bootstrap: str, idle: float = 1.0,
                        topics: tuple[str, ...] = ()) -> dict[str, tuple[int, int, int]]:
    """{topic: (batches, records, key and value bytes before compression)}
    over every partition of every topic (or of ``topics``)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                client_id="postlane-bench-batches", fetch_max_wait_ms=100)
    await consumer.start()
    seen: dict[str, list[int]] = {}
    original = PartitionRecords._unpack_records
    try:
        tps = [TP(t, p) for t in await consumer.topics() if not topics or t in topics
               for p in (consumer.partitions_for_topic(t) or ())]
        if not tps:
            return {}
        PartitionRecords._unpack_records = _counting(seen)  # before the first fetch
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(consumer, tps)
        while True:
            await consumer.getmany(timeout_ms=int(idle * 1000), max_records=100000)
            if all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
    finally:
        PartitionRecords._unpack_records = original
        await consumer.stop()
    return {t: (b, r, n) for t, (b, r, n) in sorted(seen.items())}


def lines(counts: dict[str, tuple[int, int, int]], partitions: int,
          mails: int = 0) -> list[str]:
    """The table the benches print; with ``mails``, also bytes per mail."""
    width = max((len(t) for t in counts), default=10)
    out = [f"  record batches stored, per topic ({partitions} partitions each; bytes: keys "
           "and values before compression):"]
    for topic, (batches, records, size) in sorted(counts.items(), key=lambda kv: -kv[1][0]):
        per_mail = f" {size / mails:7,.0f} B per mail" if mails else ""
        out.append(f"    {topic:<{width}} {batches:8,d} batches {records:9,d} records "
                   f"({records / max(batches, 1):5.1f} per batch) {size:12,d} B{per_mail}")
    if mails and counts:
        b, r, n = (sum(c[i] for c in counts.values()) for i in range(3))
        out.append(f"    {'all topics, per mail':<{width}} {b / mails:8.2f} batches "
                   f"{r / mails:9.2f} records {'':19}{n / mails:12,.0f} B")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bootstrap")
    args = p.parse_args()
    counts = asyncio.run(count_batches(args.bootstrap))
    print("\n".join(lines(counts, 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
