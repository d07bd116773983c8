"""What one SMTP attempt gives, and its errors: ``RecipientResult`` (one
outcome per recipient) and ``SmtpSessionError`` with its subclasses, one per
kind of failure to establish a session (connect, TLS, greeting, login), each
carrying the facts (server, host, port, code, text) and one sentence saying
what the operator should change (``diagnose.py``). Which outcome an answer
or a failure gives is the policy's (``policy.py``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from schemas.errors import PostlaneError

from .diagnose import Facts, explain, one_line
from .policy import Status, needs_operator, parse_enhanced, recipient_status, session_deferral


@dataclass(frozen=True)
class RecipientResult:
    """The outcome of one attempt for one recipient. ``code`` is 0 when the
    server gave no answer (timeout, dropped connection). ``stage`` is where
    it was decided: mail, rcpt, data, connection or local."""

    recipient: str
    status: Status
    code: int = 0
    enhanced: str = ""
    text: str = ""
    stage: str = ""

    @property
    def said(self) -> str:
        """The server's words with the enhanced status: ``5.1.1 no such user``."""
        return " ".join(p for p in (self.enhanced, self.text) if p)

    def as_outcome(self) -> dict[str, Any]:
        """The ``DeliveryAttempted.outcomes`` item."""
        return {
            "recipient": self.recipient,
            "status": self.status,
            "code": self.code,
            "enhanced": self.enhanced,
            "text": self.text,
        }


def split_answer(text: str) -> tuple[str, str]:
    """A server's answer text as (enhanced status code, the words without
    it): ``"5.1.1 no such user"`` -> ``("5.1.1", "no such user")``. Every
    reader shows code, enhanced code and text side by side, so the text
    must not repeat the enhanced code (``550 5.1.1 5.1.1 no such user``)."""
    enhanced = parse_enhanced(text)
    if not enhanced:
        return "", one_line(text)
    lead = re.compile(rf"^\s*{re.escape(enhanced)}(?:\s+|$)")
    return enhanced, one_line("\n".join(lead.sub("", line) for line in text.splitlines()))


def answered(recipient: str, code: int, text: str, stage: str) -> RecipientResult:
    """A recipient decided by a server's refusal (never "accepted")."""
    enhanced, words = split_answer(text)
    return RecipientResult(recipient, recipient_status(code, stage), code, enhanced, words, stage)


def deferred_result(
    recipient: str, text: str, enhanced: str, stage: str = "connection"
) -> RecipientResult:
    return RecipientResult(recipient, "deferred", 0, enhanced, text, stage)



class SmtpSessionError(PostlaneError):
    """The session with a server could not be established (or was lost
    outside a mail transaction). ``kind`` is the failure kind (see
    diagnose.KINDS), ``facts`` the details, ``str(exc)`` the sentence;
    ``server`` and ``code`` (the server's reply, 0 when none) as every
    PostlaneError has them."""

    def __init__(self, kind: str, facts: Facts) -> None:
        self.kind = kind
        self.facts = facts
        self.sentence = explain(kind, facts)
        super().__init__(self.sentence, processor="delivery", server=facts.server,
                         code=facts.code)

    @property
    def host(self) -> str:
        return self.facts.host

    @property
    def port(self) -> int:
        return self.facts.port

    @property
    def text(self) -> str:
        return self.facts.text

    @property
    def step(self) -> str:
        return self.facts.step

    @property
    def needs_operator(self) -> bool:
        """True when a person must change the configuration or the server;
        False for trouble a later retry may cure."""
        return needs_operator(self.kind, self.code)

    def deferred(self, recipients: list[str]) -> list[RecipientResult]:
        """Every recipient deferred with this error (the mail waits)."""
        code, enhanced = session_deferral(self.kind, self.code, self.text)
        return [
            RecipientResult(r, "deferred", code, enhanced, self.sentence, "connection")
            for r in dedupe(recipients)
        ]


class ConnectFailed(SmtpSessionError):
    """refused, dns, unreachable."""


class ConnectTimeout(SmtpSessionError):
    """timeout (TCP connect: filtered), no_greeting, deadline."""


class TlsError(SmtpSessionError):
    """Any TLS problem."""


class TlsModeMismatch(TlsError):
    """tls_required (STARTTLS/none on an implicit-TLS port), tls_unexpected
    (SSL/TLS on a plain port)."""


class StartTlsUnavailable(TlsError):
    """no_starttls."""


class CertificateRejected(TlsError):
    """certificate: self-signed, expired, wrong host, unknown CA."""


class TlsFailed(TlsError):
    """tls_failed: any other handshake failure."""


class AuthError(SmtpSessionError):
    """Any login problem."""


class AuthFailed(AuthError):
    """auth_failed, auth_needs_tls."""


class AuthUnavailable(AuthError):
    """no_auth: the server offers no (usable) AUTH."""


class CredentialsUnavailable(AuthError):
    """no_password: the secrets edge cannot read the password."""


class GreetingRefused(SmtpSessionError):
    """greeting_refused (4xx/5xx at connect), helo_refused."""


class SessionDropped(SmtpSessionError):
    """disconnected: the server closed the connection during the setup."""


_ERROR_CLASSES: dict[str, type[SmtpSessionError]] = {
    "refused": ConnectFailed,
    "dns": ConnectFailed,
    "unreachable": ConnectFailed,
    "timeout": ConnectTimeout,
    "no_greeting": ConnectTimeout,
    "deadline": ConnectTimeout,
    "tls_required": TlsModeMismatch,
    "tls_unexpected": TlsModeMismatch,
    "no_starttls": StartTlsUnavailable,
    "certificate": CertificateRejected,
    "tls_failed": TlsFailed,
    "auth_failed": AuthFailed,
    "auth_needs_tls": AuthFailed,
    "no_auth": AuthUnavailable,
    "no_password": CredentialsUnavailable,
    "greeting_refused": GreetingRefused,
    "helo_refused": GreetingRefused,
    "disconnected": SessionDropped,
}


def session_error(kind: str, facts: Facts) -> SmtpSessionError:
    """The typed exception for a failure kind."""
    return _ERROR_CLASSES.get(kind, SmtpSessionError)(kind, facts)



def dedupe(recipients: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for r in recipients:
        seen.setdefault(r.lower(), r)
    return list(seen.values())
