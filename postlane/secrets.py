"""The secrets edge: the ONLY place a server's password is read (outgoing
SMTP servers in the delivery processor, incoming IMAP servers in the fetcher).

Events never carry a password, only where to find it: ``password_env``
names one environment variable, ``password_file`` a file (a Docker or
Kubernetes secret mount). The value is returned to the SMTP session that
logs in with it and is never logged, put in an exception or on a topic.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from schemas import IncomingServerConfigured, OutgoingServerConfigured

Server = OutgoingServerConfigured | IncomingServerConfigured


class SecretUnavailable(RuntimeError):
    """The password of a server cannot be read. The message says what to set
    (and never contains the value)."""

    def __init__(self, server: str, message: str) -> None:
        self.server = server
        super().__init__(message)


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
