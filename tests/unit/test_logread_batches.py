"""``logread._rec_batches`` yields, as ``Rec`` lists per record batch, what
aiokafka's own ``PartitionRecords`` yields as ConsumerRecords for the same
fetched bytes (records before the fetch offset left out, compressed batches,
a key or value None)."""

from __future__ import annotations

from aiokafka.consumer.fetcher import READ_UNCOMMITTED, PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from postlane.logread import Rec, _rec_batches, _recs

TP = TopicPartition("t.status", 3)


def fetched() -> bytes:
    out = b""
    offset = 0
    for codec, n in ((0, 5), (3, 7), (0, 1)):  # 3: lz4, as the pipeline writes
        b = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=0,
                                      producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                      batch_size=1 << 20)
        for i in range(n):
            key = None if i == 1 else f"k{offset + i}".encode()
            value = None if i == 2 else f'{{"n":{offset + i}}}'.encode()
            b.append(offset=i, timestamp=1_700_000_000_000 + offset + i, key=key, value=value,
                     headers=[])
        raw = bytearray(b.build())
        raw[0:8] = offset.to_bytes(8, "big")  # the batch's base offset
        out += bytes(raw)
        offset += n
    return out


def records(fetch_offset: int, batched: bool) -> list[Rec]:
    pr = PartitionRecords(TP, MemoryRecords(fetched()), [], fetch_offset, None, None, True,
                          READ_UNCOMMITTED)
    if batched:
        pr._records_iterator = _rec_batches(pr)
    got = _recs(TP.topic, TP.partition, list(pr))
    assert pr.next_fetch_offset == 13  # where aiokafka fetches next
    return got


def test_batches_are_aiokafkas_records() -> None:
    for fetch_offset in (0, 3, 5, 6, 12):
        want = records(fetch_offset, batched=False)
        got = records(fetch_offset, batched=True)
        assert got == want and got  # (a batch wholly before the fetch offset moves it back:
        # aiokafka's way, kept)
        assert all(type(r) is Rec for r in got)
    assert len(records(3, batched=True)) == 10
    assert records(0, batched=True)[1].key is None and records(0, batched=True)[2].value is None
