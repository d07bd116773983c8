"""Build a Faust app holding the named processors and run it as a worker."""

from __future__ import annotations

import asyncio
import gc

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
    use_event_loop(settings)  # before the app asks for its loop
    app = create_app(app_name or "-".join(sorted(names)), settings)
    rt = make_runtime(app, settings)
    for name in names:
        registrar(name)(rt)
    return rt


def use_event_loop(settings: Settings) -> None:
    """Run every event loop of the process (the worker's and the consumer
    thread's) on uvloop when ``settings.uvloop``: the same asyncio API with
    the loop, its callbacks and its sockets in C. Measured in the pipeline
    bench (bench/README.md)."""
    if settings.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def tune_gc(settings: Settings) -> None:
    """The worker's cyclic garbage collector: everything start-up made
    (modules, the app, its agents and tables) is frozen out of the
    collector's walks, and the first generation is collected every
    ``settings.gc_threshold`` net allocations instead of Python's 700. Mail
    makes short-lived objects that reference counting frees; the collector's
    walks over the long-lived rest were CPU per mail for nothing
    (bench/README.md). 0: Python's own settings."""
    if settings.gc_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, second, third = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold, second, third)


def run(rt: Runtime, loglevel: str = "info") -> None:
    """Run until SIGTERM/SIGINT (blocks)."""
    tune_gc(rt.settings)
    worker = faust.Worker(rt.app, loglevel=loglevel, override_logging=True, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
