"""Per-event cost of the status fold (not in CI): decoding an event and
applying it, against ``orjson.loads`` of the same bytes (the anchor, in the
same run). No broker: the events are made in memory, as ``bench/replay.py``
writes them (request, routing decision, release, start, outcome per mail).

    .venv/bin/python bench/replay_fold.py [--mails 5000] [--root DIR]

``--root``: import Postlane from another checkout (to measure an older
commit with the same events: ``git archive COMMIT | tar -x -C DIR``).
Prints per event: ``decode_any`` (validated), ``decode_any_owned`` (the
replay's: the same events, when the checkout has it), ``status.batch.apply``
(``core.evolve``: a new status and the MessageStatusChanged, what the live
agent does) and, when the checkout has it, ``core.fold_in_place`` (what a
replay does: the same transitions, no copy and no change event).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]))
    args = ap.parse_args()
    sys.path.insert(0, args.root)
    import orjson

    from bench.replay import mail_events
    from processors.status import core
    from processors.status.agent import REGISTRY
    from processors.status.batch import apply
    from schemas import decode_any

    t0 = time.time() - 3600
    raws = [value for i in range(args.mails) for topic, _key, value in mail_events(i, t0)
            if topic in ("send-requested", "routing-decided", "released", "delivery")]
    n = len(raws)
    in_place = getattr(core, "fold_in_place", None)
    import schemas.base

    make = getattr(schemas.base, "owned_decoder", None)
    owned = make(REGISTRY) if make is not None else None
    best: dict[str, float] = {}

    def timed(name: str, fn: Any) -> Any:
        gc.collect()
        gc.disable()
        try:
            t = time.perf_counter()
            out = fn()
            best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        finally:
            gc.enable()
        return out

    def fold_evolve(events: list[Any]) -> None:
        rows: dict[str, Any] = {}
        for e in events:
            rows[e.message_id] = apply(rows.get(e.message_id), e)[0]

    def fold_fast(events: list[Any]) -> None:
        rows: dict[str, Any] = {}
        for e in events:
            rows[e.message_id] = in_place(rows.get(e.message_id), e)

    for _ in range(args.rounds):
        timed("orjson.loads (anchor)", lambda: [orjson.loads(r) for r in raws])
        # fresh caches each round (the bench's recipients are all different):
        # every remembered function of the address checks and the status core
        for module in ("schemas.addresses", "processors.status.core"):
            for cached in vars(sys.modules[module]).values():
                if callable(getattr(cached, "cache_clear", None)):
                    cached.cache_clear()
        events = timed("decode_any", lambda: [decode_any(REGISTRY, r) for r in raws])
        if owned is not None:  # what the replay decodes with (same events, no copy)
            timed("decode_any_owned", lambda: [owned(r) for r in raws])
        timed("evolve (batch.apply)", lambda ev=events: fold_evolve(ev))
        if in_place is not None:
            timed("fold_in_place", lambda ev=events: fold_fast(ev))
    print(f"{n} events of {args.mails} mails, best of {args.rounds} rounds ({args.root})")
    for name, secs in best.items():
        print(f"  {name:24s} {n / secs:10,.0f} events/s  {secs / n * 1e6:6.1f} us/event")
    return 0


if __name__ == "__main__":
    sys.exit(main())
