"""A one-agent Faust worker for tests/e2e/test_batches.py, run as
``python -m tests.e2e.batches_app`` with the test's ``POSTLANE_*`` settings.

The agent reads ``BATCHES_TOPIC`` (raw bytes; the values are short ASCII
names like ``e3``) with ``streams.batches.batches`` (``BATCHES_IMPL=batches``)
or Faust's own ``Stream.take_events`` (``BATCHES_IMPL=take_events``), and
appends one JSON line per step to ``BATCHES_OUT``:

- ``{"step": "got", "values": [...], "offsets": [...], "t": wall time}``
  when the body takes a batch;
- ``"raise"`` before it raises (the batch holds a value listed in
  ``BATCHES_RAISE_ON``, comma-separated);
- ``"hang"`` before it awaits an hour (a value in ``BATCHES_HANG_ON``), for
  a SIGTERM to arrive mid-batch;
- ``"done"`` when the body finished (after sleeping ``BATCHES_SLEEP`` s).

With ``BATCHES_ACLOSE=1`` the agent closes the generator when its loop ends
(``contextlib.aclosing``): a body that raised then finalizes its batch at
once (the generator's ``finally`` runs) instead of leaving the generator
suspended, which is what the plain ``async for`` does.

``BATCHES_MAX``, ``BATCHES_WITHIN`` and ``BATCHES_EAGER`` (1/0) are the
batching arguments. ``BATCHES_FILE``, if set, is a Python file whose
``batches`` function replaces ``streams.batches.batches`` (a deliberately
broken copy, to see the tests fail against it).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import time
from collections.abc import Callable
from typing import Any

import faust

from postlane.runner import use_event_loop
from streams.app import create_app
from streams.batches import batches
from streams.settings import Settings


def _names(var: str) -> set[str]:
    return {v for v in os.environ.get(var, "").split(",") if v}


def _batches_function() -> Callable[..., Any]:
    path = os.environ.get("BATCHES_FILE")
    if not path:
        return batches
    spec = importlib.util.spec_from_file_location("batches_under_test", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fn: Callable[..., Any] = module.batches
    return fn


def build(s: Settings) -> faust.App:
    impl = os.environ["BATCHES_IMPL"]
    assert impl in ("batches", "take_events"), impl
    max_ = int(os.environ.get("BATCHES_MAX", "10"))
    within = float(os.environ.get("BATCHES_WITHIN", "0.5"))
    eager = os.environ.get("BATCHES_EAGER", "1") == "1"
    sleep = float(os.environ.get("BATCHES_SLEEP", "0"))
    raise_on = _names("BATCHES_RAISE_ON")
    hang_on = _names("BATCHES_HANG_ON")
    aclose = os.environ.get("BATCHES_ACLOSE", "0") == "1"
    out = os.environ["BATCHES_OUT"]
    take = _batches_function()

    def record(step: str, values: list[str], **more: Any) -> None:
        line = {"step": step, "values": values, "t": time.time(), "pid": os.getpid(), **more}
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")

    app = create_app("batches", s)
    topic = app.topic(os.environ["BATCHES_TOPIC"], key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")

    @app.agent(topic)
    async def consume(stream: Any) -> None:
        source = (take(stream, max_, within, eager=eager) if impl == "batches"
                  else stream.take_events(max_, within))
        if aclose:  # close the generator when the body raises (see the docstring)
            async with contextlib.aclosing(source):
                await body(source)
        else:  # the plain ``async for`` of processors/*/agent.py
            await body(source)

    async def body(source: Any) -> None:
        async for batch in source:
            values = [bytes(e.value).decode() for e in batch]
            record("got", values, offsets=[e.message.offset for e in batch])
            if raise_on & set(values):
                record("raise", values)
                raise RuntimeError(f"the body failed on {values}")
            if hang_on & set(values):
                record("hang", values)
                await asyncio.sleep(3600)
            if sleep:
                await asyncio.sleep(sleep)
            record("done", values)

    return app


def main() -> None:
    s = Settings.from_env()
    use_event_loop(s)  # as postlane/runner.py does (create_app applies the fetch wait)
    app = build(s)
    worker = faust.Worker(app, loglevel="info", override_logging=True, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
