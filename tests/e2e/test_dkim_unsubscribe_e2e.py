"""DKIM and one-click unsubscribe end to end: publisher -> router -> limiter
-> delivery -> a real SMTP server (aiosmtpd on loopback), through the
embedded broker; the unsubscribe service over real HTTP.

- mail from a domain with an rsa-sha256 key and from one with an
  ed25519-sha256 key arrives signed and verifies with dkimpy against the
  TXT record `postlane dkim keygen` printed (DNS stubbed through dnsfunc); a
  tampered body fails; a domain whose key file went missing after
  `config apply` is deferred with the reason, never sent unsigned;
- the mass mail's List-Unsubscribe link: GET shows a page and records
  nothing, a forged or expired token is refused with 400 and nothing
  recorded, POST records UnsubscribeRequested on the bounces topic;
- the POST suppresses the address: the next campaign mail to it is
  `suppressed` (needs the blacklist processor's fold of UnsubscribeRequested,
  issue 21).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import dkim as dkimpy
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from postlane.cli.dkim_cmd import dkim as dkim_group
from postlane.configops import publish_config
from postlane.publisher import Publisher
from postlane.statusview import wait_final
from processors.unsubscribe.token import make_token
from processors.unsubscribe.web import UnsubscribeServer, kafka_publisher
from schemas import (
    DkimKeyConfigured,
    OutgoingServerConfigured,
    SettingsChanged,
    UnsubscribeRequested,
)
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.secrets import unsubscribe_secret
from streams.settings import Settings
from streams.topics import BOUNCES
from tests.smtp.conftest import HOST, Recorder

from .harness import Worker, isolated_settings, read_events, wait_for

pytestmark = pytest.mark.e2e

CATCHALL = "mycompany.test"
PROCESSORS = ("router", "limiter", "delivery", "status", "blacklist")


def keygen(tmp: Path, domain: str, algorithm: str) -> tuple[DkimKeyConfigured, str]:
    out = tmp / f"{domain}.key"
    result = CliRunner().invoke(dkim_group, ["keygen", "--domain", domain, "--selector", "pl2026",
                                             "--algorithm", algorithm, "--out", str(out)])
    assert result.exit_code == 0, result.output
    txt = next(line for line in result.output.splitlines() if line.startswith("v=DKIM1"))
    return DkimKeyConfigured(domain=domain, selector="pl2026", key_file=str(out),
                             algorithm=algorithm), txt


class Stack:
    def __init__(self, s: Settings, sink: Recorder, worker: Worker, web: UnsubscribeServer,
                 dns: dict[str, str], secret: bytes) -> None:
        self.s, self.sink, self.worker, self.web, self.dns, self.secret = (
            s, sink, worker, web, dns, secret)

    def lookup(self, name: bytes, timeout: int = 5) -> bytes | None:
        value = self.dns.get(name.decode().rstrip("."))
        return value.encode() if value else None

    def send(self, **fields: Any) -> str:
        with Publisher(settings=self.s) as pub:
            return pub.send(**fields)

    def final(self, mid: str) -> dict[str, Any]:
        status = wait_final(self.s, mid, timeout=60)
        assert status is not None, f"{mid} never final\n" + self.worker.log_text()[-4000:]
        return status

    def received(self, mid: str) -> bytes:
        def find() -> bytes | None:
            for m in list(self.sink.messages):
                if f"X-Postlane-Id: {mid}".encode() in m.content:
                    return m.content
            return None
        return wait_for(find, 30, what=f"{mid} at the SMTP server")  # type: ignore[no-any-return]

    def unsubscribes(self) -> list[UnsubscribeRequested]:
        return [e for _, e in read_events(self.s, BOUNCES,
                                          {"UnsubscribeRequested": UnsubscribeRequested})
                if isinstance(e, UnsubscribeRequested)]


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dkim")
    web_port = free_port()
    secret_file = tmp / "unsubscribe.secret"
    secret_file.write_text("e2e-secret-0123456789abcdef0123456789\n")
    s = isolated_settings(broker.settings.embedded_port, tmp, retry_first=1, retry_max=2,
                          retry_give_up=60, attempt_deadline=5, smtp_timeout=3,
                          unsubscribe_secret_file=str(secret_file),
                          unsubscribe_url=f"http://127.0.0.1:{web_port}",
                          unsubscribe_port=web_port)
    ensure_topics(s)
    sink = Recorder()
    port = free_port()
    controller = Controller(sink, hostname=HOST, port=port, server_hostname="mx.test",
                            ready_timeout=5.0)
    controller.start()
    rsa_key, rsa_txt = keygen(tmp, "shop.test", "rsa-sha256")
    ed_key, ed_txt = keygen(tmp, "ed.test", "ed25519-sha256")
    gone_key, _ = keygen(tmp, "gone.test", "rsa-sha256")
    server = OutgoingServerConfigured(name="sink", host=HOST, port=port, security="none")
    publish_config(s, [("settings", SettingsChanged(catchall_domain=CATCHALL)),
                       (server.key, server), (rsa_key.key, rsa_key), (ed_key.key, ed_key),
                       (gone_key.key, gone_key)])
    Path(gone_key.key_file).unlink()  # after apply: delivery finds it missing
    secret = unsubscribe_secret("", str(secret_file), str(tmp))
    publish, close = kafka_publisher(s)
    web = UnsubscribeServer("127.0.0.1", web_port, secret, publish).start()
    worker = Worker(s, *PROCESSORS, log=tmp / "worker.log", extra_env={
        "POSTLANE_WEB_PORT": str(free_port()),
        "POSTLANE_UNSUBSCRIBE_SECRET_FILE": str(secret_file),
        "POSTLANE_UNSUBSCRIBE_URL": s.unsubscribe_url,
    }).start()
    try:
        yield Stack(s, sink, worker, web,
                    {"pl2026._domainkey.shop.test": rsa_txt,
                     "pl2026._domainkey.ed.test": ed_txt}, secret)
    finally:
        worker.stop()
        web.stop()
        close()
        controller.stop()


@pytest.mark.parametrize("domain", ["shop.test", "ed.test"])
def test_delivered_mail_verifies_with_the_published_key(stack: Stack, domain: str):
    mid = stack.send(from_=f'"Shop" <news@{domain}>', to=["ann@example.org"],
                     subject=f"signed by {domain}", text="Hello Ann\n" * 20)
    assert stack.final(mid)["state"] == "sent"
    data = stack.received(mid)
    assert data.startswith(b"DKIM-Signature:") or b"\nDKIM-Signature:" in data
    assert dkimpy.verify(data, dnsfunc=stack.lookup), data[:600]
    tampered = data.replace(b"Hello Ann", b"Hello Eve", 1)
    assert tampered != data and not dkimpy.verify(tampered, dnsfunc=stack.lookup)
    parsed = message_from_bytes(data, policy=policy.default)
    assert parsed["Message-ID"].endswith(f"@{domain}>")


def test_a_missing_key_defers_with_the_reason_and_sends_nothing(stack: Stack):
    mid = stack.send(from_="news@gone.test", to=["ann@example.org"], subject="unsigned?",
                     text="must not go out unsigned")

    def deferred() -> dict[str, Any] | None:
        from postlane.statusview import StatusReader

        with StatusReader(stack.s, mid) as reader:
            reader.poll(1.0)
            status = reader.status
        return status if status and status.get("state") == "deferred" else None

    status = wait_for(deferred, 60, what=f"{mid} deferred")
    assert "does not exist" in str(status), status
    assert not any(f"X-Postlane-Id: {mid}".encode() in m.content for m in stack.sink.messages)


def _link(stack: Stack, mid: str) -> str:
    parsed = message_from_bytes(stack.received(mid), policy=policy.default)
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https = str(parsed["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert https.startswith(stack.s.unsubscribe_url + "/u/")
    return https


def _http(method: str, url: str) -> int:
    body = b"List-Unsubscribe=One-Click" if method == "POST" else None
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_get_forged_and_expired_record_nothing_and_post_records_the_unsubscribe(stack: Stack):
    mid = stack.send(from_="news@shop.test", to=["carl@example.org"], subject="campaign 1",
                     text="Offers", kind="mass", tenant="acme", list_id="news",
                     campaign="c1")
    assert stack.final(mid)["state"] == "sent"
    link = _link(stack, mid)
    before = len(stack.unsubscribes())
    assert _http("GET", link) == 200
    token = link.rsplit("/", 1)[1]
    forged = link[: -len(token)] + token[:-4] + ("aaaa" if not token.endswith("aaaa") else "bbbb")
    assert _http("POST", forged) == 400
    expired = make_token(stack.secret, "acme", "news", "carl@example.org", 1_000_000.0)
    assert _http("POST", f"{stack.web.url}/u/{expired}") == 400
    other_secret = make_token(b"not the sender's secret at all!!", "acme", "news",
                              "carl@example.org", 4_000_000_000.0)
    assert _http("POST", f"{stack.web.url}/u/{other_secret}") == 400
    assert len(stack.unsubscribes()) == before  # GET, forged, expired: nothing recorded
    assert _http("POST", link) == 200
    got = [u for u in stack.unsubscribes() if u.address == "carl@example.org"]
    assert [(u.tenant, u.list_id, u.via) for u in got] == [("acme", "news", "http")]


def test_a_one_click_post_suppresses_the_next_campaign_mail(stack: Stack):
    """Waits on issue 21: the blacklist processor folding UnsubscribeRequested
    into a suppression of type unsubscribe for the tenant and list."""
    first = stack.send(from_="news@shop.test", to=["dora@example.org"], subject="campaign 1",
                       text="Offers", kind="mass", tenant="acme", list_id="news", campaign="c1")
    assert stack.final(first)["state"] == "sent"
    assert _http("POST", _link(stack, first)) == 200

    def next_mail_suppressed() -> bool:
        mid = stack.send(from_="news@shop.test", to=["dora@example.org"], subject="campaign 2",
                         text="More offers", kind="mass", tenant="acme", list_id="news",
                         campaign="c2")
        return stack.final(mid)["state"] == "suppressed"

    # the router's view of the suppressions follows the log: a mail routed
    # in the moment before the suppression reaches it may still go out
    assert wait_for(next_mail_suppressed, 60, interval=2.0,
                    what="the next campaign mail suppressed")
