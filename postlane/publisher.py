"""The Python publisher for services: validate up front, publish a
SendRequested, return the message id. Never waits on SMTP.

    from postlane.publisher import Publisher
    pub = Publisher("127.0.0.1:19092")
    mid = pub.send(from_="a@example.com", to=["b@example.org"], subject="Hi", text="Hello")

Mass mail names its list and campaign: ``pub.send(..., kind="mass",
list_id="newsletter", campaign="2026-spring")``; delivery then adds the
one-click unsubscribe headers (List-Unsubscribe naming the tenant, list and
recipient) and the campaign goes into the Feedback-ID header.

With an ``idempotency_key`` the message id is derived from it (and the
tenant), so a service that retries a publish gets the same id and the mail
is sent once.

The client is librdkafka (confluent-kafka): ``publish()`` hands the record to
it and waits on a lock that the delivery report releases; one background
thread serves the reports (``poll``). Safe to call from several threads. Per
acknowledged mail it costs about a quarter of the CPU kafka-python's
producer did (bench/publish.py, bench/README.md). Keys are placed as the
workers' producers place them (Java's murmur2, ``partitioner=murmur2_random``):
the status table is co-partitioned by message id with ``send-requested``.
"""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processors.router.core import mass_recipients_problem
from processors.router.intake import carried_limit
from schemas import InvalidEvent, SendRequested, encode, ids
from schemas.errors import PostlaneError
from schemas.send import MAX_MESSAGE_BYTES
from streams.client import broker_hint
from streams.settings import Settings
from streams.topics import SEND_REQUESTED, SEND_REQUESTED_MASS

_NS = ids.PUBLISHED


class PublishError(PostlaneError, RuntimeError):
    """The broker did not take the event; safe to retry with the same
    idempotency key."""


def message_id_for(idempotency_key: str, tenant: str = "") -> str:
    if not idempotency_key:
        return uuid.uuid4().hex
    return uuid.uuid5(_NS, f"{tenant}\x00{idempotency_key}").hex


def attachment(path: str | Path, content_type: str = "application/octet-stream") -> dict[str, str]:
    p = Path(path)
    return {"filename": p.name, "content_type": content_type,
            "data": base64.b64encode(p.read_bytes()).decode()}


class _Ack:
    """One publish waiting for its delivery report: ``lock`` is held until
    the report comes (a bare lock: the cheapest thing a thread can wait on)."""

    __slots__ = ("lock", "error")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.error: KafkaError | None = None

    def done(self, err: KafkaError | None, _msg: Message) -> None:
        self.error = err
        self.lock.release()


class _ClientLog:
    """librdkafka's log (delivered by ``poll``) to ``logger``, keeping the
    last line's own words (``last``: e.g. "Connect to ipv4#127.0.0.1:1
    failed: Connection refused"); ``held``: kept, not logged."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.last = ""
        self.held = False

    def log(self, level: int, fmt: str, *args: Any) -> None:
        line = fmt % args
        # "FAIL [client] [thrd:...]: 127.0.0.1:1/bootstrap: Connect to ... failed: ..."
        self.last = line.split("]: ", 1)[-1]
        if not self.held:
            self.logger.log(level, "%s", line)


class Publisher:
    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        max_message_bytes: int | None = None,
        delivery_timeout: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        """``max_message_bytes``: the largest encoded request published; by
        default what the router lets through (``carried_limit`` of
        ``max_request_bytes``), so a request the pipeline cannot carry is
        refused here, in words, instead of rejected after publishing.
        ``delivery_timeout``: how long the client keeps retrying a record
        before it reports it failed. Raises PublishError when no broker
        answers within ``connect_timeout`` seconds."""
        self.settings = settings or Settings.from_env()
        if max_message_bytes is None:
            max_message_bytes = min(MAX_MESSAGE_BYTES,
                                    carried_limit(self.settings.max_request_bytes))
        self.bootstrap = bootstrap or self.settings.bootstrap
        self.topic = SEND_REQUESTED.full(self.settings)  # transactional lane
        self.mass_topic = SEND_REQUESTED_MASS.full(self.settings)  # mass lane
        self.max_message_bytes = max_message_bytes
        self._client_log = _ClientLog(logging.getLogger("postlane.publisher"))
        self._producer = Producer({
            "bootstrap.servers": self.bootstrap,
            "client.id": "postlane-publisher",
            "acks": "all",
            "enable.idempotence": False,  # the embedded broker refuses InitProducerId
            "linger.ms": 0,  # one acknowledged publish at a time per caller: send now
            "compression.type": self.settings.compression_type or "none",
            "message.max.bytes": max_message_bytes + 1024 * 1024,
            "message.timeout.ms": int(delivery_timeout * 1000),
            # where the workers' producers (aiokafka, Java) put a key
            "partitioner": "murmur2_random",
            "socket.nagle.disable": True,
            "logger": self._client_log,
        })
        try:
            self._producer.list_topics(timeout=connect_timeout)
        except KafkaException as exc:
            self._client_log.held = True  # told in the error, not logged line by line
            self._producer.poll(0)  # the client's log lines of the check
            self._producer.close()
            why = self._client_log.last or exc.args[0].str()
            raise PublishError(f"no Kafka broker at {self.bootstrap} within "
                               f"{connect_timeout:g} s ({why}); nothing was published: "
                               f"{broker_hint(self.settings)}") from None
        self._closing = False
        self._poller = threading.Thread(target=self._serve_reports, daemon=True,
                                        name="postlane-publisher-reports")
        self._poller.start()

    def _serve_reports(self) -> None:
        """Delivery reports release the waiting publishes (``_Ack.done``)."""
        while not self._closing:
            self._producer.poll(0.2)

    def build(self, *, from_: str, to: list[str] | str, **fields: Any) -> SendRequested:
        """Validate and build the event; raises InvalidEvent with every problem."""
        to_list = [to] if isinstance(to, str) else list(to)
        tenant = str(fields.get("tenant", ""))
        message_id = fields.pop("message_id", None) or message_id_for(
            str(fields.get("idempotency_key", "")), tenant
        )
        event = SendRequested(message_id=message_id, from_=from_, to=to_list, **fields)
        refused = mass_recipients_problem(event)  # what the router would reject
        if refused:
            raise InvalidEvent("SendRequested", [refused])
        size = len(encode(event))
        if size > self.max_message_bytes:
            raise InvalidEvent("SendRequested", [
                f"message is {size} bytes encoded, over the limit of {self.max_message_bytes} "
                "(POSTLANE_MAX_REQUEST_BYTES less room for routing): send a link instead of "
                "the attachment"
            ])
        return event

    def publish(self, event: SendRequested, timeout: float = 30.0) -> str:
        """Publish ``event``; its message id once the broker acknowledged it
        (acks=all). Raises PublishError, in words, otherwise."""
        mid = event.message_id
        topic = self.mass_topic if event.kind == "mass" else self.topic
        if self._closing:
            raise PublishError(f"publishing {mid}: this Publisher is closed")
        ack = _Ack()
        try:
            self._producer.produce(topic, encode(event), mid.encode(), on_delivery=ack.done)
        except KafkaException as exc:
            raise PublishError(f"publishing {mid} to {topic} failed: {exc.args[0].str()}") \
                from None
        except BufferError as exc:
            raise PublishError(f"publishing {mid}: the client's queue is full ({exc}); the "
                               f"broker at {self.bootstrap} is not keeping up or is down") \
                from None
        if not ack.lock.acquire(timeout=timeout):
            raise PublishError(
                f"publishing {mid}: no acknowledgement from the broker at {self.bootstrap} "
                f"within {timeout:g} s (is it up?); safe to retry with the same "
                "idempotency key")
        if ack.error is not None:
            raise PublishError(f"publishing {mid} to {topic} failed: {ack.error.str()} "
                               f"({ack.error.name()})")
        return mid

    def send(self, *, from_: str, to: list[str] | str, **fields: Any) -> str:
        """Validate, publish, return the message id."""
        return self.publish(self.build(from_=from_, to=to, **fields))

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to ``timeout`` s for records still in flight, then stop;
        a publish still waiting then fails with PublishError (purged)."""
        if self._closing:
            return
        self._closing = True
        self._poller.join()
        if self._producer.flush(timeout):
            self._producer.purge()  # else close() waits out the delivery timeout
            self._producer.flush(0)  # their reports: the waiting publishes fail
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
