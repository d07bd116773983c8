"""The configuration view: a pure fold of the config topic.

Every processor rebuilds it from offset 0 of the config topic; replay tools
use the same ``evolve``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from schemas import (
    AliasConfigured,
    AliasRemoved,
    DkimKeyConfigured,
    DkimKeyRemoved,
    DomainPaceConfigured,
    DomainPaceRemoved,
    Event,
    IncomingServerConfigured,
    IncomingServerRemoved,
    OutgoingServerConfigured,
    OutgoingServerRemoved,
    SettingsChanged,
    TenantConfigured,
    TenantRemoved,
    WebhookConfigured,
    WebhookRemoved,
)


@dataclass(frozen=True)
class ConfigView:
    settings: SettingsChanged = field(default_factory=SettingsChanged)
    servers: dict[str, OutgoingServerConfigured] = field(default_factory=dict)
    version: int = 0  # how many events were folded
    incoming: dict[str, IncomingServerConfigured] = field(default_factory=dict)
    aliases: dict[str, AliasConfigured] = field(default_factory=dict)  # key: alias lower-cased
    tenants: dict[str, TenantConfigured] = field(default_factory=dict)
    domains: dict[str, DomainPaceConfigured] = field(default_factory=dict)  # key: lower-cased
    dkim: dict[str, DkimKeyConfigured] = field(default_factory=dict)  # key: domain lower-cased
    webhooks: dict[str, WebhookConfigured] = field(default_factory=dict)  # key: name

    def active_servers(self) -> list[OutgoingServerConfigured]:
        """Active servers, lowest priority number first, then by name."""
        return sorted(
            (s for s in self.servers.values() if s.active),
            key=lambda s: (s.priority, s.name),
        )


@dataclass(frozen=True)
class ConfigKind:
    """One kind of keyed configuration: the view's field holding it, the
    events that set and remove an entry, and the field naming the entry
    (compared without case when ``fold_case``)."""

    field: str
    configured: type[Event]
    removed: type[Event]
    id_field: str
    fold_case: bool = False

    def key(self, event: Event) -> str:
        ident = str(getattr(event, self.id_field))
        return ident.lower() if self.fold_case else ident


CONFIG_KINDS: tuple[ConfigKind, ...] = (
    ConfigKind("servers", OutgoingServerConfigured, OutgoingServerRemoved, "name"),
    ConfigKind("incoming", IncomingServerConfigured, IncomingServerRemoved, "name"),
    ConfigKind("aliases", AliasConfigured, AliasRemoved, "alias", fold_case=True),
    ConfigKind("tenants", TenantConfigured, TenantRemoved, "name"),
    ConfigKind("domains", DomainPaceConfigured, DomainPaceRemoved, "domain", fold_case=True),
    ConfigKind("dkim", DkimKeyConfigured, DkimKeyRemoved, "domain", fold_case=True),
    ConfigKind("webhooks", WebhookConfigured, WebhookRemoved, "name"),
)


def evolve(view: ConfigView, event: Event) -> ConfigView:
    """Apply one config event; unknown event types leave the view as it is."""
    if isinstance(event, SettingsChanged):
        return replace(view, settings=event, version=view.version + 1)
    for kind in CONFIG_KINDS:
        if isinstance(event, kind.configured | kind.removed):
            entries = dict(getattr(view, kind.field))
            if isinstance(event, kind.configured):
                entries[kind.key(event)] = event
            else:
                entries.pop(kind.key(event), None)
            changes: dict[str, Any] = {kind.field: entries, "version": view.version + 1}
            return replace(view, **changes)
    return view


def fold(events: list[Event], view: ConfigView | None = None) -> ConfigView:
    out = view or ConfigView()
    for e in events:
        out = evolve(out, e)
    return out
