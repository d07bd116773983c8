"""``postlane unsubscribe serve``: the one-click unsubscribe web service."""

from __future__ import annotations

import signal
import threading

import click

from .common import fail, settings


@click.group()
def unsubscribe() -> None:
    """One-click unsubscribe (RFC 8058) for mass mail."""


@unsubscribe.command("serve")
def serve() -> None:
    """Serve GET/POST /u/TOKEN on POSTLANE_UNSUBSCRIBE_HOST:PORT until stopped."""
    from processors.unsubscribe.web import from_settings
    from streams.client import BrokerUnavailable, ensure_topics
    from streams.secrets import SecretUnavailable

    s = settings()
    try:
        ensure_topics(s)
        server, close = from_settings(s)
        server.start()
    except (SecretUnavailable, BrokerUnavailable) as exc:
        fail(str(exc), 3)
    except OSError as exc:
        fail(f"cannot listen on {s.unsubscribe_host}:{s.unsubscribe_port} ({exc.strerror}): "
             "set POSTLANE_UNSUBSCRIBE_PORT to a free port", 3)
    click.echo(f"unsubscribe service on {server.url} (links: {s.unsubscribe_url}/u/TOKEN)")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    close()


COMMANDS = [unsubscribe]
