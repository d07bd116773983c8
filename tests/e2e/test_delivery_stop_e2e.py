"""What delivery closes when its worker stops (``processors/delivery/agent.py``,
``close``): the SMTP pool's sessions get a QUIT, and the claim reader's
consumer (``processors/delivery/claim.py``) is stopped. The delivery app runs
in this process on the real broker, as a worker runs it, and is stopped as a
worker stops it (``app.stop()``); the SMTP server is aiosmtpd on loopback.
``tests/e2e/test_delivery_claim_e2e.py`` checks the same through a
``postlane worker`` process stopped with SIGTERM.

Also: between reads the claim reader's consumer sends no fetches (an
assigned partition was long-polled ~10 times a second, for good)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import ConsumerStoppedError
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from processors.delivery import agent, claim, core
from processors.delivery.pool import deliver
from processors.registry import registrar
from processors.runtime import make_runtime
from schemas import encode
from streams.app import create_app
from streams.client import ensure_topics, producer
from streams.embedded import EmbeddedBroker, free_port
from streams.topics import ROUTING_DECIDED
from tests.smtp.conftest import HOST, Recorder

from .harness import isolated_settings
from .test_delivery_claim_e2e import decision
from .test_delivery_e2e import server

pytestmark = pytest.mark.e2e


class QuitSeen(Recorder):
    """The tests' recorder, also counting QUITs."""

    def __init__(self) -> None:
        super().__init__()
        self.quits = 0

    async def handle_QUIT(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"


def fetches_counted(consumer: Any) -> dict[str, int]:
    """Counts the fetch requests ``consumer``'s client sends from now on."""
    seen = {"fetches": 0}
    client = consumer._client
    send = client.send

    async def counting(node_id: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("FetchRequest"):
            seen["fetches"] += 1
        return await send(node_id, request, *args, **kwargs)

    client.send = counting
    return seen


async def test_a_stopped_delivery_worker_quits_smtp_and_stops_its_claim_consumer(
        broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    decided = ROUTING_DECIDED.full(s)
    p = producer(s)
    try:
        offset = p.send(decided, key=b"m1", value=encode(decision(1)), partition=0).get(15).offset
    finally:
        p.close()

    made: dict[str, Any] = {}

    class KeptReader(claim.DecisionReader):
        """The real reader, kept where the test can use it."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made["reader"] = self

    class KeptSender(agent.Sender):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made["sender"] = self

    monkeypatch.setattr(claim, "DecisionReader", KeptReader)
    monkeypatch.setattr(agent, "Sender", KeptSender)
    app = create_app("delivery", s)
    registrar("delivery")(make_runtime(app, s))
    handler = QuitSeen()
    port = free_port()
    smtp = Controller(handler, hostname=HOST, port=port, server_hostname="mx.test",
                      ready_timeout=5.0)
    smtp.start()
    try:
        await app.start()
        try:
            reader, pool = made["reader"], made["sender"].pool
            got = await reader.decision("m1", core.body_at(decided, 0, offset))
            assert got.message_id == "m1"
            consumer = reader.consumer
            assert consumer is not None
            seen = fetches_counted(consumer)
            await asyncio.sleep(1.0)
            assert seen["fetches"] == 0, "the claim consumer fetches while no read is on"
            for i in range(2):  # one session, reused
                sent = await deliver(pool, server("main", port, "a.test"), "bounce@a.test",
                                     ["u@dest.test"], b"Subject: %d\r\n\r\nhello\r\n" % i)
                assert [o.status for o in sent.outcomes] == ["accepted"], sent
            assert len(handler.messages) == 2 and handler.quits == 0
        finally:
            await app.stop()
        assert handler.quits == 1, "the pool's session got no QUIT at the stop"
        assert reader.consumer is None
        t0 = time.monotonic()
        with pytest.raises(ConsumerStoppedError):
            await asyncio.wait_for(consumer.getone(), 5)  # a running one would wait
        assert time.monotonic() - t0 < 5
    finally:
        smtp.stop()
