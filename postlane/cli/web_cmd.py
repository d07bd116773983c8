"""``postlane web`` (the console) and ``postlane web adduser NAME``."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from .common import fail, settings


@click.group(invoke_without_command=True)
@click.pass_context
def web(ctx: click.Context) -> None:
    """The web console on POSTLANE_WEB_HOST:POSTLANE_WEB_PORT (127.0.0.1:8642),
    with /metrics on POSTLANE_METRICS_PORT. Log in with a user of the users
    file (`postlane web adduser NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    from postlane.web.app import ConsoleServer, users_file
    from postlane.web.auth import UserFileError, read_users
    from streams import metrics

    s = settings()
    try:
        if not read_users(users_file(s)):
            click.echo(f"no users in {users_file(s)} yet: add one with `postlane web adduser "
                       "NAME`", err=True)
    except UserFileError as exc:
        fail(str(exc))
    server = ConsoleServer(s)
    try:
        server.start()
    except OSError as exc:
        fail(f"the console cannot listen on {s.web_host}:{s.web_port} ({exc.strerror}): set "
             "POSTLANE_WEB_PORT to a free port")
    metrics.serve(s.metrics_host, s.metrics_port)
    click.echo(f"console on {server.url} (users: {users_file(s)}); metrics on "
               f"http://{s.metrics_host}:{s.metrics_port}/metrics; Ctrl-C stops it")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        done.wait()
    finally:
        server.stop()


@web.command()
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin (one line)")
def adduser(name: str, password_stdin: bool) -> None:
    """Add (or change the password of) a console user: its scrypt hash goes
    to the users file (POSTLANE_WEB_USERS_FILE, default <data_dir>/web-users)."""
    from postlane.web.app import users_file
    from postlane.web.auth import UserFileError, add_user

    path: Path = users_file(settings())
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        new = add_user(path, name, password)
    except UserFileError as exc:
        fail(str(exc))
    click.echo(f"{'added' if new else 'changed the password of'} {name} in {path}")


COMMANDS = [web]
