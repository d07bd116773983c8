"""RoutingDecided: the router's answer for one SendRequested."""

from __future__ import annotations

from typing import Any

from .base import Event

OUTCOMES = ("routed", "no_server", "rejected", "suppressed")
RULES = (
    "from_filter_address",
    "from_filter_domain",
    "default_from_address",
    "default_from_domain",
    "unfiltered_server",
    "first_server",
    "none",
)


class RoutingDecided(Event):
    """``outcome`` routed: ``server`` will send it with header From
    ``header_from`` (rewritten when ``rule`` is a default_from rule) and
    envelope sender ``envelope_from``. no_server / rejected: ``reason``
    says why. ``request`` carries the SendRequested (event-carried state,
    so delivery needs no join). ``suppressed``: blacklisted recipients
    (address -> why), left out of ``request``; outcome ``suppressed`` when
    every recipient is. ``direct``: no daily limit, rate or ``send_at``
    applied to this transactional mail when it was decided, so the router
    released it itself: delivery takes it from ``routing-decided`` and the
    limiter lets it pass (one hop and one record less per mail)."""

    message_id: str
    outcome: str
    server: str = ""
    header_from: str = ""
    envelope_from: str = ""
    rule: str = "none"
    reason: str = ""
    request: dict[str, Any] = {}
    suppressed: dict[str, str] = {}
    direct: bool = False

    def problems(self) -> list[str]:
        # the field values in ``__dict__`` (every way an event is made puts
        # every field there: tests/unit/test_decode_owned.py); every decision
        # decoded runs this
        f = self.__dict__
        out = Event.problems(self)
        outcome, rule = f["outcome"], f["rule"]
        if f["direct"] and outcome != "routed":
            out.append("only a routed decision can be direct")
        if outcome not in OUTCOMES:
            out.append(f"outcome {outcome!r} must be one of {', '.join(OUTCOMES)}")
        if rule not in RULES:
            out.append(f"rule {rule!r} must be one of {', '.join(RULES)}")
        if outcome == "routed" and not (f["server"] and f["header_from"]):
            out.append("a routed decision needs server and header_from")
        return out
