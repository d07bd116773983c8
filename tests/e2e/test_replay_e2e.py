"""Replay every table end to end: one worker running the pipeline
(router, limiter, delivery, status, inbound, bounces, blacklist) delivers
mail to a real SMTP server (aiosmtpd on loopback), is killed with SIGKILL
in the middle and restarted; then ``postlane replay TABLE`` folds each
table's topics from offset 0 with the processors' own functions and must
agree with the live table (its changelog), now and ``--as-of`` a time
between the two halves.

The server has a daily limit and a rate, so every mail asks the quota
(``limiter-quota`` rows); at the end the limit is lowered under what was
sent, two more mails are held, and an operator's ``send-now`` and
``cancel`` of them go into the status, ledger, held and quota tables too.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from postlane import replayops
from postlane.cli import main
from postlane.configops import publish_config
from postlane.publisher import Publisher
from postlane.statusview import FINAL_STATES
from schemas import OutgoingServerConfigured
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import DELIVERY, RELEASED, ROUTING_DECIDED, SEND_REQUESTED
from tests.smtp.conftest import HOST

from .harness import Worker, committed_everywhere, isolated_settings, settings_env, wait_for
from .test_delivery_e2e import RETRY, Sink, configure, server, sinks, statuses  # noqa: F401

pytestmark = pytest.mark.e2e

PROCESSORS = ("router", "limiter", "delivery", "status", "inbound", "bounces", "blacklist")
TABLES = ("status", "delivery-ledger", "limiter-held", "limiter-mass", "limiter-quota",
          "blacklist", "inbound-seen", "sent-index", "alias-loops", "sent-threads")


def limited(port: int, daily: int) -> OutgoingServerConfigured:
    """The sink as server ``main`` with a daily limit and a rate (every mail
    asks the quota; the rate is high enough never to make one wait long)."""
    return OutgoingServerConfigured(name="main", host=HOST, port=port, security="none",
                                    from_filter="a.test", priority=10, daily_limit=daily,
                                    rate="200/s")


def start(s: Settings, tmp_path: Path, n: int) -> Worker:
    return Worker(s, *PROCESSORS, log=tmp_path / f"worker{n}.log",
                  extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()


def replay(s: Settings, table: str, *args: str) -> tuple[int, dict[str, Any]]:
    env = settings_env(s)
    result = CliRunner().invoke(main, ["replay", table, "--json", *args], env=env)
    try:
        data = orjson.loads(result.output)
    except orjson.JSONDecodeError:
        raise AssertionError(f"replay {table}: {result.output}\n{result.exception!r}") from None
    return result.exit_code, data


def send(s: Settings, start_: int, stop: int) -> list[str]:
    with Publisher(settings=s) as pub:
        return [pub.send(from_="app@a.test",
                         to=[f"user{i}@dest.test"] + (["nobody@dest.test"] if i % 5 == 0
                                                      else []),
                         subject=f"mail {i}", text=f"body {i}") for i in range(start_, stop)]


def test_every_table_replays_equal_to_the_live_one_after_a_kill_restart(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:

    s = isolated_settings(broker.port, tmp_path / "data", **RETRY)
    ensure_topics(s)
    sink = Sink(data_delay=0.002)
    sink.rcpt_replies["nobody@dest.test"] = ["550 5.1.1 <nobody@dest.test>: no such user"] * 100
    port = sinks(sink)
    configure(s, limited(port, 1000))
    w1 = start(s, tmp_path, 1)
    w2: Worker | None = None

    def all_final(mids: list[str]) -> bool:
        st = statuses(s)
        return all(st.get(m, {}).get("state") in FINAL_STATES for m in mids)

    try:
        first = send(s, 0, 20)
        wait_for(lambda: all_final(first), timeout=120, interval=1.0, what="the first mails")
        # the group committed on every partition before the kill (a worker
        # killed before its first commit on a partition loses that input on
        # restart: a Faust issue, README "Known limits")
        # (limits apply here: every mail goes through the limiter's release)
        wait_for(lambda: committed_everywhere(
                     s, PROCESSORS, (SEND_REQUESTED, ROUTING_DECIDED, RELEASED, DELIVERY)),
                 timeout=30, what="the group's first commit")
        time.sleep(2.0)  # the tables' writes after the last status change
        between = time.time()
        time.sleep(1.0)
        rest = send(s, 20, 60)
        wait_for(lambda: len(sink.messages) >= 25, timeout=60, what="some of the rest")
        w1.kill()
        time.sleep(s.tuned().session_timeout + 1)  # the dead member's session ends
        w2 = start(s, tmp_path, 2)
        wait_for(lambda: all_final(first + rest), timeout=120, interval=1.0,
                 what="every mail final")
        # ops commands go into the tables too: retry the mail whose nobody@ failed
        # (delivery applies it: attempt 2, failed again), then acknowledge it
        env = settings_env(s)
        retried = first[0]
        result = CliRunner().invoke(main, ["retry", retried], env=env)
        assert result.exit_code == 0, result.output
        wait_for(lambda: statuses(s).get(retried, {}).get("attempt") == 2
                 and statuses(s)[retried].get("state") in FINAL_STATES,
                 timeout=60, what="the retried mail's second attempt")
        result = CliRunner().invoke(main, ["ack", retried], env=env)
        assert result.exit_code in (0, 1), result.output  # applied, or refused in words
        acked = result.exit_code == 0
        # the limit lowered under what went today: two more mails are held
        # (deferred, daily limit); one is sent now, the other cancelled
        lowered = limited(port, 1)
        publish_config(s, [(lowered.key, lowered)])
        time.sleep(2.0)  # the limiter's and the quota's config view
        held_now, held_cancel = send(s, 61, 63)  # no nobody@ among them
        wait_for(lambda: all(statuses(s).get(m, {}).get("state") == "deferred"
                             for m in (held_now, held_cancel)),
                 timeout=60, what="the two mails held by the daily limit")
        for what, mid in (("send-now", held_now), ("cancel", held_cancel)):
            result = CliRunner().invoke(main, [what, mid], env=env)
            assert result.exit_code == 0, result.output
        wait_for(lambda: statuses(s).get(held_now, {}).get("state") == "sent"
                 and statuses(s).get(held_cancel, {}).get("state") == "cancelled",
                 timeout=60, what="the sent-now mail sent, the other cancelled")
        time.sleep(3.0)  # the last table writes (status batches, limiter prune)

        for table in TABLES:
            code, out = replay(s, table)
            assert out["live_table"], f"{table}: no live table found"
            assert code == 0 and out["agree"], "\n".join([table, *out["differences"][:4]])
        # the tables with rows for every mail have them all
        code, out = replay(s, "status")
        assert set(out["table_rows"]) >= set(first + rest)
        assert out["table_rows"][first[0]]["recipients"]["nobody@dest.test"]["state"] \
            == "failed"
        assert out["table_rows"][retried]["acknowledged"] is acked
        assert out["table_rows"][held_now]["state"] == "sent"
        assert out["table_rows"][held_cancel]["state"] == "cancelled"
        code, out = replay(s, "delivery-ledger")
        assert set(first + rest + [held_now]) <= set(out["table_rows"])
        assert out["table_rows"][retried]["attempt"] == 2
        assert len(out["table_rows"][retried]["commands"]) == 1
        code, out = replay(s, "limiter-held")
        assert out["table_rows"][held_now]["state"] == "released"
        assert out["table_rows"][held_cancel]["state"] == "cancelled"
        code, out = replay(s, "limiter-quota")
        grants = {a: g for rows in out["table_rows"].values() for a, g in rows.items()}
        by_mail = {g["message_id"] for g in grants.values()}
        assert set(first + rest + [held_now]) <= by_mail, "a sent mail without its grant"
        assert held_cancel not in by_mail  # held: never granted
        assert any(g["force"] for g in grants.values() if g["message_id"] == held_now)
        assert all(g["daily"] == ["server:main"] for g in grants.values())
        code, out = replay(s, "blacklist")
        assert code == 0

        # as of a time between the two halves: only the first mails
        code, out = replay(s, "status", "--as-of", str(between))
        assert code == 0 and out["agree"], out["differences"]
        assert set(out["table_rows"]) == set(first)
        code, out = replay(s, "delivery-ledger", "--as-of", str(between))
        assert code == 0 and out["agree"], out["differences"]
        assert set(out["table_rows"]) == set(first)

        # an export read back with pyarrow: one row per event of the topics
        check_export(s, tmp_path)
        # the deliverability report counts what the sink saw
        result = CliRunner().invoke(main, ["report", "deliverability", "--by", "server",
                                           "--json", "--plot", str(tmp_path / "r.png")],
                                    env=settings_env(s))
        assert result.exit_code == 0, result.output
        rep = orjson.loads(result.output)
        total = rep["total"]
        assert total["sent"] == len(first + rest) + 1  # each user<i> once, the sent-now
        assert total["failed"] == 12  # nobody@ on every fifth mail: 550 (the retry's once)
        assert total["hard_bounces"] == 13  # the 5xx answers are bounces (and the retry's)
        assert total["latency_p50"] is not None and total["latency_p50"] > 0
        assert [r["group"] for r in rep["rows"]] == ["main"]
        assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    except AssertionError:
        print(w1.log_text()[-3000:])
        if w2 is not None:
            print(w2.log_text()[-3000:])
        raise
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()


def check_export(s: Settings, tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from postlane.logread import read_all

    expected = len(read_all(s, [s.topic("delivery"), s.topic("status")]))
    env = settings_env(s)
    out = tmp_path / "x.parquet"
    result = CliRunner().invoke(main, ["export", "delivery", "status", "--format", "parquet",
                                       "--out", str(out), "--json"], env=env)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == expected
    assert table.column("_invalid").null_count == expected
    assert set(table.column("type").to_pylist()) == {
        "DeliveryStarted", "DeliveryAttempted", "MessageStatusChanged"}
    assert str(table.schema.field("attempt").type) == "int64"
    assert str(table.schema.field("recipients").type) == "string"  # two types: JSON text
    assert str(table.schema.field("occurred_at").type) == "double"
    ids = table.column("event_id").to_pylist()
    assert len(ids) == expected and all(ids)
    csv_out = tmp_path / "x.csv"
    result = CliRunner().invoke(main, ["export", "delivery", "status", "--format", "csv",
                                       "--out", str(csv_out)], env=env)
    assert result.exit_code == 0, result.output
    assert pacsv.read_csv(csv_out).num_rows == expected
    jl = tmp_path / "x.jsonl"
    result = CliRunner().invoke(main, ["export", "delivery", "--format", "jsonl", "--out",
                                       str(jl), "--jobs", "2"], env=env)
    assert result.exit_code == 0, result.output
    lines = jl.read_bytes().splitlines()
    assert len(lines) == len(read_all(s, [s.topic("delivery")]))
    assert all(orjson.loads(line)["_topic"] == "delivery" for line in lines)


def test_tables_are_known() -> None:
    assert set(TABLES) <= set(replayops.tables())
