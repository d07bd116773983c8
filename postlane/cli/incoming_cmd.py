"""``postlane incoming test|list``: incoming (IMAP) servers."""

from __future__ import annotations

import asyncio

import click
import orjson

from postlane.configops import current_view
from schemas import IncomingServerChecked, IncomingServerConfigured, InvalidEvent, decode
from streams.client import BrokerUnavailable, read_all
from streams.topics import INCOMING_STATUS

from .common import fail, settings


@click.group()
def incoming() -> None:
    """Incoming (IMAP) servers the fetcher polls."""


def _servers(config_file: str | None) -> dict[str, IncomingServerConfigured]:
    if config_file:
        from postlane.configfile import ConfigFileError, load

        try:
            return {srv.name: srv for srv in load(config_file).incoming}
        except ConfigFileError as exc:
            fail(str(exc))
    try:
        return current_view(settings()).incoming
    except BrokerUnavailable as exc:
        fail(str(exc), 3)


@incoming.command("test")
@click.argument("name")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="take the server from this file instead of the live configuration")
@click.option("--timeout", default=10.0, show_default=True, help="seconds per step")
@click.option("--json", "as_json", is_flag=True)
def incoming_test(name: str, config_file: str | None, timeout: float, as_json: bool) -> None:
    """Test connection: connect, negotiate TLS, log in, open the folder and
    check IDLE. A failure is one sentence: what is wrong, what to change."""
    from processors.fetcher.probe import test_incoming

    found = _servers(config_file)
    server = found.get(name)
    if server is None:
        fail(f"no incoming server named {name!r}; known: {', '.join(sorted(found)) or 'none'}")
    report = asyncio.run(test_incoming(server, timeout=timeout))
    if as_json:
        click.echo(orjson.dumps(report.to_dict()).decode())
    else:
        for step in report.steps:
            click.echo(f"  [{'ok' if step.ok else 'FAILED'}] {step.name}: {step.detail}")
        click.echo(report.sentence)
    raise SystemExit(0 if report.ok else 1)


@incoming.command("list")
@click.option("--json", "as_json", is_flag=True)
def incoming_list(as_json: bool) -> None:
    """Incoming servers with the fetcher's last report on each."""
    s = settings()
    try:
        servers = current_view(s).incoming
        states: dict[str, IncomingServerChecked] = {}
        for rec in read_all(s, INCOMING_STATUS, idle=0.3):
            try:
                ev = decode(IncomingServerChecked, rec.value)
            except InvalidEvent:
                continue
            states[ev.server] = ev
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    rows = []
    for name in sorted(servers):
        srv, st = servers[name], states.get(name)
        rows.append({
            "name": name, "host": srv.host, "port": srv.port, "security": srv.security,
            "folder": srv.folder, "active": srv.active, "tenant": srv.tenant,
            "state": None if st is None else ("ok" if st.ok else "failing"),
            "sentence": None if st is None else st.sentence,
            "last_uid": None if st is None else st.last_uid,
        })
    if as_json:
        click.echo(orjson.dumps(rows).decode())
        return
    for r in rows:
        click.echo(f"{r['name']:16} {r['host']}:{r['port']} {r['security']:8} "
                   f"folder={r['folder']} {'active' if r['active'] else 'INACTIVE'} "
                   f"state={r['state'] or 'not polled yet'}")
        if r["sentence"]:
            click.echo(f"    {r['sentence']}")


COMMANDS = [incoming]
