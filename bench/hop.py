"""One processor alone: what one hop costs per mail (issue 14).

``python -m bench.hop [--n 20000] [--processor router] [--set FIELD=VALUE]``

On its own embedded broker, only ``postlane worker router`` (or ``status``),
``--n`` SendRequested published at once onto ``send-requested`` before it
starts, so it is saturated from its first fetch to its last: its CPU per
mail is the hop's cost (decode, decide, encode, Faust and aiokafka per
record, the broker's share), with no idle polling in it and little
sensitivity to other load on the machine. The anchor in the same run is a
raw aiokafka consume-and-produce loop over the same records (no Faust, no
decoding): what the Kafka client alone costs per record on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka import KafkaConsumer, TopicPartition

from bench.lanes import bulk_producer
from bench.pipeline import CATCHALL, SERVER, BenchError, CpuMeter, cpu_seconds, settings_overrides
from bench.pipeline import start_worker as start_worker_proc
from postlane.configops import publish_config
from schemas import OutgoingServerConfigured, SendRequested, SettingsChanged, encode
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import ROUTING_DECIDED, SEND_REQUESTED, STATUS

BODY = "x" * 1200


def count_records(s: Settings, topic: str, want: int, stall: float) -> tuple[int, float]:
    """Read ``topic`` from the beginning until ``want`` records or ``stall``
    seconds without one; (records, time.time() of the last)."""
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                             group_id=None, fetch_max_wait_ms=100)
    try:
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got, last_seen, last = 0, time.monotonic(), time.time()
        while got < want and time.monotonic() - last_seen < stall:
            for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                got += len(records)
                last_seen, last = time.monotonic(), time.time()
        return got, last
    finally:
        consumer.close()


async def raw_loop(s: Settings, source: str, target: str, n: int) -> float:
    """aiokafka alone: consume ``n`` records of ``source`` and produce each to
    ``target`` (lz4 as the workers), in this process; its CPU seconds."""
    consumer = AIOKafkaConsumer(source, bootstrap_servers=s.bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=5)
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks="all",
                                compression_type=s.compression_type, linger_ms=0)
    await consumer.start()
    await producer.start()
    t0 = cpu_seconds(os.getpid())
    try:
        got = 0
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            futures = []
            for records in batch.values():
                for r in records:
                    futures.append(await producer.send(target, key=r.key, value=r.value))
                    got += 1
            if futures:
                await asyncio.gather(*futures)
        return cpu_seconds(os.getpid()) - t0
    finally:
        await consumer.stop()
        await producer.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    extra = settings_overrides(args.set or [])
    workdir = Path(tempfile.mkdtemp(prefix="postlane-bench-hop-"))
    s = Settings.from_env(environ=extra, embedded_port=free_port(),
                          data_dir=str(workdir / "data"), partitions=args.partitions,
                          topic_prefix="benchhop.", app_prefix="benchhop")
    server = OutgoingServerConfigured(name=SERVER, host="127.0.0.1", port=9, security="none")
    settings_event = SettingsChanged(catchall_domain=CATCHALL)
    out_topic = {"router": ROUTING_DECIDED, "status": STATUS}[args.processor].full(s)
    broker = worker = None
    result: dict[str, Any] = {"processor": args.processor, "n": args.n}
    try:
        broker = EmbeddedBroker(s, log_path=workdir / "tansu.log").start()
        ensure_topics(s)
        publish_config(s, [(f"server:{SERVER}", server), ("settings", settings_event)])
        prod = bulk_producer(s, "postlane-bench-hop")
        for i in range(args.n):
            req = SendRequested(message_id=uuid.uuid4().hex, from_="app@bench.test",
                                to=[f"rcpt{i % 100}@sink.test"], subject=f"hop {i}", text=BODY)
            prod.send(SEND_REQUESTED.full(s), key=req.message_id.encode(), value=encode(req))
        prod.flush()
        prod.close()
        print(f"{args.n} SendRequested published; starting `postlane worker {args.processor}` "
              f"(logs in {workdir})", flush=True)
        assert broker.proc is not None
        procs = {"broker": broker.proc.pid}
        worker = start_worker_proc(s, (args.processor,), workdir, extra)
        procs["worker"] = worker.pid
        # measured from its first output on (its start-up and recovery left out)
        first, _ = count_records(s, out_topic, 1, stall=120.0)
        if not first:
            raise BenchError("no output in 120 s:\n" + worker.log_tail())
        spy = None
        if args.py_spy:
            result["profile"] = str(workdir / "profile.txt")
            spy = subprocess.Popen(  # noqa: S603 - our own argument list
                [args.py_spy, "record", "--pid", str(worker.pid), "--rate", "200", "--format",
                 "raw", "--output", result["profile"], "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        meter = CpuMeter(procs)
        meter.start()
        t0 = time.time()
        first, _ = count_records(s, out_topic, 1, stall=5.0)
        got, last = count_records(s, out_topic, args.n, stall=args.stall)
        cpu = meter.seconds()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            spy.wait(30)
        done = max(got - first, 1)
        result.update({"out": got, "seconds": last - t0, "measured": done,
                       "worker_ms_per_mail": 1000 * cpu["worker"] / done,
                       "broker_ms_per_mail": 1000 * cpu["broker"] / done})
        if got < args.n:
            raise BenchError(f"only {got} of {args.n} records on {out_topic}:\n"
                             + worker.log_tail())
        worker.stop()
        worker = None
        raw_cpu = asyncio.run(raw_loop(s, SEND_REQUESTED.full(s), s.topic("bench-raw"), args.n))
        result["raw_ms_per_record"] = 1000 * raw_cpu / args.n
        return result
    finally:
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--processor", choices=("router", "status"), default="router")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--stall", type=float, default=60.0)
    p.add_argument("--set", action="append", metavar="FIELD=VALUE")
    p.add_argument("--py-spy", metavar="BIN", help="profile the worker (raw stacks, 200 Hz)")
    args = p.parse_args(argv)
    r = run(args)
    print(f"  {args.processor} alone: {r['out']} out, {r['measured']} measured over "
          f"{r['seconds']:.1f} s ({r['measured'] / max(r['seconds'], 1e-9):.0f}/s); "
          f"worker {r['worker_ms_per_mail']:.3f} ms CPU per mail, "
          f"broker {r['broker_ms_per_mail']:.3f}")
    if r.get("profile"):
        print(f"  profile: {r['profile']}")
    print(f"  anchor, same run: aiokafka consume + produce alone "
          f"{r['raw_ms_per_record']:.3f} ms CPU per record (no Faust, no decoding)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
