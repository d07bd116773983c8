"""The Faust app factory and topic objects.

Each processor runs in its own consumer group: ``create_app("router")`` has
the id ``postlane-router``. ``postlane dev`` puts every processor in one app
(``postlane-dev``). When the broker is the embedded Tansu, the settings that
make a processor ready in seconds are applied (see docs/embedded-broker.md):
6 s session, 1 s heartbeat, 100 ms fetch wait. The patches of Faust and
aiokafka the apps need, and the correction of the embedded broker's end
offsets that makes table recovery exact, are in streams/upstream_patches.py.
"""

from __future__ import annotations

from pathlib import Path

import faust

from schemas.base import CODEC

from . import broker_watch, metrics, upstream_patches
from .direct import DirectTopic
from .partitioning import partitioner
from .settings import Settings
from .topics import TopicSpec


def create_app(name: str, settings: Settings) -> faust.App:
    """The Faust app ``{app_prefix}-{name}``, with the upstream patches
    applied (``streams/upstream_patches.py``; raises ``UpstreamMismatch``
    if faust-streaming or aiokafka is not the code they were written for)."""
    Path(settings.data_dir, name).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.app_prefix}-{name}",
        broker=settings.faust_broker,
        store=settings.store,
        datadir=f"{settings.data_dir}/{name}",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=settings.heartbeat_interval,
        broker_request_timeout=max(40.0, settings.session_timeout + 5),
        producer_max_batch_size=settings.producer_max_batch_size,
        producer_max_request_size=settings.max_request_bytes,
        producer_linger=settings.producer_linger_ms / 1000.0,
        producer_compression_type=settings.compression_type,  # lz4 by default
        producer_acks=-1,
        producer_partitioner=partitioner,  # murmur2 as aiokafka's, recent keys remembered
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.faust_web_enabled,
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=settings.faust_web_port,
        key_serializer="raw",  # table keys are bytes (message ids, addresses)
        value_serializer=CODEC,  # a default only: topics and tables are raw bytes (tables.py)
        table_cleanup_interval=60.0,
        table_standby_replicas=0,  # timers scan only active partitions
        stream_wait_empty=False,
        stream_buffer_maxsize=settings.stream_buffer_maxsize,
        consumer_max_fetch_size=settings.consumer_max_fetch_size,
        broker_max_poll_records=settings.consumer_max_poll_records,
    )
    app.producer.buffer.max_messages = settings.producer_buffer_max
    upstream_patches.apply_all(settings, app)
    broker_watch.install(app, settings)  # stops the worker if its broker lost its log
    metrics.install(app, settings.topic_prefix)  # counts records in and out (/metrics)
    _without_faust_monitor(app)
    return app


def _without_faust_monitor(app: faust.App) -> None:
    """Take Faust's own Monitor sensor off every record once the app started.
    It keeps per-topic counters and latency lists for Faust's web views (off
    here: /metrics comes from streams/metrics.py) and cost ~2% of a hop's CPU
    (bench/hop.py). ``app.monitor`` itself stays: the upstream patches call
    its ``track_tp_end_offset``."""

    @app.task
    async def _drop_monitor() -> None:
        if app.monitor in set(app.sensors):
            app.sensors.remove(app.monitor)


def topic(app: faust.App, settings: Settings, spec: TopicSpec) -> faust.TopicT:
    """The Faust topic for a spec, carrying raw bytes: processors decode and
    validate themselves so bad input is dead-lettered, not crashed on. Its
    plain sends go straight to the Kafka client (``streams/direct.py``)."""
    t = DirectTopic(
        app,
        topics=(spec.full(settings),),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=spec.partitions(settings),
        compacting=spec.compacted or None,
        internal=False,
    )
    t.metrics_prefix = settings.topic_prefix
    return t
