"""The secrets edge: the ONLY place a server's password is read (outgoing
SMTP servers in the delivery processor, incoming IMAP servers in the fetcher),
and where a DKIM private key (``[[dkim]]`` ``key_file`` / ``key_env``) and
the secret that signs unsubscribe tokens are read.

Events never carry a password, only where to find it: ``password_env``
names one environment variable, ``password_file`` a file (a Docker or
Kubernetes secret mount). The value is returned to the SMTP session that
logs in with it and is never logged, put in an exception or on a topic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from schemas import (
    DkimKeyConfigured,
    IncomingServerConfigured,
    OutgoingServerConfigured,
    WebhookConfigured,
)
from schemas.errors import PostlaneError

Server = OutgoingServerConfigured | IncomingServerConfigured


class SecretUnavailable(PostlaneError, RuntimeError):
    """The password of a server cannot be read. The message says what to set
    (and never contains the value)."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(message, server=server)


def _worker(server: Server) -> str:
    return "fetcher" if isinstance(server, IncomingServerConfigured) else "delivery"


def resolve_password(
    server: Server, environ: Mapping[str, str] | None = None
) -> str | None:
    """The server's password, or None when it names no source
    (``password_env`` and ``password_file`` both empty).

    Raises SecretUnavailable when the named variable is unset or empty, or
    the file cannot be read or is empty. A file's trailing newline (``\\n``
    or ``\\r\\n``) is stripped; anything else is kept as it is."""
    if server.password_env:
        env = os.environ if environ is None else environ
        value = env.get(server.password_env)
        if not value:
            state = "is empty" if value == "" else "is not set"
            raise SecretUnavailable(
                server.name,
                f"The password of server {server.name!r} is read from the environment "
                f"variable {server.password_env} which {state}: set {server.password_env} "
                f"in the {_worker(server)} worker's environment (or give password_file instead).",
            )
        return value
    if server.password_file:
        path = server.password_file
        try:
            with open(path, encoding="utf-8") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise SecretUnavailable(
                server.name,
                f"The password file {path} of server {server.name!r} does not exist: create "
                f"it with the password (one line) or fix password_file.",
            ) from None
        except PermissionError:
            raise SecretUnavailable(
                server.name,
                f"The password file {path} of server {server.name!r} is not readable by the "
                f"{_worker(server)} worker: give its user read permission.",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SecretUnavailable(
                server.name,
                f"The password file {path} of server {server.name!r} cannot be read "
                f"({reason}): make it a readable UTF-8 text file holding the password.",
            ) from None
        value = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith("\n") else raw
        if not value:
            raise SecretUnavailable(
                server.name,
                f"The password file {path} of server {server.name!r} is empty: write the "
                f"password into it.",
            )
        return value
    return None


def require_password(
    server: Server, environ: Mapping[str, str] | None = None
) -> str:
    """The password for a server that logs in (has a username); raises
    SecretUnavailable when it names no source or the source is unusable."""
    value = resolve_password(server, environ)
    if value is None:
        raise SecretUnavailable(
            server.name,
            f"Server {server.name!r} logs in as {server.username!r} but has no password "
            f"source: set password_env (an environment variable name) or password_file.",
        )
    return value


# --- DKIM private keys ------------------------------------------------------------------------


def read_dkim_key(entry: DkimKeyConfigured, environ: Mapping[str, str] | None = None) -> bytes:
    """The private key of a ``[[dkim]]`` entry, as bytes (PEM for rsa-sha256,
    the base64 seed for ed25519-sha256). Raises SecretUnavailable (keyed by
    ``dkim:<domain>``) saying what to fix; the key is never in a message."""
    who = f"dkim:{entry.domain.lower()}"
    what = f"The DKIM key of {entry.domain} (selector {entry.selector})"
    if entry.key_env:
        env = os.environ if environ is None else environ
        value = env.get(entry.key_env)
        if not value or not value.strip():
            state = "is empty" if value is not None else "is not set"
            raise SecretUnavailable(
                who, f"{what} is read from the environment variable {entry.key_env} which "
                f"{state}: set it in the delivery worker's environment (or give key_file).")
        return value.strip().encode()
    path = entry.key_file
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise SecretUnavailable(
            who, f"{what}: the key file {path} does not exist: create it with "
            f"`postlane dkim keygen --domain {entry.domain} --selector {entry.selector}` "
            "or fix key_file.") from None
    except PermissionError:
        raise SecretUnavailable(
            who, f"{what}: the key file {path} is not readable by the delivery worker: give "
            "its user read permission.") from None
    except OSError as exc:
        raise SecretUnavailable(
            who, f"{what}: the key file {path} cannot be read ({exc.strerror or exc}): make it "
            "a readable file holding the private key.") from None
    if not raw.strip():
        raise SecretUnavailable(who, f"{what}: the key file {path} is empty: write the key "
                                "into it (`postlane dkim keygen` makes one).")
    return raw.strip()


# --- the unsubscribe token secret ---------------------------------------------------------------


def unsubscribe_secret(
    secret_env: str, secret_file: str, data_dir: str, environ: Mapping[str, str] | None = None,
) -> bytes:
    """The HMAC secret of unsubscribe tokens (delivery makes them; the
    unsubscribe web service and inbound routing check them, so every one of
    them must read the same secret). ``secret_env`` names an environment
    variable, ``secret_file`` a file (settings ``POSTLANE_UNSUBSCRIBE_SECRET_ENV`` /
    ``_FILE``). With neither, ``<data_dir>/unsubscribe.secret`` is used and
    made (32 random bytes, mode 0600) when missing: right for ``postlane dev``
    on one machine, not for workers on several (give them one secret)."""
    if secret_env:
        env = os.environ if environ is None else environ
        value = env.get(secret_env, "")
        if len(value.strip()) < 16:
            raise SecretUnavailable(
                "unsubscribe", f"The unsubscribe token secret is read from {secret_env}, which "
                "is unset or shorter than 16 characters: set it to a long random string in "
                "every delivery, inbound and unsubscribe web process.")
        return value.strip().encode()
    path = secret_file or os.path.join(data_dir, "unsubscribe.secret")
    if not secret_file and not os.path.exists(path):
        os.makedirs(data_dir, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process of this machine made it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex() + "\n")
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise SecretUnavailable(
            "unsubscribe", f"The unsubscribe token secret file {path} cannot be read "
            f"({exc.strerror or exc}): create it (a long random string) readable by every "
            "delivery, inbound and unsubscribe web process.") from None
    if len(value) < 16:
        raise SecretUnavailable(
            "unsubscribe", f"The unsubscribe token secret file {path} holds fewer than 16 "
            "characters: write a long random string into it.")
    return value.encode()


# --- webhook signing secrets ---------------------------------------------------------------------


def webhook_secret(entry: WebhookConfigured, environ: Mapping[str, str] | None = None) -> bytes:
    """The HMAC-SHA256 signing secret of a ``[[webhooks]]`` entry
    (``secret_env``: a variable of the webhooks worker; ``secret_file``: a
    file). Raises SecretUnavailable (keyed ``webhook:<name>``) saying what to
    fix; the secret is never in a message."""
    who = f"webhook:{entry.name}"
    what = f"The signing secret of webhook {entry.name!r}"
    if entry.secret_env:
        env = os.environ if environ is None else environ
        value = env.get(entry.secret_env)
        if value is None or not value.strip():
            state = "is empty" if value is not None else "is not set"
            raise SecretUnavailable(
                who, f"{what} is read from the environment variable {entry.secret_env}, which "
                f"{state}: set it (a long random string) in the webhooks worker's environment "
                "(and where `postlane config apply` runs), or give secret_file.")
        return value.strip().encode()
    path = entry.secret_file
    try:
        with open(path, "rb") as fh:
            raw = fh.read().strip()
    except FileNotFoundError:
        raise SecretUnavailable(
            who, f"{what}: the file {path} does not exist: create it (a long random string) "
            "or fix secret_file.") from None
    except OSError as exc:
        raise SecretUnavailable(
            who, f"{what}: the file {path} cannot be read ({exc.strerror or exc}): make it "
            "readable by the webhooks worker.") from None
    if not raw:
        raise SecretUnavailable(who, f"{what}: the file {path} is empty: write the secret "
                                "into it.")
    return raw
