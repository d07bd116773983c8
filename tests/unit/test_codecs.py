"""zstd record batches with a context kept per thread (streams/codecs.py):
the frames are what aiokafka's own codec reads and writes, aiokafka's record
batches use them once installed, a frame without its content size (a
streaming client's) reads, and each thread has its own context."""

from __future__ import annotations

import threading

import cramjam
import pytest
import zstandard
from aiokafka import codec as upstream
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from streams import codecs

PAYLOAD = b"".join(b'{"message_id":"m%05d","to":["user%d@example.org"],"text":"hello"}' % (i, i)
                   for i in range(40))
ZSTD = 4  # the record batch's codec id


def batch_with(values: list[bytes]) -> bytes:
    b = DefaultRecordBatchBuilder(magic=2, compression_type=ZSTD, is_transactional=0,
                                  producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                  batch_size=1 << 20)
    for i, v in enumerate(values):
        b.append(offset=i, timestamp=1_700_000_000_000 + i, key=b"k%d" % i, value=v, headers=[])
    return bytes(b.build())


def test_frames_are_read_both_ways_with_aiokafkas_codec() -> None:
    ours = codecs.zstd_encode(PAYLOAD)
    assert upstream.zstd_decode(ours) == PAYLOAD
    assert codecs.zstd_decode(upstream.zstd_encode(PAYLOAD)) == PAYLOAD
    assert codecs.zstd_decode(ours) == PAYLOAD
    assert len(ours) < len(PAYLOAD) // 3
    assert codecs.zstd_decode(codecs.zstd_encode(PAYLOAD, level=1)) == PAYLOAD


def test_a_frame_without_its_content_size_reads() -> None:
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(PAYLOAD)
    with pytest.raises(zstandard.ZstdError):
        zstandard.ZstdDecompressor().decompress(streamed)  # why the fallback is there
    assert codecs.zstd_decode(streamed) == PAYLOAD
    assert codecs.zstd_decode(memoryview(bytes(cramjam.zstd.compress(PAYLOAD)))) == PAYLOAD


def test_aiokafkas_record_batches_use_them_once_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    encode, decode = codecs.zstd_encode, codecs.zstd_decode

    def counting_encode(payload: object, level: int | None = None) -> bytes:
        calls.append("encode")
        return encode(payload, level)

    def counting_decode(payload: object) -> bytes:
        calls.append("decode")
        return decode(payload)

    monkeypatch.setattr(codecs, "zstd_encode", counting_encode)
    monkeypatch.setattr(codecs, "zstd_decode", counting_decode)
    import importlib
    saved = {n: (vars(importlib.import_module(n))["zstd_encode"],
                 vars(importlib.import_module(n))["zstd_decode"]) for n in codecs.RECORD_MODULES}
    try:
        codecs.install()
        assert codecs.installed()
        values = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200) for i in range(10)]
        raw = batch_with(values)
        assert calls == ["encode"]
        batch = DefaultRecordBatch(raw)
        assert [r.value for r in batch] == values
        assert calls == ["encode", "decode"]
    finally:
        for n, (enc, dec) in saved.items():
            m = importlib.import_module(n)
            m.zstd_encode = enc
            m.zstd_decode = dec


def test_each_thread_has_its_own_context() -> None:
    seen: dict[str, object] = {}

    def work(name: str) -> None:
        for _ in range(50):
            assert codecs.zstd_decode(codecs.zstd_encode(PAYLOAD)) == PAYLOAD
        seen[name] = codecs._compressor()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in seen.values()}) == 3
    assert codecs._compressor() is codecs._compressor()  # kept for the next batch
