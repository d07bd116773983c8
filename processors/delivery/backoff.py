"""Moved to ``policy.py`` (the SMTP trouble policy, in one module); kept for
``core.py``, which imports ``RetrySettings`` and ``next_attempt_at`` from here."""

from .policy import RetrySettings, Status, classify, next_attempt_at, parse_enhanced, retry_delay

__all__ = ["RetrySettings", "Status", "classify", "next_attempt_at", "parse_enhanced",
           "retry_delay"]
