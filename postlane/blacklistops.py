"""The read side of the blacklist for tools, without a Faust worker.

- ``published``: the blacklist as the ``blacklist`` topic has it (the
  latest ``BlacklistChanged`` per address): what the routers see.
- ``replay``: the ``bounces`` topic folded from offset 0 (up to a time) with
  ``processors.blacklist.core.fold_in_place`` (the transitions of ``evolve``,
  the function the processor uses, without its copy and change event).
- ``live_table``: the processor's table, read back from its changelog topic
  (``<app id>-blacklist-changelog``).
- ``history``: one address's events (its partition of ``bounces``), folded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AIOTopicPartition
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from processors.blacklist.core import (
    FOLDED_EVENTS,
    AddressState,
    Rules,
    address_of,
    comparable,
    evolve,
    fold_in_place,
)
from schemas import (
    BlacklistChanged,
    BlacklistEdited,
    BounceRecorded,
    Event,
    InvalidEvent,
    decode,
    decode_any,
)
from schemas.base import owned_decoder
from streams import tables
from streams.client import Record, publish, read_topic, unavailable
from streams.offsets import true_end_offsets, true_end_offsets_sync
from streams.partitioning import partition_for
from streams.settings import Settings
from streams.tables import decode_row
from streams.topics import BLACKLIST, BOUNCES

REGISTRY: dict[str, type[Event]] = {cls.__name__: cls for cls in FOLDED_EVENTS}
TABLE = tables.BLACKLIST.name


def published(s: Settings, as_of: float | None = None) -> dict[str, BlacklistChanged]:
    """address -> its latest change (blacklisted or lifted); with ``as_of``
    only changes recorded at or before it."""
    out: dict[str, BlacklistChanged] = {}
    for rec in read_topic(s, BLACKLIST.full(s), idle=0.3):
        if as_of is not None and rec.timestamp_ms / 1000.0 > as_of:
            continue
        try:
            ev = decode(BlacklistChanged, rec.value)
        except InvalidEvent:
            continue
        out[ev.address] = ev
    return out


@dataclass
class Replay:
    states: dict[str, AddressState] = field(default_factory=dict)
    records: int = 0
    skipped: int = 0  # not an event of the fold, or wrongly keyed (the processor refuses them)
    after: int = 0  # records after --as-of, not folded
    last_ts: float = 0.0


def fold_records(records: Iterator[Record], rules: Rules, as_of: float | None = None) -> Replay:
    """Fold records of the bounces topic, in their order per partition;
    with ``as_of`` only records whose timestamp is at or before it (the
    embedded broker's offsets_for_times is approximate: the records'
    own timestamps decide)."""
    r = Replay()
    states = r.states
    n = skipped = after = 0
    last_ms: int | None = None  # the last folded record's timestamp (ms), the latest
    decode = owned_decoder(REGISTRY)
    for rec in records:
        n += 1
        ts = rec.timestamp_ms
        if as_of is not None and ts / 1000.0 > as_of:
            after += 1
            continue
        try:
            ev = decode(rec.value)  # decode_any's event, or its refusal
        except InvalidEvent:
            skipped += 1
            continue
        # address_of(ev); a BounceRecorded's address is a lower-cased,
        # stripped str already (its problems() refuse anything else)
        address = ev.__dict__["address"] if type(ev) is BounceRecorded else address_of(ev)
        if rec.key != address.encode():
            skipped += 1
            continue
        state = states.get(address)
        try:
            new = fold_in_place(state, ev, rules)
        except Exception:  # noqa: BLE001 - the processor dead-letters what fails to fold
            skipped += 1
            continue
        if new is not state:
            states[address] = new
        if last_ms is None or ts > last_ms:
            last_ms = ts
    r.records, r.skipped, r.after = n, skipped, after
    if last_ms is not None:
        r.last_ts = max(r.last_ts, last_ms / 1000.0)
    return r


def replay(s: Settings, rules: Rules, as_of: float | None = None) -> Replay:
    return fold_records(read_topic(s, BOUNCES.full(s), idle=0.5), rules, as_of)


def _table_value(raw: bytes | None) -> dict[str, Any] | None:
    """A changelog value: the row in the one table encoding
    (``streams.tables.decode_row``); None for a tombstone or not a row."""
    value = decode_row(raw)
    return value if isinstance(value, dict) else None


async def _read_raw(s: Settings, topic: str, idle: float,
                    as_of: float | None = None) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` with aiokafka: a worker running several
    processors names its changelogs ``<prefix>-a+b-<table>-changelog``,
    which kafka-python refuses to read ("+" is outside Kafka's legal topic
    characters; Tansu accepts it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    try:
        await consumer.start()
    except KafkaError as exc:  # aiokafka's errors derive from kafka-python's name only
        raise unavailable(s, exc) from exc
    except Exception as exc:  # noqa: BLE001
        raise unavailable(s, exc) from exc
    out: list[tuple[bytes | None, bytes | None]] = []
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [AIOTopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await true_end_offsets(consumer, tps)
        last = time.monotonic()
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=100)
            for records in batch.values():
                for r in records:
                    if as_of is None or r.timestamp / 1000.0 <= as_of:
                        out.append((r.key, r.value))
                last = time.monotonic()
            done = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if (done and time.monotonic() - last >= idle) or time.monotonic() - last > 10:
                return out
    finally:
        await consumer.stop()


def live_table(s: Settings, topic: str, as_of: float | None = None) -> dict[str, AddressState]:
    """The live table from its changelog; with ``as_of``, as it was then
    (changelog records written at or before it)."""
    out: dict[str, AddressState] = {}
    for raw_key, raw_value in asyncio.run(_read_raw(s, topic, 0.5, as_of)):
        rec = Record(topic, 0, 0, 0, raw_key, raw_value)
        key = (rec.key or b"").decode("utf-8", "replace")
        key = key.strip('"') if key.startswith('"') else key
        try:
            value = _table_value(rec.value)
        except orjson.JSONDecodeError:
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = AddressState.from_dict(value)
    return out


def differences(replayed: dict[str, AddressState], live: dict[str, AddressState],
                rules: Rules) -> list[str]:
    """One line per address where the two disagree (blacklisting, manual,
    counted bounces, bounces kept)."""
    out = []
    for addr in sorted(set(replayed) | set(live)):
        a = comparable(replayed[addr], rules) if addr in replayed else None
        b = comparable(live[addr], rules) if addr in live else None
        if a != b:
            out.append(f"{addr}: replay {a} / live {b}")
    return out


def history(s: Settings, address: str, rules: Rules) -> AddressState | None:
    """Fold the one partition of ``bounces`` that holds ``address``."""
    topic = BOUNCES.full(s)
    key = address.encode()
    try:
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, group_id=None,
                                 enable_auto_commit=False, client_id="postlane-blacklist-why",
                                 fetch_max_wait_ms=100)
    except KafkaError as exc:
        raise unavailable(s, exc) from exc
    state: AddressState | None = None
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            return None
        tp = TopicPartition(topic, partition_for(key, len(parts)))
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        end = true_end_offsets_sync(consumer, [tp])[tp]
        idle_since = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=200, max_records=2000)
            for records in batch.values():
                for rec in records:
                    idle_since = time.monotonic()
                    if rec.key != key:
                        continue
                    try:
                        ev = decode_any(REGISTRY, rec.value)
                    except InvalidEvent:
                        continue
                    state, _ = evolve(state, ev, rules)
            if consumer.position(tp) >= end and time.monotonic() - idle_since > 0.3:
                break
            if time.monotonic() - idle_since > 10:
                break
    finally:
        consumer.close()
    return state


def edit(s: Settings, address: str, action: str, reason: str = "", by: str = "") -> None:
    event = BlacklistEdited(address=address, action=action, reason=reason, by=by)
    publish(s, BOUNCES, [(address, event)])
