"""Configuration events: the compacted config topic holds the latest per key.

Keys: ``server:<name>`` for outgoing servers, ``incoming:<name>`` for
incoming (IMAP) servers, ``alias:<alias>`` for aliases, ``settings`` for the
global settings. A password is never carried: only where to find it
(``password_env`` names an environment variable, ``password_file`` a file),
resolved by the secrets edge of the processor that logs in.
"""

from __future__ import annotations

import re

from .addresses import AddressError, check_address, has_crlf, idna_domain
from .base import Event
from .limits import (
    DomainPaceConfigured,
    DomainPaceRemoved,
    TenantConfigured,
    TenantRemoved,
    name_problems,
    rate_problems,
)

SECURITY = ("none", "starttls", "ssl")
KINDS = ("transactional", "mass", "any")


def _connection_problems(host: str, port: int, security: str) -> list[str]:
    """What outgoing and incoming servers share: host, port, TLS mode."""
    out = []
    if not host or has_crlf(host) or " " in host:
        out.append(f"host {host!r} is not a host name")
    if not 0 < port < 65536:
        out.append(f"port {port} is outside 1-65535")
    if security not in SECURITY:
        out.append(f"security {security!r} must be one of {', '.join(SECURITY)}")
    return out


def from_filter_problems(from_filter: str) -> list[str]:
    """Each comma-separated part must be a full address (with ``@``) or a
    domain; empty parts are ignored. Checked where configuration is made
    (``postlane/configfile.py``: config apply, servers add, the console's
    forms), not when an event is read: events already in a log stay
    readable."""
    out = []
    for part in (p.strip() for p in from_filter.split(",")):
        if not part:
            continue
        try:
            if "@" in part:
                check_address(part)
            else:
                idna_domain(part)
        except AddressError as exc:
            out.append(f"from_filter: {part!r} is neither an address nor a domain ({exc})")
    return out


POLICIES = ("everyone", "contacts", "followers")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]+$")


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
    daily_limit: int = 0  # 0: unlimited (mails per window, see the limiter)
    timeout: float = 0.0  # 0: the delivery processor's default
    rate: str = ""  # pacing, e.g. "10/s" or "600/min"; empty: none

    def problems(self) -> list[str]:
        out = super().problems() + name_problems(self.name)
        out += _connection_problems(self.host, self.port, self.security)
        if self.kind not in KINDS:
            out.append(f"kind {self.kind!r} must be one of {', '.join(KINDS)}")
        if self.password_env and self.password_file:
            out.append("give password_env or password_file, not both")
        if self.daily_limit < 0:
            out.append("daily_limit must be >= 0")
        out += rate_problems("rate", self.rate)
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
    """The global settings. Inbound routing: ``allowed_domains`` (comma
    separated; empty: any domain) restricts which domains an alias's local
    part matches; an alias may create at most ``loop_threshold`` records from
    one sender within ``loop_minutes``, except for ``loop_allowed_senders``
    (comma-separated addresses)."""

    default_from: str = "notifications"
    catchall_domain: str = ""
    bounce_alias: str = "bounce"
    catchall_alias: str = "catchall"
    allowed_domains: str = ""
    loop_minutes: int = 120
    loop_threshold: int = 20
    loop_allowed_senders: str = ""

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
        for domain in split_list(self.allowed_domains):
            try:
                idna_domain(domain)
            except AddressError as exc:
                out.append(f"allowed_domains: {exc}")
        if self.loop_minutes < 1:
            out.append(f"loop_minutes must be >= 1, got {self.loop_minutes}")
        if self.loop_threshold < 1:
            out.append(f"loop_threshold must be >= 1, got {self.loop_threshold}")
        for sender in split_list(self.loop_allowed_senders):
            try:
                check_address(sender)
            except AddressError as exc:
                out.append(f"loop_allowed_senders: {exc}")
        return out

    @property
    def key(self) -> str:
        return "settings"


def split_list(value: str) -> list[str]:
    """``"a.com, b.com"`` -> ``["a.com", "b.com"]`` (commas or spaces)."""
    return [p for p in re.split(r"[,\s]+", value) if p]


class IncomingServerConfigured(Event):
    """An incoming (IMAP) server the fetcher polls. ``folder`` is read;
    each new mail is published to the inbound topic and then marked seen
    (or moved to ``move_to`` when set). ``poll_interval`` seconds between
    polls; with ``use_idle`` and a server that offers IDLE, new mail is
    fetched as soon as the server announces it. A mail over
    ``max_message_bytes`` (0: the fetcher's ``inbound_max_bytes``) is not
    fetched whole but recorded as rejected. ``tenant`` travels with every
    mail fetched."""

    name: str
    host: str
    port: int = 993
    security: str = "ssl"
    username: str = ""
    password_env: str = ""
    password_file: str = ""
    folder: str = "INBOX"
    poll_interval: float = 300.0
    use_idle: bool = True
    tenant: str = ""
    active: bool = True
    move_to: str = ""
    allow_self_signed: bool = False
    max_message_bytes: int = 0
    timeout: float = 0.0  # 0: the fetcher's imap_timeout

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.name or has_crlf(self.name) or ":" in self.name or " " in self.name:
            out.append(f"name {self.name!r} must be non-empty, without ':', spaces or line breaks")
        out += _connection_problems(self.host, self.port, self.security)
        if self.password_env and self.password_file:
            out.append("give password_env or password_file, not both")
        for fname in ("username", "folder", "move_to", "tenant"):
            if has_crlf(getattr(self, fname)):
                out.append(f"{fname} contains a line break")
        if not self.folder.strip():
            out.append("folder must not be empty (INBOX is the usual one)")
        if self.move_to and self.move_to == self.folder:
            out.append("move_to must be another folder than folder")
        if self.poll_interval < 1:
            out.append(f"poll_interval must be >= 1 second, got {self.poll_interval:g}")
        if self.max_message_bytes < 0:
            out.append("max_message_bytes must be >= 0")
        if self.timeout < 0:
            out.append("timeout must be >= 0")
        return out

    @property
    def key(self) -> str:
        return f"incoming:{self.name}"


class IncomingServerRemoved(Event):
    name: str

    @property
    def key(self) -> str:
        return f"incoming:{self.name}"


class AliasConfigured(Event):
    """Mail to ``alias`` (a local part matched in our domains, or a full
    address) creates a record of ``target`` (what the consuming service
    creates or where it routes), for ``tenant``. ``policy`` says who may
    write: everyone, contacts (known contacts of the tenant) or followers
    (followers of the target record); the consuming service enforces it,
    the routing decision carries it."""

    alias: str
    target: str
    tenant: str = ""
    policy: str = "everyone"

    def problems(self) -> list[str]:
        out = super().problems()
        alias = self.alias.strip()
        if not alias or alias != self.alias or has_crlf(alias):
            out.append(f"alias {self.alias!r} must be a local part or an address, no spaces")
        elif "@" in alias:
            try:
                check_address(alias)
            except AddressError as exc:
                out.append(f"alias: {exc}")
        elif not _LOCAL_PART.match(alias) or alias.startswith(".") or alias.endswith("."):
            out.append(f"alias {alias!r} is not a valid local part")
        if not self.target.strip() or has_crlf(self.target):
            out.append("target must be a non-empty single line")
        if has_crlf(self.tenant):
            out.append("tenant contains a line break")
        if self.policy not in POLICIES:
            out.append(f"policy {self.policy!r} must be one of {', '.join(POLICIES)}")
        return out

    @property
    def key(self) -> str:
        return f"alias:{self.alias.lower()}"


class AliasRemoved(Event):
    alias: str

    @property
    def key(self) -> str:
        return f"alias:{self.alias.lower()}"


DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$")


class DkimKeyConfigured(Event):
    """Mail whose header From is in ``domain`` (or a subdomain of it, when
    no more specific entry exists) is signed by the delivery processor with
    the key published at ``<selector>._domainkey.<domain>``. The private key
    is never carried: ``key_file`` names a file (a secret mount), ``key_env``
    an environment variable of the delivery worker; the secrets edge reads
    it. ``algorithm``: rsa-sha256 (a PEM key) or ed25519-sha256 (the
    base64 seed ``postlane dkim keygen`` writes)."""

    domain: str
    selector: str
    key_file: str = ""
    key_env: str = ""
    algorithm: str = "rsa-sha256"

    def problems(self) -> list[str]:
        out = super().problems()
        try:
            idna_domain(self.domain)
        except AddressError as exc:
            out.append(f"domain: {exc}")
        if not _SELECTOR.match(self.selector or ""):
            out.append(f"selector {self.selector!r} must be DNS labels (letters, digits, '-')")
        if bool(self.key_file) == bool(self.key_env):
            out.append("give key_file (a path) or key_env (a variable name), exactly one; "
                       "never the key itself")
        if has_crlf(self.key_file) or has_crlf(self.key_env):
            out.append("key_file and key_env must be single lines")
        if self.algorithm not in DKIM_ALGORITHMS:
            out.append(f"algorithm {self.algorithm!r} must be one of {', '.join(DKIM_ALGORITHMS)}")
        return out

    @property
    def key(self) -> str:
        return f"dkim:{self.domain.lower()}"


class DkimKeyRemoved(Event):
    domain: str

    @property
    def key(self) -> str:
        return f"dkim:{self.domain.lower()}"


# what a ``[[webhooks]]`` entry may subscribe to (``events = "*"``: all of them)
WEBHOOK_EVENT_TYPES = ("sent", "deferred", "failed", "bounced", "complained", "unsubscribed")


class WebhookConfigured(Event):
    """Post each of ``events`` (comma-separated names of
    ``WEBHOOK_EVENT_TYPES``, or ``*``) of mail of ``tenant`` (empty: every
    tenant) as signed JSON to ``url`` (http or https). The signing secret is
    never carried: ``secret_env`` names an environment variable of the
    webhooks worker, ``secret_file`` a file (a secret mount); the secrets
    edge reads it."""

    name: str
    url: str
    events: str = "*"
    secret_env: str = ""
    secret_file: str = ""
    tenant: str = ""

    def event_types(self) -> tuple[str, ...]:
        """The subscribed types, in the order of ``WEBHOOK_EVENT_TYPES``."""
        wanted = {p.strip().lower() for p in self.events.split(",") if p.strip()}
        if "*" in wanted:
            return WEBHOOK_EVENT_TYPES
        return tuple(t for t in WEBHOOK_EVENT_TYPES if t in wanted)

    def problems(self) -> list[str]:
        out = super().problems()
        if not self.name or has_crlf(self.name) or "|" in self.name:
            out.append("name must be a non-empty single line without '|'")
        url = self.url or ""
        scheme, sep, rest = url.partition("://")
        if has_crlf(url) or not sep or scheme.lower() not in ("http", "https") or not rest \
                or rest.startswith("/") or " " in url:
            out.append(f"url {url!r} must be an http:// or https:// URL with a host")
        names = [p.strip().lower() for p in (self.events or "").split(",") if p.strip()]
        unknown = [n for n in names if n != "*" and n not in WEBHOOK_EVENT_TYPES]
        if not names:
            out.append("events must name at least one event, or \"*\" for all")
        if unknown:
            out.append(f"unknown event {', '.join(repr(n) for n in unknown)} in events: "
                       f"known are {', '.join(WEBHOOK_EVENT_TYPES)} (or \"*\" for all)")
        if bool(self.secret_env) == bool(self.secret_file):
            out.append("give secret_env (a variable name) or secret_file (a path), exactly one; "
                       "never the secret itself")
        if has_crlf(self.secret_env) or has_crlf(self.secret_file) or has_crlf(self.tenant):
            out.append("secret_env, secret_file and tenant must be single lines")
        return out

    @property
    def key(self) -> str:
        return f"webhook:{self.name}"


class WebhookRemoved(Event):
    name: str

    @property
    def key(self) -> str:
        return f"webhook:{self.name}"


CONFIG_EVENTS: dict[str, type[Event]] = {
    c.__name__: c
    for c in (
        OutgoingServerConfigured,
        OutgoingServerRemoved,
        SettingsChanged,
        IncomingServerConfigured,
        IncomingServerRemoved,
        AliasConfigured,
        AliasRemoved,
        TenantConfigured,
        TenantRemoved,
        DomainPaceConfigured,
        DomainPaceRemoved,
        DkimKeyConfigured,
        DkimKeyRemoved,
        WebhookConfigured,
        WebhookRemoved,
    )
}
