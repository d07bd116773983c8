"""A taken broker port is named with the process holding it (a broker left
by an earlier ``postlane dev``, say), so the operator knows what to stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from streams.embedded import BrokerError, EmbeddedBroker, listener
from streams.settings import Settings


def test_the_listener_of_a_port_is_found_by_pid() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        pid, cmd = listener(port) or (0, "")
    assert pid == os.getpid()
    assert "python" in cmd or "pytest" in cmd


def test_nothing_listening_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        assert listener(port) is None


def test_a_leftover_broker_is_named_in_the_error_with_its_pid() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a stand-in for a Tansu left running: its command line names tansu
    code = ("import socket,sys,time\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1',{port})); s.listen(); print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, "tansu", "broker"],
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        broker = EmbeddedBroker(Settings(embedded_port=port))
        with pytest.raises(BrokerError) as err:
            broker.start(timeout=1)
        said = str(err.value)
        assert f"pid {proc.pid}" in said
        assert "Tansu broker" in said and f"kill {proc.pid}" in said
    finally:
        proc.kill()
        proc.wait(5)
