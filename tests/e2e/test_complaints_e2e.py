"""Complaints to suppression, end to end through the embedded broker: one
`postlane worker` process running the inbound router, the bounce and
blacklist processors, the router, delivery and the status projection, with a
real SMTP server on loopback as the outgoing server.

Two of our mails are sent and delivered; an ARF feedback report (RFC 5965)
about each comes back, one handed to the bounce-mail topic, one through the
inbound router as a mail to the bounce address. Each complainer is then
suppressed at once (type ``complaint``): the next mail to it is
``suppressed`` with the type named in the reason and nothing reaches the SMTP
server. ``postlane suppressions list/why/add/remove`` work against the live
table: a manual suppression stops the next mail, a removed complaint lets the
next mail go, and ``postlane replay blacklist`` agrees with the live table.
"""

from __future__ import annotations

import base64
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from postlane.cli import main
from postlane.configfile import load, plan
from postlane.configops import publish_config
from postlane.publisher import Publisher
from postlane.statusview import wait_final
from processors.config.view import ConfigView
from processors.inbound.mail import inbound_key
from schemas import BounceMailReceived, ComplaintReceived, InboundMailReceived, decode
from streams.client import ensure_topics, publish, read_topic
from streams.embedded import free_port
from streams.topics import BOUNCE_MAIL, BOUNCES, INBOUND

from .harness import Worker, isolated_settings, settings_env, wait_for

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bounces"
CLEO, DAN = "cleo@example.org", "dan@example.org"  # complain (bounce-mail topic, inbound)
ALIVE, PHONE = "ok@example.org", "phone@example.org"  # never complains; suppressed by ops


class Sink:
    """Accepts every mail; keeps the recipients it got."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.got.extend(r.lower() for r in envelope.rcpt_tos)
        return "250 OK"

    def recipients(self) -> list[str]:
        with self.lock:
            return list(self.got)


def arf(mid: str, complainer: str) -> bytes:
    """The corpus's RFC 5965 report, about our mail ``mid`` and by ``complainer``."""
    raw = (CORPUS / "arf-rfc5965-headers.eml").read_bytes()
    return (raw.replace(b"arf-1025", mid.encode()).replace(b"cleo@example.com",
                                                           complainer.encode())
            .replace(b"mycompany.test", b"mycompany.com"))


def cli(s: Any, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=settings_env(s), catch_exceptions=False)


def test_a_complaint_suppresses_the_address_and_ops_edit_suppressions(
        broker: Any, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    sink = Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    cfg = tmp_path / "postlane.toml"
    cfg.write_text(f"""
[settings]
catchall_domain = "mycompany.com"
[[servers]]
name = "primary"
host = "127.0.0.1"
port = {port}
security = "none"
from_filter = "mycompany.com"
""")
    publish_config(s, plan(ConfigView(), load(cfg)))
    worker = Worker(s, "inbound", "bounces", "blacklist", "router", "limiter", "delivery",
                    "status", log=tmp_path / "worker.log").start()

    sent: list[str] = []  # the recipients of the mails whose final state is sent

    def send(to: str, subject: str) -> dict[str, Any]:
        with Publisher(settings=s) as pub:
            mid = pub.send(from_="news@mycompany.com", to=[to], subject=subject, text="x")
        st = wait_final(s, mid, 60)
        assert st is not None, f"no final state for {mid}"
        if st["state"] == "sent":
            sent.append(to)
        return {"id": mid, **st}

    try:
        # our mails, really delivered (delivery publishes their DeliveryStarted)
        first = {a: send(a, "offer 1") for a in (CLEO, DAN, ALIVE)}
        assert {a: m["state"] for a, m in first.items()} == dict.fromkeys(first, "sent")
        assert sorted(sink.recipients()) == sorted(first)
        # CLEO's complaint through the bounce-mail topic, DAN's through the inbound
        # router (a mail to the bounce address of the mail complained about)
        raw = arf(first[CLEO]["id"], CLEO)
        publish(s, BOUNCE_MAIL, [("fbl-1", BounceMailReceived(
            bounce_mail_id="fbl-1", mail=base64.b64encode(raw).decode(),
            received_at=time.time(), source="test"))])
        raw = arf(first[DAN]["id"], DAN)
        inbound = InboundMailReceived(
            inbound_id="in-fbl-2", source="smtp", mail=base64.b64encode(raw).decode(),
            size=len(raw), message_id="<arf.5965.0001@example.com>",
            envelope_to=[f"bounce+{first[DAN]['id']}@mycompany.com"], received_at=time.time())
        publish(s, INBOUND, [(inbound_key(inbound.message_id, inbound.inbound_id), inbound)])

        def complaints() -> dict[str, ComplaintReceived]:
            return {c.address: c for c in (decode(ComplaintReceived, r.value)
                                           for r in read_topic(s, BOUNCES.full(s), idle=0.2)
                                           if orjson.loads(r.value).get("type")
                                           == "ComplaintReceived")}
        got = wait_for(lambda: found if len(found := complaints()) == 2 else None,
                       timeout=60, what="both complaints recorded")
        assert {a: c.message_id for a, c in got.items()} == {
            CLEO: first[CLEO]["id"], DAN: first[DAN]["id"]}

        # suppressed at once (one complaint is enough), type complaint, every tenant
        def listed() -> list[dict[str, Any]] | None:
            r = cli(s, "suppressions", "list", "--type", "complaint", "--json")
            rows = orjson.loads(r.output) if r.exit_code == 0 else []
            return rows if {x["address"] for x in rows} == {CLEO, DAN} else None
        rows = wait_for(listed, timeout=60, what="both complainers suppressed")
        assert {(x["type"], x["tenant"]) for x in rows} == {("complaint", "")}

        # the next mail to a complainer is suppressed, the type named in the reason
        def next_suppressed(addr: str) -> dict[str, Any] | None:
            st = send(addr, "offer 2")
            return st if st["state"] == "suppressed" else None
        for addr in (CLEO, DAN):
            st = wait_for(lambda a=addr: next_suppressed(a), timeout=60, interval=2.0,
                          what=f"the next mail to {addr} suppressed")
            assert f"{addr}: complaint (every tenant): complaint (feedback-type abuse" \
                in st["reason"], st["reason"]
            assert st["recipients"][addr]["state"] == "suppressed"
        assert send(ALIVE, "offer 2")["state"] == "sent"
        # a suppressed mail reaches no server: the sink got exactly the sent ones
        assert sorted(sink.recipients()) == sorted(sent)

        res = cli(s, "suppressions", "why", CLEO)
        assert res.exit_code == 0 and "complaint (every tenant)" in res.output, res.output
        res = cli(s, "suppressions", "why", CLEO, "--json")
        out = orjson.loads(res.output)
        assert [e["type"] for e in out["suppressions"]] == ["complaint"]

        # ops: a manual suppression stops the next mail to PHONE
        res = cli(s, "suppressions", "add", PHONE, "--reason", "asked by phone", "--wait", "30")
        assert res.exit_code == 0 and "manual (every tenant): added by" in res.output \
            and "asked by phone" in res.output, res.output
        res = cli(s, "suppressions", "list", "--type", "manual", "--json")
        assert [x["address"] for x in orjson.loads(res.output)] == [PHONE]
        st = wait_for(lambda: next_suppressed(PHONE), timeout=60, interval=2.0,
                      what=f"the next mail to {PHONE} suppressed")
        assert f"{PHONE}: manual (every tenant): added by" in st["reason"] \
            and "asked by phone" in st["reason"], st["reason"]
        res = cli(s, "suppressions", "why", PHONE)
        assert res.exit_code == 0 and "asked by phone" in res.output, res.output

        # ops: the complaint lifted, CLEO is mailed again
        res = cli(s, "suppressions", "remove", CLEO, "--type", "complaint",
                  "--reason", "re-subscribed", "--wait", "30")
        assert res.exit_code == 0 and "no suppression left" in res.output, res.output

        def next_sent() -> dict[str, Any] | None:
            st = send(CLEO, "offer 3")
            return st if st["state"] == "sent" else None
        wait_for(next_sent, timeout=60, interval=2.0, what=f"the next mail to {CLEO} sent")
        assert sorted(sink.recipients()) == sorted(sent) and sent.count(CLEO) >= 2
        res = cli(s, "suppressions", "list", "--type", "complaint", "--json")
        assert [x["address"] for x in orjson.loads(res.output)] == [DAN]

        # replay from offset 0 rebuilds the suppressions and agrees with the live table
        res = wait_for(lambda: (r := cli(s, "replay", "blacklist", "--json")).exit_code == 0
                       and r, timeout=30, what="replay agreeing with the live table")
        out = orjson.loads(res.output)
        assert out["agree"] and out["live_table"], out
    finally:
        worker.stop()
        smtp.stop()
    log = worker.log_text()
    assert "Traceback" not in log, log[-3000:]
