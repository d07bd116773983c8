"""UnsubscribeRequested: a recipient asked to receive no more of a list.

Published on the ``bounces`` topic (the suppression log, keyed by the
lower-cased address, so every event about one address is folded in order by
one writer) by the one-click HTTP endpoint (``POST /u/TOKEN``, RFC 8058) and
by inbound routing (``mailto:unsubscribe+TOKEN@catchall``). The blacklist
processor folds it into a suppression of type ``unsubscribe`` for
``tenant`` and ``list_id``.
"""

from __future__ import annotations

from .addresses import AddressError, check_address, has_crlf
from .base import Event

VIA = ("http", "mailto", "manual")


class UnsubscribeRequested(Event):
    """``address`` asked to leave ``list_id`` of ``tenant`` (empty list_id:
    every mass mail of the tenant). ``via``: http (one-click POST), mailto
    (a mail to the unsubscribe address) or manual. ``token_id``: the signed
    token's own id (empty for manual), so a token used twice is one fact.
    ``message_id``: the mail whose header carried the token, when known."""

    address: str
    tenant: str = ""
    list_id: str = ""
    via: str = "http"
    requested_at: float = 0.0
    token_id: str = ""
    message_id: str = ""

    def problems(self) -> list[str]:
        out = super().problems()
        try:
            check_address(self.address)
        except AddressError as exc:
            out.append(f"address: {exc}")
        if self.via not in VIA:
            out.append(f"via {self.via!r} must be one of {', '.join(VIA)}")
        if any(has_crlf(v) for v in (self.tenant, self.list_id, self.token_id, self.message_id)):
            out.append("tenant, list_id, token_id and message_id must be single lines")
        return out
