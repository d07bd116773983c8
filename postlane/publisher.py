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
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from processors.router.core import mass_recipients_problem
from processors.router.intake import carried_limit
from schemas import InvalidEvent, SendRequested, encode, ids
from schemas.errors import PostlaneError
from schemas.send import MAX_MESSAGE_BYTES
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


class Publisher:
    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        """``max_message_bytes``: the largest encoded request published; by
        default what the router lets through (``carried_limit`` of
        ``max_request_bytes``), so a request the pipeline cannot carry is
        refused here, in words, instead of rejected after publishing."""
        self.settings = settings or Settings.from_env()
        if max_message_bytes is None:
            max_message_bytes = min(MAX_MESSAGE_BYTES,
                                    carried_limit(self.settings.max_request_bytes))
        self.bootstrap = bootstrap or self.settings.bootstrap
        self.topic = SEND_REQUESTED.full(self.settings)  # transactional lane
        self.mass_topic = SEND_REQUESTED_MASS.full(self.settings)  # mass lane
        self.max_message_bytes = max_message_bytes
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, retries=5,
                max_request_size=max_message_bytes + 1024 * 1024,
                client_id="postlane-publisher",
                compression_type=self.settings.compression_type,
            )
        except KafkaError as exc:
            raise PublishError(f"no Kafka broker at {self.bootstrap}: {exc}") from exc

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
        try:
            topic = self.mass_topic if event.kind == "mass" else self.topic
            self._producer.send(
                topic, key=event.message_id.encode(), value=encode(event)
            ).get(timeout)
        except KafkaError as exc:
            raise PublishError(f"publishing {event.message_id} failed: {exc}") from exc
        return event.message_id

    def send(self, *, from_: str, to: list[str] | str, **fields: Any) -> str:
        """Validate, publish, return the message id."""
        return self.publish(self.build(from_=from_, to=to, **fields))

    def close(self) -> None:
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
