"""Webhooks end to end: a worker (router, limiter, delivery, bounces,
webhooks) delivers mail to a real SMTP server and posts what became of it
to real HTTP endpoints on loopback (aiohttp):

- ``crm`` (every event) is down when the mail goes out and comes up a few
  seconds later: every notification then arrives, signed and verifiable,
  each id once, one mail's in order;
- ``garbage`` answers bytes that are not HTTP, ``silent`` never answers:
  both are retried, then dead-lettered with the reason, while ``crm`` gets
  everything (a dead endpoint holds up no other);
- ``postlane webhooks test crm`` posts a signed ping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner

from postlane.cli import main
from postlane.configops import publish_config
from postlane.publisher import Publisher
from processors.webhooks import core
from schemas import (
    OutgoingServerConfigured,
    SettingsChanged,
    WebhookConfigured,
    WebhookDeadLettered,
    WebhookDelivered,
)
from streams.client import ensure_topics
from streams.embedded import EmbeddedBroker, free_port
from streams.topics import WEBHOOKS
from tests.smtp.conftest import HOST

from .harness import Worker, isolated_settings, read_events, settings_env, wait_for
from .test_delivery_e2e import RETRY, Sink, sinks  # noqa: F401

pytestmark = pytest.mark.e2e

SECRET = "s3cret-for-the-crm-endpoint-0123456789"
PROCESSORS = ("router", "limiter", "delivery", "bounces", "webhooks")
WEBHOOK_ENV = {"POSTLANE_WEBHOOK_RETRY_FIRST": "0.5", "POSTLANE_WEBHOOK_RETRY_MAX": "1",
               "POSTLANE_WEBHOOK_RETRY_FOR": "4", "POSTLANE_WEBHOOK_TIMEOUT": "1",
               "POSTLANE_WEBHOOK_KEEP": "8", "CRM_SECRET": SECRET}


class Loop:
    """An event loop in a thread for the test's servers."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        async def cancel_all() -> None:
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Receiver:
    """An aiohttp endpoint recording every POST (headers and raw body)."""

    def __init__(self, loop: Loop, port: int) -> None:
        self.loop, self.port = loop, port
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_post("/hooks/mail", self.handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, HOST, self.port).start()
        self.loop.run(go())

    def stop(self) -> None:
        if self.runner is not None:
            self.loop.run(self.runner.cleanup())

    def bodies(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.got]


def raw_server(loop: Loop, answer: bytes | None) -> tuple[int, Any]:
    """A TCP server answering ``answer`` and closing (None: never answering)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if answer is None:
            await asyncio.sleep(30)
        else:
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def go() -> Any:
        return await asyncio.start_server(handle, HOST, 0)

    server = loop.run(go())
    return server.sockets[0].getsockname()[1], server


@pytest.fixture
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.close()


def test_webhooks_signed_in_order_retried_and_dead_lettered(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any, loop: Loop,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRM_SECRET", SECRET)  # config apply reads it as the worker will
    s = isolated_settings(broker.port, tmp_path / "data", **RETRY)
    ensure_topics(s)
    sink = Sink()
    sink.rcpt_replies["nobody@dest.test"] = ["550 5.1.1 <nobody@dest.test>: no such user"] * 50
    crm_port = free_port()
    crm = Receiver(loop, crm_port)  # not started yet: down
    garbage_port, garbage = raw_server(loop, b"garbage, not HTTP\r\n\r\n")
    silent_port, silent = raw_server(loop, None)
    hooks = [
        WebhookConfigured(name="crm", url=f"http://{HOST}:{crm_port}/hooks/mail", events="*",
                          secret_env="CRM_SECRET"),
        WebhookConfigured(name="garbage", url=f"http://{HOST}:{garbage_port}/x", events="sent",
                          secret_env="CRM_SECRET"),
        WebhookConfigured(name="silent", url=f"http://{HOST}:{silent_port}/x", events="sent",
                          secret_env="CRM_SECRET"),
    ]
    srv = OutgoingServerConfigured(name="main", host=HOST, port=sinks(sink), security="none",
                                   from_filter="a.test")
    publish_config(s, [("settings", SettingsChanged(catchall_domain="mycompany.test")),
                       (srv.key, srv), *((h.key, h) for h in hooks)])
    worker = Worker(s, *PROCESSORS, log=tmp_path / "worker.log",
                    extra_env={"POSTLANE_WEB_PORT": str(free_port()), **WEBHOOK_ENV}).start()
    try:
        with Publisher(settings=s) as pub:
            mids = [pub.send(from_="app@a.test",
                             to=[f"user{i}@dest.test"] + (["nobody@dest.test"] if i % 2 else []),
                             subject=f"m{i}", text="hi") for i in range(6)]
        wait_for(lambda: len(sink.messages) >= 6, timeout=90, what="the mails at the sink")
        time.sleep(3.0)  # crm stays down: its notifications are retried meanwhile
        assert crm.got == []
        crm.start()
        # 6 sent, 3 failed (nobody@, 550) and 3 bounced (the 550 is a bounce of nobody@)
        wait_for(lambda: len(crm.got) >= 12, timeout=60, what="every notification at crm")
        time.sleep(2.0)  # nothing more may come (no repeats)
        bodies = crm.bodies()
        ids = [b["id"] for b in bodies]
        assert len(ids) == len(set(ids)) == 12, bodies
        kinds = sorted(b["type"] for b in bodies)
        assert kinds == ["bounced"] * 3 + ["failed"] * 3 + ["sent"] * 6
        assert {b["message_id"] for b in bodies} == set(mids)
        for headers, raw in crm.got:  # signed, verifiable with the secret
            assert core.verify(SECRET.encode(), headers["Postlane-Signature"], raw, time.time())
            assert not core.verify(b"another secret", headers["Postlane-Signature"], raw,
                                   time.time())
        for mid in mids:  # one mail's notifications in order
            times = [b["occurred_at"] for b in bodies if b["message_id"] == mid]
            assert times == sorted(times)
        failed = next(b for b in bodies if b["type"] == "failed")
        assert failed["recipient"] == "nobody@dest.test" and failed["details"]["code"] == 550
        bounced = next(b for b in bodies if b["type"] == "bounced")
        assert bounced["details"]["hard"] is True

        # the endpoints answering garbage or nothing: retried, then dead-lettered
        registry = {"WebhookDelivered": WebhookDelivered,
                    "WebhookDeadLettered": WebhookDeadLettered}

        def outcomes() -> list[Any]:
            return [e for _, e in read_events(s, WEBHOOKS, registry)]

        def all_dead() -> bool:
            dead = [e for e in outcomes() if isinstance(e, WebhookDeadLettered)]
            return len(dead) >= 12
        wait_for(all_dead, timeout=60, interval=1.0, what="the dead letters")
        events = outcomes()
        dead = [e for e in events if isinstance(e, WebhookDeadLettered)]
        assert {e.webhook for e in dead} == {"garbage", "silent"}
        g = next(e for e in dead if e.webhook == "garbage")
        assert "garbage" in g.reason and "retried" in g.reason and g.attempts >= 2, g.reason
        q = next(e for e in dead if e.webhook == "silent")
        assert "no answer" in q.reason and q.attempts >= 2, q.reason
        delivered = [e for e in events if isinstance(e, WebhookDelivered)]
        assert sorted(e.notification_id for e in delivered if e.webhook == "crm") == sorted(ids)

        # postlane webhooks test: a signed ping
        result = CliRunner().invoke(main, ["webhooks", "test", "crm"],
                                    env={**settings_env(s), "CRM_SECRET": SECRET})
        assert result.exit_code == 0, result.output
        assert "HTTP 204" in result.output
        ping = crm.bodies()[-1]
        assert ping["type"] == "ping"
        assert core.verify(SECRET.encode(), crm.got[-1][0]["Postlane-Signature"],
                           crm.got[-1][1], time.time())
        result = CliRunner().invoke(main, ["webhooks", "test", "silent"],
                                    env={**settings_env(s), "CRM_SECRET": SECRET,
                                         "POSTLANE_WEBHOOK_TIMEOUT": "1"})
        assert result.exit_code == 1 and "no answer" in result.output

        # finished rows are pruned POSTLANE_WEBHOOK_KEEP (8 s) after they finished:
        # the outbox ends empty (every lane deleted), and nothing was posted again
        from postlane import replayops

        topics = replayops.changelog_topics(s, "webhook-outbox")
        assert topics, "no outbox changelog"

        def outbox() -> dict[str, Any]:
            return replayops.read_live(s, topics[0], None, lambda _s, _k, v: v)

        wait_for(lambda: outbox() == {}, timeout=60, interval=1.0, what="the outbox pruned")
        assert "finished rows pruned" in worker.log_text()
        time.sleep(1.0)
        assert len(crm.got) == 13  # the 12 notifications and the ping, none twice
    except AssertionError:
        print(worker.log_text()[-5000:])
        raise
    finally:
        worker.stop()
        crm.stop()
        garbage.close()
        silent.close()


def test_webhooks_survive_a_kill_of_their_worker(
    broker: EmbeddedBroker, tmp_path: Path, sinks: Any, loop: Loop,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The webhooks worker is SIGKILLed while its endpoint is down and every
    notification waits in the outbox; a new worker recovers the outbox from
    its changelog and, once the endpoint is up, posts each notification once."""
    monkeypatch.setenv("CRM_SECRET", SECRET)
    s = isolated_settings(broker.port, tmp_path / "data", **RETRY)
    ensure_topics(s)
    sink = Sink()
    crm_port = free_port()
    crm = Receiver(loop, crm_port)
    hook = WebhookConfigured(name="crm", url=f"http://{HOST}:{crm_port}/hooks/mail",
                             events="sent", secret_env="CRM_SECRET")
    srv = OutgoingServerConfigured(name="main", host=HOST, port=sinks(sink), security="none",
                                   from_filter="a.test")
    publish_config(s, [("settings", SettingsChanged(catchall_domain="mycompany.test")),
                       (srv.key, srv), (hook.key, hook)])
    env = {"POSTLANE_WEB_PORT": str(free_port()), **WEBHOOK_ENV}
    pipeline = Worker(s, "router", "limiter", "delivery", log=tmp_path / "pipeline.log",
                      extra_env=env).start()
    hooks1 = Worker(s, "webhooks", log=tmp_path / "hooks1.log",
                    extra_env={**env, "POSTLANE_WEB_PORT": str(free_port()),
                               "POSTLANE_WEBHOOK_RETRY_FOR": "600"}).start()
    hooks2: Worker | None = None
    try:
        with Publisher(settings=s) as pub:
            mids = [pub.send(from_="app@a.test", to=[f"user{i}@dest.test"], subject=f"m{i}",
                             text="hi") for i in range(8)]
        wait_for(lambda: len(sink.messages) >= 8, timeout=90, what="the mails at the sink")

        def retried() -> bool:  # every notification planned and tried (the endpoint is down)
            return hooks1.log_text().count("will be retried") >= 8
        wait_for(retried, timeout=60, what="the notifications retried")
        hooks1.kill()
        time.sleep(s.tuned().session_timeout + 1)  # the dead member's session ends
        crm.start()
        hooks2 = Worker(s, "webhooks", log=tmp_path / "hooks2.log",
                        extra_env={**env, "POSTLANE_WEB_PORT": str(free_port()),
                                   "POSTLANE_WEBHOOK_RETRY_FOR": "600"}).start()
        wait_for(lambda: len(crm.got) >= 8, timeout=90, what="every notification after "
                 "the restart")
        time.sleep(3.0)
        bodies = crm.bodies()
        assert sorted(b["message_id"] for b in bodies) == sorted(mids)
        assert len({b["id"] for b in bodies}) == len(bodies) == 8
    except AssertionError:
        print(hooks1.log_text()[-3000:])
        if hooks2 is not None:
            print(hooks2.log_text()[-3000:])
        raise
    finally:
        pipeline.stop()
        hooks1.stop()
        if hooks2 is not None:
            hooks2.stop()
        crm.stop()
