"""Server selection (Odoo's order), From rewriting and bounce addresses."""

from __future__ import annotations

from typing import Any

import pytest

from processors.config.view import ConfigView, fold
from processors.limiter.core import Limits, ServerLimits
from processors.router.core import (
    bounce_address,
    decide,
    encapsulate,
    filter_parts,
    message_id_from_bounce,
    notifications_address,
)
from schemas import (
    InvalidEvent,
    OutgoingServerConfigured,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
)

SETTINGS = SettingsChanged(default_from="notifications", catchall_domain="mycompany.com")
NO_CATCHALL = SettingsChanged(default_from="notifications", catchall_domain="")


def srv(name: str, from_filter: str = "", **kw: Any) -> OutgoingServerConfigured:
    return OutgoingServerConfigured(
        name=name, host=f"{name}.smtp.test", from_filter=from_filter, **kw
    )


def view(*servers: OutgoingServerConfigured, settings: SettingsChanged = SETTINGS) -> ConfigView:
    return fold([settings, *servers])


def req(from_: str = '"Admin" <admin@example.com>', **kw: Any) -> SendRequested:
    return SendRequested(message_id="m-1", from_=from_, to=["rcpt@dest.test"], text="x", **kw)


def route(v: ConfigView, r: SendRequested) -> RoutingDecided:
    d = decide(v, r)
    assert d.message_id == r.message_id
    assert d.request["from_"] == r.from_
    return d


# --- the cascade, step by step -------------------------------------------------------------


def test_step1_address_beats_domain_and_priority() -> None:
    v = view(srv("dom", "example.com", priority=1), srv("addr", "admin@example.com", priority=50))
    d = route(v, req())
    assert (d.outcome, d.server, d.rule) == ("routed", "addr", "from_filter_address")
    assert d.header_from == '"Admin" <admin@example.com>'


def test_step2_domain() -> None:
    v = view(srv("other", "other.com"), srv("dom", "example.com", priority=20))
    d = route(v, req())
    assert (d.server, d.rule) == ("dom", "from_filter_domain")
    assert d.header_from == '"Admin" <admin@example.com>'


def test_step3_default_from_address_rewrites_keeping_name() -> None:
    v = view(srv("dom", "mycompany.com", priority=1), srv("notif", "notifications@mycompany.com"))
    d = route(v, req())
    assert (d.server, d.rule) == ("notif", "default_from_address")
    assert d.header_from == '"Admin" <notifications@mycompany.com>'


def test_step3_default_from_domain() -> None:
    v = view(srv("x", "x.org"), srv("mine", "mycompany.com", priority=20))
    d = route(v, req())
    assert (d.server, d.rule) == ("mine", "default_from_domain")
    assert d.header_from == '"Admin" <notifications@mycompany.com>'


def test_rewrite_without_display_name_uses_local_part() -> None:
    d = route(view(srv("mine", "mycompany.com")), req("admin@example.com"))
    assert d.header_from == '"admin" <notifications@mycompany.com>'


def test_default_from_full_address_needs_no_catchall() -> None:
    settings = SettingsChanged(default_from="noreply@brand.io", catchall_domain="")
    d = route(view(srv("b", "brand.io"), settings=settings), req())
    assert (d.server, d.rule) == ("b", "default_from_domain")
    assert d.header_from == '"Admin" <noreply@brand.io>'


def test_default_from_local_part_without_catchall_skips_step3() -> None:
    v = view(srv("mine", "mycompany.com"), srv("open", priority=90), settings=NO_CATCHALL)
    d = route(v, req())
    assert (d.server, d.rule) == ("open", "unfiltered_server")
    assert d.header_from == '"Admin" <admin@example.com>'


def test_step4_first_unfiltered_server() -> None:
    v = view(srv("x", "x.org", priority=1), srv("open2", priority=30), srv("open1", priority=20))
    d = route(v, req())
    assert (d.server, d.rule) == ("open1", "unfiltered_server")
    assert d.header_from == '"Admin" <admin@example.com>'


def test_step5_first_server_rewrites_to_notifications() -> None:
    v = view(srv("y", "y.org", priority=5), srv("x", "x.org", priority=5))
    d = route(v, req())
    assert (d.outcome, d.server, d.rule) == ("routed", "x", "first_server")
    assert d.header_from == '"Admin" <notifications@mycompany.com>'
    assert "example.com" in d.reason


def test_step5_without_notifications_keeps_from() -> None:
    d = route(view(srv("x", "x.org"), settings=NO_CATCHALL), req())
    assert (d.server, d.rule, d.header_from) == ("x", "first_server", '"Admin" <admin@example.com>')
    assert d.envelope_from == "admin@example.com"


def test_priority_then_name() -> None:
    v = view(
        srv("b", "example.com", priority=5),
        srv("a", "example.com", priority=5),
        srv("c", "example.com", priority=1),
    )
    assert route(v, req()).server == "c"
    v2 = view(srv("b", "example.com", priority=5), srv("a", "example.com", priority=5))
    assert route(v2, req()).server == "a"


# --- eligibility --------------------------------------------------------------------------


def test_inactive_skipped() -> None:
    v = view(srv("off", "example.com", priority=1, active=False), srv("on", priority=9))
    assert (route(v, req()).server, route(v, req()).rule) == ("on", "unfiltered_server")


def test_tenant_restriction() -> None:
    v = view(srv("acme", "example.com", priority=1, tenant="acme"), srv("shared", priority=9))
    assert route(v, req(tenant="acme")).server == "acme"
    assert route(v, req(tenant="globex")).server == "shared"
    assert route(v, req()).server == "shared"


def test_dedicated_transactional_and_mass_servers() -> None:
    v = view(
        srv("tx", "example.com", priority=1, kind="transactional"),
        srv("bulk", "example.com", priority=2, kind="mass"),
    )
    assert route(v, req(kind="transactional")).server == "tx"
    assert route(v, req(kind="mass")).server == "bulk"


def test_steps_4_and_5_only_use_eligible_servers() -> None:
    v = view(
        srv("bulk-open", priority=1, kind="mass"),
        srv("tenant-open", priority=2, tenant="t"),
        srv("filtered", "x.org", priority=3),
    )
    d = route(v, req(kind="transactional"))
    assert (d.server, d.rule) == ("filtered", "first_server")


def test_no_server_configured() -> None:
    d = route(view(), req())
    assert (d.outcome, d.server, d.rule) == ("no_server", "", "none")
    assert "no outgoing server is configured" in d.reason


def test_no_active_server() -> None:
    d = route(view(srv("off", active=False)), req())
    assert d.outcome == "no_server"
    assert "off" in d.reason and "activate" in d.reason


def test_no_eligible_server_explains_each() -> None:
    v = view(srv("bulk", kind="mass"), srv("acme", tenant="acme"))
    d = route(v, req(tenant="globex"))
    assert d.outcome == "no_server"
    assert "'bulk' only sends mass mail" in d.reason
    assert "'acme' only serves tenant 'acme'" in d.reason
    assert "globex" in d.reason


# --- matching -----------------------------------------------------------------------------


def test_case_insensitive() -> None:
    d = route(view(srv("s", "ADMIN@Example.COM")), req('"A" <Admin@EXAMPLE.com>'))
    assert d.rule == "from_filter_address"
    d = route(view(srv("s", "EXAMPLE.com")), req("someone@example.COM"))
    assert d.rule == "from_filter_domain"


def test_comma_separated_filter_with_spaces() -> None:
    v = view(srv("s", " other.com ,  boss@else.com,example.com "))
    assert route(v, req()).rule == "from_filter_domain"
    assert route(v, req("boss@else.com")).rule == "from_filter_address"
    assert route(v, req("intern@else.com")).rule != "from_filter_domain"
    assert filter_parts(" a.com , B@C.com ,, ") == ({"b@c.com"}, {"a.com"})


def test_address_part_does_not_match_domain() -> None:
    v = view(srv("s", "boss@example.com"), srv("open", priority=99))
    assert route(v, req()).server == "open"


def test_idna_domains() -> None:
    d = route(view(srv("s", "xn--bcher-kva.de")), req("kunde@bücher.de"))
    assert (d.server, d.rule) == ("s", "from_filter_domain")
    d = route(view(srv("s", "BÜCHER.de")), req("kunde@xn--bcher-kva.de"))
    assert d.rule == "from_filter_domain"


def test_display_name_containing_address() -> None:
    v = view(srv("x", "x.com", priority=1), srv("y", "y.com", priority=2))
    d = route(v, req('"bob@x.com via CRM" <crm@y.com>'))
    assert (d.server, d.rule) == ("y", "from_filter_domain")
    v = view(srv("mine", "mycompany.com"))
    d = route(v, req('"bob@x.com via CRM" <crm@y.com>'))
    assert d.header_from == '"bob@x.com via CRM" <notifications@mycompany.com>'


def test_encapsulate_escapes_quotes() -> None:
    assert encapsulate('"Bo \\"B\\"" <b@x.com>', "n@m.com") == '"Bo \\"B\\"" <n@m.com>'


def test_notifications_address() -> None:
    assert notifications_address(SETTINGS) == "notifications@mycompany.com"
    assert notifications_address(NO_CATCHALL) is None
    assert notifications_address(SettingsChanged(default_from="a@b.com")) == "a@b.com"
    assert notifications_address(SettingsChanged(default_from="")) is None


def test_rejected_instead_of_raising() -> None:
    r = req()
    r.from_ = "not an address"  # bypasses validation on purpose
    d = route(view(srv("s")), r)
    assert (d.outcome, d.server) == ("rejected", "")
    assert "not an address" in d.reason


# --- envelope sender and bounce address ----------------------------------------------------


def test_envelope_is_bounce_address_with_catchall() -> None:
    d = route(view(srv("s", "example.com", sender="relay@example.com")), req())
    assert d.envelope_from == "bounce+m-1@mycompany.com"


def test_envelope_server_sender_without_catchall() -> None:
    v = view(srv("s", "example.com", sender="relay@example.com"), settings=NO_CATCHALL)
    d = route(v, req())
    assert d.envelope_from == "relay@example.com"
    assert d.header_from == '"Admin" <admin@example.com>'


def test_envelope_header_from_without_catchall_or_sender() -> None:
    settings = SettingsChanged(default_from="noreply@brand.io")
    d = route(view(srv("b", "brand.io"), settings=settings), req())
    assert d.envelope_from == "noreply@brand.io"


@pytest.mark.parametrize("mid", ["0f3a9c2e4b5d4e6f8a9b0c1d2e3f4a5b", "m.1_x-y=z"])
def test_bounce_round_trip(mid: str) -> None:
    settings = SettingsChanged(bounce_alias="Bounce", catchall_domain="Bücher.de")
    addr = bounce_address(settings, mid)
    assert addr == f"Bounce+{mid}@xn--bcher-kva.de"
    assert message_id_from_bounce(addr, settings) == mid
    assert message_id_from_bounce(f"MAILER <{addr.upper()}>", settings) == mid.upper()


def test_bounce_address_makes_id_safe() -> None:
    addr = bounce_address(SETTINGS, "<abc@host x>")
    assert addr == "bounce+=abc=host=x=@mycompany.com"
    assert message_id_from_bounce(addr, SETTINGS) == "=abc=host=x="


def test_not_a_bounce_address() -> None:
    assert message_id_from_bounce("bounce+m1@other.com", SETTINGS) is None
    assert message_id_from_bounce("catchall+m1@mycompany.com", SETTINGS) is None
    assert message_id_from_bounce("bounce+@mycompany.com", SETTINGS) is None
    assert message_id_from_bounce("bounce+m1@mycompany.com", NO_CATCHALL) is None


def test_a_mass_mail_goes_to_one_recipient() -> None:
    v = view(srv("bulk", kind="mass"))
    one = route(v, req(kind="mass"))
    assert one.outcome == "routed"
    two = route(v, req(kind="mass", cc=["b@x.test"]))
    assert two.outcome == "rejected"
    assert two.reason.startswith("a mass mail goes to one recipient (it has 2)")
    assert route(view(srv("any")), req(cc=["b@x.test"])).outcome == "routed"


# --- released by the router itself (RoutingDecided.direct) --------------------------------

NOW = 1_795_000_000.0


def direct_of(r: SendRequested, limits: Limits | None) -> bool:
    return decide(view(srv("main")), r, None, limits, NOW).direct


def test_a_mail_no_limit_applies_to_is_released_by_the_router() -> None:
    assert direct_of(req(), Limits()) is True
    # an empty domain entry (no rate) limits nothing either
    assert direct_of(req(), Limits(domains={"dest.test": (0.0, "")})) is True


@pytest.mark.parametrize("limits", [
    Limits(servers={"main": ServerLimits(daily=10)}),
    Limits(servers={"main": ServerLimits(rate=1.0, rate_text="60/min")}),
    Limits(tenants={"acme": 5}),
    Limits(domains={"dest.test": (1.0, "60/min")}),
    Limits(domains={"*": (1.0, "60/min")}),
], ids=["server-daily", "server-rate", "tenant", "domain-rate", "any-domain-rate"])
def test_a_limited_mail_goes_through_the_limiter(limits: Limits) -> None:
    assert direct_of(req(tenant="acme"), limits) is False


def test_scheduled_mass_unrouted_or_without_limits_is_never_direct() -> None:
    assert direct_of(req(send_at=NOW + 60), Limits()) is False
    assert direct_of(req(send_at=NOW - 60), Limits()) is True  # its time has come
    assert direct_of(req(kind="mass", list_id="news"), Limits()) is False
    assert direct_of(req(), None) is False  # the router was not given the limits
    assert decide(view(), req(), None, Limits(), NOW).direct is False  # no_server
    with pytest.raises(InvalidEvent, match="only a routed decision can be direct"):
        RoutingDecided(message_id="m-1", outcome="no_server", reason="x", direct=True)


def test_the_decision_carries_the_request_without_its_defaults() -> None:
    """``request`` leaves out the fields at their default (about 150 bytes
    of every copy of a mail); read back it is the same SendRequested."""
    from schemas.base import carried

    for r in (req(), req(cc=["c@dest.test"], tenant="t1", reply_to="r@example.com", campaign="c",
                       headers={"X-A": "1"}, send_at=5.0)):
        d = decide(view(srv("a")), r)
        assert d.outcome == "routed"
        defaults = SendRequested._options.defaults
        assert all(d.request[k] != defaults[k] for k in d.request if k in defaults)
        assert carried(SendRequested, d.request) == r
        assert SendRequested.from_data(d.request) == r
    assert "cc" not in decide(view(srv("a")), req()).request
