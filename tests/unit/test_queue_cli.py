"""``postlane queue|retry|send-now|cancel|ack`` without a broker: argument
validation, the listing's selection and rendering, the answer lines and exit
codes (``queueops.issue`` / ``list_queue`` replaced)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from postlane import queueops as ops
from postlane.cli import main
from postlane.cli.queue_cmd import render
from schemas import MessageStatusChanged, QueueCommandApplied, QueueCommandRefused
from streams.client import BrokerUnavailable

T0 = 1_795_000_000.0


def mail(mid: str, state: str, at: float, **kw: Any) -> ops.QueuedMail:
    return ops.QueuedMail(message_id=mid, state=state, updated_at=at, **kw)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


# --- the listing ----------------------------------------------------------------------------------


def test_latest_keeps_the_last_change_per_mail() -> None:
    changes = [
        MessageStatusChanged(message_id="m-1", state="queued", occurred_at=T0),
        MessageStatusChanged(message_id="m-2", state="queued", occurred_at=T0 + 1),
        MessageStatusChanged(message_id="m-1", state="failed", reason="550 no", server="p",
                             attempt=2, acknowledged=True, occurred_at=T0 + 2),
    ]
    got = ops.latest(changes)
    assert got["m-1"].to_dict() == {
        "message_id": "m-1", "state": "failed", "reason": "550 no", "server": "p",
        "attempt": 2, "updated_at": T0 + 2, "acknowledged": True, "subject": "",
        "recipients": {},
    }
    assert got["m-2"].state == "queued"


MAILS = [
    mail("m-sent", "sent", T0 + 5, server="primary"),
    mail("m-acked", "failed", T0 + 4, server="primary", acknowledged=True),
    mail("m-failed", "failed", T0 + 3, server="backup"),
    mail("m-deferred", "deferred", T0 + 2, server="primary"),
    mail("m-queued", "queued", T0 + 1, server="primary"),
    mail("m-cancelled", "cancelled", T0 + 6, server="primary"),
]


def ids(mails: list[ops.QueuedMail]) -> list[str]:
    return [m.message_id for m in mails]


def test_default_selection_is_open_mail_and_unacknowledged_failures_newest_last() -> None:
    assert ids(ops.select(MAILS)) == ["m-queued", "m-deferred", "m-failed"]


def test_all_shows_every_state_and_acknowledged_failures() -> None:
    assert ids(ops.select(MAILS, show_all=True)) == [
        "m-queued", "m-deferred", "m-failed", "m-acked", "m-sent", "m-cancelled"]


def test_state_filter_hides_acknowledged_unless_all() -> None:
    assert ids(ops.select(MAILS, ["failed"])) == ["m-failed"]
    assert ids(ops.select(MAILS, ["failed"], show_all=True)) == ["m-failed", "m-acked"]
    assert ids(ops.select(MAILS, ["sent", "cancelled"])) == ["m-sent", "m-cancelled"]


def test_server_filter_and_limit_keeps_the_newest() -> None:
    assert ids(ops.select(MAILS, server="primary")) == ["m-queued", "m-deferred"]
    assert ids(ops.select(MAILS, show_all=True, limit=2)) == ["m-sent", "m-cancelled"]


def test_render_is_one_line_per_mail_with_the_reason() -> None:
    text = render([
        mail("m-1", "failed", T0, server="primary", attempt=2, subject="Invoice 42",
             reason="550 5.1.1 no such user (server primary)"),
        mail("m-22", "deferred", T0 + 60, subject="x" * 50, acknowledged=False,
             reason="deferred: daily limit"),
        mail("m-3", "failed", T0 + 120, acknowledged=True),
    ])
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "STATE", "SERVER", "ATT", "UPDATED", "(UTC)", "SUBJECT",
                                "REASON"]
    assert lines[1].startswith("m-1   failed   ")
    assert "2026-11-18 11:06" in lines[1]
    assert lines[1].endswith("Invoice 42                      550 5.1.1 no such user "
                             "(server primary)")
    assert ("x" * 29 + "…") in lines[2] and lines[2].endswith("deferred: daily limit")
    assert "failed (acked)" in lines[3] and lines[3].rstrip().endswith("-")


def test_queue_cli_lists_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(s: Any, states: Any, server: str, show_all: bool, limit: int) -> Any:
        calls.append((tuple(states), server, show_all, limit))
        return [mail("m-1", "failed", T0, reason="550 no")]

    monkeypatch.setattr(ops, "list_queue", fake)
    out = invoke("queue", "--state", "failed", "--state", "deferred", "--server", "p",
                 "--limit", "5", "--all")
    assert out.exit_code == 0, out.output
    assert calls == [(("failed", "deferred"), "p", True, 5)]
    assert "m-1" in out.output and "550 no" in out.output
    out = invoke("queue", "--json")
    assert out.exit_code == 0
    assert orjson.loads(out.output)[0]["message_id"] == "m-1"
    assert calls[-1] == ((), "", False, 50)


def test_queue_cli_empty_and_bad_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "list_queue", lambda *a: [])
    out = invoke("queue")
    assert out.exit_code == 0 and "no mail to show (--all shows every state)" in out.output
    assert invoke("queue", "--state", "lost").exit_code == 2
    out = invoke("queue", "--limit", "-1")
    assert out.exit_code == 2 and "--limit" in out.output


def test_queue_cli_without_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*a: Any) -> Any:
        raise BrokerUnavailable("no Kafka broker at 127.0.0.1:1")

    monkeypatch.setattr(ops, "list_queue", down)
    out = invoke("queue")
    assert out.exit_code == 3 and "no Kafka broker" in out.output


# --- commands -------------------------------------------------------------------------------------


def test_commands_for_one_per_distinct_id() -> None:
    cmds = ops.commands_for("send_now", ["m-1", " m-2 ", "m-1"], "ops@host", note="why")
    assert [(c.message_id, c.command, c.operator, c.note) for c in cmds] == [
        ("m-1", "send_now", "ops@host", "why"), ("m-2", "send_now", "ops@host", "why")]
    assert len({c.event_id for c in cmds}) == 2
    with pytest.raises(ValueError):
        ops.commands_for("delete", ["m-1"], "ops@host")
    with pytest.raises(ValueError):
        ops.commands_for("retry", [""], "ops@host")
    with pytest.raises(ValueError):
        ops.commands_for("retry", [], "ops@host")


def test_operator_is_user_at_host() -> None:
    user, _, host = ops.operator().partition("@")
    assert user and host


def test_answer_lines() -> None:
    applied = ops.answer_of(QueueCommandApplied(
        message_id="m-1", command_id="c1", command="cancel", by="limiter",
        detail="cancelled while deferred"))
    refused = ops.answer_of(QueueCommandRefused(
        message_id="m-1", command_id="c2", command="send_now", by="delivery",
        reason="m-1 is sent: nothing to send"))
    assert applied is not None and refused is not None
    assert applied.ok and not refused.ok
    assert applied.line(30) == "m-1: cancel applied (limiter): cancelled while deferred"
    assert refused.line(30) == "m-1: send-now refused (delivery): m-1 is sent: nothing to send"
    late = ops.Answer("m-1", "ack", "c3", "timeout")
    assert late.line(30) == "m-1: no answer within 30 s: is the status worker running?"
    late = ops.Answer("m-1", "retry", "c4", "timeout")
    assert late.line(2.5) == ("m-1: no answer within 2.5 s: is the limiter/delivery worker "
                              "running?")


class FakeIssue:
    def __init__(self, outcomes: dict[str, str]) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, tuple[str, ...], str, float]] = []

    def __call__(self, s: Any, command: str, message_ids: Any, note: str = "",
                 timeout: float = 30.0) -> list[ops.Answer]:
        self.calls.append((command, tuple(message_ids), note, timeout))
        return [ops.Answer(m, command, f"c-{m}", self.outcomes[m], "status",
                           "why" if self.outcomes[m] != "timeout" else "")
                for m in message_ids]


@pytest.mark.parametrize("cli,command", [
    ("retry", "retry"), ("cancel", "cancel"), ("ack", "ack"),
])
def test_every_command_applied_exits_0(monkeypatch: pytest.MonkeyPatch, cli: str,
                                       command: str) -> None:
    fake = FakeIssue({"m-1": "applied", "m-2": "applied"})
    monkeypatch.setattr(ops, "issue", fake)
    out = invoke(cli, "m-1", "m-2", "--note", "hi", "--timeout", "5")
    assert out.exit_code == 0, out.output
    assert fake.calls == [(command, ("m-1", "m-2"), "hi", 5.0)]
    what = command.replace("_", "-")
    assert out.output.splitlines() == [f"m-1: {what} applied (status): why",
                                       f"m-2: {what} applied (status): why"]


def test_send_now_takes_one_id(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeIssue({"m-1": "applied"})
    monkeypatch.setattr(ops, "issue", fake)
    out = invoke("send-now", "m-1")
    assert out.exit_code == 0, out.output
    assert fake.calls == [("send_now", ("m-1",), "", 30.0)]
    assert invoke("send-now", "m-1", "m-2").exit_code == 2


def test_a_refusal_or_no_answer_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "issue", FakeIssue({"m-1": "applied", "m-2": "refused",
                                                 "m-3": "timeout"}))
    out = invoke("ack", "m-1", "m-2", "m-3")
    assert out.exit_code == 1
    assert out.output.splitlines() == [
        "m-1: ack applied (status): why",
        "m-2: ack refused (status): why",
        "m-3: no answer within 30 s: is the status worker running?",
    ]
    out = invoke("ack", "m-2", "--json")
    assert out.exit_code == 1
    assert orjson.loads(out.output)[0]["outcome"] == "refused"


@pytest.mark.parametrize("args,words", [
    (["retry"], "Missing argument"),
    (["cancel"], "Missing argument"),
    (["ack"], "Missing argument"),
    (["send-now"], "Missing argument"),
    (["ack", ""], "a message id is empty"),
    (["ack", "m-1", "--timeout", "0"], "--timeout must be more than 0"),
])
def test_bad_arguments_exit_2_without_publishing(monkeypatch: pytest.MonkeyPatch,
                                                  args: list[str], words: str) -> None:
    fake = FakeIssue({})
    monkeypatch.setattr(ops, "issue", fake)
    out = invoke(*args)
    assert out.exit_code == 2 and words in out.output
    assert fake.calls == []


def test_command_without_a_broker_exits_3(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*a: Any, **kw: Any) -> Any:
        raise BrokerUnavailable("no Kafka broker at 127.0.0.1:1")

    monkeypatch.setattr(ops, "issue", down)
    out = invoke("cancel", "m-1")
    assert out.exit_code == 3 and "no Kafka broker" in out.output
