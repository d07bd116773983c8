"""The anchor of the pipeline benchmark: a private Postfix relay, measured in the same run.

    python -m bench.postfix [--n 2000] [--serial 200] [--connections 4] [--json FILE] [--keep]

Debian's postfix package (``scripts/bench-deps`` installs it when missing)
runs here as a private instance: its own config directory (``main.cf`` and
``master.cf`` written by this module), queue and data directories under a
temp dir, ``postfix -c DIR start`` and ``postfix -c DIR stop``. It listens on
a free loopback port only (its own ``master.cf`` has one smtpd on
``127.0.0.1:PORT``; ``inet_interfaces = 127.0.0.1``), relays everything to
``relayhost = [127.0.0.1]:SINKPORT`` (nothing is local: ``mydestination`` is
empty, ``mynetworks = 127.0.0.0/8``), with DNS off, SMTP connection caching
on and the log in a file (``maillog_file``; no syslog here). Every other
setting is Postfix's default: the queue is on disk (fsync'd before the 250),
the daemons are recycled after 100 uses, ``in_flow_delay`` is 1 s.

The sink is a second ``bench/sink.py`` process (aiosmtpd, no disk, reports each
mail's receive time and X-Postlane-Id), so its CPU is counted apart from the
pipeline's sink. Two phases, then the correctness check:

1. throughput: N mails pushed by ``--connections`` concurrent SMTP clients
   (smtplib, one persistent session each); N / (last accepted by the sink -
   first submitted);
2. one in flight: ``--serial`` mails over one persistent session, each
   submitted once the previous was accepted by the sink; submit (before MAIL
   FROM) -> accepted by the sink, p50/p90/p99.

CPU: every process whose parent chain leads to the private master (master,
smtpd, cleanup, trivial-rewrite, qmgr, smtp, scache, ...; sampled every
0.1 s, processes that exit meanwhile are attributed by name up to their last
sample, the rest of their time is read from the master's reaped-children
counters), the sink and the client (this process), from the first submit
until the queue is empty again (the client's until the last acceptance,
less the sampler's own). /proc counts CPU in clock ticks (10 ms) per
process: with 200 mails a daemon's figure is good to ~0.05 ms per mail.
Correctness: every id at the sink exactly once. Stops every process it
started by PID; the Postfix master by ``postfix stop`` and then, if it is
still there, by its PID (and any daemon it left, by PID).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson

from bench.pipeline import (
    BODY,
    BenchError,
    Sink,
    cpu_seconds,
    dist,
    dist_line,
    latencies_at,
    load_average,
    machine_cpu_seconds,
    vm_rss_kib,
)
from streams.embedded import free_port, port_open

POSTFIX = Path("/usr/sbin/postfix")
DAEMONS = Path("/usr/lib/postfix/sbin")
DEPS = Path(__file__).resolve().parent.parent / "scripts" / "bench-deps"
CLK = os.sysconf("SC_CLK_TCK")
SYSLOG_NAME = "postlane-bench-postfix"
FROM = "app@bench.test"
CLIENT = "bench client (this process)"
REAPED = "exited daemons, after their last sample"

MAIN_CF = """\
# A private Postfix relay for bench/postfix.py (generated; not the system's).
compatibility_level = 3.6
config_directory = {conf}
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
syslog_name = {syslog_name}
maillog_file = {maillog}
maillog_file_prefixes = {base}
myhostname = relay.bench.invalid
mydomain = bench.invalid
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:{sink_port}
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_peername_lookup = no
smtp_connection_cache_on_demand = yes
smtp_connection_cache_destinations = $relayhost
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtputf8_enable = no
biff = no
append_dot_mydomain = no
notify_classes =
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
"""

# One smtpd on the loopback port; the daemons a relay needs; none chrooted
# (the temp dir has none of the chroot's files). Columns: service type private
# unpriv chroot wakeup maxproc command.
MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n - 0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n - - trivial-rewrite
bounce     unix  - - n - 0 bounce
defer      unix  - - n - 0 bounce
trace      unix  - - n - 0 bounce
verify     unix  - - n - 1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n - - proxymap
proxywrite unix  - - n - 1 proxymap
smtp       unix  - - n - - smtp
relay      unix  - - n - - smtp
showq      unix  n - n - - showq
error      unix  - - n - - error
retry      unix  - - n - - error
discard    unix  - - n - - discard
anvil      unix  - - n - 1 anvil
scache     unix  - - n - 1 scache
postlog    unix-dgram n - n - 1 postlogd
"""

QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")


def ensure_installed() -> None:
    """Debian's postfix, installed by scripts/bench-deps when missing."""
    if POSTFIX.exists() and (DAEMONS / "master").exists():
        return
    print("postfix is missing: running scripts/bench-deps", flush=True)
    done = subprocess.run([str(DEPS)], check=False)
    if done.returncode != 0 or not POSTFIX.exists():
        raise BenchError("postfix is not installed and scripts/bench-deps could not install it "
                         "(Debian's postfix package)")


def postfix_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "postfix"],
                             capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    return out.strip() or "unknown"


# --------------------------------------------------------------------------
# processes under the private master

Stat = tuple[str, int, float, float, int]  # comm, ppid, own CPU s, reaped CPU s, start time
Key = tuple[int, int]  # (pid, start time): a reused PID is another process


def _stat(pid: int) -> Stat | None:
    """(comm, ppid, own CPU s, reaped children's CPU s, start time) or None
    once it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    head, _, rest = raw.rpartition(")")
    comm = head.split("(", 1)[1] if "(" in head else "?"
    f = rest.split()
    if not f or f[0] == "Z":
        return None
    return (comm, int(f[1]), (int(f[11]) + int(f[12])) / CLK, (int(f[13]) + int(f[14])) / CLK,
            int(f[19]))


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def tree(root: int) -> dict[int, Stat]:
    """Every living process under ``root`` (root included)."""
    out: dict[int, Stat] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is None or pid in out:
            continue
        out[pid] = st
        todo += _children(pid)
    return out


def pss_kib(pids: list[int]) -> int:
    """Summed proportional set size (KiB) of these processes: the memory they
    hold, shared pages split between them (summed RSS would count the
    libraries once per daemon)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            total += vm_rss_kib(pid)
    return total


class TreeCpu:
    """CPU of every process under the Postfix master between start() and
    stop(), by process name. A sampling thread (every ``interval`` s) keeps
    each daemon's last figure, so one that exits meanwhile (Postfix recycles
    them after max_use) is still counted under its name; what such a daemon
    used after its last sample reaches the master's reaped-children counter
    and is reported as ``REAPED``."""

    def __init__(self, master: int, interval: float = 0.1) -> None:
        self.master = master
        self.interval = interval
        self.first: dict[Key, Stat] = {}
        self.last: dict[Key, Stat] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.own_s = 0.0

    def _tree(self) -> dict[Key, Stat]:
        return {(pid, st[4]): st for pid, st in tree(self.master).items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.last.update(self._tree())
        self.own_s = time.thread_time()  # the sampler's CPU, not the client's

    def start(self) -> None:
        self.first = self._tree()
        self.last = dict(self.first)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="postfix-cpu")
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """CPU seconds by process name (``master``, ``smtpd``, ...; and
        ``REAPED``) since start()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        now = self._tree()
        self.last.update(now)
        out: dict[str, float] = {}
        exited = 0.0  # what the daemons that exited had used by their last sample, all told
        master_key = None
        for key, st in self.last.items():
            if key[0] == self.master:
                master_key = key
                continue
            base = self.first.get(key)
            out[st[0]] = out.get(st[0], 0.0) + st[2] - (base[2] if base else 0.0)
            if key not in now:
                exited += st[2] + st[3]
        if master_key is not None and master_key in self.first and master_key in now:
            m0, m1 = self.first[master_key], now[master_key]
            out["master"] = m1[2] - m0[2]
            # the reaped counter grew by all an exited daemon had used, also
            # before the window and up to its last sample (both left out here)
            out[REAPED] = max(0.0, (m1[3] - m0[3]) - exited)
        return out


# --------------------------------------------------------------------------
# the relay


class PostfixRelay:
    """A private Postfix instance under ``base`` (config, queue, data, log)."""

    def __init__(self, base: Path, sink_port: int) -> None:
        self.base = base
        self.conf = base / "conf"
        self.queue = base / "queue"
        self.data = base / "data"
        self.maillog = base / "maillog"
        self.sink_port = sink_port
        self.port = 0
        self.master_pid = 0
        self.started = False
        self.daemons: dict[int, int] = {}  # pid -> start time, seen under the master

    def configure(self) -> None:
        self.port = free_port()
        for d in (self.base, self.conf, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # the daemons run as postfix and must get in
        shutil.chown(self.data, "postfix", "postfix")
        (self.conf / "main.cf").write_text(MAIN_CF.format(
            conf=self.conf, queue=self.queue, data=self.data, syslog_name=SYSLOG_NAME,
            maillog=self.maillog, base=self.base, sink_port=self.sink_port))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run([str(POSTFIX), "-c", str(self.conf), *args], capture_output=True,
                              text=True, env=env, timeout=timeout, check=False)

    def start(self, timeout: float = 30.0) -> PostfixRelay:
        if os.geteuid() != 0:
            raise BenchError("the private Postfix needs root (`postfix start` and its daemons "
                             "switching to the postfix user): run as root, or --no-postfix")
        ensure_installed()
        self.configure()
        done = self._postfix("start")
        if done.returncode != 0:
            raise BenchError(f"postfix -c {self.conf} start failed ({done.returncode}):\n"
                             f"{done.stdout}{done.stderr}{self.log_tail()}")
        self.started = True
        deadline = time.monotonic() + timeout
        pidfile = self.queue / "pid" / "master.pid"
        while time.monotonic() < deadline:
            try:
                self.master_pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                self.master_pid = 0
            if self.master_pid and port_open("127.0.0.1", self.port):
                return self
            time.sleep(0.05)
        raise BenchError(f"the private Postfix did not listen on 127.0.0.1:{self.port} in "
                         f"{timeout:g} s:\n{self.log_tail()}")

    def remember_daemons(self) -> None:
        """Note the master's daemons (to stop any it leaves behind)."""
        if self.master_pid:
            for pid, st in tree(self.master_pid).items():
                self.daemons[pid] = st[4]

    def alive(self) -> bool:
        return bool(self.master_pid) and _stat(self.master_pid) is not None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"the private Postfix master exited:\n{self.log_tail()}")

    def queued(self) -> int:
        """Queue files not yet delivered (maildrop, incoming, active, deferred, hold)."""
        count = 0
        for q in QUEUES:
            for _root, _dirs, files in os.walk(self.queue / q):
                count += len(files)
        return count

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.queued():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def pids(self) -> list[int]:
        return list(tree(self.master_pid)) if self.master_pid else []

    def stop(self) -> None:
        """``postfix stop``; then the master and every daemon seen, by PID."""
        if not self.started:
            return
        self.remember_daemons()
        self.started = False
        try:
            self._postfix("stop", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + 15
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            os.kill(self.master_pid, signal.SIGKILL)
        time.sleep(0.1)
        for pid, started in self.daemons.items():
            st = _stat(pid)
            if st is not None and st[4] == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.maillog.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no maillog)"

    def queue_sizes(self) -> dict[str, int]:
        """qmgr's size= (message bytes as queued) per queue id, from the maillog."""
        sizes: dict[str, int] = {}
        pattern = re.compile(r"qmgr\[\d+\]: ([0-9A-Za-z]+): from=<[^>]*>, size=(\d+)")
        try:
            text = self.maillog.read_text(errors="replace")
        except OSError:
            return sizes
        for m in pattern.finditer(text):
            sizes.setdefault(m.group(1), int(m.group(2)))
        return sizes


# --------------------------------------------------------------------------
# the client


_TEMPLATE: list[bytes] = []


def message(seq: int, label: str) -> tuple[str, bytes]:
    """A mail shaped like the one delivery sends (From, To, Subject, Date,
    Message-ID, X-Postlane-Id, the bench's text body; CRLF). The shape is
    made once by the email package, then filled in (building each with it
    took ~0.7 ms of the client's CPU)."""
    if not _TEMPLATE:
        msg = EmailMessage()
        msg["From"] = FROM
        msg["To"] = "@@TO@@"
        msg["Subject"] = "@@SUBJECT@@"
        msg["Date"] = format_datetime(datetime.now(tz=UTC))
        msg["Message-ID"] = "@@MSGID@@"
        msg["X-Postlane-Id"] = "@@ID@@"
        msg.set_content(BODY)
        _TEMPLATE.append(msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    mid = uuid.uuid4().hex
    data = (_TEMPLATE[0].replace(b"@@TO@@", rcpt(seq).encode())
            .replace(b"@@SUBJECT@@", f"bench postfix {label} {seq}".encode())
            .replace(b"@@MSGID@@", f"<{mid}@bench.test>".encode())
            .replace(b"@@ID@@", mid.encode()))
    return mid, data


def rcpt(seq: int) -> str:
    return f"rcpt{seq % 100}@sink.test"


@dataclass
class Run:
    """One phase against the relay."""

    name: str
    submitted: dict[str, float] = field(default_factory=dict)  # id -> before MAIL FROM
    accepted: dict[str, float] = field(default_factory=dict)  # id -> Postfix's 250 for DATA
    errors: list[str] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)
    first: float = 0.0
    done: float = 0.0
    drained: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds
    others_s: float = math.nan
    queue_left: int = 0
    pss_kib: tuple[int, int] = (0, 0)  # summed PSS of the Postfix processes before, after


class PostfixSide:
    """The private relay, its sink and the SMTP client: the anchor's figures."""

    def __init__(self, workdir: Path, connections: int = 4, stall: float = 60.0) -> None:
        self.workdir = workdir
        self.connections = connections
        self.stall = stall
        self.sink = Sink(workdir, name="postfix-sink")
        self.relay: PostfixRelay | None = None
        self.seq = 0
        self.runs: list[Run] = []
        self.warmup: list[str] = []
        self.version = "unknown"
        self.ready_s = 0.0

    def start(self) -> None:
        t0 = time.monotonic()
        ensure_installed()
        self.version = postfix_version()
        self.sink.start()
        self.relay = PostfixRelay(self.workdir / "postfix", self.sink.port).start()
        warm = Run("warm-up")
        self._push(warm, self.mails(40, warm.name), self.connections)
        missing = self.sink.wait_all(warm.submitted, stall=30, check=self.check_alive)
        if missing or warm.errors:
            raise BenchError(f"Postfix warm-up: {len(missing)} mails did not reach the sink; "
                             f"{warm.errors[:3]}\n{self.relay.log_tail()}")
        self.warmup = list(warm.submitted)
        self.relay.wait_empty(30)
        self.ready_s = time.monotonic() - t0

    def stop(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        self.sink.stop()

    def check_alive(self) -> None:
        assert self.relay is not None
        self.relay.check_alive()
        if self.sink.proc is not None and not self.sink.proc.alive():
            raise BenchError(f"the Postfix side's sink exited:\n{self.sink.proc.log_tail()}")

    def processes(self) -> dict[str, int]:
        return {"postfix-sink": self.sink.proc.pid if self.sink.proc else 0}

    def mails(self, n: int, label: str) -> list[tuple[int, str, bytes]]:
        out = []
        for _ in range(n):
            self.seq += 1
            out.append((self.seq, *message(self.seq, label)))
        return out

    def _push(self, run: Run, mails: list[tuple[int, str, bytes]], connections: int) -> None:
        """``mails`` over ``connections`` persistent SMTP sessions at once."""
        assert self.relay is not None
        lock = threading.Lock()
        it = iter(mails)

        def client() -> None:
            assert self.relay is not None
            try:
                smtp = smtplib.SMTP("127.0.0.1", self.relay.port, timeout=60)
                smtp.ehlo("client.bench.test")
            except (OSError, smtplib.SMTPException) as exc:
                with lock:
                    run.errors.append(f"connect: {exc}")
                return
            try:
                while True:
                    with lock:
                        item = next(it, None)
                    if item is None:
                        break
                    seq, mid, data = item
                    t = time.time()
                    run.submitted[mid] = t
                    try:
                        smtp.sendmail(FROM, [rcpt(seq)], data)
                    except (OSError, smtplib.SMTPException) as exc:
                        with lock:
                            run.errors.append(f"{mid}: {exc}")
                        continue
                    run.accepted[mid] = time.time()
            finally:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _measure(self, run: Run, body: Any) -> Run:
        """Run ``body``; CPU from its start until the queue is empty again
        (the client's until the last acceptance at the sink)."""
        assert self.relay is not None
        procs = self.processes()
        tree_cpu = TreeCpu(self.relay.master_pid)
        c0 = {k: cpu_seconds(p) for k, p in procs.items()}
        me0 = cpu_seconds(os.getpid())
        m0 = machine_cpu_seconds()
        tree_cpu.start()
        run.first = time.time()
        body(run)
        run.missing = self.sink.wait_all(run.submitted, stall=self.stall,
                                         check=self.check_alive)
        run.done = time.time()
        me1 = cpu_seconds(os.getpid())
        if not self.relay.wait_empty(self.stall):
            run.queue_left = self.relay.queued()
        run.drained = time.time()
        pf = tree_cpu.stop()
        mine = {k: cpu_seconds(p) - c0[k] for k, p in procs.items()}
        run.cpu_s = {**{f"postfix {k}": v for k, v in sorted(pf.items(), key=lambda kv: -kv[1])},
                     **mine, CLIENT: me1 - me0 - tree_cpu.own_s}
        run.others_s = max(0.0, machine_cpu_seconds() - m0 - sum(run.cpu_s.values()))
        self.relay.remember_daemons()
        self.runs.append(run)
        return run

    def throughput(self, n: int) -> Run:
        assert self.relay is not None
        pss0 = pss_kib(self.relay.pids())
        mails = self.mails(n, "throughput")  # built before the clock starts
        run = self._measure(Run("throughput"), lambda r: self._push(r, mails, self.connections))
        run.pss_kib = (pss0, pss_kib(self.relay.pids()))
        return run

    def serial(self, count: int) -> Run:
        mails = self.mails(count, "one in flight")

        def body(run: Run) -> None:
            assert self.relay is not None
            smtp = smtplib.SMTP("127.0.0.1", self.relay.port, timeout=60)
            smtp.ehlo("client.bench.test")
            try:
                for seq, mid, data in mails:
                    run.submitted[mid] = time.time()
                    smtp.sendmail(FROM, [rcpt(seq)], data)
                    run.accepted[mid] = time.time()
                    if self.sink.wait_one(mid, self.stall) is None:
                        run.errors.append(f"{mid} not accepted by the sink within "
                                          f"{self.stall:g} s; stopped the phase")
                        return
            finally:
                smtp.quit()
        return self._measure(Run("one in flight"), body)

    def correctness(self, settle: float = 1.0) -> dict[str, Any]:
        time.sleep(settle)
        expected = set(self.warmup)
        for r in self.runs:
            expected |= set(r.submitted)
        with self.sink.cond:
            received = {k: list(v) for k, v in self.sink.received.items()}
        missing = sorted(expected - set(received))
        duplicates = {k: len(v) for k, v in received.items() if k in expected and len(v) > 1}
        unexpected = sorted(set(received) - expected)
        ok = not missing and not duplicates and not unexpected
        return {"expected": len(expected),
                "received_mails": sum(len(v) for v in received.values()),
                "missing": missing, "duplicates": duplicates, "unexpected": unexpected,
                "ok": ok}


# --------------------------------------------------------------------------
# figures and report


def figures(side: PostfixSide, correct: dict[str, Any]) -> dict[str, Any]:
    """Every figure of the Postfix side, for the report and --json."""
    assert side.relay is not None
    out: dict[str, Any] = {
        "mta": f"Postfix {side.version} (Debian package), private instance",
        "connections": side.connections, "ready_s": side.ready_s,
        "config": {"main.cf": MAIN_CF.strip().splitlines(),
                   "master.cf": MASTER_CF.strip().splitlines()},
    }
    sizes = side.relay.queue_sizes()
    for run in side.runs:
        n = len(run.submitted)
        got = n - len(run.missing)
        lat = dist(latencies_at(run.submitted, side.sink))
        acc = dist(run.accepted[m] - run.submitted[m] for m in run.accepted)
        last = max((side.sink.first_time(m) or math.nan for m in run.submitted),
                   default=math.nan)
        per_mail = {k: v / max(got, 1) * 1000 for k, v in run.cpu_s.items()}
        postfix_ms = sum(v for k, v in per_mail.items() if k.startswith("postfix "))
        entry: dict[str, Any] = {
            "mails": n, "accepted": got, "errors": run.errors[:20],
            "latency_s": lat, "submit_to_postfix_250_s": acc,
            "wall_s": run.drained - run.first,
            "cpu_ms_per_mail": per_mail,
            "cpu_ms_per_mail_postfix": postfix_ms,
            "cpu_ms_per_mail_total": sum(per_mail.values()),
            "other_processes_cores": run.others_s / max(run.drained - run.first, 1e-9),
            "queue_left": run.queue_left,
        }
        if run.name == "throughput":
            first = min(run.submitted.values(), default=run.first)
            entry["msg_s"] = n / (last - first) if got == n and n else math.nan
            entry["last_accepted_after_s"] = last - first
            mine = [sizes[q] for q in sizes]  # every queue id logged (warm-up included)
            entry["queue_files_per_mail"] = len(sizes) / max(
                len(side.warmup) + sum(len(r.submitted) for r in side.runs), 1)
            entry["queued_message_bytes_p50"] = sorted(mine)[len(mine) // 2] if mine else 0
            # Postfix keeps nothing once a mail is delivered: what its processes'
            # memory does follows how many daemons are running (more smtp and
            # cleanup processes under load), not how many mails went through
            entry["pss_kib_before"], entry["pss_kib_after"] = run.pss_kib
            entry["pss_growth_kib_per_1000_mails"] = (run.pss_kib[1] - run.pss_kib[0]) / max(
                n, 1) * 1000
            entry["daemons_after"] = len(side.relay.pids())
        out[run.name] = entry
    out["correctness"] = correct
    return out


def print_report(fig: dict[str, Any]) -> None:
    print(f"\n--- the anchor: {fig['mta']}, {fig['connections']} client connections")
    print("  smtplib client (persistent sessions) -> smtpd 127.0.0.1 -> cleanup -> queue on "
          "disk -> qmgr -> smtp (connection cache) -> sink (bench/sink.py, its own process)")
    thr = fig.get("throughput")
    if thr:
        print(f"  THROUGHPUT  {thr['msg_s']:.0f} msg/s (N / (last accepted - first submitted) = "
              f"{thr['mails']} / {thr['last_accepted_after_s']:.2f} s); "
              f"{thr['accepted']}/{thr['mails']} accepted")
        print(dist_line("latency (queueing incl.)", thr["latency_s"]))
        print(dist_line("submit -> Postfix's 250", thr["submit_to_postfix_250_s"]))
        print(f"  queue files per mail {thr['queue_files_per_mail']:.2f}; queued message size "
              f"p50 {thr['queued_message_bytes_p50']} bytes (qmgr size=); "
              f"{thr['queue_left']} left in the queue after the phase")
        print(f"  memory: its processes' summed PSS {thr['pss_kib_before'] / 1024:.1f} -> "
              f"{thr['pss_kib_after'] / 1024:.1f} MiB ({thr['daemons_after']} processes after "
              "the phase; it grows with the daemons started under load, not per mail)")
        print_cpu(thr)
    one = fig.get("one in flight")
    if one:
        print(f"  ONE IN FLIGHT  {one['mails']} mails, one session")
        print(dist_line("submit -> accepted by sink", one["latency_s"]))
        print(dist_line("submit -> Postfix's 250", one["submit_to_postfix_250_s"]))
        print_cpu(one)
    for label, entry in (("throughput", thr), ("one in flight", one)):
        if entry and entry["errors"]:
            print(f"  SMTP errors ({label}): {len(entry['errors'])}, e.g. {entry['errors'][0]}")
    c = fig["correctness"]
    print(f"  correctness: {c['expected']} submitted (warm-up included), {c['received_mails']} "
          f"received: {len(c['missing'])} missing, {len(c['duplicates'])} duplicated, "
          f"{len(c['unexpected'])} unexpected -> {'OK' if c['ok'] else 'FAILED'}")


def print_cpu(entry: dict[str, Any]) -> None:
    per = entry["cpu_ms_per_mail"]
    parts = ", ".join(f"{k.removeprefix('postfix ')} {v:.3f}" for k, v in per.items()
                      if k.startswith("postfix ") and v >= 0.0005)
    print(f"  CPU ms per mail: Postfix {entry['cpu_ms_per_mail_postfix']:.2f} ({parts}); "
          f"sink {per.get('postfix-sink', math.nan):.2f}; client {per.get(CLIENT, math.nan):.2f};"
          f" total {entry['cpu_ms_per_mail_total']:.2f}")
    if entry["other_processes_cores"] > 0.25:
        print(f"  WARNING: other processes used {entry['other_processes_cores'] * 100:.0f}% of a "
              "core meanwhile (other runs on the machine): these figures are pessimistic")


def run(n: int, serial: int, connections: int, workdir: Path, stall: float = 60.0,
        progress: bool = True) -> dict[str, Any]:
    """Start the relay and its sink, run both phases, stop them; the figures."""
    side = PostfixSide(workdir, connections=connections, stall=stall)
    try:
        if progress:
            print(f"Postfix side: private relay and its sink; logs in {workdir}", flush=True)
        side.start()
        if n:
            if progress:
                print(f"Postfix throughput ({n} mails, {connections} connections)", flush=True)
            side.throughput(n)
        if serial:
            if progress:
                print(f"Postfix one in flight ({serial} mails)", flush=True)
            side.serial(serial)
        correct = side.correctness()
        return figures(side, correct)
    finally:
        side.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.postfix",
                                description="the pipeline benchmark's anchor alone: a private "
                                            "Postfix relay")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--serial", type=int, default=200)
    p.add_argument("--connections", type=int, default=4)
    p.add_argument("--stall", type=float, default=60.0)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="postlane-bench-postfix-"))
    workdir.chmod(0o755)
    load = load_average()
    try:
        fig = run(args.n, args.serial, args.connections, workdir, args.stall)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        print(f"logs kept in {workdir}")
        return 2
    print(f"load average {load[0]:.2f} before the start")
    print_report(fig)
    if args.json:
        args.json.write_text(orjson.dumps(fig, option=orjson.OPT_INDENT_2).decode())
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if fig["correctness"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
