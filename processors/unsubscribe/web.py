"""The unsubscribe web service (HTTP edge): ``GET|POST /u/TOKEN`` answered by
``core.answer``; a POST's UnsubscribeRequested is published on the
``bounces`` topic (keyed by the lower-cased address: the suppression log)
and acknowledged by the broker before the 200. ``GET /healthz`` answers ok.

A small service of its own until a web console exists:
``postlane unsubscribe serve`` (listens on ``POSTLANE_UNSUBSCRIBE_HOST``:
``_PORT``, 127.0.0.1:8089), and ``postlane dev`` runs it on loopback. Put
it behind the HTTPS reverse proxy that ``POSTLANE_UNSUBSCRIBE_URL`` names.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from schemas import UnsubscribeRequested, encode
from streams.settings import Settings
from streams.topics import BOUNCES

from .core import answer

log = logging.getLogger("postlane.unsubscribe")
Publish = Callable[[UnsubscribeRequested], Awaitable[None]]


def kafka_publisher(settings: Settings) -> tuple[Publish, Callable[[], None]]:
    """(publish, close): publish one event on ``bounces`` and wait for the
    broker's ack (kafka-python, in a thread: the call blocks)."""
    from streams.client import producer

    prod = producer(settings)
    topic = BOUNCES.full(settings)

    def send(event: UnsubscribeRequested) -> None:
        prod.send(topic, key=event.address.lower().encode(), value=encode(event)).get(15.0)

    async def publish(event: UnsubscribeRequested) -> None:
        await asyncio.to_thread(send, event)

    return publish, prod.close


def make_app(secret: bytes, publish: Publish,
             clock: Callable[[], float] = time.time) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        ans = answer(request.method, token, secret, clock())
        if ans.event is not None:
            try:
                await publish(ans.event)
            except Exception:  # noqa: BLE001 - the broker did not take it: say so, record nothing
                log.exception("unsubscribe of %s not recorded", ans.event.address)
                return web.Response(status=503, text="the unsubscribe could not be recorded "
                                    "right now: please try again in a few minutes\n")
            log.info("unsubscribed %s from list %r of tenant %r (http)", ans.event.address,
                     ans.event.list_id, ans.event.tenant)
        elif ans.status != 200:
            log.info("unsubscribe link refused (%s) from %s", ans.reason, request.remote)
        return web.Response(status=ans.status, text=ans.page(), content_type="text/html",
                            headers={"Cache-Control": "no-store"})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/u/{token}", page)
    app.router.add_post("/u/{token}", page)
    app.router.add_get("/healthz", healthz)
    return app


class UnsubscribeServer:
    """The service on its own thread and event loop (``postlane dev``, the
    CLI and tests start and stop it)."""

    def __init__(self, host: str, port: int, secret: bytes, publish: Publish) -> None:
        self.host, self.port = host, port
        self.app = make_app(secret, publish)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="unsubscribe-web",
                                       daemon=True)
        self.runner = web.AppRunner(self.app, access_log=None)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> UnsubscribeServer:
        self.thread.start()

        async def up() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, self.host, self.port).start()

        try:
            asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        except BaseException:
            self.stop()  # e.g. the port is taken: no thread left behind
            raise
        return self

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def from_settings(settings: Settings) -> tuple[UnsubscribeServer, Callable[[], None]]:
    """The server as the settings say, with the token secret read by the
    secrets edge and a Kafka publisher; (server, close the publisher)."""
    from streams.secrets import unsubscribe_secret

    secret = unsubscribe_secret(settings.unsubscribe_secret_env,
                                settings.unsubscribe_secret_file, settings.data_dir)
    publish, close = kafka_publisher(settings)
    server = UnsubscribeServer(settings.unsubscribe_host, settings.unsubscribe_port, secret,
                               publish)
    return server, close
