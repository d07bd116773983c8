"""A topic whose plain sends go straight to the Kafka client.

``await topic.send(key=..., value=...)`` with byte key and value (every send
of ours) costs, through Faust 0.15.3's ``Channel.send``, a ``FutureMessage``,
``publish_message`` with its sensor calls, the producer's signal and a
done-callback per record: about as much again as aiokafka's own ``send``
(bench/hop.py). ``DirectTopic.send`` hands such a record to the app's
aiokafka producer itself and returns aiokafka's future (what ``acked``
awaits), and counts it for /metrics as the sensor did. The same producer
and its accumulator: Faust's commit still flushes it first, and records of
one partition keep their order. Any other send (a partition, headers, a
callback, serializers) goes Faust's way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.exceptions import ProducerSendError

from .metrics import observe_published


class DirectTopic(faust.Topic):  # type: ignore[misc]
    metrics_prefix = "postlane."

    async def send(self, *, key: Any = None, value: Any = None, partition: int | None = None,
                   timestamp: float | None = None, headers: Any = None, schema: Any = None,
                   key_serializer: Any = None, value_serializer: Any = None,
                   callback: Any = None, force: bool = False) -> Any:
        if (type(value) is bytes and (key is None or type(key) is bytes) and partition is None
                and timestamp is None and headers is None and schema is None
                and key_serializer is None and value_serializer is None and callback is None
                and len(self.topics) == 1):
            producer: Any = self.app.producer  # the aiokafka driver's: ``_producer`` is its client
            client = producer._producer
            if client is None:  # not started yet: Faust's way starts it
                await self.app.maybe_start_producer()
                client = producer._producer
            name = self.topics[0]
            try:
                fut: asyncio.Future[Any] = await client.send(name, value, key=key)
            except KafkaError as exc:
                raise ProducerSendError(f"Error while sending: {exc!r}") from exc
            observe_published(name, value, self.metrics_prefix)
            return fut
        return await super().send(
            key=key, value=value, partition=partition, timestamp=timestamp, headers=headers,
            schema=schema, key_serializer=key_serializer, value_serializer=value_serializer,
            callback=callback, force=force)
