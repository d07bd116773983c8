"""Exports: topics as files analysts open as they are (``postlane export``).

One row per event. The columns are typed from the events' own fields (the
same fields, names and JSON types as the exported JSON Schemas,
``schemas/export.py``):

- ``_topic`` (short name), ``_partition``, ``_offset``, ``_timestamp`` (the
  record's timestamp, UTC, milliseconds), ``_key``: where the event is;
- then every field of every event type the topics carry (``TOPIC_EVENTS``),
  in the order the events declare them: a field absent from an event is
  null. ``str`` -> string, ``int`` -> int64, ``float`` -> float64 (so
  ``occurred_at`` stays unix seconds, as on the topic), ``bool`` -> bool,
  ``list[str]`` -> list of strings (CSV: its JSON text); any other list or
  object -> its JSON text (DuckDB: ``json_extract``; pandas: ``json.loads``).
  A field two event types declare with different types is JSON text too.

Parquet is written with pyarrow (DuckDB, pandas and polars read it as it
is), CSV with pyarrow's writer (header row, RFC 4180 quoting), JSONL one
object per line with the same columns. A record that is not an event
(garbage its processor dead-lettered) is exported with its place and
``_invalid`` set to the reason; an event type the topic is not known to
carry keeps only the columns it shares with them.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas import ALL_EVENTS, CONFIG_EVENTS, Event
from streams.settings import Settings
from streams.topics import ALL_TOPICS

from .logread import Rec, read_batches

FORMATS = ("parquet", "csv", "jsonl")

_BY_NAME = {cls.__name__: cls for cls in ALL_EVENTS}


def _events(*names: str) -> tuple[type[Event], ...]:
    return tuple(_BY_NAME[n] for n in names if n in _BY_NAME)


# short topic name -> the event types written there (streams/topics.py docs)
TOPIC_EVENTS: dict[str, tuple[type[Event], ...]] = {
    "config": tuple(CONFIG_EVENTS.values()),
    "send-requested": _events("SendRequested"),
    "send-requested-mass": _events("SendRequested"),
    "routing-decided": _events("RoutingDecided"),
    "routing-decided-mass": _events("RoutingDecided"),
    "delivery": _events("DeliveryStarted", "DeliveryAttempted"),
    "delivery-due": _events("RetryTimeReached"),
    "status": _events("MessageStatusChanged"),
    "released": _events("MailReleased", "QueueCommandIssued"),
    "held": _events("MailHeld"),
    "commands": _events("QueueCommandIssued"),
    "command-results": _events("QueueCommandApplied", "QueueCommandRefused",
                               "MessageCancelled"),
    "dead-letter": _events("EventDeadLettered"),
    "inbound": _events("InboundMailReceived", "InboundMailRejected"),
    "inbound-routed": _events("InboundMailRouted"),
    "sent-ids": _events("SentMessageRecorded"),
    "inbound-threads": _events("InboundReplyLookupRequested"),
    "inbound-aliases": _events("InboundAliasMatched"),
    "incoming-status": _events("IncomingServerChecked"),
    "bounce-mail": _events("BounceMailReceived"),
    "bounce-attribution": _events("RecipientBounced"),
    "bounce-domains": _events("RecipientBounced", "RecipientsMailed"),
    "bounces": _events("BounceRecorded", "BounceDiscounted", "MailReceivedFrom",
                       "BlacklistEdited", "ComplaintReceived", "SuppressionEdited",
                       "UnsubscribeRequested"),
    "blacklist": _events("BlacklistChanged"),
    "webhooks": _events("WebhookDelivered", "WebhookDeadLettered"),
}

META = [("_topic", pa.string()), ("_partition", pa.int32()), ("_offset", pa.int64()),
        ("_timestamp", pa.timestamp("ms", tz="UTC")), ("_key", pa.string())]
_SIMPLE: dict[Any, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(),
                                   bool: pa.bool_()}
_JSON = "json"


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why."""


def known_topics() -> list[str]:
    return [spec.name for spec in ALL_TOPICS if spec.name in TOPIC_EVENTS] + [
        n for n in TOPIC_EVENTS if n not in {s.name for s in ALL_TOPICS}]


def _kind(tp: Any, fmt: str) -> pa.DataType | str:
    if tp in _SIMPLE:
        return _SIMPLE[tp]
    if typing.get_origin(tp) is list and typing.get_args(tp) == (str,) and fmt == "parquet":
        return pa.list_(pa.string())
    return _JSON


@dataclass
class Columns:
    """The export's columns: name -> arrow type, or ``"json"`` (JSON text)."""

    kinds: dict[str, pa.DataType | str] = field(default_factory=dict)

    @classmethod
    def of(cls, topics: list[str], fmt: str) -> Columns:
        kinds: dict[str, pa.DataType | str] = {}
        for topic in topics:
            for ev in TOPIC_EVENTS[topic]:
                for fname, ftype in ev._options.fields.items():
                    kind = _kind(ftype, fmt)
                    if fname in kinds and kinds[fname] != kind:
                        kinds[fname] = _JSON
                    else:
                        kinds.setdefault(fname, kind)
        return cls(kinds)

    def schema(self) -> pa.Schema:
        return pa.schema(META + [(n, pa.string() if k == _JSON else k)
                                 for n, k in self.kinds.items()] + [("_invalid", pa.string())])


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _cast(value: Any, kind: pa.DataType | str) -> Any:
    """A JSON value as the column wants it (None when it cannot be)."""
    if value is None:
        return None
    if kind == _JSON:
        return _json_text(value)
    if kind == pa.string():
        return value if isinstance(value, str) else _json_text(value)
    if kind == pa.float64():
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
            else None
    if kind == pa.int64():
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == pa.bool_():
        return value if isinstance(value, bool) else None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def rows_to_table(recs: list[Rec], cols: Columns, short: dict[str, str],
                  untyped: dict[str, str]) -> pa.Table:
    """One arrow table for a batch of records."""
    n = len(recs)
    topic_col: list[str] = [short.get(r.topic, r.topic) for r in recs]
    key_col = [None if r.key is None else r.key.decode("utf-8", "replace") for r in recs]
    invalid: list[str | None] = [None] * n
    datas: list[dict[str, Any]] = []
    for i, r in enumerate(recs):
        try:
            data = orjson.loads(r.value) if r.value is not None else None
        except orjson.JSONDecodeError as exc:
            data, invalid[i] = None, f"not JSON: {exc}"
        if data is not None and not isinstance(data, dict):
            data, invalid[i] = None, f"not a JSON object: {type(data).__name__}"
        if data is None:
            if invalid[i] is None:
                invalid[i] = "empty record (no value)"
            data = {}
        elif not data.get("type") and r.topic in untyped:
            data["type"] = untyped[r.topic]
        datas.append(data)
    arrays = [
        pa.array(topic_col, pa.string()),
        pa.array([r.partition for r in recs], pa.int32()),
        pa.array([r.offset for r in recs], pa.int64()),
        pa.array([r.timestamp_ms for r in recs], pa.timestamp("ms", tz="UTC")),
        pa.array(key_col, pa.string()),
    ]
    for name, kind in cols.kinds.items():
        values = [_cast(d.get(name), kind) for d in datas]
        arrays.append(pa.array(values, pa.string() if kind == _JSON else kind))
    arrays.append(pa.array(invalid, pa.string()))
    return pa.Table.from_arrays(arrays, schema=cols.schema())


class _Writer:
    def __init__(self, fmt: str, path: Path, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.schema = schema
        if fmt == "parquet":
            self.pq = pq.ParquetWriter(str(path), schema, compression="zstd")
        elif fmt == "csv":
            self.csv = pacsv.CSVWriter(str(path), schema)
        else:
            self.fh = open(path, "wb")  # noqa: SIM115 - closed in close()

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            self.pq.write_table(table)
        elif self.fmt == "csv":
            self.csv.write_table(table)
        else:
            ts_index = self.schema.get_field_index("_timestamp")
            rows = table.to_pylist()
            names = self.schema.names
            for row in rows:
                ts = row[names[ts_index]]
                row["_timestamp"] = ts.isoformat() if ts is not None else None
                self.fh.write(orjson.dumps(row) + b"\n")

    def close(self) -> None:
        if self.fmt == "parquet":
            self.pq.close()
        elif self.fmt == "csv":
            self.csv.close()
        else:
            self.fh.close()


@dataclass
class Exported:
    path: Path
    rows: int
    invalid: int
    seconds: float


def export(s: Settings, topics: list[str], fmt: str, out: Path,
           since: float | None = None, until: float | None = None,
           progress: Callable[[int, int], None] | None = None) -> Exported:
    """Write every event of ``topics`` (short names) with ``since <= record
    timestamp <= until`` to ``out`` in ``fmt``."""
    import time

    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    unknown = [t for t in topics if t not in TOPIC_EVENTS]
    if unknown:
        raise ExportError(f"unknown topic {', '.join(repr(t) for t in unknown)}; known: "
                          f"{', '.join(known_topics())}")
    from streams.topics import untyped_by_topic

    cols = Columns.of(topics, fmt)
    short = {s.topic(t): t for t in topics}
    untyped = untyped_by_topic(s)
    t0 = time.perf_counter()
    rows = invalid = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = _Writer(fmt, out, cols.schema())
    try:
        for batch in _chunks(read_batches(s, list(short), since, until, progress)):
            table = rows_to_table(batch, cols, short, untyped)
            writer.write(table)
            rows += table.num_rows
            invalid += table.num_rows - table.column("_invalid").null_count
    finally:
        writer.close()
    return Exported(out, rows, invalid, time.perf_counter() - t0)


def _chunks(batches: Iterator[list[Rec]], size: int = 20000) -> Iterator[list[Rec]]:
    buf: list[Rec] = []
    for batch in batches:
        buf.extend(batch)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
