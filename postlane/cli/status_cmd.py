"""``postlane status ID``: a mail's state, reason, recipients and history."""

from __future__ import annotations

import sys
import time
from typing import Any

import click
import orjson

from postlane.statusview import read_status
from streams.client import BrokerUnavailable

from .common import fail, settings


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or ts <= 0:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _answer(r: dict[str, Any]) -> str:
    code, enhanced, text = (str(r.get(k) or "") for k in ("code", "enhanced", "text"))
    if enhanced and text.split(" ", 1)[0] == enhanced:
        enhanced = ""  # the server's text starts with it already: say it once
    return " ".join(p for p in (code, enhanced, text) if p)


def render(status: dict[str, Any]) -> str:
    """The human form: state and reason, recipients, history."""
    lines = [f"{status['message_id']} {status['state']}"
             + (f": {status['reason']}" if status.get("reason") else "")]
    where = []
    if status.get("server"):
        where.append(f"server {status['server']}")
    if status.get("attempt"):
        where.append(f"attempt {status['attempt']}")
    if where:
        lines.append("  " + ", ".join(where))
    recipients: dict[str, dict[str, Any]] = status.get("recipients") or {}
    if recipients:
        lines.append("recipients:")
        width = max(len(a) for a in recipients)
        for addr, r in recipients.items():
            answer = _answer(r)
            lines.append(f"  {addr:<{width}}  {r.get('state', '?'):<9}"
                         + (f" {answer}" if answer else ""))
    history = status.get("history") or []
    if history:
        lines.append("history:")
        for h in history:
            lines.append(f"  {_when(h.get('at'))}  {h.get('state', '?'):<9}"
                         + (f" {h['reason']}" if h.get("reason") else ""))
    return "\n".join(lines)


@click.command()
@click.argument("message_id")
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
def status(message_id: str, as_json: bool) -> None:
    """Show a mail's status (from the status topic): state, reason,
    per-recipient outcomes and history. Exit status 1: unknown id."""
    try:
        found = read_status(settings(), message_id)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if found is None:
        click.echo(f"{message_id}: no status (unknown message id, or the status "
                   "processor has not seen it yet)", err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render(found))


COMMANDS = [status]
