"""The inbound router end to end through the embedded broker: every route,
a reply found several partitions away through a long References header,
the loop threshold, malformed mail in between, an alias renamed while a
reply was on its way, and the bounce back as a SendRequested."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from postlane.configfile import load, plan
from postlane.configops import current_view, publish_config
from processors.delivery.message import make_smtp_message_id
from processors.inbound.intake import received
from processors.inbound.mail import normalize_message_id
from schemas import (
    InboundMailRouted,
    RoutingDecided,
    SendRequested,
    encode,
)
from streams.client import ensure_topics, publish, read_topic
from streams.partitioning import partition_for
from streams.topics import INBOUND, INBOUND_ROUTED, ROUTING_DECIDED, SEND_REQUESTED, SENT_IDS

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
[settings]
catchall_domain = "mycompany.com"
allowed_domains = "mycompany.com"
loop_minutes = 120
loop_threshold = 3
[[aliases]]
alias = "sales"
target = "crm.lead"
[[aliases]]
alias = "jobs@careers.example.net"
target = "hr.applicant"
policy = "contacts"
"""


def routed(s) -> dict[str, InboundMailRouted]:
    return {e.inbound_id: e for _, e in read_events(s, INBOUND_ROUTED,
                                                     {"InboundMailRouted": InboundMailRouted})}


def sent_mail(s, message_id: str, thread_ref: str) -> str:
    """Publish the routing decision of a mail Postlane sends; return its
    RFC Message-ID (as delivery makes it)."""
    request = SendRequested(message_id=message_id, from_="sales@mycompany.com",
                            to=["ann@client.org"], text="offer", thread_ref=thread_ref)
    decision = RoutingDecided(message_id=message_id, outcome="routed", server="primary",
                              header_from="sales@mycompany.com",
                              request=request.to_representation())
    publish(s, ROUTING_DECIDED, [(message_id, decision)])
    return make_smtp_message_id(message_id, "mycompany.com")


def mail(frm: str = "Ann <ann@client.org>", to: str = "sales@mycompany.com",
         extra: str = "", mid: str | None = None) -> bytes:
    mid = mid or f"<{uuid.uuid4().hex}@client.org>"
    head = f"From: {frm}\nTo: {to}\nSubject: Hello\nMessage-ID: {mid}\n{extra}".strip()
    return (head.replace("\n", "\r\n") + "\r\n\r\nHello\r\n").encode()


def test_inbound_router_end_to_end(broker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    cfg = tmp_path / "postlane.toml"
    cfg.write_text(CONFIG)
    publish_config(s, plan(current_view(s), load(cfg)))

    # mails Postlane sent, before the router runs (the index is rebuilt from the log)
    smtp_a = sent_mail(s, "msg-a", "crm.lead/7")
    # a second sent mail whose Message-ID lives on another partition than the
    # first References candidates, so the lookup must hop
    foreign = [f"<f{i}@list.example.org>" for i in range(40)]
    for i in range(100):
        smtp_b = sent_mail(s, f"msg-b{i}", "hr.applicant/3")
        key_b = normalize_message_id(smtp_b)
        if partition_for(key_b, s.partitions) != partition_for(
                normalize_message_id(foreign[-1]), s.partitions):
            break

    worker = Worker(s, "inbound", log=tmp_path / "inbound.log").start()
    wait_for(lambda: "Worker]: Ready" in worker.log_text(), timeout=60, interval=0.1,
             what="the worker")
    ids: dict[str, str] = {}
    prod = KafkaProducer(bootstrap_servers=s.bootstrap)

    def send(name: str, raw: bytes, **kw: object) -> None:
        inbound_id = f"{name}-{uuid.uuid4().hex[:8]}"
        key, ev = received(raw, inbound_id, "imap", time.time(), server="inbox", **kw)  # type: ignore[arg-type]
        prod.send(INBOUND.full(s), key=key.encode(), value=encode(ev)).get(10)
        ids[name] = inbound_id

    try:
        dup_mid = f"<{uuid.uuid4().hex}@client.org>"
        send("alias", mail(mid=dup_mid))
        send("dup", mail(mid=dup_mid))
        send("cc", mail(to="bob@client.org", extra="Cc: Jobs <JOBS@careers.example.net>"))
        send("bounce", mail(to="bounce+msg-a@mycompany.com"))
        send("daemon", mail(frm="MAILER-DAEMON@mx.client.org", to="x@mycompany.com"))
        send("catchall", mail(to="catchall@mycompany.com"))
        send("foreign", mail(to="sales@foreign.example"))
        prod.send(INBOUND.full(s), key=b"junk", value=b"{not json").get(10)
        send("malformed", b"\x00\x01 not a mail at all")
        for i in range(5):
            send(f"loop{i}", mail(frm="robot@spammy.example"))
        wait_for(lambda: set(ids.values()) <= set(routed(s)), timeout=90,
                 what="a decision for every inbound mail")
        # replies: once the index of sent Message-IDs is built from the log
        wait_for(lambda: len(list(read_topic(s, SENT_IDS.full(s), idle=0.2))) >= 2,
                 timeout=30, what="the sent-ids index")
        send("reply", mail(to="wrong@elsewhere.org", extra=f"In-Reply-To: {smtp_a}"))
        refs = "\n ".join([*foreign[:20], smtp_b, *foreign[20:]])
        send("refs", mail(to="nobody@elsewhere.org", extra=f"References: {refs}"))
        got = wait_for(lambda: (r := routed(s)) and set(ids.values()) <= set(r) and r,
                       timeout=90, what="a decision for every inbound mail")
        d = {name: got[i] for name, i in ids.items()}
        assert (d["alias"].route, d["alias"].target) == ("alias", "crm.lead")
        assert d["alias"].mail  # the raw mail travels with an alias route
        assert d["dup"].route == "duplicate" and ids["alias"] in d["dup"].reason
        assert (d["cc"].route, d["cc"].target, d["cc"].policy) == (
            "alias", "hr.applicant", "contacts")
        assert (d["bounce"].route, d["bounce"].original_message_id) == ("bounce", "msg-a")
        assert d["daemon"].route == "bounce"
        assert (d["reply"].route, d["reply"].target) == ("reply", "crm.lead/7")
        assert d["reply"].original_message_id == "msg-a"
        assert (d["refs"].route, d["refs"].target) == ("reply", "hr.applicant/3")
        assert d["catchall"].route == "reject" and d["catchall"].bounce_to == "ann@client.org"
        assert d["foreign"].route == "reject" and "allowed_domains" in d["foreign"].reason
        assert d["malformed"].route == "reject" and d["malformed"].rule == "malformed"
        # the five mails reach the loop counter in any order (they are on several
        # inbound partitions): three pass, two are loops, one bounce per window
        loops = [d[f"loop{i}"] for i in range(5)]
        assert sorted(x.route for x in loops) == ["alias"] * 3 + ["loop"] * 2
        loop_bounces = {x.bounce_message_id for x in loops if x.bounce_message_id}
        assert len(loop_bounces) == 1
        bounces = [e for _, e in read_events(s, SEND_REQUESTED, {"SendRequested": SendRequested})]
        assert {b.message_id for b in bounces} == {d["catchall"].bounce_message_id} | loop_bounces
        assert all(b.to in (["ann@client.org"], ["robot@spammy.example"]) for b in bounces)

        # rename the alias: replies to mail sent from "sales" still reach the thread
        publish_config(s, plan(current_view(s), load(_write(tmp_path, CONFIG.replace(
            'alias = "sales"', 'alias = "leads"')))))
        time.sleep(1.0)
        send("after_rename", mail(to="sales@mycompany.com", extra=f"References: {smtp_a}"))
        send("old_alias", mail(to="sales@mycompany.com"))
        got = wait_for(lambda: (r := routed(s)) and ids["old_alias"] in r
                       and ids["after_rename"] in r and r, timeout=60, what="after rename")
        assert got[ids["after_rename"]].route == "reply"
        assert got[ids["after_rename"]].target == "crm.lead/7"
        assert got[ids["old_alias"]].route == "reject"

        for i in range(3):  # the loop counter of leads|robot2 reaches its threshold
            send(f"leads{i}", mail(frm="robot2@spammy.example", to="leads@mycompany.com"))
        wait_for(lambda: all(ids[f"leads{i}"] in routed(s) for i in range(3)), timeout=60,
                 what="three mails to leads")

        # restart: the tables come back from their changelogs. Tansu numbers a
        # new group's first generation 0 and aiokafka leaves a group only past
        # generation 0, so the old member stays until its session expires (see
        # test_status_e2e): let the session run out first. And a record that
        # arrives while the new worker recovers can be skipped by Faust until
        # the next restart (its consumer drops a message fetched while the
        # flow is suspended): publish once the worker is ready.
        worker.stop()
        time.sleep(s.session_timeout)
        worker = Worker(s, "inbound", log=tmp_path / "inbound2.log").start()
        wait_for(lambda: "Worker]: Ready" in worker.log_text(), timeout=60, interval=0.1,
                 what="the restarted worker")
        send("dup_after_restart", mail(mid=dup_mid))
        send("reply_after_restart", mail(to="x@elsewhere.org", extra=f"In-Reply-To: {smtp_a}"))
        send("loop_after_restart", mail(frm="robot2@spammy.example", to="leads@mycompany.com"))
        names = ("dup_after_restart", "reply_after_restart", "loop_after_restart")
        got = wait_for(lambda: (r := routed(s)) and all(ids[n] in r for n in names) and r,
                       timeout=90, what="decisions after restart")
        assert got[ids["dup_after_restart"]].route == "duplicate"
        assert got[ids["reply_after_restart"]].route == "reply"
        assert got[ids["loop_after_restart"]].route == "loop"
    finally:
        prod.close()
        worker.stop()
    for log in tmp_path.glob("inbound*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text and "Error in recovery" not in text


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "renamed.toml"
    p.write_text(text)
    return p
