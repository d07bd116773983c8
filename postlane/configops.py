"""Read the live config view from the broker and publish changes to it."""

from __future__ import annotations

from processors.config.view import ConfigView, evolve
from schemas import CONFIG_EVENTS, Event, InvalidEvent, decode_any
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


def publish_config(settings: Settings, items: list[tuple[str, Event]]) -> None:
    ensure_topics(settings)
    publish(settings, CONFIG, items)
