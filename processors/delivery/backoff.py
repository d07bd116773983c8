"""Retry timing and SMTP reply classification. Pure functions, no I/O.

Back-off follows Postfix: the first retry after ``retry_first`` seconds,
then doubling, never more than ``retry_max`` apart, and no retry once the
mail has been trying for longer than ``retry_give_up``.
"""

from __future__ import annotations

import re
from typing import Literal, Protocol

Status = Literal["accepted", "deferred", "failed"]

_ENHANCED_AT_START = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_ENHANCED_ANYWHERE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")


class RetrySettings(Protocol):
    """The part of ``streams.settings.Settings`` back-off reads."""

    @property
    def retry_first(self) -> float: ...

    @property
    def retry_max(self) -> float: ...

    @property
    def retry_give_up(self) -> float: ...


def retry_delay(attempt: int, settings: RetrySettings) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    first = max(float(settings.retry_first), 0.0)
    cap = max(float(settings.retry_max), first)
    n = max(attempt, 1) - 1
    if n >= 64:  # 2**64 * anything positive is past any cap
        return cap if first > 0 else 0.0
    return min(first * (2**n), cap)


def next_attempt_at(
    attempt: int, first_at: float, now: float, settings: RetrySettings
) -> float | None:
    """When to try again after attempt number ``attempt`` (1-based) failed
    temporarily, as unix seconds; None when the mail has been trying since
    ``first_at`` for longer than ``settings.retry_give_up`` (give up: the
    deferred recipients become failed)."""
    if now - first_at > settings.retry_give_up:
        return None
    return now + retry_delay(attempt, settings)


def classify(code: int | None) -> Status:
    """An SMTP reply code as a recipient status: 2xx/3xx accepted, 5xx
    failed, and 4xx, no answer (None, 0) or nonsense deferred."""
    if code is None:
        return "deferred"
    if 200 <= code < 400:
        return "accepted"
    if 500 <= code < 600:
        return "failed"
    return "deferred"


def parse_enhanced(text: str) -> str:
    """The RFC 3463 enhanced status code in a server's answer (``"5.1.1"``),
    preferably where it belongs (the start of the text, or of any line), else
    the first one found; ``""`` when there is none."""
    if not text:
        return ""
    for line in text.splitlines():
        m = _ENHANCED_AT_START.match(line)
        if m:
            return ".".join(m.groups())
    m = _ENHANCED_ANYWHERE.search(text)
    return ".".join(m.groups()) if m else ""
