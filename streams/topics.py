"""Every topic, declared once. Processors and tools import these specs.

Partition keys (why):
- config: key ``server:<name>`` / ``settings``; one partition, compacted, so
  every reader sees changes in order and the latest per key survives.
- send-requested, routing-decided, delivery, delivery-due, status: key = message_id, so
  every event of one mail lands on one partition in order, and the
  delivery ledger and status tables are co-partitioned with their input
  (one writer, no cross-partition reads).
- dead-letter: key = the source key; one partition is plenty.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    compacted: bool = False
    single_partition: bool = False
    doc: str = ""

    def full(self, settings: Settings) -> str:
        return settings.topic(self.name)

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions


CONFIG = TopicSpec("config", compacted=True, single_partition=True,
                   doc="server/settings configuration events (latest per key)")
SEND_REQUESTED = TopicSpec("send-requested", doc="SendRequested from services")
ROUTING_DECIDED = TopicSpec("routing-decided", doc="RoutingDecided from the router")
DELIVERY = TopicSpec("delivery", doc="DeliveryStarted / DeliveryAttempted")
DELIVERY_DUE = TopicSpec("delivery-due", doc="RetryTimeReached from the retry timer")
STATUS = TopicSpec("status", doc="MessageStatusChanged from the status projection")
DEAD_LETTER = TopicSpec("dead-letter", single_partition=True,
                        doc="EventDeadLettered: inputs a processor refused")

ALL_TOPICS: tuple[TopicSpec, ...] = (
    CONFIG, SEND_REQUESTED, ROUTING_DECIDED, DELIVERY, DELIVERY_DUE, STATUS, DEAD_LETTER,
)
