"""The SMTP ingress end to end: it takes mail for our alias domains only
(never an open relay), publishes it with its envelope to the inbound topic,
and the router routes it."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from postlane.configfile import parse, plan
from postlane.configops import current_view, publish_config
from schemas import InboundMailReceived, InboundMailRouted
from streams.client import ensure_topics
from streams.embedded import free_port
from streams.topics import INBOUND, INBOUND_ROUTED

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

CONFIG = """
[settings]
catchall_domain = "mycompany.com"
allowed_domains = "mycompany.com, mycompany.eu"
[[aliases]]
alias = "sales"
target = "crm.lead"
[[aliases]]
alias = "jobs@careers.example.net"
target = "hr.applicant"
"""

MAIL = (b"From: Ann <ann@client.org>\r\nTo: sales@mycompany.eu\r\nSubject: Offer\r\n"
        b"Message-ID: <ingress-1@client.org>\r\n\r\nHello\r\n")


def test_ingress_takes_our_domains_only_and_routes(broker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path)
    ensure_topics(s)
    publish_config(s, plan(current_view(s), parse(CONFIG)))
    port = free_port()
    worker = Worker(s, "ingress", "inbound", log=tmp_path / "ingress.log",
                    extra_env={"POSTLANE_INGRESS_PORT": str(port)}).start()
    try:
        wait_for(lambda: "SMTP ingress listening" in worker.log_text(), timeout=60,
                 what="the ingress to listen")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("mx.client.org")
            smtp.mail("ann@client.org")
            assert smtp.rcpt("victim@gmail.com")[0] == 550  # no open relay
            assert smtp.rcpt("x@mycompany.com.evil.org")[0] == 550
            assert smtp.rcpt("Jobs@Careers.Example.NET")[0] == 250
            assert smtp.rcpt("sales@mycompany.eu")[0] == 250
            code, reply = smtp.data(MAIL)
            assert code == 250 and b"queued as" in reply
        got = wait_for(lambda: [e for _, e in read_events(
            s, INBOUND, {"InboundMailReceived": InboundMailReceived})], timeout=30,
            what="the inbound event")
        assert len(got) == 1
        ev = got[0]
        assert ev.source == "smtp" and ev.envelope_from == "ann@client.org"
        assert ev.envelope_to == ["Jobs@Careers.Example.NET", "sales@mycompany.eu"]
        assert ev.raw().startswith(b"Received: from mx.client.org")
        assert ev.raw().endswith(MAIL)
        decisions = wait_for(lambda: [e for _, e in read_events(
            s, INBOUND_ROUTED, {"InboundMailRouted": InboundMailRouted})], timeout=30,
            what="the routing decision")
        # the envelope recipients come first: the full-address alias matches
        assert [(d.route, d.target) for d in decisions] == [("alias", "hr.applicant")]
    finally:
        worker.stop()
