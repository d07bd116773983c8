"""``postlane broker``, ``postlane worker NAME...`` and ``postlane dev``."""

from __future__ import annotations

import signal
import time

import click

from postlane.runner import build, run
from processors.registry import available
from streams.client import ensure_topics
from streams.embedded import BrokerError, EmbeddedBroker

from .common import fail, settings


@click.command()
def broker() -> None:
    """Run the embedded Tansu broker alone (memory storage: stopping it
    loses every topic)."""
    s = settings()
    if not s.embedded:
        fail(f"POSTLANE_BROKER is set ({s.broker}); the embedded broker is not needed")
    try:
        b = EmbeddedBroker(s).start()
    except BrokerError as exc:
        fail(str(exc))
    ensure_topics(s)
    click.echo(f"embedded broker (Tansu, memory only) on {b.bootstrap}; Ctrl-C stops it")
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        while not stop["now"] and b.proc is not None and b.proc.poll() is None:
            time.sleep(0.2)
    finally:
        b.stop()


@click.command()
@click.argument("names", nargs=-1, required=True)
@click.option("--loglevel", default="info", show_default=True)
def worker(names: tuple[str, ...], loglevel: str) -> None:
    """Run only the named processors (router, delivery, status) against the
    configured broker. Each name set is its own consumer group, so each can
    be started, scaled and killed on its own."""
    from streams import metrics

    s = settings()
    ensure_topics(s)
    metrics.serve(s.metrics_host, s.metrics_port)
    run(build(list(names), s), loglevel)


@click.command()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="apply this config file at start (or POSTLANE_CONFIG_FILE)")
@click.option("--loglevel", default="info", show_default=True)
def dev(config_file: str | None, loglevel: str) -> None:
    """The embedded broker and every processor in one process."""
    from postlane.devstack import DevStack

    s = settings()
    stack = DevStack(s, config_file or s.config_file or None)
    try:
        stack.start()
    except BrokerError as exc:
        fail(str(exc))
    try:
        click.echo(stack.banner())
        run(build(available(), stack.settings, app_name="dev"), loglevel)
    finally:
        stack.stop()


COMMANDS = [broker, worker, dev]
