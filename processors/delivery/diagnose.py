"""What went wrong with an outgoing server, in one sentence a person can act on.

Pure: no I/O. ``session.py`` turns low-level errors into a failure *kind* plus
the facts (server, host, port, code, text); ``explain`` turns those into the
sentence shown by "test connection", written to ``DeliveryAttempted.error``
and logged. ``ProbeReport`` is the answer of ``probe.test_connection``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# kind -> template. Fields: see Facts.fields(). One sentence each: what is
# wrong, then (after the colon) what to change.
_TEMPLATES: dict[str, str] = {
    "refused": (
        "Nothing is listening on {where} (connection refused): check the host and the port "
        "(587 for STARTTLS, 465 for SSL/TLS, 25 only between mail servers)."
    ),
    "dns": "The host name {host} cannot be resolved ({detail}): check the spelling of the host.",
    "unreachable": (
        "{where} cannot be reached ({detail}): check the host, the network route and the "
        "firewall between Postlane and the server."
    ),
    "timeout": (
        "Connecting to {where} timed out after {timeout:g} s, so a firewall is probably "
        "dropping the traffic: allow outgoing connections to that port (many hosting "
        "providers block port 25) or use the submission port 587 or 465."
    ),
    "no_greeting": (
        "{where} accepted the connection but sent no SMTP greeting within {timeout:g} s: "
        "a firewall or proxy may be holding the connection, or this is not an SMTP port, "
        "so check the host, the port and the firewall."
    ),
    "tls_required": (
        "{where} expects SSL/TLS from the first byte (implicit TLS, like port 465) but "
        "security is set to {security}: set security to SSL/TLS for this port, or use "
        "port 587 with STARTTLS."
    ),
    "tls_unexpected": (
        "{where} speaks plain SMTP, not implicit SSL/TLS ({detail}): set security to "
        "STARTTLS for this port (usually 587 or 25), or use port 465 with SSL/TLS."
    ),
    "no_starttls": (
        "{where} does not offer STARTTLS: use port 465 with security SSL/TLS if the server "
        "has it, or set security to none only for a server on a trusted network."
    ),
    "certificate": (
        "The TLS certificate of {host} was rejected ({detail}): install a valid certificate "
        "for {host} on the server or use the host name the certificate is issued for; "
        "enable allow_self_signed only for your own server."
    ),
    "tls_failed": (
        "The TLS negotiation with {where} failed ({detail}): check that the server "
        "supports TLS 1.2 or newer and that security matches the port (465: SSL/TLS, "
        "587: STARTTLS)."
    ),
    "auth_failed": (
        "The server refused the login for {username!r} ({answer}): check the username and "
        "password; Gmail and Outlook need an app password when two-step verification is on."
    ),
    "auth_needs_tls": (
        "The server only accepts a login over an encrypted connection ({answer}): set "
        "security to STARTTLS (port 587) or SSL/TLS (port 465)."
    ),
    "no_auth": (
        "{where} does not offer AUTH (login){plain_hint}: set security to STARTTLS or "
        "SSL/TLS, or remove the username if this server relays without a login."
    ),
    "no_password": "{detail}",
    "greeting_refused": (
        "{host} refused the session at connect ({answer}): the server does not accept mail "
        "from this machine's address right now, so ask its administrator to allow it."
    ),
    "helo_refused": (
        "The server refused our EHLO/HELO greeting ({answer}): give the delivery worker a "
        "proper fully qualified host name."
    ),
    "disconnected": (
        "{where} closed the connection during {step} ({detail}): check the server's log; "
        "it may limit connections per client or reject this machine's address."
    ),
    "deadline": (
        "{where} did not finish {step} within the attempt deadline of {timeout:g} s: the "
        "server or the network is too slow, so check them or raise POSTLANE_ATTEMPT_DEADLINE."
    ),
    "sender_refused": (
        "The server does not let {login} send as {address} ({answer}): give that login the "
        "right to send on behalf of {address} (a 'send as' permission) or use a From address "
        "the login owns."
    ),
    "recipient_refused": (
        "The server refused the recipient {address} ({answer}): check the address, or, if the "
        "server only relays for logged-in users, set the username and password."
    ),
    "data_refused": (
        "The server refused the mail after DATA ({answer}): check the server's rules for "
        "content and size."
    ),
    "temporary": (
        "The server answered with a temporary error ({answer}): try again later; if it "
        "persists, check the server's rate limits or greylisting."
    ),
    "no_sender_address": (
        "There is no sender address for the test mail: set the server's sender address, "
        "use an email address as username, or give an on-behalf address."
    ),
}

KINDS: tuple[str, ...] = tuple(_TEMPLATES)

# which kinds need an operator: policy.OPERATOR_KINDS (the SMTP trouble policy)


@dataclass(frozen=True)
class Facts:
    """What is known about a failure. Never holds a password."""

    server: str = ""
    host: str = ""
    port: int = 0
    security: str = ""
    username: str = ""
    code: int = 0
    text: str = ""
    detail: str = ""
    address: str = ""  # the sender or recipient concerned
    step: str = ""
    timeout: float = 0.0

    def with_(self, **changes: Any) -> Facts:
        return replace(self, **changes)


def one_line(text: str, limit: int = 300) -> str:
    """A server's (possibly multi-line) answer as one line."""
    flat = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def answer(code: int, text: str) -> str:
    """``550 5.1.1 user unknown`` or ``no answer``."""
    line = one_line(text)
    if code > 0:
        return f"{code} {line}".strip()
    return line or "no answer"


def explain(kind: str, facts: Facts) -> str:
    """The sentence for ``kind``; an unknown kind still gives a sentence."""
    template = _TEMPLATES.get(kind)
    where = f"{facts.host} port {facts.port}" if facts.port else facts.host
    values = {
        "where": where,
        "host": facts.host,
        "port": facts.port,
        "security": facts.security or "none",
        "username": facts.username,
        "login": repr(facts.username) if facts.username else "this server",
        "address": facts.address,
        "detail": one_line(facts.detail) or "no details",
        "step": facts.step or "the session",
        "timeout": facts.timeout,
        "answer": answer(facts.code, facts.text),
        "plain_hint": (
            ", probably because the connection is not encrypted"
            if facts.security in ("", "none")
            else ""
        ),
    }
    if template is None:
        return f"{where}: {kind} ({values['answer']})."
    sentence = template.format(**values)
    return sentence if sentence.endswith(".") else sentence + "."


@dataclass(frozen=True)
class ProbeStep:
    """One step of a connection test: connect, greeting, tls, login,
    on_behalf, send."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class ProbeReport:
    """The answer of a connection test. ``sentence`` is the one line to show:
    what works, or what is wrong and what to change. ``kind`` is the failure
    kind ("" when everything worked)."""

    server: str
    host: str
    port: int
    security: str
    steps: list[ProbeStep] = field(default_factory=list)
    kind: str = ""
    sentence: str = ""

    @property
    def ok(self) -> bool:
        return not self.kind and all(s.ok for s in self.steps)

    def passed(self, name: str, detail: str) -> None:
        self.steps.append(ProbeStep(name, True, detail))

    def failed(self, name: str, kind: str, sentence: str) -> None:
        self.steps.append(ProbeStep(name, False, sentence))
        self.kind = kind
        self.sentence = sentence

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "ok": self.ok,
            "kind": self.kind,
            "sentence": self.sentence,
            "steps": [s.to_dict() for s in self.steps],
        }
