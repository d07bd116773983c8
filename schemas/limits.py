"""Limits as configuration: tenants' daily limits and recipient-domain pacing.

A rate is a string ``"<count>/<unit>"`` with unit ``s``, ``min`` or ``h``
(``"10/s"``, ``"600/min"``, ``"1000/h"``); ``parse_rate`` turns it into
messages per second. Keys on the config topic: ``tenant:<name>`` and
``domain:<domain>`` (``domain:*`` is the default for every domain not listed).
"""

from __future__ import annotations

from .addresses import AddressError, has_crlf, idna_domain
from .base import Event
from .errors import PostlaneError

_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0,
          "h": 3600.0, "hour": 3600.0}


class RateError(PostlaneError, ValueError):
    """A rate string that is not ``<count>/<unit>``."""


def parse_rate(text: str) -> float:
    """``"600/min"`` -> 10.0 messages per second; ``""`` -> 0.0 (no pacing)."""
    if not text:
        return 0.0
    count, sep, unit = text.strip().partition("/")
    if not sep or unit.strip().lower() not in _UNITS:
        raise RateError(f"rate {text!r} must look like 10/s, 600/min or 1000/h")
    try:
        n = float(count)
    except ValueError:
        raise RateError(f"rate {text!r}: {count!r} is not a number") from None
    if not n > 0:
        raise RateError(f"rate {text!r} must be above 0 (leave it empty for no pacing)")
    return n / _UNITS[unit.strip().lower()]


def name_problems(name: str) -> list[str]:
    """A config name that is part of a key (``server:<name>``, ``tenant:<name>``)."""
    if not name or has_crlf(name) or ":" in name:
        return [f"name {name!r} must be non-empty, without ':' or line breaks"]
    return []


def rate_problems(field: str, text: str) -> list[str]:
    try:
        parse_rate(text)
    except RateError as exc:
        return [f"{field}: {exc}"]
    return []


class TenantConfigured(Event):
    """A tenant (company) and its daily limit over every server (0: none)."""

    name: str
    daily_limit: int = 0

    def problems(self) -> list[str]:
        out = super().problems() + name_problems(self.name)
        if self.daily_limit < 0:
            out.append("daily_limit must be >= 0")
        return out

    @property
    def key(self) -> str:
        return f"tenant:{self.name}"


class TenantRemoved(Event):
    name: str

    @property
    def key(self) -> str:
        return f"tenant:{self.name}"


class DomainPaceConfigured(Event):
    """Pacing for mail to one recipient domain (``*``: every other domain),
    to protect the sender's reputation at big receivers."""

    domain: str
    rate: str

    def problems(self) -> list[str]:
        out = super().problems()
        if self.domain != "*":
            try:
                idna_domain(self.domain)
            except AddressError as exc:
                out.append(f"domain: {exc}")
        if not self.rate:
            out.append("rate is required (e.g. 60/min)")
        out += rate_problems("rate", self.rate)
        return out

    @property
    def key(self) -> str:
        return f"domain:{self.domain.lower()}"


class DomainPaceRemoved(Event):
    domain: str

    @property
    def key(self) -> str:
        return f"domain:{self.domain.lower()}"
