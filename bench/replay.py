"""Replay speed (not in CI): events/s folded per table, against a raw
aiokafka read of the same topics in the same run (the anchor).

    .venv/bin/python bench/replay.py [--mails 20000]

Starts its own embedded broker, writes ``--mails`` mails' worth of the
events each processor writes (request, routing decision carrying the
request as the router does, without its default fields, release, start,
outcome, status change; one bounce per 10 mails) and ``--bounces`` more
(default: as many as mails; six per address, days apart), then for each table:
the raw read of its source topics (aiokafka, no decoding), and
``postlane.replayops`` reading and folding them with the processors' own
functions. Prints events/s of wall time and per CPU second (the fold runs
on one core; the reader thread overlaps it a little), and that figure as a
share of the same run's raw read (issue 18 asks for 100,000/s per core where
a raw read did 480,000/s: 21%). Each fold is first
run on no record, untimed: the modules it imports are a cost of the
process, once (~8 ms for the blacklist's), not of its events.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka import TopicPartition as TP  # noqa: E402

from postlane import replayops  # noqa: E402
from postlane.logread import gc_paused, read_all  # noqa: E402
from processors.router.core import carried_request  # noqa: E402
from schemas import (  # noqa: E402
    BounceRecorded,
    DeliveryAttempted,
    DeliveryStarted,
    MailReleased,
    MessageStatusChanged,
    RoutingDecided,
    SendRequested,
    encode,
)
from streams.client import ensure_topics  # noqa: E402
from streams.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.offsets import true_end_offsets  # noqa: E402
from streams.settings import Settings  # noqa: E402


def mail_events(i: int, t0: float) -> list[tuple[str, bytes, bytes]]:
    mid = f"bench-{i:08d}"
    rcpt = f"user{i}@dest{i % 50}.test"
    req = SendRequested(message_id=mid, from_="app@a.test", to=[rcpt], subject=f"mail {i}",
                        text="hello " * 20, tenant=f"t{i % 5}", occurred_at=t0 + i * 0.001)
    dec = RoutingDecided(message_id=mid, outcome="routed", server="main",
                         header_from="app@a.test", envelope_from=f"bounce+{mid}@c.test",
                         rule="from_filter_domain", reason="bench",
                         request=carried_request(req),  # as the router writes it
                         occurred_at=t0 + i * 0.001 + 0.01)
    rel = MailReleased(message_id=mid, lane="transactional", decision=dec.to_representation(),
                       occurred_at=t0 + i * 0.001 + 0.02)
    start = DeliveryStarted(message_id=mid, attempt=1, server="main", recipients=[rcpt],
                            worker="bench", occurred_at=t0 + i * 0.001 + 0.03)
    ok = i % 10 != 0
    outcome = {"recipient": rcpt, "status": "accepted" if ok else "failed",
               "code": 250 if ok else 550, "enhanced": "2.0.0" if ok else "5.1.1",
               "text": "queued" if ok else "no such user"}
    att = DeliveryAttempted(message_id=mid, attempt=1, server="main", outcomes=[outcome],
                            duration=0.01, occurred_at=t0 + i * 0.001 + 0.04)
    changed = MessageStatusChanged(message_id=mid, state="sent" if ok else "failed",
                                   previous="queued", server="main", attempt=1,
                                   occurred_at=t0 + i * 0.001 + 0.05)
    key = mid.encode()
    out = [("send-requested", key, encode(req)), ("routing-decided", key, encode(dec)),
           ("released", key, encode(rel)), ("delivery", key, encode(start)),
           ("delivery", key, encode(att)), ("status", key, encode(changed))]
    if not ok:
        b = BounceRecorded(bounce_id=f"b{i}", address=rcpt, bounced_at=t0 + i * 0.001 + 0.05,
                           reason="unknown_user", hard=True, message_id=mid,
                           source="delivery", status="5.1.1", replycode=550)
        out.append(("bounces", rcpt.encode(), encode(b)))
    return out


def more_bounces(n: int, t0: float) -> list[tuple[str, bytes, bytes]]:
    """``n`` bounces of ``n // 6`` addresses (the first ones of the mails'
    recipients), three days apart, soft and hard, one that does not count
    (blocked): what accumulates per address on ``bounces`` over weeks (the
    sixth blacklists it under the default rule)."""
    out = []
    addresses = max(n // 6, 1)
    reasons = ("mailbox_full", "unknown_user", "blocked", "mailbox_full", "mailbox_full",
               "unknown_user")
    for k in range(n):
        i = k % addresses
        rcpt = f"user{i}@dest{i % 50}.test"
        reason = reasons[(k // addresses) % 6]
        b = BounceRecorded(bounce_id=f"x{k}", address=rcpt,
                           bounced_at=t0 - 40 * 86400 + (k // addresses) * 3 * 86400 + i * 0.01,
                           reason=reason, hard=reason == "unknown_user",
                           message_id=f"bench-{i:08d}",
                           source="mail", status="5.2.2" if reason != "unknown_user" else "5.1.1",
                           replycode=552, diagnostic="552 5.2.2 mailbox full",
                           server="mx.dest.test", occurred_at=t0 + k * 0.0001)
        out.append(("bounces", rcpt.encode(), encode(b)))
    return out


async def produce(s: Settings, mails: int, bounces: int = 0) -> int:
    p = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5,
                         compression_type=s.compression_type,  # the workers' codec
                         max_batch_size=256 * 1024)
    await p.start()
    n = 0
    t0 = time.time() - 3600
    try:
        futs = []
        for i in range(mails):
            for topic, key, value in mail_events(i, t0):
                futs.append(await p.send(s.topic(topic), value=value, key=key))
                n += 1
            if len(futs) > 5000:
                await asyncio.gather(*futs)
                futs = []
        for topic, key, value in more_bounces(bounces, t0):
            futs.append(await p.send(s.topic(topic), value=value, key=key))
            n += 1
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return n


async def raw_read(s: Settings, topics: list[str]) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False,
                         fetch_max_wait_ms=100, max_partition_fetch_bytes=8 * 1024 * 1024,
                         fetch_max_bytes=64 * 1024 * 1024)
    await c.start()
    try:
        tps = [TP(t, p) for t in topics for p in sorted(c.partitions_for_topic(t) or [])]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await true_end_offsets(c, tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        n = 0
        while todo:
            batch = await c.getmany(*todo, timeout_ms=200, max_records=50000)
            for tp, recs in batch.items():
                n += len(recs)
                if recs and recs[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        return n
    finally:
        await c.stop()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=20000)
    ap.add_argument("--tables",
                    default="status,delivery-ledger,blacklist,limiter-held,sent-threads")
    ap.add_argument("--bounces", type=int, default=None,
                    help="bounces beyond the failed mails' (default: --mails)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=d,
                              topic_prefix="bench.", app_prefix="bench")
        broker = EmbeddedBroker(s, log_path=Path(d) / "tansu.log").start()
        try:
            ensure_topics(s)
            t = time.perf_counter()
            bounces = args.mails if args.bounces is None else args.bounces
            n = asyncio.run(produce(s, args.mails, bounces))
            print(f"wrote {n} events of {args.mails} mails (+{bounces} bounces) in "
                  f"{time.perf_counter() - t:.1f} s")
            for name in args.tables.split(","):
                spec = replayops.tables()[name]
                topics = [t.full(s) for t in spec.sources]
                # the fold once on no record: its modules imported (once per
                # process, ~8 ms for the blacklist's), not timed as folding
                spec.fold(s, [])
                w0 = time.perf_counter()
                raw = asyncio.run(raw_read(s, topics))
                raw_s = time.perf_counter() - w0
                with gc_paused():  # as replayops.run reads and folds
                    w0, c0 = time.perf_counter(), time.process_time()
                    recs = read_all(s, topics)
                    w1, c1 = time.perf_counter(), time.process_time()
                    folded = spec.fold(s, recs)
                    w2, c2 = time.perf_counter(), time.process_time()
                total_w, total_c = w2 - w0, c2 - c0
                print(f"{name:16s} {len(recs):7d} events: raw aiokafka read "
                      f"{raw / raw_s:9,.0f}/s | replay {len(recs) / total_w:9,.0f}/s wall, "
                      f"{len(recs) / total_c:9,.0f}/s per CPU s = "
                      f"{len(recs) / total_c / (raw / raw_s):.0%} of the raw read "
                      f"(read {w1 - w0:.2f} s wall "
                      f"{c1 - c0:.2f} s CPU, fold {w2 - w1:.2f} s wall {c2 - c1:.2f} s CPU; "
                      f"{len(folded.rows)} rows)")
                assert raw == len(recs), (raw, len(recs))
                # freed here, untimed: otherwise the next table's read and
                # fold would free this one's records and rows (reassigning
                # recs and folded) inside their own timing, and its raw read
                # would run its collections over them (`postlane replay`
                # folds one table per process)
                del recs, folded
                gc.collect()
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
