"""The limiter's steps (processors/limiter/steps.py): what an input or a pass
does to the limiter's state and what it publishes and writes. Pure: the
clock and the held table's rows are arguments; the quota is the pure
core (quota.py) where a test needs the counting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from processors.limiter import core, quota, steps
from processors.limiter.core import Limits, Mail, ServerLimits
from processors.limiter.index import Index
from schemas import (
    MailHeld,
    MailReleased,
    MessageCancelled,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    decode,
)

T0 = datetime(2026, 11, 22, 15, 30, tzinfo=UTC).timestamp()
P = 0


def limits(daily: int = 0, rate: float = 0.0) -> Limits:
    return Limits(servers={"primary": ServerLimits(daily=daily, rate=rate,
                                                    rate_text=f"{rate:g}/s")})


def index() -> Index:
    ix = Index(partitions=1)
    ix.rebuild(frozenset({P}), [], {}, {})
    return ix


def mail(mid: str, seq: int = 1, lane: str = "transactional", **request: Any) -> Mail:
    req = {"to": [f"{mid}@example.org"], **request}
    return Mail(message_id=mid, lane=lane, seq=seq, received_at=T0,
                decision={"message_id": mid, "server": "primary", "request": req})


class Rows(dict[bytes, Any]):
    """The limiter-held table as the steps read it (``row``), written as the agent does."""

    def row(self, key: bytes) -> Any:
        return self.get(key)

    def commit(self, ix: Index, out: steps.Out) -> None:
        self.update(out.rows)
        steps.written(ix, out)


def rebuilt(rows: Rows) -> Index:
    """The index a restarted limiter builds from the held table's rows."""
    ix = Index(partitions=1)
    ix.rebuild(frozenset({P}), [], dict(rows), {})
    return ix


def marked_released(out: steps.Out) -> dict[str, float]:
    """message_id -> when, for the release markers ``out`` writes (a row of
    its own, or the ids of a pass row)."""
    got: dict[str, float] = {}
    for key, row in out.rows.items():
        if row.get("state") == "released":
            for mid in row.get("ids", [key.decode()]):
                got[mid] = row["at"]
    return got


def cmd(mid: str, what: str, cid: str = "c1") -> QueueCommandIssued:
    return QueueCommandIssued(message_id=mid, command=what, operator="ops@host", event_id=cid)


def sent(out: steps.Out, kind: type) -> list[Any]:
    """The events of ``kind`` in ``out`` (a release is published as its bytes)."""
    events = [decode(MailReleased, e) if isinstance(e, bytes) else e for _, _, e in out.events]
    return [e for e in events if isinstance(e, kind)]


def ask_through(q: quota.Quota, out: steps.Out, now: float, lim: Limits,
                ) -> list[quota.Answer]:
    """Hand a pass's asks to the quota core, as the quota agent does."""
    answers = []
    for item in out.asks:
        a = quota.Ask.of(item)
        if a.give_back:
            quota.give_back(q, a, now, lim)
            continue
        answers.append(quota.decide(q, a, now, lim)[0])
    return answers


# --- the pass and the quota's answers ---------------------------------------------------------


def test_unlimited_mail_is_released_in_its_pass_with_one_row_for_the_pass() -> None:
    ix, rows, out = index(), Rows(), steps.Out()
    for i, mid in enumerate(("a", "b", "c")):
        assert steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, Limits(), 16, out)
    released = sent(out, MailReleased)
    assert [e.message_id for e in released] == ["a", "b", "c"] and released[0].step == 1
    # one row for the pass, not one per mail
    assert list(out.rows.values()) == [{"state": "released", "at": T0, "ids": ["a", "b", "c"]}]
    assert not out.asks
    rows.commit(ix, out)
    # redelivered after the release: not taken again, also after a restart
    assert not steps.take_routed(ix, P, mail("a"), rows.row)
    assert not steps.take_routed(rebuilt(rows), P, mail("b"), rows.row)
    # pruned with its row (held_keep later): the mail is forgotten
    assert ix.prunable_held(T0 + 3601, 3600) == list(out.rows)
    assert not ix.released and not ix.passes


def test_limited_mail_asks_without_a_row_and_the_grant_releases_it() -> None:
    ix, rows, lim, q = index(), Rows(), limits(daily=5), quota.Quota()
    out = steps.Out()
    steps.take_routed(ix, P, mail("a"), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert not out.events and not out.rows  # asking: no row, nothing visible
    assert [a["ask_id"] for a in out.asks] == ["a:0"] and "a" in ix.asking[P]
    assert "mail" in out.asks[0]  # the ask carries the mail (durable on the quota topic)
    assert out.asks[0]["domains"] == []  # no domain rate: recipients not parsed
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    assert steps.take_answer(ix, P, answers[0], T0, rows.row, lim, out)
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert [e.message_id for e in sent(out, MailReleased)] == ["a"]
    assert marked_released(out) == {"a": T0}
    assert not ix.asking[P] and not ix.held[P]
    rows.commit(ix, out)
    # its decision or its answer delivered again (a crash before the offset
    # commit): the row says it left, it is not released twice
    assert not steps.take_routed(ix, P, mail("a"), rows.row)
    assert not steps.take_answer(ix, P, answers[0], T0 + 1, rows.row, lim, steps.Out())
    restarted = rebuilt(rows)
    assert not steps.take_answer(restarted, P, answers[0], T0 + 1, rows.row, lim, steps.Out())


def test_a_mail_held_before_its_grant_leaves_a_released_row() -> None:
    ix, rows, lim, q = index(), Rows(), limits(rate=1.0), quota.Quota()
    out = steps.Out()
    for i, mid in enumerate(("a", "b")):
        steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    for answer in answers:
        steps.take_answer(ix, P, answer, T0, rows.row, lim, out)
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert out.rows[b"b"]["state"] == "held"  # paced: its slot is 1 s ahead
    rows.commit(ix, out)
    later = steps.Out()
    steps.run_pass(ix, P, T0 + 1, lim, 16, later)
    assert [e.message_id for e in sent(later, MailReleased)] == ["b"]
    assert later.rows[b"b"] == {"state": "released", "at": T0 + 1}  # its held row replaced


def test_a_refusal_holds_the_mail_in_words_with_a_row() -> None:
    ix, rows, lim, q = index(), Rows(), limits(daily=1), quota.Quota()
    out = steps.Out()
    for i, mid in enumerate(("a", "b")):
        steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    for answer in answers:
        steps.take_answer(ix, P, answer, T0, rows.row, lim, out)
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert [e.message_id for e in sent(out, MailReleased)] == ["a"]
    held = sent(out, MailHeld)
    assert [(e.message_id, e.why) for e in held] == [("b", "daily_limit")]
    assert held[0].reason.startswith("deferred: server primary reached its daily limit of 1")
    assert out.rows[b"b"]["state"] == "held" and ix.held[P]["b"].why == "daily_limit"


def test_an_answer_after_a_restart_brings_the_mail_back_from_the_answer() -> None:
    ix, rows, lim, q = index(), Rows(), limits(daily=5), quota.Quota()
    out = steps.Out()
    steps.take_routed(ix, P, mail("a"), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answer = ask_through(q, out, T0, lim)[0]
    restarted = index()  # rebuilt from the tables: no row for an asking mail
    out = steps.Out()
    assert steps.take_answer(restarted, P, answer, T0 + 5, rows.row, lim, out)
    steps.run_pass(restarted, P, T0 + 5, lim, 16, out)
    released = sent(out, MailReleased)
    assert [e.message_id for e in released] == ["a"]
    assert released[0].decision == mail("a").decision
    # an answer without its mail (an old one) for a mail not known: nothing
    bare = quota.Answer(True, "z:0", "z")
    assert not steps.take_answer(index(), P, bare, T0, rows.row, lim, steps.Out())


def test_an_unanswered_ask_asks_again_with_the_same_id_after_the_timeout() -> None:
    ix, rows, lim = index(), Rows(), limits(daily=5)
    out = steps.Out()
    steps.take_routed(ix, P, mail("a"), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert ix.next_due[P] == T0 + lim.ask_timeout
    early = steps.Out()
    steps.run_pass(ix, P, T0 + lim.ask_timeout - 1, lim, 16, early)
    assert not early.asks
    late = steps.Out()
    steps.run_pass(ix, P, T0 + lim.ask_timeout, lim, 16, late)
    assert [a["ask_id"] for a in late.asks] == ["a:0"]


# --- ops commands ---------------------------------------------------------------------------


def held_for_daily_limit(mid: str = "a") -> tuple[Index, Rows, Limits, quota.Quota]:
    ix, rows, lim, q = index(), Rows(), limits(daily=1), quota.Quota()
    quota.decide(q, quota.Ask("other:0", "other", "primary"), T0, lim)  # the limit is used
    out = steps.Out()
    steps.take_routed(ix, P, mail(mid), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    out2 = steps.Out()
    steps.take_answer(ix, P, ask_through(q, out, T0, lim)[0], T0, rows.row, lim, out2)
    rows.commit(ix, out2)
    assert ix.held[P][mid].why == "daily_limit"
    return ix, rows, lim, q


def test_retry_of_a_held_mail_is_refused_in_words_and_changes_nothing() -> None:
    ix, rows, lim, _ = held_for_daily_limit()
    out = steps.Out()
    steps.command(ix, P, cmd("a", "retry"), T0, rows.row, lim, out)
    refused = sent(out, QueueCommandRefused)
    assert len(refused) == 1 and refused[0].reason == (
        "a is deferred (daily limit), not failed: nothing to retry "
        "(use send-now to skip the wait)")
    assert refused[0].event_id == steps.result_id("c1")
    assert not sent(out, MailReleased) and not out.rows and "a" in ix.held[P]


def test_cancel_of_a_held_mail_cancels_it_and_a_repeat_of_the_command_does_nothing() -> None:
    ix, rows, lim, _ = held_for_daily_limit()
    out = steps.Out()
    steps.command(ix, P, cmd("a", "cancel"), T0 + 1, rows.row, lim, out)
    assert [e.reason for e in sent(out, MessageCancelled)] == ["cancelled by ops@host"]
    assert sent(out, QueueCommandApplied)[0].detail == "cancelled while deferred (daily limit)"
    assert out.rows[b"a"]["state"] == "cancelled" and "a" not in ix.held[P]
    rows.commit(ix, out)
    again = steps.Out()
    steps.command(ix, P, cmd("a", "cancel"), T0 + 2, rows.row, lim, again)
    assert again.empty()
    # another command for it: refused, it will not be sent
    other = steps.Out()
    steps.command(ix, P, cmd("a", "send_now", "c2"), T0 + 2, rows.row, lim, other)
    assert [e.reason for e in sent(other, QueueCommandRefused)] == [
        "a was cancelled: it will not be sent"]


def test_a_command_for_mail_the_limiter_does_not_hold_goes_on_to_delivery() -> None:
    ix, rows, lim = index(), Rows(), limits()
    out = steps.Out()
    command = cmd("gone", "retry")
    steps.command(ix, P, command, T0, rows.row, lim, out)
    assert out.events == [(steps.RELEASED, "gone", command)]


def test_send_now_of_a_held_mail_is_counted_once_as_forced() -> None:
    ix, rows, lim, q = held_for_daily_limit()
    out = steps.Out()
    steps.command(ix, P, cmd("a", "send_now"), T0, rows.row, lim, out)
    released = sent(out, MailReleased)
    assert len(released) == 1 and released[0].forced and released[0].command_id == "c1"
    assert [a["force"] for a in out.asks] == [True]
    ask_through(q, out, T0, lim)
    assert q.counts == {"server:primary": 2}  # over the limit: an operator's choice


def test_send_now_of_an_asking_mail_counts_once_whichever_ask_the_quota_sees_first() -> None:
    ix, rows, lim, q = index(), Rows(), limits(daily=5), quota.Quota()
    asked = steps.Out()
    steps.take_routed(ix, P, mail("a"), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, asked)
    forced = steps.Out()
    steps.command(ix, P, cmd("a", "send_now"), T0, rows.row, lim, forced)
    assert [a["ask_id"] for a in forced.asks] == [asked.asks[0]["ask_id"]]  # the same ask
    assert len(sent(forced, MailReleased)) == 1
    ask_through(q, asked, T0, lim)
    ask_through(q, forced, T0, lim)
    assert q.counts == {"server:primary": 1}
    q2 = quota.Quota()  # the other order
    ask_through(q2, forced, T0, lim)
    ask_through(q2, asked, T0, lim)
    assert q2.counts == {"server:primary": 1}


def test_send_now_of_a_mail_paced_with_its_token_asks_nothing_more() -> None:
    ix, rows, lim, q = index(), Rows(), limits(rate=1.0), quota.Quota()
    out = steps.Out()
    for i, mid in enumerate(("a", "b")):
        steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    for answer in answers:
        steps.take_answer(ix, P, answer, T0, rows.row, lim, out)
    assert ix.held[P]["b"].slot == T0 + 1.0 and ix.held[P]["b"].token == "b:0"
    now = steps.Out()
    steps.command(ix, P, cmd("b", "send_now"), T0, rows.row, lim, now)
    assert not now.asks and len(sent(now, MailReleased)) == 1


def test_cancel_gives_a_granted_token_back_to_the_daily_count() -> None:
    lim = Limits(servers={"primary": ServerLimits(daily=2, rate=1.0, rate_text="1/s")})
    ix, rows, q = index(), Rows(), quota.Quota()
    out = steps.Out()
    for i, mid in enumerate(("a", "b")):
        steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    for answer in answers:
        steps.take_answer(ix, P, answer, T0, rows.row, lim, out)
    assert q.counts == {"server:primary": 2}
    cancel = steps.Out()
    steps.command(ix, P, cmd("b", "cancel"), T0, rows.row, lim, cancel)  # paced, token held
    assert [(a["ask_id"], a.get("give_back")) for a in cancel.asks] == [("b:0", True)]
    ask_through(q, cancel, T0, lim)
    assert q.counts == {"server:primary": 1}
    # given back once, and still after the quota is rebuilt from its rows
    ask_through(q, cancel, T0, lim)
    assert q.counts == {"server:primary": 1}
    rows_on_log = [{"grants": list(q.grants.values())}]
    assert quota.restore(rows_on_log, T0 + 1, lim).counts == {"server:primary": 1}


def test_cancel_while_asking_gives_the_token_back_when_the_grant_comes() -> None:
    ix, rows, lim, q = index(), Rows(), limits(daily=3), quota.Quota()
    out = steps.Out()
    steps.take_routed(ix, P, mail("a"), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    cancel = steps.Out()
    steps.command(ix, P, cmd("a", "cancel"), T0, rows.row, lim, cancel)
    assert sent(cancel, QueueCommandApplied)[0].detail == (
        "cancelled while waiting for its quota token")
    rows.commit(ix, cancel)
    answer = ask_through(q, out, T0, lim)[0]
    assert q.counts == {"server:primary": 1}
    late = steps.Out()
    assert not steps.take_answer(ix, P, answer, T0, rows.row, lim, late)
    assert not late.events  # not released
    assert [a.get("give_back") for a in late.asks] == [True]
    ask_through(q, late, T0, lim)
    assert q.counts.get("server:primary", 0) == 0


# --- the mass lane ------------------------------------------------------------------------------


def test_mass_intake_stops_fetching_while_enough_waits_and_resumes_at_half() -> None:
    ix = index()
    for i in range(4):
        store, _, _ = steps.take_mass(ix, P, mail(f"m{i}", seq=i, lane="mass"), None, None,
                                      lookahead_full=8, window=32)
        assert store
    assert steps.intake_fetching(ix, 4) == {P: False}
    assert steps.intake_fetching(ix, 8) == {P: True}
    assert steps.intake_fetching(ix, 6) == {}
    # taken in already (a row says so): not again
    assert steps.take_mass(ix, P, mail("m0", lane="mass"), {"lane": "mass"}, None, 8, 32) == (
        False, False, False)


def test_mass_mail_in_the_window_asks_and_counts_as_waiting() -> None:
    ix, lim = index(), Limits(servers={"primary": ServerLimits(daily=5)}, mass_window=2)
    for i in range(3):
        steps.take_mass(ix, P, mail(f"m{i}", seq=i, lane="mass"), None, None, 100, 2)
    out = steps.Out()
    steps.run_pass(ix, P, T0, lim, 16, out)
    assert [a["ask_id"] for a in out.asks] == ["m0:0", "m1:0"]  # the window holds two
    assert "mail" not in out.asks[0]  # its limiter-mass row brings it back
    assert steps.intake_fetching(ix, 3) == {P: False}
    assert core.Meters(P, {"m0": T0, "m1": T0}) == ix.meters[P]


def test_the_status_of_a_mass_mail_not_yet_taken_in_says_why_it_waits() -> None:
    from processors.status.core import evolve
    from schemas import RoutingDecided

    routed = RoutingDecided(message_id="m", outcome="routed", server="primary",
                            header_from="app@a.test",
                            request={"message_id": "m", "kind": "mass", "to": ["a@b.test"]})
    st, _ = evolve(None, routed)
    assert st.state == "queued"
    assert st.reason == ("routed to primary; mass mail waits its turn in the mass lane (taken "
                         "in as the mass mail routed before it goes out, after transactional "
                         "mail)")


def test_the_status_of_a_retry_the_quota_refused_says_why_it_waits() -> None:
    from processors.status.core import fold
    from schemas import DeliveryAttempted, DeliveryStarted, QuotaRefused, RoutingDecided

    routed = RoutingDecided(message_id="m", outcome="routed", server="grey",
                            header_from="app@a.test",
                            request={"message_id": "m", "to": ["a@b.test"]})
    started = DeliveryStarted(message_id="m", server="grey", attempt=1, recipients=["a@b.test"])
    attempted = DeliveryAttempted(
        message_id="m", server="grey", attempt=1, next_attempt_at=T0 + 60,
        outcomes=[{"recipient": "a@b.test", "status": "deferred", "code": 451,
                   "text": "greylisted"}])
    refused = QuotaRefused(ask_id="m:attempt:2", message_id="m", by="delivery", attempt=2,
                           why="daily_limit", until=T0 + 3600,
                           reason="deferred: server grey reached its daily limit of 2; "
                                  "next window 2026-11-23 00:00 UTC")
    st = fold([routed, started, attempted, refused])
    assert st is not None and st.state == "deferred" and st.next_attempt_at == T0 + 3600
    assert st.reason == ("deferred: server grey reached its daily limit of 2; next window "
                         "2026-11-23 00:00 UTC (attempt 2 waits for it)")
    # the attempt it waited for, once it starts, goes on as usual
    later = DeliveryStarted(message_id="m", server="grey", attempt=2, recipients=["a@b.test"])
    st = fold([later], st)
    assert st is not None and st.state == "sending"


def test_replay_of_limiter_held_agrees_with_the_rows_the_steps_write() -> None:
    import time

    from postlane.limiter_replay import _held_live, fold_held, held_live_all
    from postlane.logread import Rec
    from schemas import encode
    from streams.settings import Settings
    from streams.topics import HELD, RELEASED

    s = Settings.from_env(environ={})
    ix, rows, lim, q = index(), Rows(), limits(daily=1), quota.Quota()
    out = steps.Out()
    for i, mid in enumerate(("a", "b")):
        steps.take_routed(ix, P, mail(mid, seq=i), rows.row)
    steps.run_pass(ix, P, T0, lim, 16, out)
    answers = ask_through(q, out, T0, lim)
    out = steps.Out()
    for answer in answers:
        steps.take_answer(ix, P, answer, T0, rows.row, lim, out)
    steps.run_pass(ix, P, T0, lim, 16, out)
    free = steps.Out()
    steps.take_routed(ix, P, mail("c", seq=3), rows.row)
    steps.run_pass(ix, P, T0, Limits(), 16, free)  # no limit: no token, a row
    rows.commit(ix, out)
    rows.commit(ix, free)
    [released] = sent(out, MailReleased)
    assert released.token == "a:0" and released.step == 1
    now_ms = int(time.time() * 1000)
    topic = {steps.RELEASED: RELEASED.full(s), steps.HELD: HELD.full(s)}
    recs = [Rec(topic[where], P, i, now_ms + i, mid.encode(),
                ev if isinstance(ev, bytes) else encode(ev))
            for i, (where, mid, ev) in enumerate(out.events + free.events)]
    replayed = fold_held(s, recs).rows
    live = held_live_all(s, {k.decode(): _held_live(s, k.decode(), v) for k, v in rows.items()})
    assert replayed == live == {"a": {"state": "released"}, "b": {"state": "held"},
                                "c": {"state": "released"}}


def test_a_plainly_well_formed_decision_is_read_without_a_record_and_as_the_decode_reads_it(
) -> None:
    import orjson

    from processors.config.view import ConfigView, evolve
    from processors.router.core import decide
    from schemas import (
        OutgoingServerConfigured,
        RoutingDecided,
        SendRequested,
        SettingsChanged,
        decode,
        encode,
    )

    view = evolve(evolve(ConfigView(), OutgoingServerConfigured(
        name="primary", host="127.0.0.1", port=25, security="none", daily_limit=3)),
        SettingsChanged(catchall_domain="c.test"))
    request = SendRequested(message_id="m1", from_="app@a.test", to=["x@b.test"], subject="s",
                            text="t")
    raw = encode(decide(view, request))
    plain = steps.plain_decision(raw)
    assert plain == dict(decode(RoutingDecided, raw).to_representation())
    data = orjson.loads(raw)
    for bad in ({**data, "schema": 99}, {**data, "server": 3}, {**data, "request": "x"},
                {**data, "type": "MailReleased"}, {**data, "direct": "yes"},
                {**data, "outcome": "rejected"}, {**data, "header_from": ""}):
        assert steps.plain_decision(orjson.dumps(bad)) is None, bad  # the full decode decides
    assert steps.plain_decision(b"{not json") is None and steps.plain_decision(None) is None


def test_a_release_is_published_as_the_record_would_encode_it() -> None:
    """``released_event`` builds the MailReleased bytes as plain data: the
    same fields in the same order as the Record's encoding, and it decodes
    (validated) to the same event."""
    from schemas import encode

    m = replace(mail("a"), step=2, token="a:2", received_at=T0 - 1.5)
    raw = steps.released_event(m, T0)
    ev = decode(MailReleased, raw)
    record = MailReleased(message_id="a", lane="transactional", decision=m.decision,
                          held_for=1.5, step=3, token="a:2", event_id=ev.event_id,
                          occurred_at=ev.occurred_at)
    assert raw == encode(record)
    assert steps.released_event(m, T0) != raw  # a new event_id each time


def test_only_delivery_starts_and_outcomes_are_read_by_the_limiter() -> None:
    from schemas import DeliveryAttempted, DeliveryStarted, encode

    started = encode(DeliveryStarted(message_id="a", attempt=1, server="primary",
                                     recipients=["x@example.org"], worker="w"))
    attempted = encode(DeliveryAttempted(message_id="a", attempt=1, server="primary",
                                         outcomes=[], duration=0.1))
    assert steps.is_attempt(started) and steps.is_attempt(attempted)
    assert not steps.is_attempt(b'{"type":"RetryTimeReached","message_id":"a","attempt":1}')
