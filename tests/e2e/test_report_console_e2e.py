"""The deliverability report on the console (``/report``): the figures of
``reportops.report()`` (what ``postlane report deliverability`` prints) from
a real broker's topics, over real HTTP, with the chart as a PNG."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from kafka import KafkaProducer

from bench.replay import mail_events
from postlane import reportops
from postlane.web import auth
from postlane.web.app import COOKIE, Console, make_app
from postlane.web.feed import Feed
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker

from .harness import isolated_settings

pytestmark = pytest.mark.e2e


async def test_the_report_page_shows_the_reports_figures(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    s = isolated_settings(broker.port, tmp_path / "data")
    ensure_topics(s)
    producer = KafkaProducer(bootstrap_servers=s.bootstrap)
    t0 = time.time() - 600
    for i in range(40):  # one in ten fails (550) and bounces, as the replay bench writes
        for topic, key, value in mail_events(i, t0):
            producer.send(s.topic(topic), key=key, value=value)
    producer.flush()
    producer.close()
    expected = reportops.report(s, "domain")
    total = reportops.totals(expected).to_dict()
    assert total["sent"] == 36 and total["failed"] == 4 and total["hard_bounces"] == 4

    console = Console(s, tmp_path / "users")
    auth.add_user(console.users_file, "ops", "correct horse")
    app = make_app(console, Feed(s, console.state))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/report", allow_redirects=False)
        assert resp.status == 303  # not without a session
        token, _ = console.sessions.open("ops", time.time())
        client.session.cookie_jar.update_cookies({COOKIE: token})
        resp = await client.get("/report", params={"by": "domain"})
        assert resp.status == 200
        html = await resp.text()
        assert 'href="/report" class="on"' in html  # in the navigation
        cells = re.findall(r"<tr(?: class=\"total\")?><td>([^<]*)</td>(.*?)</tr>", html, re.S)
        shown = {group: re.findall(r'<td class="num">([^<]*)</td>', rest)
                 for group, rest in cells}
        assert set(shown) == {r.group for r in expected} | {"total"}
        for row in [*expected, reportops.totals(expected)]:
            d = row.to_dict()
            assert shown[row.group][:len(reportops.COUNTS)] == [
                str(d[c]) for c in reportops.COUNTS], row.group
        resp = await client.get("/report/plot.png", params={"by": "domain"})
        assert resp.status == 200 and resp.content_type == "image/png"
        assert (await resp.read())[:8] == b"\x89PNG\r\n\x1a\n"
        resp = await client.get("/report", params={"by": "planet"})
        assert resp.status == 400 and "must be one of" in await resp.text()
        resp = await client.get("/report", params={"since": "yesterday-ish"})
        assert resp.status == 400 and "neither a date" in await resp.text()
        # a range after every record: no mail, no chart
        future = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400))
        resp = await client.get("/report", params={"since": future})
        assert resp.status == 200 and "no mail in this range" in await resp.text()
