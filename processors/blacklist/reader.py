"""The router's view of the blacklist: every router worker folds the
``blacklist`` topic (all partitions, from offset 0, outside any consumer
group) into its own ``BlacklistView``, as it does with the config topic.

Why a view and not a join: the blacklist is keyed by address, the router by
message id, and one mail has many addresses on different partitions. A join
would re-key every mail by each recipient and back (two more hops and a
fan-in per mail) for a table that changes rarely: the ``blacklist`` topic
carries only changes of the blacklisting, not every bounce, so even a large
list (one small record per blacklisted address) fits in each worker's memory
and is read in seconds at start. The price is that a router learns of a new
blacklisting a moment after it happens, and a mail routed in that moment is
sent; a bounce takes minutes to arrive anyway, and five of them over a week
are needed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import BlacklistChanged, InvalidEvent, decode
from streams.topics import BLACKLIST

from ..follower import TopicFollower

log = logging.getLogger("postlane.blacklist")


@dataclass
class BlacklistView:
    """address -> the sentence why it is blacklisted (only blacklisted ones),
    and address -> its suppressions by type (``sets``: each ``{"type",
    "tenant", "list_id", "reason", "since"}``; the router decides with
    ``processors.blacklist.core.applies`` which of them stop a mail)."""

    entries: dict[str, str] = field(default_factory=dict)
    sets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    version: int = 0

    def reason(self, address: str) -> str | None:
        return self.entries.get(address.strip().lower())

    def as_mapping(self) -> Mapping[str, list[dict[str, Any]]]:
        """What the router's ``suppress`` takes: address -> suppressions."""
        return self.sets


def apply(view: BlacklistView, event: BlacklistChanged) -> None:
    """Fold one change (the latest per address wins). A change written
    before suppressions existed (no ``suppressions``) is its blacklisting."""
    view.version += 1
    if event.blacklisted:
        view.entries[event.address] = event.reason or "blacklisted"
    else:
        view.entries.pop(event.address, None)
    entries = [dict(e) for e in event.suppressions if isinstance(e, dict)]
    if not entries and event.blacklisted:
        entries = [{"type": "manual" if event.manual else "hard_bounce", "tenant": "",
                    "list_id": "", "reason": event.reason or "blacklisted",
                    "since": event.since}]
    if entries:
        view.sets[event.address] = entries
    else:
        view.sets.pop(event.address, None)


class BlacklistReader(TopicFollower):
    what = "blacklist"

    def topic_name(self) -> str:
        return BLACKLIST.full(self.settings)

    def reset(self) -> None:
        self.view = BlacklistView()

    def summary(self) -> str:
        return f"{len(self.view.entries)} addresses"

    async def wait_ready(self) -> BlacklistView:
        await self.caught_up()
        return self.view

    def apply(self, value: bytes | None, offset: int) -> None:
        try:
            event = decode(BlacklistChanged, value)
        except InvalidEvent as exc:
            log.error("blacklist offset %d skipped: %s", offset, exc)
            return
        apply(self.view, event)
