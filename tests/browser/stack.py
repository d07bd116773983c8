"""A console to drive in a browser: ``postlane dev`` (embedded broker, every
processor, the console, /metrics) as a subprocess on free loopback ports, a
console user, and a real SMTP server (aiosmtpd) that accepts every
recipient except ``reject...@`` (550 5.1.1) and ``defer...@`` (451). Used by the browser test and
``scripts/console-screenshots``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from streams.embedded import free_port, port_open
from streams.settings import Settings
from tests.e2e.harness import isolated_settings, settings_env

USER, PASSWORD = "ops", "correct horse battery"
CHROMIUM = "/usr/bin/chromium"


class Handler:
    def __init__(self) -> None:
        self.received: list[Envelope] = []

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.lower().startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.lower().startswith("defer"):
            return f"451 4.7.1 <{address}>: Greylisted, try again in 5 minutes"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope)
        return "250 2.0.0 Ok: queued"


class ConsoleStack:
    def __init__(self, tmp: Path, config: str = "") -> None:
        """``config``: a config file's text, applied by postlane dev at start
        (``{smtp_port}`` in it is the test SMTP server's port)."""
        self.tmp = tmp
        self.settings: Settings = isolated_settings(free_port(), tmp / "data", partitions=1)
        self.web_port, self.metrics_port, self.smtp_port = free_port(), free_port(), free_port()
        self.env = {
            **settings_env(self.settings),
            "POSTLANE_WEB_PORT": str(self.web_port),
            "POSTLANE_METRICS_PORT": str(self.metrics_port),
            "POSTLANE_CAPTURE_SMTP_PORT": str(free_port()),
            "POSTLANE_INGRESS_PORT": str(free_port()),
            "POSTLANE_UNSUBSCRIBE_PORT": str(free_port()),
            "POSTLANE_CAPTURE_DIR": str(tmp / "captured"),
            "POSTLANE_WEB_USERS_FILE": str(tmp / "web-users"),
        }
        if config:
            path = tmp / "postlane.toml"
            path.write_text(config.replace("{smtp_port}", str(self.smtp_port)))
            self.env["POSTLANE_CONFIG_FILE"] = str(path)
        self.handler = Handler()
        self.smtp: Controller | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "dev.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> ConsoleStack:
        subprocess.run([sys.executable, "-m", "postlane", "web", "adduser", USER,
                        "--password-stdin"], input=f"{PASSWORD}\n".encode(), env=self.env,
                       check=True, capture_output=True)
        self.smtp = Controller(self.handler, hostname="127.0.0.1", port=self.smtp_port)
        self.smtp.start()
        out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "postlane", "dev"], stdout=out,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"postlane dev exited:\n{self.log_text()[-3000:]}")
            if port_open("127.0.0.1", self.web_port) and "[^Worker]: Ready" in self.log_text():
                return self
            time.sleep(0.3)
        raise AssertionError(f"postlane dev not ready in 90 s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.smtp is not None:
            self.smtp.stop()

    def __enter__(self) -> ConsoleStack:
        try:
            return self.start()
        except BaseException:
            self.stop()  # no postlane dev left running when it did not get ready
            raise

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def launch(playwright: Any) -> Any:
    """Debian's chromium, headless (no sandbox: tests may run as root)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-dev-shm-usage"])
