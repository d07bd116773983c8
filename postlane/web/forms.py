"""Form values -> config events, refused exactly as ``config apply`` refuses
them: the same builder (``postlane.configfile.server_event_from_options``),
the same sentences, each placed next to the field it names. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from postlane.configfile import (
    ALIAS_KEYS,
    DOMAIN_KEYS,
    SERVER_KEYS,
    SETTINGS_KEYS,
    TENANT_KEYS,
    ConfigFileError,
    _build,
    server_event_from_options,
    values,
)
from schemas import (
    AliasConfigured,
    DomainPaceConfigured,
    Event,
    InvalidEvent,
    OutgoingServerConfigured,
    SettingsChanged,
    TenantConfigured,
)

# the outgoing server form, in the seeds' order: (field, label, input kind)
SERVER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("name", "Name", "text"), ("host", "SMTP server (host)", "text"),
    ("port", "Port (25, 465, 587, 2525)", "int"),
    ("security", "Security", "choice:none,starttls,ssl"),
    ("username", "Username", "text"),
    ("password_env", "Password: environment variable", "text"),
    ("password_file", "Password: file", "text"),
    ("sender", "Sender address (when the username is not an address)", "text"),
    ("from_filter", "From filter (addresses and/or domains, comma-separated)", "text"),
    ("priority", "Priority (lower first)", "int"), ("active", "Active", "bool"),
    ("kind", "Kind", "choice:any,transactional,mass"), ("tenant", "Tenant", "text"),
    ("daily_limit", "Daily limit (0: none)", "int"), ("rate", "Rate (e.g. 10/s, 600/min)", "text"),
    ("allow_self_signed", "Allow self-signed certificate (your own server only)", "bool"),
    ("archive_bcc", "Archive copy (BCC) address", "text"),
    ("reply_to", "Default Reply-To", "text"),
)
_KINDS = {name: kind for name, _, kind in SERVER_FIELDS}


@dataclass
class FormResult:
    event: Any = None  # the config event built
    errors: dict[str, list[str]] = field(default_factory=dict)  # field -> sentences
    general: list[str] = field(default_factory=list)  # not about one field

    @property
    def ok(self) -> bool:
        return self.event is not None


def _value(kind: str, raw: str | None) -> Any:
    """The form's text as the TOML file would carry it: an int when it
    reads as one (a wrong port stays text and is refused by the builder, as
    ``port = "abc"`` is), a bool for a checkbox."""
    if kind == "bool":
        return raw in ("on", "true", "1", "yes")
    text = (raw or "").strip()
    if kind == "int":
        if not text:
            return None  # not given: the default (or the server's current value)
        try:
            return int(text)
        except ValueError:
            return text
    return text


def server_from_form(form: dict[str, str], existing: OutgoingServerConfigured | None = None
                     ) -> FormResult:
    """Build the event; on refusal, each sentence next to the field it names."""
    name = (form.get("name") or "").strip()
    fields = {f: _value(_KINDS[f], form.get(f)) for f in _KINDS if f != "name"}
    if not name:
        return FormResult(errors={"name": ["a server needs a name"]})
    try:
        return FormResult(event=server_event_from_options(name, existing, **fields))
    except ConfigFileError as exc:
        cause = exc.__cause__ or exc.__context__
        problems = cause.problems if isinstance(cause, InvalidEvent) else [str(exc)]
        return place(problems, f"server {name!r}: ")


# the other config forms: (event class, its keys, the file's table name)
CONFIG_FORMS: dict[str, tuple[type[Event], list[str], str]] = {
    "settings": (SettingsChanged, SETTINGS_KEYS, "[settings]"),
    "aliases": (AliasConfigured, ALIAS_KEYS, "[[aliases]]"),
    "tenants": (TenantConfigured, TENANT_KEYS, "[[tenants]]"),
    "domains": (DomainPaceConfigured, DOMAIN_KEYS, "[[domains]]"),
}


def fields_of(kind: str) -> list[tuple[str, str]]:
    """(field, input kind) of a config form, in the event's order."""
    cls, keys, _ = CONFIG_FORMS[kind]
    types = cls._options.fields
    return [(k, "int" if types[k] is int else "bool" if types[k] is bool else "text")
            for k in keys]


def config_from_form(kind: str, form: dict[str, str]) -> FormResult:
    """A settings or alias event from its form, built by ``config apply``'s
    builder (the same checks and sentences)."""
    cls, keys, table = CONFIG_FORMS[kind]
    data = {k: v for k, input_kind in fields_of(kind)
            if (v := _value(input_kind, form.get(k))) is not None}
    try:
        return FormResult(event=_build(cls, data, table, keys))
    except ConfigFileError as exc:
        cause = exc.__cause__ or exc.__context__
        problems = cause.problems if isinstance(cause, InvalidEvent) else [str(exc)]
        return place(problems, f"{table}: ", keys)


def place(problems: list[str], where: str, keys: list[str] | None = None) -> FormResult:
    """Attach each problem to the field its sentence names (``port 70000
    is outside 1-65535`` -> port); the rest are general."""
    out = FormResult()
    names = sorted(keys or SERVER_KEYS, key=len, reverse=True)
    for p in problems:
        text = p[len(where):] if p.startswith(where) else p
        target = next((n for n in names if text.startswith((n + " ", n + ":", f"field '{n}'"))),
                      None)
        if target is None:
            out.general.append(text)
        else:
            out.errors.setdefault(target, []).append(text)
    return out


def server_form_values(server: OutgoingServerConfigured | None) -> dict[str, Any]:
    """The form's initial values (a new server: the event's defaults)."""
    if server is None:
        return {"port": 587, "security": "starttls", "priority": 10, "active": True,
                "kind": "any", "daily_limit": 0}
    return values(server)
