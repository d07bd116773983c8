"""Bad input through the real broker (issue 20): nothing lost silently.

- A send request larger than the pipeline can carry (here 3 MB against a
  1 MiB ``max_request_bytes``; the same as 20 MB against the default 16 MiB)
  is dead-lettered by the router with a bounded excerpt, and its status says
  ``rejected`` with the reason. Before: the router crashed writing a dead
  letter as large as the input, restarted, and the record was gone.
- An unreadable request whose message id can be read is ``rejected`` too.
- A valid SendRequested without ``type`` (optional in the exported JSON
  Schema) is delivered and its status is ``sent``: status reads it as the
  router does. Before: status dead-lettered every such record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from postlane.statusview import wait_final
from schemas import EventDeadLettered, SendRequested
from schemas.deadletter import EXCERPT_BYTES
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker
from streams.topics import DEAD_LETTER, SEND_REQUESTED

from .harness import isolated_settings, read_events
from .test_delivery_e2e import Sink, sinks  # noqa: F401 - the fixture
from .test_limiter_e2e import RETRY, configure, start

pytestmark = pytest.mark.e2e

LIMIT = 1024 * 1024


def test_oversized_unreadable_and_untyped_requests(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    s = isolated_settings(broker.port, tmp_path / "data", partitions=1, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink))
    worker = start(s, tmp_path, 1, POSTLANE_MAX_REQUEST_BYTES=str(LIMIT))
    raw = KafkaProducer(bootstrap_servers=s.bootstrap, max_request_size=8 * LIMIT)
    try:
        def request(mid: str, text: str = "hello") -> dict[str, Any]:
            event = SendRequested(message_id=mid, from_="app@a.test", to=[f"{mid}@dest.test"],
                                  subject=mid, text=text)
            return dict(event.to_representation())

        big = request("big", text="x" * (3 * LIMIT))
        untyped = request("untyped")
        del untyped["type"]
        broken = request("broken")
        broken["to"] = "not-a-list"
        topic = SEND_REQUESTED.full(s)
        for value in (big, broken, untyped):
            raw.send(topic, key=value["message_id"].encode(), value=orjson.dumps(value)).get(30)
        raw.send(topic, key=b"garbage", value=b"\xff{not json" * 10_000).get(30)

        rejected = wait_final(s, "big", timeout=60)
        assert rejected is not None and rejected["state"] == "rejected", rejected
        assert "over the" in rejected["reason"] and "send a link" in rejected["reason"]
        bad = wait_final(s, "broken", timeout=30)
        assert bad is not None and bad["state"] == "rejected", bad
        assert "to" in bad["reason"]
        sent = wait_final(s, "untyped", timeout=30)
        assert sent is not None and sent["state"] == "sent", sent
        assert [m.rcpt_tos for m in sink.messages] == [["untyped@dest.test"]]

        time.sleep(1)
        dead = {e.key: e for _, e in read_events(s, DEAD_LETTER,
                                                   {"EventDeadLettered": EventDeadLettered})
                if isinstance(e, EventDeadLettered)}
        assert set(dead) == {"big", "broken", "garbage"}, {k: (d.processor, d.error)
                                                           for k, d in dead.items()}
        assert dead["big"].processor == "router" and dead["big"].truncated
        assert dead["big"].value_bytes == len(orjson.dumps(big))
        assert len(dead["big"].value.encode()) <= EXCERPT_BYTES
        assert dead["garbage"].value_b64 and dead["garbage"].value_bytes == 100_000
        assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
        assert "MessageSizeTooLarge" not in worker.log_text()
    finally:
        raw.close()
        worker.stop()


def test_send_wait_that_times_out_still_prints_the_id(broker: EmbeddedBroker,
                                                      tmp_path: Path) -> None:
    from click.testing import CliRunner

    from postlane.cli import main

    from .harness import settings_env

    s = isolated_settings(broker.port, tmp_path / "data", partitions=1)
    ensure_topics(s)
    env = {k: v for k, v in settings_env(s).items() if k.startswith("POSTLANE_")}
    out = CliRunner().invoke(main, ["send", "--from", "a@a.test", "--to", "b@b.test",
                                    "--subject", "s", "--text", "t", "--wait",
                                    "--timeout", "1"], env=env)
    assert out.exit_code == 4, out.output
    mid = out.stdout.strip()
    assert mid and "\n" not in mid, out.stdout
    assert f"{mid}: no final status within 1s" in out.stderr
    assert f"postlane status {mid}" in out.stderr
