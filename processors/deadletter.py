"""Glue shared by agents: send a refused input to the dead-letter topic."""

from __future__ import annotations

import base64
import logging
from typing import Any

from schemas import Event, EventDeadLettered, InvalidEvent, decode_any, encode

log = logging.getLogger("postlane.deadletter")


def dead_letter_event(processor: str, message: Any, error: str) -> EventDeadLettered:
    """Build the event from a Faust ``Message`` (topic, partition, offset,
    key, value) and the reason."""
    raw = message.value if isinstance(message.value, bytes | None) else bytes(message.value)
    try:
        text, b64 = (raw or b"").decode("utf-8"), ""
    except UnicodeDecodeError:
        text, b64 = "", base64.b64encode(raw or b"").decode()
    key = message.key or b""
    return EventDeadLettered(
        processor=processor,
        source_topic=str(message.topic),
        error=error,
        partition=int(message.partition),
        offset=int(message.offset),
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key),
        value=text,
        value_b64=b64,
    )


async def send_dead_letter(dlq: Any, processor: str, message: Any, error: str) -> None:
    event = dead_letter_event(processor, message, error)
    log.warning("%s dead-lettered %s[%d]@%d: %s", processor, event.source_topic,
                event.partition, event.offset, error)
    await dlq.send(key=event.key.encode(), value=encode(event))


async def decode_or_dead_letter(
    dlq: Any, processor: str, message: Any, registry: dict[str, type[Event]]
) -> Event | None:
    """Decode a message of a topic carrying several event types; an invalid
    one is dead-lettered with the reason and None returned."""
    try:
        return decode_any(registry, message.value)
    except InvalidEvent as exc:
        await send_dead_letter(dlq, processor, message, str(exc))
        return None
