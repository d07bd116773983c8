"""zstd record batches with a context kept per thread (streams/codecs.py):
the frames are what aiokafka's own codec reads and writes, aiokafka's record
batches use them once installed (``upstream_patches.install_zstd_codec``,
the one entry point, undone by ``disabled``), a frame without its content size (a
streaming client's) reads, and each thread has its own context."""

from __future__ import annotations

import importlib
import threading

import cramjam
import pytest
import zstandard
from aiokafka import codec as upstream
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from streams import codecs, upstream_patches
from streams.upstream_patches import install_zstd_codec

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


def record_module_codecs() -> dict[str, tuple[object, object]]:
    return {n: (vars(importlib.import_module(n))["zstd_encode"],
                vars(importlib.import_module(n))["zstd_decode"]) for n in codecs.RECORD_MODULES}


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
    saved = record_module_codecs()
    try:
        install_zstd_codec()
        assert set(record_module_codecs().values()) == {(counting_encode, counting_decode)}
        values = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * 200) for i in range(10)]
        raw = batch_with(values)
        assert calls == ["encode"]
        batch = DefaultRecordBatch(raw)
        assert [r.value for r in batch] == values
        assert calls == ["encode", "decode"]
    finally:
        for n, (enc, dec) in saved.items():
            m = importlib.import_module(n)
            m.zstd_encode = enc  # type: ignore[attr-defined]
            m.zstd_decode = dec  # type: ignore[attr-defined]


def test_the_log_readers_install_is_the_patch_and_is_undone_with_it() -> None:
    """The log readers (postlane.logread) and the workers install the codec
    the same way: ``disabled`` puts aiokafka's own functions back after
    either, and the install does nothing while the fix is off."""
    install_zstd_codec()  # as postlane.logread does
    ours = {n: (codecs.zstd_encode, codecs.zstd_decode) for n in codecs.RECORD_MODULES}
    upstream_fns = {n: (upstream.zstd_encode, upstream.zstd_decode)
                    for n in codecs.RECORD_MODULES}
    assert record_module_codecs() == ours
    with upstream_patches.disabled(upstream_patches.ZSTD_FIX):
        assert record_module_codecs() == upstream_fns
        install_zstd_codec()
        assert record_module_codecs() == upstream_fns
    assert record_module_codecs() == ours


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
