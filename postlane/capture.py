"""A capture SMTP server (aiosmtpd) for development: accepts every mail on
loopback and saves it as an .eml file. It is what `postlane dev` delivers
to until a real outgoing server is configured."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Saver:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._seq = itertools.count()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        name = f"{time.time():.6f}-{next(self._seq)}.eml"
        head = (
            f"X-Captured-Mail-From: {envelope.mail_from}\r\n"
            f"X-Captured-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        (self.directory / name).write_bytes(head + envelope.original_content)
        return "250 2.0.0 captured"


class CaptureServer:
    def __init__(self, host: str, port: int, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.handler = _Saver(directory)
        self.controller = Controller(self.handler, hostname=host, port=port)

    def start(self) -> None:
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()
