"""Generate the real-server part of the bounce corpus (NOT run in CI).

    sudo /work/venv/bin/python tests/corpus/generate_bounces.py [--out tests/corpus/bounces]

Needs root and Debian's postfix installed (``DEBIAN_FRONTEND=noninteractive
apt-get install postfix`` with debconf ``postfix/main_mailer_type`` 'Local
only'; the system instance need not run). Exim is used when an extracted
exim4-daemon-light tree is given with ``--exim-root`` (``apt-get download
exim4-daemon-light exim4-base exim4-config libidn12`` and ``dpkg-deb -x``
each into one directory: installing it would replace Postfix).

Nothing of the system is touched: every MTA runs as a private instance
(own config, queue and log directories under a temporary directory) on
loopback ports chosen at random, and is stopped at the end.

- "relay" (Postfix A) takes the test mails, relays them and writes the
  bounces: user unknown at the destination (550 at RCPT), relay denied,
  spam rejected by a header check, a domain that does not exist (real DNS
  NXDOMAIN), an unreachable host (connection refused) first as a delay
  warning and then expired, and a RET=HDRS bounce (text/rfc822-headers).
- "dest" (Postfix B) accepts mail for its domains and then fails it
  itself: a full mailbox (virtual_mailbox_limit), an unknown local user
  (local(8), local_recipient_maps empty).
- Exim (when present) relays the same kinds of failures and writes its
  own bounce and delay-warning formats.

Every bounce is sent to the envelope sender ``bounce+<message id>@mycompany.test``
(as Postlane does), which routes to a capture SMTP server that saves the
bounce as ``<name>.eml``; the expected results are written next to it as
``<name>.json`` from what the scenario provoked (not from the parser).
"""

from __future__ import annotations

import argparse
import grp
import json
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

CATCHALL = "mycompany.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Capture:
    """An SMTP server that keeps every mail it receives."""

    def __init__(self) -> None:
        self.mails: list[tuple[str, list[str], bytes]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.mails.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"

    def wait(self, pred: Any, timeout: float, what: str) -> tuple[str, list[str], bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for m in self.mails:
                    if pred(m):
                        return m
            time.sleep(0.2)
        raise TimeoutError(f"no bounce for {what} within {timeout}s")


def message(mid: str, rcpts: list[str], subject: str = "Invoice 42") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = '"Accounting" <notifications@mycompany.test>'
    msg["To"] = ", ".join(rcpts)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{mid}@mycompany.test>"
    msg["X-Postlane-Id"] = mid
    msg.set_content("Hello,\n\nplease find the invoice attached.\n")
    return msg


def send(port: int, mid: str, rcpts: list[str], *, envelope_from: str | None = None,
         subject: str = "Invoice 42", ret_hdrs: bool = False) -> None:
    sender = envelope_from or f"bounce+{mid}@{CATCHALL}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("app.mycompany.test")
        opts = ["RET=HDRS"] if ret_hdrs else []
        smtp.sendmail(sender, rcpts, message(mid, rcpts, subject).as_bytes(), mail_options=opts)


# --- Postfix ------------------------------------------------------------------------------


class Postfix:
    def __init__(self, base: Path, name: str, port: int, main: dict[str, str]) -> None:
        self.dir = base / name
        self.etc = self.dir / "etc"
        self.port = port
        self.name = name
        self.etc.mkdir(parents=True)
        for f in ("master.cf", "dynamicmaps.cf", "postfix-files"):
            shutil.copy(f"/etc/postfix/{f}", self.etc / f)
        for d in ("dynamicmaps.cf.d", "postfix-files.d"):
            if Path(f"/etc/postfix/{d}").is_dir():
                shutil.copytree(f"/etc/postfix/{d}", self.etc / d)
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        shutil.chown(self.dir / "data", "postfix", "postfix")
        conf = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.dir / "queue"),
            "data_directory": str(self.dir / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "syslog_name": f"postfix-corpus-{name}",
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": str(base),
            "smtputf8_enable": "no",
            "biff": "no",
            "append_dot_mydomain": "no",
            "alias_maps": "",
            "alias_database": "",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            **main,
        }
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        self.postconf("-F", "*/*/chroot = n")
        self.postconf("-M#", "smtp/inet")
        self.postconf("-M", f"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd")

    def postconf(self, *args: str) -> None:
        subprocess.run(["postconf", "-c", str(self.etc), *args], check=True)

    def cmd(self, *args: str) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), *args], check=True)

    def start(self) -> None:
        self.cmd("start")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"postfix {self.name} did not listen on {self.port}")

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], check=False)

    def log(self) -> str:
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""


def texthash(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return f"texthash:{path}"


# --- Exim ---------------------------------------------------------------------------------

EXIM_CONF = """
primary_hostname = exim-relay.mycompany.test
exim_path = {exim}
keep_environment =
qualify_domain = mycompany.test
spool_directory = {spool}
log_file_path = {spool}/log/%slog
pid_file_path = {spool}/exim.pid
exim_user = {user}
exim_group = {group}
never_users =
trusted_users = root
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
host_lookup =
rfc1413_hosts =
acl_smtp_rcpt = acl_check_rcpt
delay_warning = 2s
dsn_advertise_hosts = *
disable_ipv6 = true
received_header_text = Received: from ${{sender_rcvhost}} by ${{primary_hostname}} \
  with ${{received_protocol}} id ${{message_exim_id}}

begin acl
acl_check_rcpt:
  accept hosts = 127.0.0.1

begin routers
to_capture:
  driver = manualroute
  domains = mycompany.test
  transport = remote_smtp
  route_list = * 127.0.0.1::{capture} byname
  self = send
to_dest:
  driver = manualroute
  domains = dest.test : local.dest.test : other.test
  transport = remote_smtp
  route_list = * 127.0.0.1::{dest} byname
  self = send
to_dead:
  driver = manualroute
  domains = unreach.test : delayed.test
  transport = remote_smtp
  route_list = * 127.0.0.1::{dead} byname
  self = send
dnslookup:
  driver = dnslookup
  transport = remote_smtp
  no_more

begin transports
remote_smtp:
  driver = smtp
  hosts_try_chunking =
  hosts_avoid_tls = *

begin retry
unreach.test * F,1s,1s
delayed.test * F,1h,1s
* * F,1h,2s

begin rewrite
"""


class Exim:
    def __init__(self, root: Path, base: Path, port: int, capture: int, dest: int,
                 dead: int) -> None:
        self.root = root
        self.dir = base / "exim"
        self.spool = self.dir / "spool"
        (self.spool / "log").mkdir(parents=True)
        self.port = port
        self.conf = self.dir / "configure"
        # A private mount namespace sees an /etc/passwd with the Debian-exim
        # user the binary was built for; the system's files are not changed.
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        self.user = "Debian-exim"
        if "Debian-exim:" not in passwd:
            passwd += "Debian-exim:x:65534:65534:exim:/nonexistent:/usr/sbin/nologin\n"
        if "Debian-exim:" not in group:
            group += "Debian-exim:x:65534:\n"
        for p in (self.dir, self.spool, self.spool / "log"):
            os.chown(p, 65534, 65534)
        (self.dir / "passwd").write_text(passwd)
        (self.dir / "group").write_text(group)
        self.conf.write_text(EXIM_CONF.format(
            exim=root / "usr/sbin/exim4", spool=self.spool, user=self.user, group=self.user,
            port=port, capture=capture, dest=dest, dead=dead))
        self.proc: subprocess.Popen[bytes] | None = None

    def _wrap(self, *args: str) -> list[str]:
        lib = self.root / "usr/lib/x86_64-linux-gnu"
        exim = self.root / "usr/sbin/exim4"
        cache = self.dir / "ld.so.cache"
        if not cache.exists():  # exim re-executes itself with a clean environment
            (self.dir / "ld.so.conf").write_text(f"include /etc/ld.so.conf.d/*.conf\n{lib}\n")
            subprocess.run(["ldconfig", "-X", "-C", str(cache), "-f",
                            str(self.dir / "ld.so.conf")], check=True)
        script = (
            f"mount --bind {self.dir}/passwd /etc/passwd && "
            f"mount --bind {self.dir}/group /etc/group && "
            f"mount --bind {cache} /etc/ld.so.cache && "
            f"exec {exim} -C {self.conf} " + " ".join(args)
        )
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def version(self) -> str:
        out = subprocess.run(self._wrap("-bV"), capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"

    def start(self) -> None:
        self.proc = subprocess.Popen(self._wrap("-bdf", "-q1s"),
                                     stdout=open(self.dir / "daemon.out", "wb"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("exim did not listen: " + (self.dir / "daemon.out").read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# --- scenarios ----------------------------------------------------------------------------


def rcpt(addr: str, status: str, reason: str, hard: bool) -> dict[str, Any]:
    return {"recipient": addr, "status": status, "reason": reason, "hard": hard}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "bounces"))
    ap.add_argument("--exim-root", default="", help="an extracted exim4-daemon-light tree")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (the MTAs need it)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="postlane-corpus-"))
    os.chmod(base, 0o755)
    cap = Capture()
    cap_port, a_port, b_port, dead_port, e_port = (free_port() for _ in range(5))
    controller = Controller(cap, hostname="127.0.0.1", port=cap_port)
    controller.start()
    version = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    nobody = pwd.getpwnam("nobody")

    vmail = base / "vmail"
    vmail.mkdir()
    (vmail / "full").write_bytes(b"From x\n" + b"x" * 60000 + b"\n")
    (vmail / "ok").write_bytes(b"")
    for f in ("", "full", "ok"):
        os.chown(vmail / f, nobody.pw_uid, grp.getgrnam("nogroup").gr_gid)
    b_etc = base / "b-maps"
    b_etc.mkdir()
    b = Postfix(base, "dest", b_port, {
        "myhostname": "mx.dest.test",
        "mydomain": "dest.test",
        "myorigin": "dest.test",
        "mydestination": "local.dest.test",
        "local_recipient_maps": "",
        "virtual_mailbox_domains": "dest.test",
        "virtual_mailbox_base": str(vmail),
        "virtual_mailbox_maps": texthash(b_etc / "vmailbox", [
            "full@dest.test full", "ok@dest.test ok", "blocked@dest.test ok",
        ]),
        "virtual_uid_maps": f"static:{nobody.pw_uid}",
        "virtual_gid_maps": f"static:{grp.getgrnam('nogroup').gr_gid}",
        "virtual_mailbox_limit": "51200",
        "message_size_limit": "51200",
        "smtpd_recipient_restrictions": "check_recipient_access "
        + texthash(b_etc / "access", [
            "blocked@dest.test 550 5.7.1 Delivery not authorized, message refused by policy",
        ]) + ", permit_mynetworks, reject_unauth_destination",
        "header_checks": "regexp:" + str(b_etc / "header_checks"),
        "transport_maps": texthash(b_etc / "transport", [
            f"{CATCHALL} smtp:[127.0.0.1]:{cap_port}",
        ]),
        "smtp_dns_support_level": "disabled",
        "smtpd_banner": "$myhostname ESMTP",
        "mynetworks": "192.0.2.1/32",  # loopback clients are not trusted: relay denied
        "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    })
    (b_etc / "header_checks").write_text(
        "/^Subject:.*SPAMTEST/ REJECT 5.7.1 Message content rejected as spam\n")
    a_maps = base / "a-maps"
    a_maps.mkdir()
    a = Postfix(base, "relay", a_port, {
        "myhostname": "relay.mycompany.test",
        "mydomain": "mycompany.test",
        "myorigin": "mycompany.test",
        "mydestination": "",
        "local_recipient_maps": "",
        "transport_maps": texthash(a_maps / "transport", [
            f"{CATCHALL} smtp:[127.0.0.1]:{cap_port}",
            f"dest.test smtp:[127.0.0.1]:{b_port}",
            f"local.dest.test smtp:[127.0.0.1]:{b_port}",
            f"other.test smtp:[127.0.0.1]:{b_port}",
            f"unreach.test smtp:[127.0.0.1]:{dead_port}",
        ]),
        "delay_warning_time": "2s",
        "maximal_queue_lifetime": "1d",
        "bounce_queue_lifetime": "1d",
    })
    b.start()
    a.start()
    exim: Exim | None = None
    made: list[str] = []

    def save(name: str, m: tuple[str, list[str], bytes], expected: dict[str, Any]) -> None:
        (out / f"{name}.eml").write_bytes(m[2].replace(b"\r\n", b"\n"))
        meta = {"source": expected.pop("source"), **expected}
        (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
        made.append(name)
        print(f"  {name}.eml ({len(m[2])} bytes, envelope to {m[1]})")

    def to_bounce(mid: str) -> Any:
        return lambda m: any(r.lower() == f"bounce+{mid}@{CATCHALL}" for r in m[1])

    def subject_has(m: tuple[str, list[str], bytes], *words: str) -> bool:
        subject = str(message_from_bytes(m[2]).get("Subject", "")).lower()
        return any(w.lower() in subject for w in words)

    try:
        pf = f"Postfix {version} (Debian 12), generated by tests/corpus/generate_bounces.py"
        print(f"Postfix relay on {a_port}, dest on {b_port}, capture on {cap_port}")

        # 1. two unknown users and one good one: one DSN, two failures
        mid = "pf-unknown-0001"
        send(a_port, mid, ["nobody1@dest.test", "ok@dest.test", "nobody2@dest.test"])
        m = cap.wait(to_bounce(mid), 60, "unknown virtual users")
        save("postfix-user-unknown-remote", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("nobody1@dest.test", "5.1.1", "unknown_user", True),
                        rcpt("nobody2@dest.test", "5.1.1", "unknown_user", True)]})

        # 2. full mailbox: accepted by dest, virtual(8) fails, dest bounces
        mid = "pf-full-0002"
        send(a_port, mid, ["full@dest.test"])
        m = cap.wait(to_bounce(mid), 60, "full mailbox")
        save("postfix-mailbox-full", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("full@dest.test", "5.2.2", "mailbox_full", False)]})

        # 3. unknown local user: accepted, local(8) bounces it
        mid = "pf-local-0003"
        send(a_port, mid, ["nosuchuser@local.dest.test"])
        m = cap.wait(to_bounce(mid), 60, "unknown local user")
        save("postfix-user-unknown-local", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("nosuchuser@local.dest.test", "5.1.1", "unknown_user", True)]})

        # 4. relay denied by the destination (a sending-side error)
        mid = "pf-relay-0004"
        send(a_port, mid, ["someone@other.test"])
        m = cap.wait(to_bounce(mid), 60, "relay denied")
        save("postfix-relay-denied", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("someone@other.test", "5.7.1", "blocked", True)]})

        # 5. refused by policy at RCPT
        mid = "pf-policy-0005"
        send(a_port, mid, ["blocked@dest.test"])
        m = cap.wait(to_bounce(mid), 60, "policy")
        save("postfix-policy-blocked", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("blocked@dest.test", "5.7.1", "blocked", True)]})

        # 6. content rejected as spam (header_checks at the destination)
        mid = "pf-spam-0006"
        send(a_port, mid, ["ok@dest.test"], subject="SPAMTEST cheap watches")
        m = cap.wait(to_bounce(mid), 60, "spam")
        save("postfix-spam-rejected", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("ok@dest.test", "5.7.1", "spam", True)]})

        # 7. a domain that does not exist (real DNS: NXDOMAIN)
        mid = "pf-nxdomain-0007"
        send(a_port, mid, ["someone@no-such-domain-postlane.invalid"])
        m = cap.wait(to_bounce(mid), 90, "nxdomain")
        save("postfix-host-unknown", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("someone@no-such-domain-postlane.invalid", "5.4.4",
                             "host_unknown", True)]})

        # 8. RET=HDRS and a plain envelope sender: attribution by the quoted
        # headers only (text/rfc822-headers)
        mid = "pf-hdrs-0008"
        send(a_port, mid, ["nobody3@dest.test"], envelope_from=f"noreply@{CATCHALL}",
             ret_hdrs=True)
        m = cap.wait(lambda m: f"noreply@{CATCHALL}" in m[1] and mid.encode() in m[2], 60,
                     "RET=HDRS")
        save("postfix-headers-only", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("nobody3@dest.test", "5.1.1", "unknown_user", True)]})

        # 9. unreachable host: first the delay warning, then (lifetime
        # shortened) the expired bounce of the same mail
        mid = "pf-unreach-0009"
        send(a_port, mid, ["someone@unreach.test"])
        m = cap.wait(lambda m: to_bounce(mid)(m) and subject_has(m, "delayed mail"), 90,
                     "delay warning")
        save("postfix-delayed", m, {
            "source": pf, "format": "postfix", "kind": "delay", "message_id": mid,
            "results": [], "delayed": ["someone@unreach.test"]})
        a.postconf("maximal_queue_lifetime=5s", "bounce_queue_lifetime=5s")
        a.cmd("reload")
        time.sleep(6)
        a.cmd("flush")
        m = cap.wait(lambda m: to_bounce(mid)(m) and subject_has(m, "undelivered"), 90,
                     "expired")
        save("postfix-expired-unreachable", m, {
            "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
            "results": [rcpt("someone@unreach.test", "4.4.1", "expired", False)]})
        a.postconf("maximal_queue_lifetime=1d", "bounce_queue_lifetime=1d")
        a.cmd("reload")

        if args.exim_root:
            exim = Exim(Path(args.exim_root), base, e_port, cap_port, b_port, dead_port)
            ev = exim.version()
            ex = f"{ev} (Debian 12 exim4-daemon-light), generated by " \
                 "tests/corpus/generate_bounces.py"
            exim.start()
            print(f"Exim on {e_port}: {ev}")
            mid = "ex-unknown-0101"
            send(e_port, mid, ["nobody1@dest.test", "ok@dest.test"])
            m = cap.wait(to_bounce(mid), 60, "exim unknown")
            save("exim-user-unknown", m, {
                "source": ex, "format": "exim", "kind": "bounce", "message_id": mid,
                "results": [rcpt("nobody1@dest.test", "5.1.1", "unknown_user", True)]})

            mid = "ex-full-0102"
            send(e_port, mid, ["full@dest.test"])
            m = cap.wait(to_bounce(mid), 60, "exim full (bounced by postfix dest)")
            save("postfix-mailbox-full-via-exim", m, {
                "source": pf, "format": "postfix", "kind": "bounce", "message_id": mid,
                "results": [rcpt("full@dest.test", "5.2.2", "mailbox_full", False)]})

            mid = "ex-relay-0103"
            send(e_port, mid, ["someone@other.test"])
            m = cap.wait(to_bounce(mid), 60, "exim relay denied")
            save("exim-relay-denied", m, {
                "source": ex, "format": "exim", "kind": "bounce", "message_id": mid,
                "results": [rcpt("someone@other.test", "5.7.1", "blocked", True)]})

            mid = "ex-nxdomain-0104"
            send(e_port, mid, ["someone@no-such-domain-postlane.invalid"])
            m = cap.wait(to_bounce(mid), 90, "exim nxdomain")
            save("exim-host-unknown", m, {
                "source": ex, "format": "exim", "kind": "bounce", "message_id": mid,
                "results": [rcpt("someone@no-such-domain-postlane.invalid", "5.0.0",
                                 "host_unknown", True)]})

            mid = "ex-delayed-0105"
            send(e_port, mid, ["someone@delayed.test"])
            m = cap.wait(lambda m: to_bounce(mid)(m) and subject_has(m, "warning"), 90,
                         "exim delay warning")
            save("exim-delayed", m, {
                "source": ex, "format": "exim", "kind": "delay", "message_id": mid,
                "results": [], "delayed": ["someone@delayed.test"]})

            mid = "ex-unreach-0106"
            send(e_port, mid, ["someone@unreach.test"])
            m = cap.wait(lambda m: to_bounce(mid)(m) and subject_has(m, "failed",
                                                                         "undeliver"),
                         120, "exim retry timeout")
            save("exim-expired-unreachable", m, {
                "source": ex, "format": "exim", "kind": "bounce", "message_id": mid,
                "results": [rcpt("someone@unreach.test", "5.0.0", "expired", False)]})
    except Exception:
        print("--- relay log ---\n" + a.log()[-4000:], file=sys.stderr)
        print("--- dest log ---\n" + b.log()[-4000:], file=sys.stderr)
        if exim is not None:
            for p in (exim.spool / "log").glob("*"):
                print(f"--- {p} ---\n" + p.read_text(errors="replace")[-3000:],
                      file=sys.stderr)
        raise
    finally:
        if exim is not None:
            exim.stop()
        a.stop()
        b.stop()
        controller.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}")
    print(f"{len(made)} bounces written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
