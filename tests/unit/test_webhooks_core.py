"""The webhooks processor's pure core, and the [[webhooks]] configuration refusals."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from postlane.configfile import ConfigFileError, parse
from postlane.configops import publish_config
from processors.config.view import fold
from processors.webhooks import core
from schemas import (
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    InvalidEvent,
    UnsubscribeRequested,
    WebhookConfigured,
    WebhookDeadLettered,
    WebhookDelivered,
)
from streams.settings import Settings


@dataclass(frozen=True)
class Policy:
    webhook_retry_for: float = 86400.0
    webhook_retry_first: float = 5.0
    webhook_retry_max: float = 900.0


def hook(**kw: object) -> WebhookConfigured:
    base: dict[str, object] = {"name": "crm", "url": "https://crm.example/hooks",
                               "events": "*", "secret_env": "X"}
    return WebhookConfigured(**{**base, **kw})


def attempted() -> DeliveryAttempted:
    return DeliveryAttempted(
        message_id="m-1", attempt=1, server="main", occurred_at=1000.0,
        outcomes=[{"recipient": "a@x.test", "status": "accepted", "code": 250, "text": "ok"},
                  {"recipient": "b@x.test", "status": "deferred", "code": 451, "text": "later"},
                  {"recipient": "c@x.test", "status": "failed", "code": 550, "text": "no"}],
        next_attempt_at=1300.0)


def test_an_attempt_gives_one_notification_per_recipient() -> None:
    cause = attempted()
    notes = core.notifications(cause, "acme")
    assert [(n.type, n.recipient) for n in notes] == [
        ("sent", "a@x.test"), ("deferred", "b@x.test"), ("failed", "c@x.test")]
    assert all(n.tenant == "acme" and n.message_id == "m-1" for n in notes)
    assert notes[1].details["next_attempt_at"] == 1300.0
    # the same cause again gives the same ids (a redelivery is not posted twice)
    assert [n.id for n in notes] == [n.id for n in core.notifications(cause, "acme")]
    assert len({n.id for n in notes}) == 3


def test_bounces_complaints_unsubscribes() -> None:
    b = BounceRecorded(bounce_id="b1", address="c@x.test", bounced_at=1001.0,
                       reason="unknown_user", hard=True, message_id="m-1")
    assert [n.type for n in core.notifications(b)] == ["bounced"]
    assert core.rekey(b) == "m-1"
    unattributed = BounceRecorded(bounce_id="b2", address="c@x.test", bounced_at=1001.0,
                                  reason="unknown_user", hard=True, unattributed="no mail")
    assert core.notifications(unattributed) == [] and core.rekey(unattributed) is None
    c = ComplaintReceived(complaint_id="c1", address="d@x.test", complained_at=1002.0,
                          tenant="acme")
    assert core.rekey(c) == "d@x.test"  # no mail named: the address is the lane
    assert [(n.type, n.tenant) for n in core.notifications(c)] == [("complained", "acme")]
    u = UnsubscribeRequested(address="e@x.test", list_id="news", message_id="m-2")
    assert [n.type for n in core.notifications(u)] == ["unsubscribed"]


def test_endpoints_get_what_they_subscribed_to_and_their_tenant_only() -> None:
    notes = core.notifications(attempted(), "acme")
    only_sent = hook(events="sent, bounced")
    assert [n.type for n in notes if core.wanted(only_sent, n)] == ["sent"]
    assert all(core.wanted(hook(tenant="acme"), n) for n in notes)
    assert not any(core.wanted(hook(tenant="other"), n) for n in notes)


def test_one_mail_in_order_per_endpoint_and_endpoints_independent() -> None:
    notes = core.notifications(attempted(), "")
    lane = core.plan(None, notes, [hook(), hook(name="erp")], now=0.0)
    assert lane is not None and len(lane["rows"]) == 6
    assert core.plan(lane, notes, [hook(), hook(name="erp")], now=5.0) is None  # redelivered
    first = core.heads(lane, now=1.0)
    assert sorted(r["webhook"] for r in first) == ["crm", "erp"]  # one per endpoint
    crm = next(r for r in first if r["webhook"] == "crm")
    # crm's head is retried later: crm waits, erp goes on
    row, out = core.after_attempt(crm, core.Answer(False, True, 503, "HTTP 503"), 10.0,
                                  Policy())
    assert out is None and row["next_at"] == 15.0 and row["attempts"] == 1
    lane["rows"][crm["delivery_id"]] = row
    erp = next(r for r in first if r["webhook"] == "erp")
    row2, out2 = core.after_attempt(erp, core.Answer(True, status=204), 10.0, Policy())
    assert isinstance(out2, WebhookDelivered) and row2["state"] == "delivered"
    lane["rows"][erp["delivery_id"]] = row2
    heads = core.heads(lane, now=11.0)
    assert [r["webhook"] for r in heads] == ["erp"]  # crm's next waits behind its retry
    assert heads[0]["notification"]["recipient"] != erp["notification"]["recipient"]


def test_retry_back_off_then_dead_letter_and_4xx_at_once() -> None:
    row = core.plan(None, core.notifications(attempted(), "")[:1], [hook()], 0.0)
    assert row is not None
    r = next(iter(row["rows"].values()))
    t = 100.0
    waits = []
    for _ in range(6):
        r, out = core.after_attempt(r, core.Answer(False, True, 0, "no answer"), t,
                                    Policy(webhook_retry_for=3600))
        assert out is None
        waits.append(r["next_at"] - t)
        t = r["next_at"]
    assert waits == [5, 10, 20, 40, 80, 160]
    r, out = core.after_attempt(r, core.Answer(False, True, 0, "no answer"), 100.0 + 4000,
                                Policy(webhook_retry_for=3600))
    assert isinstance(out, WebhookDeadLettered) and r["state"] == "dead"
    assert "no answer" in out.reason and "retried 7 times" in out.reason
    fresh = next(iter(row["rows"].values()))
    r, out = core.after_attempt(fresh, core.answer_of_status(404, "nope"), 1.0, Policy())
    assert isinstance(out, WebhookDeadLettered) and "not retried" in out.reason
    assert core.answer_of_status(429).retry and core.answer_of_status(502).retry
    assert core.answer_of_status(204).ok


def test_signature() -> None:
    body = core.body_of({"type": "sent", "id": "x"})
    header = core.sign(b"k", 1700000000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert core.verify(b"k", header, body, 1700000010)
    assert not core.verify(b"k", header, body + b" ", 1700000010)
    assert not core.verify(b"k", header, body, 1700009999)  # too old


@pytest.mark.parametrize("fields,words", [
    ({"url": "ftp://crm.example/x"}, "must be an http:// or https:// URL"),
    ({"url": "crm.example/x"}, "must be an http:// or https:// URL"),
    ({"events": "sent, opened"}, "unknown event 'opened'"),
    ({"secret_env": ""}, "give secret_env (a variable name) or secret_file"),
])
def test_bad_webhook_entries_are_refused_in_words(fields: dict[str, str], words: str) -> None:
    with pytest.raises(InvalidEvent, match=None) as info:
        hook(**fields)
    assert words in str(info.value)
    toml = "[[webhooks]]\n" + "\n".join(
        f'{k} = "{v}"' for k, v in {"name": "crm", "url": "https://c.example/h",
                                     "secret_env": "X", **fields}.items())
    with pytest.raises(ConfigFileError) as cfe:
        parse(toml, "p.toml")
    assert words in str(cfe.value) and "[[webhooks]] #1 ('crm')" in str(cfe.value)


def test_the_secret_itself_is_refused_and_a_missing_one_stops_config_apply(
        monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    with pytest.raises(ConfigFileError, match="the secret itself is refused"):
        parse('[[webhooks]]\nname = "crm"\nurl = "https://c.example/h"\nsecret = "x"\n')
    desired = parse('[[webhooks]]\nname = "crm"\nurl = "https://c.example/h"\n'
                    'events = "sent, bounced"\nsecret_env = "NO_SUCH_SECRET_VAR"\n')
    assert fold([*desired.webhooks]).webhooks["crm"].event_types() == ("sent", "bounced")
    monkeypatch.delenv("NO_SUCH_SECRET_VAR", raising=False)
    s = Settings.from_env(environ={}, embedded_port=1)  # nothing listens: refused before
    with pytest.raises(ConfigFileError) as info:
        publish_config(s, [(h.key, h) for h in desired.webhooks])
    assert "NO_SUCH_SECRET_VAR" in str(info.value) and "is not set" in str(info.value)
    assert "nothing was published" in str(info.value)


def test_finished_rows_are_pruned_after_webhook_keep_pending_never() -> None:
    from processors.webhooks.core import prune

    lane = {"rows": {
        "d1": {"state": "delivered", "done_at": 1000.0, "first_at": 990.0},
        "d2": {"state": "dead", "done_at": 5000.0, "first_at": 100.0},
        "d3": {"state": "pending", "first_at": 10.0, "next_at": 20.0},
        "d4": {"state": "delivered", "first_at": 900.0},  # from before done_at: its first try
    }}
    assert prune(lane, 1500.0, keep=1000.0) == (False, lane)  # nothing finished long enough
    changed, value = prune(lane, 2500.0, keep=1000.0)
    assert changed and value is not None and set(value["rows"]) == {"d2", "d3"}  # d1, d4 gone
    changed, value = prune(value, 10_000.0, keep=1000.0)
    assert changed and value is not None and set(value["rows"]) == {"d3"}  # pending stays
    done = {"rows": {"d1": {"state": "delivered", "done_at": 1.0}}}
    assert prune(done, 5000.0, keep=1000.0) == (True, None)  # the lane is deleted
    assert prune(None, 5000.0, keep=1000.0) == (False, None)
