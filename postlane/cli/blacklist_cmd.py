"""``postlane blacklist list|add|remove|why``."""

from __future__ import annotations

import getpass
import sys
import time

import click
import orjson

from postlane import blacklistops as ops
from processors.blacklist.core import Rules, explain
from streams.client import BrokerUnavailable, ensure_topics
from streams.topics import BLACKLIST, BOUNCES

from .common import address_or_fail, fail, settings, when


@click.group()
def blacklist() -> None:
    """The blacklist: addresses Postlane does not mail (their recipients get
    the state ``suppressed``)."""


@blacklist.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json: bool) -> None:
    """Blacklisted addresses, as the routers see them (the blacklist topic)."""
    try:
        entries = [e for e in ops.published(settings()).values() if e.blacklisted]
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    entries.sort(key=lambda e: e.address)
    if as_json:
        click.echo(orjson.dumps([{"address": e.address, "since": e.since, "manual": e.manual,
                                  "reason": e.reason} for e in entries],
                                option=orjson.OPT_INDENT_2).decode())
        return
    if not entries:
        click.echo("the blacklist is empty")
    for e in entries:
        by = "ops" if e.manual else "bounces"
        click.echo(f"{e.address}  since {when(e.since)} ({by}): {e.reason}")


def _edit(address: str, action: str, reason: str, wait: float) -> None:
    s = settings()
    addr = address_or_fail(address)
    try:
        ensure_topics(s, (BOUNCES, BLACKLIST))
        ops.edit(s, addr, action, reason, by=getpass.getuser())
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    want = action == "add"
    click.echo(f"{addr}: {action} published")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        e = ops.published(s).get(addr)
        if e is not None and e.blacklisted == want:
            click.echo(f"{addr}: {'blacklisted' if want else 'not blacklisted'} ({e.reason})")
            return
        time.sleep(0.5)
    if wait:
        click.echo("the blacklist processor has not applied it yet (is `postlane worker "
                   "blacklist` running?)", err=True)
        sys.exit(1)


@blacklist.command()
@click.argument("address")
@click.option("--reason", default="", help="Why, in words (kept with the entry).")
@click.option("--wait", type=float, default=10.0, show_default=True,
              help="Seconds to wait until the blacklist processor applied it (0: don't).")
def add(address: str, reason: str, wait: float) -> None:
    """Blacklist ADDRESS now (kept until removed, even when mail comes from it)."""
    _edit(address, "add", reason, wait)


@blacklist.command()
@click.argument("address")
@click.option("--reason", default="")
@click.option("--wait", type=float, default=10.0, show_default=True)
def remove(address: str, reason: str, wait: float) -> None:
    """Take ADDRESS off the blacklist and clear its counted bounces."""
    _edit(address, "remove", reason, wait)


@blacklist.command()
@click.argument("address")
@click.option("--json", "as_json", is_flag=True)
def why(address: str, as_json: bool) -> None:
    """The bounces of ADDRESS and what they did: counted or not, and why;
    folded from the bounces topic with the processor's own rules."""
    s = settings()
    addr = address_or_fail(address)
    rules = Rules.from_settings(s)
    try:
        state = ops.history(s, addr, rules)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if state is None:
        click.echo(f"{addr}: no bounce, no mail and no edit recorded", err=True)
        sys.exit(1)
    if as_json:
        click.echo(orjson.dumps(state.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo("\n".join(explain(state, rules)))


COMMANDS = [blacklist]
