"""The lanes benchmark: transactional latency while a mass campaign goes out,
and what the limiter costs.

    python -m bench.lanes [--campaign 5000] [--trickle-rate 10] [--trickle-duration 15]
                          [--n 2000] [--serial 200] [--limiter-n 5000]
                          [--workers combined|separate] [--partitions 4]
                          [--baseline FILE] [--set FIELD=VALUE] [--py-spy BIN
                          [--profile-seconds 10]] [--json FILE] [--keep]

Same set-up as ``bench/pipeline.py`` (whose pieces it imports): an embedded
Tansu broker, the SMTP sink and ``postlane worker router limiter delivery
status`` (or one process each), all on loopback, stopped by PID. Phases:

1. throughput: ``--n`` transactional mails as fast as the Publisher can;
   end-to-end msg/s, with the per-hop split (limiter hop included);
2. one in flight: ``--serial`` mails, each published once the previous was
   accepted (the figure the README had at 109 ms p50 before the limiter);
3. trickle alone: ``--trickle-rate`` transactional mails/s for
   ``--trickle-duration`` s; publish -> accepted by the sink;
4. trickle during a campaign: ``--campaign`` mass mails (kind "mass", the
   mass lane) published all at once (one kafka-python producer, batched,
   not one acked send at a time), then the same trickle at once. The
   trickle's latency, the campaign's throughput and completion time, and
   the campaign's order per partition: inversions (pairs of campaign mails
   of one partition that arrived in the opposite of their creation order)
   in the limiter's releases, in delivery's starts and at the sink;
5. the limiter alone, on its own broker after the pipeline is stopped:
   only ``postlane worker limiter``; ``--limiter-n`` routed decisions
   (``processors.router.core.decide`` against the same config view) published
   at once onto ``routing-decided``; MailReleased/s on ``released`` and the
   limiter's CPU per mail.

Then it checks every mail of both kinds reached the sink exactly once and
prints the limiter's cost: its hop and its capacity alone, measured in this
run, and, with ``--baseline FILE``, the throughput and one-in-flight p50
against a ``python -m bench.pipeline --json FILE`` run of the code before the
limiter on the same machine (no constant figures: without a baseline there
is no before/after ratio). It has no Postfix anchor; ``bench/pipeline.py``
measures one in the same run. Not part of CI (pytest only collects tests/).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from bench.batches import count_batches
from bench.batches import lines as batch_lines
from bench.pipeline import (
    BODY,
    CATCHALL,
    SERVER,
    Bench,
    BenchError,
    CpuMeter,
    Phase,
    cpu_line,
    dist,
    dist_line,
    hop_report,
    load_average,
    ms,
    print_correctness,
    print_header,
    print_phase,
    settings_overrides,
    start_worker,
    summarize_profile,
    vm_rss_kib,
)
from postlane.configops import publish_config
from processors.config.view import ConfigView, evolve
from processors.router.core import decide
from schemas import OutgoingServerConfigured, SendRequested, SettingsChanged, encode
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import RELEASED, ROUTING_DECIDED, SEND_REQUESTED_MASS


def bulk_producer(s: Settings, client_id: str) -> KafkaProducer:
    """Batched, acks=all, one request in flight (so a partition keeps the send order)."""
    return KafkaProducer(bootstrap_servers=s.bootstrap, acks="all", linger_ms=5, retries=5,
                         max_in_flight_requests_per_connection=1, client_id=client_id,
                         max_request_size=s.max_request_bytes)


def inversions(values: list[int]) -> int:
    """Pairs i < j with values[i] > values[j] (merge sort count)."""
    def sort(v: list[int]) -> tuple[list[int], int]:
        if len(v) < 2:
            return v, 0
        mid = len(v) // 2
        left, a = sort(v[:mid])
        right, b = sort(v[mid:])
        out: list[int] = []
        count = a + b
        i = j = 0
        while i < len(left) and j < len(right):
            if left[i] <= right[j]:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                count += len(left) - i
                j += 1
        out += left[i:] + right[j:]
        return out, count
    return sort(values)[1]


def order_figures(seqs_in_order: list[int]) -> dict[str, int]:
    """Creation sequence numbers in the order something happened to them:
    out-of-order pairs, consecutive mails (k, k+1) seen k+1 first, and the
    largest distance between a mail's place and its creation place."""
    rank = {q: i for i, q in enumerate(sorted(seqs_in_order))}
    ranks = [rank[q] for q in seqs_in_order]
    where = {r: i for i, r in enumerate(ranks)}
    swapped = sum(1 for r in range(len(ranks) - 1) if where[r + 1] < where[r])
    return {"mails": len(ranks), "pairs_out_of_order": inversions(ranks),
            "consecutive_swapped": swapped,
            "max_displacement": max((abs(i - r) for i, r in enumerate(ranks)), default=0)}


class Lanes(Bench):
    """The pipeline bench plus a mass campaign published in bulk."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.bulk: KafkaProducer | None = None
        # campaign mail -> (creation seq, partition, offset on send-requested-mass)
        self.creation: dict[str, tuple[int, int, int]] = {}
        self.campaign_phase: Phase | None = None
        self.trickle_phases: dict[str, Phase] = {}
        self.campaign_profiles: list[tuple[str, Path]] = []
        self.campaign_profile_seconds = 0.0

    def start(self) -> None:
        super().start()
        self.bulk = bulk_producer(self.settings, "postlane-bench-campaign")

    def stop(self) -> None:
        if self.bulk is not None:
            self.bulk.close()
            self.bulk = None
        super().stop()

    @property
    def alone_seconds(self) -> float:
        a = self.args
        return a.trickle_duration if a.trickle_alone is None else a.trickle_alone

    def trickle_alone(self) -> Phase:
        rate, count = self.args.trickle_rate, int(self.args.trickle_rate *
                                                  self.alone_seconds)
        ph = self._run_phase(Phase(f"trickle {rate:g}/s alone"),
                             lambda p: self.publish_at_rate(p, rate, count))
        self.trickle_phases["alone"] = ph
        return ph

    def _build_campaign(self, count: int) -> list[tuple[str, bytes]]:
        assert self.publisher is not None
        out = []
        for i in range(count):
            event = self.publisher.build(
                from_="news@bench.test", to=[f"subscriber{i % 1000}@sink.test"],
                subject=f"bench campaign {i}", text=BODY, kind="mass")
            out.append((event.message_id, encode(event)))
        return out

    def _publish_campaign(self, ph: Phase, mails: list[tuple[str, bytes]]) -> None:
        assert self.bulk is not None
        topic = SEND_REQUESTED_MASS.full(self.settings)
        futures = []
        for mid, value in mails:
            ph.published[mid] = time.time()  # creation order = this order
            fut = self.bulk.send(topic, key=mid.encode(), value=value)
            fut.add_callback(lambda _md, mid=mid: ph.acked.__setitem__(mid, time.time()))
            futures.append((mid, fut))
        self.bulk.flush()
        for seq, (mid, fut) in enumerate(futures):
            md = fut.get(30)
            self.creation[mid] = (seq, md.partition, md.offset)

    def campaign_and_trickle(self) -> tuple[Phase, Phase]:
        """The campaign published at once, then the trickle at once; waits
        until every mail of both reached the sink and shows 'sent'."""
        assert self.tracker is not None
        a = self.args
        rate, count = a.trickle_rate, int(a.trickle_rate * a.trickle_duration)
        mails = self._build_campaign(a.campaign)
        camp = Phase(f"campaign of {a.campaign} mass mails")
        trickle = Phase(f"trickle {rate:g}/s during the campaign")
        meter = CpuMeter(self.processes())
        if self.profiler is not None:
            self.profiler.start(self.workers, "-campaign", a.profile_seconds)
        broker_pid = self.broker.proc.pid if self.broker and self.broker.proc else 0
        rss_before = vm_rss_kib(broker_pid)
        meter.start()
        camp.started = time.time()
        self._publish_campaign(camp, mails)
        camp.publish_done = trickle.started = time.time()
        if count:
            self.publish_at_rate(trickle, rate, count)
        trickle.publish_done = time.time()
        ids = set(camp.published) | set(trickle.published)
        missing = self.sink.wait_all(ids, stall=a.stall, check=self.check_alive)
        camp.done = trickle.done = time.time()
        camp.cpu = trickle.cpu = meter.stop()
        if self.profiler is not None:
            self.campaign_profiles = self.profiler.stop()
            self.campaign_profile_seconds = self.profiler.seconds
        total = len(camp.published) + len(trickle.published)
        grown = vm_rss_kib(broker_pid) - rss_before
        camp.notes.append(f"broker resident memory {rss_before / 1024:,.0f} -> "
                          f"{(rss_before + grown) / 1024:,.0f} MiB: {grown / max(total, 1):.1f} "
                          f"KiB per mail ({total} mails)")
        camp.missing = missing & set(camp.published)
        trickle.missing = missing & set(trickle.published)
        not_sent = self.tracker.catch_up(ids, timeout=a.stall)
        if not_sent:
            camp.notes.append(f"{len(not_sent)} mails still without a 'sent' status "
                              f"{a.stall:g} s after the phase")
        self.phases += [trickle, camp]
        self.campaign_phase = camp
        self.trickle_phases["campaign"] = trickle
        return trickle, camp


# --------------------------------------------------------------------------
# the limiter alone


def limiter_alone(args: argparse.Namespace, extra_env: dict[str, str]) -> dict[str, Any]:
    """Only ``postlane worker limiter`` on its own broker: ``--limiter-n``
    routed decisions published at once onto routing-decided; MailReleased/s."""
    n = args.limiter_n
    workdir = Path(tempfile.mkdtemp(prefix="postlane-bench-limiter-"))
    s = Settings.from_env(environ=extra_env, embedded_port=free_port(),
                          data_dir=str(workdir / "data"), partitions=args.partitions,
                          topic_prefix="benchlim.", app_prefix="benchlim")
    server = OutgoingServerConfigured(name=SERVER, host="127.0.0.1", port=9, security="none")
    settings_event = SettingsChanged(catchall_domain=CATCHALL)
    view = evolve(evolve(ConfigView(), server), settings_event)
    items: list[tuple[str, bytes]] = []
    for i in range(n + 1):  # the first one warms up
        request = SendRequested(message_id=uuid.uuid4().hex, from_="app@bench.test",
                                to=[f"rcpt{i % 100}@sink.test"], subject=f"limiter {i}",
                                text=BODY)
        decision = decide(view, request)
        if decision.outcome != "routed":
            raise BenchError(f"decide() did not route the bench mail: {decision.reason}")
        items.append((request.message_id, encode(decision)))
    print(f"limiter alone: Tansu on {s.bootstrap}, `postlane worker limiter`, {n} decisions; "
          f"logs in {workdir}", flush=True)
    broker = worker = prod = consumer = None
    out: dict[str, Any] = {"bootstrap": s.bootstrap, "decisions": n, "partitions": s.partitions}
    try:
        t_start = time.monotonic()
        broker = EmbeddedBroker(s, log_path=workdir / "tansu.log").start()
        ensure_topics(s)
        publish_config(s, [(f"server:{SERVER}", server), ("settings", settings_event)])
        worker = start_worker(s, ("limiter",), workdir, extra_env)
        prod = bulk_producer(s, "postlane-bench-decisions")
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, enable_auto_commit=False,
                                 group_id=None, client_id="postlane-bench-released",
                                 fetch_max_wait_ms=100)
        topic = RELEASED.full(s)
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic)
                                                         or range(s.partitions))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        released: dict[str, list[float]] = {}

        def drain(until: set[str], stall: float) -> set[str]:
            last = time.monotonic()
            missing = set(until) - set(released)
            while missing and time.monotonic() - last < stall:
                if not worker.alive():
                    raise BenchError(f"the limiter exited:\n{worker.log_tail()}")
                for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                    for r in records:
                        ev = orjson.loads(r.value or b"{}")
                        if ev.get("type") != "MailReleased":
                            continue
                        mid = ev.get("message_id", "")
                        released.setdefault(mid, []).append(float(ev.get("occurred_at", 0)))
                        if mid in missing:
                            missing.discard(mid)
                            last = time.monotonic()
            return missing

        warm_id, warm_value = items[0]
        prod.send(ROUTING_DECIDED.full(s), key=warm_id.encode(), value=warm_value).get(30)
        if drain({warm_id}, stall=180.0):
            raise BenchError("the limiter released nothing in 180 s:\n" + worker.log_tail())
        out["ready_s"] = time.monotonic() - t_start
        procs = {"bench (publisher, reader)": os.getpid(), "tansu broker":
                 broker.proc.pid if broker.proc else 0, "worker limiter": worker.pid}
        meter = CpuMeter(procs)
        meter.start()
        t0 = time.time()
        for mid, value in items[1:]:
            prod.send(ROUTING_DECIDED.full(s), key=mid.encode(), value=value)
        prod.flush()
        t_pub = time.time()
        ids = {mid for mid, _ in items[1:]}
        missing = drain(ids, stall=args.stall)
        cpu = meter.stop()
        time.sleep(args.settle)
        for _ in range(5):  # read what arrived during the settle
            for records in consumer.poll(timeout_ms=200, max_records=5000).values():
                for r in records:
                    ev = orjson.loads(r.value or b"{}")
                    if ev.get("type") == "MailReleased":
                        released.setdefault(ev.get("message_id", ""), []).append(
                            float(ev.get("occurred_at", 0)))
        times = sorted(released[m][0] for m in ids if m in released)
        got = len(times)
        out.update({
            "published_s": t_pub - t0, "released": got, "missing": len(missing),
            "duplicates": sum(1 for m in ids if len(released.get(m, [])) > 1),
            "unexpected": len(set(released) - ids - {warm_id}),
            "cpu_cores": cpu,
        })
        if got:
            out["msg_s"] = n / (times[-1] - t0) if got == n else math.nan
            out["steady_msg_s"] = (got - 1) / (times[-1] - times[0]) if got > 1 else math.nan
            out["first_release_after_s"] = times[0] - t0
            out["last_release_after_s"] = times[-1] - t0
            wall = times[-1] - t0
            out["cpu_ms_per_mail"] = cpu["worker limiter"] * wall / got * 1000
    finally:
        for closer in (consumer, prod):
            if closer is not None:
                closer.close()
        if worker is not None:
            worker.stop()
        if broker is not None:
            broker.stop()
        if args.keep:
            print(f"limiter-alone logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return out


# --------------------------------------------------------------------------
# report


def timeline(ph: Phase, sink: Any, step: float = 1.0) -> str:
    """The worst latency of the mails published in each ``step`` s of the phase."""
    buckets: dict[int, float] = {}
    for mid, t in ph.published.items():
        got = sink.first_time(mid)
        if got is None:
            continue
        b = int((t - ph.started) / step)
        buckets[b] = max(buckets.get(b, 0.0), got - t)
    return " ".join(f"{buckets[b] * 1000:.0f}" for b in sorted(buckets))


def pace(ph: Phase, sink: Any, step: float = 1.0) -> str:
    """Campaign mails accepted by the sink in each ``step`` s after its first publish."""
    counts: dict[int, int] = {}
    for mid in ph.published:
        got = sink.first_time(mid)
        if got is not None:
            b = int((got - ph.started) / step)
            counts[b] = counts.get(b, 0) + 1
    last = max(counts, default=-1)
    return " ".join(str(counts.get(b, 0)) for b in range(last + 1))


def wrap(prefix: str, text: str, width: int = 100) -> list[str]:
    words, lines, line = text.split(), [], prefix
    for w in words:
        if len(line) + len(w) + 1 > width and line.strip():
            lines.append(line)
            line = " " * len(prefix)
        line += (" " if not line.endswith(" ") else "") + w
    lines.append(line)
    return lines


def campaign_order(bench: Lanes) -> dict[str, Any]:
    """Order of the campaign per partition, in what the limiter released
    (offsets on ``released``), delivery started (offsets on ``delivery``) and
    the sink accepted (its clock)."""
    camp = bench.campaign_phase
    assert camp is not None
    by_part: dict[int, list[str]] = {}
    for mid, (_seq, part, _off) in bench.creation.items():
        by_part.setdefault(part, []).append(mid)
    stages: dict[str, dict[str, Any]] = {}
    moved = 0
    for stage in ("released", "started", "sink"):
        per: dict[int, dict[str, int]] = {}
        for part, mids in sorted(by_part.items()):
            if stage == "sink":
                keyed = [(bench.sink.first_time(m), m) for m in mids]
            else:
                pos = bench.positions.get(stage, {})
                keyed = [(pos[m][1] if m in pos else None, m) for m in mids]
                if stage == "released":
                    moved += sum(1 for m in mids if m in pos and pos[m][0] != part)
            order = [bench.creation[m][0] for k, m in sorted(
                (k, m) for k, m in keyed if k is not None)]
            per[part] = order_figures(order)
        stages[stage] = {"per_partition": per, **{
            k: sum(f[k] for f in per.values()) if k != "max_displacement"
            else max((f[k] for f in per.values()), default=0)
            for k in ("mails", "pairs_out_of_order", "consecutive_swapped", "max_displacement")}}
    offsets_ok = all(
        [bench.creation[m][2] for m in sorted(mids, key=lambda m: bench.creation[m][0])]
        == sorted(bench.creation[m][2] for m in mids) for mids in by_part.values())
    return {"stages": stages, "released_on_another_partition": moved,
            "broker_kept_creation_order": offsets_ok}


def lanes_report(bench: Lanes, h: dict[str, dict[str, float]], result: dict[str, Any]) -> None:
    sink, a = bench.sink, bench.args
    alone = bench.trickle_phases.get("alone")
    during = bench.trickle_phases.get("campaign")
    camp = bench.campaign_phase
    lanes: dict[str, Any] = {}
    if alone is not None:
        print_phase(bench, alone, h, result)
        print(f"  worst latency per second of publishing (ms): {timeline(alone, sink)}")
        lanes["trickle_alone_s"] = dist(alone.latencies(sink))
    if during is not None and camp is not None:
        print(f"\n--- {camp.name}, then the trickle ({a.trickle_rate:g}/s for "
              f"{a.trickle_duration:g} s) at once")
        pub = camp.publish_done - camp.started
        print(f"  campaign published in {pub:.2f} s ({len(camp.published) / max(pub, 1e-9):.0f} "
              "msg/s, one batched kafka-python producer); the trickle started right after")
        t_lat = dist(during.latencies(sink))
        print("  TRANSACTIONAL (the trickle) during the campaign:")
        print(dist_line("publish -> accepted by SMTP", t_lat))
        if alone is not None:
            base = dist(alone.latencies(sink))
            print(f"    vs alone: p50 {ms(t_lat['p50'] - base['p50'])} ms, p90 "
                  f"{ms(t_lat['p90'] - base['p90'])}, p99 {ms(t_lat['p99'] - base['p99'])}, "
                  f"max {ms(t_lat['max'] - base['max'])} (during - alone)")
        print(f"  worst latency per second of publishing (ms): {timeline(during, sink)}")
        print("  per hop (the trickle):")
        for line in hop_report(during, sink, h):
            print("  " + line)
        camp_last = camp.last_accepted(sink)
        overlap = sum(1 for m in during.published
                      if (sink.first_time(m) or math.inf) < camp_last)
        print(f"  {overlap} of {len(during.published)} trickle mails were accepted while "
              "campaign mail was still being delivered")
        got = len(camp.published) - len(camp.missing)
        first = min(camp.published.values()) if camp.published else math.nan
        complete = camp_last - first
        rate = len(camp.published) / complete if got == len(camp.published) else math.nan
        c_lat = dist(camp.latencies(sink))
        print(f"  CAMPAIGN: {got}/{len(camp.published)} accepted; completed {complete:.2f} s "
              f"after its first publish: {rate:.0f} msg/s")
        print(dist_line("created -> accepted by SMTP", c_lat))
        for line in wrap("  accepted per second after the first publish: ", pace(camp, sink)):
            print(line)
        print("  per hop (the campaign; queueing included):")
        for line in hop_report(camp, sink, h):
            print("  " + line)
        order = campaign_order(bench)
        print("  campaign order per partition (creation order = publish order"
              f"{'' if order['broker_kept_creation_order'] else ', NOT kept by the broker'}):")
        labels = {"released": "limiter's releases (offsets on released)",
                  "started": "delivery's starts (offsets on delivery)",
                  "sink": "accepted by the sink (its clock)"}
        for stage, f in order["stages"].items():
            print(f"    {labels[stage]:<42} {f['pairs_out_of_order']:>6} pairs out of order, "
                  f"{f['consecutive_swapped']:>4} consecutive swapped, max displacement "
                  f"{f['max_displacement']:>3}  (n={f['mails']})")
        if order["released_on_another_partition"]:
            print(f"    note: {order['released_on_another_partition']} released on another "
                  "partition than their intake")
        print(cpu_line(camp.cpu, profiled=bench.profiler is not None))
        for name, path in bench.campaign_profiles:
            print(f"  py-spy profile of {name}, the first {bench.campaign_profile_seconds:.0f} s "
                  f"of the campaign ({path}):")
            for line in summarize_profile(path, bench.campaign_profile_seconds, 100):
                print("  " + line)
        for note in [*during.notes, *camp.notes]:
            print(f"  note: {note}")
        for ph in (during, camp):
            if ph.missing:
                print(f"  MISSING ({ph.name}) after {a.stall:g} s without progress: "
                      f"{len(ph.missing)}")
        lanes.update({
            "trickle_during_campaign_s": t_lat, "overlap": overlap,
            "campaign": {"mails": len(camp.published), "accepted": got,
                         "publish_s": pub, "completion_s": complete, "msg_s": rate,
                         "latency_s": c_lat, "cpu_cores": camp.cpu},
            "order": {k: {kk: vv for kk, vv in v.items() if kk != "per_partition"}
                      for k, v in order["stages"].items()},
            "order_per_partition": {k: v["per_partition"] for k, v in order["stages"].items()},
        })
    result["lanes"] = lanes


def limiter_report(lim: dict[str, Any]) -> None:
    print(f"\n--- the limiter alone: {lim['decisions']} routed decisions published at once "
          f"onto routing-decided")
    print(f"  own broker {lim['bootstrap']} (Tansu, memory), {lim['partitions']} partitions, "
          f"1 process: [limiter]; ready in {lim.get('ready_s', math.nan):.1f} s")
    print(f"  published in {lim.get('published_s', math.nan):.2f} s; first MailReleased "
          f"{lim.get('first_release_after_s', math.nan) * 1000:.0f} ms, last "
          f"{lim.get('last_release_after_s', math.nan):.2f} s after the first publish")
    print(f"  LIMITER CAPACITY  {lim.get('msg_s', math.nan):.0f} MailReleased/s "
          f"(N / (last release - first publish)); {lim.get('steady_msg_s', math.nan):.0f}/s "
          "between the first and the last release")
    print(f"  limiter CPU per mail: {lim.get('cpu_ms_per_mail', math.nan):.2f} ms")
    print(f"  {lim.get('released', 0)} released, {lim.get('missing', 0)} missing, "
          f"{lim.get('duplicates', 0)} released twice, {lim.get('unexpected', 0)} unexpected")
    if "cpu_cores" in lim:
        print(cpu_line(lim["cpu_cores"]))


def cost_report(bench: Lanes, h: dict[str, dict[str, float]], result: dict[str, Any],
                lim: dict[str, Any] | None) -> None:
    """The limiter's cost in words: this run's figures and, with
    ``--baseline``, against a run of the code before it (no constants)."""
    phases = result["phases"]
    serial = next((ph for ph in bench.phases if ph.name == "one in flight"), None)
    if "throughput" not in phases and serial is None and not (lim and "msg_s" in lim):
        return
    layout = bench.args.workers
    before_rate = before_p50 = math.nan
    source = "no baseline (--baseline FILE): no before/after ratio"
    if bench.args.baseline:
        base = orjson.loads(Path(bench.args.baseline).read_bytes())
        before_rate = base["phases"]["throughput"]["throughput_msg_s"]
        before_p50 = base["phases"]["one in flight"]["latency_s"]["p50"] * 1000
        source = (f"against {bench.args.baseline}: bench.pipeline before the limiter on this "
                  f"machine, workers {base.get('workers', '?')}")
        if base.get("workers") != layout:
            print(f"\nWARNING: the baseline ran with workers {base.get('workers')!r}, this run "
                  f"with {layout!r}: the comparison below is not like for like")
    print(f"\n--- the limiter's cost ({source})")
    cost: dict[str, Any] = {"against": source if bench.args.baseline else None}
    if "throughput" in phases:
        rate = phases["throughput"]["throughput_msg_s"]
        if math.isnan(before_rate):
            words = "no figure before to compare with"
        elif rate >= before_rate:
            words = f"vs {before_rate:.0f} before: no throughput cost measured"
        else:
            words = (f"vs {before_rate:.0f} before: {(1 - rate / before_rate) * 100:.0f}% less "
                     f"({before_rate - rate:.0f} msg/s)")
        print(f"  throughput      {rate:.0f} msg/s end to end; {words}")
        cost["throughput_msg_s"] = rate
    if serial is not None:
        p50 = dist(serial.latencies(bench.sink))["p50"] * 1000
        lim_hop = dist(h["released"][m] - h["routed"][m] for m in serial.published
                       if m in h["released"] and m in h["routed"])
        next_hop = dist(h["started"][m] - h["released"][m] for m in serial.published
                        if m in h["started"] and m in h["released"])
        before = ("" if math.isnan(before_p50) else
                  f" vs {before_p50:.1f} ms before: {p50 - before_p50:+.1f} ms "
                  f"({(p50 / before_p50 - 1) * 100:+.0f}%)")
        if lim_hop["n"]:
            print(f"  one in flight   p50 {p50:.1f} ms{before}; routed -> "
                  f"delivery started is two consumer hops: routed -> released (into the "
                  f"limiter) p50 {lim_hop['p50'] * 1000:.1f} ms + released -> delivery "
                  f"started p50 {next_hop['p50'] * 1000:.1f} ms")
        else:  # no limit configured: the router released them itself (direct)
            print(f"  one in flight   p50 {p50:.1f} ms{before}; the transactional mail "
                  "skipped the limiter (released by the router: no limit applies; "
                  "--set direct_release=false measures the limiter's hop)")
        cost.update({"serial_p50_ms": p50, "limiter_hop_p50_ms": lim_hop["p50"] * 1000,
                     "released_to_started_p50_ms": next_hop["p50"] * 1000})
    if lim and "msg_s" in lim:
        shared = (" (the combined worker shares one core between router, limiter, delivery "
                  "and status)" if layout == "combined" else "")
        print(f"  limiter alone   {lim['msg_s']:.0f} MailReleased/s, "
              f"{lim.get('cpu_ms_per_mail', math.nan):.2f} ms of CPU per mail{shared}")
    result["cost"] = cost


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.lanes",
                                description="Postlane lanes benchmark: transactional latency "
                                            "during a mass campaign; the limiter's cost")
    p.add_argument("--campaign", type=int, default=5000,
                   help="mass mails published at once before the second trickle (0: skip)")
    p.add_argument("--trickle-rate", type=float, default=10.0,
                   help="transactional mails/s of the trickle")
    p.add_argument("--trickle-duration", type=float, default=15.0,
                   help="seconds of the trickle (alone, then during the campaign)")
    p.add_argument("--trickle-alone", type=float, default=None, metavar="SECONDS",
                   help="seconds of the trickle alone, when it should differ from "
                        "--trickle-duration (e.g. a trickle through a whole 100,000 campaign)")
    p.add_argument("--n", type=int, default=2000,
                   help="transactional mails of the throughput phase (0: skip)")
    p.add_argument("--serial", type=int, default=200,
                   help="mails of the one-in-flight phase (0: skip)")
    p.add_argument("--limiter-n", type=int, default=5000,
                   help="decisions for the limiter-alone run on its own broker (0: skip)")
    p.add_argument("--workers", choices=("combined", "separate"), default="combined",
                   help="one `postlane worker router limiter delivery status` or one per "
                        "processor")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--stall", type=float, default=60.0,
                   help="give up waiting after this long without a new mail")
    p.add_argument("--settle", type=float, default=3.0,
                   help="seconds to wait for late duplicates before the correctness check")
    p.add_argument("--baseline", type=Path, metavar="FILE",
                   help="`python -m bench.pipeline --json FILE` of the code before the "
                        "limiter, for the limiter's cost (without it: no before/after ratio)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a Settings field for the workers, e.g. mass_window=64 (repeatable)")
    p.add_argument("--py-spy", metavar="BIN",
                   help="py-spy binary: profile each worker during the throughput phase and "
                        "the first --profile-seconds of the campaign (implies --keep)")
    p.add_argument("--profile-seconds", type=int, default=10,
                   help="seconds of the campaign phase profiled with --py-spy")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the logs and broker data dirs")
    args = p.parse_args(argv)
    if args.py_spy:
        args.keep = True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings_overrides(args.set)  # refuse a bad --set before starting anything
    bench = Lanes(args)
    print(f"starting: Tansu on {bench.settings.bootstrap}, sink, workers ({args.workers}); "
          f"logs in {bench.workdir}", flush=True)
    lim: dict[str, Any] | None = None
    try:
        bench.start()
        print(f"ready in {bench.ready_seconds:.1f} s", flush=True)
        if args.n:
            print(f"throughput phase ({args.n} transactional mails)", flush=True)
            bench.throughput()
        if args.serial:
            print(f"one in flight ({args.serial} mails)", flush=True)
            bench.serial()
        if args.trickle_rate > 0 and bench.alone_seconds > 0:
            print(f"trickle alone ({args.trickle_rate:g}/s for {bench.alone_seconds:g} s)",
                  flush=True)
            bench.trickle_alone()
        if args.campaign:
            print(f"campaign of {args.campaign} mass mails, then the trickle", flush=True)
            bench.campaign_and_trickle()
        correct = bench.correctness()
        h = bench.hops()
        batches = asyncio.run(count_batches(bench.settings.bootstrap))
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        args.keep = True
        bench.stop()
        return 2
    except KeyboardInterrupt:
        bench.stop()
        return 130
    bench.stop()  # the pipeline's processes and broker, before the limiter runs alone
    try:
        if args.limiter_n:
            lim = limiter_alone(args, bench.extra_env)
    except BenchError as exc:
        print(f"limiter-alone run failed: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    result = print_header(bench, "Postlane lanes benchmark")
    end_load = load_average()
    for ph in bench.phases:
        if ph.name in ("throughput", "one in flight"):
            print_phase(bench, ph, h, result)
    lanes_report(bench, h, result)
    if lim is not None:
        limiter_report(lim)
        result["limiter_alone"] = lim
    result["correctness"] = print_correctness(bench, correct, h)
    cost_report(bench, h, result, lim)
    print("\n".join(batch_lines(batches, bench.settings.partitions,
                                 int(correct.get("expected") or 0))))
    result["batches"] = {t: {"batches": b, "records": r, "bytes": n}
                         for t, (b, r, n) in batches.items()}
    print(f"\nload average at the end{' (after the limiter-alone run)' if lim else ''}: "
          f"{end_load[0]:.2f}")
    ok = result["correctness"]["ok"]
    if args.limiter_n:
        ok = ok and lim is not None and lim.get("missing", 1) == 0 \
            and lim.get("duplicates", 1) == 0 and lim.get("unexpected", 1) == 0
    if args.json:
        args.json.write_text(orjson.dumps(result, option=orjson.OPT_INDENT_2 |
                                          orjson.OPT_NON_STR_KEYS).decode())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
