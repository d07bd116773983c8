"""The quota's pure core (processors/limiter/quota.py): one accounting of every
limited transaction, exact whatever the partitions; rebuilt from its grant
rows after a crash. The clock is a parameter: no sleeps."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime
from typing import Any

import pytest

from processors.limiter import core, quota
from processors.limiter.core import Limits, Mail, Meters, ServerLimits
from streams.partitioning import partition_for

T0 = datetime(2026, 11, 22, 15, 30, tzinfo=UTC).timestamp()
MIDNIGHT = datetime(2026, 11, 23, 0, 0, tzinfo=UTC).timestamp()


def ask(mid: str, *, server: str = "primary", tenant: str = "", lane: str = "transactional",
        domains: tuple[str, ...] = (), force: bool = False, step: int = 0) -> quota.Ask:
    return quota.Ask(ask_id=f"{mid}:{step}", message_id=mid, server=server, tenant=tenant,
                     lane=lane, domains=domains, force=force)


def daily(n: int) -> Limits:
    return Limits(servers={"primary": ServerLimits(daily=n)})


def test_daily_limit_counts_and_refuses_in_words_until_the_next_window() -> None:
    q, lim = quota.Quota(), daily(2)
    answers = [quota.decide(q, ask(f"m{i}"), T0, lim)[0] for i in range(3)]
    assert [a.to_data()["type"] for a in answers] == ["QuotaGranted"] * 2 + ["QuotaRefused"]
    refused = answers[2]
    assert not refused.granted and refused.why == "daily_limit"
    assert refused.until == MIDNIGHT
    assert refused.reason == ("deferred: server primary reached its daily limit of 2; "
                              "next window 2026-11-23 00:00 UTC")
    # the next window counts anew
    again, row = quota.decide(q, ask("m2", step=1), MIDNIGHT + 1, lim)
    assert again.granted and row is not None
    assert q.counts == {"server:primary": 1}


def test_the_same_ask_again_gets_the_same_answer_uncounted() -> None:
    q, lim = quota.Quota(), daily(5)
    first, row = quota.decide(q, ask("a"), T0, lim)
    repeat, none = quota.decide(q, ask("a"), T0 + 3, lim)
    assert row is not None and none is None
    assert repeat.granted and repeat.at == first.at
    assert q.counts == {"server:primary": 1}


def test_tenant_limit_spans_servers_and_both_limits_hold_together() -> None:
    lim = Limits(servers={"primary": ServerLimits(daily=2)}, tenants={"acme": 3})
    q = quota.Quota()
    got = [quota.decide(q, ask(mid, server=srv, tenant="acme"), T0, lim)[0]
           for mid, srv in (("a", "primary"), ("b", "backup"), ("c", "primary"),
                            ("d", "backup"), ("e", "primary"))]
    assert [a.granted for a in got] == [True, True, True, False, False]
    assert "tenant acme reached its daily limit of 3" in got[3].reason
    # a refusal counts nothing: the server's own count stayed at 2
    assert q.counts == {"server:primary": 2, "tenant:acme": 3}


def test_force_is_counted_and_never_refused() -> None:
    q, lim = quota.Quota(), daily(1)
    quota.decide(q, ask("a"), T0, lim)
    forced, row = quota.decide(q, ask("b", force=True), T0, lim)
    assert forced.granted and row is not None
    assert q.counts == {"server:primary": 2}


def test_counts_and_schedules_come_back_from_the_rows() -> None:
    lim = Limits(servers={"primary": ServerLimits(daily=3, rate=1.0, rate_text="1/s")})
    q = quota.Quota()
    rows = [row for i in range(2) if (row := quota.decide(q, ask(f"m{i}"), T0, lim)[1])]
    value = quota.record(q, "batch-1", rows)  # one table row for the batch
    restored = quota.restore([value], T0 + 0.1, lim)  # a new owner of the partition
    assert restored.counts == q.counts == {"server:primary": 2}
    assert restored.tats == q.tats
    # the repeated ask of a crashed asker: its grant, uncounted
    again, none = quota.decide(restored, ask("m1"), T0 + 0.1, lim)
    assert again.granted and none is None and again.at == pytest.approx(T0 + 1, abs=1e-6)
    third, _ = quota.decide(restored, ask("m2"), T0 + 0.1, lim)
    assert third.granted and third.at == pytest.approx(T0 + 2, abs=1e-6)
    fourth, _ = quota.decide(restored, ask("m3"), T0 + 0.1, lim)
    assert not fourth.granted


def test_rate_gives_a_burst_then_one_slot_each_interval_and_says_why() -> None:
    lim = Limits(servers={"primary": ServerLimits(rate=2.0, rate_text="2/s")})
    q = quota.Quota()
    grants = [quota.decide(q, ask(f"m{i}"), T0, lim)[0] for i in range(6)]
    assert [g.at - T0 for g in grants] == pytest.approx([0, 0, 0.5, 1.0, 1.5, 2.0])
    assert grants[0].reason == ""
    assert grants[2].reason == "paced: server primary sends at most 2/s"


def test_a_domain_rate_and_a_server_rate_both_hold() -> None:
    lim = Limits(servers={"primary": ServerLimits(rate=10.0, rate_text="10/s")},
                 domains={"gmail.com": (1.0, "1/s"), "*": (100.0, "100/s")})
    q = quota.Quota()
    a, _ = quota.decide(q, ask("a", domains=("gmail.com",)), T0, lim)
    b, _ = quota.decide(q, ask("b", domains=("gmail.com", "x.org")), T0, lim)
    assert b.granted and b.at == pytest.approx(T0 + 1, abs=1e-6)
    assert b.reason == "paced: mail to gmail.com goes at most 1/s"
    c, _ = quota.decide(q, ask("c", domains=("x.org",)), T0, lim)
    # not held up by gmail.com (the server's schedule counts b at its slot: a
    # reservation is never given back, so a rate is never exceeded, at worst under-used)
    assert c.granted and c.at < b.at and "gmail" not in c.reason


def test_mass_does_not_book_far_ahead_and_a_later_invoice_gets_the_next_slot() -> None:
    lim = Limits(servers={"primary": ServerLimits(rate=1.0, rate_text="1/s")}, mass_ahead=1.0)
    q = quota.Quota()
    got = [quota.decide(q, ask(f"c{i}", lane="mass"), T0, lim)[0] for i in range(4)]
    assert [g.granted for g in got] == [True, True, False, False]
    assert not got[2].granted and got[2].why == "paced"
    assert got[2].until == pytest.approx(T0 + 1.0, abs=1e-6)
    invoice, _ = quota.decide(q, ask("invoice"), T0 + 0.1, lim)
    assert invoice.granted and invoice.at == pytest.approx(T0 + 2.0, abs=1e-6)


def _give_back(q: quota.Quota, mid: str, now: float, lim: Limits) -> dict[str, Any] | None:
    return quota.give_back(q, quota.Ask(ask_id=f"{mid}:0", message_id=mid, server="primary",
                                        give_back=True), now, lim)


def test_a_token_given_back_frees_its_rate_slot_as_well_as_its_daily_count() -> None:
    lim = Limits(servers={"primary": ServerLimits(daily=10, rate=1.0, rate_text="1/s")})
    q = quota.Quota()
    rows = [quota.decide(q, ask(m), T0, lim)[1] for m in ("a", "b", "c")]
    assert [r["slot"] - T0 for r in rows if r] == pytest.approx([0, 1, 2])  # T0 + 3 next
    # the last one booked (c, paced to T0 + 2) is cancelled: its slot is free again
    returned = _give_back(q, "c", T0 + 0.1, lim)
    assert returned is not None and q.counts == {"server:primary": 2}
    d, d_row = quota.decide(q, ask("d"), T0 + 0.2, lim)
    assert d.granted and d.at - T0 == pytest.approx(2)  # c's slot, not T0 + 3
    # a new owner rebuilt from the rows (the return row included) agrees
    restored = quota.restore([quota.record(q, "b1", [r for r in (*rows, returned) if r])],
                             T0 + 0.1, lim)
    assert restored.tats["server:primary"] - T0 == pytest.approx(2)
    assert quota.decide(restored, ask("d"), T0 + 0.2, lim)[0].at - T0 == pytest.approx(2)
    assert d_row is not None


def test_a_slot_given_back_before_later_grants_leaves_their_schedule_alone() -> None:
    lim = Limits(servers={"primary": ServerLimits(rate=1.0, rate_text="1/s")})
    q = quota.Quota()
    for m in ("a", "b", "c"):
        quota.decide(q, ask(m), T0, lim)
    _give_back(q, "b", T0 + 0.1, lim)  # c is booked after it: nothing moves
    assert quota.decide(q, ask("d"), T0 + 0.2, lim)[0].at - T0 == pytest.approx(3)
    # then c and d go back too: the schedule returns to a, the last one still counted
    _give_back(q, "c", T0 + 0.3, lim)
    _give_back(q, "d", T0 + 0.3, lim)
    assert quota.decide(q, ask("e"), T0 + 0.4, lim)[0].at - T0 == pytest.approx(1)
    rows = [r for r in q.grants.values()]
    restored = quota.restore([quota.record(quota.Quota(), "k", rows)], T0 + 0.4, lim)
    assert {k: v - T0 for k, v in restored.tats.items()} == pytest.approx(
        {k: v - T0 for k, v in q.tats.items()})


def test_the_last_daily_tokens_of_a_batch_go_to_transactional_mail_before_mass() -> None:
    """Asks of one quota batch from several partitions (mass from two, an
    invoice from a third, asking last): the invoice gets a token."""
    lim = daily(2)
    q = quota.Quota()
    batch = [ask("m1", lane="mass"), ask("m2", lane="mass"), ask("invoice")]
    got = {a.message_id: quota.decide(q, a, T0, lim)[0] for a in quota.ordered(batch)}
    assert got["invoice"].granted and got["m1"].granted
    assert not got["m2"].granted and got["m2"].why == "daily_limit"
    # a token given back in the same batch is counted as free before the asks
    back = quota.Ask(ask_id="m1:0", message_id="m1", server="primary", give_back=True)
    assert [a.message_id for a in quota.ordered([ask("m3", lane="mass"), back])] == ["m1", "m3"]


@pytest.mark.parametrize("rate", [0.5, 3.0, 40.0])
def test_a_rate_holds_within_5_percent_over_any_minute(rate: float) -> None:
    lim = Limits(servers={"primary": ServerLimits(rate=rate, rate_text=f"{rate}/s")})
    q = quota.Quota()
    slots: list[float] = []
    now, i = T0, 0
    while now < T0 + 300:  # asks arrive faster than the rate; each takes its slot
        g, _ = quota.decide(q, ask(f"m{i}"), now, lim)
        assert g.granted
        slots.append(g.at)
        i += 1
        now += 0.5 / rate
    for i, start in enumerate(s for s in slots if s < T0 + 200):
        n = bisect.bisect_left(slots, start + 60) - i  # slots are in order
        assert n <= 60 * rate * 1.05 + 1, (start, n)


def test_rows_of_past_windows_and_spent_rates_are_pruned_current_counts_kept() -> None:
    lim = Limits(servers={"primary": ServerLimits(daily=5), "fast": ServerLimits(
        rate=100.0, rate_text="100/s")})
    q = quota.Quota()
    rows = [quota.decide(q, ask(mid, server=srv), T0, lim)[1] for mid, srv in (
        ("d", "primary"), ("r", "fast"))]
    quota.record(q, "b1", [rows[0]])  # type: ignore[list-item]
    quota.record(q, "b2", [rows[1]])  # type: ignore[list-item]
    assert quota.prunable(q, T0 + 1) == []  # kept to answer a repeated ask
    assert quota.prunable(q, T0 + quota.DEDUPE_SECONDS + 1) == ["b2"]  # its table row
    assert set(q.grants) == {"d:0"}  # counts in today's window
    x = quota.decide(q, ask("x", step=1), MIDNIGHT + 1, lim)[1]
    quota.record(q, "b3", [x])  # type: ignore[list-item]
    assert quota.prunable(q, MIDNIGHT + quota.DEDUPE_SECONDS + 2) == ["b1"]


# --- the limiter partitions and the quota together ------------------------------------------


def _mail(mid: str, seq: int, **request: Any) -> Mail:
    decision = {"message_id": mid, "outcome": "routed", "server": request.pop("server", "primary"),
                "request": {"message_id": mid, "to": ["x@dest.test"], **request}}
    return Mail(message_id=mid, lane="transactional", seq=seq, decision=decision,
                received_at=T0)


class Partitions:
    """N limiter partitions asking one quota, answers arriving in any order."""

    def __init__(self, n: int, lim: Limits, seed: int) -> None:
        self.n, self.lim, self.rng = n, lim, random.Random(seed)
        self.held: dict[int, dict[str, Mail]] = {p: {} for p in range(n)}
        self.meters = {p: Meters(p) for p in range(n)}
        self.q = quota.Quota()
        self.rows: list[dict[str, Any]] = []
        self.released: list[str] = []
        self.holds: dict[str, core.Verdict] = {}

    def take(self, mail: Mail) -> None:
        self.held[partition_for(mail.message_id, self.n)][mail.message_id] = mail

    def run(self, now: float) -> None:
        asks: list[tuple[int, Mail]] = []
        for p in self.rng.sample(range(self.n), self.n):
            due = [m for m in self.held[p].values() if core.due(m, now, self.lim)]
            result = core.schedule(self.meters[p], due, [], now, self.lim)
            for m in result.released:
                self.released.append(m.message_id)
                del self.held[p][m.message_id]
            for m in result.asks:
                self.held[p][m.message_id] = m = Mail.from_dict({**m.to_dict(), "asked": now})
                asks.append((p, m))
        self.rng.shuffle(asks)
        for p, m in asks:
            a = quota.Ask(ask_id=m.ask_id, message_id=m.message_id, server=m.server,
                          tenant=m.tenant, domains=tuple(m.domains()))
            answer, row = quota.decide(self.q, a, now, self.lim)
            if row:
                self.rows.append(row)
            if answer.granted:
                r = core.answered(self.meters[p], m, True, now, at=answer.at)
            else:
                r = core.answered(self.meters[p], m, False, now, why=answer.why,
                                  until=answer.until, reason=answer.reason)
            self.held[p][m.message_id] = r.mail
            if r.hold is not None and r.hold.reason:
                self.holds[m.message_id] = r.hold
                self.held[p][m.message_id] = Mail.from_dict(
                    {**r.mail.to_dict(), "why": r.hold.kind, "until": r.hold.until,
                     "step": m.step + 1})


@pytest.mark.parametrize("partitions", [1, 2, 4, 7, 16])
def test_a_daily_limit_of_10_sends_exactly_10_of_25_whatever_the_partitions(
        partitions: int) -> None:
    sim = Partitions(partitions, daily(10), seed=partitions)
    for i in range(25):
        sim.take(_mail(f"m{i}", i))
    for step in range(5):
        sim.run(T0 + step)
    assert len(sim.released) == 10
    assert len(sim.holds) == 15
    assert {h.reason for h in sim.holds.values()} == {
        "deferred: server primary reached its daily limit of 10; next window "
        "2026-11-23 00:00 UTC"}
    # the next window sends 10 more, the last 5 the one after
    sim.run(MIDNIGHT + 1)
    sim.run(MIDNIGHT + 2)
    assert len(sim.released) == 20


def test_a_quota_owner_killed_mid_window_is_replaced_from_the_rows_and_never_over_sends() -> None:
    sim = Partitions(4, daily(10), seed=3)
    for i in range(6):
        sim.take(_mail(f"m{i}", i))
    sim.run(T0)
    sim.run(T0 + 1)
    assert len(sim.released) == 6
    sim.q = quota.restore([{"grants": sim.rows}], T0 + 10, sim.lim)  # the new owner
    for i in range(6, 25):
        sim.take(_mail(f"m{i}", i))
    sim.run(T0 + 11)
    sim.run(T0 + 12)
    assert len(sim.released) == 10 and len(sim.holds) == 15


def test_asks_and_answers_read_and_write_the_events_fields() -> None:
    from schemas import QuotaAsked, QuotaGranted, QuotaRefused, QuotasAnswered, decode

    event = QuotaAsked(ask_id="m:attempt:2", message_id="m", server="s", by="delivery",
                       attempt=2, domains=["x.org"])
    a = quota.Ask.of_event(event)
    assert (a.by, a.attempt, a.domains, a.partition) == ("delivery", 2, ("x.org",), -1)
    q = quota.Quota()
    lim = daily(1)
    granted, _ = quota.decide(q, ask("g"), T0, lim)
    refused, _ = quota.decide(q, ask("r"), T0, lim)
    assert decode(QuotaGranted, granted.to_data()).ask_id == "g:0"
    assert decode(QuotaRefused, refused.to_data()).why == "daily_limit"
    batch = decode(QuotasAnswered, {"answers": [granted.to_data(), refused.to_data()]})
    assert [quota.Answer.of(x) for x in batch.answers] == [granted, refused]
