"""Build a Faust app holding the named processors and run it as a worker."""

from __future__ import annotations

import faust

from processors.registry import PROCESSORS, registrar
from processors.runtime import Runtime, make_runtime
from streams.app import create_app
from streams.settings import Settings


def build(names: list[str], settings: Settings, app_name: str | None = None) -> Runtime:
    unknown = [n for n in names if n not in PROCESSORS]
    if unknown:
        raise SystemExit(
            f"unknown processor(s): {', '.join(unknown)}; known: {', '.join(PROCESSORS)}"
        )
    app = create_app(app_name or "-".join(sorted(names)), settings)
    rt = make_runtime(app, settings)
    for name in names:
        registrar(name)(rt)
    return rt


def run(rt: Runtime, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT (blocks)."""
    worker = faust.Worker(rt.app, loglevel=loglevel, override_logging=True, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
