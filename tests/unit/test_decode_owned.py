"""``decode_any_owned`` (the replays' decode: the parsed dict becomes the
event's ``__dict__``) against ``decode_any`` (the processors' decode): for
every event, well formed and malformed in every way the decoder tells
apart, the same event (the same field values, the same representation) or
the same InvalidEvent with the same words. This is what makes a replay
count and skip exactly the records a processor dead-letters."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from schemas import ALL_EVENTS, Event, InvalidEvent, decode_any
from schemas.base import _shape, decode_any_owned, owned_decoder

from .test_schemas import SAMPLES

REGISTRY: dict[str, type[Event]] = {c.__name__: c for c in ALL_EVENTS}
WRONG = [None, "1", 1, 1.5, True, [], {}, ["x"], {"a": 1}, "", 0, -1]


def _record(cls: type[Event]) -> dict[str, Any]:
    """Every field, as our writers write them."""
    return dict(cls(**SAMPLES[cls]).to_representation())


def _outcome(fn: Any, raw: bytes | None, untyped: str = "") -> tuple[str, Any]:
    try:
        ev = fn(REGISTRY, raw, untyped)
    except InvalidEvent as exc:
        return "invalid", (exc.event_type, exc.problems)
    rep = dict(ev.to_representation())
    if rep.get("event_id") and not orjson.loads(raw or b"{}").get("event_id"):
        rep["event_id"] = "(new)"  # a new random id on either side
    if not orjson.loads(raw or b"{}").get("occurred_at"):
        rep["occurred_at"] = "(now)"
    fields = {k: v for k, v in ev.__dict__.items() if k not in ("event_id", "occurred_at")}
    return type(ev).__name__, (rep, fields)


_DECODE = owned_decoder(REGISTRY)


def _same(raw: bytes | None, untyped: str = "") -> tuple[str, Any]:
    a = _outcome(decode_any, raw, untyped)
    b = _outcome(decode_any_owned, raw, untyped)
    c = _outcome(lambda _r, raw, untyped: _DECODE(raw, untyped), raw, untyped)
    assert a == b == c, raw
    return a


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_a_whole_record_is_the_same_event(cls: type[Event]) -> None:
    data = _record(cls)
    kind, _ = _same(orjson.dumps(data))
    assert kind == cls.__name__
    if _shape(cls).decode_owned is not None:  # taken the owned way, not decode_any's
        owned = _shape(cls).decode_owned(dict(data))
        assert owned is not None and owned == decode_any(REGISTRY, orjson.dumps(data))


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_malformed_records_are_refused_alike(cls: type[Event]) -> None:
    rnd = random.Random(cls.__name__)
    data = _record(cls)
    fields = list(data)
    variants: list[dict[str, Any]] = []
    for f in fields:
        variants.append({k: v for k, v in data.items() if k != f})  # missing
        variants += [{**data, f: w} for w in rnd.sample(WRONG, 5)]  # wrong type, None, empty
    variants += [{**data, "colour": "red"}, {**data, "__faust": {"ns": "x"}},
                 {**data, "type": "Other"}, {**data, "type": ""}, {**data, "schema": 0},
                 {**data, "schema": 99}, {**data, "event_id": ""}, {**data, "occurred_at": 0}]
    for v in variants:
        _same(orjson.dumps(v))
        _same(orjson.dumps(v), untyped=cls.__name__)
    # the records the mutations keep valid (a field missing that has a
    # default, an empty id or time) and some refused are both exercised
    kinds = {_same(orjson.dumps(v))[0] for v in variants}
    assert "invalid" in kinds


def test_not_json_not_an_object_unknown_type_and_no_value() -> None:
    for raw in (None, b"", b"{not json", b"[1, 2]", b'"x"', b'{"type": "Nope"}', b"{}",
                b'{"type": 3}'):
        assert _same(raw)[0] == "invalid"
        _same(raw, untyped="SendRequested")


def test_a_refusal_by_the_events_own_checks_has_the_same_words() -> None:
    from schemas import BounceRecorded, SendRequested

    bounce = {**_record(BounceRecorded), "address": "Not Lower@x.test", "reason": "nope"}
    kind, (etype, problems) = _same(orjson.dumps(bounce))
    assert kind == "invalid" and etype == "BounceRecorded" and len(problems) == 2
    send = {**_record(SendRequested), "to": ["not an address"]}
    assert _same(orjson.dumps(send))[0] == "invalid"


@pytest.mark.parametrize("cls", ALL_EVENTS, ids=lambda c: c.__name__)
def test_every_field_is_in_the_events_dict_however_it_was_made(cls: type[Event]) -> None:
    """The status and blacklist folds read an event's fields from its
    ``__dict__`` (a Faust descriptor read is a C call): every way an event
    is made puts every field there, with the value the attribute gives."""
    from schemas import decode

    assert _shape(cls).fast  # plain fields: the descriptor reads __dict__, no coercion
    made = cls(**SAMPLES[cls])
    faust = cls.__new__(cls)
    cls._faust_init(faust, **SAMPLES[cls])  # type: ignore[attr-defined]
    raw = orjson.dumps(_record(cls))
    for ev in (made, faust, cls.from_data(dict(SAMPLES[cls])), made.derive(),
               decode(cls, raw), decode_any(REGISTRY, raw), decode_any_owned(REGISTRY, raw)):
        for name in cls._options.fields:
            assert name in ev.__dict__ and ev.__dict__[name] == getattr(ev, name), name


def test_an_error_inside_problems_is_refused_in_its_words_on_every_path() -> None:
    """A check that raises TypeError or ValueError on a value of the right
    type (``_compile_plain_decode`` turns it into the event's InvalidEvent,
    once for every caller): the same refusal from ``decode``,
    ``decode_given``, ``decode_any``, ``decode_any_owned`` and the owned
    decoder, for a whole record (the owned way) and a compact one (the
    plain way); any other exception is not swallowed."""
    from schemas import decode
    from schemas.base import decode_given
    from schemas.bounces import BounceRecorded

    whole = _record(BounceRecorded)
    compact = {k: v for k, v in whole.items() if k not in ("server", "format")}
    for exc, want in ((TypeError("odd value"), "invalid"), (ValueError("bad value"), "invalid"),
                      (KeyError("x"), KeyError)):
        def problems(self: Event, exc: Exception = exc) -> list[str]:
            raise exc

        original = BounceRecorded.problems
        BounceRecorded.problems = problems  # type: ignore[method-assign]
        try:
            for data in (whole, compact):
                raw = orjson.dumps(data)
                calls = [lambda r=raw: decode(BounceRecorded, r),
                         lambda r=raw: decode_any(REGISTRY, r),
                         lambda r=raw: decode_any_owned(REGISTRY, r),
                         lambda r=raw: _DECODE(r),
                         lambda r=raw: decode_given(BounceRecorded, orjson.loads(r)),
                         lambda r=raw: decode(BounceRecorded, orjson.loads(r))]
                for call in calls:
                    if want == "invalid":
                        with pytest.raises(InvalidEvent) as got:
                            call()
                        assert got.value.event_type == "BounceRecorded"
                        assert got.value.problems == [str(exc)]
                    else:
                        with pytest.raises(KeyError):
                            call()
        finally:
            BounceRecorded.problems = original  # type: ignore[method-assign]


def test_decode_given_is_decode() -> None:
    """``decode_given`` (the dict becomes the event when every field is
    there): the same event as ``decode`` of a copy, whole or compact, and
    the same refusal (a refused ``data`` may have been changed: its
    caller drops it)."""
    from schemas import decode
    from schemas.base import decode_given

    for cls in ALL_EVENTS:
        whole = {**_record(cls), "event_id": "e" * 32, "occurred_at": 1.5e9}  # no new ones
        optional = [k for k in whole if k in cls._options.defaults
                    and k not in ("type", "schema", "event_id", "occurred_at")]
        for data in (whole, {k: v for k, v in whole.items() if k not in optional[:2]},
                     {**whole, "colour": "red"}, {**whole, "schema": 99}):
            try:
                want: Any = decode(cls, dict(data))
            except InvalidEvent as exc:
                want = exc.problems
            given = dict(data)
            try:
                got: Any = decode_given(cls, given)
            except InvalidEvent as exc:
                got = exc.problems
            assert got == want


def test_decoders_are_compiled_once_when_first_used() -> None:
    """A shape's decoders are stubs until first called; the first call
    compiles the decoder and puts it in the stub's place (later calls go
    straight to it), and ``compiled`` gives the compiled one."""
    from schemas.base import _Shape
    from schemas.bounces import BounceRecorded

    shape = _Shape(BounceRecorded)  # a fresh one: nothing compiled yet
    stubs = (shape.types_ok, shape.decode_plain, shape.decode_owned)
    assert all(getattr(fn, "_postlane_lazy", False) for fn in stubs)
    data = _record(BounceRecorded)
    assert shape.decode_plain(dict(data)) == shape.decode_owned(dict(data)) is not None
    assert shape.types_ok(dict(data)) is True
    for name, stub in zip(("types_ok", "decode_plain", "decode_owned"), stubs, strict=True):
        compiled = getattr(shape, name)
        assert compiled is not stub and not getattr(compiled, "_postlane_lazy", False)
        assert shape.compiled(name) is compiled
    assert _Shape(BounceRecorded).compiled("decode_owned").__name__ == (
        "decode_owned_BounceRecorded")
