"""Delivery reads a mail's decision back from the record its first attempt
came from (``processors/delivery/claim.py``), on the real broker: records
written in one producer batch, read by the offset of one in the middle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from processors.delivery import claim, core
from schemas import MailReleased, RoutingDecided, SendRequested, encode
from streams.client import ensure_topics, producer
from streams.embedded import EmbeddedBroker
from streams.topics import RELEASED, ROUTING_DECIDED

from .harness import isolated_settings


def decision(i: int) -> RoutingDecided:
    req = SendRequested(message_id=f"m{i}", from_="app@a.test", to=[f"u{i}@dest.test"],
                        subject=f"mail {i}", text=f"body {i}\n" * 50)
    return RoutingDecided(message_id=f"m{i}", outcome="routed", server="main",
                          header_from="app@a.test", envelope_from="bounce@a.test",
                          rule="first_server", request=req.to_representation(), direct=True)


def test_a_request_is_read_back_by_its_offset(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    p = producer(s)
    decided, released = ROUTING_DECIDED.full(s), RELEASED.full(s)
    try:
        # sent without waiting in between: several share a producer batch
        futures = [p.send(decided, key=f"m{i}".encode(), value=encode(decision(i)), partition=1)
                   for i in range(10)]
        offsets = [f.get(15).offset for f in futures]
        rel = MailReleased(message_id="m3", lane="transactional",
                           decision=decision(3).to_representation())
        rel_offset = p.send(released, key=b"m3", value=encode(rel), partition=0).get(15).offset
    finally:
        p.close()

    async def run() -> None:
        reader = claim.RequestReader(s, timeout=3.0)
        try:
            got = await reader.decision("m6", core.body_at(decided, 1, offsets[6]))
            assert got.message_id == "m6" and got.request["text"] == "body 6\n" * 50
            got = await reader.decision("m2", core.body_at(decided, 1, offsets[2]))  # backwards
            assert got.request["subject"] == "mail 2"
            got = await reader.decision("m3", core.body_at(released, 0, rel_offset))
            assert got.request["to"] == ["u3@dest.test"] and got.header_from == "app@a.test"
            assert reader.reads == 3
            with pytest.raises(claim.RequestUnreadable, match="not this mail's decision"):
                await reader.decision("m7", core.body_at(decided, 1, offsets[6]))
            with pytest.raises(claim.RequestUnreadable, match="no record within"):
                await reader.decision("m6", core.body_at(decided, 1, offsets[-1] + 5))
        finally:
            await reader.close()

    asyncio.run(run())
