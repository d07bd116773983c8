"""SMTP ingress (``postlane worker ingress``): an aiosmtpd server on
``POSTLANE_INGRESS_HOST``:``POSTLANE_INGRESS_PORT`` for setups that forward
mail to the gateway. Each mail is published to ``inbound`` (as the fetcher
does) and acknowledged with 250 only once the broker has it; a failure to
store it answers 451, so the sending MTA retries. Recipients outside our
alias domains are refused at RCPT: never an open relay.

It answers SMTP only: no TLS or AUTH, so put it on loopback or a private
network behind your MTA.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from schemas import encode
from streams.topics import INBOUND

from ..inbound.intake import received
from ..runtime import Runtime
from . import core

NAME = "ingress"
SERVER_NAME = "smtp-ingress"
log = logging.getLogger("postlane.ingress")


class Handler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.topic = rt.topic(INBOUND)
        self.hostname = socket.getfqdn()
        self.accepted = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        refusal = core.refuse_recipient(address, self.rt.config.view)
        if refusal is not None:
            log.info("ingress refused RCPT TO:<%s> from %s: %s", address, session.peer, refusal)
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode("utf-8", "replace")
        inbound_id = uuid.uuid4().hex
        now = time.time()
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        trace = core.received_header(peer, session.host_name or "", self.hostname, inbound_id,
                                     envelope.rcpt_tos[0] if envelope.rcpt_tos else "", now)
        key, event = received(
            trace + raw, inbound_id, "smtp", now, server=SERVER_NAME,
            envelope_from=envelope.mail_from or "", envelope_to=list(envelope.rcpt_tos),
        )
        try:
            fut = await self.topic.send(key=key.encode(), value=encode(event))
            await fut
        except Exception:  # noqa: BLE001 - the sender retries a 4xx
            log.exception("ingress could not publish mail %s", inbound_id)
            return "451 4.3.0 the mail could not be stored: try again later"
        self.accepted += 1
        log.info("ingress took mail %s from <%s> for %s", inbound_id, envelope.mail_from,
                 ", ".join(envelope.rcpt_tos))
        return f"250 2.0.0 OK: queued as {inbound_id}"


def register(rt: Runtime) -> None:
    s = rt.settings
    handler = Handler(rt)

    def factory() -> Any:
        return SMTP(handler, data_size_limit=s.inbound_max_bytes, enable_SMTPUTF8=True,
                    decode_data=False, hostname=handler.hostname,
                    ident="Postlane SMTP ingress")

    @rt.app.task
    async def serve() -> None:
        await rt.config.wait_ready()
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(factory, host=s.ingress_host, port=s.ingress_port)
        except OSError as exc:
            log.error("the SMTP ingress cannot listen on %s:%d (%s): set POSTLANE_INGRESS_HOST "
                      "/ POSTLANE_INGRESS_PORT", s.ingress_host, s.ingress_port, exc.strerror)
            return
        log.info("SMTP ingress listening on %s:%d", s.ingress_host, s.ingress_port)
        try:
            await asyncio.Event().wait()
        finally:
            server.close()
            await server.wait_closed()
