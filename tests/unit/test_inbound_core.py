"""Inbound routing, pure: parsing and every step of the contract's order."""

from __future__ import annotations

import pytest

from processors.config.view import ConfigView, fold
from processors.inbound import core
from processors.inbound.core import AliasMatch, LoopState, Route, SentInfo
from processors.inbound.mail import (
    MalformedMail,
    header_message_id,
    inbound_key,
    message_ids,
    normalize_message_id,
    parse_mail,
)
from schemas import AliasConfigured, SettingsChanged


def view(allowed: str = "", threshold: int = 3, **settings: object) -> ConfigView:
    return fold([
        SettingsChanged(catchall_domain="mycompany.com", allowed_domains=allowed,
                        loop_minutes=120, loop_threshold=threshold, **settings),  # type: ignore[arg-type]
        AliasConfigured(alias="sales", target="crm.lead", tenant="", policy="everyone"),
        AliasConfigured(alias="jobs@careers.example.net", target="hr.applicant",
                        policy="contacts"),
    ])


def mail(headers: str, body: str = "Hello\r\n") -> bytes:
    return (headers.strip().replace("\n", "\r\n") + "\r\n\r\n" + body).encode()


def simple(to: str = "sales@mycompany.com", frm: str = "Ann <ann@client.org>",
           extra: str = "") -> bytes:
    return mail(f"From: {frm}\nTo: {to}\nSubject: Hi\nMessage-ID: <m1@client.org>\n{extra}")


def decide(raw: bytes, v: ConfigView | None = None, sent: tuple[str, ...] = (),
           tenant: str = "") -> Route:
    return core.route_offline(raw, v or view(), sent, tenant=tenant, now=1_000_000.0)


# --- parsing ---------------------------------------------------------------------


def test_normalize_message_id() -> None:
    assert normalize_message_id(" <Abc.1@Example.COM> ") == "Abc.1@example.com"
    assert message_ids("<a@x.com>\r\n <b@X.com>\t<a@x.com>") == ["a@x.com", "b@x.com"]
    assert message_ids("a@x.com b@y.com") == ["a@x.com", "b@y.com"]  # no brackets
    assert inbound_key("<M@X.COM>", "i1") == "M@x.com"
    assert inbound_key("", "i1") == "inbound:i1"
    assert header_message_id(simple()) == "<m1@client.org>"


def test_parse_collects_recipients_in_order_without_repeats() -> None:
    raw = mail("From: ann@client.org\nDelivered-To: gw@mycompany.com\nTo: A <a@x.com>, "
               "b@Y.com\nCc: sales@MyCompany.com, a@X.com\nSubject: =?utf-8?q?H=C3=A9?=")
    m = parse_mail(raw, envelope_to=["env@mycompany.com"])
    assert m.recipients == ["env@mycompany.com", "gw@mycompany.com", "a@x.com", "b@y.com",
                            "sales@mycompany.com"]
    assert m.to == ["env@mycompany.com", "a@x.com", "b@y.com"]
    assert m.subject == "Hé"
    assert m.message_id == ""


def test_folded_and_long_references() -> None:
    ids = [f"<ref{i}.{'x' * 40}@host{i % 7}.example.com>" for i in range(300)]
    folded = "\n ".join(ids)
    raw = mail(f"From: a@b.org\nTo: x@y.org\nIn-Reply-To:\n <last@host.example.com>\n"
               f"References: {folded}")
    m = parse_mail(raw)
    assert m.in_reply_to == ["last@host.example.com"]
    assert len(m.references) == 200  # root + newest 199
    assert m.references[0] == normalize_message_id(ids[0])
    assert m.references[-1] == normalize_message_id(ids[-1])
    cands = core.reply_candidates(m)
    assert cands[0] == "last@host.example.com"
    assert cands[1] == normalize_message_id(ids[-1])  # newest reference first


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02 binary junk without headers", "no header block"),
        (mail("To: sales@mycompany.com\nSubject: no from"), "no From header"),
        (mail("From: not an address\nTo: sales@mycompany.com"), "no usable From"),
        (mail("From: a@b.org\nTo: sales@mycompany.com\nMIME-Version: 1.0\n"
              "Content-Type: multipart/mixed"), "broken MIME structure"),
        (mail('From: a@b.org\nTo: sales@mycompany.com\nContent-Type: multipart/mixed; '
              'boundary="zzz"', "no boundary line here\r\n"), "broken MIME structure"),
    ],
)
def test_malformed_mail_is_rejected_with_reason(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMail, match=fragment):
        parse_mail(raw)
    d = decide(raw)
    assert (d.route, d.rule) == ("reject", "malformed")
    assert fragment in d.reason


# --- 1. duplicate ----------------------------------------------------------------------


def test_duplicate_only_for_another_inbound_mail() -> None:
    seen = {"inbound_id": "first", "server": "inbox", "received_at": 0.0}
    assert core.duplicate(None, "x", "m1@a.com") is None
    assert core.duplicate(seen, "first", "m1@a.com") is None  # the same mail redelivered
    d = core.duplicate(seen, "second", "m1@a.com")
    assert d is not None and d.route == "duplicate" and "first" in d.reason


# --- 2. bounce ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (simple(to="bounce+abc123@mycompany.com"), "bounce_address"),
        (simple(to="Bounce@mycompany.com"), "bounce_address"),
        (simple(frm="MAILER-DAEMON@mx.client.org"), "mailer_daemon"),
        (mail('From: postmaster@mx.org\nTo: someone@mycompany.com\nContent-Type: '
              'multipart/report; report-type=delivery-status; boundary="b"',
              "--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n"), "delivery_report"),
    ],
)
def test_bounce(raw: bytes, rule: str) -> None:
    d = decide(raw)
    assert (d.route, d.rule) == ("bounce", rule)


def test_bounce_address_carries_original_id_and_beats_reply() -> None:
    raw = simple(to="bounce+AbC-42@mycompany.com", extra="In-Reply-To: <sent1@mycompany.com>")
    d = decide(raw, sent=("<sent1@mycompany.com>",))
    assert d.route == "bounce" and d.original_message_id == "AbC-42"


# --- 3. reply -----------------------------------------------------------------------------


def test_reply_by_in_reply_to_even_when_to_is_wrong() -> None:
    raw = simple(to="someone-else@elsewhere.org", extra="In-Reply-To: <Sent1@MyCompany.com>")
    d = decide(raw, sent=("<Sent1@mycompany.com>",))
    assert (d.route, d.rule) == ("reply", "in_reply_to")
    assert d.target == "<Sent1@mycompany.com>"


def test_reply_by_folded_references() -> None:
    raw = simple(to="catchall@mycompany.com",
                 extra="References: <a@x.org>\n <sent2@mycompany.com>\n\t<b@y.org>")
    d = decide(raw, sent=("sent2@mycompany.com",))
    assert (d.route, d.rule) == ("reply", "references")


def test_reply_uses_thread_ref() -> None:
    m = parse_mail(simple(extra="In-Reply-To: <s@mycompany.com>"))
    d = core.reply(m, "s@mycompany.com", SentInfo("msg-1", "crm.lead/7", "acme"))
    assert (d.target, d.thread_ref, d.original_message_id, d.tenant) == (
        "crm.lead/7", "crm.lead/7", "msg-1", "acme")
    d = core.reply(m, "s@mycompany.com", SentInfo("msg-1"))
    assert d.target == "msg-1"


def test_unknown_references_fall_through_to_aliases() -> None:
    raw = simple(extra="In-Reply-To: <foreign@other.org>")
    assert decide(raw, sent=("sent1@mycompany.com",)).route == "alias"


def test_reply_survives_alias_rename() -> None:
    """Replies match by thread: the alias the mail was sent from is gone."""
    renamed = fold([
        SettingsChanged(catchall_domain="mycompany.com"),
        AliasConfigured(alias="leads", target="crm.lead"),
    ])
    raw = simple(to="sales@mycompany.com", extra="In-Reply-To: <s1@mycompany.com>")
    assert decide(raw, renamed, sent=("s1@mycompany.com",)).route == "reply"
    assert decide(raw, renamed).route == "reject"  # not a reply: sales is no alias now


def test_lookup_chain_groups_candidates_by_partition() -> None:
    cands = ["a@x", "b@x", "c@x", "d@x"]
    part = {"a@x": 0, "b@x": 1, "c@x": 0, "d@x": 1}.__getitem__
    table = {"c@x": {"message_id": "mc"}, "b@x": {"message_id": "mb"}}
    pending = [0, 1, 2, 3]
    # hop 1 on partition 0 (candidate 0's): a misses, c matches (index 2)
    pending, idx, found = core.lookup_here(cands, pending, -1, {}, 0, part, table.get)
    assert (pending, idx, found) == ([1, 3], 2, {"message_id": "mc"})
    # b (index 1) could still beat it: go to b's partition
    assert core.next_candidate(cands, pending, idx) == "b@x"
    pending, idx, found = core.lookup_here(cands, pending, idx, found, 1, part, table.get)
    assert (idx, found) == (1, {"message_id": "mb"})
    assert core.next_candidate(cands, pending, idx) is None


# --- 4. catchall ---------------------------------------------------------------------------


def test_catchall_only_is_rejected_with_bounce() -> None:
    raw = simple(to="catchall@mycompany.com")
    d = decide(raw)
    assert (d.route, d.rule, d.bounce_to) == ("reject", "catchall", "ann@client.org")
    req = core.bounce_request(d, parse_mail(raw), "in-1", view().settings)
    assert req is not None and req.to == ["ann@client.org"]
    assert req.message_id == core.bounce_message_id("in-1")
    assert req.headers["Auto-Submitted"] == "auto-replied"
    assert req.headers["In-Reply-To"] == "<m1@client.org>"


def test_catchall_with_an_alias_is_not_catchall_only() -> None:
    d = decide(simple(to="catchall@mycompany.com, sales@mycompany.com"))
    assert d.route == "alias"


@pytest.mark.parametrize(
    "extra", ["Auto-Submitted: auto-replied", "Precedence: bulk", "List-Id: <l.x.org>"])
def test_no_bounce_back_to_automatic_mail(extra: str) -> None:
    d = decide(simple(to="catchall@mycompany.com", extra=extra))
    assert d.rule == "catchall" and d.bounce_to == "" and "no bounce" in d.reason


def test_no_bounce_back_to_our_own_domain() -> None:
    d = decide(simple(to="catchall@mycompany.com", frm="robot@mycompany.com"))
    assert d.bounce_to == "" and "own domain" in d.reason


# --- 5. alias -------------------------------------------------------------------------------


def test_alias_by_local_part() -> None:
    d = decide(simple())
    assert (d.route, d.rule, d.target, d.alias) == ("alias", "alias_local_part", "crm.lead",
                                                   "sales")


def test_alias_in_cc() -> None:
    raw = mail("From: ann@client.org\nTo: bob@client.org\nCc: Sales <SALES@mycompany.com>")
    d = decide(raw)
    assert (d.route, d.target) == ("alias", "crm.lead")
    assert "SALES@mycompany.com" in d.reason


def test_full_address_alias_and_its_policy() -> None:
    d = decide(simple(to="Jobs@Careers.Example.NET"))
    assert (d.route, d.rule, d.target, d.policy) == ("alias", "alias_address",
                                                    "hr.applicant", "contacts")
    assert "contacts" in d.reason


def test_local_part_on_a_foreign_domain_without_allowed_domains() -> None:
    assert decide(simple(to="sales@foreign.example")).route == "alias"


def test_local_part_on_a_foreign_domain_with_allowed_domains() -> None:
    v = view(allowed="mycompany.com, mycompany.eu")
    d = decide(simple(to="sales@foreign.example"), v)
    assert (d.route, d.rule) == ("reject", "no_alias")
    assert "foreign.example is not in allowed_domains" in d.reason
    assert decide(simple(to="sales@mycompany.eu"), v).route == "alias"
    # the catchall domain counts as ours even when not listed
    assert decide(simple(to="sales@mycompany.com"), view(allowed="mycompany.eu")).route == "alias"


def test_alias_tenant_must_match_the_mail_tenant() -> None:
    v = fold([SettingsChanged(catchall_domain="mycompany.com"),
              AliasConfigured(alias="sales", target="crm.lead", tenant="acme")])
    assert decide(simple(), v, tenant="acme").route == "alias"
    d = decide(simple(), v, tenant="globex")
    assert d.route == "reject" and "tenant 'acme'" in d.reason


# --- 6. loop -----------------------------------------------------------------------------------


def test_loop_threshold_and_one_bounce_per_window() -> None:
    v = view(threshold=3)
    m = parse_mail(simple())
    step = core.recipients(m, v, "")
    assert isinstance(step, AliasMatch)
    state, routes = LoopState(), []
    t0 = 1_000_000.0
    for i in range(6):
        state, r = core.loop(state, step, m.sender, f"in-{i}", t0 + i, v.settings, m.sender)
        routes.append(r)
    assert [r.route for r in routes] == ["alias"] * 3 + ["loop"] * 3
    assert [bool(r.bounce_to) for r in routes[3:]] == [True, False, False]
    assert "3 records" in routes[3].reason and "120 minutes" in routes[3].reason
    # the same mail redelivered is not counted twice
    state2, r = core.loop(state, step, m.sender, "in-1", t0 + 10, v.settings)
    assert r.route == "alias" and len(state2.hits) == 3
    # after the window, mail goes through again and a new bounce may be sent
    later = t0 + 120 * 60 + 10
    state, r = core.loop(state, step, m.sender, "in-9", later, v.settings, m.sender)
    assert r.route == "alias"
    # state survives its JSON form
    assert LoopState.from_dict(state.to_dict()) == state


def test_loop_allowed_senders_are_exempt() -> None:
    v = view(threshold=1, loop_allowed_senders="robot@partner.com")
    m = parse_mail(simple(frm="robot@partner.com"))
    step = core.recipients(m, v, "")
    assert isinstance(step, AliasMatch)
    state = LoopState()
    for i in range(3):
        state, r = core.loop(state, step, m.sender, f"i{i}", 10.0 + i, v.settings)
        assert r.route == "alias"


def test_loop_bounce_request() -> None:
    v = view(threshold=1)
    m = parse_mail(simple())
    step = core.recipients(m, v, "")
    assert isinstance(step, AliasMatch)
    state, _ = core.loop(LoopState(), step, m.sender, "a", 1.0, v.settings, m.sender)
    _, r = core.loop(state, step, m.sender, "b", 2.0, v.settings, m.sender)
    req = core.bounce_request(r, m, "b", v.settings)
    assert req is not None and "mail loop" in req.text and req.to == ["ann@client.org"]


# --- 7. anything else ------------------------------------------------------------------------


def test_no_alias_is_rejected_with_the_recipients() -> None:
    d = decide(simple(to="nobody@mycompany.com"))
    assert (d.route, d.rule) == ("reject", "no_alias")
    assert "nobody@mycompany.com" in d.reason


def test_ingress_domains_are_never_any() -> None:
    assert core.accepted_domains(view()) == {"mycompany.com", "careers.example.net"}
    assert core.accepted_domains(ConfigView()) == set()


# --- SMTP ingress ----------------------------------------------------------------------------


def test_ingress_refuses_foreign_domains() -> None:
    from processors.ingress.core import refuse_recipient

    v = view(allowed="mycompany.com, mycompany.eu")
    assert refuse_recipient("anyone@mycompany.eu", v) is None
    assert refuse_recipient("jobs@careers.example.net", v) is None
    assert refuse_recipient("x@gmail.com", v) == (
        "550 5.7.1 gmail.com is not a domain of this gateway: relaying denied")
    assert (refuse_recipient("not an address", v) or "").startswith("553")
    assert "no alias domain" in (refuse_recipient("a@b.com", ConfigView()) or "")


# --- table bookkeeping -----------------------------------------------------------------


def test_the_first_copy_of_a_message_id_is_remembered_once() -> None:
    row = core.first_seen(None, "in-1", "imap-a", "imap", 10.0)
    assert row == {"inbound_id": "in-1", "server": "imap-a", "source": "imap",
                   "received_at": 10.0}
    assert core.first_seen(row, "in-2", "imap-b", "imap", 11.0) is None


def test_sent_threads_records_each_message_id_once_and_keeps_the_thread() -> None:
    info = {"thread_ref": "t1", "tenant": "acme", "header_from": "a@shop.example"}
    first = core.sent_thread(None, "<x1@shop.example>", info)
    assert first == {**info, "ids": ["<x1@shop.example>"]}
    assert core.sent_thread(first, "<x1@shop.example>", info) is None  # redelivered
    retried = core.sent_thread(first, "<x2@shop.example>")  # a delivery attempt's own id
    assert retried == {**info, "ids": ["<x1@shop.example>", "<x2@shop.example>"]}
    assert core.sent_thread(None, "<x3@shop.example>") == {"ids": ["<x3@shop.example>"]}
    assert core.sent_index_row("m1", "t1", "acme") == {
        "message_id": "m1", "thread_ref": "t1", "tenant": "acme"}


def test_sent_with_a_routing_decision_then_an_attempt() -> None:
    from processors.delivery.message import make_smtp_message_id
    from schemas import DeliveryAttempted, RoutingDecided

    decided = RoutingDecided(message_id="m1", outcome="routed", server="s",
                             header_from="Shop <news@Shop.Example>", envelope_from="b@x.y",
                             request={"thread_ref": "t1", "tenant": "acme"})
    smtp_id, row = core.sent_with(None, decided) or ("", {})
    assert smtp_id == make_smtp_message_id("m1", "shop.example")
    assert row == {"thread_ref": "t1", "tenant": "acme",
                   "header_from": "Shop <news@Shop.Example>", "ids": [smtp_id]}
    assert core.sent_with(row, decided) is None  # redelivered
    attempted = DeliveryAttempted(message_id="m1", attempt=2, server="s", outcomes=[],
                                  smtp_message_id="<other@shop.example>")
    assert core.sent_with(row, attempted) == (
        "<other@shop.example>", {**row, "ids": [smtp_id, "<other@shop.example>"]})
    no_id = DeliveryAttempted(message_id="m1", attempt=3, server="s", outcomes=[])
    assert core.sent_with(row, no_id) is None
    refused = RoutingDecided(message_id="m2", outcome="no_server", reason="none")
    assert core.sent_with(None, refused) is None
    assert core.header_domain("not an address") == "postlane.invalid"
