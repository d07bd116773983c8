"""Export rows: typed columns, one per field, read back with pyarrow."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from postlane import exportops
from postlane.logread import Rec
from schemas import DeliveryAttempted, DeliveryStarted, encode
from streams.settings import Settings

S = Settings.from_env(environ={}, topic_prefix="t.")


def recs() -> list[Rec]:
    started = DeliveryStarted(message_id="m-1", attempt=1, server="main", recipients=["a@x.test"])
    attempted = DeliveryAttempted(
        message_id="m-1", attempt=1, server="main", duration=0.25,
        outcomes=[{"recipient": "a@x.test", "status": "accepted", "code": 250}])
    return [Rec("t.delivery", 0, 0, 1_700_000_000_000, b"m-1", encode(started)),
            Rec("t.delivery", 0, 1, 1_700_000_000_500, b"m-1", encode(attempted)),
            Rec("t.delivery", 1, 0, 1_700_000_001_000, b"x", b"not json"),
            Rec("t.delivery", 1, 1, 1_700_000_001_500, b"y",
                orjson.dumps({"type": "DeliveryStarted", "message_id": "m-2", "attempt": "one",
                              "server": "main", "recipients": ["b@x.test"]}))]


def table(fmt: str = "parquet") -> pa.Table:
    cols = exportops.Columns.of(["delivery"], fmt)
    return exportops.rows_to_table(recs(), cols, {"t.delivery": "delivery"}, {})


def test_rows_are_typed_and_in_order() -> None:
    t = table()
    assert t.num_rows == 4
    assert t.column("_offset").to_pylist() == [0, 1, 0, 1]
    assert t.column("type").to_pylist() == ["DeliveryStarted", "DeliveryAttempted", None,
                                            "DeliveryStarted"]
    assert t.schema.field("attempt").type == pa.int64()
    assert t.schema.field("duration").type == pa.float64()
    assert t.schema.field("recipients").type == pa.list_(pa.string())
    assert t.schema.field("outcomes").type == pa.string()  # JSON text
    assert orjson.loads(t.column("outcomes")[1].as_py())[0]["code"] == 250
    assert t.column("recipients")[0].as_py() == ["a@x.test"]
    assert t.column("_invalid")[2].as_py().startswith("not JSON")
    # a wrong type from a foreign publisher is null in its typed column, not a crash
    assert t.column("attempt").to_pylist() == [1, 1, None, None]
    assert str(t.column("_timestamp")[0].as_py()).startswith("2023-11-14 22:13:20")


def test_parquet_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "d.parquet"
    w = pq.ParquetWriter(str(out), table().schema)
    w.write_table(table())
    w.close()
    back = pq.read_table(out)
    assert back.num_rows == 4 and back.schema == table().schema


def test_csv_columns_have_lists_as_json_text() -> None:
    t = table("csv")
    assert t.schema.field("recipients").type == pa.string()
    assert orjson.loads(t.column("recipients")[0].as_py()) == ["a@x.test"]


def test_unknown_topic_is_refused_in_words(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(exportops.ExportError, match="unknown topic 'deliveries'"):
        exportops.export(S, ["deliveries"], "parquet", tmp_path / "x.parquet")


def test_jsonl_timestamps_as_arrow_formats_them() -> None:
    import random

    import pyarrow as pa
    import pyarrow.compute as pc

    from postlane.exportops import _iso_all

    rnd = random.Random(3)
    ms = [rnd.randint(0, 253402300799999) for _ in range(3000)] + [0, 999, 1000,
                                                                   253402300799999]
    ms += [ms[5] + i for i in range(50)]  # records of one second
    arrow = pc.strftime(pa.array(ms, pa.timestamp("ms", tz="UTC")),
                        format="%Y-%m-%dT%H:%M:%S", locale="C").to_pylist()
    assert _iso_all(ms) == [f"{t}+00:00" for t in arrow]
    assert _iso_all([-1]) == ["1969-12-31T23:59:59.999+00:00"]


def test_an_export_takes_the_c_allocator_and_gives_the_default_back() -> None:
    from postlane.exportops import _system_allocator

    before = pa.default_memory_pool().backend_name
    with _system_allocator():
        assert pa.default_memory_pool().backend_name == "system"
    assert pa.default_memory_pool().backend_name == before
    try:
        with _system_allocator():
            raise RuntimeError("an export failed")
    except RuntimeError:
        pass
    assert pa.default_memory_pool().backend_name == before
