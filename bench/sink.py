"""A fast SMTP sink for the pipeline benchmark, run as its own process:

    python -m bench.sink [--host 127.0.0.1] [--port 0]

It accepts every mail (aiosmtpd, no disk) and, for each one, writes one line
``<receive time> <X-Postlane-Id>`` to stdout, flushed at once, so the
benchmark follows it live through a pipe. The receive time is
``time.time()`` when the DATA content has been received, just before the
250 reply: the moment the mail is accepted. A mail without the header is
reported with the id ``-``.

The first line is ``READY <port>`` once it listens (``--port 0``: any free
port); on SIGTERM/SIGINT it stops listening, writes ``END <mails>`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time
from typing import Any, BinaryIO

from aiosmtpd.smtp import SMTP

_ID = re.compile(rb"(?im)^X-Postlane-Id:[ \t]*(\S+)")


class Recorder:
    """aiosmtpd handler: accept, record the time and the id, reply 250."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        data: bytes = envelope.original_content or b""
        match = _ID.search(data.split(b"\r\n\r\n", 1)[0])
        mid = match.group(1) if match else b"-"
        self.count += 1
        self.out.write(b"%.6f %s\n" % (now, mid))
        self.out.flush()
        return "250 2.0.0 Ok: accepted by the bench sink"


async def serve(host: str, port: int) -> int:
    out = sys.stdout.buffer
    recorder = Recorder(out)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(recorder, hostname="bench-sink", ident="postlane bench sink"),
        host, port,
    )
    bound = server.sockets[0].getsockname()[1]
    out.write(b"READY %d\n" % bound)
    out.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    out.write(b"END %d\n" % recorder.count)
    out.flush()
    return recorder.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
