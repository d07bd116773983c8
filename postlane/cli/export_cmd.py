"""``postlane export TOPIC... --format parquet|csv|jsonl --out PATH``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import orjson

from postlane import exportops
from streams.client import BrokerUnavailable

from .common import fail, settings
from .replay_cmd import parse_time


@contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal (None otherwise)."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@click.command("export")
@click.argument("topics", nargs=-1, required=True)
@click.option("--since", default=None, help="From this time (unix seconds or ISO 8601).")
@click.option("--until", default=None, help="Up to this time (unix seconds or ISO 8601).")
@click.option("--format", "fmt", type=click.Choice(exportops.FORMATS), default="parquet",
              show_default=True)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.option("--jobs", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Processes sharing the topic-partitions (rows then come partition "
              "after partition); worth it on idle cores.")
def export(topics: tuple[str, ...], since: str | None, until: str | None, fmt: str, out: Path,
           as_json: bool, jobs: int) -> None:
    """Write every event of TOPIC... (short names: delivery, status, bounces,
    ...) to one file, one row per event, typed columns (see the README).
    The time range applies to the records' own timestamps."""
    s = settings()
    lo = parse_time(since) if since else None
    hi = parse_time(until) if until else None
    try:
        with progress_bar(sys.stderr.isatty() and not as_json,
                          f"exporting {', '.join(topics)}") as progress:
            done = exportops.export(s, list(topics), fmt, out, lo, hi, progress, jobs)
    except exportops.ExportError as exc:
        fail(str(exc))
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    rate = done.rows / done.seconds if done.seconds else 0.0
    if as_json:
        click.echo(orjson.dumps({"path": str(done.path), "rows": done.rows,
                                 "invalid": done.invalid, "seconds": round(done.seconds, 3),
                                 "events_per_second": round(rate)}).decode())
        return
    click.echo(f"wrote {done.rows} events of {', '.join(topics)} to {done.path} ({fmt}, "
               f"{done.seconds:.2f} s, {rate:,.0f} events/s)"
               + (f"; {done.invalid} records were not events (column _invalid)"
                  if done.invalid else ""))


COMMANDS = [export]
