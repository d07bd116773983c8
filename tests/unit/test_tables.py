"""Tables declared once with ONE value encoding (streams/tables.py): every
declaration uses it, no module makes a Faust table another way, and
``Rows`` writes what a changelog reader (postlane replay, the status
metrics) reads back."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import faust
import orjson

from processors.status.core import MessageStatus
from streams import mail_states, tables
from streams.tables import Rows, TableSpec, decode_row, encode_row

ROOT = Path(__file__).resolve().parents[2]


def test_every_table_is_declared_with_the_one_encoding() -> None:
    declared = [v for v in vars(tables).values() if isinstance(v, TableSpec)]
    assert get_args(tables.Encoding) == (tables.ROW_ENCODING,)
    assert sorted(s.name for s in declared) == sorted(s.name for s in tables.ALL_TABLES)
    assert len({s.name for s in declared}) == len(declared)
    for spec in declared:
        assert spec.value == tables.ROW_ENCODING, f"{spec.name} is declared {spec.value!r}"


def test_no_module_makes_a_table_but_runtime_table() -> None:
    """A table made with ``app.Table(...)`` elsewhere would pick its own
    encoding; every one goes through ``Runtime.table`` (processors/runtime.py)."""
    found = []
    for package in ("processors", "postlane", "streams", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("Table", "GlobalTable", "SetTable")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert len(found) == 1 and found[0].startswith("processors/runtime.py:"), found


class FakeTable(dict[bytes, bytes]):
    """What Rows uses of a Faust table (its store holds bytes)."""


def test_rows_encode_on_write_and_decode_on_read() -> None:
    raw = FakeTable()
    rows = Rows(raw)
    rows[b"a"] = {"n": 1, "xs": [1, 2]}
    rows[b"b"] = "tenant-1"
    assert raw == {b"a": b'{"n":1,"xs":[1,2]}', b"b": b'"tenant-1"'}
    assert rows.get(b"a") == {"n": 1, "xs": [1, 2]} and rows[b"b"] == "tenant-1"
    assert rows.get(b"missing") is None and rows.get(b"missing", 7) == 7
    assert b"a" in rows and b"zz" not in rows and len(rows) == 2
    assert sorted(rows) == [b"a", b"b"] and sorted(rows.keys()) == [b"a", b"b"]
    assert dict(rows.items()) == {b"a": {"n": 1, "xs": [1, 2]}, b"b": "tenant-1"}
    assert sorted(map(str, rows.values())) == sorted(map(str, [{"n": 1, "xs": [1, 2]},
                                                               "tenant-1"]))
    del rows[b"a"]
    assert list(raw) == [b"b"]


def test_a_read_row_is_a_copy_not_the_table() -> None:
    rows = Rows(FakeTable())
    rows[b"a"] = {"n": 1}
    got = rows[b"a"]
    got["n"] = 2  # changing what was read does not change the table
    assert rows[b"a"] == {"n": 1}


def test_a_dataclass_row_is_written_as_its_fields_in_order() -> None:
    """The status row: mail_states reads ``state`` from the bytes unparsed."""
    raw = FakeTable()
    st = MessageStatus(message_id="m1", state="sent")
    Rows(raw)[b"m1"] = st
    assert raw[b"m1"] == orjson.dumps(st)
    assert mail_states.state_of(raw[b"m1"]) == "sent"
    assert MessageStatus.from_dict(Rows(raw)[b"m1"], fresh=True).state == "sent"


def test_what_faust_json_allowed_is_still_written() -> None:
    """Non-string keys (Faust's json codec wrote them; they read back as
    strings, as they did on recovery) and a value orjson alone refuses."""

    @dataclass
    class Box:
        n: int

    assert decode_row(encode_row({1: "a"})) == {"1": "a"}
    assert decode_row(encode_row({"box": Box(3)})) == {"box": {"n": 3}}


def test_a_changelog_of_faust_json_reads_back_the_same() -> None:
    """Tables declared ``json`` before one encoding: their changelog records
    (Faust's json codec) are read by Rows and by the replay readers as the
    same rows, so a worker recovers them without a migration."""
    app = faust.App("test-tables-json", value_serializer="json")
    row: dict[str, Any] = {"message_id": "m1", "pending": ["a@b.c"], "attempt": 2,
                           "failed": {"x@y.z": {"code": 550}}, "next_at": 12.5}
    old = app.serializers.dumps_value(None, row, serializer="json")
    assert old is not None
    assert decode_row(old) == row
    assert Rows(FakeTable({b"m1": old}))[b"m1"] == row
    assert decode_row(None) is None



def test_items_if_decodes_only_the_rows_that_pass() -> None:
    rows = Rows(FakeTable())
    rows[b"a"] = {"done": False, "n": 1}
    rows[b"b"] = {"done": True, "n": 2}
    assert list(rows.items_if(lambda raw: b'"done":false' in raw)) == [
        (b"a", {"done": False, "n": 1})]


def test_every_open_ledger_row_passes_the_retry_timers_test() -> None:
    """The retry timer decodes only rows ``may_be_open`` (every second,
    over every ledger): a row ``open_row`` calls open must pass it."""
    from processors.delivery import core
    from tests.unit.test_delivery_core import RETRY, A, B, ok, refused, routed, started

    fresh, _ = routed()
    run = started()
    deferred, _ = core.finish(run, [ok(A), refused(B, 451, "4.7.1 later")],
                              now=2.0, duration=0.1, settings=RETRY)
    done, _ = core.finish(run, [ok(A), ok(B)], now=2.0, duration=0.1, settings=RETRY)
    cancelled = core.Ledger.from_dict({**fresh.to_dict(), "cancelled": True})
    assert cancelled is not None

    def with_request_data(ledger: core.Ledger, data: dict[str, Any]) -> core.Ledger:
        """The mail's own data (anything a service sends) inside the decision."""
        new = core.Ledger.from_dict({**ledger.to_dict(), "decision": {
            **ledger.decision, "request": {**ledger.decision["request"], "metadata": data}}})
        assert new is not None
        return new

    tricky = {"done": True, 'x"done': True, "y": 'z"done":true'}
    opened = {"fresh": fresh, "running": run, "deferred": deferred,
              "open, data says done": with_request_data(deferred, tricky)}
    closed = {"done": done, "cancelled": cancelled,
              "done, data says open": with_request_data(done, {"done": False})}
    for name, ledger in {**opened, **closed}.items():
        for row in (ledger.to_dict(), core.row(ledger)):
            raw = encode_row(row)
            assert core.open_row(row) == (name in opened), name
            assert core.may_be_open(raw) == (not row["done"]), name
    assert core.may_be_open(b"{}")  # no done at all: decoded, open_row decides


def test_no_ledger_field_after_done_can_hold_a_done_key() -> None:
    """``may_be_open`` reads the LAST ``"done":`` of a row: every field the
    Ledger writes after ``done`` must hold no object (no key in it)."""
    from dataclasses import fields

    from processors.delivery.core import Ledger

    names = [f.name for f in fields(Ledger)]
    after = {f.name: str(f.type) for f in fields(Ledger)[names.index("done") + 1:]}
    assert all(t in ("bool", "int", "float", "str", "list[str]") for t in after.values()), after


def test_every_pending_webhook_lane_passes_the_dispatchers_test() -> None:
    from processors.webhooks import core
    from schemas import WebhookConfigured

    hook = WebhookConfigured(name="h", url="http://127.0.0.1:1/h", events="*", secret_env="X")
    note = core.Notification(id="n1", type="sent", message_id="m1", recipient="a@b.c",
                             tenant="", occurred_at=1.0, details={})
    lane = core.plan(None, [note], [hook], 1.0)
    assert lane is not None and core.pending(lane)
    assert core.may_be_pending(encode_row(lane))
    delivered = {"rows": {d: {**r, "state": "delivered"} for d, r in lane["rows"].items()}}
    assert not core.pending(delivered) and not core.may_be_pending(encode_row(delivered))
