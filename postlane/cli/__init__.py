"""The ``postlane`` command. Each submodule exposes ``COMMANDS``: the click
commands or groups it adds to the top level."""

from __future__ import annotations

import importlib

import click

_MODULES = (
    "route", "schemas_cmd", "config_cmd", "run_cmd", "send_cmd", "status_cmd", "smtp_cmd",
    "inbound_cmd", "incoming_cmd", "bounces_cmd", "blacklist_cmd", "replay_cmd",
    "queue_cmd", "dkim_cmd", "unsubscribe_cmd", "suppressions_cmd",
    "export_cmd", "report_cmd", "webhooks_cmd", "web_cmd",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Postlane: an event-sourced mail gateway on Kafka."""


for _name in _MODULES:
    try:
        _mod = importlib.import_module(f"postlane.cli.{_name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"postlane.cli.{_name}":
            raise
        continue
    for _cmd in getattr(_mod, "COMMANDS", ()):
        main.add_command(_cmd)
