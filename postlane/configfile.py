"""The TOML config file: parse it into config events, and plan what to publish.

``[settings]`` becomes one SettingsChanged, each ``[[servers]]`` one
OutgoingServerConfigured, each ``[[incoming]]`` one IncomingServerConfigured
each ``[[aliases]]`` one AliasConfigured, each ``[[tenants]]`` one
TenantConfigured (a tenant's daily limit) and each ``[[domains]]`` one
DomainPaceConfigured (a recipient domain's rate; ``domain = "*"`` for all
others) and each ``[[dkim]]`` one DkimKeyConfigured (the signing key of a
From domain: ``key_file`` or ``key_env``, never the key itself). Other
top-level tables are left to the code that reads them. A password (or a
DKIM key) is never accepted in the file: name where to find it
(``password_env`` or ``password_file``; ``key_file`` or ``key_env``).
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.config.view import CONFIG_KINDS, ConfigView
from schemas import (
    AliasConfigured,
    DkimKeyConfigured,
    DomainPaceConfigured,
    Event,
    IncomingServerConfigured,
    InvalidEvent,
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    SettingsChanged,
    TenantConfigured,
    WebhookConfigured,
    decode,
)
from schemas.config import from_filter_problems
from schemas.errors import PostlaneError

_META = ("type", "schema", "event_id", "occurred_at")
ConfigEvent = OutgoingServerConfigured | OutgoingServerRemoved | SettingsChanged


class ConfigFileError(PostlaneError, ValueError):
    """The config file is unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class DesiredConfig:
    settings: SettingsChanged = field(default_factory=SettingsChanged)
    servers: list[OutgoingServerConfigured] = field(default_factory=list)
    incoming: list[IncomingServerConfigured] = field(default_factory=list)
    aliases: list[AliasConfigured] = field(default_factory=list)
    tenants: list[TenantConfigured] = field(default_factory=list)
    domains: list[DomainPaceConfigured] = field(default_factory=list)
    dkim: list[DkimKeyConfigured] = field(default_factory=list)
    webhooks: list[WebhookConfigured] = field(default_factory=list)


def _fields(cls: type[Event]) -> list[str]:
    return [f for f in cls._options.fields if f not in _META]


SETTINGS_KEYS = _fields(SettingsChanged)
SERVER_KEYS = _fields(OutgoingServerConfigured)
INCOMING_KEYS = _fields(IncomingServerConfigured)
ALIAS_KEYS = _fields(AliasConfigured)
TENANT_KEYS = _fields(TenantConfigured)
DOMAIN_KEYS = _fields(DomainPaceConfigured)
DKIM_KEYS = _fields(DkimKeyConfigured)
WEBHOOK_KEYS = _fields(WebhookConfigured)


def values(event: Event) -> dict[str, Any]:
    """An event's own fields, without type/schema/event_id/occurred_at."""
    return {f: getattr(event, f) for f in _fields(type(event))}


def _build(cls: type[Event], data: dict[str, Any], where: str, allowed: list[str]) -> Any:
    if cls is DkimKeyConfigured and ({"key", "private_key"} & set(data)):
        raise ConfigFileError(
            f"{where}: the private key itself is refused (keys never go on topics): use "
            'key_file = "/path/to/key.pem" or key_env = "VAR"'
        )
    if cls is WebhookConfigured and "secret" in data:
        raise ConfigFileError(
            f"{where}: the secret itself is refused (secrets never go on topics): use "
            'secret_env = "VAR" or secret_file = "/path/to/secret"'
        )
    if "password" in data:
        raise ConfigFileError(
            f"{where}: key 'password' is refused (passwords never go on topics): use "
            'password_env = "VAR" (an environment variable) or password_file = "/path"'
        )
    unknown = sorted(k for k in data if k not in allowed)
    if unknown:
        raise ConfigFileError(
            f"{where}: unknown {_plural(unknown, 'key')} {_named(unknown, allowed)}; "
            f"allowed keys: {', '.join(allowed)}"
        )
    data = {
        k: float(v) if cls._options.fields[k] is float and type(v) is int else v
        for k, v in data.items()
    }
    # checked here, where configuration is made, not in the event (a logged one stays readable)
    made_here = (from_filter_problems(str(data.get("from_filter") or ""))
                 if cls is OutgoingServerConfigured else [])
    try:
        event = decode(cls, data)
    except InvalidEvent as exc:
        problems = exc.problems + made_here
    else:
        if not made_here:
            return event
        problems = made_here
    raise ConfigFileError(f"{where}: " + "; ".join(problems)) from InvalidEvent(
        cls.__name__, problems)


def server_event_from_options(
    name: str, base: OutgoingServerConfigured | None = None, **fields: Any
) -> OutgoingServerConfigured:
    """A server event from CLI options (None: not given, keep ``base``'s value)."""
    data = values(base) if base is not None else {}
    data.update({k: v for k, v in fields.items() if v is not None})
    data["name"] = name
    where = f"server {name!r}"
    event: OutgoingServerConfigured = _build(OutgoingServerConfigured, data, where, SERVER_KEYS)
    return event


def parse(text: str, source: str = "<config>") -> DesiredConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = [key for key in doc if key not in _TABLES]
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown {_plural(unknown, 'table')} {_named(unknown, list(_TABLES))} "
            f"(nothing applied); known tables: {', '.join(_TABLES)}"
        )
    raw_settings = doc.get("settings", {})
    if not isinstance(raw_settings, dict):
        raise ConfigFileError(f"{source}: settings must be a table: [settings]")
    settings = _build(SettingsChanged, raw_settings, f"{source} [settings]", SETTINGS_KEYS)
    raw_servers = doc.get("servers", [])
    if not isinstance(raw_servers, list) or not all(isinstance(s, dict) for s in raw_servers):
        raise ConfigFileError(f"{source}: servers must be an array of tables: [[servers]]")
    servers: list[OutgoingServerConfigured] = []
    for i, raw in enumerate(raw_servers):
        where = f"{source} [[servers]] #{i + 1} ({raw.get('name', 'no name')!r})"
        server = _build(OutgoingServerConfigured, raw, where, SERVER_KEYS)
        if any(s.name == server.name for s in servers):
            raise ConfigFileError(f"{where}: duplicate server name {server.name!r}")
        servers.append(server)
    incoming: list[IncomingServerConfigured] = _array(
        doc, "incoming", IncomingServerConfigured, INCOMING_KEYS, source, "name")
    aliases: list[AliasConfigured] = _array(
        doc, "aliases", AliasConfigured, ALIAS_KEYS, source, "alias")
    tenants: list[TenantConfigured] = _array(
        doc, "tenants", TenantConfigured, TENANT_KEYS, source, "name")
    domains: list[DomainPaceConfigured] = _array(
        doc, "domains", DomainPaceConfigured, DOMAIN_KEYS, source, "domain")
    dkim: list[DkimKeyConfigured] = _array(
        doc, "dkim", DkimKeyConfigured, DKIM_KEYS, source, "domain")
    webhooks: list[WebhookConfigured] = _array(
        doc, "webhooks", WebhookConfigured, WEBHOOK_KEYS, source, "name")
    return DesiredConfig(settings=settings, servers=servers, incoming=incoming, aliases=aliases,
                         tenants=tenants, domains=domains, dkim=dkim, webhooks=webhooks)


_TABLES = ("settings", "servers", "incoming", "aliases", "tenants", "domains", "dkim",
           "webhooks")


def _plural(names: list[str], noun: str) -> str:
    return noun if len(names) == 1 else noun + "s"


def _named(names: list[str], known: list[str]) -> str:
    """Each unknown name, with the known one it looks like a typo of."""
    out = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        out.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(out)


def _array(doc: dict[str, Any], table: str, cls: type[Event], keys: list[str], source: str,
           id_field: str) -> list[Any]:
    raw_items = doc.get(table, [])
    if not isinstance(raw_items, list) or not all(isinstance(r, dict) for r in raw_items):
        raise ConfigFileError(f"{source}: {table} must be an array of tables: [[{table}]]")
    out: list[Any] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_items):
        where = f"{source} [[{table}]] #{i + 1} ({raw.get(id_field, f'no {id_field}')!r})"
        event = _build(cls, raw, where, keys)
        ident = str(getattr(event, id_field)).lower()
        if ident in seen:
            raise ConfigFileError(f"{where}: duplicate {id_field} {getattr(event, id_field)!r}")
        seen.add(ident)
        out.append(event)
    return out


def load(path: str | Path) -> DesiredConfig:
    """Read and validate a config file; raise ConfigFileError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc}") from None
    return parse(text, str(path))


def events(desired: DesiredConfig) -> list[Event]:
    """All events of the file, settings first (to fold or publish in full)."""
    return [desired.settings, *desired.servers, *desired.incoming, *desired.aliases,
            *desired.tenants, *desired.domains, *desired.dkim, *desired.webhooks]


def plan(current: ConfigView, desired: DesiredConfig) -> list[tuple[str, Event]]:
    """(key, event) pairs that bring ``current`` to ``desired``: only changes,
    removals included."""
    out: list[tuple[str, Event]] = []
    if values(current.settings) != values(desired.settings):
        out.append((desired.settings.key, desired.settings))
    for kind in CONFIG_KINDS:
        live: dict[str, Any] = getattr(current, kind.field)
        wanted: list[Any] = getattr(desired, kind.field)
        for item in wanted:
            old = live.get(kind.key(item))
            if old is None or values(old) != values(item):
                out.append((item.key, item))
        for gone_key in sorted(set(live) - {kind.key(item) for item in wanted}):
            gone: Any = kind.removed(**{kind.id_field: getattr(live[gone_key], kind.id_field)})
            out.append((gone.key, gone))
    return out


def view_to_dict(view: ConfigView) -> dict[str, Any]:
    """The live view in the file's shape: ``{"settings": {...}, "servers": [...]}``
    plus each other kind (incoming, aliases, tenants, domains) that has entries."""
    servers = sorted(view.servers.values(), key=lambda s: (s.priority, s.name))
    out: dict[str, Any] = {
        "settings": values(view.settings), "servers": [values(s) for s in servers],
    }
    for kind in (k for k in CONFIG_KINDS if k.field != "servers"):  # servers: by priority
        entries: dict[str, Event] = getattr(view, kind.field)
        if entries:
            out[kind.field] = [values(entries[k]) for k in sorted(entries)]
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def to_toml(data: dict[str, Any]) -> str:
    """Render ``view_to_dict`` output (flat tables, arrays of flat tables)."""
    lines: list[str] = []
    for table, body in data.items():
        for row in body if isinstance(body, list) else [body]:
            lines.append(f"[[{table}]]" if isinstance(body, list) else f"[{table}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in row.items())
            lines.append("")
    return "\n".join(lines)


def limit_warnings(desired: DesiredConfig, partitions: int) -> list[str]:
    """Daily limits that would surprise a user. None since issue 15: a
    limit is counted by the one quota processor (processors/limiter/quota.py),
    exact whatever the partition count (it used to be split into
    per-partition shares, and a limit below the partition count left some
    partitions a share of 0). Kept for the callers."""
    return []
