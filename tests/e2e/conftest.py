from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded Tansu broker for the e2e session (tests isolate by topic prefix)."""
    d = tmp_path_factory.mktemp("broker")
    s = Settings.from_env(environ={}, embedded_port=free_port(), data_dir=str(d))
    b = EmbeddedBroker(s, log_path=Path(d) / "tansu.log").start()
    yield b
    b.stop()
