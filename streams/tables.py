"""Every table, declared once: its name, what a key is, what a row holds
and its partitioning. ``processors/registry.py`` says which processor owns
(is the one writer of) each; agents make them with ``Runtime.table(SPEC)``,
which gives the table as ``Rows``.

One value encoding for every table (``ROW_ENCODING``): the row is a JSON
value (a dict, a list, a string, or a dataclass orjson writes as its fields)
that ``Rows`` turns into orjson bytes; the Faust table holds those bytes and
writes them to the changelog as they are (``value_type=bytes``, Faust's
``raw`` serializer). Why this one (``bench/table_encoding.py`` against
Faust's json codec holding dicts, on ce4808d, load 2): a recovered row
0.6 us against 3.6-3.9, a row held in memory 1.1-1.3 KB against 4.1-4.9 KB,
nothing changes with an on-disk store (rocksdb, where a json table would
decode on every read as well), a read is a copy (no caller can change the table's row in place),
and the status row stays the bytes ``streams/mail_states.py`` reads
unparsed. Per write + read it is mixed: a status row 6.7 us against 10.4,
a delivery ledger 13.4 against 11.5 and a limiter mail 3.1 against 2.0 (a
read costs one ``orjson.loads``: a json table hands out the dict it holds);
a few us per mail against the pipeline's ~4 ms of CPU. A scan of a whole
table must not decode every row (100,000 ledgers: 1.8 s against 35 ms with
dicts held): ``Rows.items_if`` decodes only the rows whose bytes pass a
test (46 ms). A changelog written
by Faust's json codec (the tables declared ``json`` before there was one
encoding) holds the same JSON, so it is read back without a migration.

Keys are always raw bytes (``key_type=bytes``): without it the changelog is
read back as JSON and a restarted worker never finishes recovery.

``use_partitioner``: rows are written outside the event that made them
(after a batch, from a timer), so the changelog partition comes from the
key through the producer's partitioner, the same as the inputs'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .settings import Settings

Encoding = Literal["orjson"]
ROW_ENCODING: Encoding = "orjson"  # the one encoding of every table's values
# what Faust's json codec allowed in a row, kept for the rows that need it
# (non-string dict keys become strings, as they did on recovery before)
_LENIENT = orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


def encode_row(value: Any) -> bytes:
    """A row as the bytes its table holds and its changelog carries."""
    try:
        return orjson.dumps(value)
    except TypeError:
        from faust.utils.json import on_default  # what Faust's json codec wrote

        return orjson.dumps(value, default=on_default, option=_LENIENT)


def decode_row(raw: bytes | None) -> Any:
    """A table's (or a changelog record's) bytes as the row's JSON value;
    None for no row (a missing key, a tombstone)."""
    return None if raw is None else orjson.loads(raw)


class Rows:
    """A Faust table whose values are rows in ``ROW_ENCODING``: the mapping
    operations agents use, with each row encoded on write and decoded on
    read. ``table`` is the Faust table (its store holds the bytes)."""

    __slots__ = ("table",)

    def __init__(self, table: Any) -> None:
        self.table = table

    def get(self, key: bytes, default: Any = None) -> Any:
        raw = self.table.get(key)
        return default if raw is None else orjson.loads(raw)

    def __getitem__(self, key: bytes) -> Any:
        return orjson.loads(self.table[key])

    def __setitem__(self, key: bytes, value: Any) -> None:
        self.table[key] = encode_row(value)

    def __delitem__(self, key: bytes) -> None:
        del self.table[key]

    def __contains__(self, key: object) -> bool:
        return key in self.table

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.table)

    def keys(self) -> Iterator[bytes]:
        return iter(self.table.keys())

    def items(self) -> Iterator[tuple[bytes, Any]]:
        for key, raw in self.table.items():
            yield key, orjson.loads(raw)

    def items_if(self, test: Callable[[bytes], bool]) -> Iterator[tuple[bytes, Any]]:
        """The rows whose bytes pass ``test``, decoded; the others are
        skipped undecoded. For a scan of the whole table that cares about
        few rows (a timer every second over every ledger): ``test`` must be
        true of every row the scan cares about, as ``encode_row`` writes it
        (compact JSON: ``"done":false``, no space)."""
        for key, raw in self.table.items():
            if test(raw):
                yield key, orjson.loads(raw)

    def values(self) -> Iterator[Any]:
        for raw in self.table.values():
            yield orjson.loads(raw)


@dataclass(frozen=True)
class TableSpec:
    name: str  # the Faust table name (changelog ``<app id>-<name>-changelog``)
    key: str  # what a key is
    doc: str  # what a row holds
    use_partitioner: bool = False
    single_partition: bool = False
    value: Encoding = ROW_ENCODING  # how a value is encoded: there is one
    # nothing waits for this table's changelog records: they may wait
    # settings.background_linger_ms for more of their partition, so they go
    # out a few hundred to a batch under load, not a few (every stored batch
    # costs the embedded broker ~1.1-2 KB and a slice of each later fetch;
    # streams/upstream_patches.py, fix_one_linger_for_every_topic)
    linger: bool = False

    def partitions(self, settings: Settings) -> int:
        return 1 if self.single_partition else settings.partitions

    def changelog(self, app_id: str) -> str:
        return changelog_topic(app_id, self.name)


def changelog_topic(app_id: str, table: str) -> str:
    """Faust's name for the changelog of ``table`` in the app ``app_id``
    (``<app id>-<table>-changelog``; a worker's app id is
    ``<app_prefix>-<its processors, sorted, joined by ->``)."""
    return f"{app_id}-{table}-changelog"


def _t(name: str, key: str, doc: str, *, partitioner: bool = False,
       single: bool = False, linger: bool = False) -> TableSpec:
    return TableSpec(name, key, doc, partitioner, single, linger=linger)


# linger: the limiter writes its tables after its pass's events are on the log
# and never waits for the rows; the status agent hands its rows to the producer
# without waiting either (the ledger, the quota and the webhooks' outbox wait)
LIMITER_MASS = _t("limiter-mass", "message_id",
                  "the mass Mail taken in (intake agent only)", partitioner=True, linger=True)
LIMITER_HELD = _t("limiter-held", "message_id",
                  "held / released / cancelled (scheduler only)", partitioner=True, linger=True)
LIMITER_METERS = _t("limiter-meters", "partition",
                    "one row per partition: counts, buckets, window", partitioner=True,
                    linger=True)
LIMITER_QUOTA = _t("limiter-quota", "batch key",
                   "the grants counted in it (quota agent only)", partitioner=True, single=True)
DELIVERY_LEDGER = _t("delivery-ledger", "message_id",
                     "the delivery Ledger: attempts, recipients, next retry", partitioner=True)
STATUS = _t("status", "message_id", "MessageStatus (JSON)", partitioner=True, linger=True)
INBOUND_SEEN = _t("inbound-seen", "normalized Message-ID",
                  "the first inbound mail with it")
SENT_INDEX = _t("sent-index", "normalized Message-ID Postlane sent",
                "message id, thread")
ALIAS_LOOPS = _t("alias-loops", "alias|sender", "mails counted in the loop window")
SENT_THREADS = _t("sent-threads", "message id",
                  "thread_ref, tenant, Message-IDs indexed")
INCOMING_CHECKPOINTS = _t("incoming-checkpoints", "incoming server",
                          "UIDVALIDITY, last UID, pending batch", partitioner=True)
INCOMING_STATUS = _t("incoming-status", "incoming server",
                     "its last IncomingServerChecked")
BOUNCE_DOMAINS = _t("bounce-domains", "recipient domain",
                    "recent errors and mail sent (outage check)")
BOUNCE_RECIPIENTS = _t("bounce-recipients", "message_id",
                       "its recipients (JSON list): bounce attribution")
BLACKLIST = _t("blacklist", "address",
               "AddressState (JSON): counted bounces and the blacklisting")
WEBHOOK_TENANTS = _t("webhook-tenants", "message_id", "the mail's tenant",
                     partitioner=True)
WEBHOOK_OUTBOX = _t("webhook-outbox", "lane (message_id)",
                    "{rows: delivery_id -> notification row}", partitioner=True)

ALL_TABLES: tuple[TableSpec, ...] = (
    LIMITER_MASS, LIMITER_HELD, LIMITER_METERS, LIMITER_QUOTA, DELIVERY_LEDGER, STATUS,
    INBOUND_SEEN, SENT_INDEX, ALIAS_LOOPS, SENT_THREADS, INCOMING_CHECKPOINTS, INCOMING_STATUS,
    BOUNCE_DOMAINS, BOUNCE_RECIPIENTS, BLACKLIST, WEBHOOK_TENANTS, WEBHOOK_OUTBOX,
)
