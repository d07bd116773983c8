"""The IMAP edge and ``postlane incoming test`` against a real Dovecot:
each failure kind gives its sentence; fetching, flags and moves work."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from processors.fetcher.imap import ImapError, ImapSession
from processors.fetcher.probe import test_incoming as probe
from schemas import IncomingServerConfigured
from tests.conftest import IMAP_USERS

from .dovecot import Dovecot, free_port

ENV = {"PL_IMAP_PW": IMAP_USERS["gateway"], "PL_OTHER_PW": IMAP_USERS["other"]}


def server(dovecot: Dovecot, **changes: object) -> IncomingServerConfigured:
    fields: dict[str, object] = {
        "name": "box", "host": "127.0.0.1", "port": dovecot.port, "security": "none",
        "username": "gateway", "password_env": "PL_IMAP_PW", "poll_interval": 60.0,
    }
    fields.update(changes)
    return IncomingServerConfigured(**fields)  # type: ignore[arg-type]


async def run_probe(srv: IncomingServerConfigured) -> tuple[bool, str, str]:
    report = await probe(srv, timeout=3.0, environ=ENV)
    return report.ok, report.kind, report.sentence


async def test_probe_works_and_says_idle(dovecot: Dovecot) -> None:
    ok, kind, sentence = await run_probe(server(dovecot))
    assert ok, sentence
    assert "works" in sentence and "IDLE" in sentence and "'INBOX'" in sentence


@pytest.mark.parametrize(
    ("changes", "kind", "fragment"),
    [
        ({"password_env": "PL_OTHER_PW"}, "auth_failed", "app password"),
        ({"password_env": "PL_UNSET_PW"}, "secret", "PL_UNSET_PW"),
        ({"password_env": ""}, "no_password", "password_env"),
        ({"folder": "Nope"}, "no_folder", "INBOX"),
        ({"security": "ssl"}, "tls_failed", 'security = "starttls"'),
    ],
)
async def test_probe_failures_in_words(dovecot: Dovecot, changes: dict[str, object], kind: str,
                                       fragment: str) -> None:
    ok, got_kind, sentence = await run_probe(server(dovecot, **changes))
    assert not ok
    assert got_kind == kind, sentence
    assert fragment in sentence
    assert IMAP_USERS["gateway"] not in sentence and IMAP_USERS["other"] not in sentence


async def test_probe_refused_port(dovecot: Dovecot) -> None:
    ok, kind, sentence = await run_probe(server(dovecot, port=free_port()))
    assert (ok, kind) == (False, "refused")
    assert "connection refused" in sentence


async def test_probe_self_signed_certificate(dovecot: Dovecot) -> None:
    srv = server(dovecot, port=dovecot.ssl_port, security="ssl")
    ok, kind, sentence = await run_probe(srv)
    assert (ok, kind) == (False, "certificate")
    assert "allow_self_signed" in sentence
    ok, kind, sentence = await run_probe(server(dovecot, port=dovecot.ssl_port, security="ssl",
                                                allow_self_signed=True))
    assert ok, sentence
    ok, kind, sentence = await run_probe(server(dovecot, security="starttls",
                                                allow_self_signed=True))
    assert ok, sentence
    assert "STARTTLS" in sentence


async def test_session_fetch_flag_and_move(dovecot: Dovecot) -> None:
    folder = f"T{uuid.uuid4().hex[:8]}"
    c = dovecot.client("gateway")
    c.create(folder)
    c.create(folder + "-done")
    c.logout()
    raws = [f"From: a@b.org\r\nTo: x@y.org\r\nMessage-ID: <{i}.{folder}@b.org>\r\n\r\n"
            f"{'body ' * (i + 1)}\r\n".encode() for i in range(3)]
    uids = [await asyncio.to_thread(dovecot.append, "gateway", r, folder) for r in raws]
    session = ImapSession(server(dovecot, folder=folder), environ=ENV)
    await session.connect()
    try:
        sel = await session.select()
        assert sel.exists == 3 and sel.uidnext == uids[-1] + 1 and sel.uidvalidity > 0
        assert await session.search("UNSEEN") == uids
        assert await session.search("UID", f"{uids[0] + 1}:*") == uids[1:]
        sizes = await session.sizes(uids)
        assert sizes == {u: len(r) for u, r in zip(uids, raws, strict=True)}
        assert await session.fetch(uids[1]) == raws[1]
        head = await session.fetch(uids[1], header_only=True)
        assert head is not None and head.startswith(b"From: a@b.org") and b"body" not in head
        await session.mark_seen(uids[:1])
        await session.move(uids[1:2], folder + "-done")
        assert await session.search("UNSEEN") == [uids[2]]
    finally:
        await session.logout()
    flags = dovecot.flags("gateway", folder)
    assert "\\Seen" in flags[uids[0]] and uids[1] not in flags
    assert len(dovecot.flags("gateway", folder + "-done")) == 1


async def test_lost_connection_is_an_imap_error(dovecot: Dovecot) -> None:
    session = ImapSession(server(dovecot), environ=ENV)
    await session.connect()
    await session.select()
    assert session.client is not None
    session.client.protocol.transport.close()
    await asyncio.sleep(0.2)
    with pytest.raises(ImapError) as info:
        await session.search("ALL")
    assert info.value.kind == "lost"
    await session.logout()
