"""Configuration events: the compacted config topic holds the latest per key.

Keys: ``server:<name>`` for outgoing servers, ``settings`` for the global
settings. A password is never carried: only where to find it
(``password_env`` names an environment variable, ``password_file`` a file),
resolved by the delivery processor's secrets edge.
"""

from __future__ import annotations

from .addresses import AddressError, check_address, has_crlf
from .base import Event

SECURITY = ("none", "starttls", "ssl")
KINDS = ("transactional", "mass", "any")


class OutgoingServerConfigured(Event):
    name: str
    host: str
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    sender: str = ""  # a separate sender address when username is not an email
    from_filter: str = ""
    priority: int = 10
    active: bool = True
    kind: str = "any"
    tenant: str = ""
    allow_self_signed: bool = False
    archive_bcc: str = ""
    reply_to: str = ""
    daily_limit: int = 0  # 0: unlimited
    timeout: float = 0.0  # 0: the delivery processor's default

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.name or has_crlf(self.name) or ":" in self.name:
            out.append(f"name {self.name!r} must be non-empty, without ':' or line breaks")
        if not self.host or has_crlf(self.host) or " " in self.host:
            out.append(f"host {self.host!r} is not a host name")
        if not 0 < self.port < 65536:
            out.append(f"port {self.port} is outside 1-65535")
        if self.security not in SECURITY:
            out.append(f"security {self.security!r} must be one of {', '.join(SECURITY)}")
        if self.kind not in KINDS:
            out.append(f"kind {self.kind!r} must be one of {', '.join(KINDS)}")
        if self.password_env and self.password_file:
            out.append("give password_env or password_file, not both")
        if self.daily_limit < 0:
            out.append("daily_limit must be >= 0")
        for fname in ("sender", "archive_bcc", "reply_to"):
            value = getattr(self, fname)
            if value:
                try:
                    check_address(value)
                except AddressError as exc:
                    out.append(f"{fname}: {exc}")
        if has_crlf(self.from_filter):
            out.append("from_filter contains a line break")
        return out

    @property
    def key(self) -> str:
        return f"server:{self.name}"


class OutgoingServerRemoved(Event):
    name: str

    @property
    def key(self) -> str:
        return f"server:{self.name}"


class SettingsChanged(Event):
    default_from: str = "notifications"
    catchall_domain: str = ""
    bounce_alias: str = "bounce"
    catchall_alias: str = "catchall"

    def problems(self) -> list[str]:
        out = super().problems()
        for fname in ("default_from", "catchall_domain", "bounce_alias", "catchall_alias"):
            value = getattr(self, fname)
            if has_crlf(value) or " " in value:
                out.append(f"{fname} {value!r} contains spaces or line breaks")
        if "@" in self.default_from:
            try:
                check_address(self.default_from)
            except AddressError as exc:
                out.append(f"default_from: {exc}")
        for fname in ("bounce_alias", "catchall_alias"):
            if "@" in getattr(self, fname):
                out.append(f"{fname} must be a local part (no @)")
        return out

    @property
    def key(self) -> str:
        return "settings"


CONFIG_EVENTS: dict[str, type[Event]] = {
    c.__name__: c for c in (OutgoingServerConfigured, OutgoingServerRemoved, SettingsChanged)
}
