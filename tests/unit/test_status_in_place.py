"""``core.fold_in_place`` (what replay folds with) gives, event for event,
the status ``batch.apply`` gives (``evolve`` / ``acknowledge``, what the
agent folds with): random orders, subsets and repeats of a mail's events."""

from __future__ import annotations

import random

import pytest

from processors.status.batch import apply
from processors.status.core import MessageStatus, fold_in_place
from schemas import Event

from .status_events import (
    applied,
    attempted,
    cancelled,
    command,
    held,
    no_server,
    refused,
    released,
    request,
    routed,
    started,
)


def pool() -> list[Event]:
    retry, send_now, cancel, ack = (command("retry"), command("send_now"), command("cancel"),
                                    command("ack"))
    return [
        request(), routed(), no_server(), held(), held(why="paced", step=1),
        released(), released(forced=True, command_id=send_now.event_id, step=3),
        started(), attempted("deferred", next_at=1_795_100_000.0), attempted("failed"),
        started(attempt=2), attempted("accepted", attempt=2), attempted("failed", attempt=2),
        retry, applied(retry, by="delivery"), refused(retry), send_now, applied(send_now),
        cancel, cancelled(cancel), cancelled(cancel, reason="cancelled by ops at the desk"),
        ack, ack,
    ]


@pytest.mark.parametrize("seed", range(200))
def test_in_place_equals_apply(seed: int) -> None:
    rnd = random.Random(seed)
    events = pool()
    chosen = rnd.sample(events, rnd.randint(1, len(events)))
    chosen += rnd.sample(chosen, min(3, len(chosen)))  # some redelivered
    if rnd.random() < 0.5:
        chosen.sort(key=lambda e: e.occurred_at)
    live: MessageStatus | None = None
    replayed: MessageStatus | None = None
    for ev in chosen:
        live, _answer, _changed = apply(live, ev)
        replayed = fold_in_place(replayed, ev)
        assert (None if live is None else live.to_dict()) == (
            None if replayed is None else replayed.to_dict()), (seed, type(ev).__name__)


def test_in_place_changes_the_status_it_is_given() -> None:
    st = fold_in_place(None, request())
    assert st is not None
    assert fold_in_place(st, routed()) is st
    assert st.server == "primary"
