"""Form values -> config events, refused exactly as ``config apply`` refuses
them: the same builder (``postlane.configfile.server_event_from_options``),
the same sentences, each placed next to the field it names. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from postlane.configfile import (
    ALIAS_KEYS,
    DKIM_KEYS,
    DOMAIN_KEYS,
    INCOMING_KEYS,
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
    DkimKeyConfigured,
    DomainPaceConfigured,
    Event,
    IncomingServerConfigured,
    InvalidEvent,
    OutgoingServerConfigured,
    SettingsChanged,
    TenantConfigured,
)
from schemas.config import DKIM_ALGORITHMS

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
    if kind in ("int", "float"):
        if not text:
            return None  # not given: the default (or the server's current value)
        try:
            return int(text) if kind == "int" else float(text)
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
    "incoming": (IncomingServerConfigured, INCOMING_KEYS, "[[incoming]]"),
    "dkim": (DkimKeyConfigured, DKIM_KEYS, "[[dkim]]"),
}
# text fields offered as a choice (a forged value is still refused by the builder)
CHOICES = {("incoming", "security"): "choice:ssl,starttls,none",
           ("dkim", "algorithm"): "choice:" + ",".join(DKIM_ALGORITHMS)}
_TYPES = {int: "int", bool: "bool", float: "float"}
# what a DKIM key reference looks like: a variable name, a path (not the key itself)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def fields_of(kind: str) -> list[tuple[str, str]]:
    """(field, input kind) of a config form, in the event's order."""
    cls, keys, _ = CONFIG_FORMS[kind]
    types = cls._options.fields
    return [(k, CHOICES.get((kind, k)) or _TYPES.get(types[k], "text")) for k in keys]


def initial(kind: str, entry: Event | None = None) -> dict[str, Any]:
    """A config form's first values: an entry's own (to edit it) or the
    event's defaults (a new one)."""
    if entry is not None:
        return values(entry)
    cls, keys, _ = CONFIG_FORMS[kind]
    defaults = cls._options.defaults
    return {k: defaults[k] for k in keys if k in defaults}


def _key_itself(form: dict[str, str]) -> FormResult | None:
    """A DKIM form whose key_env or key_file holds the key itself (a
    browser's text field keeps a pasted PEM on one line, so the file's
    line-break check would not see it): refused before anything is built,
    and the value is not shown back."""
    env, path = (form.get("key_env") or "").strip(), (form.get("key_file") or "").strip()
    out = FormResult()
    if env and not _ENV_NAME.match(env):
        out.errors["key_env"] = ["key_env names an environment variable (letters, digits, _) "
                                 "of the delivery workers; the key itself is never entered here"]
    if "-----BEGIN" in path or "PRIVATE KEY" in path:
        out.errors["key_file"] = ["key_file is a path to the key (a secret mount); "
                                  "the key itself is never entered here"]
    return out if out.errors else None


def config_from_form(kind: str, form: dict[str, str]) -> FormResult:
    """A settings or alias event from its form, built by ``config apply``'s
    builder (the same checks and sentences)."""
    cls, keys, table = CONFIG_FORMS[kind]
    if kind == "dkim" and (refused := _key_itself(form)) is not None:
        return refused
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
        if target is None and text.startswith("give "):  # "give key_file ... or key_env ..."
            target = next((n for n in keys or SERVER_KEYS if f" {n} " in text), None)
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
