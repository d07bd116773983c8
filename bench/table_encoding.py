"""What a table row costs per encoding (issue 19: tables with ONE encoding).

``python -m bench.table_encoding [--n 20000]``

Two ways a table value can be held (streams/tables.py):

- ``json``: the table holds the row as a dict; Faust's ``json`` codec writes
  it to the changelog (orjson -> str -> bytes) and reads it back on recovery;
- ``bytes``: orjson bytes (``streams.tables.Rows``, the one encoding every
  table uses now), held and written as they are.

For the rows of a delivery ledger, a status and a limiter mail it measures,
in one run: a write (what the agent does + what Faust does to send the
changelog record), a read (``table.get`` + what the agent does to get its
state back), a recovery (the changelog record back into the table) and the
memory a row holds. Nothing here starts a broker: it is the encoding alone,
through Faust's own serializer registry. The anchor is a dict lookup of the
same rows (what a read costs when nothing is decoded).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import faust
import orjson

from processors.delivery import core as delivery
from processors.status.core import MessageStatus, fold
from schemas import DeliveryStarted, RoutingDecided, SendRequested
from streams.tables import Rows, encode_row

Row = tuple[Any, Callable[[Any], Any], Callable[[Any], Any], Callable[[dict[str, Any]], Any]]


def rows() -> dict[str, Row]:
    """name -> (state, state -> dict (a json table's row), state -> what the
    agent hands ``Rows`` now, dict -> state)."""
    to = [f"user{i}@example.com" for i in range(3)]
    req = SendRequested(message_id="m1", from_="app@example.com", to=to, subject="a subject",
                        text="some text " * 20)
    dec = RoutingDecided(message_id="m1", outcome="routed", server="primary",
                         header_from="app@example.com", envelope_from="bounce+m1@example.com",
                         rule="from_filter_domain", request=req.to_representation())
    ledger, action = delivery.on_routed(None, dec, to, 1.0)
    assert ledger is not None
    ledger, _ = delivery.start(ledger, action, "w1")
    started = DeliveryStarted(message_id="m1", server="primary", attempt=1,
                              recipients=to, worker="w1")
    status = fold([req, dec, started])
    assert status is not None
    mail = {"message_id": "m1", "tenant": "t", "domain": "example.com", "server": "primary",
            "decision": dec.to_representation(), "at": 1.0, "size": 1234}
    return {
        "delivery-ledger": (ledger, lambda x: x.to_dict(), lambda x: x.to_dict(),
                            delivery.Ledger.from_dict),
        "status": (status, lambda x: orjson.loads(orjson.dumps(x)), lambda x: x,
                   lambda d: MessageStatus.from_dict(d, fresh=True)),
        "limiter-mass": (mail, lambda x: dict(x), lambda x: dict(x), lambda d: d),
    }


def per_op(fn: Callable[[], Any], n: int, repeat: int = 5) -> float:
    """Microseconds per call: the best of ``repeat`` runs of ``n`` (the
    machine is shared: the best run is the one least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def held(make: Callable[[], Any], n: int = 2000) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = [make() for _ in range(n)]
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del keep
    return (after - before) / n


def measure(reg: Any, name: str, row_of: Row, n: int) -> None:
    state, to_row, to_rows, from_row = row_of
    row = to_row(state)
    memory = {b"k": row}
    anchor = per_op(lambda: memory.get(b"k"), n)
    # json: the agent makes the dict, Faust writes it (json codec)
    jwire = reg.dumps_value(None, row, serializer="json")
    assert jwire is not None
    jw = per_op(lambda: reg.dumps_value(None, to_row(state), serializer="json"), n)
    jr = per_op(lambda: from_row(memory[b"k"]), n)
    jrec = per_op(lambda: reg.loads_value(None, jwire, serializer="json"), n)
    jheld = held(lambda: orjson.loads(jwire))
    # bytes (streams.tables.Rows): orjson bytes, Faust passes them through (raw)
    table = Rows({})
    table[b"k"] = to_rows(state)
    braw = table.table[b"k"]
    bw = per_op(lambda: reg.dumps_value(bytes, encode_row(to_rows(state)), serializer="raw"), n)
    br = per_op(lambda: from_row(table.get(b"k")), n)
    brec = per_op(lambda: reg.loads_value(bytes, braw, serializer="raw"), n)
    bheld = held(lambda: bytes(bytearray(braw)))
    print(f"{name:16} {'json':8} {jw:9.2f} {jr:8.2f} {jw + jr:8.2f} {jrec:10.2f} "
          f"{jheld:10.0f} {len(jwire):11d}")
    print(f"{name:16} {'bytes':8} {bw:9.2f} {br:8.2f} {bw + br:8.2f} {brec:10.2f} "
          f"{bheld:10.0f} {len(braw):11d}")
    print(f"{name:16} {'anchor':8} {'':9} {anchor:8.2f}   (a dict lookup)")


def scan(n: int) -> None:
    """The delivery retry timer's look at every ledger row (each second):
    ``n`` rows, 1% open. json: the dicts held, ``open_row`` on each; bytes:
    every row decoded (``Rows.items``), or only those that may be open
    (``Rows.items_if(may_be_open)``, what the timer does)."""
    ledger = rows()["delivery-ledger"][0]
    done = delivery.row(delivery.Ledger.from_dict({**ledger.to_dict(), "done": True,
                                                   "pending": [], "accepted": ["a"]}))
    opened = ledger.to_dict()
    held = {f"m{i}".encode(): (opened if i % 100 == 0 else done) for i in range(n)}
    table = Rows({k: encode_row(v) for k, v in held.items()})

    def json_scan() -> int:
        return sum(1 for _, v in list(held.items()) if delivery.open_row(v))

    def all_decoded() -> int:
        return sum(1 for _, v in list(table.items()) if delivery.open_row(v))

    def marked() -> int:
        return sum(1 for _, v in list(table.items_if(delivery.may_be_open))
                   if delivery.open_row(v))

    assert json_scan() == all_decoded() == marked() == n // 100
    for name, fn in (("json (dicts held)", json_scan), ("bytes, every row decoded", all_decoded),
                     ("bytes, items_if(may_be_open)", marked)):
        ms = per_op(fn, 1, repeat=3) / 1000
        print(f"scan of {n} ledger rows (1% open), {name:30} {ms:8.1f} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--scan", type=int, default=100000, help="ledger rows in the scan")
    args = p.parse_args()
    n = args.n
    app = faust.App("bench-table-encoding", value_serializer="orjson")
    reg = app.serializers
    print(f"{'row':16} {'encoding':8} {'write us':>9} {'read us':>8} {'w+r us':>8} "
          f"{'recover us':>10} {'bytes held':>10} {'changelog B':>11}")
    for name, row in rows().items():
        measure(reg, name, row, n)
    scan(n=args.scan)
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, faust "
          f"{faust.__version__}, n={n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
