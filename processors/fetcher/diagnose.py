"""What went wrong with an incoming server, in one sentence a person can act
on. Pure: ``imap.py`` gives a kind and the facts, ``explain`` the sentence
shown by ``postlane incoming test``, logged by the fetcher and published on
``incoming-status``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

_TEMPLATES: dict[str, str] = {
    "refused": (
        "Nothing is listening on {where} (connection refused): check the host and the port "
        "(993 for SSL/TLS, 143 for STARTTLS or no encryption)."
    ),
    "dns": "The host name {host} cannot be resolved ({detail}): check the spelling of the host.",
    "unreachable": (
        "{where} cannot be reached ({detail}): check the host, the network route and the "
        "firewall between Postlane and the server."
    ),
    "timeout": (
        "{where} did not answer within {timeout:g} s during {step}, so a firewall is probably "
        "dropping the traffic or the security mode is wrong: allow the connection, or try "
        "security ssl on port 993 / starttls on port 143."
    ),
    "no_greeting": (
        "{where} did not greet as an IMAP server ({detail}): if the port expects SSL/TLS from "
        "the first byte set security = \"ssl\" (port 993); otherwise check the port."
    ),
    "tls_failed": (
        "The TLS handshake with {where} failed ({detail}): if the server expects STARTTLS set "
        "security = \"starttls\" (port 143), if it expects SSL/TLS at once set security = "
        "\"ssl\" (port 993)."
    ),
    "certificate": (
        "The certificate of {host} is not trusted ({detail}): install a certificate from a "
        "public authority on the server, or, only for your own server, set "
        "allow_self_signed = true."
    ),
    "no_starttls": (
        "{where} does not offer STARTTLS{detail_paren}: use security = \"ssl\" on port 993, or "
        "security = \"none\" only on a trusted network."
    ),
    "auth_failed": (
        "The server refused the login of {username!r} ({detail}): check the user name and the "
        "password; accounts with two-factor authentication (Gmail, Outlook, iCloud) need an "
        "app password."
    ),
    "login_disabled": (
        "{where} refuses passwords over an unencrypted connection (LOGINDISABLED): set "
        "security = \"starttls\" or \"ssl\"."
    ),
    "no_username": "Incoming server {server} has no username: set username to the mailbox login.",
    "no_password": (
        "Incoming server {server} has no password source: set password_env (an environment "
        "variable name) or password_file."
    ),
    "secret": "{detail}",
    "no_folder": (
        "The folder {folder!r} cannot be opened ({detail}): set folder to one of the "
        "mailbox's folders ({folders})."
    ),
    "lost": (
        "The connection to {where} was lost during {step}{detail_paren}: Postlane reconnects; "
        "if this repeats, check the server's limits on connections and idle time."
    ),
    "command_refused": (
        "{where} refused a command during {step} ({detail}): check that the login may read "
        "and change the folder {folder!r}."
    ),
}


@dataclass(frozen=True)
class Facts:
    server: str = ""
    host: str = ""
    port: int = 0
    security: str = ""
    username: str = ""
    folder: str = ""
    timeout: float = 0.0
    step: str = ""
    detail: str = ""
    folders: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def with_(self, **changes: Any) -> Facts:
        known = {k: v for k, v in changes.items() if k in self.__dataclass_fields__}
        return replace(self, **known)


def explain(kind: str, facts: Facts) -> str:
    template = _TEMPLATES.get(kind, "{where} failed during {step} ({detail}).")
    values = {
        "where": f"{facts.host} port {facts.port}",
        "detail_paren": f" ({facts.detail})" if facts.detail else "",
        **{k: getattr(facts, k) for k in facts.__dataclass_fields__},
    }
    values["detail"] = facts.detail or "no details"
    return template.format(**values)
