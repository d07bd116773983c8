"""What became of a webhook notification: delivered, or dead-lettered with why.

Both are on the ``webhooks`` topic, keyed by the mail's message id (the
address when the notification names no mail), published by the webhooks
processor once per notification and endpoint: ``delivery_id`` names that
pair (derived from the webhook's name and the notification's id), so a
reader drops a repeat.
"""

from __future__ import annotations

from .base import Event


class WebhookDelivered(Event):
    """The endpoint ``webhook`` answered 2xx to notification ``notification_id``
    (of ``event``: sent, deferred, ...) after ``attempts`` tries."""

    webhook: str
    delivery_id: str
    notification_id: str
    event: str
    message_id: str = ""
    recipient: str = ""
    attempts: int = 1
    status: int = 200
    first_tried_at: float = 0.0


class WebhookDeadLettered(Event):
    """The endpoint ``webhook`` never took notification ``notification_id``:
    ``reason`` says why (the last answer or error, and for how long it was
    retried); ``payload`` is the JSON body that was posted."""

    webhook: str
    delivery_id: str
    notification_id: str
    event: str
    reason: str
    message_id: str = ""
    recipient: str = ""
    attempts: int = 0
    status: int = 0
    first_tried_at: float = 0.0
    payload: str = ""
