"""The counting rule, the outage check and the intake, as pure functions."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from processors.blacklist.core import AddressState, Rules, evolve, explain, fold, rule_met
from processors.bounces.core import (
    BurstRules,
    check_outage,
    intake_delivery,
    intake_routed,
)
from processors.config.view import ConfigView
from schemas import (
    BlacklistEdited,
    BounceDiscounted,
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    InboundMailRouted,
    MailReceivedFrom,
    RecipientBounced,
    RecipientsMailed,
    SettingsChanged,
)
from streams.settings import Settings
from streams.topics import BOUNCE_ATTRIBUTION, BOUNCES

DAY = 86400.0
T0 = 1_790_000_000.0
ADDR = "bob@example.net"
CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bounces"


def bounce(day: float, n: int = 0, *, reason: str = "unknown_user", hard: bool = True,
           outage: str = "", address: str = ADDR) -> BounceRecorded:
    return BounceRecorded(
        bounce_id=f"b{day}-{n}-{address}", address=address, bounced_at=T0 + day * DAY,
        reason=reason, hard=hard, status="5.1.1" if hard else "4.2.2", replycode=550,
        diagnostic="550 5.1.1 user unknown", message_id=f"m{day}", server="mx.example.net",
        outage=outage,
    )


RULES = Rules()


def run(events, rules: Rules = RULES) -> tuple[AddressState, list]:
    st, changes = None, []
    for e in events:
        st, ch = evolve(st, e, rules)
        if ch is not None:
            changes.append(ch)
    assert st is not None
    return st, changes


def test_four_bounces_are_not_enough() -> None:
    st, changes = run([bounce(d) for d in (0, 10, 20, 30)])
    assert not st.blacklisted and changes == []
    assert "5 needed" in rule_met(st.counted(Rules()), Rules())[1]


def test_five_within_a_week_are_not_enough() -> None:
    st, changes = run([bounce(d) for d in (0, 1, 2, 3, 7)])  # exactly 7 days: not "more than"
    assert not st.blacklisted and changes == []
    assert "more than 7 days apart" in rule_met(st.counted(Rules()), Rules())[1]


def test_five_spread_over_eight_days_blacklist() -> None:
    st, changes = run([bounce(d) for d in (0, 2, 4, 6, 8)])
    assert st.blacklisted and not st.manual
    assert len(changes) == 1 and changes[0].blacklisted
    assert changes[0].since == T0 + 8 * DAY
    assert len(changes[0].bounces) == 5
    assert "5 counted bounces" in changes[0].reason and "8 days apart" in changes[0].reason


def test_the_fifth_of_many_on_one_day_then_one_later() -> None:
    st, _ = run([bounce(0, i) for i in range(6)])
    assert not st.blacklisted  # six on one day: an outage looks like this
    st, changes = run([bounce(0, i) for i in range(6)] + [bounce(7.5)])
    assert st.blacklisted and len(changes) == 1


def test_bounces_outside_the_window_do_not_count() -> None:
    events = [bounce(d) for d in (0, 30, 60, 92, 93)]  # day 0 is 93 days before the last
    st, changes = run(events)
    assert not st.blacklisted and len(st.counted(Rules())) == 4
    month = Rules(window=30 * DAY)  # the docs' "one month" is a setting away
    st, _ = run([bounce(d) for d in (0, 8, 16, 24, 29)], month)
    assert st.blacklisted
    st, _ = run([bounce(d) for d in (0, 8, 16, 24, 31)], month)
    assert not st.blacklisted


def test_network_and_sending_side_failures_do_not_count() -> None:
    events = [bounce(d, reason=r) for d, r in zip(
        (0, 2, 4, 6, 8, 10), ("network_error", "blocked", "spam", "rejected", "auth_failure",
                              "blocked"), strict=True)]
    st, changes = run(events)
    assert not st.blacklisted and st.counted(Rules()) == []
    assert all(b["why"] for b in st.bounces)
    assert "sending side" in st.bounces[1]["why"]


def test_outage_bounces_do_not_count_and_a_discount_lifts() -> None:
    st, _ = run([bounce(d, outage="burst of 20" if d == 4 else "") for d in (0, 2, 4, 6, 8)])
    assert not st.blacklisted
    st, changes = run([bounce(d) for d in (0, 2, 4, 6, 8)] + [
        BounceDiscounted(address=ADDR, bounce_id=f"b{4}-0-{ADDR}", outage="burst of 20")])
    assert not st.blacklisted
    assert [c.blacklisted for c in changes] == [True, False]
    assert "outage" in changes[1].reason


def test_mail_from_the_address_resets_the_count() -> None:
    reset = MailReceivedFrom(address=ADDR, received_at=T0 + 7 * DAY, source="reply")
    st, changes = run([bounce(d) for d in (0, 2, 4, 6)] + [reset, bounce(8)])
    assert not st.blacklisted and len(st.counted(Rules())) == 1
    assert "reset" in st.bounces[0]["why"]
    # and it lifts an automatic blacklisting
    later = MailReceivedFrom(address=ADDR, received_at=T0 + 20 * DAY, source="alias")
    st, changes = run([bounce(d) for d in (0, 2, 4, 6, 8)] + [later])
    assert not st.blacklisted and [c.blacklisted for c in changes] == [True, False]
    # a bounce dated before the reset, arriving late, does not count either
    st, _ = run([reset, bounce(5)])
    assert st.counted(Rules()) == [] and "before mail was received" in st.bounces[0]["why"]


def test_hard_weight_five_blacklists_at_once_soft_does_not() -> None:
    rules = Rules(weight_hard=5.0)
    st, changes = run([bounce(0)], rules)
    assert st.blacklisted and "weighs 5" in changes[0].reason
    st, _ = run([bounce(d, reason="mailbox_full", hard=False) for d in (0, 1, 2)], rules)
    assert not st.blacklisted


def test_duplicates_count_once() -> None:
    b = bounce(0)
    st, _ = run([b, b, bounce(2), bounce(2), bounce(4), bounce(6)])
    assert len(st.bounces) == 4 and not st.blacklisted


def test_manual_add_survives_reset_and_remove_clears() -> None:
    add = BlacklistEdited(address=ADDR, action="add", reason="asked us", by="ops")
    reset = MailReceivedFrom(address=ADDR, received_at=T0 + DAY)
    st, changes = run([add, reset])
    assert st.blacklisted and st.manual and len(changes) == 1
    assert changes[0].reason == "added by ops: asked us"
    remove = BlacklistEdited(address=ADDR, action="remove", by="ops")
    st, changes = run([bounce(d) for d in (0, 2, 4, 6, 8)] + [remove, bounce(9)])
    assert not st.blacklisted and len(st.counted(Rules())) == 1
    assert [c.blacklisted for c in changes] == [True, False]


def test_fold_and_explain() -> None:
    states = fold([bounce(d) for d in (0, 2, 4, 6, 8)] + [bounce(1, address="x@y.example")],
                  Rules())
    assert states[ADDR].blacklisted and not states["x@y.example"].blacklisted
    text = "\n".join(explain(states[ADDR], Rules()))
    assert "blacklisted since" in text and text.count("counts 1") == 5
    roundtrip = AddressState.from_dict(states[ADDR].to_dict())
    assert roundtrip == states[ADDR]


def test_rules_from_settings() -> None:
    r = Rules.from_settings(Settings(blacklist_window_days=30, bounce_weight_hard=5))
    assert r.window == 30 * DAY and r.weight_hard == 5 and r.threshold == 5


# --- the outage check --------------------------------------------------------------------


def rb(i: int, at: float, *, domain: str = "big.example", text: str = "user unknown",
       server: str = "mx.big.example") -> RecipientBounced:
    addr = f"user{i}@{domain}"
    return RecipientBounced(
        bounce_id=f"rb-{i}-{at}", address=addr, bounced_at=at, reason="unknown_user",
        hard=True, status="5.1.1", replycode=550,
        diagnostic=f"550 5.1.1 <{addr}>: {text} (id {i * 7919:x})", server=server)


def test_a_burst_from_one_server_is_an_outage_and_earlier_ones_are_withdrawn() -> None:
    rules = BurstRules(min_addresses=10, seconds=3600, share=0.5)
    st, outs = None, []
    for i in range(12):
        st, out = check_outage(st, rb(i, T0 + i * 30), rules)
        outs.append(out)
    assert all(o[-1][2].outage == "" for o in outs[:9])  # nine bounces: recorded, counted
    tenth = outs[9]
    discounted = [e for _, _, e in tenth if isinstance(e, BounceDiscounted)]
    assert len(discounted) == 9 and {d.address for d in discounted} == {
        f"user{i}@big.example" for i in range(9)}
    assert tenth[-1][2].outage.startswith("burst: 10 addresses at big.example")
    assert all(o[-1][2].outage for o in outs[10:])
    assert all(spec is BOUNCES for o in outs for spec, _, _ in o)
    # folded per address: nothing counts
    events = [e for o in outs for _, _, e in o]
    states = fold(events, Rules())
    assert all(s.counted(Rules()) == [] for s in states.values())


def test_the_same_error_to_a_few_percent_of_a_campaign_is_not_an_outage() -> None:
    rules = BurstRules(min_addresses=10, seconds=3600, share=0.5)
    st, _ = check_outage(None, RecipientsMailed(domain="big.example", count=1000, at=T0), rules)
    for i in range(30):
        st, out = check_outage(st, rb(i, T0 + 60 + i), rules)
        assert out[-1][2].outage == "" and len(out) == 1


def test_different_errors_or_servers_are_not_one_burst_and_bursts_end() -> None:
    rules = BurstRules(min_addresses=3, seconds=600, share=0.5)
    st = None
    for i in range(4):
        st, out = check_outage(st, rb(i, T0 + i, server=f"mx{i}.big.example"), rules)
        assert out[-1][2].outage == ""
    for i in range(3):
        st, out = check_outage(st, rb(10 + i, T0 + 10 + i), rules)
    assert out[-1][2].outage
    st, out = check_outage(st, rb(20, T0 + 10_000), rules)  # long after: a new count
    assert out[-1][2].outage == ""


def test_a_redelivered_bounce_gives_the_same_event() -> None:
    rules = BurstRules()
    ev = rb(1, T0)
    st, out1 = check_outage(None, ev, rules)
    st, out2 = check_outage(st, ev, rules)
    assert out1[-1][2].event_id == out2[-1][2].event_id


# --- intake --------------------------------------------------------------------------------


def test_delivery_5xx_is_a_bounce_and_every_final_answer_is_mailed() -> None:
    ev = DeliveryAttempted(message_id="m-1", attempt=1, server="primary", outcomes=[
        {"recipient": "a@x.example", "status": "accepted", "code": 250},
        {"recipient": "B@X.example", "status": "failed", "code": 550, "enhanced": "5.1.1",
         "text": "no such user"},
        {"recipient": "c@y.example", "status": "deferred", "code": 451, "text": "later"},
        {"recipient": "d@y.example", "status": "failed", "code": 0, "text": "mail not built"},
    ])
    out = intake_delivery(ev)
    mailed = {e.domain: e.count for _, _, e in out if isinstance(e, RecipientsMailed)}
    assert mailed == {"x.example": 2, "y.example": 1}
    bounced = [(k, e) for spec, k, e in out if isinstance(e, RecipientBounced)]
    assert len(bounced) == 1
    key, b = bounced[0]
    assert key == "x.example" and b.address == "b@x.example" and b.message_id == "m-1"
    assert (b.status, b.replycode, b.reason, b.hard, b.source) == (
        "5.1.1", 550, "unknown_user", True, "delivery")
    assert b.server == "outgoing:primary"
    assert intake_delivery(ev)[-1][2].event_id == b.event_id  # deterministic


def routed(route: str, **kw) -> InboundMailRouted:
    base = {"inbound_id": "in-1", "route": route, "reason": "x", "received_at": T0,
            "sender": "Carol@Example.org"}
    if route in ("reply", "alias"):
        base["target"] = "t"
    base.update(kw)
    return InboundMailRouted(**base)


def view() -> ConfigView:
    return ConfigView(settings=SettingsChanged(catchall_domain="mycompany.test"))


@pytest.mark.parametrize("route", ["reply", "alias", "loop"])
def test_mail_from_a_person_resets(route: str) -> None:
    out, words = intake_routed(view(), routed(route))
    assert [(spec, key) for spec, key, _ in out] == [(BOUNCES, "carol@example.org")]
    assert isinstance(out[0][2], MailReceivedFrom) and "restarts" in words


@pytest.mark.parametrize("route", ["reject", "duplicate"])
def test_rejected_or_duplicate_mail_does_not_reset(route: str) -> None:
    assert intake_routed(view(), routed(route))[0] == []


def test_a_routed_bounce_is_parsed_and_attributed() -> None:
    raw = (CORPUS / "postfix-user-unknown-remote.eml").read_bytes()
    ev = routed("bounce", mail=base64.b64encode(raw).decode(),
                original_message_id="pf-unknown-0001")
    out, words = intake_routed(view(), ev)
    # it names our mail: checked against that mail's recipients first
    assert [(spec, key) for spec, key, _ in out] == [(BOUNCE_ATTRIBUTION, "pf-unknown-0001")] * 2
    first = out[0][2]
    assert isinstance(first, RecipientBounced)
    assert (first.address, first.message_id, first.format) == (
        "nobody1@dest.test", "pf-unknown-0001", "postfix")
    assert first.server == "127.0.0.1" and "postfix bounce" in words


def test_an_auto_reply_resets_and_a_complaint_is_recorded() -> None:
    raw = (CORPUS / "autoreply-rfc3834.eml").read_bytes()
    out, _ = intake_routed(view(), routed("bounce", mail=base64.b64encode(raw).decode()))
    assert [(k, type(e).__name__) for _, k, e in out] == [("yara@example.com",
                                                            "MailReceivedFrom")]
    raw = (CORPUS / "arf-yahoo-abuse.eml").read_bytes()
    out, _ = intake_routed(view(), routed("bounce", mail=base64.b64encode(raw).decode()))
    (spec, key, ev), = out
    assert spec is BOUNCES and key == "ben@yahoo.example"
    assert isinstance(ev, ComplaintReceived) and ev.feedback_type == "abuse"
    st, change = evolve(None, ev, Rules())
    assert change is not None and not change.blacklisted and not st.bounces
    assert [e["type"] for e in change.suppressions] == ["complaint"]


@pytest.mark.parametrize(("name", "address", "mid", "fmt"), [
    ("mailgun-complained", "raj.patel@example.com", "mg-2103", "mailgun"),
    ("postmark-spam-complaint", "sam.ortiz@example.com", "pm-2203", "postmark"),
    ("sendgrid-forwarded-spam-report", "omar.haddad@example.org", "sg-2002", "arf"),
])
def test_provider_complaints_are_complaints(name: str, address: str, mid: str,
                                             fmt: str) -> None:
    raw = (CORPUS / f"{name}.eml").read_bytes()
    out, _ = intake_routed(view(), routed("bounce", mail=base64.b64encode(raw).decode()))
    (spec, key, ev), = out
    assert spec is BOUNCES and key == address
    assert isinstance(ev, ComplaintReceived)
    assert (ev.feedback_type, ev.message_id, ev.format) == ("abuse", mid, fmt)
    _, change = evolve(None, ev, Rules())
    assert change is not None and [e["type"] for e in change.suppressions] == ["complaint"]
