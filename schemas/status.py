"""MessageStatusChanged: the status projection's public stream of changes."""

from __future__ import annotations

from typing import Any

from .base import Event

STATES = (
    "queued", "sending", "sent", "deferred", "failed", "bounced",
    "cancelled", "rejected", "suppressed",
)


class MessageStatusChanged(Event):
    """One message moved from ``previous`` to ``state``. ``recipients``
    maps each address to its latest outcome ``{"state", "code",
    "enhanced", "text", "server", "attempt"}``; ``reason`` is the error
    text a person reads. ``acknowledged``: an operator acknowledged this
    failure (``postlane ack``), so ``postlane queue`` hides it unless
    ``--all``."""

    message_id: str
    state: str
    previous: str = ""
    reason: str = ""
    server: str = ""
    attempt: int = 0
    recipients: dict[str, Any] = {}
    acknowledged: bool = False
    note: str = ""  # a history-only entry (an ops command or its answer); state unchanged

    def problems(self) -> list[str]:
        out = super().problems()
        if self.state not in STATES:
            out.append(f"state {self.state!r} must be one of {', '.join(STATES)}")
        return out
