"""Every table, declared once: its name, what a key is, how a value is
encoded, and its partitioning. ``processors/registry.py`` says which
processor owns (is the one writer of) each; agents make them with
``Runtime.table(SPEC)``.

Value encodings (two, named here so a reader of a changelog knows which):
- ``json``: the row is a plain dict (or list) and Faust's codec writes it as
  JSON (``streams/app.py``'s ``value_serializer``);
- ``bytes``: the agent encodes the row itself (orjson of the core's state)
  and the table holds those bytes as they are.
Keys are always raw bytes (``key_type=bytes``): without it the changelog is
read back as JSON and a restarted worker never finishes recovery.

``use_partitioner``: rows are written outside the event that made them
(after a batch, from a timer), so the changelog partition comes from the
key through the producer's partitioner, the same as the inputs'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .settings import Settings

Encoding = Literal["json", "bytes"]


@dataclass(frozen=True)
class TableSpec:
    name: str  # the Faust table name (changelog ``<app id>-<name>-changelog``)
    key: str  # what a key is
    value: Encoding
    doc: str  # what a row holds
    use_partitioner: bool = False
    single_partition: bool = False

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions


def _t(name: str, key: str, value: Encoding, doc: str, *, partitioner: bool = False,
       single: bool = False) -> TableSpec:
    return TableSpec(name, key, value, doc, partitioner, single)


LIMITER_MASS = _t("limiter-mass", "message_id", "json",
                  "the mass Mail taken in (intake agent only)", partitioner=True)
LIMITER_HELD = _t("limiter-held", "message_id", "json",
                  "held / released / cancelled (scheduler only)", partitioner=True)
LIMITER_METERS = _t("limiter-meters", "partition", "json",
                    "one row per partition: counts, buckets, window", partitioner=True)
LIMITER_QUOTA = _t("limiter-quota", "batch key", "json",
                   "the grants counted in it (quota agent only)", partitioner=True, single=True)
DELIVERY_LEDGER = _t("delivery-ledger", "message_id", "json",
                     "the delivery Ledger: attempts, recipients, next retry", partitioner=True)
STATUS = _t("status", "message_id", "bytes", "MessageStatus (JSON)", partitioner=True)
INBOUND_SEEN = _t("inbound-seen", "normalized Message-ID", "json",
                  "the first inbound mail with it")
SENT_INDEX = _t("sent-index", "normalized Message-ID Postlane sent", "json",
                "message id, thread")
ALIAS_LOOPS = _t("alias-loops", "alias|sender", "json", "mails counted in the loop window")
SENT_THREADS = _t("sent-threads", "message id", "json",
                  "thread_ref, tenant, Message-IDs indexed")
INCOMING_CHECKPOINTS = _t("incoming-checkpoints", "incoming server", "json",
                          "UIDVALIDITY, last UID, pending batch", partitioner=True)
INCOMING_STATUS = _t("incoming-status", "incoming server", "json",
                     "its last IncomingServerChecked")
BOUNCE_DOMAINS = _t("bounce-domains", "recipient domain", "bytes",
                    "recent errors and mail sent (outage check)")
BOUNCE_RECIPIENTS = _t("bounce-recipients", "message_id", "bytes",
                       "its recipients (JSON list): bounce attribution")
BLACKLIST = _t("blacklist", "address", "bytes",
               "AddressState (JSON): counted bounces and the blacklisting")
WEBHOOK_TENANTS = _t("webhook-tenants", "message_id", "json", "the mail's tenant",
                     partitioner=True)
WEBHOOK_OUTBOX = _t("webhook-outbox", "lane (message_id)", "json",
                    "{rows: delivery_id -> notification row}", partitioner=True)

ALL_TABLES: tuple[TableSpec, ...] = (
    LIMITER_MASS, LIMITER_HELD, LIMITER_METERS, LIMITER_QUOTA, DELIVERY_LEDGER, STATUS,
    INBOUND_SEEN, SENT_INDEX, ALIAS_LOOPS, SENT_THREADS, INCOMING_CHECKPOINTS, INCOMING_STATUS,
    BOUNCE_DOMAINS, BOUNCE_RECIPIENTS, BLACKLIST, WEBHOOK_TENANTS, WEBHOOK_OUTBOX,
)
