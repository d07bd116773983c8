"""``postlane report deliverability [--since] [--until] --by GROUP [--json] [--plot FILE]``."""

from __future__ import annotations

import click
import orjson

from postlane import reportops
from streams.client import BrokerUnavailable

from .common import fail, settings
from .replay_cmd import parse_time


@click.group()
def report() -> None:
    """Reports from the topics."""


@report.command("deliverability")
@click.option("--since", default=None, help="From this time (unix seconds or ISO 8601).")
@click.option("--until", default=None, help="Up to this time (unix seconds or ISO 8601).")
@click.option("--by", "by", type=click.Choice(reportops.GROUPS), default="server",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--plot", "plot", default=None, type=click.Path(dir_okay=False),
              help="Also draw the counts per group into this PNG file.")
def deliverability(since: str | None, until: str | None, by: str, as_json: bool,
                   plot: str | None) -> None:
    """Sent, deferred, failed, hard and soft bounces, complaints,
    unsubscribes, suppressed and delivery latency p50/p99 per server,
    recipient domain, reason, tenant or day (recipients; see the README)."""
    s = settings()
    lo = parse_time(since) if since else None
    hi = parse_time(until) if until else None
    try:
        rows = reportops.report(s, by, lo, hi)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    total = reportops.totals(rows)
    if plot:
        reportops.plot(rows, by, plot)
    if as_json:
        click.echo(orjson.dumps({"by": by, "since": lo, "until": hi,
                                 "rows": [r.to_dict() for r in rows],
                                 "total": total.to_dict(), "plot": plot},
                                option=orjson.OPT_INDENT_2).decode())
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Deliverability by {by}")
    table.add_column(by)
    heads = ["sent", "deferred", "failed", "hard", "soft", "complaints", "unsubs", "suppressed",
             "p50 s", "p99 s"]
    for h in heads:
        table.add_column(h, justify="right")

    def cells(r: reportops.Row) -> list[str]:
        d = r.to_dict()
        lat = [("-" if d[k] is None else f"{d[k]:.3f}") for k in ("latency_p50", "latency_p99")]
        return [r.group, *(str(r.counts[c]) for c in reportops.COUNTS), *lat]

    for r in rows:
        table.add_row(*cells(r))
    table.add_row(*cells(total), style="bold")
    import sys

    # a pipe or a file gets the whole table, not one squeezed into 80 columns
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    if plot:
        click.echo(f"plot written to {plot}")


COMMANDS = [report]
