"""The deliverability report's pure aggregation."""

from __future__ import annotations

from pathlib import Path

import pytest

from postlane import reportops
from postlane.logread import Rec
from schemas import (
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    RoutingDecided,
    SendRequested,
    UnsubscribeRequested,
    encode,
)
from streams.settings import Settings

S = Settings.from_env(environ={}, topic_prefix="t.")
T0 = 1_796_000_000.0  # 2026-11-30


def rec(topic: str, key: str, event: object, at: float) -> Rec:
    return Rec(f"t.{topic}", 0, 0, int(at * 1000), key.encode(), encode(event))  # type: ignore[arg-type]


def records() -> list[Rec]:
    out = []
    for i, (tenant, server) in enumerate([("acme", "main"), ("acme", "main"), ("beta", "bulk")]):
        mid = f"m-{i}"
        req = SendRequested(message_id=mid, from_="a@a.test", to=[f"u{i}@x.test", "n@y.test"],
                            subject="s", text="t", tenant=tenant, occurred_at=T0)
        out.append(rec("send-requested", mid, req, T0))
        out.append(rec("routing-decided", mid, RoutingDecided(
            message_id=mid, outcome="routed", server=server, header_from="a@a.test",
            request=req.to_representation(),
            suppressed={"z@x.test": "complaint (every tenant): ..."} if i == 2 else {},
            occurred_at=T0 + 0.1), T0 + 0.1))
        first = DeliveryAttempted(
            message_id=mid, attempt=1, server=server, occurred_at=T0 + 1 + i,
            outcomes=[{"recipient": f"u{i}@x.test", "status": "accepted", "code": 250},
                      {"recipient": "n@y.test", "status": "deferred", "code": 451,
                       "enhanced": "4.2.2", "text": "mailbox full"}])
        out.append(rec("delivery", mid, first, T0 + 1 + i))
        out.append(rec("delivery", mid, first, T0 + 1 + i))  # redelivered: same event id
        out.append(rec("delivery", mid, DeliveryAttempted(
            message_id=mid, attempt=2, server=server, occurred_at=T0 + 86400,
            outcomes=[{"recipient": "n@y.test", "status": "failed", "code": 550,
                       "enhanced": "5.1.1", "text": "user unknown"}]), T0 + 86400))
    out.append(rec("bounces", "n@y.test", BounceRecorded(
        bounce_id="b1", address="n@y.test", bounced_at=T0 + 86400, reason="unknown_user",
        hard=True, message_id="m-0"), T0 + 86400))
    out.append(rec("bounces", "u1@x.test", ComplaintReceived(
        complaint_id="c1", address="u1@x.test", complained_at=T0 + 2, message_id="m-1"),
        T0 + 2))
    out.append(rec("bounces", "u2@x.test", UnsubscribeRequested(
        address="u2@x.test", message_id="m-2", tenant="beta", requested_at=T0 + 3),
        T0 + 3))
    return out


def by(group: str) -> dict[str, dict[str, object]]:
    return {r.group: r.to_dict() for r in reportops.aggregate(records(), group, S)}


def test_by_server() -> None:
    rows = by("server")
    assert set(rows) == {"main", "bulk"}
    main, bulk = rows["main"], rows["bulk"]
    assert (main["sent"], main["deferred"], main["failed"]) == (2, 2, 2)
    assert main["hard_bounces"] == 1 and main["complaints"] == 1
    assert (bulk["sent"], bulk["suppressed"], bulk["unsubscribes"]) == (1, 1, 1)
    assert main["latency_p50"] == 1.0 and main["latency_p99"] == 2.0


def test_by_domain_reason_tenant_day() -> None:
    assert by("domain")["y.test"]["failed"] == 3
    reasons = by("reason")
    assert reasons["unknown_user"]["failed"] == 3 and reasons["mailbox_full"]["deferred"] == 3
    assert reasons["accepted"]["sent"] == 3 and reasons["complaint"]["suppressed"] == 1
    tenants = by("tenant")
    assert tenants["acme"]["sent"] == 2 and tenants["beta"]["unsubscribes"] == 1
    days = by("day")
    assert set(days) == {"2026-11-30", "2026-12-01"}
    assert days["2026-12-01"]["failed"] == 3


def test_percentile_and_plot(tmp_path: Path) -> None:
    assert reportops.percentile([], 50) is None
    assert reportops.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert reportops.percentile(list(map(float, range(1, 101))), 99) == 99.0
    out = tmp_path / "r.png"
    reportops.plot(reportops.aggregate(records(), "server", S), "server", str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="--by 'week'"):
        reportops.aggregate([], "week", S)
