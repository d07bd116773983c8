"""Every topic, declared once. Processors and tools import these specs.

Partition keys (why):
- config: key ``server:<name>`` / ``settings``; one partition, compacted, so
  every reader sees changes in order and the latest per key survives.
- send-requested, routing-decided, delivery, delivery-due, status: key = message_id, so
  every event of one mail lands on one partition in order, and the
  delivery ledger and status tables are co-partitioned with their input
  (one writer, no cross-partition reads).
- send-requested-mass, routing-decided-mass: the mass lane, keyed by
  message_id like the transactional topics above. Lanes start at the topic
  (the publisher picks by ``kind``) so a campaign of 100,000 queued mails is
  never in the same partition queue as an invoice, in any processor.
- released: MailReleased from the limiter (and ops commands it forwards),
  keyed by message_id: delivery's input, co-partitioned with its ledger.
  held: MailHeld from the limiter, keyed by message_id (status reads it;
  kept off delivery's input so 100,000 deferrals never sit before an invoice).
- commands, command-results: QueueCommandIssued and its answer, keyed by
  message_id, so a command meets the mail's state in the same partition of
  the limiter, delivery and status tables.
- quota: QuotaAsked from the limiter and delivery, ONE partition (key =
  message_id, for readers only): every limited SMTP transaction of every
  server, tenant and domain is counted by one writer in one order, so a
  daily limit L is exactly L whatever the partitions and workers (see
  processors/limiter/quota.py; the cost is one extra hop per limited mail,
  and one partition's pace is the ceiling for limited mail).
- quota-answers: QuotaGranted / QuotaRefused for the limiter, keyed by
  message_id, co-partitioned with routing-decided and the limiter's tables
  (the answer meets its mail's partition). delivery-quota: the same for
  delivery's retries, co-partitioned with the delivery ledger.
- dead-letter: key = the source key; one partition is plenty.
- inbound, inbound-routed: key = the mail's normalized Message-ID
  (``left@right-lowercased``, no brackets; ``inbound:<inbound_id>`` when it
  has none), so every copy of one mail is on one partition with the
  router's duplicate table.
- sent-ids, inbound-threads: key = a normalized RFC Message-ID. sent-ids
  says "Postlane sent this Message-ID" (built from routing/delivery events
  by re-keying); a reply lookup is re-keyed to the Message-ID it looks up,
  so it meets the reply table's partition (see processors/inbound).
- inbound-aliases: key = ``alias|sender``, the loop counter's key.
- incoming-status: key = the incoming server's name; it also decides which
  fetcher worker polls which server (the partition owner does).
- bounce-mail: key = the bounce mail's id (inbound id, or a hash of the
  bytes); stateless parsing, any spread will do.
- bounce-attribution: key = the message_id a parsed bounce names, so it
  meets that mail's ``DeliveryStarted`` (``delivery``, keyed the same) and
  the table of its recipients on one partition: a bounce counts only for
  an address the mail was sent to.
- bounce-domains: key = the bounced recipient's domain (lower-cased), so
  the outage check of one domain (bursts of one error, mail sent there)
  lives on one partition with its table.
- bounces, blacklist: key = the address (lower-cased), so every event of
  one address is on one partition, in order, with the counting table;
  ``blacklist`` is compacted (latest per address is the blacklist).
- webhook-events, webhooks: key = the mail's message_id (the address when
  an event names no mail). ``webhook-events`` carries the ``bounces``
  topic's events re-keyed by their message_id, so they meet the mail's
  delivery events and the webhooks processor's tables on one partition:
  one mail's notifications are posted in order per endpoint.
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
    # a lane that yields: a worker hands over records of these topics only
    # when none of its other partitions has a fetched record waiting
    # (streams/upstream_patches.py, the consumer's fetch order)
    low_priority: bool = False
    # the one event type publishers write here: a record without ``type``
    # (optional in the exported JSON Schema) is read as this one by every
    # reader, as the router reads it (empty: every record names its type)
    untyped: str = ""
    # nothing waits for its records now (readers show them: the console,
    # `postlane status`; or the mass lane, whose mail the limiter holds for
    # seconds anyway): they may wait settings.background_linger_ms for more of
    # their partition (streams/upstream_patches.py,
    # fix_one_linger_for_every_topic). Fewer, fuller batches: the embedded
    # broker keeps each batch at ~1.1-2 KB beyond its records and lists every
    # stored batch of a partition on each fetch that returns records from it.
    linger: bool = False

    def full(self, settings: Settings) -> str:
        return settings.topic(self.name)

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions


CONFIG = TopicSpec("config", compacted=True, single_partition=True,
                   doc="server/settings configuration events (latest per key)")
SEND_REQUESTED = TopicSpec("send-requested", doc="SendRequested from services",
                           untyped="SendRequested")
ROUTING_DECIDED = TopicSpec("routing-decided", doc="RoutingDecided from the router")
DELIVERY = TopicSpec("delivery", doc="DeliveryStarted / DeliveryAttempted")
DELIVERY_DUE = TopicSpec("delivery-due", doc="RetryTimeReached from the retry timer")
STATUS = TopicSpec("status", doc="MessageStatusChanged from the status projection",
                   linger=True)
SEND_REQUESTED_MASS = TopicSpec("send-requested-mass", low_priority=True,
                                doc="SendRequested of kind mass (the mass lane)",
                                untyped="SendRequested")
ROUTING_DECIDED_MASS = TopicSpec("routing-decided-mass", low_priority=True,
                                 doc="RoutingDecided for mass mail (the mass lane)",
                                 linger=True)
RELEASED = TopicSpec("released", doc="MailReleased from the limiter, and the ops commands "
                     "it forwards to delivery")
HELD = TopicSpec("held", doc="MailHeld from the limiter: scheduled, deferred, paced; "
                 "QuotaRefused of a delivery retry (the status says why it waits)")
COMMANDS = TopicSpec("commands", doc="QueueCommandIssued: retry, send-now, cancel, ack",
                     untyped="QueueCommandIssued")
COMMAND_RESULTS = TopicSpec("command-results",
                            doc="QueueCommandApplied / QueueCommandRefused, MessageCancelled")
DEAD_LETTER = TopicSpec("dead-letter", single_partition=True,
                        doc="EventDeadLettered: inputs a processor refused")
QUOTA = TopicSpec("quota", single_partition=True,
                  doc="QuotaAsked: tokens of limits asked before a limited SMTP transaction")
QUOTA_ANSWERS = TopicSpec("quota-answers", doc="QuotaGranted / QuotaRefused for the limiter")
DELIVERY_QUOTA = TopicSpec("delivery-quota",
                           doc="QuotaGranted / QuotaRefused for delivery's retries")

INBOUND = TopicSpec("inbound", doc="InboundMailReceived / InboundMailRejected (raw mail)")
INBOUND_ROUTED = TopicSpec("inbound-routed", doc="InboundMailRouted from the inbound router")
SENT_IDS = TopicSpec("sent-ids", doc="SentMessageRecorded: Message-IDs Postlane sent")
INBOUND_THREADS = TopicSpec("inbound-threads",
                            doc="InboundReplyLookupRequested (router-internal, re-keyed)")
INBOUND_ALIASES = TopicSpec("inbound-aliases",
                            doc="InboundAliasMatched (router-internal, keyed alias|sender)")
INCOMING_STATUS = TopicSpec("incoming-status",
                            doc="IncomingServerChecked from the fetcher, keyed by server")

BOUNCE_MAIL = TopicSpec("bounce-mail", doc="BounceMailReceived: raw bounce mails to parse",
                        untyped="BounceMailReceived")
BOUNCE_ATTRIBUTION = TopicSpec("bounce-attribution",
                               doc="RecipientBounced naming a mail (internal, keyed by its "
                               "message_id): checked against the mail's recipients")
BOUNCE_DOMAINS = TopicSpec("bounce-domains",
                           doc="RecipientBounced / RecipientsMailed (internal, keyed by domain)")
BOUNCES = TopicSpec("bounces", doc="BounceRecorded, BounceDiscounted, MailReceivedFrom, "
                    "BlacklistEdited, keyed by address: the blacklist's log")
BLACKLIST = TopicSpec("blacklist", compacted=True,
                      doc="BlacklistChanged from the counting processor, keyed by address")
WEBHOOK_EVENTS = TopicSpec("webhook-events",
                           doc="bounces-topic events re-keyed by message_id for the webhooks "
                           "processor (internal)")
WEBHOOKS = TopicSpec("webhooks", doc="WebhookDelivered / WebhookDeadLettered, keyed by "
                     "message_id: what became of each webhook notification")


def untyped_by_topic(settings: Settings) -> dict[str, str]:
    """Full topic name -> the event type its untyped records are read as."""
    return {spec.full(settings): spec.untyped for spec in ALL_TOPICS if spec.untyped}


ALL_TOPICS: tuple[TopicSpec, ...] = (
    CONFIG, SEND_REQUESTED, ROUTING_DECIDED, DELIVERY, DELIVERY_DUE, STATUS, DEAD_LETTER,
    SEND_REQUESTED_MASS, ROUTING_DECIDED_MASS, RELEASED, HELD, COMMANDS, COMMAND_RESULTS,
    INBOUND, INBOUND_ROUTED, SENT_IDS, INBOUND_THREADS, INBOUND_ALIASES, INCOMING_STATUS,
    BOUNCE_MAIL, BOUNCE_ATTRIBUTION, BOUNCE_DOMAINS, BOUNCES, BLACKLIST,
    WEBHOOK_EVENTS, WEBHOOKS, QUOTA, QUOTA_ANSWERS, DELIVERY_QUOTA,
)
