"""Moved to ``streams/secrets.py`` (below the processors, which read their
servers' passwords and keys through it). This re-export stays while
``postlane/web/app.py`` imports it from here."""

from streams.secrets import (
    SecretUnavailable,
    read_dkim_key,
    require_password,
    resolve_password,
    unsubscribe_secret,
    webhook_secret,
)

__all__ = ["SecretUnavailable", "read_dkim_key", "require_password", "resolve_password",
           "unsubscribe_secret", "webhook_secret"]
