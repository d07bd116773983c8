"""The SMTP trouble policy, in one module (Postfix keeps it in one place
too): what an answer, a lost session or a local problem does to a mail.
Pure functions, no I/O; every rule here has a unit test
(tests/unit/test_delivery_policy.py).

- **A recipient's answer** (``recipient_status``): 2xx/3xx accepted, 5xx
  failed, 4xx / no answer / nonsense deferred; but 552 to RCPT is deferred
  (RFC 5321 4.5.3.1.10, RFC 821's "too many recipients", as Postfix does)
  and a 2xx/3xx where a 250 was needed is deferred.
- **A session that cannot be made** (connect, TLS, greeting, login): every
  recipient is deferred (``session_deferral``: a 5.x.x enhanced code is shown
  as 4.x.x, the mail waits; 4.4.1 after a timeout, 4.4.2 otherwise) and
  ``needs_operator`` says whether a person must change the configuration
  or the server (``OPERATOR_KINDS``, a 5xx greeting) or a retry may cure it.
- **Fail over** (``fails_over``): after a session-level failure of an SMTP
  attempt, or when the mail's server is gone, the mail moves at once to the
  next matching server not tried yet; local trouble (a DKIM key or secret
  that cannot be read, an internal error before SMTP) never fails over: the
  mail waits for its own server.
- **Back-off** (``retry_delay``, ``next_attempt_at``, ``after_attempt``),
  as Postfix: the first retry after ``retry_first`` seconds, then doubling,
  never more than ``retry_max`` apart; once the mail has been trying for
  longer than ``retry_give_up`` the deferred recipients fail ("gave up after
  N attempts").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

Status = Literal["accepted", "deferred", "failed"]

_ENHANCED_AT_START = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_ENHANCED_ANYWHERE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")


class RetrySettings(Protocol):
    """The part of ``streams.settings.Settings`` back-off reads."""

    @property
    def retry_first(self) -> float: ...

    @property
    def retry_max(self) -> float: ...

    @property
    def retry_give_up(self) -> float: ...


def retry_delay(attempt: int, settings: RetrySettings) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    first = max(float(settings.retry_first), 0.0)
    cap = max(float(settings.retry_max), first)
    n = max(attempt, 1) - 1
    if n >= 64:  # 2**64 * anything positive is past any cap
        return cap if first > 0 else 0.0
    return min(first * (2**n), cap)


def next_attempt_at(
    attempt: int, first_at: float, now: float, settings: RetrySettings
) -> float | None:
    """When to try again after attempt number ``attempt`` (1-based) failed
    temporarily, as unix seconds; None when the mail has been trying since
    ``first_at`` for longer than ``settings.retry_give_up`` (give up: the
    deferred recipients become failed)."""
    if now - first_at > settings.retry_give_up:
        return None
    return now + retry_delay(attempt, settings)


def classify(code: int | None) -> Status:
    """An SMTP reply code as a recipient status: 2xx/3xx accepted, 5xx
    failed, and 4xx, no answer (None, 0) or nonsense deferred."""
    if code is None:
        return "deferred"
    if 200 <= code < 400:
        return "accepted"
    if 500 <= code < 600:
        return "failed"
    return "deferred"


def parse_enhanced(text: str) -> str:
    """The RFC 3463 enhanced status code in a server's answer (``"5.1.1"``),
    preferably where it belongs (the start of the text, or of any line), else
    the first one found; ``""`` when there is none."""
    if not text:
        return ""
    for line in text.splitlines():
        m = _ENHANCED_AT_START.match(line)
        if m:
            return ".".join(m.groups())
    m = _ENHANCED_ANYWHERE.search(text)
    return ".".join(m.groups()) if m else ""


def recipient_status(code: int, stage: str) -> Status:
    """A recipient's status from a server's refusal at ``stage`` (mail, rcpt,
    data): never "accepted" (an odd 2xx/3xx where 250 was needed waits)."""
    status = classify(code)
    if status == "accepted":
        return "deferred"
    if stage == "rcpt" and code == 552:
        # RFC 5321 4.5.3.1.10: 552 to RCPT is RFC 821's "too many
        # recipients"; clients SHOULD treat it as temporary (452), as Postfix does
        return "deferred"
    return status


# Session failure kinds (processors/delivery/diagnose.py) that need a person
# to change the configuration (or the server), as opposed to passing network
# or server trouble that a retry may cure.
OPERATOR_KINDS = frozenset({
    "refused", "dns", "tls_required", "tls_unexpected", "no_starttls", "certificate",
    "tls_failed", "auth_failed", "auth_needs_tls", "no_auth", "no_password", "helo_refused",
    "sender_refused", "no_sender_address",
})
TIMEOUT_KINDS = frozenset({"timeout", "no_greeting", "deadline"})


def needs_operator(kind: str, code: int = 0) -> bool:
    """True when a person must change the configuration or the server;
    False for trouble a later retry may cure. A refused greeting needs one
    when it is permanent (5xx)."""
    if kind == "greeting_refused":
        return code >= 500
    return kind in OPERATOR_KINDS


def session_deferral(kind: str, code: int, text: str) -> tuple[int, str]:
    """(code, enhanced code) of every recipient a session failure defers:
    the server's 4xx code (0 otherwise); its enhanced code with a permanent
    class shown as temporary (535 5.7.8 at login would contradict "deferred"
    wherever it is shown), else 4.4.1 after a timeout and 4.4.2 otherwise."""
    enhanced = parse_enhanced(text)
    if enhanced.startswith("5."):
        enhanced = "4." + enhanced[2:]
    if not enhanced:
        enhanced = "4.4.1" if kind in TIMEOUT_KINDS else "4.4.2"
    return (code if 400 <= code < 500 else 0), enhanced


Trouble = Literal["session", "server_gone", "local"]


def fails_over(trouble: Trouble) -> bool:
    """Does this trouble move the mail to the next matching server? A
    session failure or a server gone from the configuration does; local
    trouble (a key, a secret, an internal error before SMTP) does not."""
    return trouble != "local"


@dataclass(frozen=True)
class Next:
    """What becomes of a mail's deferred recipients after an attempt:
    ``move`` to ``server`` now, ``retry`` at ``at``, ``give_up`` (they fail
    with ``gave_up(attempt)`` added to their text), or ``done`` (none left)."""

    kind: Literal["done", "move", "retry", "give_up"]
    at: float = 0.0
    server: str = ""


def after_attempt(*, deferred: bool, attempt: int, first_at: float, now: float,
                  settings: RetrySettings, server: str, next_server: str = "") -> Next:
    """The step after attempt number ``attempt`` on ``server``: a different
    matching server (``next_server``, chosen after a session failure) takes
    the mail at once; else back-off until the give-up time."""
    if not deferred:
        return Next("done", 0.0, server)
    if next_server and next_server != server:
        return Next("move", now, next_server)
    at = next_attempt_at(attempt, first_at, now, settings)
    if at is None:
        return Next("give_up", 0.0, server)
    return Next("retry", at, server)


def gave_up(attempt: int) -> str:
    """What a recipient failed by the give-up time is told (after its text)."""
    return f"gave up after {attempt} attempts"
