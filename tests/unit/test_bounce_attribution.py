"""A bounce naming one of our mails counts only for that mail's recipients."""

from __future__ import annotations

from processors.bounces.attribution import attribute, remember
from schemas import BounceRecorded, DeliveryStarted, RecipientBounced
from streams.topics import BOUNCE_DOMAINS, BOUNCES


def _bounce(address: str, mid: str = "m-1") -> RecipientBounced:
    return RecipientBounced(bounce_id=f"b-{address}", address=address, bounced_at=1.0,
                            reason="unknown_user", hard=True, status="5.1.1",
                            message_id=mid, source="mail")


def test_recipients_are_remembered_across_attempts() -> None:
    row = remember(None, DeliveryStarted(message_id="m-1", attempt=1, server="a",
                                         recipients=["Bob@Dest.test", "eve@dest.test"]))
    row = remember(row, DeliveryStarted(message_id="m-1", attempt=2, server="a",
                                        recipients=["bob@dest.test", "not an address"]))
    assert row == ["bob@dest.test", "eve@dest.test"]


def test_a_recipient_goes_on_to_the_outage_check() -> None:
    ev = _bounce("bob@dest.test")
    [(spec, key, out)] = attribute(["bob@dest.test"], ev)
    assert (spec, key, out) == (BOUNCE_DOMAINS, "dest.test", ev)


def test_others_are_recorded_unattributed_with_the_reason() -> None:
    [(spec, key, out)] = attribute(["bob@dest.test"], _bounce("mallory@dest.test"))
    assert (spec, key) == (BOUNCES, "mallory@dest.test")
    assert isinstance(out, BounceRecorded) and out.message_id == "m-1"
    assert out.unattributed.startswith(
        "mallory@dest.test was not a recipient of mail 'm-1' (sent to bob@dest.test)")
    [(_, _, never)] = attribute(None, _bounce("bob@dest.test", "m-9"))
    assert isinstance(never, BounceRecorded)
    assert "no mail 'm-9' was delivered by Postlane" in never.unattributed
    # a redelivered bounce gives the same event again
    assert attribute(None, _bounce("bob@dest.test", "m-9"))[0][2].event_id == never.event_id
