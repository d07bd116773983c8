"""Bounce parsing speed and accuracy (not in CI).

    .venv/bin/python bench/bounces.py [--seconds 10]

Parses every mail of the corpus (tests/corpus/bounces: real MTAs and
provider formats) round after round on one core for ``--seconds`` and prints
bounces per second; then the accuracy per format against the corpus labels
(recipient found, status exact, hard/soft agreeing), and the slowest of the
bad inputs of tests/unit/test_bounce_bad_input.py (none may take 1 s).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processors.bounces.parser import BounceParseError, parse_bounce  # noqa: E402

CORPUS = ROOT / "tests" / "corpus" / "bounces"


def accuracy(files: list[Path]) -> dict[str, list[int]]:
    """format -> [failures labelled, recipient found, status exact, hard agreeing]."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for f in files:
        exp = json.loads(f.with_suffix(".json").read_text())
        parsed = parse_bounce(f.read_bytes(), domains=("mycompany.test",))
        got = {r.recipient: r for r in parsed.results}
        row = table[exp["format"]]
        for want in exp["results"]:
            row[0] += 1
            r = got.get(want["recipient"])
            if r is None:
                continue
            row[1] += 1
            row[2] += r.status == want["status"]
            row[3] += r.hard == want["hard"]
        if not exp["results"]:  # delays, auto-replies, complaints: never a failure
            row[0] += 1
            ok = not parsed.results
            row[1] += ok
            row[2] += ok
            row[3] += ok
    return table


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    files = sorted(CORPUS.glob("*.eml"))
    mails = [f.read_bytes() for f in files]
    n = 0
    start = time.process_time()
    wall = time.perf_counter()
    while time.perf_counter() - wall < args.seconds:
        for raw in mails:
            parse_bounce(raw, domains=("mycompany.test",))
        n += len(mails)
    cpu = time.process_time() - start
    print(f"parsed {n} bounces ({len(mails)} distinct, {sum(map(len, mails)) // len(mails)} "
          f"bytes on average) in {cpu:.2f} s of CPU: {n / cpu:.0f} bounces/s on one core")
    table = accuracy(files)
    total = [sum(row[i] for row in table.values()) for i in range(4)]
    print(f"\n{'format':16s} {'labelled':>8s} {'recipient':>10s} {'status':>8s} {'hard':>8s}")
    for fmt, row in sorted(table.items()):
        print(f"{fmt:16s} {row[0]:8d} {row[1]:10d} {row[2]:8d} {row[3]:8d}")
    pct = [f"{100 * x / total[0]:.1f}%" for x in total[1:]]
    print(f"{'all':16s} {total[0]:8d} {pct[0]:>10s} {pct[1]:>8s} {pct[2]:>8s}")
    sys.path.insert(0, str(ROOT / "tests" / "unit"))
    from test_bounce_bad_input import bad_inputs  # noqa: PLC0415
    print("\nbad input (wall time):")
    worst = 0.0
    for name, raw in bad_inputs().items():
        t = time.perf_counter()
        try:
            parsed = parse_bounce(raw)
            what = f"{parsed.kind}, {len(parsed.results)} failures"
        except BounceParseError as exc:
            what = f"refused: {exc}"
        took = time.perf_counter() - t
        worst = max(worst, took)
        print(f"  {name:26s} {took:6.3f} s  {what}")
    print(f"  slowest: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
