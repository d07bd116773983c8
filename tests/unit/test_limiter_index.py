"""The limiter's in-memory index rebuilt from its tables (processors/limiter/index.py)."""

from __future__ import annotations

from processors.limiter.core import Mail
from processors.limiter.index import Index


def mail(mid: str, seq: int) -> Mail:
    return Mail(message_id=mid, lane="mass", seq=seq, decision={}, received_at=0.0)


def test_rebuild_pending_in_creation_order_and_prunable_rows() -> None:
    rows = [(b"m3", mail("m3", 3).to_dict()), (b"m1", mail("m1", 1).to_dict()),
            (b"m2", mail("m2", 2).to_dict()), (b"m4", mail("m4", 4).to_dict())]
    held = {b"m2": {"state": "released", "at": 1.0}, b"m4": {"state": "cancelled", "at": 1.0}}
    index = Index(partitions=1)
    index.rebuild(frozenset({0}), rows, held, {})
    assert [m.message_id for m in index.pending[0].values()] == ["m1", "m3"]
    # rows of mail that left before a crash are dropped by the mass lane's prune
    assert sorted(index.done_mass) == [b"m2", b"m4"]
    index.rebuild(frozenset({0}), rows[:2], {}, {})
    assert index.done_mass == []


def test_released_and_cancelled_markers_are_pruned_oldest_first_after_held_keep() -> None:
    held = {b"a": {"state": "released", "at": 100.0}, b"b": {"state": "cancelled", "at": 50.0},
            b"c": {"state": "held", "mail": mail("c", 3).to_dict()},
            b"d": {"state": "released", "at": 900.0}}
    index = Index(partitions=1)
    index.rebuild(frozenset({0}), [], held, {})
    assert index.prunable_held(now=1000.0, keep=3600.0) == []
    assert index.prunable_held(now=3701.0, keep=3600.0) == [b"b", b"a"]  # the held one stays
    index.done_held.append((1000.0, b"e"))  # written by a pass
    assert index.prunable_held(now=5000.0, keep=3600.0) == [b"d", b"e"]
    assert list(index.held[0]) == ["c"]


def test_a_pass_row_stands_for_the_mail_it_released_until_it_is_pruned() -> None:
    """One limiter-held row per pass (``ids``): after a rebuild its mails are
    known as released (a redelivered decision or answer finds them), their
    limiter-mass rows are dropped, and pruning the row forgets them."""
    rows = [(b"m1", mail("m1", 1).to_dict()), (b"m2", mail("m2", 2).to_dict())]
    held = {b"released:1:m1:0:0": {"state": "released", "at": 100.0, "ids": ["m1", "x"]},
            b"c": {"state": "held", "mail": mail("c", 3).to_dict()}}
    index = Index(partitions=1)
    index.rebuild(frozenset({0}), rows, held, {})
    assert index.released == {b"m1", b"x"} and index.rowed == {"c"}
    assert [m.message_id for m in index.pending[0].values()] == ["m2"]
    assert index.done_mass == [b"m1"]
    assert index.prunable_held(now=3701.0, keep=3600.0) == [b"released:1:m1:0:0"]
    assert not index.released and not index.passes
