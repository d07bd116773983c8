"""The limits in force: built from the config view and the settings."""

from __future__ import annotations

from typing import Any

from processors.config.view import ConfigView
from schemas import RateError, parse_rate
from streams.settings import Settings

from .core import Limits, ServerLimits


def _rate(text: str) -> float:
    try:
        return parse_rate(text)
    except RateError:
        return 0.0  # validated on the way in; an old bad value paces nothing


def limits_from(view: ConfigView, settings: Settings) -> Limits:
    return Limits(
        partitions=settings.partitions,
        servers={
            name: ServerLimits(daily=s.daily_limit, rate=_rate(s.rate), rate_text=s.rate)
            for name, s in view.servers.items()
            if s.daily_limit > 0 or s.rate
        },
        tenants={name: t.daily_limit for name, t in view.tenants.items() if t.daily_limit > 0},
        domains={d: (_rate(p.rate), p.rate) for d, p in view.domains.items()},
        timezone=settings.limit_timezone,
        day_start=settings.limit_day_start,
        mass_window=settings.mass_window,
        inflight_timeout=settings.mass_inflight_timeout,
    )


class LimitsCache:
    """The limits of the current config view, rebuilt only when it changed."""

    def __init__(self, config: Any, settings: Settings) -> None:
        self._config = config
        self._settings = settings
        self._version = -1
        self._limits = Limits()

    def __call__(self) -> Limits:
        view = self._config.view
        if view.version != self._version:
            self._limits = limits_from(view, self._settings)
            self._version = view.version
        return self._limits
