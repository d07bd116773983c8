"""Console users, sessions, one-time login links and CSRF tokens.

- Users: a file of ``name:scrypt$N$r$p$salt$hash`` lines (base64 salt and
  hash; hashlib.scrypt, N=2**14, r=8, p=1), written by ``postlane web
  adduser NAME``. No password is kept or shown anywhere else.
- Sessions: random tokens held in the console's memory (a restart logs
  everyone out), each with its user, expiry and its own CSRF token. The
  cookie is HttpOnly and SameSite=Strict (Secure behind an https URL).
- One-time login: ``postlane dev`` prints ``/login/once/TOKEN``; the token
  works once, within ten minutes.
- Failed logins (``LoginThrottle``), per user name and per client address,
  in the console's memory (a restart forgets them): after 5 failures the
  name or the address is refused (HTTP 429 with Retry-After) for 2 s,
  then twice as long after each further failure, at most 15 minutes; a
  name's count ends with its next successful login, an address's 15
  minutes after its last failure.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import PostlaneError

N, R, P = 2**14, 8, 1
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ONCE_SECONDS = 600.0


class UserFileError(PostlaneError, ValueError):
    """The users file or a user name is wrong; the message says how."""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return (f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def read_users(path: Path) -> dict[str, str]:
    """name -> stored hash; {} when the file does not exist."""
    if not path.exists():
        return {}
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not stored.startswith("scrypt$"):
            raise UserFileError(f"{path} line {i}: expected name:scrypt$..., "
                                "as `postlane web adduser NAME` writes")
        out[name] = stored
    return out


def add_user(path: Path, name: str, password: str) -> bool:
    """Add or replace ``name``; True when it was new. The file is 0600."""
    if not NAME.match(name):
        raise UserFileError(f"user name {name!r}: use 1-64 letters, digits, _ . @ -")
    if len(password) < 8:
        raise UserFileError("the password must have at least 8 characters")
    users = read_users(path)
    new = name not in users
    users[name] = hash_password(password)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{n}:{h}\n" for n, h in sorted(users.items())))
    os.replace(tmp, path)
    return new


@dataclass
class Session:
    user: str
    expires: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))


class Sessions:
    def __init__(self, hours: float) -> None:
        self.seconds = hours * 3600
        self._sessions: dict[str, Session] = {}
        self._once: dict[str, float] = {}

    def open(self, user: str, now: float) -> tuple[str, Session]:
        token = secrets.token_urlsafe(32)
        session = self._sessions[token] = Session(user, now + self.seconds)
        return token, session

    def get(self, token: str | None, now: float) -> Session | None:
        if not token:
            return None
        session = self._sessions.get(token)
        if session is None or session.expires < now:
            self._sessions.pop(token, None)
            return None
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def one_time(self, now: float) -> str:
        token = secrets.token_urlsafe(32)
        self._once[token] = now + ONCE_SECONDS
        return token

    def use_once(self, token: str, now: float) -> bool:
        expires = self._once.pop(token, None)
        return expires is not None and expires >= now


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    until: float = 0.0  # refused before this time


class LoginThrottle:
    """Failed logins per key (``user:NAME``, ``addr:ADDRESS``), in memory."""

    def __init__(self, free: int = 5, base: float = 2.0, most: float = 900.0,
                 forget: float = 900.0, keep: int = 10_000) -> None:
        self.free, self.base, self.most, self.forget, self.keep = free, base, most, forget, keep
        self._seen: dict[str, _Failures] = {}

    def wait(self, keys: list[str], now: float) -> float:
        """Seconds until a login with these keys is heard again (0: now)."""
        return max([0.0, *(f.until - now for k in keys if (f := self._seen.get(k)) is not None)])

    def failed(self, keys: list[str], now: float) -> float:
        """Count a failure for each key; the wait it starts (0: none yet)."""
        if len(self._seen) > self.keep:  # forget the old ones first (memory stays bounded)
            self._seen = {k: f for k, f in self._seen.items() if now - f.last < self.forget}
        for key in keys:
            f = self._seen.get(key)
            if f is None or now - f.last >= self.forget:
                f = self._seen[key] = _Failures()
            f.count += 1
            f.last = now
            if f.count >= self.free:
                f.until = now + min(self.base * 2 ** (f.count - self.free), self.most)
        return self.wait(keys, now)

    def succeeded(self, key: str) -> None:
        self._seen.pop(key, None)


def retry_after(seconds: float) -> str:
    """The Retry-After header's whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
