"""The limiter's pure core: windows, lanes, schedule, and how a partition
asks the quota and takes its answer. The clock is a parameter: no sleeps.
(The quota's counting: test_limiter_quota.py.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.limiter import core
from processors.limiter.core import Limits, Mail, Meters, ServerLimits, schedule
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


# --- windows (continued) ---------------------------------------------------------------------


def test_the_repeated_hour_at_the_end_of_dst_is_one_window() -> None:
    # America/New_York repeats 01:00-02:00 on 2026-11-01; a window opening at 01:30
    starts = [window_start(datetime(2026, 11, 1, 4, 0, tzinfo=UTC).timestamp() + m * 60,
                           "America/New_York", "01:30") for m in range(0, 180, 5)]
    # the window of Oct 31, then the one opening at the first 01:30, never back
    assert starts == sorted(starts) and len(set(starts)) == 2


# --- asking the quota ----------------------------------------------------------------------


def test_mail_under_no_limit_goes_at_once_and_limited_mail_asks() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=2)})
    p = schedule(Meters(0), [mail("a"), mail("b", server="other", seq=1)], [], T0, lim)
    assert [m.message_id for m in p.released] == ["b"]
    assert [m.message_id for m in p.asks] == ["a"]
    assert p.asks[0].ask_id == "a:0"


def test_a_tenant_limit_or_a_domain_rate_makes_mail_ask() -> None:
    assert core.limited("any", "acme", [], limits(tenants={"acme": 5}))
    assert not core.limited("any", "other", [], limits(tenants={"acme": 5}))
    assert core.limited("any", "", ["x.org"], limits(domains={"*": (1.0, "1/s")}))
    assert not core.limited("any", "", ["x.org"], limits(domains={"gmail.com": (1.0, "1/s")}))


def test_an_asking_mail_waits_for_its_answer_then_asks_again_the_same_ask() -> None:
    lim = limits(servers={"primary": ServerLimits(daily=2)})
    asking = mail("a", asked=T0)
    assert not core.due(asking, T0 + 1, lim)
    assert core.due(asking, T0 + lim.ask_timeout + 1, lim)
    again = schedule(Meters(0), [asking], [], T0 + lim.ask_timeout + 1, lim)
    assert [m.ask_id for m in again.asks] == ["a:0"]  # same ask: counted once by the quota


def test_granted_now_releases_granted_later_holds_paced_refused_holds_in_words() -> None:
    asking = mail("a", asked=T0)
    now = core.answered(Meters(0), asking, True, T0, at=T0)
    assert now.release and now.hold is None and now.mail.slot == T0
    assert schedule(Meters(0), [now.mail], [], T0, limits()).released == [now.mail]
    later = core.answered(Meters(0), asking, True, T0, at=T0 + 2,
                          reason="paced: server primary sends at most 1/s")
    assert not later.release and later.hold is not None
    assert later.hold.kind == "paced" and later.hold.until == T0 + 2
    assert later.hold.reason == "paced: server primary sends at most 1/s"
    assert not core.due(later.mail, T0 + 1, limits())
    assert core.due(later.mail, T0 + 2, limits())
    words_ = "deferred: server primary reached its daily limit of 2; next window ..."
    refused = core.answered(Meters(0), asking, False, T0, why="daily_limit", until=MIDNIGHT,
                            reason=words_)
    assert refused.hold == core.Verdict("daily_limit", MIDNIGHT, words_)
    assert refused.mail.asked == 0 and refused.mail.slot == 0


def test_a_refused_mass_mail_leaves_the_mass_window_and_mass_pacing_is_not_announced() -> None:
    lim = limits(servers={"primary": ServerLimits(rate=1.0, rate_text="1/s")}, mass_window=2)
    p = schedule(Meters(0), [], [mail(f"c{i}", lane="mass", seq=i) for i in range(5)], T0, lim)
    assert [m.message_id for m in p.asks] == ["c0", "c1"]  # asking counts in the window
    assert set(p.meters.inflight) == {"c0", "c1"}
    r = core.answered(p.meters, p.asks[1], False, T0, why="paced", until=T0 + 1,
                      reason="paced: server primary sends at most 1/s")
    assert set(r.meters.inflight) == {"c0"}
    assert r.hold is not None and r.hold.kind == "paced" and r.hold.reason == ""


# --- lanes --------------------------------------------------------------------------------------


def test_transactional_goes_before_mass_and_mass_in_creation_order() -> None:
    lim = limits(servers={"primary": ServerLimits(rate=2.0, rate_text="2/s")})
    mass = [mail(f"c{i}", lane="mass", seq=i) for i in (5, 3, 4)]
    p = schedule(Meters(0), [mail("invoice", seq=99)], mass, T0, lim)
    assert [m.message_id for m in p.asks] == ["invoice", "c3", "c4", "c5"]


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
    held = mail("b", why="daily_limit", until=MIDNIGHT, step=1)
    again = core.answered(Meters(0), replace(held, asked=T0), False, T0, why="daily_limit",
                          until=MIDNIGHT, reason="deferred: ...")
    assert again.hold is not None and again.hold.reason == ""  # recorded, not announced


def test_send_now_takes_a_place_in_the_mass_window() -> None:
    forced = core.force(Meters(0), mail("b", lane="mass"), T0, limits())
    assert set(forced.inflight) == {"b"}


def test_meters_read_rows_of_the_older_shape() -> None:
    old = {"partition": 2, "window": 1.0, "counts": {"server:primary": 3},
           "buckets": {}, "inflight": {"c1": 5.0}}
    assert Meters.from_dict(old, 2) == Meters(2, inflight={"c1": 5.0})
