"""What the router does with one raw input before routing it (pure).

A request the pipeline cannot carry, or cannot read, is dead-lettered; when
its ``message_id`` can still be read, the router also answers
``RoutingDecided(outcome="rejected")`` with the reason, so the sender's
status says ``rejected`` and why instead of staying ``queued`` for ever.

Why a size limit here: every hop after the router carries the request
(``RoutingDecided.request``, then ``MailReleased.decision``), and a record
over ``max_request_bytes`` is refused by the workers' producers. A request
that the publisher or another client wrote anyway is answered here, once,
before it reaches a hop that cannot write it.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas import InvalidEvent, RoutingDecided, SendRequested, decode

# room for the RoutingDecided / MailReleased wrapped around the request
ENVELOPE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Intake:
    """``request``: the request to route; else ``error`` (dead-letter it)
    and ``answer`` (publish it, when the message id was readable)."""

    request: SendRequested | None = None
    error: str = ""
    answer: RoutingDecided | None = None


def carried_limit(max_request_bytes: int) -> int:
    """The largest encoded request every hop can still write."""
    return max(0, max_request_bytes - ENVELOPE_BYTES)


def take(raw: bytes | None, key: bytes | None, max_request_bytes: int) -> Intake:
    size = len(raw or b"")
    limit = carried_limit(max_request_bytes)
    if size > limit:
        error = (f"the request is {size} bytes encoded, over the {limit} bytes a mail can "
                 "carry through the pipeline (POSTLANE_MAX_REQUEST_BYTES less room for the "
                 "routing decision): send a link instead of the attachment, or raise "
                 "max_request_bytes and the broker's message size limit together")
        return Intake(error=error, answer=_rejected(_message_id(raw, key), error))
    try:
        return Intake(request=decode(SendRequested, raw))
    except InvalidEvent as exc:
        return Intake(error=str(exc), answer=_rejected(_message_id(raw, key), str(exc)))


def _message_id(raw: bytes | None, key: bytes | None) -> str:
    """The request's message_id when it can be read and is the record's key
    (a key that is not the id would put the answer on another partition
    than the mail's other events)."""
    try:
        data = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return ""
    mid = data.get("message_id") if isinstance(data, dict) else None
    if not isinstance(mid, str) or not mid or len(mid) > 200 or "\n" in mid or "\r" in mid:
        return ""
    return mid if key is not None and key == mid.encode() else ""


def _rejected(message_id: str, error: str) -> RoutingDecided | None:
    if not message_id:
        return None
    return RoutingDecided(message_id=message_id, outcome="rejected",
                          reason=f"rejected before routing: {error}")
