"""The ``postlane`` command. Each submodule exposes ``COMMANDS``: the click
commands or groups it adds to the top level."""

from __future__ import annotations

import click

from . import (
    blacklist_cmd,
    bounces_cmd,
    config_cmd,
    dkim_cmd,
    export_cmd,
    inbound_cmd,
    incoming_cmd,
    queue_cmd,
    replay_cmd,
    report_cmd,
    route,
    run_cmd,
    schemas_cmd,
    send_cmd,
    status_cmd,
    suppressions_cmd,
    unsubscribe_cmd,
    web_cmd,
    webhooks_cmd,
)

# the order commands are listed in (a missing module is an ImportError, not a
# command quietly gone)
_MODULES = (
    route, schemas_cmd, config_cmd, run_cmd, send_cmd, status_cmd,
    inbound_cmd, incoming_cmd, bounces_cmd, blacklist_cmd, replay_cmd,
    queue_cmd, dkim_cmd, unsubscribe_cmd, suppressions_cmd,
    export_cmd, report_cmd, webhooks_cmd, web_cmd,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Postlane: an event-sourced mail gateway on Kafka."""


for _mod in _MODULES:
    for _cmd in _mod.COMMANDS:
        main.add_command(_cmd)
