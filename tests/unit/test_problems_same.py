"""``problems()`` of RoutingDecided, MailReleased and DeliveryAttempted
(written on ``__dict__``, asking ``Event.problems`` only for a schema out of
range) say exactly what the earlier versions said, in the same order, for
good and bad values of every field they check and every schema (the earlier
versions kept here as the reference)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from schemas import DeliveryAttempted, Event, MailReleased, RoutingDecided
from schemas.delivery import RCPT_STATUSES
from schemas.queue import LANES
from schemas.routing import OUTCOMES, RULES

SCHEMAS = (0, -1, 1, 2, 99)


def routing_reference(self: Any) -> list[str]:
    """RoutingDecided.problems before (as on a57000b)."""
    out = Event.problems(self)
    if self.direct and self.outcome != "routed":
        out.append("only a routed decision can be direct")
    if self.outcome not in OUTCOMES:
        out.append(f"outcome {self.outcome!r} must be one of {', '.join(OUTCOMES)}")
    if self.rule not in RULES:
        out.append(f"rule {self.rule!r} must be one of {', '.join(RULES)}")
    if self.outcome == "routed" and not (self.server and self.header_from):
        out.append("a routed decision needs server and header_from")
    return out


def released_reference(self: Any) -> list[str]:
    """MailReleased.problems before (as on a57000b)."""
    out = Event.problems(self)
    if self.lane not in LANES:
        out.append(f"lane {self.lane!r} must be one of {', '.join(LANES)}")
    if self.decision.get("message_id") != self.message_id:
        out.append("decision must be this mail's RoutingDecided")
    return out


def attempted_reference(self: Any) -> list[str]:
    """DeliveryAttempted.problems before (as on a57000b)."""
    out = Event.problems(self)
    for o in self.outcomes:
        if not isinstance(o, dict) or o.get("status") not in RCPT_STATUSES:
            out.append(f"outcome {o!r} needs status in {', '.join(RCPT_STATUSES)}")
    return out


def _with(ev: Event, **values: Any) -> Event:
    ev.__dict__.update(values)  # as a decoder puts them (no check on the way)
    return ev


ROUTED = RoutingDecided(message_id="m-1", outcome="routed", server="main", header_from="a@x.test")


@pytest.mark.parametrize(("schema", "outcome", "rule", "server", "header_from", "direct"),
                         list(itertools.product(SCHEMAS, ("routed", "rejected", "bogus"),
                                           ("none", "bogus"), ("", "main"), ("", "a@x.test"),
                                           (False, True))))
def test_routing_decided(schema: int, outcome: str, rule: str, server: str, header_from: str,
                         direct: bool) -> None:
    ev = _with(RoutingDecided.from_data(ROUTED.to_representation()), schema=schema,
               outcome=outcome, rule=rule, server=server, header_from=header_from, direct=direct)
    assert ev.problems() == routing_reference(ev)


@pytest.mark.parametrize(("schema", "lane", "decided_for"),
                         list(itertools.product(SCHEMAS, ("transactional", "mass", "bogus"),
                                           ("m-1", "m-2", None))))
def test_mail_released(schema: int, lane: str, decided_for: str | None) -> None:
    decision = {} if decided_for is None else {"message_id": decided_for}
    ev = _with(MailReleased(message_id="m-1", lane="transactional",
                            decision=ROUTED.to_representation()),
               schema=schema, lane=lane, decision=decision)
    assert ev.problems() == released_reference(ev)


@pytest.mark.parametrize(("schema", "outcomes"), list(itertools.product(SCHEMAS, (
    [], [{"recipient": "a@x.test", "status": "accepted"}],
    [{"recipient": "a@x.test", "status": "bogus"}, {"status": "failed"}, "not an object"],
))))
def test_delivery_attempted(schema: int, outcomes: list[Any]) -> None:
    ev = _with(DeliveryAttempted(message_id="m-1", attempt=1, server="main", outcomes=[]),
               schema=schema, outcomes=outcomes)
    assert ev.problems() == attempted_reference(ev)


def test_a_schema_of_another_type_fails_as_before() -> None:
    ev = _with(DeliveryAttempted(message_id="m-1", attempt=1, server="main", outcomes=[]),
               schema="1")
    with pytest.raises(TypeError) as new:
        ev.problems()
    with pytest.raises(TypeError) as old:
        attempted_reference(ev)
    assert str(new.value) == str(old.value)
