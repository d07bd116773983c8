"""``postlane config apply|show`` and ``postlane servers add|update|remove|list``."""

from __future__ import annotations

import click
import orjson

from postlane.configops import (
    current_view,
    dkim_key_problems,
    publish_config,
    webhook_secret_problems,
)
from schemas import InvalidEvent, OutgoingServerRemoved
from streams.client import BrokerUnavailable

from .common import fail, settings


@click.group()
def config() -> None:
    """Configuration as events on the compacted config topic."""


@config.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="print what would change, publish nothing")
def config_apply(path: str, dry_run: bool) -> None:
    """Publish what changed between PATH and the live configuration."""
    from postlane.configfile import ConfigFileError, limit_warnings, load, plan

    s = settings()
    try:
        desired = load(path)
        for warning in limit_warnings(desired, s.partitions):
            click.echo(f"warning: {warning}", err=True)
        items = plan(current_view(s), desired)
        if dry_run:
            # what publishing would refuse
            problems = dkim_key_problems(items) + webhook_secret_problems(items)
            if problems:
                raise ConfigFileError("; ".join(problems) + " (nothing would be published)")
        else:
            publish_config(s, items)
    except ConfigFileError as exc:
        fail(str(exc))
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    for key, event in items:
        click.echo(f"{'would publish' if dry_run else 'published'} {event.type} {key}")
    if not items:
        click.echo("no change: the live configuration already matches the file")


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
def config_show(as_json: bool) -> None:
    """Print the live configuration view (rebuilt from the config topic)."""
    from postlane.configfile import view_to_dict

    try:
        view = current_view(settings())
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    data = view_to_dict(view)
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(_toml_like(data))


def _toml_like(data: dict[str, object]) -> str:
    lines: list[str] = []
    for section, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in value.items()]
            lines.append("")
        elif isinstance(value, list):
            for item in value:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in item.items()]
                lines.append("")
    return "\n".join(lines).rstrip()


@click.group()
def servers() -> None:
    """Outgoing servers, one at a time."""


_SERVER_OPTIONS = [
    click.option("--host"), click.option("--port", type=int),
    click.option("--security", type=click.Choice(["none", "starttls", "ssl"])),
    click.option("--username"), click.option("--password-env"), click.option("--password-file"),
    click.option("--sender"), click.option("--from-filter"), click.option("--priority", type=int),
    click.option("--active/--inactive", default=None),
    click.option("--kind", type=click.Choice(["transactional", "mass", "any"])),
    click.option("--tenant"), click.option("--allow-self-signed/--verify-cert", default=None),
    click.option("--archive-bcc"), click.option("--reply-to"),
    click.option("--daily-limit", type=int),
]


def _server_options(fn: click.decorators.FC) -> click.decorators.FC:
    for opt in reversed(_SERVER_OPTIONS):
        fn = opt(fn)
    return fn


def _upsert(name: str, fields: dict[str, object], must_exist: bool) -> None:
    from postlane.configfile import server_event_from_options

    s = settings()
    try:
        view = current_view(s)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    existing = view.servers.get(name)
    if must_exist and existing is None:
        fail(f"no server named {name!r}; `postlane servers list` shows them")
    if not must_exist and existing is not None:
        fail(f"server {name!r} exists; use `postlane servers update {name}`")
    if existing is None and not fields.get("host"):
        fail("--host is required")
    try:
        event = server_event_from_options(name, existing, **fields)
    except (InvalidEvent, ValueError) as exc:
        fail(str(exc))
    publish_config(s, [(event.key, event)])
    click.echo(f"published {event.type} {event.key}")


@servers.command("add")
@click.argument("name")
@_server_options
def servers_add(name: str, **fields: object) -> None:
    """Add an outgoing server."""
    _upsert(name, fields, must_exist=False)


@servers.command("update")
@click.argument("name")
@_server_options
def servers_update(name: str, **fields: object) -> None:
    """Change some fields of an outgoing server."""
    _upsert(name, fields, must_exist=True)


@servers.command("remove")
@click.argument("name")
def servers_remove(name: str) -> None:
    """Remove an outgoing server."""
    s = settings()
    if name not in current_view(s).servers:
        fail(f"no server named {name!r}")
    event = OutgoingServerRemoved(name=name)
    publish_config(s, [(event.key, event)])
    click.echo(f"published {event.type} {event.key}")


@servers.command("list")
@click.option("--json", "as_json", is_flag=True)
def servers_list(as_json: bool) -> None:
    """List outgoing servers in selection order (priority, then name)."""
    try:
        view = current_view(settings())
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    rows = sorted(view.servers.values(), key=lambda x: (x.priority, x.name))
    if as_json:
        click.echo(orjson.dumps([r.to_representation() for r in rows]).decode())
        return
    for r in rows:
        click.echo(
            f"{r.name:16} {r.host}:{r.port} {r.security:8} prio={r.priority:<4} "
            f"{'active' if r.active else 'INACTIVE':8} kind={r.kind} "
            f"filter={r.from_filter or '-'} tenant={r.tenant or '-'}"
        )


COMMANDS = [config, servers]


@servers.command("test")
@click.argument("name")
@click.option("--send-to", help="also send a test mail to this address")
@click.option("--on-behalf", help="check the login may send as this address (same domain)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="take the server from this file instead of the live configuration")
@click.option("--timeout", default=10.0, show_default=True, help="seconds per step")
@click.option("--json", "as_json", is_flag=True)
def servers_test(name: str, send_to: str | None, on_behalf: str | None,
                 config_file: str | None, timeout: float, as_json: bool) -> None:
    """Test connection: connect, negotiate TLS, log in, optionally check
    sending on behalf of another address and send a test mail."""
    import asyncio

    from processors.delivery.probe import test_connection

    if config_file:
        from postlane.configfile import ConfigFileError, load

        try:
            found = {srv.name: srv for srv in load(config_file).servers}
        except ConfigFileError as exc:
            fail(str(exc))
    else:
        try:
            found = current_view(settings()).servers
        except BrokerUnavailable as exc:
            fail(str(exc), 3)
    server = found.get(name)
    if server is None:
        fail(f"no server named {name!r}; known: {', '.join(sorted(found)) or 'none'}")
    report = asyncio.run(test_connection(server, send_to, on_behalf, timeout=timeout))
    if as_json:
        click.echo(orjson.dumps(report.to_dict()).decode())
    else:
        for step in report.steps:
            click.echo(f"  [{'ok' if step.ok else 'FAILED'}] {step.name}: {step.detail}")
        click.echo(report.sentence or ("connection works" if report.ok else "failed"))
    raise SystemExit(0 if report.ok else 1)
