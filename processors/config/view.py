"""The configuration view: a pure fold of the config topic.

Every processor rebuilds it from offset 0 of the config topic; replay tools
use the same ``evolve``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas import (
    AliasConfigured,
    AliasRemoved,
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

    def active_servers(self) -> list[OutgoingServerConfigured]:
        """Active servers, lowest priority number first, then by name."""
        return sorted(
            (s for s in self.servers.values() if s.active),
            key=lambda s: (s.priority, s.name),
        )


def evolve(view: ConfigView, event: Event) -> ConfigView:
    """Apply one config event; unknown event types leave the view as it is."""
    if isinstance(event, OutgoingServerConfigured):
        servers = dict(view.servers)
        servers[event.name] = event
        return replace(view, servers=servers, version=view.version + 1)
    if isinstance(event, OutgoingServerRemoved):
        servers = {k: v for k, v in view.servers.items() if k != event.name}
        return replace(view, servers=servers, version=view.version + 1)
    if isinstance(event, SettingsChanged):
        return replace(view, settings=event, version=view.version + 1)
    if isinstance(event, IncomingServerConfigured):
        return replace(view, incoming={**view.incoming, event.name: event},
                       version=view.version + 1)
    if isinstance(event, IncomingServerRemoved):
        incoming = {k: v for k, v in view.incoming.items() if k != event.name}
        return replace(view, incoming=incoming, version=view.version + 1)
    if isinstance(event, AliasConfigured):
        return replace(view, aliases={**view.aliases, event.alias.lower(): event},
                       version=view.version + 1)
    if isinstance(event, AliasRemoved):
        aliases = {k: v for k, v in view.aliases.items() if k != event.alias.lower()}
        return replace(view, aliases=aliases, version=view.version + 1)
    if isinstance(event, TenantConfigured):
        return replace(view, tenants={**view.tenants, event.name: event},
                       version=view.version + 1)
    if isinstance(event, TenantRemoved):
        tenants = {k: v for k, v in view.tenants.items() if k != event.name}
        return replace(view, tenants=tenants, version=view.version + 1)
    if isinstance(event, DomainPaceConfigured):
        return replace(view, domains={**view.domains, event.domain.lower(): event},
                       version=view.version + 1)
    if isinstance(event, DomainPaceRemoved):
        domains = {k: v for k, v in view.domains.items() if k != event.domain.lower()}
        return replace(view, domains=domains, version=view.version + 1)
    return view


def fold(events: list[Event], view: ConfigView | None = None) -> ConfigView:
    out = view or ConfigView()
    for e in events:
        out = evolve(out, e)
    return out
