"""``ack`` and ``postlane queue`` end to end: `postlane worker status` as its
own process on the shared session broker (own topic and group prefix), a
failed mail's events published by hand (no outgoing server), the command
issued with queueops and answered by the status processor, and the listing
read back from the status topic."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from postlane import queueops as ops
from postlane.cli import main
from postlane.statusview import read_status, wait_final
from schemas import QueueCommandApplied, QueueCommandRefused, RoutingDecided, SendRequested
from streams.client import ensure_topics, publish
from streams.embedded import EmbeddedBroker, free_port
from streams.settings import Settings
from streams.topics import COMMAND_RESULTS, ROUTING_DECIDED, SEND_REQUESTED

from .harness import Worker, isolated_settings, read_events, settings_env

pytestmark = pytest.mark.e2e

T0 = 1_795_000_000.0
WHO = "ops@e2e"


def publish_failed_mail(s: Settings, mid: str) -> None:
    req = SendRequested(message_id=mid, from_="admin@nowhere.test", to=["bob@dest.test"],
                        subject=f"Invoice {mid}", text="hi", occurred_at=T0)
    routing = RoutingDecided(
        message_id=mid, outcome="no_server", server="", header_from="", envelope_from="",
        rule="none", reason="no outgoing server can send from admin@nowhere.test",
        request=req.to_representation(), occurred_at=T0 + 1)
    publish(s, SEND_REQUESTED, [(mid, req)])
    publish(s, ROUTING_DECIDED, [(mid, routing)])


def test_ack_hides_a_failure_from_the_queue(broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    mid, other = "e2e-ack-1", "e2e-ack-2"
    w = Worker(s, "status", log=tmp_path / "worker.log",
               extra_env={"POSTLANE_WEB_PORT": str(free_port())}).start()
    try:
        publish_failed_mail(s, mid)
        publish_failed_mail(s, other)
        for m in (mid, other):
            status = wait_final(s, m, timeout=60)
            assert status is not None, w.log_text()[-4000:]
            assert status["state"] == "failed" and not status["acknowledged"]

        listed = ops.list_queue(s, ["failed"])
        assert [m.message_id for m in listed] == [mid, other]
        assert listed[0].subject == f"Invoice {mid}"
        assert listed[0].reason == "no outgoing server can send from admin@nowhere.test"

        (first,) = ops.issue(s, "ack", [mid], who=WHO, note="known issue", timeout=60)
        assert (first.outcome, first.by) == ("applied", "status"), w.log_text()[-4000:]
        assert f"acknowledged by {WHO}" in first.text

        again, unknown = ops.issue(s, "ack", [mid, "e2e-no-such-mail"], who=WHO, timeout=30)
        assert again.outcome == "refused"
        assert again.text == f"{mid} was already acknowledged"
        assert again.line(30) == (f"{mid}: ack refused (status): {mid} was already "
                                  "acknowledged")
        assert unknown.outcome == "refused"
        assert unknown.text == "e2e-no-such-mail is unknown to the status projection"

        # the listing hides the acknowledged failure unless --all
        assert [m.message_id for m in ops.list_queue(s, ["failed"])] == [other]
        every = ops.list_queue(s, ["failed"], show_all=True)
        # newest update last: the ack (now) is newer than the other failure (T0)
        assert [(m.message_id, m.acknowledged) for m in every] == [(other, False), (mid, True)]
        status = read_status(s, mid)
        assert status is not None
        assert (status["state"], status["acknowledged"]) == ("failed", True)
    finally:
        w.stop()
        assert w.proc is not None and w.proc.returncode == 0, w.log_text()[-4000:]

    answers = [ev for _, ev in read_events(s, COMMAND_RESULTS, {
        "QueueCommandApplied": QueueCommandApplied, "QueueCommandRefused": QueueCommandRefused})]
    assert sorted(type(a).__name__ for a in answers) == [
        "QueueCommandApplied", "QueueCommandRefused", "QueueCommandRefused"]

    env = {k: v for k, v in settings_env(s).items() if k.startswith("POSTLANE_")}
    runner = CliRunner()
    out = runner.invoke(main, ["queue", "--state", "failed"], env=env)
    assert out.exit_code == 0, out.output
    assert other in out.output and mid not in out.output
    out = runner.invoke(main, ["queue", "--state", "failed", "--all", "--json"], env=env)
    assert out.exit_code == 0, out.output
    assert [(m["message_id"], m["acknowledged"]) for m in orjson.loads(out.output)] == [
        (other, False), (mid, True)]
    out = runner.invoke(main, ["ack", other, "--timeout", "1"], env=env)  # no worker now
    assert out.exit_code == 1
    assert out.output == f"{other}: no answer within 1 s: is the status worker running?\n"
