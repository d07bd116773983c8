"""What an agent module gets: the Faust app, settings, the live config view
and the topics, built once per worker process."""

from __future__ import annotations

from dataclasses import dataclass, field

import faust

from streams.app import topic
from streams.settings import Settings
from streams.tables import Rows, TableSpec
from streams.topics import ALL_TOPICS, TopicSpec

from .config.reader import ConfigReader


@dataclass
class Runtime:
    app: faust.App
    settings: Settings
    config: ConfigReader
    topics: dict[str, faust.TopicT] = field(default_factory=dict)

    def raw_topic(self, *specs: TopicSpec) -> faust.TopicT:
        """An agent's input over ``specs`` as raw bytes: the agent decodes (and
        dead-letters) each event itself, so one bad record never stops it."""
        return self.app.topic(*(spec.full(self.settings) for spec in specs),
                              key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")

    def table(self, spec: TableSpec) -> Rows:
        """The Faust table ``spec`` declares (streams/tables.py): raw byte keys,
        values in the one row encoding (``Rows`` encodes and decodes them)."""
        return Rows(self.app.Table(
            spec.name, default=None, key_type=bytes, value_type=bytes,
            partitions=spec.partitions(self.settings), use_partitioner=spec.use_partitioner,
            help=f"{spec.key} -> {spec.doc}"))

    def topic(self, spec: TopicSpec) -> faust.TopicT:
        if spec.name not in self.topics:
            self.topics[spec.name] = topic(self.app, self.settings, spec)
        return self.topics[spec.name]


def make_runtime(app: faust.App, settings: Settings) -> Runtime:
    rt = Runtime(app=app, settings=settings, config=ConfigReader(settings))
    for spec in ALL_TOPICS:
        rt.topic(spec)

    @app.task
    async def _start_config_reader() -> None:
        rt.config.start()

    return rt
