"""Shared CLI helpers: settings, errors in words, output."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from streams.settings import Settings


def settings() -> Settings:
    return Settings.from_env()


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
