"""Events: wire round trips, decode validation, and the exported JSON Schemas."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from postlane.cli.schemas_cmd import schemas as schemas_group
from schemas import (
    ALL_EVENTS,
    AliasConfigured,
    AliasRemoved,
    BlacklistChanged,
    BlacklistEdited,
    BounceDiscounted,
    BounceMailReceived,
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    DeliveryStarted,
    DomainPaceConfigured,
    DomainPaceRemoved,
    Event,
    EventDeadLettered,
    InboundAliasMatched,
    InboundMailReceived,
    InboundMailRejected,
    InboundMailRouted,
    InboundReplyLookupRequested,
    IncomingServerChecked,
    IncomingServerConfigured,
    IncomingServerRemoved,
    InvalidEvent,
    MailHeld,
    MailReceivedFrom,
    MailReleased,
    MessageCancelled,
    MessageStatusChanged,
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    QueueCommandApplied,
    QueueCommandIssued,
    QueueCommandRefused,
    QuotaAsked,
    QuotaGranted,
    QuotaRefused,
    QuotasAnswered,
    QuotasAsked,
    RateError,
    RecipientBounced,
    RecipientsMailed,
    RetryTimeReached,
    RoutingDecided,
    SendRequested,
    SentMessageRecorded,
    SettingsChanged,
    SuppressionEdited,
    TenantConfigured,
    TenantRemoved,
    decode,
    decode_any,
    encode,
    parse_rate,
)
from schemas.config import DkimKeyConfigured, DkimKeyRemoved, WebhookConfigured, WebhookRemoved
from schemas.export import export_all, json_schema
from schemas.unsubscribe import UnsubscribeRequested
from schemas.webhooks import WebhookDeadLettered, WebhookDelivered

REGISTRY = {cls.__name__: cls for cls in ALL_EVENTS}


def send_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "from_": '"Admin" <admin@example.com>',
        "to": ["alice@example.org"],
        "cc": ["Bob <bob@example.org>"],
        "subject": "Invoice 42",
        "text": "Hello",
        "html": "<p>Hello</p>",
        "attachments": [
            {
                "filename": "a.txt",
                "content_type": "text/plain",
                "data": base64.b64encode(b"hi").decode(),
            }
        ],
        "headers": {"X-Tenant-Ref": "7"},
        "tenant": "acme",
        "kind": "mass",
        "send_at": 1_700_000_000.5,
    }
    fields.update(changes)
    return fields


# One fully populated sample per event; a new event must be added here.
SAMPLES: dict[type[Event], dict[str, Any]] = {
    OutgoingServerConfigured: {
        "name": "primary",
        "host": "smtp.example.com",
        "port": 465,
        "security": "ssl",
        "username": "noreply@example.com",
        "password_env": "SMTP_PASSWORD",
        "from_filter": "example.com, boss@other.com",
        "priority": 5,
        "active": False,
        "kind": "transactional",
        "tenant": "acme",
        "allow_self_signed": True,
        "archive_bcc": "archive@example.com",
        "reply_to": "support@example.com",
        "daily_limit": 200,
        "timeout": 12.5,
    },
    OutgoingServerRemoved: {"name": "primary"},
    SettingsChanged: {"default_from": "notifications", "catchall_domain": "mycompany.com"},
    SendRequested: send_fields(),
    RoutingDecided: {
        "message_id": "m-1",
        "outcome": "routed",
        "server": "primary",
        "header_from": '"Admin" <notifications@mycompany.com>',
        "envelope_from": "bounce+m-1@mycompany.com",
        "rule": "default_from_address",
        "request": send_fields(),
    },
    DeliveryStarted: {
        "message_id": "m-1",
        "attempt": 1,
        "server": "primary",
        "recipients": ["alice@example.org"],
        "worker": "delivery-1",
    },
    DeliveryAttempted: {
        "message_id": "m-1",
        "attempt": 1,
        "server": "primary",
        "outcomes": [
            {"recipient": "alice@example.org", "status": "accepted", "code": 250},
            {"recipient": "bob@example.org", "status": "deferred", "code": 451,
             "enhanced": "4.7.1", "text": "try later"},
        ],
        "duration": 0.25,
        "next_attempt_at": 1_700_000_300.0,
        "smtp_message_id": "<abc@example.com>",
    },
    RetryTimeReached: {"message_id": "m-1", "attempt": 2},
    MessageStatusChanged: {
        "message_id": "m-1",
        "state": "deferred",
        "previous": "sending",
        "reason": "451 try later",
        "server": "primary",
        "attempt": 1,
        "recipients": {"bob@example.org": {"state": "deferred", "code": 451}},
    },
    EventDeadLettered: {
        "processor": "router",
        "source_topic": "postlane.send-requested",
        "error": "invalid SendRequested: missing field 'to'",
        "partition": 3,
        "offset": 17,
        "key": "m-9",
        "value": '{"message_id": "m-9"}',
    },
}

RAW_MAIL = base64.b64encode(
    b"From: a@example.org\r\nTo: sales@mycompany.com\r\nMessage-ID: <x1@example.org>\r\n"
    b"Subject: Hi\r\n\r\nHello\r\n"
).decode()
INBOUND: dict[str, Any] = {
    "inbound_id": "5f1c0d9e2b",
    "source": "imap",
    "mail": RAW_MAIL,
    "size": 99,
    "server": "inbox",
    "tenant": "acme",
    "folder": "INBOX",
    "uidvalidity": 1700000000,
    "uid": 42,
    "message_id": "<x1@example.org>",
    "envelope_from": "",
    "envelope_to": [],
    "received_at": 1_700_000_000.25,
}
PARSED = {"message_id": "x1@example.org", "sender": "a@example.org"}
SAMPLES.update({
    IncomingServerConfigured: {
        "name": "inbox",
        "host": "imap.example.com",
        "port": 993,
        "security": "ssl",
        "username": "gateway@example.com",
        "password_file": "/run/secrets/imap",
        "folder": "INBOX",
        "poll_interval": 60.0,
        "use_idle": False,
        "tenant": "acme",
        "active": True,
        "move_to": "Processed",
        "allow_self_signed": True,
        "max_message_bytes": 5_000_000,
        "timeout": 20.0,
    },
    IncomingServerRemoved: {"name": "inbox"},
    AliasConfigured: {"alias": "sales", "target": "crm.lead", "tenant": "acme",
                      "policy": "contacts"},
    AliasRemoved: {"alias": "sales"},
    InboundMailReceived: INBOUND,
    InboundMailRejected: {
        "inbound_id": "5f1c0d9e2c", "source": "imap", "reason": "too large",
        "size": 40_000_000, "server": "inbox", "tenant": "acme", "folder": "INBOX",
        "uidvalidity": 1700000000, "uid": 43, "message_id": "<x2@example.org>",
        "headers": "From: a@example.org\r\n", "received_at": 1_700_000_001.0,
    },
    InboundMailRouted: {
        "inbound_id": "5f1c0d9e2b", "route": "alias", "reason": "sales is an alias",
        "rule": "alias_local_part", "target": "crm.lead", "alias": "sales",
        "policy": "contacts", "tenant": "acme", "thread_ref": "", "original_message_id": "",
        "bounce_to": "", "bounce_message_id": "", "sender": "a@example.org",
        "recipients": ["sales@mycompany.com"], "message_id": "<x1@example.org>",
        "subject": "Hi", "source": "imap", "server": "inbox", "received_at": 1_700_000_000.25,
        "mail": RAW_MAIL,
    },
    SentMessageRecorded: {
        "smtp_message_id": "<m-1@mycompany.com>", "message_id": "m-1",
        "thread_ref": "crm.lead/7", "tenant": "acme",
        "header_from": "sales@mycompany.com",
    },
    InboundReplyLookupRequested: {
        "inbound_key": "x1@example.org", "candidates": ["m-1@mycompany.com"],
        "pending": [0], "inbound": INBOUND, "parsed": PARSED, "found_index": -1,
        "found": {}, "hops": 0,
    },
    InboundAliasMatched: {
        "inbound_key": "x1@example.org", "alias": "sales", "target": "crm.lead",
        "sender": "a@example.org", "recipient": "sales@mycompany.com", "inbound": INBOUND,
        "parsed": PARSED, "tenant": "acme", "policy": "everyone", "rule": "alias_address",
    },
    IncomingServerChecked: {
        "server": "inbox", "ok": False, "sentence": "The login was refused.", "step": "login",
        "kind": "auth_failed", "idle": False, "uidvalidity": 1700000000, "last_uid": 41,
    },
})


BOUNCE: dict[str, Any] = {
    "bounce_id": "b-1", "address": "bob@example.org", "bounced_at": 1_700_000_000.0,
    "reason": "unknown_user", "hard": True, "status": "5.1.1", "replycode": 550,
    "diagnostic": "550 5.1.1 <bob@example.org>: user unknown", "message_id": "m-1",
    "server": "mx.example.org", "source": "mail", "format": "rfc3464", "kind": "failed",
}
SAMPLES.update({
    BounceMailReceived: {"bounce_mail_id": "5f1c0d9e2b", "mail": RAW_MAIL,
                         "received_at": 1_700_000_000.25, "original_message_id": "m-1",
                         "source": "inbound"},
    RecipientBounced: BOUNCE,
    RecipientsMailed: {"domain": "example.org", "count": 3, "at": 1_700_000_000.0,
                       "message_id": "m-1"},
    BounceRecorded: {**BOUNCE, "outage": "burst of 12 x 421 4.4.2 from mx.example.org"},
    BounceDiscounted: {"address": "bob@example.org", "bounce_id": "b-1",
                       "outage": "burst of 12 x 550 5.1.1 from mx.example.org"},
    MailReceivedFrom: {"address": "bob@example.org", "received_at": 1_700_000_000.0,
                       "inbound_id": "5f1c0d9e2b", "source": "reply"},
    BlacklistEdited: {"address": "bob@example.org", "action": "add", "reason": "asked us",
                      "by": "ops"},
    BlacklistChanged: {"address": "bob@example.org", "blacklisted": True,
                       "reason": "5 bounces in 9 days", "since": 1_700_000_000.0,
                       "manual": False, "bounces": [{"bounce_id": "b-1", "at": 1.0}]},
})

DECISION = {"message_id": "m-1", "outcome": "routed", "server": "primary",
            "header_from": "a@example.com", "envelope_from": "bounce+m-1@example.com",
            "rule": "first_server", "request": {}}
SAMPLES.update({
    TenantConfigured: {"name": "acme", "daily_limit": 200},
    TenantRemoved: {"name": "acme"},
    DomainPaceConfigured: {"domain": "gmail.com", "rate": "60/min"},
    DomainPaceRemoved: {"domain": "gmail.com"},
    MailHeld: {"message_id": "m-1", "lane": "mass", "why": "daily_limit",
               "reason": "deferred: server primary reached its daily limit of 200",
               "until": 1_700_000_000.0, "step": 1},
    MailReleased: {"message_id": "m-1", "lane": "transactional", "decision": DECISION,
                   "held_for": 1.5, "step": 2},
    MessageCancelled: {"message_id": "m-1", "command_id": "c-1", "by": "limiter",
                       "reason": "cancelled by ops@host"},
    QueueCommandIssued: {"message_id": "m-1", "command": "cancel", "operator": "ops@host"},
    QueueCommandApplied: {"message_id": "m-1", "command_id": "c-1", "command": "cancel",
                          "by": "limiter", "detail": "cancelled while deferred"},
    QueueCommandRefused: {"message_id": "m-1", "command_id": "c-1", "command": "cancel",
                          "by": "delivery", "reason": "m-1 is sent: nothing to cancel"},
    QuotaAsked: {"ask_id": "m-1:0", "message_id": "m-1", "server": "primary",
                 "tenant": "acme", "domains": ["gmail.com"], "lane": "mass"},
    QuotaGranted: {"ask_id": "m-1:0", "message_id": "m-1", "at": 1_700_000_000.5,
                   "reason": "paced: server primary sends at most 2/s"},
    QuotaRefused: {"ask_id": "m-1:0", "message_id": "m-1", "why": "daily_limit",
                   "reason": "deferred: server primary reached its daily limit of 10",
                   "until": 1_700_086_400.0},
    QuotasAsked: {"asks": [{"ask_id": "m-1:0", "message_id": "m-1", "server": "primary"}]},
    QuotasAnswered: {"answers": [{"type": "QuotaGranted", "ask_id": "m-1:0",
                                  "message_id": "m-1", "at": 1_700_000_000.5}]},
    UnsubscribeRequested: {"address": "bob@example.com", "tenant": "acme", "list_id": "news",
                           "via": "http", "requested_at": 1_700_000_000.0, "token_id": "t-1"},
    DkimKeyConfigured: {"domain": "shop.example", "selector": "pl2026",
                        "key_file": "/run/secrets/dkim-shop.pem", "algorithm": "rsa-sha256"},
    DkimKeyRemoved: {"domain": "shop.example"},
})
SAMPLES.update({
    ComplaintReceived: {"complaint_id": "c-1", "address": "bob@example.org",
                        "complained_at": 1_700_000_000.0, "message_id": "m-1",
                        "feedback_type": "abuse", "format": "arf",
                        "reporting_mta": "mail.yahoo.com", "user_agent": "Yahoo!-Mail-Feedback/2.0",
                        "tenant": "acme"},
    SuppressionEdited: {"address": "bob@example.org", "action": "add", "suppression_type": "manual",
                        "tenant": "acme", "list_id": "", "reason": "asked by phone",
                        "by": "ops"},
})


SAMPLES.update({
    WebhookConfigured: {"name": "crm", "url": "https://crm.example/hooks/mail",
                        "events": "sent, bounced", "secret_env": "CRM_WEBHOOK_SECRET"},
    WebhookRemoved: {"name": "crm"},
    WebhookDelivered: {"webhook": "crm", "delivery_id": "d1", "notification_id": "n1",
                       "event": "sent", "message_id": "m-1", "recipient": "bob@example.org",
                       "attempts": 2, "status": 204},
    WebhookDeadLettered: {"webhook": "crm", "delivery_id": "d1", "notification_id": "n1",
                          "event": "failed", "reason": "HTTP 503 for 24 h", "attempts": 30},
})


def test_rates_parse_and_bad_ones_are_refused() -> None:
    assert parse_rate("600/min") == 10.0
    assert parse_rate("2/s") == 2.0
    assert parse_rate("") == 0.0
    for bad in ("10", "10/day", "x/s", "0/s"):
        with pytest.raises(RateError):
            parse_rate(bad)
    with pytest.raises(InvalidEvent, match="rate"):
        OutgoingServerConfigured(**{**SAMPLES[OutgoingServerConfigured], "rate": "fast"})


def test_every_event_has_a_sample() -> None:
    assert set(SAMPLES) == set(ALL_EVENTS)


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_round_trip(cls: type[Event]) -> None:
    event = cls(**SAMPLES[cls])
    raw = encode(event)
    wire = orjson.loads(raw)
    assert "__faust" not in wire
    assert wire["type"] == cls.__name__
    assert wire["schema"] == cls.SCHEMA
    back = decode(cls, raw)
    assert type(back) is cls
    assert back.to_representation() == event.to_representation()
    # the same bytes through the multi-type decoder, and as str
    assert decode_any(REGISTRY, raw).to_representation() == wire
    assert decode(cls, raw.decode()).to_representation() == wire
    # re-encoding is stable
    assert encode(back) == raw


def test_decode_fills_base_fields() -> None:
    event = decode(OutgoingServerRemoved, b'{"name": "old"}')
    assert event.type == "OutgoingServerRemoved"
    assert event.schema == OutgoingServerRemoved.SCHEMA
    assert event.event_id and event.occurred_at > 0


@pytest.mark.parametrize(
    ("cls", "fields", "fragment"),
    [
        (SendRequested, send_fields(to="alice@example.org"), "'to' must be a list"),
        (SendRequested, send_fields(subject=42), "'subject' must be str"),
        (SendRequested, send_fields(headers=["X-A: 1"]), "'headers' must be an object"),
        (SendRequested, send_fields(send_at="soon"), "'send_at' must be float"),
        (OutgoingServerConfigured, {**SAMPLES[OutgoingServerConfigured], "port": "587"},
         "'port' must be int"),
        (OutgoingServerConfigured, {**SAMPLES[OutgoingServerConfigured], "port": True},
         "'port' must be int, got bool"),
        (OutgoingServerConfigured, {**SAMPLES[OutgoingServerConfigured], "active": 1},
         "'active' must be bool"),
        (DeliveryStarted, {**SAMPLES[DeliveryStarted], "attempt": 1.5}, "'attempt' must be int"),
    ],
)
def test_decode_rejects_wrong_types(
    cls: type[Event], fields: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(cls, orjson.dumps(fields))
    assert fragment in str(info.value)
    assert info.value.event_type == cls.__name__


@pytest.mark.parametrize("subject", ["Hi\r\nBcc: victim@example.net", "Hi\nthere", "Hi\rthere"])
def test_decode_rejects_line_breaks_in_subject(subject: str) -> None:
    with pytest.raises(InvalidEvent, match="subject contains a line break"):
        decode(SendRequested, orjson.dumps(send_fields(subject=subject)))


def test_decode_rejects_line_break_in_header_value() -> None:
    with pytest.raises(InvalidEvent, match="single-line"):
        decode(SendRequested, orjson.dumps(send_fields(headers={"X-A": "1\r\nBcc: x@y.com"})))


def test_decode_rejects_unknown_type() -> None:
    raw = orjson.dumps({**send_fields(), "type": "MailExploded"})
    with pytest.raises(InvalidEvent, match="unknown type 'MailExploded'"):
        decode_any(REGISTRY, raw)
    with pytest.raises(InvalidEvent, match="unknown type None"):
        decode_any(REGISTRY, orjson.dumps(send_fields()))
    # a known type on the wrong decoder is refused too
    with pytest.raises(InvalidEvent, match="expected 'SendRequested'"):
        decode(SendRequested, orjson.dumps({**send_fields(), "type": "RoutingDecided"}))


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (None, "empty message"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (orjson.dumps({"message_id": "m", "from_": "a@example.com"}), "missing field 'to'"),
        (orjson.dumps({**send_fields(), "surprise": 1}), "unexpected argument"),
    ],
)
def test_decode_rejects_malformed(raw: bytes | None, fragment: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        decode(SendRequested, raw)
    assert fragment in str(info.value)


# --- exported JSON Schemas ---------------------------------------------------


@pytest.fixture(scope="module")
def jsonschema() -> Any:
    import jsonschema  # a test dependency: missing is an error, not a skip

    return jsonschema


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_schema_is_valid_and_accepts_encoded_sample(cls: type[Event], jsonschema: Any) -> None:
    schema = json_schema(cls)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == cls.__name__
    assert schema["description"]
    assert schema["properties"]["type"]["const"] == cls.__name__
    assert set(schema["properties"]) == set(cls._options.fields)
    assert set(schema["required"]) == set(cls._options.fields) - set(cls._options.defaults)
    jsonschema.validate(orjson.loads(encode(cls(**SAMPLES[cls]))), schema)


def test_send_requested_schema(jsonschema: Any) -> None:
    schema = json_schema(SendRequested)
    assert schema["required"] == ["message_id", "from_", "to"]
    assert SendRequested.__doc__ and schema["description"].startswith("A service asked")
    assert schema["properties"]["schema"]["const"] == SendRequested.SCHEMA
    validator = jsonschema.Draft202012Validator(schema)

    wire = orjson.loads(encode(SendRequested(**send_fields())))
    assert not list(validator.iter_errors(wire))
    # the minimal JSON another language would publish
    validator.validate({"message_id": "m-2", "from_": "a@example.com", "to": ["b@example.org"],
                        "text": "x"})

    no_to = {k: v for k, v in wire.items() if k != "to"}
    errors = list(validator.iter_errors(no_to))
    assert any("'to' is a required property" in e.message for e in errors)
    for bad in (
        {**wire, "to": "b@example.org"},
        {**wire, "type": "RoutingDecided"},
        {**wire, "schema": SendRequested.SCHEMA + 1},
        {**wire, "headers": {"X-A": 1}},
        {**wire, "surprise": True},
    ):
        assert not validator.is_valid(bad), bad


def test_export_all_writes_files(tmp_path: Path, jsonschema: Any) -> None:
    out = tmp_path / "nested" / "dir"
    written = export_all(out)
    names = {p.name for p in written}
    assert names == {f"{c.__name__}.schema.json" for c in ALL_EVENTS} | {"index.json"}
    assert written[-1].name == "index.json"
    index = json.loads((out / "index.json").read_text())
    assert [e["name"] for e in index["events"]] == [c.__name__ for c in ALL_EVENTS]
    for entry in index["events"]:
        schema = json.loads((out / entry["file"]).read_text())
        assert schema == json_schema(REGISTRY[entry["name"]])
    # deterministic: a second export writes identical bytes
    first = {p.name: p.read_bytes() for p in written}
    export_all(out)
    assert {p.name: p.read_bytes() for p in written} == first


def test_export_command_writes_one_file_per_event(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = CliRunner().invoke(schemas_group, ["export", str(out)])
    assert result.exit_code == 0, result.output
    printed = result.output.split()
    assert len(printed) == len(ALL_EVENTS) + 1
    files = sorted(p.name for p in out.glob("*.schema.json"))
    assert files == sorted(f"{c.__name__}.schema.json" for c in ALL_EVENTS)
    assert {Path(p).name for p in printed} == set(files) | {"index.json"}
    assert (out / "index.json").exists()


def test_export_command_reports_unwritable_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = CliRunner().invoke(schemas_group, ["export", str(blocker / "sub")])
    assert result.exit_code != 0
    assert "cannot write schemas" in result.output


def test_schemas_group_is_on_the_main_command() -> None:
    from postlane.cli import main

    assert main.commands.get("schemas") is schemas_group
