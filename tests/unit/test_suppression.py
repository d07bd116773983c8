"""Blacklisted recipients: the router suppresses them, the status shows it,
and the router's blacklist view folds the blacklist topic."""

from __future__ import annotations

from typing import Any

from processors.blacklist.reader import BlacklistView, apply
from processors.config.view import ConfigView
from processors.router.core import decide
from processors.status.core import fold
from schemas import (
    BlacklistChanged,
    DeliveryAttempted,
    DeliveryStarted,
    OutgoingServerConfigured,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
    decode,
    encode,
)

T0 = 1_795_000_000.0
VIEW = ConfigView(
    settings=SettingsChanged(catchall_domain="mycompany.com"),
    servers={"primary": OutgoingServerConfigured(name="primary", host="smtp.example.com",
                                                  from_filter="mycompany.com")},
)
BLACK = {"dead@example.org": "5 counted bounces between ..."}


def req(**kw: Any) -> SendRequested:
    fields: dict[str, Any] = dict(message_id="m-1", from_="sales@mycompany.com",
                                  to=["Dead <Dead@Example.org>", "alive@example.org"],
                                  bcc=["dead@example.org"], subject="Hi", text="x",
                                  occurred_at=T0)
    fields.update(kw)
    return SendRequested(**fields)


def test_a_blacklisted_recipient_is_left_out_and_named() -> None:
    d = decide(VIEW, req(), BLACK)
    assert d.outcome == "routed" and d.server == "primary"
    assert d.suppressed == {"dead@example.org": BLACK["dead@example.org"]}
    # the request carried without its fields at their default (an empty bcc)
    assert d.request["to"] == ["alive@example.org"] and d.request.get("bcc", []) == []
    back = decode(RoutingDecided, encode(d))
    assert back.suppressed == d.suppressed


def test_every_recipient_blacklisted_is_suppressed_not_sent() -> None:
    d = decide(VIEW, req(to=["dead@example.org"], bcc=[]), BLACK)
    assert d.outcome == "suppressed" and not d.server
    assert "blacklisted" in d.reason and "5 counted bounces" in d.reason
    assert d.request["to"] == ["dead@example.org"]


def test_no_blacklist_changes_nothing() -> None:
    assert decide(VIEW, req(), {}) .suppressed == {}
    assert decide(VIEW, req()).request["to"] == req().to


def test_status_shows_suppressed() -> None:
    request = req(to=["dead@example.org"], bcc=[])
    d = decide(VIEW, request, BLACK)
    st = fold([request, d])
    assert st is not None and st.state == "suppressed" and st.final
    assert st.recipients["dead@example.org"]["state"] == "suppressed"
    assert "5 counted bounces" in st.recipients["dead@example.org"]["text"]
    # out of order: the routing first, then the request
    st = fold([d, request])
    assert st is not None and st.state == "suppressed"


def test_status_partial_suppression_then_sent() -> None:
    request = req()
    d = decide(VIEW, request, BLACK)
    st = fold([request, d,
               DeliveryStarted(message_id="m-1", attempt=1, server="primary",
                               recipients=["alive@example.org"], occurred_at=T0 + 2),
               DeliveryAttempted(message_id="m-1", attempt=1, server="primary", outcomes=[
                   {"recipient": "alive@example.org", "status": "accepted", "code": 250}],
                   occurred_at=T0 + 3)])
    assert st is not None and st.state == "sent"
    states = {a.lower(): r["state"] for a, r in st.recipients.items()}
    assert states == {"dead@example.org": "suppressed", "alive@example.org": "sent"}


def test_blacklist_view_keeps_the_latest_per_address() -> None:
    v = BlacklistView()
    apply(v, BlacklistChanged(address="a@x.example", blacklisted=True, reason="five"))
    apply(v, BlacklistChanged(address="b@x.example", blacklisted=True, reason="ops"))
    apply(v, BlacklistChanged(address="a@x.example", blacklisted=False, reason="reset"))
    assert v.entries == {"b@x.example": "ops"} and v.reason("B@X.example ") == "ops"
    (entry,) = v.as_mapping()["b@x.example"]  # a change without suppressions: its blacklisting
    assert (entry["type"], entry["tenant"], entry["reason"]) == ("hard_bounce", "", "ops")
    assert "a@x.example" not in v.as_mapping()
