"""``postlane webhooks list|test NAME|log``."""

from __future__ import annotations

import asyncio
import sys
import time

import click
import orjson

from postlane.configfile import ConfigFileError
from postlane.configfile import load as load_file
from processors.config.view import ConfigView
from processors.config.view import fold as fold_view
from processors.webhooks import core
from processors.webhooks.http import Poster
from schemas import (
    InvalidEvent,
    WebhookConfigured,
    WebhookDeadLettered,
    WebhookDelivered,
    decode_any,
)
from streams.client import BrokerUnavailable, read_all
from streams.secrets import SecretUnavailable, webhook_secret
from streams.topics import WEBHOOKS

from .common import fail, settings


def _view(config: str | None) -> ConfigView:
    if config:
        from postlane.configfile import events

        try:
            return fold_view(events(load_file(config)))
        except ConfigFileError as exc:
            fail(str(exc))
    from postlane.configops import current_view

    try:
        return current_view(settings())
    except BrokerUnavailable as exc:
        fail(str(exc), 3)


@click.group()
def webhooks() -> None:
    """Signed webhooks: what became of each mail, posted to services."""


@webhooks.command("list")
@click.option("--config", default=None, help="Read this config file instead of the live view.")
def list_(config: str | None) -> None:
    """The configured endpoints."""
    view = _view(config)
    if not view.webhooks:
        click.echo("no webhooks configured ([[webhooks]] in the config file)")
    for hook in sorted(view.webhooks.values(), key=lambda h: h.name):
        secret = f"secret_env {hook.secret_env}" if hook.secret_env else \
            f"secret_file {hook.secret_file}"
        click.echo(f"{hook.name}: {hook.url}  events {', '.join(hook.event_types())}  "
                   f"tenant {hook.tenant or '(every tenant)'}  {secret}")


async def _ping(hook: WebhookConfigured, secret: bytes, timeout: float) -> core.Answer:
    poster = Poster(timeout)
    try:
        body = core.body_of(core.ping(hook.name, time.time()))
        return await poster.post(hook.url, body, secret, time.time(),
                                 {"Postlane-Event": "ping"})
    finally:
        await poster.close()


@webhooks.command("test")
@click.argument("name")
@click.option("--config", default=None, help="Read this config file instead of the live view.")
def test(name: str, config: str | None) -> None:
    """POST a signed ping to webhook NAME and say what it answered.

    Exit status: 0 it answered 2xx; 1 it did not; 2 unknown name or no secret."""
    view = _view(config)
    hook = view.webhooks.get(name)
    if hook is None:
        known = ", ".join(sorted(view.webhooks)) or "none"
        fail(f"no webhook named {name!r} (configured: {known})")
    try:
        secret = webhook_secret(hook)
    except SecretUnavailable as exc:
        fail(str(exc))
    t0 = time.monotonic()
    answer = asyncio.run(_ping(hook, secret, settings().webhook_timeout))
    took = time.monotonic() - t0
    if answer.ok:
        click.echo(f"{name}: {hook.url} answered HTTP {answer.status} to a signed ping in "
                   f"{took:.2f} s")
        return
    click.echo(f"{name}: {answer.reason}", err=True)
    sys.exit(1)


@webhooks.command("log")
@click.option("--dead", is_flag=True, help="Only the dead-lettered notifications.")
@click.option("--json", "as_json", is_flag=True)
def log(dead: bool, as_json: bool) -> None:
    """What became of each notification (the webhooks topic)."""
    registry = {"WebhookDelivered": WebhookDelivered, "WebhookDeadLettered": WebhookDeadLettered}
    s = settings()
    out = []
    try:
        for rec in read_all(s, WEBHOOKS, idle=0.3):
            try:
                ev = decode_any(registry, rec.value)
            except InvalidEvent:
                continue
            if dead and not isinstance(ev, WebhookDeadLettered):
                continue
            out.append(ev)
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    if as_json:
        click.echo(orjson.dumps([e.to_representation() for e in out],
                                option=orjson.OPT_INDENT_2).decode())
        return
    for ev in out:
        if isinstance(ev, WebhookDeadLettered):
            click.echo(f"{ev.webhook}: {ev.event} {ev.message_id} {ev.recipient}: dead after "
                       f"{ev.attempts} tries: {ev.reason}")
        else:
            assert isinstance(ev, WebhookDelivered)
            click.echo(f"{ev.webhook}: {ev.event} {ev.message_id} {ev.recipient}: delivered "
                       f"(HTTP {ev.status}, {ev.attempts} tries)")


COMMANDS = [webhooks]
