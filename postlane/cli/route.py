"""``postlane route``: which server would send a mail from ADDR, offline."""

from __future__ import annotations

import sys

import click
import orjson

from postlane.configfile import ConfigFileError, events, load
from processors.config.view import fold
from processors.router.core import decide
from schemas import InvalidEvent, SendRequested


@click.command()
@click.option(
    "--config",
    "config_path",
    default="postlane.toml",
    show_default=True,
    envvar="POSTLANE_CONFIG",
    help="The TOML config file.",
)
@click.option("--from", "from_", required=True, help="The From, e.g. '\"Admin\" <a@x.com>'.")
@click.option("--tenant", default="", help="The tenant (company) sending.")
@click.option(
    "--kind",
    type=click.Choice(["transactional", "mass"]),
    default="transactional",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def route(config_path: str, from_: str, tenant: str, kind: str, as_json: bool) -> None:
    """Show which server would send a mail from ADDR, and its From and
    envelope sender, using the config file only (no broker needed).

    Exit status: 0 routed, 1 no server, 2 config or input error."""
    try:
        view = fold(events(load(config_path)))
        request = SendRequested(
            message_id="route-check",
            from_=from_,
            to=["recipient@example.invalid"],
            text="x",
            tenant=tenant,
            kind=kind,
        )
    except (ConfigFileError, InvalidEvent) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    d = decide(view, request)
    routed = d.outcome == "routed"
    if as_json:
        out = {
            "server": d.server or None,
            "from": d.header_from or None,
            "envelope_from": d.envelope_from or None,
            "rule": d.rule,
            "reason": d.reason,
        }
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    elif routed:
        click.echo(
            f"server {d.server} ({d.rule}): From {d.header_from}, "
            f"envelope sender {d.envelope_from}\n  because {d.reason}"
        )
    else:
        click.echo(f"{d.outcome.replace('_', ' ')}: {d.reason}")
    sys.exit(0 if routed else 1)


COMMANDS = [route]
