"""Kill -9 of every processor during a run: nothing lost, every duplicate marked.

    python -m bench.kill_matrix [--n 200] [--only router,fetcher] [--partitions 4] [--keep]

Starts, on loopback, an embedded Tansu broker, the SMTP sink of the pipeline
bench (``bench/sink.py``), a private Dovecot (``tests/imap/dovecot.py``) and
one ``postlane worker`` process per processor: router, limiter, delivery,
status, bounces, blacklist, inbound, fetcher. Then one round per processor,
in that order, all on the same running pipeline (fresh ids each round):

1. outgoing: N mails published (``Publisher``, from a thread while the
   kill is awaited), each to its own address;
2. inbound: N/2 bounce mails (a real Exim DSN from the corpus, to
   ``bounce+<id>@`` of one of this round's mails) and N/2 mails to the alias
   ``sales@`` (each from its own sender), appended to the IMAP mailbox the
   fetcher polls; the fetcher publishes them, the inbound router routes
   them, the bounces processor records the bounces and the blacklist
   processor blacklists each bounced address (threshold 1, outage check
   off: ``POSTLANE_BLACKLIST_THRESHOLD=1``, ``POSTLANE_BOUNCE_BURST_MIN``
   high).

The round's processor is killed with SIGKILL once about a quarter of its
own work is done (router: decisions on ``routing-decided``, limiter:
releases, delivery: mails at the sink, status: mails shown ``sent``, and
the counts below for the others), outgoing processors in step 1, the
others in step 2,
and started again once the dead member's session has expired (6 s on the
embedded broker; as a supervisor's restart delay would, see README "Known
limits"). Then it waits until everything arrived or nothing moved for
``--stall`` seconds and counts, for the killed processor's own output:

- router, limiter, delivery: mails at the SMTP sink; a duplicate is a mail
  the sink got twice, marked when a ``DeliveryAttempted`` of it says
  ``interrupted`` (delivery's retry of an attempt a crash cut off);
- status: mails whose status is ``sent``; a duplicate is a second
  ``MessageStatusChanged`` to ``sent``, marked when it has the same event id;
- fetcher: mails on ``inbound`` (by Message-ID); a duplicate is marked when
  the inbound router dropped the second copy as ``duplicate``;
- inbound: mails on ``inbound-routed``; bounces: addresses with a
  ``BounceRecorded``; blacklist: addresses blacklisted (``BlacklistChanged``).
  A duplicate there is the same decision published again, marked when it
  carries the same event id (or bounce id), so readers drop it.

``missing`` must be 0 and every duplicate marked; the exit status is 1
otherwise. A round with missing mail prints each missing mail's events,
where they are on ``released`` (partition, offsets), the killed processor's
group's committed offsets there and the partitions' true end offsets. Every
process it starts (broker, sink, Dovecot, workers) is stopped by its PID at
the end, also on an error or Ctrl-C. Not part of CI.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from bench.pipeline import BenchError, Proc, Sink, start_worker
from postlane.configops import publish_config
from postlane.publisher import Publisher
from schemas import (
    AliasConfigured,
    Event,
    IncomingServerConfigured,
    OutgoingServerConfigured,
    SettingsChanged,
)
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.offsets import true_end_offsets_sync
from streams.settings import Settings
from streams.topics import (
    BLACKLIST,
    BOUNCES,
    DELIVERY,
    INBOUND,
    INBOUND_ROUTED,
    RELEASED,
    ROUTING_DECIDED,
    STATUS,
    TopicSpec,
)
from tests.imap.dovecot import Dovecot

PROCESSORS = ("router", "limiter", "delivery", "status", "bounces", "blacklist", "inbound",
              "fetcher")
OUTGOING = ("router", "limiter", "delivery", "status")
CATCHALL = "mycompany.test"
IMAP_USER, IMAP_PASSWORD, IMAP_ENV = "gateway", "kill-matrix-imap", "PL_KILL_IMAP_PASSWORD"
CORPUS = Path(__file__).resolve().parents[1] / "tests" / "corpus" / "bounces"
WORKER_ENV = {
    IMAP_ENV: IMAP_PASSWORD,
    "POSTLANE_BLACKLIST_THRESHOLD": "1",  # one hard bounce blacklists at once
    "POSTLANE_BOUNCE_BURST_MIN": "1000000",  # no outage check: every bounce counts
    "POSTLANE_FETCH_BATCH": "5",
}


# --------------------------------------------------------------------------
# reading the topics


class Tail:
    """Every record of some topics from offset 0, read on as they come
    (one consumer, no group), as decoded JSON objects per topic."""

    def __init__(self, s: Settings, specs: tuple[TopicSpec, ...]) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                      group_id=None, client_id="postlane-kill-matrix",
                                      fetch_max_wait_ms=50)
        self.names = {spec.full(s): spec.name for spec in specs}
        tps = [TopicPartition(t, p) for t in self.names
               for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        self.consumer.assign(tps)
        self.consumer.seek_to_beginning(*tps)
        self.events: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in specs}

    def poll(self, timeout_ms: int = 50) -> int:
        got = 0
        for tp, records in self.consumer.poll(timeout_ms=timeout_ms, max_records=20000).items():
            out = self.events[self.names[tp.topic]]
            for r in records:
                try:
                    value = orjson.loads(r.value or b"null")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    value["_at"] = (r.partition, r.offset)  # where it is on its topic
                    out.append(value)
                    got += 1
        return got

    def close(self) -> None:
        self.consumer.close()


# --------------------------------------------------------------------------
# the mail


def bounce_mail(message_id: str, rcpt: str, tag: str) -> bytes:
    """A real Exim DSN (from the corpus) for ``rcpt`` of mail ``message_id``."""
    raw = (CORPUS / "exim-user-unknown.eml").read_bytes()
    return (raw.replace(b"nobody1@dest.test", rcpt.encode())
            .replace(b"ex-unknown-0101", message_id.encode())
            .replace(b"E1xV5gt-00085d-1w", f"dsn-{tag}".encode()))


def alias_mail(tag: str) -> bytes:
    return (f"From: Client <client-{tag}@client.test>\r\nTo: sales@{CATCHALL}\r\n"
            f"Subject: question {tag}\r\nMessage-ID: <{tag}@client.test>\r\n\r\n"
            f"Hello sales, {tag}.\r\n").encode()


# --------------------------------------------------------------------------
# the run


@dataclass
class Round:
    killed: str
    mids: list[str] = field(default_factory=list)  # outgoing message ids
    rcpt: dict[str, str] = field(default_factory=dict)  # message id -> its recipient
    inbound_ids: set[str] = field(default_factory=set)  # Message-IDs (no brackets) appended
    bounced: set[str] = field(default_factory=set)  # addresses bounced
    at_kill: int = 0
    kill_after: float = 0.0
    row: dict[str, Any] = field(default_factory=dict)


class KillMatrix:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="postlane-kill-"))
        self.settings = Settings.from_env(
            environ={}, embedded_port=free_port(), data_dir=str(self.workdir / "data"),
            partitions=args.partitions, topic_prefix="kill.", app_prefix="kill",
        )
        self.broker: EmbeddedBroker | None = None
        self.sink = Sink(self.workdir)
        self.dovecot: Dovecot | None = None
        self.workers: dict[str, Proc] = {}
        self.publisher: Publisher | None = None
        self.tail: Tail | None = None
        self.rounds: list[Round] = []
        self.restarts = 0

    # --- set-up and tear-down ------------------------------------------------

    def start(self) -> None:
        s = self.settings
        self.broker = EmbeddedBroker(s, log_path=self.workdir / "tansu.log").start()
        ensure_topics(s)
        self.sink.start()
        self.dovecot = Dovecot({IMAP_USER: IMAP_PASSWORD}).start()
        config: list[tuple[str, Event]] = [
            ("settings", SettingsChanged(catchall_domain=CATCHALL)),
            ("server:sink", OutgoingServerConfigured(name="sink", host="127.0.0.1",
                                                      port=self.sink.port, security="none")),
            ("incoming:box", IncomingServerConfigured(
                name="box", host="127.0.0.1", port=self.dovecot.port, security="none",
                username=IMAP_USER, password_env=IMAP_ENV, folder="INBOX", poll_interval=1.0,
                use_idle=True)),
            ("alias:sales", AliasConfigured(alias="sales", target="crm.lead")),
        ]
        publish_config(s, config)
        for name in PROCESSORS:
            self.workers[name] = self._start(name)
        self.publisher = Publisher(settings=s)
        self.tail = Tail(s, (ROUTING_DECIDED, RELEASED, DELIVERY, STATUS, INBOUND,
                             INBOUND_ROUTED, BOUNCES, BLACKLIST))
        # warm-up: one mail out, one in, so every worker has joined its group
        warm = Round("warm-up")
        self._outgoing(warm, 1)
        self._wait("the warm-up mail", lambda: self._outgoing_missing(warm), timeout=180)
        self._inbound(warm)
        self._wait("the warm-up inbound mail", lambda: self._inbound_missing(warm), timeout=180)

    def _start(self, name: str) -> Proc:
        self.restarts += 1
        return start_worker(self.settings, (name,), self.workdir, WORKER_ENV)

    def stop(self) -> None:
        for step in (
            *(w.stop for w in self.workers.values()),
            self.publisher.close if self.publisher else None,
            self.tail.close if self.tail else None,
            self.sink.stop,
            self.dovecot.stop if self.dovecot else None,
            self.broker.stop if self.broker else None,
        ):
            if step is None:
                continue
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - stop the others whatever happens
                print(f"while stopping: {exc!r}", file=sys.stderr)
        if self.args.keep:
            print(f"logs kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def check_alive(self, except_: str = "") -> None:
        for name, w in self.workers.items():
            if name != except_ and not w.alive():
                raise BenchError(f"worker {name} exited ({w.popen.returncode}):\n{w.log_tail()}")
        if self.broker is not None and self.broker.proc is not None \
                and self.broker.proc.poll() is not None:
            raise BenchError("the Tansu broker exited")

    # --- traffic -------------------------------------------------------------------

    def _outgoing(self, rnd: Round, n: int) -> None:
        assert self.publisher is not None
        tag = uuid.uuid4().hex[:6]
        for i in range(n):
            rcpt = f"u{i}.{tag}@d{i % 7}.test"
            mid = self.publisher.send(from_=f"app@{CATCHALL}", to=[rcpt],
                                      subject=f"{rnd.killed} {i}", text=f"mail {i} of {tag}")
            rnd.mids.append(mid)
            rnd.rcpt[mid] = rcpt

    def _inbound(self, rnd: Round) -> None:
        assert self.dovecot is not None
        half = max(len(rnd.mids) // 2, 1)
        raws: list[bytes] = []
        for mid in rnd.mids[:half]:
            tag = uuid.uuid4().hex[:10]
            raws.append(bounce_mail(mid, rnd.rcpt[mid], tag))
            rnd.inbound_ids.add(f"dsn-{tag}@exim-relay.{CATCHALL}")
            rnd.bounced.add(rnd.rcpt[mid].lower())
        for _ in range(half):
            tag = uuid.uuid4().hex[:10]
            raws.append(alias_mail(tag))
            rnd.inbound_ids.add(f"{tag}@client.test")
        self.dovecot.append_many(IMAP_USER, raws)

    # --- what arrived ------------------------------------------------------------------

    def ev(self, topic: str) -> list[dict[str, Any]]:
        assert self.tail is not None
        return self.tail.events[topic]

    def _outgoing_missing(self, rnd: Round) -> int:
        sent = {e.get("message_id") for e in self.ev("status") if e.get("state") == "sent"}
        at_sink = sum(1 for m in rnd.mids if m in self.sink.received)
        return (len(rnd.mids) - at_sink) + sum(1 for m in rnd.mids if m not in sent)

    def _progress(self, rnd: Round, what: str) -> int:
        """How much of the round's work ``what`` has done (for the kill)."""
        if what == "router":
            return len({e.get("message_id") for e in self.ev("routing-decided")} & set(rnd.mids))
        if what == "limiter":
            return len({e.get("message_id") for e in self.ev("released")} & set(rnd.mids))
        if what == "delivery":
            return sum(1 for m in rnd.mids if m in self.sink.received)
        if what == "status":
            return len({e.get("message_id") for e in self.ev("status")
                        if e.get("state") == "sent"} & set(rnd.mids))
        if what == "fetcher":
            return len(self._ids(self.ev("inbound")) & rnd.inbound_ids)
        if what == "inbound":
            return len(self._ids(self.ev("inbound-routed")) & rnd.inbound_ids)
        if what == "bounces":
            return len({str(e.get("address", "")).lower() for e in self.ev("bounces")
                        if e.get("type") == "BounceRecorded"} & rnd.bounced)
        assert what == "blacklist"
        return len(self._blacklisted() & rnd.bounced)

    @staticmethod
    def _ids(events: list[dict[str, Any]]) -> set[str]:
        return {str(e.get("message_id", "")).strip("<>") for e in events}

    def _blacklisted(self) -> set[str]:
        latest: dict[str, bool] = {}
        for e in self.ev("blacklist"):
            latest[str(e.get("address", "")).lower()] = bool(e.get("blacklisted"))
        return {a for a, b in latest.items() if b}

    def _inbound_missing(self, rnd: Round) -> int:
        return sum(len(rnd.inbound_ids) - self._progress(rnd, w)
                   for w in ("fetcher", "inbound")) + sum(
                       len(rnd.bounced) - self._progress(rnd, w) for w in ("bounces", "blacklist"))

    # --- the round ---------------------------------------------------------------------

    def _wait(self, what: str, missing: Callable[[], int], timeout: float | None = None,
              except_: str = "") -> int:
        """Poll until ``missing()`` is 0, or ``--stall`` s without progress."""
        assert self.tail is not None
        stall = timeout or self.args.stall
        last, moved = -1, time.monotonic()
        while True:
            self.tail.poll(200)
            left = missing()
            if left == 0:
                return 0
            if left != last:
                last, moved = left, time.monotonic()
            if time.monotonic() - moved > stall:
                print(f"  {what}: {left} still missing after {stall:g} s without progress")
                return left
            self.check_alive(except_)

    def _kill_when(self, rnd: Round, total: int) -> None:
        """SIGKILL the round's processor at about a quarter of its work;
        start it again once its group session has expired."""
        assert self.tail is not None
        name = rnd.killed
        deadline = time.monotonic() + 120
        while self._progress(rnd, name) < max(total // 4, 1):
            if time.monotonic() > deadline:
                raise BenchError(f"{name} made no progress before the kill")
            self.tail.poll(20)
            self.check_alive()
        victim = self.workers[name]
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait(10)
        rnd.at_kill = self._progress(rnd, name)
        t0 = time.monotonic()
        time.sleep(self.settings.tuned().session_timeout + 1)
        self.workers[name] = self._start(name)
        rnd.kill_after = time.monotonic() - t0

    def run_round(self, name: str) -> Round:
        rnd = Round(name)
        n = self.args.n
        print(f"round {name}: {n} mails out, {n} in", flush=True)
        # published from a thread, so the kill lands while mail still comes in
        publishing = threading.Thread(target=self._outgoing, args=(rnd, n), daemon=True)
        publishing.start()
        if name in OUTGOING:
            self._kill_when(rnd, n)
        publishing.join()
        self._wait(f"{name}: outgoing", lambda: self._outgoing_missing(rnd), except_=name)
        self._inbound(rnd)
        if name not in OUTGOING:
            total = len(rnd.bounced) if name in ("bounces", "blacklist") else \
                len(rnd.inbound_ids)
            self._kill_when(rnd, total)
        self._wait(f"{name}: inbound", lambda: self._inbound_missing(rnd), except_=name)
        time.sleep(2.0)  # late repeats (a retried attempt, a re-read batch) show up too
        assert self.tail is not None
        self.tail.poll(500)
        rnd.row = self._count(rnd)
        if rnd.row["missing"] or rnd.row["other_missing"]:
            print(self._trail(rnd), flush=True)
        return rnd

    def _trail(self, rnd: Round) -> str:
        """Where the missing work stopped: each missing mail's events."""
        sent = {e.get("message_id") for e in self.ev("status") if e.get("state") == "sent"}
        lines = []
        missing = [m for m in rnd.mids if m not in self.sink.received or m not in sent]
        for m in missing[:5]:
            trail = [t for t, evs in (("routed", self.ev("routing-decided")),
                                      ("released", self.ev("released")))
                     if any(e.get("message_id") == m for e in evs)]
            trail += [f"{e.get('type')}#{e.get('attempt')}" for e in self.ev("delivery")
                      if e.get("message_id") == m]
            lines.append(f"  missing {m}: {' > '.join(trail) or 'no event'}; "
                         f"at the sink {len(self.sink.received.get(m, []))}")
        recorded = {str(e.get("address", "")).lower() for e in self.ev("bounces")
                    if e.get("type") == "BounceRecorded"}
        black = self._blacklisted()
        for a in sorted(rnd.bounced - black)[:5]:
            lines.append(f"  not blacklisted {a}: BounceRecorded {a in recorded}")
        lines.append(f"  {len(missing)} mails missing; logs in {self.workdir}")
        if missing:
            try:
                lines.append(self._offsets(rnd, missing))
            except Exception as exc:  # noqa: BLE001 - a diagnosis must not lose the round
                lines.append(f"  offsets not read: {exc!r}")
        return "\n".join(lines)

    def _offsets(self, rnd: Round, missing: list[str]) -> str:
        """Where the missing mails are on ``released``, the killed
        processor's group's committed offsets and the topics' true ends."""
        s = self.settings
        released: dict[int, list[int]] = collections.defaultdict(list)
        wanted = set(missing)
        for e in self.ev("released"):
            if e.get("message_id") in wanted:
                p, o = e["_at"]
                released[p].append(o)
        spans = {p: f"{min(o)}-{max(o)} ({len(o)})" for p, o in sorted(released.items())}
        lines = [f"  missing on released (partition: offsets): {spans}"]
        tps = [TopicPartition(RELEASED.full(s), p) for p in range(s.partitions)]
        group = f"{s.app_prefix}-{rnd.killed}"
        reader = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=group,
                               enable_auto_commit=False, client_id="kill-matrix-committed")
        try:  # asks the group's committed offsets; never joins it
            lines.append(f"  committed by {group}: " + ", ".join(
                f"{tp.topic}[{tp.partition}]={reader.committed(tp)}" for tp in tps))
        finally:
            reader.close()
        assert self.tail is not None
        ends = true_end_offsets_sync(self.tail.consumer, tps)
        listed = self.tail.consumer.end_offsets(tps)
        lines.append("  true ends: " + ", ".join(f"{tp.topic}[{tp.partition}]={o}"
                                                 f" (listed {listed.get(tp)})"
                                                 for tp, o in sorted(ends.items())))
        return "\n".join(lines)

    def _count(self, rnd: Round) -> dict[str, Any]:
        name = rnd.killed
        mids = set(rnd.mids)
        if name in ("router", "limiter", "delivery"):
            counts = {m: len(self.sink.received.get(m, [])) for m in rnd.mids}
            interrupted = {e.get("message_id") for e in self.ev("delivery")
                           if e.get("type") == "DeliveryAttempted" and e.get("interrupted")}
            dups = {m for m, c in counts.items() if c > 1}
            return self._row(rnd, "mails at the SMTP sink", len(rnd.mids),
                             sum(1 for c in counts.values() if c), dups, dups & interrupted)
        if name == "status":
            sent = [e for e in self.ev("status")
                    if e.get("state") == "sent" and e.get("message_id") in mids]
            return self._repeats(rnd, "mails with status sent", len(mids), sent, "message_id")
        if name == "fetcher":
            got = [e for e in self.ev("inbound") if e.get("type") == "InboundMailReceived"
                   and str(e.get("message_id", "")).strip("<>") in rnd.inbound_ids]
            per = collections.Counter(str(e["message_id"]).strip("<>") for e in got)
            dropped = {str(e.get("message_id", "")).strip("<>") for e in self.ev("inbound-routed")
                       if e.get("route") == "duplicate"}
            dups = {m for m, c in per.items() if c > 1}
            return self._row(rnd, "mails on inbound", len(rnd.inbound_ids), len(per), dups,
                             dups & dropped)
        if name == "inbound":
            routed = [e for e in self.ev("inbound-routed")
                      if str(e.get("message_id", "")).strip("<>") in rnd.inbound_ids]
            for e in routed:
                e["_key"] = str(e.get("message_id", "")).strip("<>")
            return self._repeats(rnd, "mails routed", len(rnd.inbound_ids), routed, "_key")
        if name == "bounces":
            recs = [e for e in self.ev("bounces") if e.get("type") == "BounceRecorded"
                    and str(e.get("address", "")).lower() in rnd.bounced]
            for e in recs:
                e["_key"] = str(e.get("address", "")).lower()
            return self._repeats(rnd, "bounces recorded", len(rnd.bounced), recs, "_key",
                                 same="bounce_id")
        changes = [e for e in self.ev("blacklist")
                   if e.get("blacklisted") and str(e.get("address", "")).lower() in rnd.bounced]
        for e in changes:
            e["_key"] = str(e.get("address", "")).lower()
        return self._repeats(rnd, "addresses blacklisted", len(rnd.bounced), changes, "_key",
                             same="address")

    def _repeats(self, rnd: Round, unit: str, expected: int, events: list[dict[str, Any]],
                 key: str, same: str = "event_id") -> dict[str, Any]:
        by: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for e in events:
            by[str(e[key])].append(e)
        dups = {k for k, v in by.items() if len(v) > 1}
        marked = {k for k in dups if len({str(e.get(same)) for e in by[k]}) == 1}
        return self._row(rnd, unit, expected, len(by), dups, marked)

    def _row(self, rnd: Round, unit: str, expected: int, done: int, dups: set[Any],
             marked: set[Any]) -> dict[str, Any]:
        return {
            "processor": rnd.killed, "unit": unit, "sent": expected, "delivered": done,
            "duplicates": len(dups), "marked": len(marked), "missing": expected - done,
            "killed_at": rnd.at_kill, "other_missing": self._outgoing_missing(rnd)
            + self._inbound_missing(rnd),
        }


def table(rows: list[dict[str, Any]]) -> str:
    head = ("processor", "what is counted", "sent", "delivered", "duplicates",
            "of them marked", "missing", "its work done at the kill", "missing elsewhere")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['processor']} | {r['unit']} | {r['sent']} | {r['delivered']} | "
            f"{r['duplicates']} | {r['marked']} | {r['missing']} | {r['killed_at']} | "
            f"{r['other_missing']} |")
    return "\n".join(lines)


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parents[1])
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True,
                               cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="mails out per round (and in)")
    parser.add_argument("--only", default="", help="comma-separated processors (default: all)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stall", type=float, default=90.0,
                        help="seconds without progress before a round gives up waiting")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data")
    args = parser.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else PROCESSORS) if n]
    unknown = set(names) - set(PROCESSORS)
    if unknown:
        parser.error(f"unknown processors: {', '.join(sorted(unknown))}")
    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the finally below stops every child

    signal.signal(signal.SIGTERM, terminate)
    km = KillMatrix(args)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    try:
        km.start()
        for name in names:
            rows.append(km.run_round(name).row)
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        km.stop()
    print(f"\nkill -9 matrix at {commit()}: {args.n} mails out and {args.n} in per round, "
          f"{args.partitions} partitions, one worker process per processor "
          f"({time.monotonic() - t0:.0f} s)\n")
    print(table(rows))
    bad = [r for r in rows if r["missing"] or r["other_missing"] or r["marked"] < r["duplicates"]]
    if len(rows) < len(names) or bad:
        print("\nFAILED: " + ", ".join(r["processor"] for r in bad) if bad else
              "\nFAILED: not every round ran")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
