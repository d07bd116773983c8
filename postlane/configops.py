"""Read the live config view from the broker and publish changes to it."""

from __future__ import annotations

from processors.config.view import ConfigView, evolve
from schemas import (
    CONFIG_EVENTS,
    DkimKeyConfigured,
    Event,
    InvalidEvent,
    WebhookConfigured,
    decode_any,
)
from streams.client import ensure_topics, publish, read_all
from streams.settings import Settings
from streams.topics import CONFIG


def current_view(settings: Settings) -> ConfigView:
    view = ConfigView()
    for rec in read_all(settings, CONFIG, idle=0.3):
        try:
            view = evolve(view, decode_any(CONFIG_EVENTS, rec.value))
        except InvalidEvent:
            continue
    return view


def dkim_key_problems(items: list[tuple[str, Event]]) -> list[str]:
    """Every ``[[dkim]]`` entry about to be published whose key cannot be
    read here or is not a key of its algorithm, in words. (The key is read
    as the delivery worker will read it: the same file, or the same
    variable in this process's environment.)"""
    from processors.delivery.dkim import DkimError, load_key
    from streams.secrets import SecretUnavailable, read_dkim_key

    out = []
    for _, event in items:
        if isinstance(event, DkimKeyConfigured):
            try:
                load_key(event, read_dkim_key(event))
            except (SecretUnavailable, DkimError) as exc:
                out.append(str(exc))
    return out


def webhook_secret_problems(items: list[tuple[str, Event]]) -> list[str]:
    """Every ``[[webhooks]]`` entry about to be published whose signing
    secret cannot be read here (the same file, or the same variable in this
    process's environment, as the webhooks worker will read), in words."""
    from streams.secrets import SecretUnavailable, webhook_secret

    out = []
    for _, event in items:
        if isinstance(event, WebhookConfigured):
            try:
                webhook_secret(event)
            except SecretUnavailable as exc:
                out.append(str(exc))
    return out


def publish_config(settings: Settings, items: list[tuple[str, Event]]) -> None:
    """Publish ``items``; raises ConfigFileError, publishing nothing, when a
    DKIM key among them cannot be used (delivery would defer that domain's
    mail)."""
    problems = dkim_key_problems(items) + webhook_secret_problems(items)
    if problems:
        from .configfile import ConfigFileError

        raise ConfigFileError("; ".join(problems) + " (nothing was published)")
    ensure_topics(settings)
    publish(settings, CONFIG, items)
