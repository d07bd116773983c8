"""One very busy server with a limit: what exact limits cost.

    python -m bench.busy_server [--n 5000] [--limiters 1] [--partitions 4]
                                [--daily 1000000000] [--rate TEXT] [--stall 60]
                                [--idle 3] [--py-spy BIN] [--json FILE] [--keep]

Only the limiter, on its own embedded Tansu broker (memory storage, loopback,
every process stopped by PID): ``--limiters`` ``postlane worker limiter``
processes (one consumer group: they share the partitions, and the one that
owns the ``quota`` topic's one partition counts for all), one server with a
daily limit of ``--daily`` (the default is far above ``--n``: every mail asks
the quota and is granted) and, with ``--rate`` (``50/s``), a rate. ``--n``
routed decisions (``processors.router.core.decide`` against the same config)
are published at once onto ``routing-decided``, spread over the partitions
by message_id. It measures:

- MailReleased per second for the one server: the ceiling a very busy
  server reaches through the limiter (each mail: partition -> quota ->
  partition -> released);
- the CPU of every limiter process per released mail (the issue's budget:
  at most 0.4 ms), and of the broker; and the same above the limiters'
  idle use (``--idle`` seconds with no mail, measured just before: a Faust
  worker polls its topics and ticks its timers when there is nothing to
  do, and that share per mail grows as the throughput falls);
- exactness: released == min(--n, --daily), none twice; with ``--rate``, the
  most mails released in any 60 s (or the whole run, if shorter) against
  the rate.

It prints what it ran against (commit, versions, machine, load) first.
Not part of CI (pytest only collects tests/).
"""

from __future__ import annotations

import argparse
import bisect
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench.lanes import bulk_producer
from bench.pipeline import (
    BODY,
    CATCHALL,
    SERVER,
    BenchError,
    CpuMeter,
    Profiler,
    cpu_line,
    load_average,
    start_worker,
    summarize_profile,
    versions,
)
from postlane.configops import publish_config
from processors.config.view import ConfigView, evolve
from processors.router.core import decide
from schemas import OutgoingServerConfigured, SendRequested, SettingsChanged, encode, parse_rate
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import HELD, RELEASED, ROUTING_DECIDED


class GilProfiler(Profiler):
    """bench.pipeline's py-spy recorder, sampling only the thread that holds
    the GIL (``--gil``): a worker has two threads (the event loop and the
    consumer's), and one waiting for the GIL would count as busy."""

    def start(self, workers: list[Any], label: str = "", duration: int = 0) -> None:
        self.t0 = time.monotonic()
        for w in workers:
            out = self.workdir / f"profile{label}-limiter.txt"
            popen = subprocess.Popen(
                [self.binary, "record", "--pid", str(w.pid), "--rate", str(self.rate),
                 "--format", "raw", "--output", str(out), "--nonblocking", "--gil"],
                stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "ab"),  # noqa: SIM115
            )
            self.running.append((w.name, popen, out))


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=Path(__file__).parent)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header(args: argparse.Namespace, s: Settings) -> None:
    v = versions()
    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in
                      Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    print("=" * 78)
    print("bench.busy_server: one very busy server through exact limits")
    print("=" * 78)
    print(f"commit      {commit()}")
    print(f"broker      Tansu {v['tansu']} (embedded, memory storage) on {s.bootstrap}")
    print(f"clients     faust-streaming {v['faust-streaming']}, aiokafka {v['aiokafka']}, "
          f"kafka-python {v['kafka-python']}; Python {platform.python_version()}")
    print(f"machine     {os.cpu_count()} CPUs ({model}); load average before "
          f"{'/'.join(f'{x:.2f}' for x in load_average())}")
    print(f"run         {args.n} mails to server {SERVER!r}, daily limit {args.daily}"
          f"{', rate ' + args.rate if args.rate else ''}; {s.partitions} partitions, "
          f"{args.limiters} limiter worker(s)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="postlane-bench-busy-"))
    s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=str(workdir / "data"),
                          partitions=args.partitions, topic_prefix="busy.", app_prefix="busy")
    server = OutgoingServerConfigured(name=SERVER, host="127.0.0.1", port=9, security="none",
                                      daily_limit=args.daily, rate=args.rate)
    settings_event = SettingsChanged(catchall_domain=CATCHALL)
    view = evolve(evolve(ConfigView(), server), settings_event)
    items: list[tuple[str, bytes]] = []
    for i in range(args.n + 1):  # the first one warms up
        request = SendRequested(message_id=uuid.uuid4().hex, from_="app@bench.test",
                                to=[f"rcpt{i % 100}@sink.test"], subject=f"busy {i}",
                                text=BODY)
        decision = decide(view, request)
        if decision.outcome != "routed":
            raise BenchError(f"decide() did not route the bench mail: {decision.reason}")
        items.append((request.message_id, encode(decision)))
    header(args, s)
    broker = prod = consumer = None
    workers: list[Any] = []
    out: dict[str, Any] = {"commit": commit(), "n": args.n, "daily": args.daily,
                           "rate": args.rate, "partitions": s.partitions,
                           "limiters": args.limiters}
    try:
        broker = EmbeddedBroker(s, log_path=workdir / "tansu.log").start()
        ensure_topics(s)
        publish_config(s, [(f"server:{SERVER}", server), ("settings", settings_event)])
        for i in range(args.limiters):
            (workdir / f"w{i}").mkdir()
            workers.append(start_worker(s, ("limiter",), workdir / f"w{i}", {}))
        prod = bulk_producer(s, "postlane-bench-busy")
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                 group_id=None, client_id="postlane-bench-busy-reader",
                                 fetch_max_wait_ms=100)
        tps = [TopicPartition(spec.full(s), p) for spec in (RELEASED, HELD)
               for p in range(s.partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        released: dict[str, list[float]] = {}
        held: set[str] = set()

        def poll() -> None:
            for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                for r in records:
                    ev = orjson.loads(r.value or b"{}")
                    if ev.get("type") == "MailReleased":
                        released.setdefault(ev["message_id"], []).append(
                            float(ev.get("occurred_at", 0)))
                    elif ev.get("type") == "MailHeld" and ev.get("why") == "daily_limit":
                        held.add(ev["message_id"])

        def drain(ids: set[str], stall: float) -> set[str]:
            last, done = time.monotonic(), 0
            while time.monotonic() - last < stall:
                for w in workers:
                    if not w.alive():
                        raise BenchError(f"a limiter exited:\n{w.log_tail()}")
                poll()
                now_done = len(ids & (set(released) | held))
                if now_done == len(ids):
                    return set()
                if now_done > done:
                    done, last = now_done, time.monotonic()
            return ids - set(released) - held

        t_ready = time.monotonic()
        warm_id, warm_value = items[0]
        prod.send(ROUTING_DECIDED.full(s), key=warm_id.encode(), value=warm_value).get(30)
        if drain({warm_id}, stall=180.0):
            raise BenchError("the limiter released nothing in 180 s:\n" + workers[0].log_tail())
        time.sleep(max(0.0, 8.0 - (time.monotonic() - t_ready)))  # every worker has joined
        out["ready_s"] = time.monotonic() - t_ready
        procs = {f"limiter {i}": w.pid for i, w in enumerate(workers)}
        procs["tansu broker"] = broker.proc.pid if broker.proc else 0
        procs["bench (publisher, reader)"] = os.getpid()
        idle = CpuMeter(procs)  # the anchor: what the workers burn with no mail at all
        idle.start()
        time.sleep(args.idle)
        idle_cpu = idle.stop()
        out["idle_limiter_cores"] = sum(c for n, c in idle_cpu.items() if n.startswith("limiter"))
        profiler = GilProfiler(args.py_spy, workdir, rate=250) if args.py_spy else None
        if profiler is not None:
            for i, w in enumerate(workers):  # one profile file each (same worker name)
                profiler.start([w], label=str(i))
        meter = CpuMeter(procs)
        meter.start()
        t0 = time.time()
        for mid, value in items[1:]:
            prod.send(ROUTING_DECIDED.full(s), key=mid.encode(), value=value)
        prod.flush()
        ids = {mid for mid, _ in items[1:]}
        missing = drain(ids, stall=args.stall)
        cpu = meter.stop()
        wall = meter.wall
        if profiler is not None:
            out["profiles"] = [
                (f"{name} {i}", summarize_profile(path, profiler.seconds, profiler.rate,
                                                  top=25))
                for i, (name, path) in enumerate(profiler.stop())]
        time.sleep(2.0)
        poll()
        poll()
        times = sorted(released[m][0] for m in ids if m in released)
        got = len(times)
        # the warm-up mail took one; 0: no daily limit
        expected = min(args.n, args.daily - 1) if args.daily else args.n
        out.update({
            "released": got, "expected": expected, "held_daily_limit": len(held & ids),
            "missing": len(missing), "twice": sum(1 for m in ids if len(released.get(m, [])) > 1),
            "cpu_cores": cpu, "wall_s": wall,
        })
        if got > 1:
            out["msg_s"] = got / (times[-1] - t0)
            out["steady_msg_s"] = (got - 1) / (times[-1] - times[0])
            limiter_cpu = sum(c for n, c in cpu.items() if n.startswith("limiter"))
            out["cpu_ms_per_mail"] = limiter_cpu * wall / got * 1000
            out["cpu_ms_per_decision"] = limiter_cpu * wall / args.n * 1000
            busy = max(0.0, limiter_cpu - out["idle_limiter_cores"])
            out["net_cpu_ms_per_mail"] = busy * wall / got * 1000
            out["broker_cpu_ms_per_mail"] = cpu["tansu broker"] * wall / got * 1000
        if args.rate and got > 1:
            span = min(60.0, times[-1] - times[0])
            most = max(bisect.bisect_left(times, t + span) - i for i, t in enumerate(times))
            out["rate_window_s"] = span
            out["rate_most"] = most
            out["rate_allowed"] = parse_rate(args.rate) * span
    finally:
        for closer in (consumer, prod):
            if closer is not None:
                closer.close()
        for w in workers:
            w.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


def report(r: dict[str, Any]) -> bool:
    print(f"\nready in {r.get('ready_s', 0):.1f} s; {r['n']} decisions published at once")
    if "msg_s" in r:
        print(f"  THROUGHPUT  {r['msg_s']:.0f} MailReleased/s for one server "
              f"(released / (last release - first publish)); {r['steady_msg_s']:.0f}/s "
              "between the first and the last release")
        print(f"  LIMITER CPU {r['cpu_ms_per_mail']:.3f} ms per released mail, "
              f"{r['cpu_ms_per_decision']:.3f} ms per mail handled (released or held; all "
              f"limiter processes, quota included); broker {r['broker_cpu_ms_per_mail']:.3f} ms "
              "per released mail")
        print(f"  NET CPU     {r['net_cpu_ms_per_mail']:.3f} ms per released mail above the "
              f"limiters' idle use ({r['idle_limiter_cores'] * 100:.1f}% of a core with no "
              "mail, measured just before the phase)")
    print(cpu_line(r["cpu_cores"]))
    for name, lines in r.get("profiles", []):
        print(f"  py-spy profile of {name} over the phase:")
        for line in lines:
            print("  " + line)
    exact = r["released"] == r["expected"] and r["twice"] == 0 and r["missing"] == 0
    print(f"  EXACT       released {r['released']} (expected {r['expected']}), held by the "
          f"daily limit {r['held_daily_limit']}, released twice {r['twice']}, "
          f"missing {r['missing']}: {'yes' if exact else 'NO'}")
    ok = exact
    if "rate_most" in r:
        within = r["rate_most"] <= r["rate_allowed"] * 1.05 + 1
        print(f"  RATE        at most {r['rate_most']} released in any "
              f"{r['rate_window_s']:.0f} s; the rate allows {r['rate_allowed']:.0f}: "
              f"{'within 5%' if within else 'OVER'}")
        ok = ok and within
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.busy_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="routed decisions published at once")
    p.add_argument("--limiters", type=int, default=1, help="limiter worker processes")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--daily", type=int, default=1_000_000_000, help="the server's daily limit")
    p.add_argument("--rate", default="", help="the server's rate, e.g. 50/s")
    p.add_argument("--stall", type=float, default=60.0,
                   help="give up when nothing new was released for this long")
    p.add_argument("--idle", type=float, default=3.0,
                   help="seconds the idle use of the limiters is measured before the phase")
    p.add_argument("--py-spy", metavar="BIN",
                   help="py-spy binary: profile each limiter worker during the phase "
                        "(its sampling then shows in 'other processes')")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the logs and broker data dir")
    args = p.parse_args(argv)
    result = run(args)
    ok = report(result)
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
