"""JSON Schema (draft 2020-12) for every event, made from its Faust fields.

``json_schema`` is pure; ``export_all`` writes one ``<EventName>.schema.json``
per event in ``ALL_EVENTS`` plus an ``index.json`` (``postlane schemas
export DIR``). The schemas describe the wire form (field names and JSON
types, which fields are required, no unknown fields). Semantic rules
(address syntax, allowed values, no line breaks in headers) are checked by
``schemas.decode``, which stays the authority: a document that passes the
schema can still be refused by ``decode`` with a reason.

Output is deterministic (no timestamps), so exported files can be committed
and diffed between versions.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from .base import Event
from .errors import PostlaneError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
INDEX_FILE = "index.json"
SUFFIX = ".schema.json"

# Fields every event has (schemas/base.py); their Faust defaults are
# placeholders that the event fills in, so they get a description instead.
_BASE_DESCRIPTIONS = {
    "type": "The event's name; required on topics that carry several event types.",
    "schema": "Version of this event's shape; a reader refuses versions newer than its own.",
    "event_id": "Unique id of this event; assigned when omitted.",
    "occurred_at": "When it happened, unix seconds (UTC); now when omitted.",
}

_SIMPLE: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    Any: {},
}


class UnsupportedFieldType(PostlaneError, TypeError):
    """An event field has a type this exporter cannot express."""


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON Schema of one field type (str, int, float, bool, Any,
    ``list[X]`` and ``dict[str, X]`` of those)."""
    if tp in _SIMPLE:
        return dict(_SIMPLE[tp])
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        item = type_schema(args[0]) if args else {}
        return {"type": "array", "items": item} if item else {"type": "array"}
    if origin is dict:
        if args and args[0] is not str:
            raise UnsupportedFieldType(f"dict keys must be str in JSON, got {args[0]!r}")
        value = type_schema(args[1]) if len(args) == 2 else {}
        out: dict[str, Any] = {"type": "object"}
        if value:
            out["additionalProperties"] = value
        return out
    raise UnsupportedFieldType(f"no JSON Schema mapping for field type {tp!r}")


def description(cls: type[Event]) -> str:
    """The class's own docstring (not an inherited one), cleaned."""
    doc = cls.__dict__.get("__doc__")
    if doc:
        return inspect.cleandoc(doc)
    return f"The {cls.__name__} event (no further description)."


def json_schema(cls: type[Event]) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of ``cls``'s wire form."""
    name = cls.__name__
    fields: Mapping[str, Any] = cls._options.fields
    defaults: Mapping[str, Any] = cls._options.defaults
    properties: dict[str, Any] = {}
    for fname, ftype in fields.items():
        try:
            prop = type_schema(ftype)
        except UnsupportedFieldType as exc:
            raise UnsupportedFieldType(f"{name}.{fname}: {exc}") from None
        if fname == "type":
            prop = {"type": "string", "const": name}
        elif fname == "schema":
            if cls.SCHEMA == 1:
                prop = {"type": "integer", "const": 1}
            else:
                prop = {"type": "integer", "minimum": 1, "maximum": cls.SCHEMA}
            prop["default"] = cls.SCHEMA
        elif fname in defaults and fname not in _BASE_DESCRIPTIONS:
            prop["default"] = defaults[fname]
        if fname in _BASE_DESCRIPTIONS:
            prop["description"] = _BASE_DESCRIPTIONS[fname]
        properties[fname] = prop
    required = [f for f in fields if f not in defaults]
    return {
        "$schema": DRAFT,
        "$id": f"urn:postlane:event:{name}:v{cls.SCHEMA}",
        "title": name,
        "description": description(cls),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _dump(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)


def export_all(directory: Path, events: Iterable[type[Event]] | None = None) -> list[Path]:
    """Write one schema file per event (default: ``ALL_EVENTS``) and
    ``index.json`` into ``directory`` (created if needed); return the
    paths written, the index last."""
    if events is None:
        from . import ALL_EVENTS

        events = ALL_EVENTS
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    index: list[dict[str, Any]] = []
    for cls in events:
        schema = json_schema(cls)
        path = directory / f"{cls.__name__}{SUFFIX}"
        path.write_bytes(_dump(schema))
        written.append(path)
        index.append(
            {
                "name": cls.__name__,
                "schema_version": cls.SCHEMA,
                "file": path.name,
                "id": schema["$id"],
                "required": schema["required"],
                "summary": schema["description"].split("\n\n", 1)[0].replace("\n", " "),
            }
        )
    index_path = directory / INDEX_FILE
    index_path.write_bytes(_dump({"draft": DRAFT, "events": index}))
    written.append(index_path)
    return written


__all__ = ["UnsupportedFieldType", "description", "export_all", "json_schema", "type_schema"]
