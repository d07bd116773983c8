"""``progress_of`` by exact type (one lookup) gives what its isinstance
chain gives (kept here as the reference), for every event with a place in
a mail's life, at several attempts and steps."""

from __future__ import annotations

import pytest

from processors.status.core import LIFE_EVENTS, progress_of
from schemas import (
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    MailHeld,
    MailReleased,
    MessageCancelled,
    QuotaRefused,
    RoutingDecided,
    SendRequested,
)

from .status_events import life_event


def chain(event: Event) -> tuple[int, int, int]:
    if isinstance(event, SendRequested):
        return (0, 0, 0)
    if isinstance(event, RoutingDecided):
        return (1, 0, 0)
    if isinstance(event, DeliveryStarted):
        return (2, event.attempt, 0)
    if isinstance(event, MailHeld | MailReleased):
        return (1, event.step, 0)
    if isinstance(event, DeliveryAttempted):
        return (2, event.attempt, 1)
    if isinstance(event, MessageCancelled):
        return (3, 0, 0)
    if isinstance(event, QuotaRefused):
        return (2, max(event.attempt - 1, 0), 2)
    raise TypeError(type(event).__name__)


@pytest.mark.parametrize("cls", LIFE_EVENTS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("n", [0, 1, 2, 7])
def test_rank_by_type_is_the_chains(cls: type[Event], n: int) -> None:
    event = life_event(cls, n)
    assert progress_of(event) == chain(event)
