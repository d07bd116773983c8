"""Generate more of the real-server bounce corpus (NOT run in CI).

    sudo .venv/bin/python tests/corpus/generate_more.py --roots /tmp/mta [--out DIR]

The companion of ``generate_bounces.py`` (Postfix relay + Postfix destination
+ Exim). Here every MTA Debian ships that runs from an extracted package tree
relays to one *scripted destination*: an aiosmtpd server on loopback that
answers each recipient the way real receiving servers do (the replies below,
with and without enhanced status codes) and refuses content and size at DATA.
The MTAs write the bounces themselves; the destination is also where the
bounces arrive (``bounce+<id>@mycompany.test``) and are saved.

``--roots DIR`` holds the trees made with ``apt-get download PKG`` and
``dpkg-deb -x PKG.deb DIR/<name>``:

- ``DIR/smtpd-root``: opensmtpd (OpenSMTPD 6.8)
- ``DIR/dma-root``: dma (the DragonFly Mail Agent 0.13)
- ``DIR/exim-root``: exim4-daemon-light exim4-base exim4-config libidn12
- ``DIR/courier-root``: courier-mta courier-base courier-authlib libcourier-unicode4
  libgdbm6 libnet-cidr-perl libperl5.36 libidn12 (Courier 1.0.16)
- ``DIR/sendmail-root``: sendmail-bin sendmail-base sendmail-cf libidn12 (Sendmail
  8.17; its ``.cf`` is built with m4, which must be installed to generate, and only then)

Postfix is the installed one (``/usr/sbin/postfix``). Each MTA runs as a
private instance (own config, queue and spool, in a private mount namespace
where paths are compiled in), listening on loopback only, and is stopped at
the end by its own pid. Labels (``<name>.json``) are written from the replies
the destination gave (the scenario), never from the parser.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_bounces import (  # noqa: E402
    CATCHALL,
    Capture,
    Exim,
    Postfix,
    free_port,
    message,
    rcpt,
    texthash,
)

# local part -> (the destination's reply at RCPT, expected status, reason, hard)
REPLIES: dict[str, tuple[str, str, str, bool]] = {
    "nobody": ("550 5.1.1 <{a}>: Recipient address rejected: User unknown in local "
               "recipient table", "5.1.1", "unknown_user", True),
    "nosuch": ("550 No such user here", "5.1.1", "unknown_user", True),
    "full": ("552 5.2.2 <{a}>: Mailbox full, quota exceeded", "5.2.2", "mailbox_full", False),
    "quota": ("552 Requested mail action aborted: exceeded storage allocation", "5.2.2",
              "mailbox_full", False),
    "policy": ("554 5.7.1 <{a}>: Recipient address rejected: Access denied by local policy",
               "5.7.1", "blocked", False),
    "disabled": ("550 5.2.1 The email account that you tried to reach is disabled.", "5.2.1",
                 "unknown_user", True),
}
# GMX's receiving servers, as its postmaster pages document them: multi-line
# replies, no enhanced status codes, a case URL on the last line
# (postmaster.gmx.com/en/error-messages); the NDR is written by the sending MTA
GMX_REPLIES: dict[str, tuple[str, str, str, bool]] = {
    "blocked": ("554-gmx.net (mxgmx104) Nemesis ESMTP Service not available\r\n"
                "554-No SMTP service\r\n554-IP address is block listed.\r\n"
                "554 For explanation visit https://postmaster.gmx.net/en/case?c=r0201&i=ip"
                "&v=127.0.0.1&r=1MNcgj-1ue23t3pyV-00S2YR", "5.7.1", "blocked", False),
    "gone": ("550-Requested action not taken: mailbox unavailable\r\n"
             "550 For explanation visit https://postmaster.gmx.net/en/case?c=hi&i=ip"
             "&v=127.0.0.1&r=1MKsax-1uIbZg2cBB-00LVeq", "5.1.1", "unknown_user", True),
    "full": ("552-Requested mail action aborted: exceeded storage allocation, Quota exceeded"
             "\r\n552 For explanation visit https://postmaster.gmx.net/en/case?c=hi&i=ip"
             "&v=127.0.0.1&r=1Mf0Bw-1uBqdu0Gm4-00gWtJ", "5.2.2", "mailbox_full", False),
}
SPAM_REPLY = "550 5.7.1 Message content rejected as spam"
BIG_REPLY = "552 5.3.4 Message size exceeds fixed limit"
# the same refusals without enhanced codes (for mail to plain@dest.test)
SPAM_PLAIN = "554 Transaction failed: message looks like spam"
BIG_PLAIN = "552 Message size exceeds fixed maximum message size"
BIG = 60_000


class Scripted(Capture):
    """The destination: scripted answers for dest.test, everything else kept."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        local, _, domain = address.lower().partition("@")
        if domain == "dest.test" and local in REPLIES:
            return REPLIES[local][0].format(a=address)
        if domain == "gmx.test" and local in GMX_REPLIES:
            return GMX_REPLIES[local][0]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        dest = any(r.lower().endswith("@dest.test") for r in envelope.rcpt_tos)
        plain = any(r.lower() == "plain@dest.test" for r in envelope.rcpt_tos)
        if dest and b"SPAMTEST" in envelope.content[:4000]:
            return SPAM_PLAIN if plain else SPAM_REPLY
        if dest and len(envelope.content) > BIG:
            return BIG_PLAIN if plain else BIG_REPLY
        return await super().handle_DATA(server, session, envelope)


def big_message(mid: str, rcpts: list[str]) -> EmailMessage:
    msg = message(mid, rcpts, "Quarterly report")
    msg.set_content("Hello,\n\n" + ("the figures of the quarter. " * 40 + "\n") * 70)
    return msg


def send(port: int, mid: str, rcpts: list[str], *, subject: str = "Invoice 42",
         big: bool = False, mail_options: list[str] | None = None,
         rcpt_options: list[str] | None = None) -> None:
    sender = f"bounce+{mid}@{CATCHALL}"
    msg = big_message(mid, rcpts) if big else message(mid, rcpts, subject)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("app.mycompany.test")
        smtp.sendmail(sender, rcpts, msg.as_bytes(policy=SMTP), mail_options=mail_options or [],
                      rcpt_options=rcpt_options or [])


def wait_port(port: int, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port}")


def namespaced(binds: list[tuple[Path, str]], command: str) -> list[str]:
    script = " && ".join(f"mount --bind {src} {dst}" for src, dst in binds)
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"{script} && exec {command}"]


def passwd_with(base: Path, users: dict[str, int]) -> tuple[Path, Path]:
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    for name, uid in users.items():
        if f"\n{name}:" not in passwd:
            passwd += f"{name}:x:{uid}:{uid}:{name}:/var/empty:/usr/sbin/nologin\n"
        if f"\n{name}:" not in group:
            group += f"{name}:x:{uid}:\n"
    (base / "passwd").write_text(passwd)
    (base / "group").write_text(group)
    return base / "passwd", base / "group"


# --- OpenSMTPD --------------------------------------------------------------------------

SMTPD_CONF = """
queue ttl 12s
bounce warn-interval 3s
listen on 127.0.0.1 port {port} hostname smtpd-relay.mycompany.test
action "cap" relay host smtp://127.0.0.1:{cap}
action "dead" relay host smtp://127.0.0.1:{dead}
action "mx" relay
match from any for domain "mycompany.test" action "cap"
match from any for domain "dest.test" action "cap"
match from any for domain "unreach.test" action "dead"
match from any for any action "mx"
"""


class OpenSMTPD:
    def __init__(self, root: Path, base: Path, port: int, cap: int, dead: int) -> None:
        self.root, self.port = root, port
        self.dir = base / "smtpd"
        self.spool = self.dir / "spool"
        self.spool.mkdir(parents=True)
        os.chmod(self.spool, 0o711)
        self.conf = self.dir / "smtpd.conf"
        self.conf.write_text(SMTPD_CONF.format(port=port, cap=cap, dead=dead))
        os.chmod(self.conf, 0o644)
        self.made_empty = not Path("/var/lib/opensmtpd/empty").exists()
        if self.made_empty:  # the compiled-in chroot; removed again in stop()
            Path("/var/lib/opensmtpd/empty").mkdir(parents=True)
        self.passwd, self.group = passwd_with(self.dir, {"opensmtpd": 64901, "opensmtpq": 64902})
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binds = [(self.passwd, "/etc/passwd"), (self.group, "/etc/group")]
        spool_parent = Path("/var/spool")
        target = "/var/spool/smtpd"
        if not Path(target).exists():  # a mount point is needed: bind over /var/spool
            (self.dir / "varspool").mkdir()
            (self.dir / "varspool" / "smtpd").mkdir()
            shutil.copystat(spool_parent, self.dir / "varspool")
            binds.append((self.dir / "varspool", "/var/spool"))
            binds.append((self.spool, target))
        else:
            binds.append((self.spool, target))
        cmd = f"{self.root}/usr/sbin/smtpd -d -f {self.conf}"
        self.proc = subprocess.Popen(namespaced(binds, cmd),
                                     stdout=open(self.dir / "smtpd.out", "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, "opensmtpd")
        except RuntimeError:
            raise RuntimeError((self.dir / "smtpd.out").read_text(errors="replace")) from None

    def version(self) -> str:
        out = subprocess.run([f"{self.root}/usr/sbin/smtpd", "-h"], capture_output=True,
                             text=True, check=False)
        return (out.stdout + out.stderr).splitlines()[0].replace("Version: ", "")

    def log(self) -> str:
        return (self.dir / "smtpd.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        Path("/var/run/smtpd.sock").unlink(missing_ok=True)
        if self.made_empty:
            shutil.rmtree("/var/lib/opensmtpd", ignore_errors=True)


# --- DragonFly Mail Agent -----------------------------------------------------------------


class DMA:
    """dma is a sendmail replacement, not a daemon: each mail is handed to
    ``dma -f sender rcpt...`` on stdin; it delivers through the smarthost."""

    def __init__(self, root: Path, base: Path, smarthost_port: int) -> None:
        self.root = root
        self.dir = base / "dma"
        self.spool = self.dir / "spool"
        self.spool.mkdir(parents=True)
        os.chmod(self.spool, 0o1777)  # dma writes it as group mail
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        (self.etc / "dma.conf").write_text(
            f"SMARTHOST 127.0.0.1\nPORT {smarthost_port}\nSPOOLDIR {self.spool}\n"
            "MAILNAME dma-host.mycompany.test\nFULLBOUNCE\n")
        (self.etc / "auth.conf").write_text("")
        (self.dir / "aliases").write_text("")
        self.made_etc = not Path("/etc/dma").exists()
        if self.made_etc:  # the compiled-in config directory (a mount point); removed in stop()
            Path("/etc/dma").mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def version(self) -> str:
        return "DragonFly Mail Agent v0.13 (Debian 12 dma 0.13-1)"

    def send(self, mid: str, rcpts: list[str], *, subject: str = "Invoice 42",
             big: bool = False) -> None:
        msg = big_message(mid, rcpts) if big else message(mid, rcpts, subject)
        binds = [(self.etc, "/etc/dma"), (self.dir / "aliases", "/etc/aliases")]
        cmd = f"{self.root}/usr/sbin/dma -f bounce+{mid}@{CATCHALL} " + " ".join(rcpts)
        p = subprocess.Popen(namespaced(binds, cmd), stdin=subprocess.PIPE,
                             stdout=open(self.dir / f"{mid}.out", "wb"),  # noqa: SIM115
                             stderr=subprocess.STDOUT)
        assert p.stdin is not None
        p.stdin.write(msg.as_bytes())
        p.stdin.close()
        self.procs.append(p)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.dir.glob("*.out"))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
        if self.made_etc:
            Path("/etc/dma").rmdir()


# --- Sendmail ------------------------------------------------------------------------------

SENDMAIL_MC = """divert(-1)
divert(0)dnl
include(`{cf}/m4/cf.m4')dnl
VERSIONID(`postlane corpus')dnl
OSTYPE(`linux')dnl
define(`confDOMAIN_NAME', `sendmail-relay.mycompany.test')dnl
define(`QUEUE_DIR', `{dir}/queue')dnl
define(`STATUS_FILE', `{dir}/statistics')dnl
define(`ALIAS_FILE', `{dir}/aliases')dnl
define(`confPID_FILE', `{dir}/sendmail.pid')dnl
define(`confHOSTS_FILE', `{dir}/hosts')dnl
define(`confSERVICE_SWITCH_FILE', `{dir}/service.switch')dnl
define(`confHELP_FILE', `{dir}/helpfile')dnl
define(`confCONTROL_SOCKET_NAME', `{dir}/smcontrol')dnl
define(`confDONT_BLAME_SENDMAIL', `GroupWritableDirPathSafe,\
GroupWritableForwardFileSafe,GroupReadableKeyFile,TrustStickyBit')dnl
define(`confTO_QUEUEWARN', `{warn}')dnl
define(`confTO_QUEUERETURN', `{ret}')dnl
define(`confMIN_QUEUE_AGE', `0')dnl
define(`confTO_CONNECT', `5s')dnl
define(`confTO_ICONNECT', `5s')dnl
define(`confDELIVERY_MODE', `background')dnl
define(`confMIME_FORMAT_ERRORS', `{mime}')dnl
define(`confPRIVACY_FLAGS', `goaway')dnl
define(`confDEF_USER_ID', `65534:65534')dnl
define(`ESMTP_MAILER_ARGS', `TCP $h {cap}')dnl
define(`RELAY_MAILER_ARGS', `TCP $h {dead}')dnl
FEATURE(`nocanonify')dnl
FEATURE(`no_default_msa')dnl
FEATURE(`accept_unresolvable_domains')dnl
FEATURE(`promiscuous_relay')dnl
FEATURE(`mailertable', `hash -o {dir}/mailertable')dnl
DAEMON_OPTIONS(`Port={port}, Addr=127.0.0.1, Name=MTA')dnl
MAILER(`smtp')dnl
"""


class Sendmail:
    """Sendmail 8 from the extracted sendmail-bin/-base/-cf tree, configured with m4
    (needed here only, to build the .cf) and run as a private daemon with ``-C``."""

    def __init__(self, root: Path, base: Path, port: int, cap: int, dead: int, *,
                 name: str = "sendmail", mime: bool = True) -> None:
        self.root, self.port = root, port
        self.dir = base / name
        (self.dir / "queue").mkdir(parents=True)
        os.chmod(self.dir / "queue", 0o700)
        self.env = {**os.environ, "LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu")}
        self.bin = root / "usr/libexec/sendmail/sendmail"
        (self.dir / "aliases").write_text("postmaster: root\n")
        (self.dir / "hosts").write_text("127.0.0.1 localhost sendmail-relay.mycompany.test\n")
        (self.dir / "service.switch").write_text("hosts files\naliases files\n")
        (self.dir / "statistics").write_text("")
        (self.dir / "helpfile").write_text("")
        mc = SENDMAIL_MC.format(cf=root / "usr/share/sendmail/cf", dir=self.dir, port=port,
                                cap=cap, dead=dead, warn="6s", ret="25s",
                                mime="True" if mime else "False")
        (self.dir / "sendmail.mc").write_text(mc)
        cf = subprocess.run(["m4", str(self.dir / "sendmail.mc")], capture_output=True,
                            check=True).stdout
        (self.dir / "sendmail.cf").write_bytes(cf)
        mt = self.dir / "mailertable"
        mt.write_text(f"{CATCHALL} esmtp:[127.0.0.1]\ndest.test esmtp:[127.0.0.1]\n"
                      "unreach.test relay:[127.0.0.1]\n")
        subprocess.run([str(root / "usr/libexec/sendmail/makemap"), "-C",
                        str(self.dir / "sendmail.cf"), "hash", str(mt)],
                       stdin=open(mt, "rb"), check=True, env=self.env)  # noqa: SIM115
        subprocess.run(self._wrap("-bi"), env=self.env, check=False, capture_output=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def _wrap(self, *args: str) -> list[str]:
        """Sendmail wants its host name fully qualified and resolvable before it reads
        any configuration: a private UTS namespace names the host, a private /etc/hosts
        resolves it (the system's name and files are not changed)."""
        cmd = f"{self.bin} -C {self.dir / 'sendmail.cf'} " + " ".join(args)
        return ["unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c",
                f"hostname sendmail-relay.mycompany.test && "
                f"mount --bind {self.dir / 'hosts'} /etc/hosts && exec {cmd}"]

    def version(self) -> str:
        out = subprocess.run(self._wrap("-d0.1", "-bt"),
                             input=b"", capture_output=True, env=self.env, check=False)
        return "Sendmail " + out.stdout.decode().splitlines()[0].replace("Version ", "")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self._wrap("-bD", "-q3s", "-L", "sm-corpus"), env=self.env,
            stdout=open(self.dir / "daemon.out", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, "sendmail")
        except RuntimeError:
            raise RuntimeError((self.dir / "daemon.out").read_text(errors="replace")) from None

    def log(self) -> str:
        return (self.dir / "daemon.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class NxDns:
    """A loopback DNS server that answers NXDOMAIN to every question (the answer a
    real resolver gives for a domain that does not exist), on its own loopback
    address; an MTA sees it through a private /etc/resolv.conf."""

    ADDR = "127.0.21.53"

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.ADDR, 53))
        self.sock.settimeout(0.5)
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                q, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(q) < 12:
                continue
            flags = 0x8000 | (q[2] & 0x79) << 8 | 0x0080 | 3  # response, RD kept, RA, NXDOMAIN
            self.sock.sendto(q[:2] + flags.to_bytes(2, "big") + q[4:6] + b"\0\0\0\0\0\0"
                             + q[12:], peer)

    def resolv_conf(self, path: Path) -> Path:
        path.write_text(f"nameserver {self.ADDR}\noptions attempts:1 timeout:2\n")
        return path

    def stop(self) -> None:
        self.running = False
        self.sock.close()


# --- Courier -------------------------------------------------------------------------------


class Courier:
    """The Courier mail server 1.0 from the extracted courier-mta/-base/-authlib tree:
    ``courierd`` runs in the foreground in a private mount namespace where its
    compiled-in directories (/etc/courier, /usr/lib/courier, /var/lib/courier,
    /run/courier) are this instance's; mail is injected with its own ``sendmail``
    (``submit``) and leaves through its esmtp module to the scripted destination."""

    UID = 64903

    def __init__(self, root: Path, base: Path, cap: int, dead: int,
                 resolv_conf: Path | None = None) -> None:
        self.root = root
        self.resolv_conf = resolv_conf
        self.dir = base / "courier"
        self.etc = self.dir / "etc"
        shutil.copytree(root / "etc/courier", self.etc, symlinks=True)
        conf = {
            "me": "courier-relay.mycompany.test", "defaultdomain": "mycompany.test",
            "esmtproutes": f"{CATCHALL}: [127.0.0.1],{cap}\ndest.test: [127.0.0.1],{cap}\n"
                           f"unreach.test: [127.0.0.1],{dead}\n",
            "queuetime": "40s", "warntime": "8s", "retryalpha": "3s", "retrybeta": "3",
            "retrygamma": "5s", "retrymaxdelta": "1", "esmtptimeoutconnect": "5s",
            "locals": "courier-relay.mycompany.test\n", "esmtpdelay": "1s",
        }
        for name, text in conf.items():
            (self.etc / name).write_text(text if text.endswith("\n") else text + "\n")
        courierd = (self.etc / "courierd").read_text()
        courierd = courierd.replace(". /etc/environment\n", "")
        courierd = courierd.replace("ESMTP_USE_STARTTLS=1", "ESMTP_USE_STARTTLS=0")
        courierd = courierd.replace("ESMTP_BLOCKBACKSCATTER=smtp/dsn", "ESMTP_BLOCKBACKSCATTER=")
        (self.etc / "courierd").write_text(courierd)
        self.spool = self.dir / "spool"
        shutil.copytree(root / "var/lib/courier", self.spool)
        self.run = self.dir / "run"
        self.run.mkdir()
        for d in [self.spool, *self.spool.rglob("*"), self.run]:
            if d.is_dir():
                os.chown(d, self.UID, self.UID)
                os.chmod(d, 0o770)
        os.chmod(self.spool, 0o755)
        self.passwd, self.group = passwd_with(self.dir, {"courier": self.UID})
        lib = [root / "usr/lib", root / "usr/lib/x86_64-linux-gnu"]
        (self.dir / "ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n"
                                             + "".join(f"{x}\n" for x in lib))
        self.cache = self.dir / "ld.so.cache"
        subprocess.run(["ldconfig", "-X", "-C", str(self.cache), "-f",
                        str(self.dir / "ld.so.conf")], check=True)
        self.made: list[Path] = []
        for point in ("/etc/courier", "/usr/lib/courier", "/var/lib/courier", "/run/courier"):
            if not Path(point).exists():  # mount points; removed again in stop()
                Path(point).mkdir(parents=True)
                self.made.append(Path(point))
        self.proc: subprocess.Popen[bytes] | None = None
        self.subs: list[subprocess.Popen[bytes]] = []

    def _wrap(self, command: str) -> list[str]:
        binds = [(self.passwd, "/etc/passwd"), (self.group, "/etc/group"),
                 (self.cache, "/etc/ld.so.cache"), (self.etc, "/etc/courier"),
                 (self.root / "usr/lib/courier", "/usr/lib/courier"),
                 (self.spool, "/var/lib/courier"), (self.run, "/run/courier")]
        if self.resolv_conf is not None:
            binds.append((self.resolv_conf, "/etc/resolv.conf"))
        return namespaced(binds, command)

    def version(self) -> str:
        out = subprocess.run(self._wrap(f"{self.root}/usr/sbin/courier --version"),
                             capture_output=True, text=True, check=False)
        return " ".join((out.stdout or out.stderr).split()[:2]) or "Courier"

    def start(self) -> None:
        cmd = ("env -i sh -c 'set -a; . /etc/courier/courierd; cd /usr; "
               "exec /usr/lib/courier/courier/courierd'")
        self.proc = subprocess.Popen(self._wrap(cmd),
                                     stdout=open(self.dir / "courierd.out", "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # courierd makes its trigger pipe when ready
            if (self.spool / "tmp" / "trigger").exists():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("courierd did not start: " + self.log())

    def send(self, mid: str, rcpts: list[str], *, subject: str = "Invoice 42",
             big: bool = False) -> None:
        msg = big_message(mid, rcpts) if big else message(mid, rcpts, subject)
        cmd = f"{self.root}/usr/sbin/sendmail -f bounce+{mid}@{CATCHALL} " + " ".join(rcpts)
        p = subprocess.run(self._wrap(cmd), input=msg.as_bytes(), capture_output=True,
                           check=False)
        if p.returncode:
            raise RuntimeError(f"courier submit: {p.stdout!r} {p.stderr!r}")

    def log(self) -> str:
        return (self.dir / "courierd.out").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            children = [int(x) for x in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/"
                                             "children").read_text().split()] \
                if Path(f"/proc/{self.proc.pid}").exists() else []
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            for pid in children:  # its delivery modules, by their own pids
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
        for point in reversed(self.made):
            point.rmdir()


# --- scenarios ----------------------------------------------------------------------------


def expected(addrs: list[str]) -> list[dict[str, Any]]:
    out = []
    for a in addrs:
        local = a.partition("@")[0]
        if local in REPLIES:
            _, status, reason, hard = REPLIES[local]
            out.append(rcpt(a, status, reason, hard))
    return out


MIXED = [f"{x}@dest.test" for x in ("nobody", "nosuch", "full", "quota", "policy",
                                    "disabled")] + ["ok@dest.test"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "bounces"))
    ap.add_argument("--roots", required=True, help="directory of extracted package trees")
    ap.add_argument("--only", default="",
                    help="comma-separated: postfix,opensmtpd,dma,exim,sendmail,courier")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (the MTAs need it)", file=sys.stderr)
        return 2
    only = {x for x in args.only.split(",") if x}
    roots = Path(args.roots)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="postlane-corpus2-"))
    os.chmod(base, 0o755)
    cap = Scripted()
    cap_port, dead_port = free_port(), free_port()
    controller = Controller(cap, hostname="127.0.0.1", port=cap_port)
    controller.start()
    made: list[str] = []
    stops: list[Any] = []

    def save(name: str, m: tuple[str, list[str], bytes], exp: dict[str, Any]) -> None:
        (out / f"{name}.eml").write_bytes(m[2].replace(b"\r\n", b"\n"))
        meta = {"source": exp.pop("source"), **exp}
        (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        made.append(name)
        print(f"  {name}.eml ({len(m[2])} bytes)")

    def to_bounce(mid: str, *, subject: str = "") -> Any:
        def pred(m: tuple[str, list[str], bytes]) -> bool:
            if not any(r.lower() == f"bounce+{mid}@{CATCHALL}" for r in m[1]):
                return False
            head = m[2].split(b"\n\n", 1)[0].lower()
            return not subject or subject.encode() in head
        return pred

    def scenarios(tag: str, fmt: str, source: str, submit: Any, *, dns: bool = True,
                  unreachable: bool = False, delay_subject: str = "",
                  fail_subject: str = "", one_by_one: bool = False,
                  expired_status: str = "4.4.1") -> None:
        if one_by_one:  # dma gives up a mail at its first refused recipient
            for i, addr in enumerate(MIXED[:-1]):
                mid = f"{tag}-reply-1{i}"
                submit(mid, [addr])
                local = addr.partition("@")[0]
                save(f"{tag}-reply-{local}", cap.wait(to_bounce(mid), 120, f"{tag} {local}"), {
                    "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
                    "results": expected([addr])})
        else:
            mid = f"{tag}-mixed-01"
            submit(mid, MIXED)
            save(f"{tag}-mixed-replies", cap.wait(to_bounce(mid), 120, f"{tag} mixed"), {
                "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
                "results": expected(MIXED)})
        mid = f"{tag}-spam-02"
        submit(mid, ["ok@dest.test"], subject="SPAMTEST cheap watches")
        save(f"{tag}-spam-rejected", cap.wait(to_bounce(mid), 120, f"{tag} spam"), {
            "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
            "results": [rcpt("ok@dest.test", "5.7.1", "spam", False)]})
        mid = f"{tag}-big-03"
        submit(mid, ["ok@dest.test"], big=True)
        save(f"{tag}-message-too-big", cap.wait(to_bounce(mid), 120, f"{tag} big"), {
            "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
            "results": [rcpt("ok@dest.test", "5.3.4", "rejected", False)]})
        mid = f"{tag}-spam-plain-12"
        submit(mid, ["plain@dest.test"], subject="SPAMTEST cheap watches")
        save(f"{tag}-spam-rejected-nocode", cap.wait(to_bounce(mid), 120,
                                                    f"{tag} spam, no code"), {
            "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
            "results": [rcpt("plain@dest.test", "5.7.1", "spam", False)]})
        mid = f"{tag}-big-plain-13"
        submit(mid, ["plain@dest.test"], big=True)
        save(f"{tag}-message-too-big-nocode", cap.wait(to_bounce(mid), 120,
                                                      f"{tag} big, no code"), {
            "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
            "results": [rcpt("plain@dest.test", "5.3.4", "rejected", False)]})
        if dns:
            mid = f"{tag}-nxdomain-04"
            submit(mid, ["someone@no-such-domain-postlane.invalid"])
            save(f"{tag}-host-unknown", cap.wait(to_bounce(mid), 120, f"{tag} nxdomain"), {
                "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
                "results": [rcpt("someone@no-such-domain-postlane.invalid", "5.1.2",
                                 "host_unknown", True)]})
        if unreachable:
            mid = f"{tag}-unreach-05"
            submit(mid, ["someone@unreach.test"])
            save(f"{tag}-delayed", cap.wait(to_bounce(mid, subject=delay_subject), 120,
                                           f"{tag} delay"), {
                "source": source, "format": fmt, "kind": "delay", "message_id": mid,
                "results": [], "delayed": ["someone@unreach.test"]})
            m = cap.wait(to_bounce(mid, subject=fail_subject), 180, f"{tag} expired")
            save(f"{tag}-expired-unreachable", m, {
                "source": source, "format": fmt, "kind": "bounce", "message_id": mid,
                "results": [rcpt("someone@unreach.test", expired_status, "expired", False)]})

    try:
        if not only or "postfix" in only:
            version = subprocess.run(["postconf", "-d", "-h", "mail_version"],
                                     capture_output=True, text=True, check=True).stdout.strip()
            src = f"Postfix {version} (Debian 12), generated by tests/corpus/generate_more.py"
            maps = base / "pf-maps"
            maps.mkdir()
            port = free_port()
            pf = Postfix(base, "relay2", port, {
                "myhostname": "relay2.mycompany.test", "mydomain": "mycompany.test",
                "myorigin": "mycompany.test", "mydestination": "", "local_recipient_maps": "",
                "transport_maps": texthash(maps / "transport", [
                    f"{CATCHALL} smtp:[127.0.0.1]:{cap_port}",
                    f"dest.test smtp:[127.0.0.1]:{cap_port}",
                    f"gmx.test smtp:[127.0.0.1]:{cap_port}"]),
                "smtp_skip_5xx_greeting": "no",
            })
            pf.start()
            stops.append(pf.stop)
            print(f"Postfix relay2 on {port}")

            def pf_submit(mid: str, rcpts: list[str], **kw: Any) -> None:
                send(port, mid, rcpts, **kw)

            scenarios("postfix", "postfix", src, pf_submit, dns=False)
            # GMX's documented refusals (no enhanced codes), in Postfix's DSN
            mid = "postfix-gmx-08"
            gmx = [f"{x}@gmx.test" for x in GMX_REPLIES]
            pf_submit(mid, gmx)
            save("postfix-gmx-replies", cap.wait(to_bounce(mid), 120, "gmx replies"), {
                "source": src + "; the destination answers as GMX documents its refusals "
                                "(postmaster.gmx.com/en/error-messages)",
                "format": "postfix", "kind": "bounce", "message_id": mid,
                "results": [rcpt(a, *GMX_REPLIES[a.partition("@")[0]][1:]) for a in gmx]})
            # ORCPT (xtext), ENVID and RET=HDRS together, two failed recipients
            mid = "postfix-dsnopts-06"
            rcpts = ["nobody+tag@dest.test", "Nosuch@dest.test"]
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("app.mycompany.test")
                smtp.mail(f"bounce+{mid}@{CATCHALL}", ["RET=HDRS", f"ENVID=env-{mid}"])
                smtp.rcpt(rcpts[0], ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;nobody+2Btag@dest.test"])
                smtp.rcpt(rcpts[1], ["NOTIFY=FAILURE", "ORCPT=rfc822;Nosuch@Dest.test"])
                smtp.data(message(mid, rcpts).as_bytes())
            REPLIES.setdefault("nobody+tag", REPLIES["nobody"])
            save("postfix-orcpt-envid-hdrs", cap.wait(to_bounce(mid), 120, "dsn options"), {
                "source": src, "format": "postfix", "kind": "bounce", "message_id": mid,
                "results": [rcpt("nobody+tag@dest.test", "5.1.1", "unknown_user", True),
                            rcpt("nosuch@dest.test", "5.1.1", "unknown_user", True)]})
            # ENVID and ORCPT, full return, one recipient refused by policy
            mid = "postfix-dsnopts-07"
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.ehlo("app.mycompany.test")
                smtp.mail(f"bounce+{mid}@{CATCHALL}", ["RET=FULL", f"ENVID={mid}"])
                smtp.rcpt("policy@dest.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;policy@dest.test"])
                smtp.data(message(mid, ["policy@dest.test"]).as_bytes())
            save("postfix-orcpt-envid-full", cap.wait(to_bounce(mid), 120, "dsn options 2"), {
                "source": src, "format": "postfix", "kind": "bounce", "message_id": mid,
                "results": [rcpt("policy@dest.test", "5.7.1", "blocked", False)]})

        if (not only or "opensmtpd" in only) and (roots / "smtpd-root").is_dir():
            port = free_port()
            sm = OpenSMTPD(roots / "smtpd-root", base, port, cap_port, dead_port)
            sm.start()
            stops.append(sm.stop)
            src = f"{sm.version()} (Debian 12 opensmtpd), generated by " \
                  "tests/corpus/generate_more.py"
            print(f"OpenSMTPD on {port}")

            def sm_submit(mid: str, rcpts: list[str], **kw: Any) -> None:
                send(port, mid, rcpts, **kw)

            try:
                scenarios("opensmtpd", "opensmtpd", src, sm_submit, unreachable=False,
                          delay_subject="delay", fail_subject="failure")
            except Exception:
                print(sm.log()[-5000:], file=sys.stderr)
                raise

        if (not only or "dma" in only) and (roots / "dma-root").is_dir():
            dma = DMA(roots / "dma-root", base, cap_port)
            stops.append(dma.stop)
            src = f"{dma.version()}, generated by tests/corpus/generate_more.py"
            print("dma via the scripted smarthost")

            def dma_submit(mid: str, rcpts: list[str], **kw: Any) -> None:
                dma.send(mid, rcpts, **kw)

            try:
                scenarios("dma", "dma", src, dma_submit, dns=False, one_by_one=True)
            except Exception:
                print(dma.log()[-5000:], file=sys.stderr)
                raise

        if (not only or "exim" in only) and (roots / "exim-root").is_dir():
            port = free_port()
            ex = Exim(roots / "exim-root", base, port, cap_port, cap_port, dead_port)
            ex.start()
            stops.append(ex.stop)
            src = f"{ex.version()} (Debian 12 exim4-daemon-light), generated by " \
                  "tests/corpus/generate_more.py"
            print(f"Exim on {port}")

            def ex_submit(mid: str, rcpts: list[str], **kw: Any) -> None:
                send(port, mid, rcpts, **kw)

            scenarios("exim", "exim", src, ex_submit, dns=False)

        if (not only or "courier" in only) and (roots / "courier-root").is_dir():
            dns = NxDns()
            stops.append(dns.stop)
            co = Courier(roots / "courier-root", base, cap_port, dead_port,
                         dns.resolv_conf(base / "resolv.conf"))
            stops.append(co.stop)
            co.start()
            src = f"{co.version()} (Debian 12 courier-mta), generated by " \
                  "tests/corpus/generate_more.py"
            print("courier via its sendmail (submit)")

            def co_submit(mid: str, rcpts: list[str], **kw: Any) -> None:
                co.send(mid, rcpts, **kw)

            try:
                scenarios("courier", "courier", src, co_submit, unreachable=True,
                          delay_subject="subject: warning: delayed mail",
                          fail_subject="subject: notice: mail delivery status",
                          expired_status="5.4.7")  # Status 5.0.0, "Connection refused"
            except Exception:
                print(co.log()[-5000:], file=sys.stderr)
                raise

        if (not only or "sendmail" in only) and (roots / "sendmail-root").is_dir():
            # MIME (RFC 3464) bounces, then the plain-text ones (MimeFormatErrors=False)
            # expired: the MIME DSN says Status 4.4.7; the text one says only "permanent
            # fatal errors ... could not be delivered for 25 seconds" (RFC 3463: 5.4.7)
            for tag, mime, expired_status in (("sendmail", True, "4.4.7"),
                                              ("sendmail-text", False, "5.4.7")):
                port = free_port()
                smd = Sendmail(roots / "sendmail-root", base, port, cap_port, dead_port,
                               name=tag, mime=mime)
                stops.append(smd.stop)
                smd.start()
                src = f"{smd.version()} (Debian 12 sendmail-bin, MimeFormatErrors=" \
                      f"{mime}), generated by tests/corpus/generate_more.py"
                print(f"{tag} on {port}")

                def smd_submit(mid: str, rcpts: list[str], _port: int = port,
                               **kw: Any) -> None:
                    send(_port, mid, rcpts, **kw)

                try:
                    scenarios(tag, "sendmail", src, smd_submit, unreachable=True,
                              delay_subject="warning: could not send",
                              fail_subject="returned mail", expired_status=expired_status)
                except Exception:
                    print(smd.log()[-5000:], file=sys.stderr)
                    raise
    finally:
        for stop in reversed(stops):
            stop()
        controller.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")
    print(f"{len(made)} bounces written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
