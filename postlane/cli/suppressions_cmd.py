"""``postlane suppressions list|add|remove|why [--type] [--tenant]``."""

from __future__ import annotations

import getpass
import sys
import time
from typing import Any

import click
import orjson

from postlane import blacklistops as ops
from processors.blacklist.core import Rules, applies, describe, explain, suppressions
from schemas import SuppressionEdited
from schemas.bounces import SUPPRESSION_TYPES
from schemas.unsubscribe import UnsubscribeRequested
from streams.client import BrokerUnavailable, ensure_topics, publish
from streams.topics import BLACKLIST, BOUNCES

from .common import address_or_fail, fail, settings, when

TYPE = click.option("--type", "stype", type=click.Choice(SUPPRESSION_TYPES), default=None,
                    help="Only this type.")
TENANT = click.option("--tenant", default=None,
                      help="Only suppressions that apply to this tenant (global ones too).")


def _matches(entry: dict[str, Any], stype: str | None, tenant: str | None) -> bool:
    if stype and entry["type"] != stype:
        return False
    return tenant is None or not entry.get("tenant") or entry["tenant"] == tenant


def rows(published: dict[str, Any], stype: str | None, tenant: str | None
         ) -> list[dict[str, Any]]:
    """One row per (address, suppression), as the routers see them."""
    out = []
    for addr, change in sorted(published.items()):
        entries = change.suppressions or ([{
            "type": "manual" if change.manual else "hard_bounce", "tenant": "", "list_id": "",
            "reason": change.reason, "since": change.since}] if change.blacklisted else [])
        for e in entries:
            if _matches(e, stype, tenant):
                out.append({"address": addr, **e})
    return out


@click.group()
def suppressions_group() -> None:
    """Suppressions by type (hard_bounce, complaint, unsubscribe, manual), per
    tenant or global: recipients the router does not mail (state
    ``suppressed``, the reason naming the type)."""


@suppressions_group.command("list")
@TYPE
@TENANT
@click.option("--json", "as_json", is_flag=True)
def list_(stype: str | None, tenant: str | None, as_json: bool) -> None:
    """Every suppression, as the routers see them (the blacklist topic)."""
    try:
        found = rows(ops.published(settings()), stype, tenant)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if as_json:
        click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no suppression")
    for r in found:
        click.echo(f"{r['address']}  {describe(r)}  (since {when(float(r.get('since') or 0))})")


def _publish(addr: str, event: Any, check: Any, wait: float) -> None:
    s = settings()
    try:
        ensure_topics(s, (BOUNCES, BLACKLIST))
        publish(s, BOUNCES, [(addr, event)])
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    click.echo(f"{addr}: published")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        change = ops.published(s).get(addr)
        if change is not None and check(change.suppressions):
            click.echo(f"{addr}: " + ("; ".join(describe(e) for e in change.suppressions)
                                      or "no suppression left"))
            return
        time.sleep(0.5)
    if wait:
        click.echo("the blacklist processor has not applied it yet (is `postlane worker "
                   "blacklist` running?)", err=True)
        sys.exit(1)


def _has(stype: str, tenant: str, list_id: str) -> Any:
    return lambda entries: any((e["type"], e["tenant"], e["list_id"]) == (stype, tenant, list_id)
                               for e in entries)


@suppressions_group.command()
@click.argument("address")
@click.option("--type", "stype", type=click.Choice(("manual", "complaint", "unsubscribe")),
              default="manual", show_default=True)
@click.option("--tenant", default="", help="Only this tenant's mail (default: every tenant).")
@click.option("--list", "list_id", default="",
              help="Only mass mail of this list (an unsubscribe: empty is every list).")
@click.option("--reason", default="")
@click.option("--wait", type=float, default=10.0, show_default=True,
              help="Seconds to wait until the blacklist processor applied it (0: don't).")
def add(address: str, stype: str, tenant: str, list_id: str, reason: str, wait: float) -> None:
    """Suppress ADDRESS (for a tenant, a list, or every mail)."""
    addr = address_or_fail(address)
    event: Any
    if stype == "unsubscribe":
        event = UnsubscribeRequested(address=addr, tenant=tenant, list_id=list_id, via="manual",
                                     requested_at=time.time())
    else:
        event = SuppressionEdited(address=addr, action="add", suppression_type=stype,
                                  tenant=tenant, list_id=list_id, reason=reason,
                                  by=getpass.getuser())
    _publish(addr, event, _has(stype, tenant, list_id), wait)


@suppressions_group.command()
@click.argument("address")
@click.option("--type", "stype", type=click.Choice(SUPPRESSION_TYPES), required=True)
@click.option("--tenant", default="")
@click.option("--list", "list_id", default="")
@click.option("--reason", default="")
@click.option("--wait", type=float, default=10.0, show_default=True)
def remove(address: str, stype: str, tenant: str, list_id: str, reason: str,
           wait: float) -> None:
    """Lift the suppression of this type and scope (hard_bounce also clears
    the counted bounces)."""
    addr = address_or_fail(address)
    event = SuppressionEdited(address=addr, action="remove", suppression_type=stype,
                              tenant=tenant, list_id=list_id, reason=reason,
                              by=getpass.getuser())
    has = _has(stype, tenant, list_id)
    _publish(addr, event, lambda entries: not has(entries), wait)


@suppressions_group.command()
@click.argument("address")
@TYPE
@TENANT
@click.option("--kind", type=click.Choice(("transactional", "mass")), default=None,
              help="With --tenant: would a mail of this kind (and --list) be suppressed?")
@click.option("--list", "list_id", default="")
@click.option("--json", "as_json", is_flag=True)
def why(address: str, stype: str | None, tenant: str | None, kind: str | None, list_id: str,
        as_json: bool) -> None:
    """Why ADDRESS is suppressed: every suppression with its type, scope and
    cause, and its bounces; folded from the bounces topic with the
    processor's own function."""
    s = settings()
    addr = address_or_fail(address)
    rules = Rules.from_settings(s)
    try:
        state = ops.history(s, addr, rules)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if state is None:
        click.echo(f"{addr}: nothing recorded (no bounce, complaint, unsubscribe or edit)",
                   err=True)
        sys.exit(1)
    entries = [e for e in suppressions(state) if _matches(e, stype, tenant)]
    if as_json:
        click.echo(orjson.dumps({"address": addr, "suppressions": entries,
                                 "state": state.to_dict()},
                                option=orjson.OPT_INDENT_2).decode())
        return
    if kind is not None:
        stops = [e for e in entries if applies(e, tenant or "", kind, list_id)]
        click.echo(f"a {kind} mail of tenant {tenant or '(none)'}"
                   + (f", list {list_id}" if list_id else "") + ": "
                   + ("suppressed by " + "; ".join(describe(e) for e in stops) if stops
                      else "sent"))
    click.echo("\n".join(explain(state, rules)))


suppressions_group.name = "suppressions"
COMMANDS = [suppressions_group]
