"""Bounces to blacklist to suppression, end to end through the embedded
broker: one `postlane worker` process running the inbound router, the
bounce and blacklist processors, the router, delivery and the status
projection, with a real SMTP server on loopback as the outgoing server.

Five bounce mails for one address, received over eight days (four handed
to the bounce-mail topic, one through the inbound router as a mail to the
bounce address), blacklist it; a mail to it is then suppressed (status
``suppressed``, nothing at the SMTP server) while the other recipient of a
second mail gets it; a 5xx at delivery time becomes a bounce; ``postlane
replay blacklist`` agrees with the live table; ``postlane blacklist
why/list/remove`` work and a removed address is mailed again.
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
from kafka import KafkaProducer

from postlane.cli import main
from postlane.configfile import load, plan
from postlane.configops import publish_config
from postlane.publisher import Publisher
from postlane.statusview import wait_final
from processors.config.view import ConfigView
from processors.inbound.mail import inbound_key
from schemas import (
    BlacklistChanged,
    BounceMailReceived,
    BounceRecorded,
    DeliveryStarted,
    EventDeadLettered,
    InboundMailReceived,
    decode,
)
from streams.client import ensure_topics, publish, read_topic
from streams.embedded import free_port
from streams.topics import BLACKLIST, BOUNCE_MAIL, BOUNCES, DEAD_LETTER, DELIVERY, INBOUND

from .harness import Worker, isolated_settings, settings_env, wait_for

pytestmark = pytest.mark.e2e

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "bounces"
DAY = 86400.0
DEAD, ALIVE, GONE = "dead@example.org", "ok@example.org", "gone@example.org"
AGAIN = "again@example.org"  # bounces, then writes to us: its count restarts
STRANGER = "stranger@example.org"  # named in a bounce of a mail it never got


class Sink:
    """Accepts every mail but GONE's (550 5.1.1 at RCPT); keeps what it got."""

    def __init__(self) -> None:
        self.got: list[tuple[list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if address.lower() == GONE:
            return f"550 5.1.1 <{GONE}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.got.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def recipients(self) -> list[str]:
        with self.lock:
            return [r.lower() for rcpts, _ in self.got for r in rcpts]


def bounce_mail(i: int, rcpt: str = DEAD) -> bytes:
    """A real Exim bounce (from the corpus) re-addressed to ``rcpt``."""
    raw = (CORPUS / "exim-user-unknown.eml").read_bytes()
    return (raw.replace(b"nobody1@dest.test", rcpt.encode())
            .replace(b"ex-unknown-0101", f"old-{i}".encode())
            .replace(b"mycompany.test", b"mycompany.com"))


def cli(s, *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=settings_env(s), catch_exceptions=False)


def blacklisted(s) -> dict[str, BlacklistChanged]:
    out: dict[str, BlacklistChanged] = {}
    for rec in read_topic(s, BLACKLIST.full(s), idle=0.2):
        ev = decode(BlacklistChanged, rec.value)
        out[ev.address] = ev
    return {a: e for a, e in out.items() if e.blacklisted}


def test_bounces_blacklist_suppression_and_replay(broker, tmp_path: Path) -> None:
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
[[aliases]]
alias = "sales"
target = "crm.lead"
""")
    publish_config(s, plan(ConfigView(), load(cfg)))
    worker = Worker(s, "inbound", "bounces", "blacklist", "router", "limiter", "delivery", "status",
                    log=tmp_path / "worker.log").start()
    try:
        t0 = time.time() - 10 * DAY
        # the mails the bounces name were sent (a bounce counts only for its
        # mail's recipients: processors/bounces/attribution.py)
        publish(s, DELIVERY, [(f"old-{i}", DeliveryStarted(
            message_id=f"old-{i}", attempt=1, server="primary",
            recipients=[AGAIN if i >= 10 else DEAD])) for i in (*range(5), *range(10, 15))])
        # a bounce naming DEAD's mail for another address, and one naming a mail
        # never sent: recorded, not counted
        for key, raw in (("st-1", bounce_mail(0, STRANGER)), ("st-2", bounce_mail(99, DEAD))):
            publish(s, BOUNCE_MAIL, [(key, BounceMailReceived(
                bounce_mail_id=key, mail=base64.b64encode(raw).decode(),
                received_at=t0, source="test"))])
        for i, day in enumerate((0, 2, 4, 6)):
            raw = bounce_mail(i)
            publish(s, BOUNCE_MAIL, [(f"bm-{i}", BounceMailReceived(
                bounce_mail_id=f"bm-{i}", mail=base64.b64encode(raw).decode(),
                received_at=t0 + day * DAY, source="test"))])
        for i, day in enumerate((0, 2, 4, 6)):
            raw = bounce_mail(10 + i, AGAIN)
            publish(s, BOUNCE_MAIL, [(f"ag-{i}", BounceMailReceived(
                bounce_mail_id=f"ag-{i}", mail=base64.b64encode(raw).decode(),
                received_at=t0 + day * DAY, source="test"))])
        reply = (f"From: Again <{AGAIN}>\r\nTo: sales@mycompany.com\r\nSubject: order\r\n"
                 "Message-ID: <again-1@example.org>\r\n\r\nI am still here.\r\n").encode()
        inbound = InboundMailReceived(
            inbound_id="in-again", source="smtp", mail=base64.b64encode(reply).decode(),
            size=len(reply), message_id="<again-1@example.org>",
            envelope_to=["sales@mycompany.com"], received_at=t0 + 7 * DAY)
        publish(s, INBOUND, [(inbound_key(inbound.message_id, inbound.inbound_id), inbound)])
        producer_ = KafkaProducer(bootstrap_servers=s.bootstrap)
        producer_.send(BOUNCE_MAIL.full(s), key=b"junk", value=b"{not json").get(10)
        producer_.close()
        raw = bounce_mail(14, AGAIN)
        publish(s, BOUNCE_MAIL, [("ag-4", BounceMailReceived(
            bounce_mail_id="ag-4", mail=base64.b64encode(raw).decode(),
            received_at=t0 + 9 * DAY, source="test"))])
        time.sleep(1)
        assert DEAD not in blacklisted(s)
        # the fifth, eight days after the first, through the inbound router
        raw = bounce_mail(4)
        inbound = InboundMailReceived(
            inbound_id="in-bounce-5", source="smtp", mail=base64.b64encode(raw).decode(),
            size=len(raw), message_id="<E1xV5gL-0007tE-2f@exim-relay.mycompany.com>",
            envelope_to=["bounce+old-4@mycompany.com"], received_at=t0 + 8 * DAY)
        publish(s, INBOUND, [(inbound_key(inbound.message_id, inbound.inbound_id), inbound)])
        got = wait_for(lambda: blacklisted(s).get(DEAD), timeout=120,
                       what=f"{DEAD} blacklisted")
        assert len(got.bounces) == 5 and not got.manual
        unattributed = {(b.address, b.message_id): b.unattributed
                        for b in (decode(BounceRecorded, r.value)
                                  for r in read_topic(s, BOUNCES.full(s), idle=0.2)
                                  if orjson.loads(r.value).get("type") == "BounceRecorded")
                        if b.unattributed}
        assert set(unattributed) == {(STRANGER, "old-0"), (DEAD, "old-99")}, unattributed
        assert f"{STRANGER} was not a recipient of mail 'old-0' (sent to {DEAD})" in \
            unattributed[(STRANGER, "old-0")]
        assert "no mail 'old-99' was delivered" in unattributed[(DEAD, "old-99")]
        assert STRANGER not in blacklisted(s)
        assert {b["message_id"] for b in got.bounces} == {f"old-{i}" for i in range(5)}
        assert "8 days apart" in got.reason
        time.sleep(2)  # the router's view follows the blacklist topic

        with Publisher(settings=s) as pub:
            m1 = pub.send(from_="sales@mycompany.com", to=[DEAD], subject="one", text="x")
            m2 = pub.send(from_="sales@mycompany.com", to=[f"Dead <{DEAD}>", ALIVE],
                          subject="two", text="x")
            m3 = pub.send(from_="sales@mycompany.com", to=[GONE], subject="three", text="x")
        st1 = wait_final(s, m1, 60)
        assert st1 is not None and st1["state"] == "suppressed", st1
        assert "blacklisted" in st1["reason"]
        assert st1["recipients"][DEAD]["state"] == "suppressed"
        st2 = wait_final(s, m2, 60)
        assert st2 is not None and st2["state"] == "sent", st2
        assert {a.lower(): r["state"] for a, r in st2["recipients"].items()} == {
            DEAD: "suppressed", ALIVE: "sent"}
        st3 = wait_final(s, m3, 60)
        assert st3 is not None and st3["state"] == "failed"
        assert sink.recipients() == [ALIVE]  # nothing for the blacklisted address

        # the 5xx at delivery time is a bounce of GONE
        def delivery_bounce() -> BounceRecorded | None:
            for rec in read_topic(s, BOUNCES.full(s), idle=0.2):
                data = orjson.loads(rec.value)
                if data.get("type") == "BounceRecorded" and data["address"] == GONE:
                    return decode(BounceRecorded, rec.value)
            return None
        b = wait_for(delivery_bounce, timeout=60, what="the delivery-time bounce")
        assert (b.source, b.message_id, b.status, b.reason, b.hard) == (
            "delivery", m3, "5.1.1", "unknown_user", True)

        # mail from AGAIN (to an alias, through the inbound router) restarted its count
        def again() -> dict | None:
            r = cli(s, "blacklist", "why", AGAIN, "--json")
            st = orjson.loads(r.output) if r.exit_code == 0 else None
            return st if st and len(st["bounces"]) == 5 and st["reset_at"] else None
        st = wait_for(again, timeout=60, what=f"{AGAIN}'s bounces and reset")
        assert not st["blacklisted"]
        # (the fifth bounce may overtake the reply and blacklist it for a moment)
        wait_for(lambda: AGAIN not in blacklisted(s), timeout=30, what=f"{AGAIN} not listed")
        assert [b["counted"] for b in st["bounces"]] == [False] * 4 + [True]
        # not counted because of the reply: "reset: mail was received ..." when
        # the reply was folded after the bounce, "before mail was received
        # ..." when before it (the two topics are read in any order)
        assert all("mail was received from the address" in b["why"]
                   for b in st["bounces"][:4]), [b["why"] for b in st["bounces"]]

        dead = [decode(EventDeadLettered, r.value) for r in read_topic(s, DEAD_LETTER.full(s),
                                                                        idle=0.2)]
        assert [(d.processor, d.key) for d in dead] == [("bounces", "junk")]

        # replay from offset 0 agrees with the live table
        res = wait_for(lambda: (r := cli(s, "replay", "blacklist", "--json")).exit_code == 0
                       and r, timeout=30, what="replay agreeing with the live table")
        out = orjson.loads(res.output)
        assert out["agree"] and out["live_table"]
        assert [e["address"] for e in out["blacklist"]] == [DEAD]
        assert len(out["blacklist"][0]["counted"]) == 5 and out["addresses"] == 4  # + STRANGER
        res = cli(s, "blacklist", "why", DEAD)
        assert res.exit_code == 0 and res.output.count("counts 1") == 5, res.output
        res = cli(s, "blacklist", "list")
        assert DEAD in res.output and "bounces" in res.output
        before_removal = time.time()
        time.sleep(1.5)

        res = cli(s, "blacklist", "remove", DEAD, "--reason", "new mailbox", "--wait", "30")
        assert res.exit_code == 0 and "not blacklisted" in res.output, res.output
        time.sleep(2)
        with Publisher(settings=s) as pub:
            m4 = pub.send(from_="sales@mycompany.com", to=[DEAD], subject="four", text="x")
        st4 = wait_final(s, m4, 60)
        assert st4 is not None and st4["state"] == "sent"
        assert DEAD in sink.recipients()

        res = wait_for(lambda: (r := cli(s, "replay", "blacklist")).exit_code == 0 and r,
                       timeout=30, what="replay agreeing after the removal")
        assert "agrees with the live table" in res.output
        # as of before the removal: the address was blacklisted then
        res = cli(s, "replay", "blacklist", "--as-of", f"{before_removal:.3f}", "--json")
        out = orjson.loads(res.output)
        assert [e["address"] for e in out["blacklist"]] == [DEAD] and out["after"] >= 1
        # compared with the live table and the blacklist topic as they were then
        assert res.exit_code == 0 and out["agree"], out
    finally:
        worker.stop()
        smtp.stop()
    log = worker.log_text()
    assert "Traceback" not in log, log[-3000:]
