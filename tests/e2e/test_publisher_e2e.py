"""The Publisher (librdkafka underneath) against the embedded broker: what it
promises services.

- the id comes back once the broker has the record, from several threads at
  once, each record once, on the partition the workers' murmur2 partitioner
  gives its key (the status table is co-partitioned by message id with
  send-requested), the mass lane on its own topic;
- each codec of ``POSTLANE_PRODUCER_COMPRESSION`` is the codec of the
  stored batches, and a small and a 3 MiB request read back intact by the
  workers' client (aiokafka);
- no broker, or a broker gone: PublishError in words, within the timeout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from postlane.publisher import Publisher, PublishError, message_id_for
from schemas import InvalidEvent, SendRequested, decode
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.partitioning import partition_for
from streams.settings import Settings
from streams.topics import SEND_REQUESTED, SEND_REQUESTED_MASS

from .harness import isolated_settings

pytestmark = pytest.mark.e2e


def read_back(s: Settings, topic: str, count: int,
              timeout: float = 30.0) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of the first ``count`` records of ``topic``,
    read with aiokafka as the workers read (it decompresses every codec)."""
    async def run() -> list[tuple[int, bytes, bytes]]:
        c = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100,
                             max_partition_fetch_bytes=32 * 1024 * 1024)
        await c.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(s.partitions)]
            c.assign(tps)
            await c.seek_to_beginning(*tps)
            out: list[tuple[int, bytes, bytes]] = []
            deadline = time.monotonic() + timeout
            while len(out) < count and time.monotonic() < deadline:
                batch = await c.getmany(timeout_ms=200)
                for recs in batch.values():
                    out += [(r.partition, r.key or b"", r.value or b"") for r in recs]
            return out
        finally:
            await c.stop()
    return asyncio.run(run())


CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}  # batch attributes' bits


def batch_codecs(s: Settings, topic: str) -> list[int]:
    """The codec of every record batch stored on ``topic`` (the broker keeps
    them as the producer wrote them), seen as kafka-python parses them."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP
    from kafka.errors import UnsupportedCodecError
    from kafka.record import default_records

    seen: list[int] = []
    parse = default_records.DefaultRecordBatch.__init__

    def spy(batch: default_records.DefaultRecordBatch, buffer: bytes) -> None:
        parse(batch, buffer)
        seen.append(batch.compression_type)

    c = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None, enable_auto_commit=False)
    default_records.DefaultRecordBatch.__init__ = spy  # type: ignore[method-assign]
    try:
        tps = [KTP(topic, p) for p in range(s.partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            try:
                c.poll(timeout_ms=200)
            except UnsupportedCodecError:
                pass  # zstd: kafka-python has no codec here; the batch was seen
    finally:
        default_records.DefaultRecordBatch.__init__ = parse  # type: ignore[method-assign]
        c.close()
    return seen


def test_ids_come_back_acknowledged_once_each_on_the_murmur2_partition(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path, partitions=4)
    ensure_topics(s)
    ids: list[list[str]] = [[] for _ in range(4)]

    with Publisher(settings=s) as pub:
        def run(k: int) -> None:
            for i in range(50):
                ids[k].append(pub.send(from_="app@a.test", to=[f"r{i}@b.test"],
                                       subject=f"thread {k} mail {i}", text="hello"))
        threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mass = pub.send(from_="app@a.test", to=["m@b.test"], kind="mass",
                        list_id="news", campaign="c1", text="news")
        first, again = (pub.send(from_="app@a.test", to=["x@b.test"], text="invoice",
                                 idempotency_key="invoice-42", tenant="shop") for _ in "12")

    published = [m for chunk in ids for m in chunk]
    assert len(published) == 200 and all(len(chunk) == 50 for chunk in ids)
    assert first == again == message_id_for("invoice-42", "shop")
    recs = read_back(s, SEND_REQUESTED.full(s), 202)
    keys = [k.decode() for _, k, _ in recs]
    assert sorted(keys) == sorted([*published, first, again])
    assert {p for p, _, _ in recs} == {0, 1, 2, 3}  # 200 keys: every partition holds some
    off = [(k, p) for p, k, _ in recs if p != partition_for(k, 4)]
    assert off == [], f"records off the workers' murmur2 partition: {off[:5]}"
    for _, key, value in recs:
        assert decode(SendRequested, value).message_id == key.decode()
    mass_recs = read_back(s, SEND_REQUESTED_MASS.full(s), 1)
    assert [(k.decode(), decode(SendRequested, v).list_id) for _, k, v in mass_recs] == \
        [(mass, "news")]


@pytest.mark.parametrize("codec", ["lz4", "zstd", "gzip", "none"])
def test_each_codec_and_a_large_request_read_back_intact(
        broker: EmbeddedBroker, tmp_path: Path, codec: str) -> None:
    s = isolated_settings(broker.port, tmp_path, partitions=2, producer_compression=codec)
    ensure_topics(s)
    big = "0123456789abcdef" * (3 * 1024 * 1024 // 16)  # 3 MiB of text
    with Publisher(settings=s) as pub:
        small = pub.send(from_="app@a.test", to=["r@b.test"], text="hello " * 50)
        large = pub.send(from_="app@a.test", to=["r@b.test"], text=big)
    got = {k.decode(): decode(SendRequested, v) for _, k, v in
           read_back(s, SEND_REQUESTED.full(s), 2)}
    assert got[small].text == "hello " * 50
    assert got[large].text == big
    codecs = batch_codecs(s, SEND_REQUESTED.full(s))
    assert codecs and set(codecs) == {CODECS[codec]}, codecs


def test_an_oversize_request_is_refused_before_publishing(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path, partitions=1)
    ensure_topics(s)
    with Publisher(settings=s, max_message_bytes=10_000) as pub:
        with pytest.raises(InvalidEvent) as exc:
            pub.send(from_="app@a.test", to=["r@b.test"], text="x" * 20_000)
        assert "over the limit of 10000" in str(exc.value)


def test_no_broker_is_a_publish_error_in_words() -> None:
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(PublishError) as exc:
        Publisher(f"127.0.0.1:{port}", settings=Settings.from_env(environ={}),
                  connect_timeout=2.0)
    assert time.monotonic() - t0 < 10
    assert f"no Kafka broker at 127.0.0.1:{port} within 2 s" in str(exc.value)
    assert "Connection refused" in str(exc.value)  # the client's own words
    assert "nothing was published" in str(exc.value)


def test_postlane_send_without_a_broker_says_so_in_seconds(tmp_path: Path) -> None:
    """``postlane send`` with nothing listening at the broker's port: exit
    code 3 and the Publisher's error (where it tried, what to do) within
    seconds. It took ~31 s when kafka-python's topic check (ensure_topics)
    ran first and waited out its 30 s bootstrap. The bound is generous: a
    correctness guard, not a speed measure."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTLANE_")}
    env.update(POSTLANE_EMBEDDED_PORT=str(port), POSTLANE_DATA_DIR=str(tmp_path))
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "postlane", "send", "--from", "app@a.test", "--to",
         "r@b.test", "--subject", "hi", "--text", "hello"],
        env=env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert done.returncode == 3, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""  # no message id: nothing was published
    err = done.stderr
    assert f"no Kafka broker at 127.0.0.1:{port} within 5 s" in err, err
    assert "Connection refused" in err and "nothing was published" in err, err
    assert "postlane broker" in err and "POSTLANE_BROKER" in err, err  # what to do
    assert err.count("\n") == 1, err  # the one line, not the client's log lines
    assert took < 15, f"took {took:.1f} s to say there is no broker"


@pytest.mark.parametrize("wait,delivery", [(2.0, 30.0), (30.0, 2.0)])
def test_a_broker_gone_is_a_publish_error_within_the_timeout(
        tmp_path: Path, wait: float, delivery: float) -> None:
    """The caller's ``timeout`` (2 s) or the client's ``delivery_timeout``
    (2 s), whichever comes first, ends the wait with a PublishError."""
    s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=str(tmp_path),
                          partitions=1)
    b = EmbeddedBroker(s, log_path=tmp_path / "tansu.log").start()
    try:
        ensure_topics(s)
        pub = Publisher(settings=s, delivery_timeout=delivery)
        assert pub.send(from_="app@a.test", to=["r@b.test"], text="before")
    finally:
        b.stop()
    try:
        event = pub.build(from_="app@a.test", to=["r@b.test"], text="after")
        t0 = time.monotonic()
        with pytest.raises(PublishError) as exc:
            pub.publish(event, timeout=wait)
        took = time.monotonic() - t0
        assert 1.5 < took < 6, took
        text = str(exc.value)
        assert event.message_id in text
        if wait < delivery:
            assert f"no acknowledgement from the broker at {s.bootstrap} within 2 s" in text
        else:
            assert "timed out" in text.lower()
    finally:
        pub.close(timeout=1)
