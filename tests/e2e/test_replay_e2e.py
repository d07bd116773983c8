"""Replay every table end to end: one worker running the pipeline
(router, limiter, delivery, status, inbound, bounces, blacklist) delivers
mail to a real SMTP server (aiosmtpd on loopback), is killed with SIGKILL
in the middle and restarted; then ``postlane replay TABLE`` folds each
table's topics from offset 0 with the processors' own functions and must
agree with the live table (its changelog), now and ``--as-of`` a time
between the two halves.
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
from postlane.publisher import Publisher
from postlane.statusview import FINAL_STATES
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings

from .harness import Worker, isolated_settings, settings_env, wait_for
from .test_delivery_e2e import RETRY, Sink, configure, server, sinks, statuses  # noqa: F401

pytestmark = pytest.mark.e2e

PROCESSORS = ("router", "limiter", "delivery", "status", "inbound", "bounces", "blacklist")
TABLES = ("status", "delivery-ledger", "limiter-held", "limiter-mass", "blacklist",
          "inbound-seen", "sent-index", "alias-loops", "sent-threads")


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
    configure(s, server("main", sinks(sink), "a.test"))
    w1 = start(s, tmp_path, 1)
    w2: Worker | None = None

    def all_final(mids: list[str]) -> bool:
        st = statuses(s)
        return all(st.get(m, {}).get("state") in FINAL_STATES for m in mids)

    try:
        first = send(s, 0, 20)
        wait_for(lambda: all_final(first), timeout=120, interval=1.0, what="the first mails")
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
        code, out = replay(s, "delivery-ledger")
        assert set(out["table_rows"]) == set(first + rest)
        code, out = replay(s, "blacklist")
        assert code == 0

        # as of a time between the two halves: only the first mails
        code, out = replay(s, "status", "--as-of", str(between))
        assert code == 0 and out["agree"], out["differences"]
        assert set(out["table_rows"]) == set(first)
        code, out = replay(s, "delivery-ledger", "--as-of", str(between))
        assert code == 0 and out["agree"], out["differences"]
        assert set(out["table_rows"]) == set(first)
    except AssertionError:
        print(w1.log_text()[-3000:])
        if w2 is not None:
            print(w2.log_text()[-3000:])
        raise
    finally:
        w1.stop()
        if w2 is not None:
            w2.stop()


def test_tables_are_known() -> None:
    assert set(TABLES) <= set(replayops.tables())
