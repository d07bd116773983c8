"""The root of every exception Postlane raises: ``PostlaneError``.

Each error says what happened and what the operator should do (its
message), and carries the facts a log line, a metric or the console needs
without parsing that message: the processor, the server, the recipient and
the code (an SMTP reply code; 0 when none). A fact not known is empty.

It lives here, at the bottom layer (schemas < streams < processors <
postlane), so every package may import it. Errors that were ``ValueError``
or ``RuntimeError`` still are (``class AddressError(PostlaneError,
ValueError)``): callers catching those keep working.
"""

from __future__ import annotations

from typing import Any


class PostlaneError(Exception):
    """An error of Postlane's, with its facts (keyword arguments)."""

    processor: str = ""
    server: str = ""
    recipient: str = ""
    code: int = 0

    def __init__(self, *args: Any, processor: str = "", server: str = "", recipient: str = "",
                 code: int = 0) -> None:
        super().__init__(*args)
        if processor:
            self.processor = processor
        if server:
            self.server = server
        if recipient:
            self.recipient = recipient
        if code:
            self.code = code

    def details(self) -> dict[str, Any]:
        """The facts known (processor, server, recipient, code), for a log
        line or an event; empty ones left out."""
        out: dict[str, Any] = {"processor": self.processor, "server": self.server,
                               "recipient": self.recipient, "code": self.code}
        return {k: v for k, v in out.items() if v}
