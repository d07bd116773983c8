"""zstd record batches without a new compression context per batch.

aiokafka 0.14.0 compresses and decompresses zstd record batches with
``cramjam.zstd.compress`` / ``decompress``, which make a new zstd context
for every call: ~24 us to compress and ~18 us to decompress a 2.7 KB batch
of the pipeline's records, where the same work with a context kept for the
next batch takes ~6 and ~2.5 us (``zstandard``, measured on this machine;
lz4 as aiokafka runs it, level 9, takes ~9 and ~5 us). Batches here are
small (a few records: one produce request per round trip), so the context
was most of the cost, and zstd, which keeps ~20% less broker memory per
mail than lz4 (bench/README.md), cost more CPU than lz4.

``zstd_encode`` / ``zstd_decode`` keep one ``zstandard`` compressor and one
decompressor per thread (they are not safe to share between threads, and
Faust's consumer runs in a thread of its own). The frames are standard
zstd frames, read by any Kafka client. A frame without its content size in
the header (some clients stream their batches) is read with a streaming
decompressor. ``streams.upstream_patches.install_zstd_codec`` puts them
where aiokafka's record batches call the codec (``RECORD_MODULES``): the
one entry point, for the workers (the patch
``fix_zstd_context_made_per_batch``) and the log readers
(``postlane.logread``).
"""

from __future__ import annotations

import threading
from typing import Any

import zstandard

LEVEL = 3  # what aiokafka uses (Kafka's default, KIP-390)

_local = threading.local()

# where aiokafka's record batches look the codec functions up (module globals)
RECORD_MODULES = ("aiokafka.record._crecords.default_records", "aiokafka.record.default_records")


def _compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = zstandard.ZstdCompressor(level=LEVEL)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def zstd_encode(payload: Any, level: int | None = None) -> bytes:
    """One zstd frame of ``payload`` (aiokafka's ``zstd_encode`` signature;
    a ``level`` other than ours gets a compressor of its own)."""
    if level is not None and level != LEVEL:
        return zstandard.ZstdCompressor(level=level).compress(bytes(payload))
    return _compressor().compress(bytes(payload))


def zstd_decode(payload: Any) -> bytes:
    """The bytes of the zstd frame ``payload``."""
    data = bytes(payload)
    d = _decompressor()
    try:
        return d.decompress(data)
    except zstandard.ZstdError:
        # no content size in the frame header: read it as a stream
        return d.decompressobj().decompress(data)
