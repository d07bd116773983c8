"""``postlane queue`` (list the mail in the queue) and the ops commands
``postlane retry|send-now|cancel|ack``."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click
import orjson

from postlane import queueops as ops
from schemas.status import STATES
from streams.client import BrokerUnavailable

from .common import fail, settings

SUBJECT_WIDTH = 30


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts)) if ts > 0 else "?"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(mails: list[ops.QueuedMail]) -> str:
    """One line per mail: id, state, server, attempt, updated (UTC), subject, reason."""
    rows = [(m.message_id, m.state + (" (acked)" if m.acknowledged else ""), m.server or "-",
             str(m.attempt), _when(m.updated_at), _cut(m.subject, SUBJECT_WIDTH) or "-",
             m.reason) for m in mails]
    head = ("ID", "STATE", "SERVER", "ATT", "UPDATED (UTC)", "SUBJECT", "REASON")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(6)]
    lines = []
    for r in [head, *rows]:
        cells = [r[i].rjust(widths[i]) if i == 3 else r[i].ljust(widths[i]) for i in range(6)]
        lines.append("  ".join([*cells, r[6]]).rstrip())
    return "\n".join(lines)


@click.command()
@click.option("--state", "states", multiple=True, type=click.Choice(STATES),
              help="only mail in this state (repeatable); default: "
                   + ", ".join(ops.OPEN_STATES))
@click.option("--server", default="", help="only mail routed to this outgoing server")
@click.option("--limit", default=50, show_default=True,
              help="show the N most recently updated (0: all)")
@click.option("--all", "show_all", is_flag=True,
              help="include acknowledged failures, and every state when no --state is given")
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def queue(states: tuple[str, ...], server: str, limit: int, show_all: bool,
          as_json: bool) -> None:
    """List mail with its state, server, attempt, last update, subject and
    reason (the error text), as the status topic has it now. Oldest update
    first: the newest is last. Failures acknowledged with `postlane ack`
    are hidden unless --all."""
    if limit < 0:
        fail("--limit must be 0 (all) or more")
    try:
        mails = ops.list_queue(settings(), states, server, show_all, limit)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if as_json:
        click.echo(orjson.dumps([m.to_dict() for m in mails],
                                option=orjson.OPT_INDENT_2).decode())
    elif not mails:
        click.echo("no mail to show" + ("" if show_all else " (--all shows every state)"))
    else:
        click.echo(render(mails))


def _run(command: str, ids: tuple[str, ...], note: str, timeout: float, as_json: bool) -> None:
    if timeout <= 0:
        fail("--timeout must be more than 0 seconds")
    if any(not m.strip() for m in ids):
        fail("a message id is empty")
    try:
        answers = ops.issue(settings(), command, ids, note=note, timeout=timeout)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if as_json:
        click.echo(orjson.dumps([a.to_dict() for a in answers],
                                option=orjson.OPT_INDENT_2).decode())
    else:
        for a in answers:
            click.echo(a.line(timeout))
    if not all(a.ok for a in answers):
        sys.exit(1)


def _options(fn: Callable[..., None]) -> Callable[..., None]:
    fn = click.option("--json", "as_json", is_flag=True, help="print the answers as JSON")(fn)
    fn = click.option("--timeout", default=30.0, show_default=True,
                      help="seconds to wait for the answers")(fn)
    fn = click.option("--note", default="", help="why (kept in the mail's history)")(fn)
    return fn


@click.command()
@click.argument("ids", nargs=-1, required=True)
@_options
def retry(ids: tuple[str, ...], note: str, timeout: float, as_json: bool) -> None:
    """Retry failed mail now: delivery sends it again to its failed
    recipients. Exit status 0 when every command was applied, 1 when any
    was refused or unanswered."""
    _run("retry", ids, note, timeout, as_json)


@click.command("send-now")
@click.argument("message_id")
@_options
def send_now(message_id: str, note: str, timeout: float, as_json: bool) -> None:
    """Send a held (scheduled, paced, over its daily limit) or deferred mail
    now. Exit status 0 when applied, 1 when refused or unanswered."""
    _run("send_now", (message_id,), note, timeout, as_json)


@click.command()
@click.argument("ids", nargs=-1, required=True)
@_options
def cancel(ids: tuple[str, ...], note: str, timeout: float, as_json: bool) -> None:
    """Cancel queued or deferred mail: it will not be sent. Exit status 0
    when every command was applied, 1 when any was refused or unanswered."""
    _run("cancel", ids, note, timeout, as_json)


@click.command()
@click.argument("ids", nargs=-1, required=True)
@_options
def ack(ids: tuple[str, ...], note: str, timeout: float, as_json: bool) -> None:
    """Acknowledge failed mail: it stays failed, and `postlane queue` no
    longer lists it (unless --all). Exit status 0 when every command was
    applied, 1 when any was refused or unanswered."""
    _run("ack", ids, note, timeout, as_json)

COMMANDS = [queue, retry, send_now, cancel, ack]
