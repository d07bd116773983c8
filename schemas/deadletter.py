"""EventDeadLettered: an input a processor could not use, kept with why."""

from __future__ import annotations

from .base import Event


class EventDeadLettered(Event):
    """``value`` is the raw input as text (``value_b64`` when it was not
    UTF-8); ``error`` says what is wrong and ``processor`` who refused it."""

    processor: str
    source_topic: str
    error: str
    partition: int = -1
    offset: int = -1
    key: str = ""
    value: str = ""
    value_b64: str = ""
