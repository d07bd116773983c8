"""The event base class, the orjson codec, and decoding with validation.

Every event is a past-tense fact: a ``faust.Record`` with ``schema`` (its
version), ``event_id`` and ``occurred_at`` (unix seconds, UTC). Events are
serialized as plain JSON objects (no Faust metadata), so any language can
publish them; ``postlane schemas export`` writes a JSON Schema per event.
Never rename an event or a field: add a field with a default, or a new
version.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, ClassVar, TypeVar

import faust
import orjson
from faust.serializers import codecs

from .errors import PostlaneError

CODEC = "orjson"


class OrjsonCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


codecs.register(CODEC, OrjsonCodec())


class InvalidEvent(PostlaneError, ValueError):
    """An event failed validation. ``problems`` lists each field's fault."""

    def __init__(self, event_type: str, problems: list[str]) -> None:
        self.event_type = event_type
        self.problems = problems
        super().__init__(f"invalid {event_type}: " + "; ".join(problems))


def new_id() -> str:
    return uuid.uuid4().hex


class Event(
    faust.Record,
    abstract=True,
    serializer=CODEC,
    include_metadata=False,
):
    """Base of every Postlane event."""

    SCHEMA: ClassVar[int] = 1

    type: str = ""
    schema: int = 0
    event_id: str = ""
    occurred_at: float = 0.0

    def __post_init__(self) -> None:
        self.type = type(self).__name__
        if not self.schema:
            self.schema = self.SCHEMA
        if not self.event_id:
            self.event_id = new_id()
        if not self.occurred_at:
            self.occurred_at = time.time()
        problems = self.problems()
        if problems:
            raise InvalidEvent(type(self).__name__, problems)

    def problems(self) -> list[str]:
        """Semantic validation; subclasses extend. Empty list: valid."""
        out: list[str] = []
        if self.schema < 1:
            out.append(f"schema must be >= 1, got {self.schema}")
        if self.schema > self.SCHEMA:
            out.append(
                f"schema {self.schema} is newer than this reader's {self.SCHEMA}: upgrade Postlane"
            )
        return out



def plain(obj: Any) -> Any:
    """A deep copy of a dataclass (or of dicts and lists of JSON values) as
    plain JSON values: what ``dataclasses.asdict`` gives, made by orjson in
    C (asdict's recursion was a tenth of a worker's time per mail)."""
    return orjson.loads(orjson.dumps(obj))


def encode(event: Event) -> bytes:
    """The wire form of an event: a plain JSON object."""
    return orjson.dumps(event.to_representation())


E = TypeVar("E", bound=Event)


def decode(cls: type[E], raw: bytes | str | dict[str, Any] | None) -> E:
    """Parse and validate one event; raise InvalidEvent with the reason."""
    name = cls.__name__
    if raw is None:
        raise InvalidEvent(name, ["empty message (no value)"])
    if isinstance(raw, dict):
        data = raw
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(name, [f"not JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise InvalidEvent(name, [f"expected a JSON object, got {type(data).__name__}"])
    data = {k: v for k, v in data.items() if k != "__faust"}
    declared = data.get("type")
    if declared not in (None, "", name):
        raise InvalidEvent(name, [f"type is {declared!r}, expected {name!r}"])
    missing = [
        f for f in cls._options.fields if f not in data and f not in cls._options.defaults
    ]
    if missing:
        raise InvalidEvent(name, [f"missing field {f!r}" for f in missing])
    problems = _type_problems(cls, data)
    if problems:
        raise InvalidEvent(name, problems)
    try:
        return cls(**data)
    except InvalidEvent:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(name, [str(exc)]) from None


_SIMPLE = {str: str, int: int, float: (int, float), bool: bool}


def _type_problems(cls: type[Event], data: dict[str, Any]) -> list[str]:
    """Check simple field types strictly (Faust would coerce 3 to '3')."""
    out: list[str] = []
    for fname, ftype in cls._options.fields.items():
        if fname not in data:
            continue
        value = data[fname]
        expected = _SIMPLE.get(ftype)  # type: ignore[call-overload]
        if expected is None:
            origin = getattr(ftype, "__origin__", None)
            if origin is list and not isinstance(value, list):
                out.append(f"field {fname!r} must be a list, got {type(value).__name__}")
            elif origin is dict and not isinstance(value, dict):
                out.append(f"field {fname!r} must be an object, got {type(value).__name__}")
            continue
        if ftype is not bool and isinstance(value, bool):
            out.append(f"field {fname!r} must be {ftype.__name__}, got bool")
        elif not isinstance(value, expected):  # type: ignore[arg-type]
            out.append(f"field {fname!r} must be {ftype.__name__}, got {type(value).__name__}")
    return out


def decode_any(registry: dict[str, type[Event]], raw: bytes | str | None,
               untyped: str = "") -> Event:
    """Decode a topic that carries several event types, by their ``type``.
    ``untyped``: the type a record without ``type`` (or with an empty one)
    is read as, on a topic where publishers write only that one (the
    exported JSON Schemas leave ``type`` optional)."""
    if raw is None:
        raise InvalidEvent("event", ["empty message (no value)"])
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("event", [f"not JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise InvalidEvent("event", [f"expected a JSON object, got {type(data).__name__}"])
    tname = data.get("type")
    if tname in (None, "") and untyped:
        tname = untyped
    cls = registry.get(tname) if isinstance(tname, str) else None
    if cls is None:
        raise InvalidEvent("event", [f"unknown type {tname!r}; expected one of {sorted(registry)}"])
    return decode(cls, data)
