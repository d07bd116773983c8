"""``postlane schemas``: export a JSON Schema per event for non-Python publishers."""

from __future__ import annotations

from pathlib import Path

import click

from schemas.export import export_all


@click.group("schemas")
def schemas() -> None:
    """JSON Schemas of Postlane's events (the wire contract)."""


@schemas.command("export")
@click.argument(
    "directory",
    metavar="DIR",
    type=click.Path(file_okay=False, dir_okay=True, writable=True, path_type=Path),
)
def export(directory: Path) -> None:
    """Write <EventName>.schema.json for every event, and index.json, into DIR."""
    try:
        written = export_all(directory)
    except OSError as exc:
        raise click.ClickException(f"cannot write schemas to {directory}: {exc}") from None
    for path in written:
        click.echo(str(path))


COMMANDS = [schemas]
