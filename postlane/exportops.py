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
object per line with the same columns (objects and lists there stay JSON
values instead of JSON text). A record that is not an event
(garbage its processor dead-lettered) is exported with its place and
``_invalid`` set to the reason; an event type the topic is not known to
carry keeps only the columns it shares with them.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas import ALL_EVENTS, CONFIG_EVENTS, Event
from schemas.errors import PostlaneError
from streams.settings import Settings
from streams.topics import ALL_TOPICS

from .logread import Rec, gc_paused, read_batches

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


class ExportError(PostlaneError, ValueError):
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
    if isinstance(value, bytes):  # JSON text made already
        return value.decode("utf-8", "replace") if kind in (_JSON, pa.string()) else None
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


_NONE = type(None)
# the Python types a column's values may have for pyarrow to convert them as they are
_ALLOWED: dict[Any, frozenset[type]] = {
    pa.string(): frozenset({str, _NONE}), pa.int64(): frozenset({int, _NONE}),
    pa.float64(): frozenset({float, int, _NONE}), pa.bool_(): frozenset({bool, _NONE}),
}


def _column(values: list[Any], kind: pa.DataType | str) -> pa.Array:
    """One column: converted by pyarrow in C when every value already has
    the column's type (checked first: pyarrow would truncate 1.5 into an
    int64 or take True as 1.0), else value by value with ``_cast``."""
    if kind == _JSON:
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in values],
                        pa.string())
    allowed = _ALLOWED.get(kind)
    if allowed is not None and {type(v) for v in values} <= allowed:
        return pa.array(values, kind)
    return pa.array([_cast(v, kind) for v in values], kind)


def parse_records(recs: list[Rec], untyped: dict[str, str]) -> tuple[list[dict[str, Any]],
                                                                      list[str | None]]:
    """Each record's JSON object ({} when it is not one) and why not."""
    invalid: list[str | None] = [None] * len(recs)
    datas: list[dict[str, Any]] = []
    loads = orjson.loads
    for i, r in enumerate(recs):
        try:
            data = loads(r.value) if r.value is not None else None
        except orjson.JSONDecodeError as exc:
            data, invalid[i] = None, f"not JSON: {exc}"
        if type(data) is not dict:
            if invalid[i] is None:
                invalid[i] = ("empty record (no value)" if data is None
                              else f"not a JSON object: {type(data).__name__}")
            data = {}
        elif not data.get("type") and r.topic in untyped:
            data["type"] = untyped[r.topic]
        datas.append(data)
    return datas, invalid


def rows_to_table(recs: list[Rec], cols: Columns, short: dict[str, str],
                  untyped: dict[str, str]) -> pa.Table:
    """One arrow table for a batch of records, in their order. The objects
    are converted by pyarrow in C++ (a struct array of the columns; nested
    values made JSON text first); a batch with a value pyarrow cannot take
    as its column's type is converted value by value (``_cast``)."""
    datas, invalid = parse_records(recs, untyped)
    json_cols = [n for n, k in cols.kinds.items() if k == _JSON]
    dumps = orjson.dumps
    for d in datas:
        for name in json_cols:
            v = d.get(name)
            if v is not None:
                # as str at once: tens of thousands of orjson's bytes kept alive
                # made each new one cost 5 us in malloc (its buffer is made
                # large, then shrunk), twenty times the dump itself
                d[name] = dumps(v).decode()
    schema = cols.schema()
    meta = [
        pa.array([short.get(r.topic, r.topic) for r in recs], pa.string()),
        pa.array([r.partition for r in recs], pa.int32()),
        pa.array([r.offset for r in recs], pa.int64()),
        pa.array([r.timestamp_ms for r in recs], pa.timestamp("ms", tz="UTC")),
        pa.array([None if r.key is None else r.key.decode("utf-8", "replace") for r in recs],
                 pa.string()),
    ]
    struct = pa.struct([(n, pa.string() if k == _JSON else k) for n, k in cols.kinds.items()])
    try:
        body = pa.array(datas, struct)
        fields = [body.field(i) for i in range(struct.num_fields)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        fields = [_column([d.get(n) for d in datas], pa.string() if k == _JSON else k)
                  for n, k in cols.kinds.items()]
    return pa.Table.from_arrays([*meta, *fields, pa.array(invalid, pa.string())],
                                schema=schema)


def jsonl_lines(recs: list[Rec], cols: Columns, short: dict[str, str],
                untyped: dict[str, str], write: Callable[[bytes], Any]) -> int:
    """The same rows as JSON lines (objects and lists kept as JSON, not
    text), each given to ``write`` (the output file's buffer) as it is made;
    the number of invalid records."""
    datas, invalid = parse_records(recs, untyped)
    names = list(cols.kinds)
    # every row's keys in the columns' order: a copy of this, then filled
    template: dict[str, Any] = dict.fromkeys(
        ["_topic", "_partition", "_offset", "_timestamp", "_key", *names, "_invalid"])
    known = frozenset(names)
    stamps = _iso_all([r.timestamp_ms for r in recs])
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    # each line written at once (a list of orjson's bytes kept alive made each
    # new dump cost 5 us in malloc; one buffer of the whole batch, copied out,
    # was megabytes mapped and unmapped per batch)
    for r, d, bad, stamp in zip(recs, datas, invalid, stamps, strict=True):
        row = template.copy()
        if d.keys() <= known:
            row.update(d)
        else:  # an event type the topic is not known to carry: its known columns only
            for name in names:
                row[name] = d.get(name)
        row["_topic"] = short.get(r.topic, r.topic)
        row["_partition"] = r.partition
        row["_offset"] = r.offset
        row["_timestamp"] = stamp
        row["_key"] = None if r.key is None else r.key.decode("utf-8", "replace")
        row["_invalid"] = bad
        write(dumps(row, option=newline))
    return sum(1 for bad in invalid if bad is not None)


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000.0, dt.UTC).isoformat(timespec="milliseconds")


def _iso_all(ms: list[int]) -> list[str]:
    """``_iso`` of each (``2026-12-06T06:53:20.123+00:00``): the date and
    time of each second made once (a batch's records share their seconds),
    the milliseconds added; outside years 1970-9999 formatted by arrow."""
    if ms and (min(ms) < 0 or max(ms) >= _YEAR_10000_MS):
        import pyarrow.compute as pc

        stamps = pc.strftime(pa.array(ms, pa.timestamp("ms", tz="UTC")),
                             format="%Y-%m-%dT%H:%M:%S", locale="C")
        return [f"{t}+00:00" for t in stamps.to_pylist()]
    seconds: dict[int, str] = {}
    out = []
    for m in ms:
        sec, milli = divmod(m, 1000)
        day = seconds.get(sec)
        if day is None:
            day = seconds[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        out.append(f"{day}.{milli:03d}+00:00")
    return out


_YEAR_10000_MS = 253402300800000


class _Writer:
    def __init__(self, fmt: str, path: Path, schema: pa.Schema) -> None:
        self.fmt = fmt
        self.schema = schema
        if fmt == "parquet":
            self.pq = pq.ParquetWriter(str(path), schema, compression="zstd")
        elif fmt == "csv":
            self.csv = pacsv.CSVWriter(str(path), schema)
        else:
            # a line at a time into a 1 MiB buffer: a write call per MiB
            self.fh = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()

    def write(self, table: pa.Table) -> None:
        if self.fmt == "parquet":
            self.pq.write_table(table)
        else:
            self.csv.write_table(table)

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
           progress: Callable[[int, int], None] | None = None, jobs: int = 1) -> Exported:
    """Write every event of ``topics`` (short names) with ``since <= record
    timestamp <= until`` to ``out`` in ``fmt``. With ``jobs`` > 1 the
    topic-partitions are shared among that many processes (each reads and
    converts its share into a part file; the parts are then joined into
    ``out``): rows are in offset order per partition, partitions one after
    the other."""

    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    unknown = [t for t in topics if t not in TOPIC_EVENTS]
    if unknown:
        raise ExportError(f"unknown topic {', '.join(repr(t) for t in unknown)}; known: "
                          f"{', '.join(known_topics())}")
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    if jobs > 1:
        rows, invalid = _export_parallel(s, topics, fmt, out, since, until, progress, jobs)
    else:
        rows, invalid = _export_part(s, topics, fmt, out, since, until, progress, None)
    return Exported(out, rows, invalid, time.perf_counter() - t0)


def _export_part(s: Settings, topics: list[str], fmt: str, out: Path, since: float | None,
                 until: float | None, progress: Callable[[int, int], None] | None,
                 share: tuple[int, int] | None) -> tuple[int, int]:
    from streams.topics import untyped_by_topic

    cols = Columns.of(topics, fmt)
    short = {s.topic(t): t for t in topics}
    untyped = untyped_by_topic(s)
    rows = invalid = 0
    with gc_paused(), _system_allocator():
        writer = _Writer(fmt, out, cols.schema())
        try:
            for batch in _chunks(read_batches(s, list(short), since, until, progress, share)):
                if fmt == "jsonl":
                    bad = jsonl_lines(batch, cols, short, untyped, writer.fh.write)
                    rows, invalid = rows + len(batch), invalid + bad
                    continue
                table = rows_to_table(batch, cols, short, untyped)
                writer.write(table)
                rows += table.num_rows
                invalid += table.num_rows - table.column("_invalid").null_count
        finally:
            writer.close()
    return rows, invalid


@contextmanager
def _system_allocator() -> Iterator[None]:
    """Arrow's buffers from the C library's allocator while an export runs
    (then the pool that was the default again). Its default here, mimalloc,
    gives freed pages back to the system soon after each batch, and the
    next batch takes them again: 0.5-1.1 s of system time in the first
    export of a process (80,000 events, ``bench/export.py``) against
    0.2-0.5 s with the C library's."""
    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


def _child(s: Settings, topics: list[str], fmt: str, part: Path, since: float | None,
           until: float | None, index: int, jobs: int, counters: Any, results: Any) -> None:
    """One process of a parallel export: its share into ``part``."""
    def progress(done: int, total: int) -> None:
        counters[2 * index], counters[2 * index + 1] = done, total

    try:
        rows, invalid = _export_part(s, topics, fmt, part, since, until, progress,
                                     (index, jobs))
        results.put((index, rows, invalid, ""))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent in words
        results.put((index, 0, 0, f"{type(exc).__name__}: {exc}"))


def _export_parallel(s: Settings, topics: list[str], fmt: str, out: Path,
                     since: float | None, until: float | None,
                     progress: Callable[[int, int], None] | None,
                     jobs: int) -> tuple[int, int]:
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("fork")  # no re-import; nothing runs threads yet
    counters = ctx.Array("q", 2 * jobs, lock=False)
    results = ctx.Queue()
    parts = [out.with_name(f".{out.name}.part{i}") for i in range(jobs)]
    procs = [ctx.Process(target=_child, args=(s, topics, fmt, parts[i], since, until, i, jobs,
                                              counters, results), daemon=True)
             for i in range(jobs)]
    for proc in procs:
        proc.start()
    got: dict[int, tuple[int, int, str]] = {}
    try:
        while len(got) < jobs:
            try:
                index, rows, invalid, error = results.get(timeout=0.2)
                got[index] = (rows, invalid, error)
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and results.empty():
                    break
            if progress is not None:
                progress(sum(counters[0::2]), sum(counters[1::2]))
        for proc in procs:
            proc.join(10)
        errors = [got[i][2] for i in sorted(got) if got[i][2]]
        if len(got) < jobs or errors:
            from streams.client import BrokerUnavailable

            raise BrokerUnavailable("; ".join(errors) or "an export process died")
        _join(fmt, parts, out, Columns.of(topics, fmt).schema())
        return sum(g[0] for g in got.values()), sum(g[1] for g in got.values())
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for part in parts:
            part.unlink(missing_ok=True)


def _join(fmt: str, parts: list[Path], out: Path, schema: pa.Schema) -> None:
    """The part files as one file of ``fmt``."""
    if fmt == "parquet":
        writer = pq.ParquetWriter(str(out), schema, compression="zstd")
        try:
            for part in parts:
                pf = pq.ParquetFile(str(part))
                for i in range(pf.num_row_groups):
                    writer.write_table(pf.read_row_group(i))
        finally:
            writer.close()
        return
    with open(out, "wb") as dst:
        for n, part in enumerate(parts):
            with open(part, "rb") as src:
                if fmt == "csv" and n > 0:
                    src.readline()  # the header, written once
                while chunk := src.read(1 << 20):
                    dst.write(chunk)


def _chunks(batches: Iterator[list[Rec]], size: int = 20000) -> Iterator[list[Rec]]:
    buf: list[Rec] = []
    for batch in batches:
        buf.extend(batch)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
