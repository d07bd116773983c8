"""``postlane bounces parse FILE.eml`` (offline) and ``postlane bounces
submit FILE.eml`` (publish a raw bounce mail to the bounce-mail topic)."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

import click
import orjson

from postlane.configfile import ConfigFileError, events, load
from processors.bounces.core import our_domains
from processors.bounces.parser import BounceParseError, parse_bounce, results_json
from processors.config.view import ConfigView, fold
from schemas import BounceMailReceived
from streams.client import BrokerUnavailable, ensure_topics, publish
from streams.topics import BOUNCE_MAIL

from .common import fail, settings


@click.group()
def bounces() -> None:
    """Bounce mails: parse them offline, or hand them to the bounce processor."""


def _view(config_path: str | None) -> ConfigView:
    """The config file's view when one is given (or ./postlane.toml exists):
    its bounce alias and domains make attribution stricter."""
    path = config_path or ("postlane.toml" if Path("postlane.toml").exists() else None)
    if not path:
        return ConfigView()
    return fold(events(load(path)))


@bounces.command("parse")
@click.argument("mail_file", metavar="FILE.eml", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", default=None, envvar="POSTLANE_CONFIG",
              help="The TOML config file (bounce_alias, catchall_domain and the servers' "
                   "domains: only our bounce addresses and Message-IDs are attributed). "
                   "Default: ./postlane.toml when it exists, else any domain.")
@click.option("--json", "as_json", is_flag=True,
              help='Print the failed recipients as a JSON list of {"recipient", "status", '
                   '"replycode", "hard", "reason", "diagnostic", "message_id"}.')
@click.option("--report", is_flag=True,
              help="Print everything as JSON: kind, format, attribution, failed, delayed and "
                   "complaints.")
def parse(mail_file: str, config_path: str | None, as_json: bool, report: bool) -> None:
    """Read a bounce mail and show one result per failed recipient.

    Exit status: 0 a bounce with failures; 1 no failure (a delay notice, an
    automatic reply, a complaint, not a bounce); 2 input error."""
    try:
        view = _view(config_path)
        raw = Path(mail_file).read_bytes()
        s = view.settings
        parsed = parse_bounce(raw, bounce_alias=s.bounce_alias or "bounce",
                              domains=our_domains(view))
    except ConfigFileError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        click.echo(f"error: cannot read {mail_file}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    except BounceParseError as exc:
        click.echo(f"error: {mail_file}: {exc}", err=True)
        sys.exit(2)
    if report:
        click.echo(orjson.dumps(parsed.to_dict(), option=orjson.OPT_INDENT_2).decode())
    elif as_json:
        click.echo(orjson.dumps(results_json(parsed), option=orjson.OPT_INDENT_2).decode())
    else:
        via = f" (by {parsed.attributed_by})" if parsed.attributed_by else ""
        click.echo(f"{parsed.kind} ({parsed.format}); message "
                   f"{parsed.message_id or 'unknown'}{via}")
        if parsed.note:
            click.echo(f"  {parsed.note}")
        for r in parsed.results:
            code = " ".join(str(x) for x in (r.replycode or "", r.status) if x)
            click.echo(f"  {r.recipient}: {'hard' if r.hard else 'soft'} {r.reason} {code}")
            click.echo(f"      {r.diagnostic}")
        for r in parsed.delayed:
            click.echo(f"  {r.recipient}: delayed {r.status} {r.diagnostic}".rstrip())
        for r in parsed.complaints:
            click.echo(f"  {r.recipient}: {r.diagnostic}")
    sys.exit(0 if parsed.results else 1)


@bounces.command("submit")
@click.argument("mail_files", metavar="FILE.eml...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False))
def submit(mail_files: tuple[str, ...]) -> None:
    """Publish raw bounce mails to the bounce-mail topic (as a mail server
    pipe or a script would), for the bounce processor."""
    s = settings()
    items = []
    for path in mail_files:
        raw = Path(path).read_bytes()
        ident = hashlib.sha256(raw).hexdigest()[:32]
        items.append((ident, BounceMailReceived(
            bounce_mail_id=ident, mail=base64.b64encode(raw).decode(), source="cli")))
    try:
        ensure_topics(s, (BOUNCE_MAIL,))
        publish(s, BOUNCE_MAIL, list(items))
    except BrokerUnavailable as exc:
        fail(str(exc), 3)
    for ident, _ in items:
        click.echo(ident)


COMMANDS = [bounces]
