"""``postlane inbound route``: where an inbound mail would go, offline."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from postlane.configfile import ConfigFileError, events, load
from processors.config.view import fold
from processors.inbound.core import route_offline


@click.group()
def inbound() -> None:
    """Inbound mail: routing of fetched and received mail."""


@inbound.command("route")
@click.argument("mail_file", metavar="FILE.eml", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", default="postlane.toml", show_default=True,
              envvar="POSTLANE_CONFIG", help="The TOML config file (settings and [[aliases]]).")
@click.option("--sent-ids", "sent_ids_path", type=click.Path(dir_okay=False),
              help="A file of Message-IDs Postlane sent, one per line (stands in for the "
                   "reply table).")
@click.option("--tenant", default="", help="The tenant of the incoming server.")
@click.option("--envelope-to", multiple=True,
              help="SMTP envelope recipient(s), as the SMTP ingress would have them.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def inbound_route(mail_file: str, config_path: str, sent_ids_path: str | None, tenant: str,
                  envelope_to: tuple[str, ...], as_json: bool) -> None:
    """Show the routing decision for FILE.eml with the config file only (no
    broker): duplicate and loop history are not known offline.

    Exit status: 0 bounce, reply or alias; 1 rejected or dropped; 2 input error."""
    try:
        view = fold(events(load(config_path)))
        raw = Path(mail_file).read_bytes()
        sent: list[str] = []
        if sent_ids_path:
            sent = Path(sent_ids_path).read_text(encoding="utf-8").splitlines()
    except ConfigFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (OSError, UnicodeDecodeError) as exc:
        click.echo(f"error: cannot read {exc}", err=True)
        sys.exit(2)
    d = route_offline(raw, view, sent, tenant=tenant, envelope_to=list(envelope_to))
    if as_json:
        out = {
            "route": d.route,
            "target": d.target or None,
            "reason": d.reason,
            "rule": d.rule,
            "alias": d.alias or None,
            "policy": d.policy or None,
            "tenant": d.tenant or None,
            "original_message_id": d.original_message_id or None,
            "bounce_to": d.bounce_to or None,
        }
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        target = f" -> {d.target}" if d.target else ""
        click.echo(f"{d.route}{target} ({d.rule})\n  because {d.reason}")
    sys.exit(0 if d.route in ("bounce", "reply", "alias") else 1)


@inbound.command("show")
@click.option("--limit", default=20, show_default=True, help="the latest N decisions")
@click.option("--json", "as_json", is_flag=True)
def inbound_show(limit: int, as_json: bool) -> None:
    """The latest routing decisions of inbound mail (from inbound-routed)."""
    from schemas import InboundMailRouted, InvalidEvent, decode
    from streams.client import BrokerUnavailable, read_all
    from streams.topics import INBOUND_ROUTED

    from .common import fail, settings

    rows = []
    try:
        for rec in read_all(settings(), INBOUND_ROUTED, idle=0.3):
            try:
                rows.append(decode(InboundMailRouted, rec.value))
            except InvalidEvent:
                continue
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    rows.sort(key=lambda e: e.occurred_at)
    rows = rows[-limit:] if limit > 0 else rows
    if as_json:
        out = [{k: v for k, v in e.to_representation().items() if k != "mail"} for e in rows]
        click.echo(orjson.dumps(out).decode())
        return
    for e in rows:
        target = f" -> {e.target}" if e.target else ""
        click.echo(f"{e.route}{target}  from {e.sender or '?'}  {e.subject[:60]!r}  "
                   f"[{e.server or e.source}]\n    {e.reason}")


COMMANDS = [inbound]
