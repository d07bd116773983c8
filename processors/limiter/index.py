"""The scheduler's in-memory index of one worker's partitions, rebuilt from
the limiter's tables after every rebalance (the tables are the truth)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streams.partitioning import partition_for

from .core import Mail, Meters


def meters_key(partition: int, partitions: int) -> bytes:
    """A key the default partitioner puts on ``partition``: the meters row of
    that partition lives (and is recovered) with the mail it meters."""
    return key_on("meters", partition, partitions)


def key_on(prefix: str, partition: int, partitions: int) -> bytes:
    """The first ``<prefix>:<partition>:<i>`` the default partitioner puts on ``partition``."""
    i = 0
    while True:
        key = f"{prefix}:{partition}:{i}".encode()
        if partition_for(key, partitions) == partition:
            return key
        i += 1


@dataclass
class Index:
    """``pending``: mass mail taken in and not yet released, held or
    cancelled, by seq (= its offset: creation order). ``held``: mail waiting
    in the held table. ``asking``: mail waiting for the quota's answer, the
    oldest ask first. ``meters``: each partition's counters."""

    partitions: int
    assigned: frozenset[int] = frozenset()
    pending: dict[int, dict[int, Mail]] = field(default_factory=dict)
    held: dict[int, dict[str, Mail]] = field(default_factory=dict)
    asking: dict[int, dict[str, Mail]] = field(default_factory=dict)
    meters: dict[int, Meters] = field(default_factory=dict)
    next_due: dict[int, float] = field(default_factory=dict)
    # keys of mass mail released or cancelled (its limiter-held row written):
    # the mass lane drops their limiter-mass rows
    done_mass: list[bytes] = field(default_factory=list)
    # (when, key) of limiter-held rows saying released / cancelled, oldest
    # first: the scheduler deletes them once older than ``held_keep``
    done_held: deque[tuple[float, bytes]] = field(default_factory=deque)
    # keys of the mail a pass released (one limiter-held row per pass, ``pass_row``):
    # a redelivered decision or answer finds them here
    released: set[bytes] = field(default_factory=set)
    passes: dict[bytes, list[str]] = field(default_factory=dict)  # pass row key -> its ids
    # mail with a limiter-held row of its own (held): its release replaces that row
    rowed: set[str] = field(default_factory=set)
    built: bool = False

    def partition(self, message_id: str) -> int:
        return partition_for(message_id, self.partitions)

    def rebuild(self, assigned: frozenset[int], mass_rows: Iterable[tuple[bytes, Any]],
                held_rows: Mapping[bytes, Any], meters_rows: Mapping[bytes, Any]) -> None:
        self.assigned = assigned
        self.pending = {p: {} for p in assigned}
        self.held = {p: {} for p in assigned}
        self.asking = {p: {} for p in assigned}
        self.released, self.passes, self.rowed = set(), {}, set()
        self.meters = {
            p: Meters.from_dict(meters_rows.get(meters_key(p, self.partitions)), p)
            for p in assigned
        }
        done: list[tuple[float, bytes]] = []
        for key, row in held_rows.items():
            p = partition_for(key, self.partitions)
            if p not in assigned or not isinstance(row, dict):
                continue
            if row.get("state") == "held":
                mail = Mail.from_dict(row["mail"])
                # an asking row of an older version: it asks again after the timeout
                (self.asking if mail.asked else self.held)[p][key.decode()] = mail
                self.rowed.add(mail.message_id)
            elif row.get("state") in ("released", "cancelled"):
                done.append((float(row.get("at", 0.0)), key))
                ids = row.get("ids")
                if isinstance(ids, list):  # a pass row: the mail it released
                    self.add_pass(key, ids)
        self.done_held = deque(sorted(done))
        mails: list[Mail] = []
        self.done_mass = []
        for key, row in mass_rows:
            p = partition_for(key, self.partitions)
            if p not in assigned or not isinstance(row, dict):
                continue
            state = held_rows.get(key)
            if key in self.released:
                self.done_mass.append(key)  # left by a crash before the prune
            elif state is None:
                mails.append(Mail.from_dict(row))
            elif isinstance(state, dict) and state.get("state") in ("released", "cancelled"):
                self.done_mass.append(key)  # left by a crash before the prune
        for mail in sorted(mails, key=lambda m: m.seq):
            self.pending[self.partition(mail.message_id)][mail.seq] = mail
        for p in assigned:
            self.asking[p] = dict(sorted(self.asking[p].items(), key=lambda kv: kv[1].asked))
            self.refresh_due(p)
        self.built = True

    def add_pass(self, key: bytes, ids: list[str]) -> None:
        """A pass row (``key``) says these mails were released."""
        self.passes[key] = ids
        self.released.update(mid.encode() for mid in ids)

    def prunable_held(self, now: float, keep: float) -> list[bytes]:
        """Keys of released / cancelled markers older than ``keep`` seconds:
        past any redelivery of their mail's input (delivery's ledger answers
        a later duplicate), so they need not be kept for ever. A pass row's
        mails are forgotten with it."""
        out: list[bytes] = []
        while self.done_held and self.done_held[0][0] < now - keep:
            key = self.done_held.popleft()[1]
            self.released.difference_update(mid.encode() for mid in self.passes.pop(key, ()))
            out.append(key)
        return out

    def refresh_due(self, p: int, ask_timeout: float = 30.0) -> None:
        held = self.held.get(p, {})
        asking = self.asking.get(p)
        first = (next(iter(asking.values())).asked + ask_timeout if asking
                 else float("inf"))  # the oldest ask times out first
        self.next_due[p] = min((wake_at(m, ask_timeout) for m in held.values()),
                               default=first)
        self.next_due[p] = min(self.next_due[p], first)


def wake_at(mail: Mail, ask_timeout: float) -> float:
    """When a held mail is next due (see core.due)."""
    if mail.slot:
        return mail.slot
    if mail.asked:
        return mail.asked + ask_timeout
    return mail.until
