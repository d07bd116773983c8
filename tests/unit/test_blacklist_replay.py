"""Replay's fold over records: the records' own timestamps decide --as-of,
records the processor refuses are skipped the same way, and differences
are reported per address."""

from __future__ import annotations

from postlane.blacklistops import differences, fold_records
from postlane.cli.replay_cmd import parse_time
from processors.blacklist.core import Rules
from schemas import BlacklistEdited, BounceRecorded, encode
from streams.client import Record

DAY = 86400.0
T0 = 1_790_000_000.0
ADDR = "bob@example.net"


def rec(i: int, event, *, key: str | None = None, ts: float | None = None) -> Record:
    return Record("p.bounces", 0, i, int((ts or T0 + i) * 1000),
                  (key if key is not None else event.address).encode(), encode(event))


def bounce(day: float) -> BounceRecorded:
    return BounceRecorded(bounce_id=f"b{day}", address=ADDR, bounced_at=T0 + day * DAY,
                          reason="unknown_user", hard=True, status="5.1.1")


def test_as_of_uses_record_timestamps_and_skips_what_the_processor_refuses() -> None:
    records = [rec(i, bounce(d), ts=T0 + d * DAY) for i, d in enumerate((0, 2, 4, 6, 8))]
    records.insert(2, Record("p.bounces", 0, 99, int(T0 * 1000), ADDR.encode(), b"{junk"))
    records.insert(3, rec(98, bounce(3), key="someone@else.example"))
    full = fold_records(iter(records), Rules())
    assert full.states[ADDR].blacklisted and full.skipped == 2 and full.records == 7
    early = fold_records(iter(records), Rules(), as_of=T0 + 7 * DAY)
    assert not early.states[ADDR].blacklisted and early.after == 1
    assert differences(early.states, full.states, Rules()) == [
        f"{ADDR}: replay {{'blacklisted': False, 'manual': False, 'counted': "
        f"['b0', 'b2', 'b4', 'b6'], 'bounces': 4, 'suppressions': []}} / live "
        f"{{'blacklisted': True, 'manual': False, 'counted': ['b0', 'b2', 'b4', 'b6', 'b8'], "
        f"'bounces': 5, 'suppressions': [('hard_bounce', '', '')]}}"]
    assert differences(full.states, full.states, Rules()) == []


def test_manual_edits_replay_too() -> None:
    r = fold_records(iter([rec(0, BlacklistEdited(address=ADDR, action="add"))]), Rules())
    assert r.states[ADDR].manual and r.states[ADDR].blacklisted
    assert differences(r.states, {}, Rules())[0].endswith("/ live None")


def test_parse_time() -> None:
    assert parse_time("1790000000") == 1_790_000_000.0
    assert parse_time("2026-11-01T00:00Z") == parse_time("2026-11-01 00:00:00+00:00")
    assert parse_time("2026-11-01") == 1_793_491_200.0
