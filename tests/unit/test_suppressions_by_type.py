"""Suppression by type: the blacklist fold keeps complaints, unsubscribes and
manual suppressions (per tenant, per list, or global) next to the hard-bounce
blacklisting; the router names the type and scopes it by tenant, kind and
list; replay gives the same set."""

from __future__ import annotations

from typing import Any

from postlane.blacklistops import differences, fold_records
from processors.blacklist.core import Rules, applies, evolve, explain, fold, suppressions
from processors.blacklist.reader import BlacklistView, apply
from processors.config.view import ConfigView
from processors.router.core import decide
from schemas import (
    BlacklistEdited,
    BounceRecorded,
    ComplaintReceived,
    OutgoingServerConfigured,
    SendRequested,
    SettingsChanged,
    SuppressionEdited,
    encode,
)
from schemas.unsubscribe import UnsubscribeRequested
from streams.client import Record

T0 = 1_795_000_000.0
ADDR = "ann@example.org"
VIEW = ConfigView(
    settings=SettingsChanged(catchall_domain="mycompany.com"),
    servers={"primary": OutgoingServerConfigured(name="primary", host="smtp.example.com",
                                                  from_filter="mycompany.com")},
)


def complaint(tenant: str = "") -> ComplaintReceived:
    return ComplaintReceived(complaint_id="c-1", address=ADDR, complained_at=T0,
                             message_id="m-7", format="arf", tenant=tenant)


def unsub(tenant: str = "acme", list_id: str = "news") -> UnsubscribeRequested:
    return UnsubscribeRequested(address=ADDR, tenant=tenant, list_id=list_id, via="http",
                                requested_at=T0, token_id=f"t-{tenant}-{list_id}")


def req(**kw: Any) -> SendRequested:
    fields: dict[str, Any] = dict(message_id="m-1", from_="sales@mycompany.com",
                                  to=[ADDR, "bob@example.org"], subject="Hi", text="x",
                                  tenant="acme", kind="mass", list_id="news", occurred_at=T0)
    fields.update(kw)
    return SendRequested(**fields)


def view_of(*events: Any) -> BlacklistView:
    st = None
    v = BlacklistView()
    for ev in events:
        st, change = evolve(st, ev, Rules())
        if change is not None:
            apply(v, change)
    return v


def test_one_complaint_suppresses_at_once_and_names_its_type() -> None:
    st, change = evolve(None, complaint(), Rules())
    assert change is not None and not change.blacklisted
    assert [(e["type"], e["tenant"]) for e in change.suppressions] == [("complaint", "")]
    v = view_of(complaint())
    d = decide(VIEW, req(kind="transactional", list_id=""), v.as_mapping())
    assert d.outcome == "routed" and list(d.suppressed) == [ADDR]
    assert d.suppressed[ADDR].startswith("complaint (every tenant): complaint")
    assert "message m-7" in d.suppressed[ADDR]
    assert evolve(st, complaint(), Rules())[1] is None  # the same report again: nothing new


def test_an_unsubscribe_stops_mass_mail_of_its_tenant_and_list_only() -> None:
    v = view_of(unsub("acme", "news"))
    m = v.as_mapping()
    assert decide(VIEW, req(), m).suppressed[ADDR].startswith("unsubscribe (tenant acme, list "
                                                               "news): unsubscribed from list")
    assert decide(VIEW, req(list_id="offers"), m).suppressed == {}
    assert decide(VIEW, req(tenant="other"), m).suppressed == {}
    assert decide(VIEW, req(kind="transactional", list_id=""), m).suppressed == {}
    everything = view_of(unsub("acme", "")).as_mapping()  # every list of the tenant
    assert ADDR in decide(VIEW, req(list_id="offers"), everything).suppressed
    assert decide(VIEW, req(kind="transactional"), everything).suppressed == {}


def test_every_recipient_suppressed_is_not_sent() -> None:
    v = view_of(complaint())
    d = decide(VIEW, req(to=[ADDR]), v.as_mapping())
    assert d.outcome == "suppressed" and "complaint" in d.reason


def test_manual_per_tenant_and_global_and_removal_by_type() -> None:
    add = SuppressionEdited(address=ADDR, action="add", tenant="acme", reason="asked",
                            by="ops", occurred_at=T0)
    st, change = evolve(None, add, Rules())
    assert change is not None
    assert applies(change.suppressions[0], "acme", "transactional", "")
    assert not applies(change.suppressions[0], "other", "transactional", "")
    st, _ = evolve(st, complaint(), Rules())
    assert [e["type"] for e in suppressions(st)] == ["complaint", "manual"]
    rm = SuppressionEdited(address=ADDR, action="remove", suppression_type="complaint",
                           occurred_at=T0 + 1)
    st, change = evolve(st, rm, Rules())
    assert change is not None and [e["type"] for e in change.suppressions] == ["manual"]
    assert any("manual (tenant acme): added by ops: asked" in line for line in explain(st, Rules()))


def test_hard_bounce_is_the_blacklisting_and_is_lifted_by_type() -> None:
    bounce = BounceRecorded(bounce_id="b-1", address=ADDR, bounced_at=T0, reason="unknown_user",
                            hard=True, status="5.1.1")
    st, change = evolve(None, bounce, Rules(weight_hard=5.0))
    assert change is not None and change.blacklisted
    assert [e["type"] for e in change.suppressions] == ["hard_bounce"]
    v = BlacklistView()
    apply(v, change)
    d = decide(VIEW, req(kind="transactional", list_id="", tenant=""), v.as_mapping())
    assert d.suppressed[ADDR].startswith("hard_bounce (every tenant): one hard unknown user")
    st, change = evolve(st, SuppressionEdited(address=ADDR, action="remove",
                                              suppression_type="hard_bounce"), Rules())
    assert change is not None and not change.blacklisted and change.suppressions == []
    manual = BlacklistEdited(address=ADDR, action="add", reason="ops")
    st, change = evolve(st, manual, Rules())
    assert change is not None and [e["type"] for e in change.suppressions] == ["manual"]


def test_replay_rebuilds_suppressions_and_reports_differences() -> None:
    events = [complaint(), unsub(), SuppressionEdited(address=ADDR, action="add",
                                                      occurred_at=T0)]
    records = [Record("p.bounces", 0, i, int(T0 * 1000), ADDR.encode(), encode(e))
               for i, e in enumerate(events)]
    r = fold_records(iter(records), Rules())
    live = fold(events, Rules())
    assert differences(r.states, live, Rules()) == []
    assert [e["type"] for e in suppressions(r.states[ADDR])] == ["complaint", "manual",
                                                                  "unsubscribe"]
    partial = fold(events[:1], Rules())
    assert differences(r.states, partial, Rules())  # a missing unsubscribe is a difference
