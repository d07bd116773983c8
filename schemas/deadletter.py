"""EventDeadLettered: an input a processor could not use, kept with why."""

from __future__ import annotations

from .base import Event

EXCERPT_BYTES = 64 * 1024


class EventDeadLettered(Event):
    """``value`` is the raw input as text (``value_b64`` when it was not
    UTF-8); ``error`` says what is wrong and ``processor`` who refused it.
    A large input keeps only its first ``EXCERPT_BYTES`` (the dead letter
    must fit the broker's limit): ``value_bytes`` is the whole input's size
    and ``value_sha256`` its digest, so the original can be found."""

    processor: str
    source_topic: str
    error: str
    partition: int = -1
    offset: int = -1
    key: str = ""
    value: str = ""
    value_b64: str = ""
    value_bytes: int = 0
    value_sha256: str = ""
    truncated: bool = False
