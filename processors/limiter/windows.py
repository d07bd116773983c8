"""Daily windows: a window opens at ``day_start`` (HH:MM) local time in
``timezone`` (IANA) and lasts until the same time the next day. Pure."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from schemas.errors import PostlaneError


class WindowError(PostlaneError, ValueError):
    """A time zone or day start that cannot be used."""


def _parse(timezone: str, day_start: str) -> tuple[ZoneInfo, time]:
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(f"limit_timezone {timezone!r} is not an IANA time zone "
                          "(e.g. UTC, Europe/Lisbon)") from None
    try:
        hh, mm = (int(x) for x in day_start.split(":"))
        start = time(hh, mm)
    except ValueError:
        raise WindowError(f"limit_day_start {day_start!r} must be HH:MM") from None
    return tz, start


def window_start(now: float, timezone: str = "UTC", day_start: str = "00:00") -> float:
    """Unix time when the window holding ``now`` opened."""
    tz, start = _parse(timezone, day_start)
    local = datetime.fromtimestamp(now, tz)
    opened = datetime.combine(local.date(), start, tz)
    # compare instants, not wall clocks: on a repeated hour (DST ends) two
    # local times compare equal while being an hour apart
    if opened.timestamp() > now:
        opened = datetime.combine(local.date() - timedelta(days=1), start, tz)
    return opened.timestamp()


def next_window(now: float, timezone: str = "UTC", day_start: str = "00:00") -> float:
    """Unix time when the next window opens (after ``now``)."""
    tz, start = _parse(timezone, day_start)
    opened = datetime.fromtimestamp(window_start(now, timezone, day_start), tz)
    nxt = datetime.combine(opened.date() + timedelta(days=1), start, tz)
    return nxt.timestamp()


def words(ts: float, timezone: str = "UTC") -> str:
    """``2026-11-23 00:00 UTC`` (or the zone's name)."""
    tz, _ = _parse(timezone, "00:00")
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M ") + timezone
