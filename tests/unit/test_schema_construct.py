"""``schemas.base.construct`` and the events' own ``__init__`` build the same
event as Faust's generated ``__init__`` (kept as ``cls._faust_init``), only
without its per-field descriptors: the same values in the same order, the
same defaults, the same errors."""

from __future__ import annotations

from typing import Any

import pytest

from schemas import ALL_EVENTS, Event, InvalidEvent, SendRequested
from schemas.base import construct

from .test_schemas import SAMPLES, send_fields


def faust(cls: type[Event], **data: Any) -> Event:
    """The event as Faust's own generated ``__init__`` makes it."""
    obj = cls.__new__(cls)
    cls._faust_init(obj, **data)  # type: ignore[attr-defined]
    return obj


def _fixed(cls: type[Event]) -> dict[str, Any]:
    return {**SAMPLES[cls], "event_id": "e1", "occurred_at": 1700000000.5}


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_construct_is_the_faust_init(cls: type[Event]) -> None:
    data = _fixed(cls)
    slow = faust(cls, **data)
    for fast in (construct(cls, data), cls(**data)):
        assert type(fast) is cls
        assert list(fast.__dict__.items()) == list(slow.__dict__.items())
        assert fast.to_representation() == slow.to_representation()
        assert fast == slow
    # Faust's other ways in: from_data (non-strict), derive
    assert cls.from_data(dict(data)).to_representation() == slow.to_representation()
    assert slow.derive().to_representation() == slow.to_representation()


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_construct_fills_base_fields_and_optional_nones(cls: type[Event]) -> None:
    data = dict(SAMPLES[cls])
    data.pop("event_id", None)
    data.pop("occurred_at", None)
    optional = [f for f in cls._options.optionalset if f not in ("event_id", "occurred_at")]
    data.update({f: None for f in optional if f not in data})
    slow, fast = faust(cls, **data), construct(cls, data)
    for name in ("type", "schema"):
        assert getattr(fast, name) == getattr(slow, name)
    assert fast.event_id and fast.occurred_at > 0
    same = {k: v for k, v in slow.__dict__.items() if k not in ("event_id", "occurred_at")}
    assert {k: v for k, v in fast.__dict__.items() if k not in ("event_id", "occurred_at")} == same


def test_construct_refuses_what_faust_refuses() -> None:
    bad = {**send_fields(), "colour": "red", "size": 3}
    with pytest.raises(TypeError) as slow:
        faust(SendRequested, **bad)
    for build in (lambda d: construct(SendRequested, d), lambda d: SendRequested(**d)):
        with pytest.raises(TypeError) as fast:
            build(bad)
        assert str(fast.value) == str(slow.value)
    wrong = send_fields(to=["not an address"], subject="a\nb")
    with pytest.raises(InvalidEvent) as slow_i:
        faust(SendRequested, **wrong)
    for build in (lambda d: construct(SendRequested, d), lambda d: SendRequested(**d)):
        with pytest.raises(InvalidEvent) as fast_i:
            build(wrong)
        assert fast_i.value.problems == slow_i.value.problems
    with pytest.raises(TypeError) as slow:
        faust(SendRequested, from_="a@example.com")
    for build in (lambda d: construct(SendRequested, d), lambda d: SendRequested(**d)):
        with pytest.raises(TypeError) as fast:
            build({"from_": "a@example.com"})  # no message_id, no to
        assert str(fast.value) == str(slow.value)


def test_positional_arguments_go_to_faust() -> None:
    from schemas import OutgoingServerRemoved

    assert OutgoingServerRemoved("old").name == "old"


def test_a_carried_request_with_wrong_types_is_refused_in_words() -> None:
    """``SendRequested.from_data`` (delivery reads a routed decision's request
    so) skips the per-field type check: a list for ``text`` or ``headers``
    raised AttributeError (found by the decoder fuzz test)."""
    for bad in ({"text": ["a"]}, {"headers": ["X-A: 1"]}):
        with pytest.raises(InvalidEvent, match="must be"):
            SendRequested.from_data({**send_fields(), **bad})


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_decode_plain_is_the_general_decode(cls: type[Event]) -> None:
    """The one-step decode of a plainly well-formed record gives what the
    general path gives; anything not plain (a field missing, an unknown
    one, a wrong type, a None) is left to it (None), to refuse in words."""
    from schemas import decode
    from schemas.base import _shape

    plain = _shape(cls).decode_plain
    assert plain is not None  # every event's fields are plain today
    data = {**_fixed(cls), "type": cls.__name__}
    got = plain(dict(data))
    slow = faust(cls, **_fixed(cls))
    assert list(got.__dict__.items()) == list(slow.__dict__.items())
    assert decode(cls, dict(data)) == slow
    assert plain({**data, "colour": "red"}) is None
    assert plain({**data, "schema": "1"}) is None
    assert plain({**data, "event_id": None}) is None
    # an optional field missing and an unknown one in its place: as many keys
    optional = next(f for f in cls._options.fields if f in cls._options.defaults)
    swapped = {k: v for k, v in data.items() if k != optional}
    assert plain({**swapped, "colour": "red"}) is None
    if optional not in ("type", "schema", "event_id", "occurred_at"):
        assert plain(dict(swapped)) is not None
    required = [f for f in cls._options.fields if f not in cls._options.defaults]
    if required:
        assert plain({k: v for k, v in data.items() if k != required[0]}) is None


def test_decode_plain_refuses_in_the_same_words() -> None:
    from schemas import decode

    bad = {**send_fields(), "to": ["not an address"], "type": "SendRequested"}
    with pytest.raises(InvalidEvent) as fast:
        decode(SendRequested, bad)
    with pytest.raises(InvalidEvent) as slow:
        SendRequested(**{k: v for k, v in bad.items() if k != "type"})
    assert fast.value.problems == slow.value.problems and fast.value.problems
