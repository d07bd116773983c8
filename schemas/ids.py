"""Every uuid5 namespace, in one module: the ids Postlane derives (an
event's ``event_id`` from its cause, so a replayed or retried step gives the
same id and readers drop the copy).

The values never change: a changed namespace gives new ids for the same
causes, and a redelivered input would then be counted twice. Add a new
namespace for a new kind of id; never reuse one.
"""

from __future__ import annotations

import uuid

# service requests: (tenant, idempotency key) -> message_id (postlane/publisher.py)
PUBLISHED = uuid.UUID("5b1d1c38-3d4e-4f43-9d53-6f1f5a0c2b17")
# inbound: an IMAP message (server/uidvalidity/uid) -> inbound_id
IMAP_MESSAGE = uuid.UUID("b1f3c5d2-8a4e-4f0b-9c6d-2e7a1b3c4d5f")
# inbound: InboundMailRouted of an inbound mail
INBOUND_ROUTED = uuid.UUID("0f7d0a47-61c3-4f57-8a8b-3b9e6d1c2a90")
# inbound: the bounce back (SendRequested) of a refused inbound mail
INBOUND_BOUNCE = uuid.UUID("6c0b7a8e-3f52-4c1e-9a57-0d1f1b0c5e21")
# bounces: events derived from a bounce mail or a delivery outcome
BOUNCE_DERIVED = uuid.UUID("3f6c2b8e-91d4-4a57-b0e3-5c7d9a1e2f48")
# blacklist: BlacklistChanged from its cause and address
BLACKLIST_CHANGED = uuid.UUID("a4d1c9e2-5b7f-4e38-9c0a-6f2e1d3b8a57")
# unsubscribe: UnsubscribeRequested from a token and how it came (link, mail)
UNSUBSCRIBED = uuid.UUID("8d7c1f52-0b5e-4a43-a1a3-64f2c7b0e9d4")
# webhooks: a notification (cause, recipient), a delivery of it to a webhook
WEBHOOK_NOTE = uuid.UUID("3d1f7a52-8c4e-4b1a-9e07-5f2c6d8a1b34")
WEBHOOK_DELIVERY = uuid.UUID("a7c2e915-0b3d-4f6e-8d21-4e9b7f0c3a58")
# delivery: the answer to an operator's command, the MessageCancelled of a cancel
DELIVERY_COMMAND_RESULT = uuid.UUID("e09b1fcd-6648-4783-9b07-4e2b0c49256d")
DELIVERY_CANCELLED = uuid.UUID("4cb3df32-a1c2-4ec8-8e84-021d52ec3553")
# limiter: the answer to an operator's command
LIMITER_COMMAND_RESULT = uuid.UUID("3b8f6a52-9c1e-4d7a-b0e4-5a2c9d1f7e63")
# status: MessageStatusChanged from its cause; the answer to an ack
STATUS_CHANGED = uuid.UUID("6f0c3d7e-2b1a-4c6e-9a51-7d0f3b9e2c44")
STATUS_COMMAND_RESULT = uuid.UUID("9d2e4c71-5a3b-4f08-b6c1-2e8f0a7d3c95")

ALL: dict[str, uuid.UUID] = {k: v for k, v in dict(globals()).items()
                             if isinstance(v, uuid.UUID)}


def derived(namespace: uuid.UUID, name: str) -> str:
    """The id (32 hex digits) of ``name`` in ``namespace``."""
    return uuid.uuid5(namespace, name).hex
