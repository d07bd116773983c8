"""The limiter's pure core: windows, daily shares, pacing, lanes, schedule.
The clock is a parameter: no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processors.limiter import core
from processors.limiter.core import Limits, Mail, Meters, ServerLimits, daily_share, schedule
from processors.limiter.windows import WindowError, next_window, window_start, words

T0 = datetime(2026, 11, 22, 15, 30, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 23, 0, 0, tzinfo=UTC).timestamp()


def mail(mid: str, *, lane: str = "transactional", seq: int = 0, server: str = "primary",
         to: str = "bob@example.org", tenant: str = "", send_at: float = 0.0,
         **kw: Any) -> Mail:
    decision = {"message_id": mid, "outcome": "routed", "server": server,
                "request": {"message_id": mid, "to": [to], "tenant": tenant,
                            "send_at": send_at, "kind": lane}}
    return Mail(message_id=mid, lane=lane, seq=seq, decision=decision, received_at=T0, **kw)


def limits(**kw: Any) -> Limits:
    return Limits(**{"partitions": 1, **kw})


# --- windows --------------------------------------------------------------------------------


def test_window_is_the_calendar_day_in_the_zone() -> None:
    assert window_start(T0) == datetime(2026, 11, 22, tzinfo=UTC).timestamp()
    assert next_window(T0) == MIDNIGHT
    assert words(MIDNIGHT) == "2026-11-23 00:00 UTC"


def test_window_follows_the_time_zone_and_day_start() -> None:
    # 15:30 UTC is 16:30 in Madrid (winter): a window opening at 06:00 local
    opened = window_start(T0, "Europe/Madrid", "06:00")
    assert datetime.fromtimestamp(opened, UTC) == datetime(2026, 11, 22, 5, 0, tzinfo=UTC)
    nxt = next_window(T0, "Europe/Madrid", "06:00")
    assert words(nxt, "Europe/Madrid") == "2026-11-23 06:00 Europe/Madrid"
    # before the day start, the window is yesterday's
    early = datetime(2026, 11, 22, 4, 0, tzinfo=UTC).timestamp()
    assert window_start(early, "Europe/Madrid", "06:00") == datetime(
        2026, 11, 21, 5, 0, tzinfo=UTC).timestamp()


def test_bad_zone_or_start_is_refused_in_words() -> None:
    with pytest.raises(WindowError, match="IANA"):
        window_start(T0, "Mars/Olympus")
    with pytest.raises(WindowError, match="HH:MM"):
        window_start(T0, "UTC", "noon")


# --- daily limits -----------------------------------------------------------------------------


def test_shares_add_up_to_the_limit_and_the_remainder_rotates() -> None:
    assert [daily_share(200, 4, p) for p in range(4)] == [50, 50, 50, 50]
    assert [daily_share(7, 4, p) for p in range(4)] == [2, 2, 2, 1]
    assert [daily_share(7, 4, p, day=1) for p in range(4)] == [1, 2, 2, 2]
    for day in range(10):
        assert sum(daily_share(13, 5, p, day) for p in range(5)) == 13
    # a limit below the partition count: no partition has 0 every day
    assert all(any(daily_share(3, 4, p, day) for day in range(4)) for p in range(4))


def test_the_repeated_hour_at_the_end_of_dst_is_one_window() -> None:
    # America/New_York repeats 01:00-02:00 on 2026-11-01; a window opening at 01:30
    starts = [window_start(datetime(2026, 11, 1, 4, 0, tzinfo=UTC).timestamp() + m * 60,
                           "America/New_York", "01:30") for m in range(0, 180, 5)]
    # the window of Oct 31, then the one opening at the first 01:30, never back
    assert starts == sorted(starts) and len(set(starts)) == 2


def test_server_daily_limit_defers_with_the_next_window_in_words() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=2)})
    mails = [mail(f"m{i}", seq=i) for i in range(3)]
    p = schedule(Meters(0), mails, [], T0, lim)
    assert [m.message_id for m in p.released] == ["m0", "m1"]
    [(held, verdict)] = p.holds
    assert held.message_id == "m2" and verdict.kind == "daily_limit"
    assert verdict.reason == ("deferred: server primary reached its daily limit of 2; "
                              "next window 2026-11-23 00:00 UTC")
    assert verdict.until == MIDNIGHT
    assert p.meters.counts == {"server:primary": 2}


def test_the_next_window_releases_deferred_mail() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=1)})
    first = schedule(Meters(0), [mail("a"), mail("b", seq=1)], [], T0, lim)
    held = first.holds[0][0]
    again = schedule(first.meters, [held], [], T0 + 3600, lim)
    assert not again.released  # same window
    later = schedule(first.meters, [held], [], MIDNIGHT + 1, lim)
    assert [m.message_id for m in later.released] == ["b"]
    assert later.meters.counts == {"server:primary": 1}


def test_tenant_limit_spans_servers() -> None:
    lim = limits(tenants={"acme": 2})
    mails = [mail("a", tenant="acme"), mail("b", server="backup", seq=1, tenant="acme"),
             mail("c", seq=2, tenant="acme"), mail("d", seq=3, tenant="other")]
    p = schedule(Meters(0), mails, [], T0, lim)
    assert [m.message_id for m in p.released] == ["a", "b", "d"]
    assert "tenant acme reached its daily limit of 2" in p.holds[0][1].reason


def test_partition_share_is_said() -> None:
    lim = Limits(partitions=4, servers={"primary": ServerLimits(daily=200)})
    meters = Meters(2, window=window_start(T0), counts={"server:primary": 50})
    v = core.check(meters, mail("x"), T0, lim)
    assert v.kind == "daily_limit"
    assert v.reason.startswith("deferred: this partition used its share (50) of server "
                               "primary's daily limit of 200; next window ")


def test_counts_survive_the_table_round_trip() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=2)})
    p = schedule(Meters(0), [mail("a")], [], T0, lim)
    restored = Meters.from_dict(p.meters.to_dict(), 0)  # what a restarted limiter reads
    q = schedule(restored, [mail("b", seq=1), mail("c", seq=2)], [], T0 + 60, lim)
    assert [m.message_id for m in q.released] == ["b"]
    assert q.holds[0][0].message_id == "c"


# --- pacing -----------------------------------------------------------------------------------


def test_server_rate_paces_and_says_when() -> None:
    lim = limits(servers={"primary": ServerLimits(rate=1.0, rate_text="1/s")})
    p = schedule(Meters(0), [mail("a"), mail("b", seq=1)], [], T0, lim)
    assert [m.message_id for m in p.released] == ["a"]
    [(held, v)] = p.holds
    assert v.kind == "paced" and v.reason == "paced: server primary sends at most 1/s"
    assert v.until == pytest.approx(T0 + 1.0)
    assert not schedule(p.meters, [held], [], T0 + 0.5, lim).released
    assert schedule(p.meters, [held], [], T0 + 1.0, lim).released == [held]


def test_rate_is_split_over_partitions() -> None:
    lim = Limits(partitions=4, servers={"primary": ServerLimits(rate=4.0, rate_text="4/s")})
    released = 0
    meters = Meters(1)
    for i in range(20):  # 10 s at one mail looked at per half second
        p = schedule(meters, [mail(f"m{i}", seq=i)], [], T0 + i * 0.5, lim)
        meters = p.meters
        released += len(p.released)
    assert released == 10  # 1/s in this partition: 4/s over 4 partitions


def test_refilled_buckets_are_dropped_from_the_meters() -> None:
    lim = limits(domains={"*": (1.0, "1/s")})
    p = schedule(Meters(0), [mail(f"m{i}", seq=i, to=f"x@d{i}.test") for i in range(50)], [],
                 T0, lim)
    assert len(p.meters.buckets) == 50
    assert schedule(p.meters, [], [], T0 + 2, lim).meters.buckets == {}


def test_domain_rate_and_default_domain_rate() -> None:
    lim = limits(domains={"gmail.com": (1 / 60, "1/min"), "*": (100.0, "100/s")})
    mails = [mail("a", to="x@gmail.com"), mail("b", seq=1, to="y@GMAIL.com"),
             mail("c", seq=2, to="z@example.org")]
    p = schedule(Meters(0), mails, [], T0, lim)
    assert [m.message_id for m in p.released] == ["a", "c"]
    assert p.holds[0][1].reason == "paced: mail to gmail.com goes at most 1/min"
    assert p.holds[0][1].until == pytest.approx(T0 + 60)


# --- lanes --------------------------------------------------------------------------------------


def test_transactional_goes_before_mass_and_mass_in_creation_order() -> None:
    lim = limits(servers={"primary": ServerLimits(rate=2.0, rate_text="2/s")})
    mass = [mail(f"c{i}", lane="mass", seq=i) for i in (5, 3, 4)]
    p = schedule(Meters(0), [mail("invoice", seq=99)], mass, T0, lim)
    # bucket of 2: the invoice first, then the oldest campaign mail
    assert [m.message_id for m in p.released] == ["invoice", "c3"]


def test_a_waiting_transactional_mail_reserves_its_bucket() -> None:
    lim = limits(servers={"primary": ServerLimits(rate=1.0, rate_text="1/s")},
                 domains={"gmail.com": (1.0, "1/s")})
    meters = Meters(0, buckets={"domain:gmail.com": [0.0, T0]})
    # the invoice waits for gmail's bucket; the campaign mail must not take the
    # server's token meanwhile (the invoice would then wait for that too)
    p = schedule(meters, [mail("invoice", to="a@gmail.com")],
                 [mail("c1", lane="mass", to="b@example.org")], T0, lim)
    assert p.released == []
    p2 = schedule(p.meters, [mail("invoice", to="a@gmail.com", why="paced")],
                  [mail("c1", lane="mass", to="b@example.org")], T0 + 1.0, lim)
    assert [m.message_id for m in p2.released] == ["invoice"]


def test_mass_window_bounds_what_waits_in_delivery() -> None:
    lim = limits(mass_window=3)
    mass = [mail(f"c{i}", lane="mass", seq=i) for i in range(10)]
    p = schedule(Meters(0), [], mass, T0, lim)
    assert [m.message_id for m in p.released] == ["c0", "c1", "c2"]
    freed = core.attempted(p.meters, "c0")
    q = schedule(freed, [], mass[3:], T0 + 1, lim)
    assert [m.message_id for m in q.released] == ["c3"]
    # a release delivery never attempted stops counting after the timeout
    r = schedule(q.meters, [], mass[4:], T0 + lim.inflight_timeout + 2, lim)
    assert len(r.released) == 3


def test_mass_over_the_daily_limit_leaves_the_intake_queue() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=1)})
    mass = [mail(f"c{i}", lane="mass", seq=i) for i in range(3)]
    p = schedule(Meters(0), [], mass, T0, lim)
    assert [m.message_id for m in p.released] == ["c0"]
    # the other two leave the intake queue for the held table
    assert [(m.seq, v.kind) for m, v in p.holds] == [(1, "daily_limit"), (2, "daily_limit")]


# --- schedule -----------------------------------------------------------------------------------


def test_send_at_holds_until_then() -> None:
    at = T0 + 7200
    p = schedule(Meters(0), [mail("a", send_at=at)], [], T0, limits())
    [(held, v)] = p.holds
    assert v.kind == "scheduled" and v.until == at
    assert v.reason == "scheduled for 2026-11-22 17:30 UTC"
    assert not schedule(p.meters, [held], [], at - 1, limits()).released
    assert schedule(p.meters, [held], [], at, limits()).released == [held]


def test_a_hold_is_announced_once() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=1)})
    meters = Meters(0, window=window_start(T0), counts={"server:primary": 1})
    held = mail("b", why="daily_limit", until=MIDNIGHT)
    assert schedule(meters, [held], [], T0, lim).holds == []


def test_send_now_forces_and_counts() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=1)})
    meters = Meters(0, window=window_start(T0), counts={"server:primary": 1})
    forced = core.force(meters, mail("b"), T0, lim)
    assert forced.counts == {"server:primary": 2}
