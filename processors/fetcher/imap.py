"""The IMAP edge: the ONLY module that imports aioimaplib.

``ImapSession`` connects (plain, STARTTLS or SSL/TLS), logs in, selects a
folder and offers what the fetcher needs: UID search, sizes, whole mails
or header blocks (with BODY.PEEK, so nothing is marked seen by reading),
\\Seen flags, moves and IDLE. Every failure is an ``ImapError`` with a
kind and the facts; ``diagnose.explain`` turns it into a sentence.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aioimaplib
from aioimaplib import Command

from schemas import IncomingServerConfigured
from schemas.errors import PostlaneError
from streams.secrets import SecretUnavailable, resolve_password

from .diagnose import Facts, explain

_FETCH_SIZE = re.compile(rb"UID (\d+).*RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+).*UID (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}$")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_EXISTS = re.compile(rb"^(\d+) EXISTS")


class ImapError(PostlaneError, RuntimeError):
    """An IMAP step failed. ``kind`` (see diagnose.py), ``step`` (connect,
    tls, login, select, fetch, store, idle) and ``sentence``: what is wrong
    and what to change."""

    def __init__(self, kind: str, facts: Facts) -> None:
        self.kind = kind
        self.facts = facts
        self.step = facts.step
        self.sentence = explain(kind, facts)
        super().__init__(self.sentence, processor="fetcher", server=facts.server)


@dataclass(frozen=True)
class Selected:
    uidvalidity: int
    uidnext: int
    exists: int


def _ssl_context(server: IncomingServerConfigured, ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if server.allow_self_signed:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _text(lines: list[bytes | bytearray]) -> str:
    return " ".join(bytes(x).decode("utf-8", "replace") for x in lines if x)[:300]


class ImapSession:
    def __init__(
        self,
        server: IncomingServerConfigured,
        *,
        timeout: float = 30.0,
        ca_file: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.server = server
        self.timeout = server.timeout or timeout
        self.ca_file = ca_file
        self.environ = environ
        self.client: aioimaplib.IMAP4 | None = None
        self.progress: list[tuple[str, str]] = []  # (step, what worked)
        self.lost = asyncio.Event()
        self.selected: Selected | None = None

    def _facts(self, step: str, **more: object) -> Facts:
        s = self.server
        return Facts(server=s.name, host=s.host, port=s.port, security=s.security,
                     username=s.username, folder=s.folder, timeout=self.timeout,
                     step=step).with_(**more)

    def _fail(self, kind: str, step: str, **more: object) -> ImapError:
        return ImapError(kind, self._facts(step, **more))

    @property
    def has_idle(self) -> bool:
        return self.client is not None and self.client.has_capability("IDLE")

    # --- session ----------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, TLS, greeting and login."""
        s = self.server
        ssl_ctx = _ssl_context(s, self.ca_file) if s.security != "none" else None
        try:
            if s.security == "ssl":
                self.client = aioimaplib.IMAP4_SSL(host=s.host, port=s.port,
                                                   timeout=self.timeout, ssl_context=ssl_ctx)
            else:
                self.client = aioimaplib.IMAP4(host=s.host, port=s.port, timeout=self.timeout)
            self.client.protocol.conn_lost_cb = lambda exc: self.lost.set()
            await self.client.wait_hello_from_server()
        except TimeoutError:
            raise self._fail("timeout", "connect") from None
        except ssl.SSLCertVerificationError as exc:
            raise self._fail("certificate", "tls", detail=exc.verify_message or str(exc)) from None
        except ssl.SSLError as exc:
            raise self._fail("tls_failed", "tls", detail=exc.reason or str(exc)) from None
        except socket.gaierror as exc:
            raise self._fail("dns", "connect", detail=exc.strerror or str(exc)) from None
        except ConnectionRefusedError:
            raise self._fail("refused", "connect") from None
        except OSError as exc:
            raise self._fail("unreachable", "connect", detail=exc.strerror or str(exc)) from None
        except aioimaplib.AioImapException as exc:
            raise self._fail("no_greeting", "connect", detail=str(exc)) from None
        where = f"{s.host} port {s.port}"
        self.progress.append(("connect", f"{where} answered as an IMAP server"))
        if s.security == "ssl":
            self.progress.append(("tls", "SSL/TLS from the first byte"))
        elif s.security == "starttls":
            await self._starttls(ssl_ctx)
        await self._login()

    async def _starttls(self, ctx: ssl.SSLContext | None) -> None:
        assert self.client is not None and ctx is not None
        if not self.client.has_capability("STARTTLS"):
            raise self._fail("no_starttls", "tls")
        protocol = self.client.protocol
        try:
            response = await asyncio.wait_for(
                protocol.execute(Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)),
                self.timeout)
            if response.result != "OK":
                raise self._fail("no_starttls", "tls", detail=_text(response.lines))
            loop = asyncio.get_running_loop()
            transport = await asyncio.wait_for(loop.start_tls(
                protocol.transport, protocol, ctx, server_hostname=self.server.host),
                self.timeout)
            protocol.transport = transport
            await asyncio.wait_for(protocol.capability(), self.timeout)
        except ImapError:
            raise
        except TimeoutError:
            raise self._fail("tls_failed", "tls", detail="the handshake timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise self._fail("certificate", "tls", detail=exc.verify_message or str(exc)) from None
        except (ssl.SSLError, OSError, aioimaplib.AioImapException) as exc:
            raise self._fail("tls_failed", "tls", detail=str(exc)) from None
        self.progress.append(("tls", "STARTTLS negotiated"))

    async def _login(self) -> None:
        assert self.client is not None
        s = self.server
        if not s.username:
            raise self._fail("no_username", "login")
        try:
            password = resolve_password(s, self.environ)
        except SecretUnavailable as exc:
            raise self._fail("secret", "login", detail=str(exc)) from None
        if password is None:
            raise self._fail("no_password", "login")
        if s.security == "none" and "LOGINDISABLED" in self.client.protocol.capabilities:
            raise self._fail("login_disabled", "login")
        try:
            response = await self.client.login(s.username, password)
        except TimeoutError:
            raise self._fail("timeout", "login") from None
        except aioimaplib.AioImapException as exc:
            raise self._fail("auth_failed", "login", detail=str(exc)) from None
        if response.result != "OK":
            raise self._fail("auth_failed", "login", detail=_text(response.lines))
        self.progress.append(("login", f"logged in as {s.username!r}"))

    async def select(self) -> Selected:
        client = self._client("select")
        folder = self.server.folder
        try:
            response = await client.select(_quote(folder))
        except TimeoutError:
            raise self._fail("timeout", "select") from None
        except aioimaplib.AioImapException as exc:
            raise self._fail("lost", "select", detail=str(exc)) from None
        if response.result != "OK":
            folders = await self.folders()
            raise self._fail("no_folder", "select", detail=_text(response.lines),
                             folders=", ".join(folders[:20]) or "none listed")
        uidvalidity = uidnext = exists = 0
        for line in response.lines:
            raw = bytes(line)
            if m := _UIDVALIDITY.search(raw):
                uidvalidity = int(m.group(1))
            if m := _UIDNEXT.search(raw):
                uidnext = int(m.group(1))
            if m := _EXISTS.match(raw):
                exists = int(m.group(1))
        if not uidnext:  # some servers omit UIDNEXT when the folder is empty
            uids = await self.search("ALL")
            uidnext = max(uids, default=0) + 1
        self.selected = Selected(uidvalidity, uidnext, exists)
        self.progress.append(("select", f"folder {folder!r}: {exists} mails, "
                                        f"UIDVALIDITY {uidvalidity}"))
        return self.selected

    async def folders(self) -> list[str]:
        client = self._client("select")
        try:
            response = await client.list('""', "*")
        except (aioimaplib.AioImapException, TimeoutError):
            return []
        out = []
        for line in response.lines:
            text = bytes(line).decode("utf-8", "replace")
            if text.startswith("(") and '"' in text:
                out.append(text.rsplit(" ", 1)[-1].strip('"'))
        return out

    async def logout(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if not self.lost.is_set():
                await asyncio.wait_for(client.logout(), 5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        transport = client.protocol.transport if client.protocol else None
        if transport is not None:
            transport.close()

    # --- mailbox -----------------------------------------------------------------------

    def _client(self, step: str) -> aioimaplib.IMAP4:
        if self.client is None or self.lost.is_set():
            raise self._fail("lost", step)
        return self.client

    async def _uid(self, step: str, command: str, *args: str) -> list[bytes | bytearray]:
        client = self._client(step)
        try:
            response = await asyncio.wait_for(client.uid(command, *args), self.timeout)
        except TimeoutError:
            raise self._fail("timeout", step) from None
        except aioimaplib.AioImapException as exc:
            raise self._fail("lost", step, detail=str(exc)) from None
        if response.result != "OK":
            raise self._fail("refused", step, detail=_text(response.lines))
        return list(response.lines)

    async def search(self, *criteria: str) -> list[int]:
        client = self._client("fetch")
        try:
            response = await client.uid_search(*criteria, charset=None)
        except TimeoutError:
            raise self._fail("timeout", "fetch") from None
        except aioimaplib.AioImapException as exc:
            raise self._fail("lost", "fetch", detail=str(exc)) from None
        if response.result != "OK":
            raise self._fail("command_refused", "fetch",
                             detail=f"SEARCH: {_text(response.lines)}")
        uids: list[int] = []
        for line in response.lines[:-1]:
            uids.extend(int(t) for t in bytes(line).split() if t.isdigit())
        return sorted(set(uids))

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for chunk in _chunks(uids, 200):
            lines = await self._uid("fetch", "fetch", _uid_set(chunk), "(UID RFC822.SIZE)")
            for line in lines:
                m = _FETCH_SIZE.search(bytes(line))
                if m:
                    uid = int(m.group(1) or m.group(4))
                    out[uid] = int(m.group(2) or m.group(3))
        return out

    async def fetch(self, uid: int, header_only: bool = False) -> bytes | None:
        """The whole mail (or its header block); None when it is gone."""
        part = "BODY.PEEK[HEADER]" if header_only else "BODY.PEEK[]"
        lines = await self._uid("fetch", "fetch", str(uid), f"(UID {part})")
        for i, line in enumerate(lines):
            raw = bytes(line)
            if _LITERAL.search(raw) and i + 1 < len(lines):
                m = _FETCH_UID.search(raw)
                if m and int(m.group(1)) != uid:
                    continue
                return bytes(lines[i + 1])
        return None

    async def mark_seen(self, uids: list[int]) -> None:
        if uids:
            await self._uid("store", "store", _uid_set(uids), "+FLAGS.SILENT", r"(\Seen)")

    async def move(self, uids: list[int], folder: str) -> None:
        if not uids:
            return
        client = self._client("store")
        if client.has_capability("MOVE"):
            await self._uid("store", "move", _uid_set(uids), _quote(folder))
            return
        await self._uid("store", "copy", _uid_set(uids), _quote(folder))
        await self._uid("store", "store", _uid_set(uids), "+FLAGS.SILENT", r"(\Deleted \Seen)")
        if client.has_capability("UIDPLUS"):
            await self._uid("store", "expunge", _uid_set(uids))
        else:
            try:
                await client.expunge()
            except (aioimaplib.AioImapException, TimeoutError) as exc:
                raise self._fail("lost", "store", detail=str(exc)) from None

    async def idle(self, wait: float) -> bool:
        """Wait up to ``wait`` seconds in IDLE; True when the server
        announced new mail (EXISTS), False when the wait ended."""
        client = self._client("idle")
        try:
            idle_task = await client.idle_start(timeout=wait)
        except (aioimaplib.AioImapException, TimeoutError) as exc:
            raise self._fail("lost", "idle", detail=str(exc)) from None
        new_mail = False
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            while True:
                push = asyncio.ensure_future(client.wait_server_push(timeout=wait + 5))
                done, _ = await asyncio.wait({push, lost}, timeout=wait + 5,
                                             return_when=asyncio.FIRST_COMPLETED)
                if lost in done:
                    push.cancel()
                    raise self._fail("lost", "idle")
                if push not in done:
                    push.cancel()
                    break
                try:
                    lines = push.result()
                except TimeoutError:
                    break
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(b"EXISTS" in bytes(x) or b"RECENT" in bytes(x) for x in lines):
                    new_mail = True
                    break
        finally:
            lost.cancel()
            if not self.lost.is_set():
                try:
                    client.idle_done()
                    await asyncio.wait_for(idle_task, self.timeout)
                except Exception:  # noqa: BLE001 - a broken IDLE ends the session
                    self.lost.set()
        return new_mail


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in uids)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
