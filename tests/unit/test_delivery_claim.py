"""The claim check: a first attempt's ledger rows leave the decision and
the request's body out and refer to the record that carries them
(``Ledger.body_at``); the agent puts them back (``with_decision``) from that
record, redelivered or read by its offset (``claim.decision_of`` reads it)."""

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
    assert set(value["decision"]) == {"event_id", "server", "request"}
    request = value["decision"]["request"]
    assert "text" not in request and request["to"] == [A, B] and request["subject"] == "s"
    stored = Ledger.from_dict(value)
    assert core.needs_body(stored) and not core.needs_body(None)
    # put back from the record, the ledger is the one that started
    assert stored is not None and core.is_its_decision(stored, D)
    assert not core.is_its_decision(stored, decision())  # another decision of the mail
    full = core.with_decision(stored, D)
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


def test_the_record_read_back_gives_the_decision_of_that_mail_only() -> None:
    d = decision()
    got = claim.decision_of(encode(d), "m1")
    assert got is not None and core.kept_decision(got) == core.kept_decision(d)
    released = MailReleased(message_id="m1", lane="transactional",
                            decision=d.to_representation())
    got = claim.decision_of(encode(released), "m1")
    assert got is not None and core.kept_decision(got) == core.kept_decision(d)
    assert claim.decision_of(encode(d), "m2") is None  # another mail's record
    assert claim.decision_of(b"not json", "m1") is None
    assert claim.decision_of(None, "m1") is None
    assert claim.decision_of(encode(SendRequested.from_data(d.request)), "m1") is None


def test_an_unreadable_record_says_where_and_what_to_do() -> None:
    exc = claim.DecisionUnreadable("m1", core.body_at(*AT), "no record within 10 s")
    assert "postlane.routing-decided partition 2 offset 41" in str(exc)
    assert "Publish the mail again" in str(exc)
    assert "'nonsense'" in str(claim.DecisionUnreadable("m1", "nonsense", "not a topic"))
