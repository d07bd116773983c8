"""What `postlane dev` starts around the processors: the embedded broker,
the topics, a capture SMTP server standing in as the outgoing server until
a real one is configured, and the config file."""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from schemas import OutgoingServerConfigured, SettingsChanged
from streams.broker_watch import EXIT_BROKER_LOST
from streams.client import ensure_topics
from streams.embedded import BrokerError, EmbeddedBroker
from streams.settings import Settings

from .capture import CaptureServer
from .configops import current_view, publish_config

log = logging.getLogger("postlane.dev")

CAPTURE_SERVER = "dev-capture"


class DevStack:
    def __init__(self, settings: Settings, config_file: str | None) -> None:
        self.settings = settings
        self.config_file = config_file
        self.broker: EmbeddedBroker | None = None
        self.capture: CaptureServer | None = None
        self.notes: list[str] = []
        self._stopping = False
        self.unsubscribe: Any = None  # (UnsubscribeServer, close) once started
        self.console: Any = None  # postlane.web.app.ConsoleServer once started

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        s = self.settings
        if s.embedded:
            Path(s.data_dir).mkdir(parents=True, exist_ok=True)
            self.broker = EmbeddedBroker(s, log_path=Path(s.data_dir) / "tansu.log").start()
            threading.Thread(target=self._guard_broker, name="broker-guard", daemon=True).start()
            self.notes.append(
                f"embedded broker: Tansu on {self.broker.bootstrap} "
                "(memory storage only: stopping it loses every topic)"
            )
        ensure_topics(s)
        self.capture = CaptureServer("127.0.0.1", s.capture_smtp_port, Path(s.capture_dir))
        try:
            self.capture.start()
        except OSError as exc:
            self.capture = None
            raise BrokerError(
                f"the capture SMTP server cannot listen on 127.0.0.1:{s.capture_smtp_port} "
                f"({exc.strerror}): set POSTLANE_CAPTURE_SMTP_PORT to a free port"
            ) from None
        self.notes.append(
            f"capture SMTP server on 127.0.0.1:{s.capture_smtp_port}, mails saved in "
            f"{s.capture_dir}"
        )
        self._start_unsubscribe()
        self._apply_config()
        self._start_console()

    def _start_unsubscribe(self) -> None:
        """The one-click unsubscribe service, on loopback."""
        from processors.unsubscribe.web import from_settings

        s = self.settings.replace(unsubscribe_host="127.0.0.1")
        server, close = from_settings(s)
        try:
            server.start()
        except OSError as exc:
            close()
            raise BrokerError(
                f"the unsubscribe service cannot listen on 127.0.0.1:{s.unsubscribe_port} "
                f"({exc.strerror}): set POSTLANE_UNSUBSCRIBE_PORT to a free port") from None
        self.unsubscribe = (server, close)
        self.notes.append(f"unsubscribe service on {server.url} (links: "
                          f"{s.unsubscribe_url}/u/TOKEN)")

    def _start_console(self) -> None:
        """The web console on loopback, with a one-time login link, and
        /metrics; a taken port is said, not fatal (the pipeline runs on)."""
        from streams import metrics

        from .web.app import ConsoleServer

        s = self.settings.replace(web_host="127.0.0.1")
        console = ConsoleServer(s)
        try:
            console.start()
        except OSError as exc:
            self.notes.append(f"console NOT started: 127.0.0.1:{s.web_port} is taken "
                              f"({exc.strerror}); set POSTLANE_WEB_PORT to a free port")
        else:
            self.console = console
            self.notes.append(f"console on {console.url}; log in once with "
                              f"{console.login_link()} (valid 10 minutes, one use)")
        if metrics.serve(s.metrics_host, s.metrics_port) is not None:
            self.notes.append(f"metrics on http://{s.metrics_host}:{s.metrics_port}/metrics")

    def _apply_config(self) -> None:
        from .configfile import load, plan

        view = current_view(self.settings)
        if self.config_file:
            items = plan(view, load(self.config_file))
            publish_config(self.settings, items)
            self.notes.append(f"config {self.config_file}: {len(items)} change(s) published")
            view = current_view(self.settings)
        if not any(s.active for s in view.servers.values()):
            stand_in = OutgoingServerConfigured(
                name=CAPTURE_SERVER, host="127.0.0.1", port=self.settings.capture_smtp_port,
                security="none", priority=1000,
            )
            items = [(stand_in.key, stand_in)]
            if view.version == 0:
                settings_event = SettingsChanged(catchall_domain="localhost.localdomain")
                items.append((settings_event.key, settings_event))
            publish_config(self.settings, items)
            self.notes.append(
                f"no outgoing server configured: '{CAPTURE_SERVER}' (the capture server) "
                "stands in until you apply one"
            )

    def _guard_broker(self) -> None:
        """``postlane dev`` ends when its broker does: the processors would
        otherwise retry a dead broker for ever (15,000 log lines in 90 s)."""
        broker = self.broker
        if broker is None or broker.proc is None:
            return
        code = broker.proc.wait()
        if self._stopping:
            return
        said = (f"the embedded broker (pid {broker.proc.pid}) exited with code {code}: every "
                "queued mail and table it held is lost (memory storage), so postlane dev "
                f"stops; see {Path(self.settings.data_dir) / 'tansu.log'} and run postlane "
                "dev again")
        log.critical(said)
        print(f"postlane: {said}", file=sys.stderr, flush=True)
        if self.capture is not None:
            self.capture.stop()
        logging.shutdown()
        os._exit(EXIT_BROKER_LOST)

    def banner(self) -> str:
        return "\n".join(["postlane dev:", *("  - " + n for n in self.notes)])

    def stop(self) -> None:
        self._stopping = True
        if self.console is not None:
            self.console.stop()
        if self.unsubscribe is not None:
            server, close = self.unsubscribe
            server.stop()
            close()
        if self.capture is not None:
            self.capture.stop()
        if self.broker is not None:
            self.broker.stop()
