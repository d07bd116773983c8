"""Attribution: a bounce naming one of our mails counts only for an address
that mail was sent to (pure).

A parsed bounce names our mail by its envelope (``bounce+<id>@``) or the
returned headers (``X-Postlane-Id``): both can be written by anyone who can
send mail to the bounce address, which the inbound SMTP ingress accepts
without authentication. So a bounce naming mail M for address A goes on to
the outage check (and may count) only when M's delivery attempts named A as
a recipient; otherwise it is recorded with ``unattributed`` saying why, and
does not count.

State, one row per mail (``bounce-recipients`` table, keyed by message_id,
fed by ``DeliveryStarted``): the lower-cased recipients of every attempt.
"""

from __future__ import annotations

from schemas import BounceRecorded, DeliveryStarted, RecipientBounced
from streams.topics import BOUNCE_DOMAINS, BOUNCES, TopicSpec

from .core import Out, derived_id, domain_of, normal_address


def remember(row: list[str] | None, ev: DeliveryStarted) -> list[str]:
    """The mail's recipients after one more attempt (sorted, lower-cased)."""
    known = set(row or [])
    for value in ev.recipients:
        addr = normal_address(str(value))
        if addr:
            known.add(addr)
    return sorted(known)


def attribute(row: list[str] | None, ev: RecipientBounced) -> Out:
    """Where one bounce naming ``ev.message_id`` goes: on to the outage
    check, or recorded as unattributed (keyed by its address)."""
    address = normal_address(ev.address) or ev.address.lower()
    if row is not None and address in row:
        return [(BOUNCE_DOMAINS, domain_of(address), ev)]
    if row is None:
        why = (f"no mail {ev.message_id!r} was delivered by Postlane to anyone: the bounce "
               "names a mail we did not send (forged, or from before this processor)")
    else:
        why = (f"{address} was not a recipient of mail {ev.message_id!r} (sent to "
               f"{_some(row)}): a bounce counts only for its mail's recipients")
    fields = {k: getattr(ev, k) for k in (
        "bounce_id", "address", "bounced_at", "reason", "hard", "status", "replycode",
        "diagnostic", "message_id", "server", "source", "format", "kind")}
    recorded = BounceRecorded(event_id=derived_id(ev.bounce_id, "unattributed"),
                              unattributed=why, **fields)
    spec: TopicSpec = BOUNCES
    return [(spec, address, recorded)]


def _some(row: list[str]) -> str:
    return ", ".join(row[:3]) + (f" and {len(row) - 3} more" if len(row) > 3 else "")
