"""``postlane replay blacklist [--as-of TIME]``: rebuild a table from the log."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import click
import orjson

from postlane import blacklistops as ops
from postlane import replayops
from processors.blacklist.core import Rules, comparable
from streams.client import BrokerUnavailable

from .common import fail, settings


def parse_time(value: str) -> float:
    """Unix seconds, or ISO 8601 (``2026-11-22``, ``2026-11-22T10:00``,
    ``2026-11-22 10:00:00+01:00``; UTC when no offset is given)."""
    v = value.strip()
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither unix seconds nor an ISO 8601 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "?"


@click.group()
def replay() -> None:
    """Rebuild state from the log with the processors' own functions."""


@replay.command("blacklist")
@click.option("--as-of", "as_of", default=None,
              help="Only events written at or before this time (unix seconds or ISO 8601).")
@click.option("--changelog", default=None,
              help="The live table's changelog topic (default: found by name).")
@click.option("--json", "as_json", is_flag=True)
def replay_blacklist(as_of: str | None, changelog: str | None, as_json: bool) -> None:
    """Fold the bounces topic from offset 0 (or up to --as-of) into the
    blacklist, and show it and every difference from the live table.

    Exit status: 0 they agree; 1 they differ; 3 no broker."""
    s = settings()
    rules = Rules.from_settings(s)
    cutoff = parse_time(as_of) if as_of else None
    try:
        result = ops.replay(s, rules, cutoff)
        topic = changelog or replayops.pick_changelog(
            s, ops.TABLE, "blacklist", replayops.changelog_topics(s, ops.TABLE))
        # with --as-of, the live table and the blacklist topic as they were then
        live = ops.live_table(s, topic, cutoff) if topic else {}
        published = ops.published(s, cutoff)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    listed = sorted((st for st in result.states.values() if st.blacklisted),
                    key=lambda st: st.address)
    diffs = ops.differences(result.states, live, rules)
    pub = {a for a, e in published.items() if e.blacklisted}
    rep = {st.address for st in listed}
    pub_diffs = [f"{a}: replay {'blacklisted' if a in rep else 'not blacklisted'} / "
                 f"blacklist topic {'blacklisted' if a in pub else 'not blacklisted'}"
                 for a in sorted(pub ^ rep)]
    agree = not diffs and not pub_diffs
    if as_json:
        click.echo(orjson.dumps({
            "as_of": cutoff, "records": result.records, "folded": result.records
            - result.after - result.skipped, "skipped": result.skipped, "after": result.after,
            "addresses": len(result.states), "live_table": topic,
            "blacklist": [{"address": st.address, "since": st.since, "manual": st.manual,
                           "reason": st.reason,
                           "counted": comparable(st, rules)["counted"]} for st in listed],
            "differences": diffs, "blacklist_topic_differences": pub_diffs, "agree": agree,
        }, option=orjson.OPT_INDENT_2).decode())
        sys.exit(0 if agree else 1)
    upto = f" up to {_when(cutoff)}" if cutoff is not None else ""
    click.echo(f"replayed {result.records - result.after} of {result.records} records of "
               f"{s.topic('bounces')}{upto}: {len(result.states)} addresses, "
               f"{len(listed)} blacklisted ({result.skipped} skipped as the processor would)")
    for st in listed:
        click.echo(f"  {st.address}  since {_when(st.since)}"
                   f"{' (ops)' if st.manual else ''}: {st.reason}")
    if topic is None:
        click.echo("no live table found (no blacklist changelog topic): nothing to compare")
    elif agree:
        click.echo(f"agrees with the live table ({topic}) and the blacklist topic")
    else:
        if cutoff is not None:
            click.echo("(compared with the live table and the blacklist topic as of then: "
                       "a change written within milliseconds of that time may fall on "
                       "either side)")
        for line in diffs:
            click.echo(f"  differs: {line}")
        for line in pub_diffs:
            click.echo(f"  differs: {line}")
    sys.exit(0 if agree else 1)


def _table_command(name: str, doc: str) -> click.Command:
    @click.command(name, help=f"Replay the {name} table ({doc}) from offset 0, compare it "
                   "with the live table (its changelog) and exit 0 only when they agree "
                   "(1: they differ or there is no live table; 3: no broker).")
    @click.option("--as-of", "as_of", default=None,
                  help="Only records written at or before this time (unix seconds or ISO "
                  "8601), in the sources and in the live table's changelog.")
    @click.option("--changelog", default=None,
                  help="The live table's changelog topic (default: found by name).")
    @click.option("--json", "as_json", is_flag=True)
    @click.option("--rows/--no-rows", default=True, help="Print the replayed rows.")
    def command(as_of: str | None, changelog: str | None, as_json: bool, rows: bool) -> None:
        s = settings()
        cutoff = parse_time(as_of) if as_of else None
        try:
            out = replayops.replay(s, name, cutoff, changelog)
        except BrokerUnavailable as exc:
            fail(str(exc), 3)
        if as_json:
            click.echo(orjson.dumps({
                "table": out.table, "as_of": out.as_of, "records": out.records,
                "folded": out.folded, "skipped": out.skipped, "rows": len(out.rows),
                "live_table": out.live_topic, "live_rows": len(out.live),
                "seconds": round(out.seconds, 3),
                "events_per_second": round(out.records / out.seconds) if out.seconds else 0,
                "table_rows": out.rows if rows else None,
                "differences": out.differences, "agree": out.agree,
            }, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
            sys.exit(0 if out.agree else 1)
        upto = f" up to {_when(cutoff)}" if cutoff is not None else ""
        click.echo(f"replayed {out.table}{upto}: {out.records} records, {out.folded} folded, "
                   f"{out.skipped} skipped as the processor would, {len(out.rows)} rows "
                   f"({out.seconds:.2f} s)")
        if rows:
            for key in sorted(out.rows):
                row = orjson.dumps(out.rows[key], option=orjson.OPT_SORT_KEYS).decode()
                click.echo(f"  {key}: {row}")
        if out.live_topic is None:
            click.echo(f"no live table found (no {out.table} changelog topic): nothing to "
                       "compare")
        elif out.agree:
            click.echo(f"agrees with the live table ({out.live_topic}, {len(out.live)} rows)")
        else:
            click.echo(f"differs from the live table ({out.live_topic}, {len(out.live)} rows):")
            for line in out.differences:
                click.echo(f"  differs: {line}")
        sys.exit(0 if out.agree else 1)

    return command


for _name, _spec in replayops.tables().items():
    if _name != "blacklist":  # its own command above (the blacklist topic too)
        replay.add_command(_table_command(_name, _spec.doc))
replay.add_command(replay_blacklist, "suppressions")


COMMANDS = [replay]
