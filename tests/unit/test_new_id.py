"""schemas.base.new_id: event ids are version-4 UUIDs as hex, and differ."""

from __future__ import annotations

import os
import uuid

from schemas.base import new_id


def test_an_event_id_is_a_random_uuid_as_32_hex_digits() -> None:
    for _ in range(5000):
        text = new_id()
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == text and len(text) == 32


def test_ids_do_not_repeat_also_across_a_fork() -> None:
    seen = {new_id() for _ in range(50_000)}
    assert len(seen) == 50_000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids must not be the parent's next ones
        os.write(write, new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child not in seen and child != new_id()


def test_someone_seeding_random_does_not_repeat_ids() -> None:
    import random

    random.seed(7)
    first = new_id()
    random.seed(7)
    assert new_id() != first
