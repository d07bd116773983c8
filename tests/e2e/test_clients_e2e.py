"""Clients in other languages publish to the embedded broker (issue 20).

A SendRequested published with librdkafka (confluent-kafka from PyPI, C) and
one published with kafkajs (Node, installed by scripts/setup when node is
present) are delivered to a real SMTP server and their status is ``sent``.
Neither sets ``type``: the exported JSON Schema leaves it optional.

librdkafka 2.0 (Debian 12's kcat 1.7) cannot talk to the embedded broker
(``ApiVersionRequest failed: Read underflow``); the README says which
versions work.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from postlane.statusview import wait_final
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker
from streams.topics import SEND_REQUESTED

from .harness import isolated_settings
from .test_delivery_e2e import Sink, sinks  # noqa: F401 - the fixture
from .test_limiter_e2e import RETRY, configure, start

pytestmark = pytest.mark.e2e

NODE_CLIENT = Path(__file__).parent.parent / "clients" / "node"


def test_librdkafka_and_kafkajs_publishers_are_delivered(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any  # noqa: F811
) -> None:
    from confluent_kafka import Producer, libversion

    s = isolated_settings(broker.port, tmp_path / "data", partitions=1, **RETRY)
    ensure_topics(s)
    sink = Sink()
    configure(s, sinks(sink))
    worker = start(s, tmp_path, 1)
    try:
        producer = Producer({"bootstrap.servers": s.bootstrap, "acks": "all",
                             "enable.idempotence": False})
        request = {"message_id": "from-librdkafka", "from_": "c@a.test",
                   "to": ["c@dest.test"], "subject": f"librdkafka {libversion()[0]}",
                   "text": "published by librdkafka"}
        errors: list[Any] = []
        producer.produce(SEND_REQUESTED.full(s), key=b"from-librdkafka",
                         value=orjson.dumps(request),
                         on_delivery=lambda err, msg: errors.append(err))
        assert producer.flush(30) == 0 and errors == [None], errors
        done = wait_final(s, "from-librdkafka", timeout=60)
        assert done is not None and done["state"] == "sent", done

        node = shutil.which("node")
        if node is None:
            return  # kafkajs is proven where node is installed (scripts/setup)
        assert (NODE_CLIENT / "node_modules" / "kafkajs").is_dir(), \
            "node is installed but kafkajs is not: run scripts/setup"
        out = subprocess.run([node, "send.js", s.bootstrap, SEND_REQUESTED.full(s),
                              "from-kafkajs", "k@dest.test"], cwd=NODE_CLIENT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        done = wait_final(s, "from-kafkajs", timeout=60)
        assert done is not None and done["state"] == "sent", done
        assert sorted(m.rcpt_tos[0] for m in sink.messages) == ["c@dest.test", "k@dest.test"]
    finally:
        worker.stop()
