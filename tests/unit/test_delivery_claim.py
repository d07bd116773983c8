"""The claim check: a first attempt's ledger rows leave the request's body
out and refer to the record that carries it (``Ledger.body_at``); the
agent puts it back (``with_request``) from that record, redelivered or
read by its offset (``claim.request_of`` reads the record)."""

from __future__ import annotations

from processors.delivery import claim, core
from processors.delivery.core import Ledger
from schemas import MailReleased, SendRequested, encode
from schemas.base import carried

from .test_delivery_core import RETRY, T0, A, B, decision, ok, refused

AT = ("postlane.routing-decided", 2, 41)
D = decision()


def first_attempt() -> Ledger:
    ledger, action = core.on_routed(None, D, [A, B], T0, source=AT)
    assert ledger is not None and ledger.body_at == "postlane.routing-decided:2:41"
    new, _ = core.start(ledger, action, "w1")
    return new


def test_a_first_attempts_row_refers_to_the_record_instead_of_carrying_the_body() -> None:
    ledger = first_attempt()
    value = core.row(ledger)
    assert value["body_at"] == "postlane.routing-decided:2:41"
    request = value["decision"]["request"]
    assert "text" not in request and request["to"] == [A, B] and request["subject"] == "s"
    stored = Ledger.from_dict(value)
    assert core.needs_body(stored) and not core.needs_body(None)
    # put back from the record, the ledger is the one that started
    assert stored is not None
    full = core.with_request(stored, SendRequested.from_data(D.request))
    assert full.decision == ledger.decision and full == ledger
    assert carried(SendRequested, full.decision["request"]).text == "t"


def test_finishing_the_attempt_ends_the_claim_check() -> None:
    """A deferred or failed mail's row carries its request again (its retry
    may come long after, from a timer or a command); a sent one drops it."""
    for outcomes, kept in (([refused(A, 451, "4.7.1 later"), ok(B)], True),
                           ([refused(A, 550, "5.1.1 no such user"), ok(B)], True),
                           ([ok(A), ok(B)], False)):
        new, _ = core.finish(first_attempt(), outcomes, now=T0 + 1, duration=0.1,
                             settings=RETRY)
        value = core.row(new)
        assert "body_at" not in value and not new.body_at
        assert ("text" in value["decision"]["request"]) == kept


def test_a_retry_of_a_deferred_mail_keeps_the_body_in_its_rows() -> None:
    deferred, _ = core.finish(first_attempt(), [refused(A, 451, "4.7.1 later"), ok(B)],
                              now=T0 + 1, duration=0.1, settings=RETRY)
    again, _ = core.start(deferred, core.on_retry_due(deferred, 1, T0 + 10**6), "w1")
    assert core.row(again)["decision"]["request"]["text"] == "t"
    assert not core.needs_body(Ledger.from_dict(core.row(again)))


def test_the_record_read_back_gives_the_request_of_that_mail_only() -> None:
    d = decision()
    want = SendRequested.from_data(d.request)
    assert claim.request_of(encode(d), "m1") == want
    released = MailReleased(message_id="m1", lane="transactional",
                            decision=d.to_representation())
    assert claim.request_of(encode(released), "m1") == want
    assert claim.request_of(encode(d), "m2") is None  # another mail's record
    assert claim.request_of(b"not json", "m1") is None
    assert claim.request_of(None, "m1") is None


def test_an_unreadable_record_says_where_and_what_to_do() -> None:
    exc = claim.RequestUnreadable("m1", core.body_at(*AT), "no record within 10 s")
    assert "postlane.routing-decided partition 2 offset 41" in str(exc)
    assert "Publish the mail again" in str(exc)
