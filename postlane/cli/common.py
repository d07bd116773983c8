"""Shared CLI helpers: settings, errors in words, output."""

from __future__ import annotations

import sys
import time
from typing import NoReturn

import click

from streams.settings import Settings


def settings() -> Settings:
    return Settings.from_env()


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def when(ts: float) -> str:
    """A time for a person (UTC, to the minute); "?" when unknown."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts)) if ts else "?"


def address_or_fail(value: str) -> str:
    """The lower-cased bare address, or exit with the reason."""
    from processors.bounces.core import normal_address

    addr = normal_address(value)
    if not addr:
        fail(f"{value!r} is not an e-mail address")
    return addr
