"""The one settings object. Nothing else in Postlane reads the environment
(the secrets edge reads only the variable a server's ``password_env`` names).

Every field can be set with ``POSTLANE_<FIELD>`` in upper case, e.g.
``POSTLANE_BROKER=kafka://kafka:9092``. An empty broker means "start and use
the embedded Tansu broker" (memory storage only: a restart loses every topic).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from schemas.errors import PostlaneError

ENV_PREFIX = "POSTLANE_"


class SettingsError(PostlaneError, ValueError):
    """A POSTLANE_ variable has a value of the wrong type."""


@dataclass(frozen=True)
class Settings:
    # --- broker -------------------------------------------------------------
    broker: str = ""  # kafka://host:port[;host:port]; empty: embedded Tansu
    embedded_host: str = "127.0.0.1"
    embedded_port: int = 19092
    topic_prefix: str = "postlane."
    partitions: int = 4
    # seconds between a worker's checks that its broker is still the one it
    # started with (streams/broker_watch.py); 0: off
    broker_watch_interval: float = 2.0
    # --- faust ----------------------------------------------------------------
    app_prefix: str = "postlane"
    data_dir: str = ".postlane"
    store: str = "memory://"  # or rocksdb:// (needs rocksdict)
    # Faust's own web server (off; its port when POSTLANE_FAUST_WEB_ENABLED=true)
    faust_web_port: int = 6066
    faust_web_enabled: bool = False
    uvloop: bool = True  # run the workers' event loops on uvloop (postlane/runner.py)
    # the cyclic garbage collector's first-generation threshold in a worker
    # (Python's default 700): objects start-up made are frozen out of it and it
    # runs less often (postlane/runner.py, tune_gc); 0 leaves Python's own
    gc_threshold: int = 20000
    session_timeout: float = 60.0  # broker_session_timeout (embedded: 6.0)
    heartbeat_interval: float = 3.0  # broker_heartbeat_interval (embedded: 1.0)
    fetch_max_wait_ms: int = 1500  # Faust's fixed value; embedded: 100
    # after a fetch that returned records, fetch with this wait, doubled
    # after each empty fetch up to fetch_max_wait_ms: quick hops while mail
    # flows, the long wait when idle (streams/fetch_wait.py); 0: always the long one
    fetch_quick_wait_ms: int = 5
    # bytes per producer batch, at most (Faust's default is 16384); on the
    # embedded broker too: its wrong end offsets are corrected where they are
    # read (streams/offsets.py). A lingering changelog (background_linger_ms)
    # fills 16 KB in a few status rows under load: every batch costs the
    # embedded broker ~1.1-2 KB of memory beyond its records (bench/README.md)
    producer_max_batch_size: int = 131072
    # codec of the record batches Postlane's producers write: zstd (default;
    # the embedded broker keeps batches as they come, so this is its memory
    # per mail too, plus ~1.3-1.6 KB per batch: ~20% less than lz4; its
    # context is kept per thread, streams/codecs.py, which made it cheaper in
    # CPU than lz4: bench/README.md, "Broker memory per mail"), lz4, gzip,
    # snappy or none. Readers need the codec: librdkafka and Java have them
    # all; kafka-python needs zstandard (a dependency), kafkajs a codec package
    producer_compression: str = "zstd"
    # how long a producer waits for more records before a produce request (ms):
    # records written meanwhile share it (fewer requests, socket writes and
    # broker work per record) for that much latency per hop
    producer_linger_ms: int = 0
    # how long the records nothing waits for (the status topic, and the
    # changelogs of the status and limiter tables: ``linger`` in
    # streams/topics.py and tables.py) wait for more of their partition (ms);
    # 0: they go at once like every other record
    background_linger_ms: int = 100
    # table writes Faust may have pending before it stops handing records to
    # every agent (its default, 100, lets a campaign's table writes stall invoices)
    producer_buffer_max: int = 100
    stream_buffer_maxsize: int = 4096  # events an agent's buffer holds (Faust's default)
    consumer_max_fetch_size: int = 1024 * 1024  # bytes fetched per partition at once
    # records handed to the agents per fetch call; between calls the mass lane
    # yields to everything else (streams/upstream_patches.py); Faust's default: unbounded
    consumer_max_poll_records: int = 100
    # --- router -----------------------------------------------------------------
    config_ready_timeout: float = 30.0
    # --- delivery -----------------------------------------------------------------
    smtp_timeout: float = 30.0  # per command
    attempt_deadline: float = 120.0  # whole attempt, connect to QUIT
    retry_first: float = 300.0  # seconds before the first retry
    retry_max: float = 4000.0  # back-off cap (Postfix maximal_backoff_time)
    retry_give_up: float = 5 * 86400.0  # Postfix maximal_queue_lifetime
    delivery_batch: int = 64  # mails a delivery worker has in flight at once
    # SMTP connections a delivery worker keeps open to one outgoing server at most
    # (providers cap concurrent connections, e.g. 3 per mailbox; Postfix's
    # default_destination_concurrency_limit is 20)
    smtp_connections: int = 8
    max_message_bytes: int = 25 * 1024 * 1024
    # --- status ------------------------------------------------------------------
    # events folded per batch: each mail's row written and its state change
    # published once per batch (processors/status/batch.py)
    status_batch: int = 2000
    status_batch_wait: float = 0.25  # s the status agent waits for a batch to fill
    # a moving mail's changes are written once it is final, or this many s after
    # its first unwritten change (processors/status/batch.py, hold_batch)
    status_hold: float = 2.0
    status_hold_max: int = 20000  # mails held at most (the oldest are written first)
    # --- limiter (rate limits, lanes, schedule) -----------------------------------
    # the router releases a transactional mail no limit, rate or send_at applies
    # to itself (RoutingDecided.direct): delivery takes it without the limiter's hop
    direct_release: bool = True
    limit_timezone: str = "UTC"  # IANA name; daily windows follow its calendar
    limit_day_start: str = "00:00"  # when a daily window opens, local time HH:MM
    limiter_tick: float = 0.2  # how often held mail is looked at (pacing precision)
    mass_window: int = 16  # mass mails per partition released and not yet started
    mass_inflight_timeout: float = 60.0  # a released mass mail not started stops counting
    mass_lookahead: int = 512  # mass mails looked past a paced head, per partition
    # mass mails per partition the limiter takes in ahead of its releases; past
    # it, it stops fetching that partition (the campaign waits in its topic)
    # until half are gone
    mass_intake_ahead: int = 1024
    # --- inbound ------------------------------------------------------------------
    inbound_max_bytes: int = 10 * 1024 * 1024  # larger mail is rejected, not fetched whole
    max_request_bytes: int = 16 * 1024 * 1024  # producer limit (Kafka message.max.bytes too)
    imap_timeout: float = 30.0  # per IMAP command
    fetch_batch: int = 20  # mails published per checkpoint
    fetch_retry: float = 30.0  # first wait after a failed poll (doubles, capped at the interval)
    idle_max: float = 1740.0  # re-issue IDLE after this (RFC 2177: before 29 minutes)
    ingress_host: str = "127.0.0.1"  # the SMTP ingress (``postlane worker ingress``)
    ingress_port: int = 2526
    # --- bounces and blacklist ------------------------------------------------------
    blacklist_threshold: float = 5.0  # counted bounce weight that blacklists
    blacklist_window_days: float = 91.0  # 13 weeks (Odoo); "a month" is 30
    blacklist_min_spread_days: float = 7.0  # first and last counted bounce further apart
    bounce_weight_hard: float = 1.0  # a hard bounce (user unknown, no such domain)
    bounce_weight_soft: float = 1.0  # a soft one (mailbox full, expired)
    bounce_burst_min: int = 10  # distinct addresses with one error from one server ...
    bounce_burst_seconds: float = 3600.0  # ... within this long ...
    bounce_burst_share: float = 0.5  # ... and this share of the domain's mail: an outage
    # --- one-click unsubscribe (RFC 8058) and DKIM ---------------------------------
    # the base URL of the unsubscribe service as recipients reach it (mass
    # mail's List-Unsubscribe is <unsubscribe_url>/u/TOKEN); https in production
    unsubscribe_url: str = "http://127.0.0.1:8089"
    unsubscribe_host: str = "127.0.0.1"  # where `postlane unsubscribe serve` listens
    unsubscribe_port: int = 8089
    # the token secret: an environment variable's name or a file (read by
    # streams/secrets.py); neither: <data_dir>/unsubscribe.secret, made when missing
    unsubscribe_secret_env: str = ""
    unsubscribe_secret_file: str = ""
    unsubscribe_token_days: float = 90.0  # how long a link works
    unsubscribe_alias: str = "unsubscribe"  # mailto:<alias>@<catchall_domain>?subject=... TOKEN
    # --- web console and metrics ---------------------------------------------------
    web_host: str = "127.0.0.1"  # where `postlane web` (and postlane dev's console) listens
    web_port: int = 8642
    # the console's users: one `name:scrypt$...` line each (`postlane web adduser NAME`);
    # empty: <data_dir>/web-users
    web_users_file: str = ""
    web_session_hours: float = 12.0  # a login lasts this long
    # the public base URL when behind an HTTPS proxy (cookies are then Secure); empty: none
    web_public_url: str = ""
    metrics_host: str = "127.0.0.1"  # /metrics of every worker and postlane dev
    metrics_port: int = 9642  # 0: off; a second worker on one machine needs its own
    # --- webhooks (processors/webhooks) ------------------------------------------------
    webhook_retry_for: float = 86400.0  # retry a notification this long, then dead-letter it
    webhook_retry_first: float = 5.0  # first retry after this many seconds, doubling
    webhook_retry_max: float = 900.0  # at most this long between two tries
    webhook_timeout: float = 10.0  # seconds an endpoint has to answer a POST
    webhook_concurrency: int = 4  # POSTs in flight per endpoint (one per mail at a time)
    webhook_tick: float = 0.2  # seconds between two looks at the due notifications
    webhook_keep: float = 604800.0  # a delivered / dead notification's row is kept this long
    # --- dev --------------------------------------------------------------------
    config_file: str = ""  # applied by `postlane dev` at start when set
    capture_smtp_port: int = 2525  # the dev capture server (stand-in outgoing)
    capture_dir: str = ".postlane/captured"

    def __post_init__(self) -> None:
        self.compression_type  # noqa: B018 - refuses an unknown codec now, in words
        if self.smtp_connections < 1:
            raise SettingsError(f"POSTLANE_SMTP_CONNECTIONS={self.smtp_connections}: "
                                "at least 1 connection per outgoing server")
        if self.background_linger_ms < 0:
            raise SettingsError(f"POSTLANE_BACKGROUND_LINGER_MS={self.background_linger_ms}: "
                                "milliseconds, 0 or more (0: no linger)")

    @property
    def compression_type(self) -> str | None:
        """``producer_compression`` as Kafka clients take it (None: none)."""
        value = self.producer_compression.strip().lower()
        if value not in ("", "none", "lz4", "zstd", "gzip", "snappy"):
            raise SettingsError(f"POSTLANE_PRODUCER_COMPRESSION={self.producer_compression!r}: "
                                "use lz4, zstd, gzip, snappy or none")
        return None if value in ("", "none") else value

    @property
    def embedded(self) -> bool:
        return not self.broker

    @property
    def bootstrap(self) -> str:
        """host:port list for kafka-python / aiokafka clients."""
        if self.embedded:
            return f"{self.embedded_host}:{self.embedded_port}"
        return ",".join(p.split("://", 1)[-1] for p in self.broker.split(";") if p)

    @property
    def faust_broker(self) -> str:
        return self.broker or f"kafka://{self.bootstrap}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(f.name, str(f.type), raw)
        values.update(overrides)
        settings = cls(**values)
        return settings.tuned()

    def tuned(self) -> Settings:
        """Apply the embedded-broker settings (see docs/embedded-broker.md):
        a 6 s session so a group joins in ~3 s and a 100 ms fetch wait.
        (Producer batches keep their size: the broker's wrong end offsets
        are corrected where they are read, ``streams/offsets.py``.)"""
        if not self.embedded:
            return self
        return dataclasses.replace(
            self,
            session_timeout=min(self.session_timeout, 6.0),
            heartbeat_interval=min(self.heartbeat_interval, 1.0),
            fetch_max_wait_ms=min(self.fetch_max_wait_ms, 100),
        )


def _coerce(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(
            f"{ENV_PREFIX}{name.upper()}={raw!r} is not a valid {type_name}"
        ) from None
    return raw

