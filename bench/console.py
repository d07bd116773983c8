"""Console and /metrics speed with a large status log (not in CI):
``python bench/console.py [MAILS]`` (default 100,000).

Starts a private embedded broker, writes MAILS mails' events straight onto
the topics the console reads (SendRequested, RoutingDecided and three
MessageStatusChanged per mail: queued, sending, then sent / failed /
deferred / bounced in a 90/5/4/1 mix, with 550/451 answers, over the last
hour), starts the console (``ConsoleServer``, as ``postlane web`` does)
and ``/metrics`` (as every worker does), waits until the console has read
everything, logs in, and asks each page R times (default 40) one after the
other over HTTP, then /metrics 200 times. Prints p50 / p95 / max per page
in ms, the time to read the log, and the console's resident memory.
Budget: every page p95 <= 200 ms, /metrics p95 <= 50 ms.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from postlane.web import auth  # noqa: E402
from postlane.web.app import ConsoleServer  # noqa: E402
from schemas import OutgoingServerConfigured, SettingsChanged  # noqa: E402
from streams import metrics  # noqa: E402
from streams.client import ensure_topics, publish  # noqa: E402
from streams.embedded import EmbeddedBroker, free_port  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import CONFIG  # noqa: E402

MAILS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 40
SERVERS = ("primary", "backup", "campaigns")


def mail_events(i: int, now: float) -> list[tuple[str, bytes, bytes]]:
    mid = f"bench-{i:07}"
    at = now - 3600 + 3600 * i / MAILS
    server = SERVERS[i % 3]
    rcpt = f"user{i}@example{i % 50}.org"
    fate = random.random()
    if fate < 0.90:
        last, answer = "sent", {"state": "sent", "code": 250, "enhanced": "2.0.0",
                                "text": "2.0.0 Ok: queued"}
    elif fate < 0.95:
        last, answer = "failed", {"state": "failed", "code": 550, "enhanced": "5.1.1",
                                  "text": f"5.1.1 <{rcpt}>: Recipient address rejected"}
    elif fate < 0.99:
        last, answer = "deferred", {"state": "deferred", "code": 451, "enhanced": "4.7.1",
                                    "text": "4.7.1 Greylisted, try again later"}
    else:
        last, answer = "bounced", {"state": "bounced", "code": 550, "enhanced": "5.1.1",
                                   "text": "user unknown (bounce)"}
    req = {"type": "SendRequested", "schema": 1, "event_id": f"r{i}", "occurred_at": at,
           "message_id": mid, "from_": "billing@mycompany.example", "to": [rcpt],
           "subject": f"Invoice {i}", "text": "Your invoice", "tenant": f"t{i % 7}",
           "headers": {"X-Invoice": str(i)}}
    routed = {"type": "RoutingDecided", "schema": 1, "event_id": f"d{i}", "occurred_at": at,
              "message_id": mid, "outcome": "routed", "server": server,
              "header_from": "billing@mycompany.example", "rule": "from_filter_domain",
              "envelope_from": f"bounce+{mid}@mycompany.example"}
    out = [("send-requested", mid.encode(), orjson.dumps(req)),
           ("routing-decided", mid.encode(), orjson.dumps(routed))]
    steps = [("queued", "", "routed to " + server, {}),
             ("sending", "queued", f"attempt 1 via {server}", {rcpt: {"state": "sending"}}),
             (last, "sending", answer["text"], {rcpt: answer})]
    for n, (state, prev, reason, rcpts) in enumerate(steps):
        change = {"type": "MessageStatusChanged", "schema": 1, "event_id": f"s{i}-{n}",
                  "occurred_at": at + n * 0.05, "message_id": mid, "state": state,
                  "previous": prev, "reason": reason, "server": server, "attempt": 1 if n else 0,
                  "recipients": rcpts}
        out.append(("status", mid.encode(), orjson.dumps(change)))
    return out


async def fill(s: Settings) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, linger_ms=5,
                                compression_type=s.compression_type,
                                max_batch_size=256 * 1024)
    await producer.start()
    now, n = time.time(), 0
    try:
        for start in range(0, MAILS, 5000):
            futs = []
            for i in range(start, min(start + 5000, MAILS)):
                for topic, key, value in mail_events(i, now):
                    futs.append(await producer.send(s.topic(topic), value, key=key))
                    n += 1
            await asyncio.gather(*futs)
    finally:
        await producer.stop()
    return n


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * p), len(ordered) - 1)]


async def measure(console: ConsoleServer, metrics_port: int
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(wall ms per request, the console thread's CPU ms per request)."""
    base = console.url
    out: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    assert console.thread is not None and console.thread.ident is not None
    clock = time.pthread_getcpuclockid(console.thread.ident)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await (await http.get(base + "/login")).text()
        pre = re.search(r'name="csrf" value="([^"]+)"', page)
        assert pre
        resp = await http.post(base + "/login", data={"csrf": pre.group(1), "username": "bench",
                                                      "password": "bench-password"})
        assert resp.status == 200 and "Overview" in await resp.text(), "login failed"
        failed = "bench-0000000"
        for mid, st in list(console.console.state.mails.items())[:2000]:
            if st.state == "failed":
                failed = mid
                break
        pages = {
            "overview /": "/", "queue (open)": "/queue", "queue all": "/queue?state=all",
            "queue all, page 500": "/queue?state=all&page=500",
            "queue failed, server": "/queue?state=failed&server=backup",
            "queue recipient (address)": "/queue?state=all&recipient=user4242@example42.org",
            "queue recipient (part)": "/queue?state=all&recipient=user4242@",
            "queue tenant, 10 min": "/queue?state=all&tenant=t3&minutes=10",
            "message": f"/message/{failed}", "servers": "/servers",
            "server form": "/servers/edit/primary", "incoming": "/incoming",
            "settings": "/settings", "limits": "/limits", "suppressions": "/suppressions",
            "dead letters": "/dead-letters",
        }
        for name, path in pages.items():
            times, used = [], []
            for _ in range(ROUNDS):
                t0, c0 = time.perf_counter(), time.clock_gettime(clock)
                r = await http.get(base + path)
                body = await r.read()
                times.append((time.perf_counter() - t0) * 1000)
                used.append((time.clock_gettime(clock) - c0) * 1000)
                assert r.status == 200, (path, r.status, body[:300])
            out[name], cpu[name] = times, used
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            r = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            await r.read()
            times.append((time.perf_counter() - t0) * 1000)
        out["/metrics"] = times
    return out, cpu


def main() -> None:
    random.seed(17)
    with tempfile.TemporaryDirectory() as tmp:
        s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=tmp,
                              web_port=free_port(), metrics_port=free_port())
        broker = EmbeddedBroker(s).start()
        try:
            ensure_topics(s)
            server = OutgoingServerConfigured(name="primary", host="127.0.0.1", port=2525,
                                              security="none", daily_limit=100000)
            publish(s, CONFIG, [(server.key, server),
                                ("settings", SettingsChanged(catchall_domain="x.example"))])
            t0 = time.perf_counter()
            n = asyncio.run(fill(s))
            print(f"wrote {n} records ({MAILS} mails) in {time.perf_counter() - t0:.1f} s")
            auth.add_user(Path(tmp) / "web-users", "bench", "bench-password")
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            console = ConsoleServer(s, with_unsubscribe=False)
            t0 = time.perf_counter()
            console.start()
            metrics.serve(s.metrics_host, s.metrics_port)
            while not (console.feed and console.feed.ready.is_set()
                       and len(console.console.state.mails) >= MAILS):
                time.sleep(0.2)
            read = time.perf_counter() - t0
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(f"console read the log in {read:.1f} s; max RSS {rss / 1024:.0f} MiB "
                  f"(+{(rss - rss0) / 1024:.0f} MiB for the view)")
            try:
                results, cpu = asyncio.run(measure(console, s.metrics_port))
            finally:
                console.stop()
        finally:
            broker.stop()
    print(f"\n{'page':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'CPU p50':>8} {'CPU p95':>8}"
          f"   ({ROUNDS} requests each; /metrics 200; CPU: the console thread's)")
    worst = 0.0
    for name, times in results.items():
        p95 = pct(times, 0.95)
        if name != "/metrics":
            worst = max(worst, p95)
        used = cpu.get(name)
        spent = f"{statistics.median(used):8.1f} {pct(used, 0.95):8.1f}" if used else ""
        print(f"{name:28} {statistics.median(times):8.1f} {p95:8.1f} {max(times):8.1f} {spent}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (2 cores here)")
    m95 = pct(results["/metrics"], 0.95)
    print(f"\nworst page p95 {worst:.1f} ms (budget 200): {'ok' if worst <= 200 else 'OVER'}; "
          f"/metrics p95 {m95:.1f} ms (budget 50): {'ok' if m95 <= 50 else 'OVER'}")


if __name__ == "__main__":
    main()
