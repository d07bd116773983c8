"""Prometheus metrics of a worker (``/metrics`` on ``POSTLANE_METRICS_HOST:PORT``).

Counted where every processor's records pass, so no agent holds a metrics
call: a Faust sensor (``install``, one line in ``streams/app.py``) sees each
record a worker takes in (``postlane_events_in_total``) and each record it
publishes (``postlane_events_out_total``); the facts the issue asks to
count are read from the published events themselves:

- ``postlane_dead_letters_total{processor,reason}``: EventDeadLettered on dead-letter;
- ``postlane_smtp_outcomes_total{server,outcome,reply_class}`` and the
  ``postlane_delivery_attempt_seconds`` histogram: DeliveryAttempted on delivery;
- ``postlane_limiter_deferrals_total{why}``: MailHeld on held;
- ``postlane_bounces_total{kind,hard,reason}`` / ``postlane_complaints_total{feedback_type}``:
  BounceRecorded / ComplaintReceived on bounces;
- ``postlane_status_changes_total{state}``: MessageStatusChanged on status;
- ``postlane_consumer_lag{group,topic,partition}``: each assigned partition's
  high-water mark minus the next offset the worker will read, every 5 s.

- ``postlane_mails{state}`` (mails by current state) and
  ``postlane_delivery_latency_seconds`` (request to sent): by every worker
  that runs the status processor, from the rows of the status table it
  holds (``streams/mail_states.py``: the sensor sees each write of the
  table; the counts are rebuilt from the table when a rebalance ends).
  Several status workers each serve their own partitions: sum them,
  ``sum by (state) (postlane_mails)``.

The label values are bounded: a dead letter's reason is its error's kind
(``reason_of``), never its text; a reply class is ``2xx``/``4xx``/``5xx``/``none``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("postlane.metrics")

EVENTS_IN = Counter("postlane_events_in", "Records taken in by this worker", ["topic"])
EVENTS_OUT = Counter("postlane_events_out", "Records published by this worker", ["topic"])
DEAD_LETTERS = Counter("postlane_dead_letters", "Inputs refused to the dead-letter topic",
                       ["processor", "reason"])
SMTP_OUTCOMES = Counter("postlane_smtp_outcomes",
                        "Recipient outcomes of delivery attempts, by server and reply class",
                        ["server", "outcome", "reply_class"])
ATTEMPT_SECONDS = Histogram(
    "postlane_delivery_attempt_seconds", "Duration of one delivery attempt (connect to QUIT)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DEFERRALS = Counter("postlane_limiter_deferrals", "Mails the limiter held, by why", ["why"])
BOUNCES = Counter("postlane_bounces", "Bounces recorded, by kind, hard/soft and reason",
                  ["kind", "hard", "reason"])
COMPLAINTS = Counter("postlane_complaints", "Complaints received, by feedback type",
                     ["feedback_type"])
STATUS_CHANGES = Counter("postlane_status_changes", "Status changes published, by new state",
                         ["state"])
CONSUMER_LAG = Gauge("postlane_consumer_lag",
                     "High-water mark minus the next offset to read, per assigned partition",
                     ["group", "topic", "partition"])
# served by workers running the status processor, for the partitions they hold
MAILS = Gauge("postlane_mails", "Mails by current state, in this worker's partitions of the "
              "status table (sum over status workers)", ["state"])
LATENCY = Histogram(
    "postlane_delivery_latency_seconds", "From the send request to sent, per mail",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))

_WORD = re.compile(r"[a-z][a-z_ ]{2,40}")


def reply_class(code: Any) -> str:
    """``2xx``, ``4xx``, ``5xx`` for an SMTP reply code, ``none`` without one."""
    try:
        n = int(code)
    except (TypeError, ValueError):
        return "none"
    return f"{n // 100}xx" if 200 <= n < 600 else "none"


def reason_of(error: str) -> str:
    """A dead letter's reason as a bounded label: ``invalid <Type>`` for a
    refused event (``invalid SendRequested: ...``), ``unreadable`` for what
    is not JSON, else the error's first words up to a colon (at most 40
    characters, lower case)."""
    text = error.strip()
    m = re.match(r"invalid ([A-Za-z]{1,60})\b", text)
    if m:
        return f"invalid {m.group(1)}"
    low = text.lower()
    if "json" in low or "decode" in low or "unreadable" in low:
        return "unreadable"
    head = low.split(":", 1)[0]
    m2 = _WORD.match(head)
    return m2.group(0).strip() if m2 else "other"


_OUT: dict[str, Any] = {}  # topic -> its EVENTS_OUT child (``labels`` costs more than ``inc``)
_IN: dict[str, Any] = {}


def _child(metric: Any, children: dict[str, Any], label: str) -> Any:
    child = children.get(label)
    if child is None:
        child = children[label] = metric.labels(label)
    return child


def observe_published(topic: str, value: Any, prefix: str = "postlane.") -> None:
    """Count one record a worker published (the facts above)."""
    _child(EVENTS_OUT, _OUT, topic).inc()
    name = topic[len(prefix):] if topic.startswith(prefix) else topic
    if name not in _DECODED or not isinstance(value, bytes | bytearray):
        return
    try:
        ev = orjson.loads(value)
    except orjson.JSONDecodeError:
        return
    if isinstance(ev, dict):
        observe_event(name, ev)


_DECODED = frozenset({"dead-letter", "delivery", "held", "bounces", "status"})


def observe_event(topic_name: str, ev: dict[str, Any]) -> None:
    """Count the fact one published event (as a dict) states."""
    kind = ev.get("type")
    if topic_name == "dead-letter" and kind == "EventDeadLettered":
        DEAD_LETTERS.labels(str(ev.get("processor", "")), reason_of(str(ev.get("error", "")))
                            ).inc()
    elif topic_name == "delivery" and kind == "DeliveryAttempted":
        server = str(ev.get("server", ""))
        for o in ev.get("outcomes") or []:
            if isinstance(o, dict):
                SMTP_OUTCOMES.labels(server, str(o.get("status", "")),
                                     reply_class(o.get("code"))).inc()
        duration = ev.get("duration")
        if isinstance(duration, int | float) and duration >= 0:
            ATTEMPT_SECONDS.observe(duration)
    elif topic_name == "held" and kind == "MailHeld":
        DEFERRALS.labels(str(ev.get("why", ""))).inc()
    elif topic_name == "bounces" and kind == "BounceRecorded":
        # a bounce not attributed to a mail we sent to that address is kept, never counted
        BOUNCES.labels("unattributed" if ev.get("unattributed") else str(ev.get("kind", "failed")),
                       "hard" if ev.get("hard") else "soft",
                       str(ev.get("reason", ""))[:40]).inc()
    elif topic_name == "bounces" and kind == "ComplaintReceived":
        COMPLAINTS.labels(str(ev.get("feedback_type", ""))[:40]).inc()
    elif topic_name == "status" and kind == "MessageStatusChanged" and not ev.get("note"):
        STATUS_CHANGES.labels(str(ev.get("state", ""))).inc()


def install(app: Any, prefix: str) -> None:
    """Count this Faust app's records (a sensor), its mails by state when it
    runs the status processor, and its consumer lag (a timer every 5 s)."""
    from faust.sensors import Sensor

    from .mail_states import TABLE, MailStates

    states = MailStates(app, MAILS, LATENCY).install()

    class MetricsSensor(Sensor):  # type: ignore[misc]
        def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
            _child(EVENTS_IN, _IN, tp.topic).inc()

        def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int,
                              valsize: int) -> Any:
            try:
                observe_published(topic, getattr(message, "value", None), prefix)
            except Exception:  # noqa: BLE001 - a metric never stops a send
                log.debug("metrics: could not count a record of %s", topic, exc_info=True)
            return None

        def on_table_set(self, table: Any, key: Any, value: Any) -> None:
            if table.name == TABLE:
                try:
                    states.on_set(table, key, value)
                except Exception:  # noqa: BLE001 - a metric never stops a write
                    log.debug("metrics: a status row not counted", exc_info=True)

        def on_table_del(self, table: Any, key: Any) -> None:
            if table.name == TABLE:
                try:
                    states.on_del(table, key)
                except Exception:  # noqa: BLE001
                    log.debug("metrics: a removed status row not counted", exc_info=True)

    app.sensors.add(MetricsSensor())
    group = app.conf.id

    @app.timer(5.0)
    async def _consumer_lag() -> None:
        consumer = app.consumer
        try:
            for tp in consumer.assignment():
                high = consumer.highwater(tp)
                read = consumer._read_offset.get(tp)  # the last offset handed over
                # nothing read yet: the committed offset is the next to read
                nxt = consumer._committed_offset.get(tp) if read is None else read + 1
                if high is None or nxt is None:
                    continue
                CONSUMER_LAG.labels(group, tp.topic, str(tp.partition)).set(max(high - nxt, 0))
        except Exception:  # noqa: BLE001 - no lag figure this time, say why at debug
            log.debug("metrics: consumer lag not read", exc_info=True)


def serve(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> Any:
    """Serve ``/metrics`` on ``host:port`` in a thread; None (and a warning
    in words) when the port is taken, so a second worker on one machine
    runs without metrics instead of failing. Port 0: off."""
    from prometheus_client import start_http_server

    if port <= 0:
        return None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        log.warning("metrics not served: %s:%d is taken (%s); give this worker its own "
                    "POSTLANE_METRICS_PORT (0: off)", host, port, exc.strerror)
        return None
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
