"""``kept_decision`` in one pass is the decision's kept fields with
``schemas.compact`` applied to the request and then to the whole (the
earlier code, kept here as the reference): the same keys in the same order
and the same values, whatever the decision and its request hold."""

from __future__ import annotations

import random
from typing import Any

import pytest

from processors.delivery import core
from processors.router.core import carried_request
from schemas import RoutingDecided, SendRequested, compact

from .test_delivery_core import decision


def reference(d: RoutingDecided) -> dict[str, Any]:
    data = d.__dict__
    kept = {k: data[k] for k in core._KEPT_OF_DECISION if k in data}
    request = kept.get("request")
    if isinstance(request, dict):
        kept["request"] = compact(SendRequested, request)
    return compact(RoutingDecided, kept)


def _variants() -> list[RoutingDecided]:
    rnd = random.Random(18)
    base = decision()
    full = dict(base.request)
    out = [base]
    for _ in range(200):
        request: Any = dict(full)
        for k in list(request):
            r = rnd.random()
            if r < 0.2:
                del request[k]  # absent: compacted already
            elif r < 0.3:
                request[k] = SendRequested._options.defaults.get(k, request[k])  # at its default
        pick = rnd.random()
        if pick < 0.1:
            request = {}  # an empty request: equal to the default, left out
        elif pick < 0.15:
            request = "not an object"  # kept as it is
        d = object.__new__(RoutingDecided)  # the same event, its own __dict__
        d.__dict__ = {**base.__dict__, "request": request}
        for k in ("server", "header_from", "envelope_from", "rule", "direct", "outcome"):
            if rnd.random() < 0.2:
                d.__dict__[k] = RoutingDecided._options.defaults.get(k, "")
        if rnd.random() < 0.1:
            del d.__dict__["direct"]  # a field missing from __dict__: not kept
        out.append(d)
    return out


@pytest.mark.parametrize("d", _variants())
def test_kept_decision_is_compact_of_the_kept_fields(d: RoutingDecided) -> None:
    got, want = core.kept_decision(d), reference(d)
    assert got == want and list(got) == list(want)
    if isinstance(got.get("request"), dict):
        assert list(got["request"]) == list(want["request"])


def test_a_routers_request_is_kept_as_it_came() -> None:
    d = decision()
    request = carried_request(SendRequested.from_data(d.request))
    d.__dict__["request"] = request
    assert core.kept_decision(d)["request"] == request
    assert core.kept_decision(d)["request"] is not request  # the ledger's own dict
