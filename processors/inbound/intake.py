"""Turn raw mail into the inbound topic's events: shared by the IMAP
fetcher and the SMTP ingress. Pure."""

from __future__ import annotations

import base64
import uuid

from schemas import InboundMailReceived, InboundMailRejected, ids

from .mail import header_block, header_message_id, inbound_key

_IMAP_NS = ids.IMAP_MESSAGE


def imap_inbound_id(server: str, uidvalidity: int, uid: int) -> str:
    """Deterministic: the same mail on the same server always gets it."""
    return uuid.uuid5(_IMAP_NS, f"{server}/{uidvalidity}/{uid}").hex


def received(
    raw: bytes, inbound_id: str, source: str, now: float, *, server: str = "",
    tenant: str = "", folder: str = "", uidvalidity: int = 0, uid: int = 0,
    envelope_from: str = "", envelope_to: list[str] | None = None,
) -> tuple[str, InboundMailReceived]:
    """(partition key, event) for a mail taken in whole."""
    mid = header_message_id(raw)
    event = InboundMailReceived(
        inbound_id=inbound_id, source=source, mail=base64.b64encode(raw).decode(),
        size=len(raw), server=server, tenant=tenant, folder=folder, uidvalidity=uidvalidity,
        uid=uid, message_id=mid[:998], envelope_from=envelope_from,
        envelope_to=list(envelope_to or []), received_at=now,
    )
    return inbound_key(mid, inbound_id), event


def rejected(
    headers: bytes, size: int, limit: int, inbound_id: str, source: str, now: float, *,
    server: str = "", tenant: str = "", folder: str = "", uidvalidity: int = 0, uid: int = 0,
) -> tuple[str, InboundMailRejected]:
    """(partition key, event) for a mail over the size limit, from its
    header block only."""
    mid = header_message_id(headers)
    reason = (
        f"the mail is {size} bytes, over the limit of {limit} bytes, so it was not fetched; "
        "it stays on the server unread (raise max_message_bytes of the incoming server, and "
        "Kafka's message.max.bytes with POSTLANE_MAX_REQUEST_BYTES, to take such mail)"
    )
    event = InboundMailRejected(
        inbound_id=inbound_id, source=source, reason=reason, size=size, server=server,
        tenant=tenant, folder=folder, uidvalidity=uidvalidity, uid=uid, message_id=mid[:998],
        headers=header_block(headers), received_at=now,
    )
    return inbound_key(mid, inbound_id), event
