"""Glue shared by agents: send a refused input to the dead-letter topic."""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from schemas import Event, EventDeadLettered, InvalidEvent, decode_any, encode
from schemas.deadletter import EXCERPT_BYTES

log = logging.getLogger("postlane.deadletter")


def dead_letter_event(processor: str, message: Any, error: str) -> EventDeadLettered:
    """Build the event from a Faust ``Message`` (topic, partition, offset,
    key, value) and the reason."""
    raw = message.value if isinstance(message.value, bytes | None) else bytes(message.value)
    raw = raw or b""
    excerpt = raw[:EXCERPT_BYTES]
    text, b64 = _as_text(excerpt, cut=len(raw) > EXCERPT_BYTES), ""
    if text is None:
        text, b64 = "", base64.b64encode(excerpt).decode()
    key = message.key or b""
    if len(key) > 1024:
        key = key[:1024]
    return EventDeadLettered(
        processor=processor,
        source_topic=str(message.topic),
        error=error if len(error) <= 4096 else error[:4096] + " [cut]",
        partition=int(message.partition),
        offset=int(message.offset),
        key=key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key),
        value=text,
        value_b64=b64,
        value_bytes=len(raw),
        value_sha256=hashlib.sha256(raw).hexdigest(),
        truncated=len(raw) > EXCERPT_BYTES,
    )


def _as_text(excerpt: bytes, cut: bool) -> str | None:
    """The excerpt as UTF-8 text; None when it is not UTF-8. A cut may
    split the last character: that partial tail is dropped."""
    try:
        return excerpt.decode("utf-8")
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(excerpt) - 3 and exc.reason == "unexpected end of data":
            return excerpt[:exc.start].decode("utf-8")
        return None


async def send_dead_letter(dlq: Any, processor: str, message: Any, error: str) -> None:
    event = dead_letter_event(processor, message, error)
    log.warning("%s dead-lettered %s[%d]@%d: %s", processor, event.source_topic,
                event.partition, event.offset, error)
    await dlq.send(key=event.key.encode(), value=encode(event))


async def decode_or_dead_letter(
    dlq: Any, processor: str, message: Any, registry: dict[str, type[Event]],
    untyped: dict[str, str] | None = None,
) -> Event | None:
    """Decode a message of a topic carrying several event types; an invalid
    one is dead-lettered with the reason and None returned. ``untyped``:
    full topic name -> the type its records without ``type`` are read as
    (``streams.topics.untyped_by_topic``)."""
    try:
        return decode_any(registry, message.value,
                          (untyped or {}).get(str(message.topic), ""))
    except InvalidEvent as exc:
        await send_dead_letter(dlq, processor, message, str(exc))
        return None
