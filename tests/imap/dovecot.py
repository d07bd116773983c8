"""A private Dovecot IMAP server on loopback for tests.

Each instance gets its own directory with a generated config (own
base_dir, state and log), listens on 127.0.0.1 (plain IMAP, and IMAPS with
a generated certificate when one is given), authenticates users from a
passwd-file and stores mail as Maildir under the same directory. It runs
as ``dovecot -F -c CONF`` and is stopped by its PID. Run as root, the mail
and internal processes use Debian's ``dovecot``/``dovenull`` users, which
own the mail directory; run as another user, everything runs as that user.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(self, users: dict[str, str], cert: tuple[Path, Path] | None = None) -> None:
        self.users = users
        self.cert = cert
        self.root = Path(tempfile.mkdtemp(prefix="postlane-dovecot-"))
        self.port = free_port()
        self.ssl_port = free_port() if cert else 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.root / "dovecot.log"

    def _config(self, internal: str, login: str, uid: int, gid: int) -> str:
        r = self.root
        ssl = "no"
        ssl_lines = ""
        if self.cert:
            ssl = "yes"
            ssl_lines = f"ssl_cert = <{self.cert[0]}\nssl_key = <{self.cert[1]}\n"
        return f"""
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
instance_name = postlane-test-{self.port}
protocols = imap
listen = 127.0.0.1
ssl = {ssl}
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0 secs
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {min(uid, 100) if uid else 0}
first_valid_gid = 0
mail_location = maildir:{r}/mail/%u
mailbox_idle_check_interval = 1 secs
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Archive {{
    auto = create
  }}
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {r}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={r}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.ssl_port}
  }}
}}
service anvil {{
  chroot =
  # no auth penalty: the tests log in with wrong passwords on purpose
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def start(self, timeout: float = 15.0) -> Dovecot:
        binary = dovecot_binary()
        if binary is None:
            raise RuntimeError("dovecot is not installed: run scripts/system-deps")
        if os.geteuid() == 0:
            internal, login = "dovecot", "dovenull"
            owner = pwd.getpwnam("dovecot")
        else:
            owner = pwd.getpwuid(os.geteuid())
            internal = login = owner.pw_name
        for d in ("run", "state", "mail"):
            (self.root / d).mkdir()
        os.chmod(self.root, 0o755)
        os.chown(self.root / "mail", owner.pw_uid, owner.pw_gid)
        (self.root / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}\n" for u, p in self.users.items()))
        conf = self.root / "dovecot.conf"
        conf.write_text(self._config(internal, login, owner.pw_uid, owner.pw_gid))
        self.proc = subprocess.Popen([binary, "-F", "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dovecot exited ({self.proc.returncode}): {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not listen within {timeout}s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- a mail client for the tests (stdlib imaplib) ----------------------------------

    def client(self, user: str) -> imaplib.IMAP4:
        c = imaplib.IMAP4("127.0.0.1", self.port)
        c.login(user, self.users[user])
        return c

    def append(self, user: str, raw: bytes, folder: str = "INBOX", seen: bool = False) -> int:
        """Append a mail (IMAP APPEND); returns its UID."""
        c = self.client(user)
        try:
            typ, data = c.append(folder, r"(\Seen)" if seen else None, None, raw)
            assert typ == "OK", data
            text = data[0].decode() if data and data[0] else ""
            # [APPENDUID <uidvalidity> <uid>]
            return int(text.split("APPENDUID", 1)[1].split("]")[0].split()[1])
        finally:
            c.logout()

    def append_many(self, user: str, raws: list[bytes], folder: str = "INBOX") -> list[int]:
        """Append several mails over one connection; returns their UIDs."""
        c = self.client(user)
        uids = []
        try:
            for raw in raws:
                typ, data = c.append(folder, None, None, raw)
                assert typ == "OK", data
                text = data[0].decode() if data and data[0] else ""
                uids.append(int(text.split("APPENDUID", 1)[1].split("]")[0].split()[1]))
            return uids
        finally:
            c.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, str]:
        """UID -> FLAGS of every mail in the folder."""
        c = self.client(user)
        try:
            c.select(folder)
            typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
            out: dict[int, str] = {}
            for item in data or []:
                if not item:
                    continue
                text = item.decode() if isinstance(item, bytes) else str(item)
                if "UID" in text:
                    uid = int(text.split("UID", 1)[1].split()[0].strip(")"))
                    out[uid] = text.split("FLAGS", 1)[1]
            return out
        finally:
            c.logout()
