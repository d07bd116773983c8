"""Waiting for one's own records, not for the whole producer.

``app.producer.flush()`` waits for everything the process has queued: every
agent's sends and every table's changelog writes: while a campaign is taken
in, that queue holds seconds of other agents' work (it was worse when each
record was its own batch on the embedded broker, before f0d5edc). A pass
that must know its records are on the log waits for exactly those:

- ``acked`` waits for the acknowledgements of records it sent (the limiter
  before it writes its tables; delivery before SMTP and before its ledger);
- ``write_row`` sets a table row with its changelog record sent straight to
  the producer, not through Faust's shared table-write buffer (a FIFO queue
  behind every other agent's table writes), and returns the record's ack.
  Every write of such a table must go this way: a buffered write of the same
  key could reach the log after a direct one and win on rebuild. Delivery's
  ledger is written only like this (its rows must be on the log before SMTP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from .tables import Rows, encode_row


async def acked(futures: Iterable[Awaitable[Any]]) -> None:
    """Wait until the broker acknowledged each of ``futures`` (what
    ``await topic.send(...)`` returns); raise the first failure, after all
    of them settled (no un-retrieved exceptions left behind)."""
    results = await asyncio.gather(*futures, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def write_row(rows: Rows, key: bytes, value: Any) -> Awaitable[Any]:
    """``rows[key] = value`` with the changelog record handed to the
    producer now (in partition order with the table's other direct writes),
    not queued in Faust's buffer; returns the record's ack to await. Only
    for tables that use the default partitioner (``use_partitioner=True``)
    and are not windowed. The record goes straight to the aiokafka client
    (as ``streams/direct.py`` sends), the table's sensors hear of the write
    (the mail-state metrics), and the callback keeps the persisted changelog
    offset of an on-disk store current, as Faust's own writes do."""
    table, value = rows.table, encode_row(value)  # the one row encoding (tables.py)
    topic = table.changelog_topic
    client = getattr(table.app.producer, "_producer", None)
    raw_key, _ = topic.prepare_key(key, table.key_serializer)
    raw_value, _ = topic.prepare_value(value, table.value_serializer)
    if client is None or type(raw_key) is not bytes or type(raw_value) is not bytes:
        fut = await topic.send(
            key=key, value=value,
            key_serializer=table.key_serializer, value_serializer=table.value_serializer,
            callback=table._on_changelog_sent,
        )
    else:
        fut = await client.send(topic.get_topic_name(), raw_value, key=raw_key)
        fut.add_done_callback(table._on_changelog_sent)
    table.app.sensors.on_table_set(table, key, value)  # sensors see the old row, as Faust's
    table.data[key] = value
    return fut  # type: ignore[no-any-return]
