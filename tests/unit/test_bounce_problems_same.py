"""``_BounceFields.problems`` written out on ``__dict__`` gives what the
earlier version (kept here as the reference) gave: the same problems in the
same words and order, or the same exception, for good and bad bounces of
every kind, values of wrong types included (an event made the unchecked
way, ``from_data``, may carry them)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from schemas.addresses import has_crlf
from schemas.base import Event
from schemas.bounces import (
    BOUNCE_KINDS,
    BOUNCE_SOURCES,
    REASONS,
    BounceRecorded,
    RecipientBounced,
    _address_problems,
)


def reference(self: Any) -> list[str]:
    out = Event.problems(self)
    if not self.bounce_id or has_crlf(self.bounce_id):
        out.append("bounce_id must be a non-empty single line")
    out.extend(_address_problems("address", self.address))
    if self.reason not in REASONS:
        out.append(f"reason {self.reason!r} must be one of {', '.join(REASONS)}")
    if self.kind not in BOUNCE_KINDS:
        out.append(f"kind {self.kind!r} must be one of {', '.join(BOUNCE_KINDS)}")
    if self.source not in BOUNCE_SOURCES:
        out.append(f"source {self.source!r} must be one of {', '.join(BOUNCE_SOURCES)}")
    if self.bounced_at <= 0:
        out.append("bounced_at must be unix seconds > 0")
    if self.replycode and not 200 <= self.replycode <= 599:
        out.append(f"replycode {self.replycode} is not an SMTP reply code")
    return out


GOOD: dict[str, Any] = dict(
    bounce_id="b1", address="user@dest.test", bounced_at=1.7e9, reason="unknown_user",
    hard=True, status="5.1.1", replycode=550, diagnostic="550 5.1.1 no such user",
    message_id="m1", server="mx.dest.test", source="delivery", format="", kind="failed")
BAD: dict[str, list[Any]] = {
    "bounce_id": ["", "a\r\nb", "x\n", None, 0, 7],
    "address": ["", "User@Dest.test", " user@dest.test", "a\r\n@b.test", "no-at", "a@b",
                "a@@b.test", "x" * 70 + "@dest.test", "a@-bad-.test", None, 0, 5, ["a@b.test"]],
    "reason": ["", "nope", "Unknown_User", None, 3, ["unknown_user"], {"a": 1}],
    "kind": ["", "complaint", "other", None, 1, ["failed"]],
    "source": ["", "mail", "x", None, 2],
    "bounced_at": [0, -1.0, 0.0, 1, None, "1"],
    "replycode": [0, 199, 200, 599, 600, -5, None],
    "schema": [0, 2, 99, 1],
}


def _bounce(cls: type[Event], fields: dict[str, Any]) -> Any:
    ev = object.__new__(cls)  # the values as they are, unchecked (as from_data keeps them)
    ev.__dict__.update(cls(**GOOD).__dict__)
    ev.__dict__.update(fields)
    return ev


def _outcome(fn: Any, ev: Any) -> Any:
    try:
        return fn(ev)
    except Exception as exc:  # noqa: BLE001 - the same exception either way
        return type(exc)


def _cases() -> list[dict[str, Any]]:
    rnd = random.Random(25)
    cases: list[dict[str, Any]] = [{}]
    for name, values in BAD.items():
        cases += [{name: v} for v in values]
    for _ in range(400):
        names = rnd.sample(sorted(BAD), rnd.randint(2, 4))
        cases.append({n: rnd.choice(BAD[n]) for n in names})
    return cases


@pytest.mark.parametrize("cls", [BounceRecorded, RecipientBounced])
def test_problems_are_the_reference(cls: type[Event]) -> None:
    for fields in _cases():
        ev = _bounce(cls, fields)
        assert _outcome(cls.problems, ev) == _outcome(reference, ev), fields
