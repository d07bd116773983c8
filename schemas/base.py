"""The event base class, the orjson codec, and decoding with validation.

Every event is a past-tense fact: a ``faust.Record`` with ``schema`` (its
version), ``event_id`` and ``occurred_at`` (unix seconds, UTC). Events are
serialized as plain JSON objects (no Faust metadata), so any language can
publish them; ``postlane schemas export`` writes a JSON Schema per event.
Never rename an event or a field: add a field with a default, or a new
version.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Mapping
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


_V4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits of a UUID
_V4_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122 variant


_rng = random.Random()  # our own: nobody else's random.seed() makes ids repeat
os.register_at_fork(after_in_child=_rng.seed)  # a forked child draws its own
_random_bits = _rng.getrandbits


def new_id() -> str:
    """A random UUID (version 4) as 32 hex digits, like ``uuid.uuid4().hex``
    without its 16-byte read of ``os.urandom`` (a system call) and UUID
    object per event: 128 bits of a private ``random.Random`` (seeded from
    the system at start-up and again in a forked child), which an id needs
    only to be unique, not secret."""
    return f"{(_random_bits(128) & _V4_CLEAR) | _V4_SET:032x}"


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _fast_init(cls)

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
        """Semantic validation; subclasses extend (calling ``Event.problems(self)``
        first: a new list, which they may append to). Empty list: valid."""
        # the value in __dict__: every way an event is made puts every field
        # there, and every field is plain (what Faust's descriptor gives, at
        # a C call per read: this runs for every event decoded or made)
        schema = self.__dict__["schema"]
        if 1 <= schema <= self.SCHEMA:
            return []  # a schema this reader knows: the common case
        out: list[str] = []
        if schema < 1:
            out.append(f"schema must be >= 1, got {schema}")
        if schema > self.SCHEMA:
            out.append(
                f"schema {schema} is newer than this reader's {self.SCHEMA}: upgrade Postlane"
            )
        return out



def plain(obj: Any) -> Any:
    """A deep copy of a dataclass (or of dicts and lists of JSON values) as
    plain JSON values: what ``dataclasses.asdict`` gives, made by orjson in
    C (asdict's recursion was a tenth of a worker's time per mail)."""
    return orjson.loads(orjson.dumps(obj))


def compact(cls: type[Event], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` (an event of ``cls`` as a dict) without the fields that hold
    their default: the form of an event carried inside another record (a
    decision's ``request``, a ledger row's ``decision``). Decoding it
    (``carried``, ``construct``, ``from_data``) gives the same event, as it
    fills in every default; readers of a carried dict use ``.get`` with the
    default. Events on their own topics keep every field."""
    defaults = cls._options.defaults
    missing = _MISSING
    return {k: v for k, v in data.items() if defaults.get(k, missing) != v}


_MISSING = object()


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
    return _decode_object(cls, data)


def decode_given(cls: type[E], data: dict[str, Any]) -> E:
    """``decode(cls, data)`` for a dict its caller gives away (an event
    carried inside another that is read once and dropped, as a replay
    does): the same event or the same InvalidEvent; a dict with every
    field of exactly its type becomes the event's ``__dict__`` (as
    ``decode_any_owned`` does) instead of being copied; ``data`` may be
    changed even when it is refused (its ``problems()``)."""
    if not isinstance(data, dict):
        return decode(cls, data)
    return _decode_object(cls, data, owned=True)


def _decode_object(cls: type[E], data: dict[str, Any], owned: bool = False) -> E:
    """``data`` (a parsed JSON object) as ``cls``, validated. ``owned``:
    ``data`` is the caller's to give away (``decode_owned``)."""
    name = cls.__name__
    if "__faust" in data:
        data = {k: v for k, v in data.items() if k != "__faust"}
    declared = data.get("type")
    if declared not in (None, "", name):
        raise InvalidEvent(name, [f"type is {declared!r}, expected {name!r}"])
    shape = _SHAPES.get(cls) or _shape(cls)
    if owned and shape.decode_owned is not None:
        obj = shape.decode_owned(data)  # every field: ``data`` becomes the event's
        if obj is not None:
            return obj  # type: ignore[no-any-return]
    fast = shape.decode_plain
    if fast is not None:
        obj = fast(data)  # its own InvalidEvent (see _compile_plain_decode)
        if obj is not None:
            return obj  # type: ignore[no-any-return]
    if not data.keys() >= shape.required:
        missing = [f for f in shape.required_order if f not in data]
        raise InvalidEvent(name, [f"missing field {f!r}" for f in missing])
    if not shape.types_ok(data):
        problems = _type_problems(cls, data)
        if problems:
            raise InvalidEvent(name, problems)
    try:
        return _build(shape, cls, data)
    except InvalidEvent:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(name, [str(exc)]) from None


# --- building records without Faust's per-field descriptors -----------------------------------
#
# ``cls(**data)`` runs a generated ``__init__`` that sets every field through
# its descriptor (``prepare_value``, ``typing.cast``, the tag): about 1 us a
# field, 15-25 us an event, more than the rest of decoding. Every field of
# every event is a plain str/int/float/bool/list/dict with no coercion and no
# tag, so what those setters store is the value itself (or the default for an
# optional field given as None). ``construct`` stores the same values in the
# same order straight into the instance's ``__dict__`` and then runs the same
# ``__post_init__`` steps (type, schema, event_id, occurred_at, problems). A
# class whose fields are not all that simple is built the slow way.

_SIMPLE = {str: str, int: int, float: (int, float), bool: bool}
_PLAIN_DESCRIPTORS = frozenset({"StringField", "IntegerField", "FloatField", "BooleanField",
                                "FieldDescriptor"})
_SCALAR, _LIST, _DICT = 0, 1, 2
_INIT_NAMES = frozenset({"self", "__strict__", "__faust"})  # parameters of Faust's __init__


class _Shape:
    """What ``construct`` and ``_type_problems`` need of an event class,
    worked out once per class."""

    def __init__(self, cls: type[Event]) -> None:
        options = cls._options
        self.fields: tuple[str, ...] = tuple(options.fieldpos.values())
        self.defaults: dict[str, Any] = dict(options.defaults)
        self.optional = frozenset(options.optionalset)
        self.required_order = [f for f in options.fields if f not in options.defaults]
        self.required = frozenset(self.required_order)
        # every field in __init__'s order, with its default (a required
        # field's place is filled from the data)
        self.template: dict[str, Any] = {"__evaluated_fields__": None}
        self.template.update((f, self.defaults.get(f)) for f in self.fields)
        self.fast = (
            not getattr(options, "validation", False)
            and cls.__post_init__ is Event.__post_init__
            and all(
                type(d).__name__ in _PLAIN_DESCRIPTORS and not getattr(d, "coerce", True)
                and getattr(d, "tag", None) is None and getattr(d, "_to_python", None) is None
                for d in options.descriptors.values()
            )
        )
        checks: list[tuple[str, int, Any, str]] = []
        for fname, ftype in options.fields.items():
            expected = _SIMPLE.get(ftype)
            if expected is not None:
                checks.append((fname, _SCALAR, expected, ftype.__name__))
                continue
            origin = getattr(ftype, "__origin__", None)
            if origin is list:
                checks.append((fname, _LIST, list, "list"))
            elif origin is dict:
                checks.append((fname, _DICT, dict, "object"))
        self.checks = tuple(checks)
        self.known = frozenset(self.fields) | self.required
        self.cls = cls
        # every field checkable: a record plainly well formed is decoded in one
        # step. ``types_ok``, ``decode_plain`` and ``decode_owned`` are compiled
        # when first called (until then each is a stub that compiles it, puts
        # it in its place and calls it): a process compiles only what it
        # decodes (a few tenths of a millisecond each; a replay's registry
        # names a dozen events, most of them absent from its topics). Plain
        # attributes, no ``__getattr__``: that would make every attribute
        # read of a shape a slow one
        self.plain_ok = (self.fast and {c[0] for c in self.checks} == set(self.fields)
                         == set(options.fields))
        self.types_ok: Any = self._lazy("types_ok")
        self.decode_plain: Any = self._lazy("decode_plain") if self.plain_ok else None
        self.decode_owned: Any = self._lazy("decode_owned") if self.plain_ok else None

    def _lazy(self, name: str) -> Any:
        def first(data: dict[str, Any]) -> Any:
            return self.compiled(name)(data)

        first._postlane_lazy = True  # type: ignore[attr-defined]
        return first

    def compiled(self, name: str) -> Any:
        """``types_ok`` / ``decode_plain`` / ``decode_owned``, compiled
        (None: the class's fields are not all plain): for a caller that
        keeps the function."""
        fn = getattr(self, name)
        if fn is None or not getattr(fn, "_postlane_lazy", False):
            return fn
        if name == "types_ok":
            fn = _compile_type_check(self.cls.__name__, self.checks)
        else:
            fn = _compile_plain_decode(self.cls, self, owned=name == "decode_owned")
        setattr(self, name, fn)
        return fn


def _compile_type_check(name: str, checks: tuple[tuple[str, int, Any, str], ...]) -> Any:
    """A function ``data -> bool``: True when every field present has
    exactly its type (``_type_problems`` would find nothing); straight-line
    code, several times faster than the loop. False: ask ``_type_problems``."""
    lines = [f"def types_ok_{name}(data, _M=_MISSING):"]
    for fname, kind, expected, _tname in checks:
        lines.append(f"    v = data.get({fname!r}, _M)")
        if kind == _SCALAR and expected == (int, float):
            lines.append("    if v is not _M and v.__class__ is not float "
                         "and v.__class__ is not int: return False")
        else:
            tname = {str: "str", int: "int", bool: "bool", list: "list", dict: "dict"}[expected]
            lines.append(f"    if v is not _M and v.__class__ is not {tname}: return False")
    lines.append("    return True")
    namespace: dict[str, Any] = {"_MISSING": _MISSING}
    exec("\n".join(lines), namespace)  # noqa: S102 - our own field names, checked above
    return namespace[f"types_ok_{name}"]


def _compile_plain_decode(cls: type[Event], shape: _Shape, owned: bool = False) -> Any:
    """A function ``data -> event | None`` for a class whose every field
    is checkable: the event ``_build`` makes of ``data`` when ``data`` has
    every required field, no other, each of exactly its type (so no None:
    no default to put in its place); None otherwise (the caller then
    checks, refuses or builds the general way, in words). The same values
    in the same order, the same ``__post_init__`` steps, the same
    ``problems()``; straight-line code, one dict built.

    ``owned`` (``decode_any_owned``): ``data`` is the caller's to give
    away, and only a record with every field (optional ones too) is taken:
    ``data`` itself becomes the event's ``__dict__`` (the same values after
    the same steps; its keys in the record's order) instead of a copy in
    the fields' order. ``data`` is changed only once every check passed:
    None leaves it as it was.

    Refusals: ``problems()`` as an InvalidEvent, and a TypeError or
    ValueError raised on the way (a check meeting a value of the right type
    holding something unexpected) as an InvalidEvent with its words, so
    every caller takes the answer as it is."""
    name = cls.__name__
    kind_ = "owned" if owned else "plain"
    # the builtins as locals, the present fields read by subscript (a KeyError:
    # one missing), ``type(v) is``: about half the cost of ``data.get`` and
    # ``v.__class__`` per field
    lines = [f"def decode_{kind_}_{name}(data, _M=_MISSING, _type=type, _str=str, _int=int, "
             "_float=float, _bool=bool, _list=list, _dict=dict):",
             "  try:",  # the body, one level in (see the end)
             "    try:"]
    required = shape.required
    assert len(shape.checks) == len(shape.known)  # one check per field, each field once
    optional: list[tuple[str, str]] = []
    for fname, kind, expected, _tname in shape.checks:
        if kind == _SCALAR and expected == (int, float):
            get, bad = "v = _type(data[{f}])", "v is not _float and v is not _int"
            oget, obad = "v = data.get({f}, _M)", "_type(v) is not _float and _type(v) is not _int"
        else:
            tname = {str: "_str", int: "_int", bool: "_bool", list: "_list",
                     dict: "_dict"}[expected]
            get, bad = "v = _type(data[{f}])", f"v is not {tname}"
            oget, obad = "v = data.get({f}, _M)", f"_type(v) is not {tname}"
        if fname in required or owned:
            lines.append("      " + get.format(f=repr(fname)))
            lines.append(f"      if {bad}: return None")
        else:
            optional.append((oget.format(f=repr(fname)), obad))
    if lines[-1] == "    try:":
        lines.append("      pass")  # no field must be there
    lines += ["    except KeyError:",  # a field that must be there is not
              "      return None",
              f"    n = {len(shape.checks)}"]  # the fields present (every one checked)
    for get, bad in optional:
        lines.append(f"    {get}")
        lines.append("    if v is _M: n -= 1")
        lines.append(f"    elif {bad}: return None")
    # n known fields are in data: any other key makes it longer (no subset
    # test of every key: a third of a microsecond)
    lines.append("    if len(data) != n: return None")
    if owned:
        lines += ["    values = data"]
    else:
        lines += ["    values = _TEMPLATE.copy()",
                  "    values.update(data)",
                  "    values['__evaluated_fields__'] = set()"]
    lines += [
        f"    values['type'] = {name!r}",
        "    if not values['schema']: values['schema'] = _SCHEMA",
        "    if not values['event_id']: values['event_id'] = _new_id()",
        "    if not values['occurred_at']: values['occurred_at'] = _time()",
    ]
    if owned:
        lines.append("    values['__evaluated_fields__'] = set()")
    lines += [
        "    obj = _new(_cls)",
        "    obj.__dict__ = values",
        "    problems = obj.problems()",
        f"    if problems: raise _Invalid({name!r}, problems)",
        "    return obj",
        # a TypeError or ValueError of a check (a value of the right type
        # holding something unexpected) is refused as the event's problem,
        # in its words: here once for every caller, and free in 3.11 when
        # nothing is raised
        "  except _Invalid: raise",
        f"  except (TypeError, ValueError) as exc: raise _Invalid({name!r}, [str(exc)]) from None",
    ]
    namespace: dict[str, Any] = {
        "_MISSING": _MISSING, "_KNOWN": shape.known, "_TEMPLATE": shape.template,
        "_SCHEMA": cls.SCHEMA, "_new_id": new_id, "_time": time.time, "_new": cls.__new__,
        "_cls": cls, "_Invalid": InvalidEvent,
    }
    exec("\n".join(lines), namespace)  # noqa: S102 - our own field names
    return namespace[f"decode_{kind_}_{name}"]


_SHAPES: dict[type[Event], _Shape] = {}


def _shape(cls: type[Event]) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        shape = _SHAPES[cls] = _Shape(cls)
    return shape


def _fast_init(cls: type[Event]) -> None:
    """Give ``cls`` an ``__init__`` that builds it as ``construct`` does
    when called with keyword arguments only (every event built in the
    pipeline), and calls Faust's generated one (kept as ``_faust_init``)
    for anything else (positional arguments, ``from_data``'s non-strict
    mode, a class whose fields are not all plain)."""
    faust_init = cls.__dict__.get("__init__")
    if faust_init is None or getattr(faust_init, "_postlane_fast", False):
        return
    cls._faust_init = faust_init  # type: ignore[attr-defined]

    def __init__(self: Event, *args: Any, **kwargs: Any) -> None:
        shape = _SHAPES.get(cls) or _shape(cls)
        if (args or not shape.fast or not kwargs.keys() <= shape.known
                or not kwargs.keys() >= shape.required):
            faust_init(self, *args, **kwargs)  # its own errors and its own modes
            return
        _fill(self, shape, cls, kwargs)

    __init__._postlane_fast = True  # type: ignore[attr-defined]
    __init__.__doc__ = faust_init.__doc__
    cls.__init__ = __init__  # type: ignore[method-assign]


def construct(cls: type[E], data: dict[str, Any]) -> E:
    """``cls(**data)``, without the cost of Faust's field descriptors: the
    same instance (the same values, defaults and validation), the same
    TypeError for an unknown field and the same InvalidEvent."""
    return _build(_shape(cls), cls, data)


def carried(cls: type[E], data: dict[str, Any]) -> E:
    """An event carried inside another (a decision's ``request``, a ledger
    row's ``decision``) as ``cls``: ``construct`` (checked, about a quarter
    of Faust's ``from_data``), or ``cls.from_data`` (unchecked, unknown fields
    ignored) for what ``construct`` refuses, as it was read before."""
    try:
        return construct(cls, data)
    except (TypeError, InvalidEvent):
        return cls.from_data(data)  # type: ignore[return-value]


def _build(shape: _Shape, cls: type[E], data: dict[str, Any]) -> E:
    if not shape.fast:
        return cls(**data)
    if not data.keys() <= shape.known:
        extra = data.keys() - shape.known
        if extra & _INIT_NAMES:
            return cls(**data)  # what Faust's __init__ makes of its own parameters
        from mode.utils.text import pluralize

        raise TypeError("{} got unexpected {}: {}".format(
            cls.__name__, pluralize(len(extra), "argument"), ", ".join(map(str, sorted(extra)))))
    if not data.keys() >= shape.required:
        return cls(**data)  # Faust's own TypeError for a missing argument
    obj = cls.__new__(cls)
    _fill(obj, shape, cls, data)
    return obj


def _fill(obj: Event, shape: _Shape, cls: type[Event], data: dict[str, Any]) -> None:
    """What Faust's ``__init__`` (strict mode) and ``__post_init__`` store
    in ``obj``, for ``data`` with every required field and no other."""
    values = shape.template.copy()  # the order of Faust's setters
    values.update(data)
    values["__evaluated_fields__"] = set()
    if None in data.values():  # an optional field given as None gets its default
        optional, defaults = shape.optional, shape.defaults
        for fname, value in data.items():
            if value is None and fname in optional:
                values[fname] = defaults[fname]
    # Event.__post_init__, on the dict
    values["type"] = cls.__name__
    if not values["schema"]:
        values["schema"] = cls.SCHEMA
    if not values["event_id"]:
        values["event_id"] = new_id()
    if not values["occurred_at"]:
        values["occurred_at"] = time.time()
    obj.__dict__.update(values)
    problems = obj.problems()
    if problems:
        raise InvalidEvent(cls.__name__, problems)


def _type_problems(cls: type[Event], data: dict[str, Any]) -> list[str]:
    """Check simple field types strictly (Faust would coerce 3 to '3')."""
    out: list[str] = []
    for fname, kind, expected, tname in _shape(cls).checks:
        if fname not in data:
            continue
        value = data[fname]
        if kind == _SCALAR:
            vtype = type(value)
            if vtype is expected:
                continue
            if expected is not bool and vtype is bool:
                out.append(f"field {fname!r} must be {tname}, got bool")
            elif not isinstance(value, expected):
                out.append(f"field {fname!r} must be {tname}, got {vtype.__name__}")
        elif not isinstance(value, expected):
            what = "a list" if kind == _LIST else "an object"
            out.append(f"field {fname!r} must be {what}, got {type(value).__name__}")
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
    return _decode_object(cls, data)


def decode_any_owned(registry: dict[str, type[Event]], raw: bytes | str | None,
                     untyped: str = "") -> Event:
    """``decode_any`` for a reader that keeps nothing of a record but the
    event it reads (a replay folding the log): the same event (the same
    field values) or the same InvalidEvent, for every record. A record with
    every field of its type (optional ones too: what our own writers
    write), each of exactly its type, becomes the event around the dict
    orjson parsed (``decode_owned``: its ``__dict__`` in the record's key
    order) instead of a copy of it; anything else is decoded by
    ``decode_any``'s own steps."""
    if raw is None:
        raise InvalidEvent("event", ["empty message (no value)"])
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("event", [f"not JSON: {exc}"]) from None
    if not isinstance(data, dict):
        raise InvalidEvent("event", [f"expected a JSON object, got {type(data).__name__}"])
    declared = data.get("type")
    tname = untyped if declared in (None, "") and untyped else declared
    cls = registry.get(tname) if isinstance(tname, str) else None
    if cls is None:
        raise InvalidEvent("event", [f"unknown type {tname!r}; expected one of {sorted(registry)}"])
    return _decode_object(cls, data, owned=True)


def owned_decoder(registry: dict[str, type[Event]]) -> Any:
    """``decode_any_owned`` for one registry, its dispatch worked out once:
    ``decode(raw, untyped="")``. A record whose ``type`` names an event of
    the registry by its own name goes straight to that event's
    ``decode_owned``; anything else (not JSON, not an object, no or another
    type, a field missing...) takes ``decode_any_owned``'s steps: the same
    event or the same InvalidEvent. An event's ``decode_owned`` is looked
    up (and compiled) when the first record of its type comes."""
    table = _OwnedTable(registry)
    loads = orjson.loads

    def decode(raw: bytes | str | None, untyped: str = "") -> Event:
        if raw is not None:
            try:
                data = loads(raw)
            except orjson.JSONDecodeError:
                data = None  # refused below, in decode_any's words
            if type(data) is dict:
                declared = data.get("type")
                found = table[declared] if type(declared) is str else None
                if found is not None:
                    owned, cls = found
                    obj = owned(data)  # its own InvalidEvent (see _compile_plain_decode)
                    if obj is not None:
                        return obj  # type: ignore[no-any-return]
                    return _decode_object(cls, data)  # data as it was parsed
        return decode_any_owned(registry, raw, untyped)

    return decode


class _OwnedTable(dict[str, Any]):
    """``owned_decoder``'s dispatch: type name -> (``decode_owned``, the
    event class), filled in as the names come; None for a name that is not
    an event of the registry by its own name, or one with no
    ``decode_owned`` (kept only for the registry's names)."""

    def __init__(self, registry: dict[str, type[Event]]) -> None:
        super().__init__()
        self.registry = registry

    def __missing__(self, name: str) -> tuple[Any, type[Event]] | None:
        cls = self.registry.get(name)
        if cls is None or cls.__name__ != name:
            return None
        owned = _shape(cls).compiled("decode_owned")
        entry = self[name] = (owned, cls) if owned is not None else None
        return entry
