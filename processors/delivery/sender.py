"""Glue between the delivery agent and the SMTP edge: resolve the server
from the live config, build the MIME message (with the one-click
unsubscribe headers of a mass mail), sign it with the From domain's DKIM
key when one is configured, run one attempt through the connection pool,
and fold the outcome with the pure core.

A DKIM key (or the unsubscribe secret) that cannot be read defers the
attempt with the reason: a mail is never sent unsigned when its domain has
a ``[[dkim]]`` entry."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from schemas import DeliveryAttempted, OutgoingServerConfigured, RoutingDecided, SendRequested
from schemas.addresses import domain_of, split_address
from schemas.base import carried
from streams.secrets import SecretUnavailable, read_dkim_key, unsubscribe_secret

from ..router.core import decide
from ..runtime import Runtime
from ..unsubscribe.token import list_unsubscribe_headers
from . import core
from .dkim import DkimError, Signer, sign
from .message import build_message, envelope_recipients, make_smtp_message_id, message_bytes
from .plainwire import plain_wire
from .policy import Trouble, fails_over
from .pool import SmtpPool, deliver

log = logging.getLogger("postlane.delivery")


class Sender:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.pool = SmtpPool.from_settings(rt.settings,
                                           max_per_server=rt.settings.smtp_connections)
        self.interrupted = 0  # attempts retried after a crash (possible duplicates)
        self.signer = Signer(read_dkim_key)
        self._unsub_secret: bytes | None = None

    def list_headers(self, request: SendRequested) -> dict[str, str]:
        """List-Unsubscribe(-Post) for a mass mail (nothing for other mail).
        Raises SecretUnavailable when the token secret cannot be read."""
        if request.kind != "mass":
            return {}
        s = self.rt.settings
        if self._unsub_secret is None:
            self._unsub_secret = unsubscribe_secret(
                s.unsubscribe_secret_env, s.unsubscribe_secret_file, s.data_dir)
        return list_unsubscribe_headers(
            request, self._unsub_secret, base_url=s.unsubscribe_url,
            mailto_domain=self.rt.config.view.settings.catchall_domain,
            alias=s.unsubscribe_alias, now=time.time(), valid_days=s.unsubscribe_token_days)

    def wire(self, request: SendRequested, decision: RoutingDecided,
             server: OutgoingServerConfigured, smtp_id: str) -> bytes:
        """The bytes handed to DATA: built, then DKIM-signed when the header
        From's domain has a key (after every header change). Raises
        MessageError (the request cannot be mailed), DkimError or
        SecretUnavailable (a key or secret cannot be used: defer)."""
        lists = self.list_headers(request)
        # a plain mail is written directly (plainwire.py: the same bytes); the
        # rest is built with the email package
        plain = plain_wire(request, decision, server, smtp_id, list_headers=lists)
        if plain is not None:
            data, names = plain
        else:
            msg = build_message(request, decision, server, smtp_id, list_headers=lists)
            data, names = message_bytes(msg), list(msg.keys())
        key = self.signer.key_for(self.rt.config.view.dkim, _domain(decision.header_from))
        return data if key is None else sign(data, key, names)

    def recipients(self, decision: RoutingDecided, request: SendRequested) -> list[str]:
        server = self.rt.config.view.servers.get(decision.server)
        if server is None:
            return request.recipients()
        return envelope_recipients(request, server)

    def alternative(self, ledger: core.Ledger, request: SendRequested) -> RoutingDecided | None:
        """The next matching server, skipping those already tried."""
        view = self.rt.config.view
        rest = {k: v for k, v in view.servers.items() if k not in ledger.tried_servers}
        if not rest:
            return None
        d = decide(replace(view, servers=rest), request)
        return d if d.outcome == "routed" else None

    async def attempt(
        self, ledger: core.Ledger, action: core.Action, request: SendRequested
    ) -> tuple[core.Ledger, DeliveryAttempted]:
        if action.interrupted:
            self.interrupted += 1
            log.warning("%s: attempt %d follows one a crash interrupted (may duplicate)",
                        ledger.message_id, ledger.attempt)
        smtp_id = ""
        try:
            decision = carried(RoutingDecided, ledger.decision)
            server = self.rt.config.view.servers.get(ledger.server)
            smtp_id = make_smtp_message_id(ledger.message_id, _domain(decision.header_from))
            if server is None or not server.active:
                error = (f"server {ledger.server!r} is no longer configured or active: "
                         "add it back or let the mail move to another server")
                return self._finish(ledger, [], 0.0, error, action, smtp_id, request,
                                    trouble="server_gone")
            try:
                data = self.wire(request, decision, server, smtp_id)
            except (DkimError, SecretUnavailable) as exc:
                # never sent unsigned: deferred with the reason, retried with back-off
                log.error("%s: not sent: %s", ledger.message_id, exc)
                return self._finish(ledger, [], 0.0, f"not sent: {exc}", action, smtp_id,
                                    request, trouble="local")
            except ValueError as exc:
                outcomes = [{"recipient": r, "status": "failed", "code": 0, "enhanced": "5.6.0",
                             "text": f"the mail could not be built: {exc}"}
                            for r in ledger.pending]
                return self._finish(ledger, outcomes, 0.0, "", action, smtp_id, request)
        except Exception as exc:  # noqa: BLE001 - nothing was sent: defer, back-off applies
            log.exception("%s: attempt %d failed before SMTP", ledger.message_id, ledger.attempt)
            return self._finish(ledger, [], 0.0, f"internal error before sending: {exc!r}",
                                action, smtp_id, request, trouble="local")
        # An unexpected exception from here on leaves the outcome unknown: it
        # propagates, the ledger stays in flight and is retried as interrupted.
        result = await deliver(self.pool, server, decision.envelope_from, ledger.pending, data)
        outcomes = [r.as_outcome() for r in result.outcomes]
        return self._finish(ledger, outcomes, result.duration, result.error, action, smtp_id,
                            request, server)

    def _finish(
        self, ledger: core.Ledger, outcomes: list[dict[str, object]], duration: float,
        error: str, action: core.Action, smtp_id: str, request: SendRequested,
        server: OutgoingServerConfigured | None = None, *, trouble: Trouble = "session",
    ) -> tuple[core.Ledger, DeliveryAttempted]:
        """Fold the attempt (core.finish); after a session-level error the
        policy says whether the mail moves to the next matching server."""
        nxt = self.alternative(ledger, request) if error and fails_over(trouble) else None
        return core.finish(
            ledger, outcomes, now=time.time(), duration=duration, settings=self.rt.settings,
            session_error=error, interrupted=action.interrupted, smtp_message_id=smtp_id,
            next_decision=nxt,
        )


def _domain(header_from: str) -> str:
    try:
        return domain_of(split_address(header_from)[1])
    except ValueError:
        return "postlane.invalid"
