"""The fetcher's pure core: the per-server checkpoint and what to fetch.

A checkpoint (table ``incoming-checkpoints``, key = server name) holds the
folder's UIDVALIDITY and the last UID taken in. Taking a batch of mails in:

1. the batch is recorded as ``pending`` (with the inbound topic's end
   offsets at that moment) and flushed to the changelog;
2. each mail is published and acknowledged by the broker, in UID order;
3. ``last_uid`` moves past the batch, ``pending`` is cleared and the UIDs
   to mark seen (or move) are recorded in ``unflagged``;
4. the mails are marked seen/moved, then ``unflagged`` is cleared.

A crash in step 2 leaves ``pending``: the next start reads the inbound topic
from the recorded offsets and finds which of the batch were published
(``resolve_pending``), so none is published twice and none is lost. A
crash in step 4 leaves ``unflagged``, done again at the next start (marking
seen twice is harmless).

The first poll of a folder (no checkpoint, or UIDVALIDITY changed: the
folder was recreated and its UIDs mean other mails now) takes the UNSEEN
mails below UIDNEXT and then everything newer; a mail already taken in
under the old UIDVALIDITY was marked seen, and the router drops any copy by
its Message-ID.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int = 0
    last_uid: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # {"uid", "inbound_id"}
    pending_from: dict[str, int] = field(default_factory=dict)  # partition -> offset
    unflagged: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Checkpoint:
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class Plan:
    """What one poll takes: ``search`` criteria, UIDs at most ``below``
    (0: no bound) and above the checkpoint; afterwards ``last_uid`` is at
    least ``floor``. ``note`` says why when the checkpoint was reset."""

    search: tuple[str, ...]
    checkpoint: Checkpoint
    floor: int
    below: int = 0
    note: str = ""

    def take(self, uids: list[int]) -> list[int]:
        return sorted(u for u in set(uids) if u > self.checkpoint.last_uid
                      and (not self.below or u < self.below))


def plan(cp: Checkpoint, uidvalidity: int, uidnext: int) -> Plan:
    if cp.uidvalidity and cp.uidvalidity == uidvalidity:
        return Plan(("UID", f"{cp.last_uid + 1}:*"), cp, floor=cp.last_uid)
    note = ""
    if cp.uidvalidity:
        note = (f"UIDVALIDITY changed from {cp.uidvalidity} to {uidvalidity} (the folder was "
                "recreated): taking its unseen mail again; copies are dropped by Message-ID")
    fresh = Checkpoint(uidvalidity=uidvalidity, unflagged=[])
    return Plan(("UNSEEN",), fresh, floor=max(uidnext - 1, 0), below=uidnext, note=note)


def begin_batch(cp: Checkpoint, items: list[tuple[int, str]],
                ends: dict[int, int]) -> Checkpoint:
    """Step 1: ``items`` are (uid, inbound id), ``ends`` the inbound topic's
    end offset per partition."""
    return replace(cp, pending=[{"uid": u, "inbound_id": i} for u, i in items],
                   pending_from={str(p): o for p, o in ends.items()})


def end_batch(cp: Checkpoint, taken: list[int], to_flag: list[int]) -> Checkpoint:
    """Step 3: every mail of the batch is on the log."""
    last = max([cp.last_uid, *taken])
    return replace(cp, last_uid=last, pending=[], pending_from={},
                   unflagged=sorted({*cp.unflagged, *to_flag}))


def flagged(cp: Checkpoint) -> Checkpoint:
    """Step 4 done."""
    return replace(cp, unflagged=[])


def resolve_pending(cp: Checkpoint, published: dict[str, bool]) -> tuple[Checkpoint, list[int]]:
    """After a crash in step 2: ``published`` maps the inbound ids found on
    the topic since ``pending_from`` to whether the mail was taken in whole
    (False: recorded as rejected). The batch was published in UID order, so
    the ones found are a prefix; the checkpoint moves past them and the
    rest is fetched again. Returns the new checkpoint and the UIDs found."""
    done = [p for p in cp.pending if p["inbound_id"] in published]
    uids = [int(p["uid"]) for p in done]
    whole = [int(p["uid"]) for p in done if published[p["inbound_id"]]]
    return end_batch(cp, uids, whole), uids


def batches(uids: list[int], size: int) -> list[list[int]]:
    size = max(1, size)
    return [uids[i : i + size] for i in range(0, len(uids), size)]


def limit_for(server_limit: int, default_limit: int) -> int:
    return server_limit or default_limit


def next_wait(failures: int, first: float, cap: float) -> float:
    """Seconds before reconnecting after ``failures`` failed attempts in a row."""
    return float(min(cap, first * (2 ** max(0, failures - 1))))
