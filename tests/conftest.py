"""Fixtures shared by several test directories."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.imap.dovecot import Dovecot, dovecot_binary

IMAP_USERS = {"gateway": "s3cret-imap", "other": "other-pass"}


@pytest.fixture(scope="session")
def imap_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object, object]:
    """(CA, cert file, key file) for the Dovecot instance's IMAPS listener."""
    import trustme  # a test dependency: missing is an error, not a skip

    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    d = tmp_path_factory.mktemp("imapcert")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    import os

    os.chmod(d, 0o755)
    os.chmod(cert_path, 0o644)
    os.chmod(key_path, 0o644)
    return ca, cert_path, key_path


@pytest.fixture(scope="session")
def dovecot(imap_cert: tuple[object, object, object]) -> Iterator[Dovecot]:
    """One private Dovecot for the session (plain IMAP and IMAPS on loopback);
    tests use their own folders or users' mailboxes."""
    if dovecot_binary() is None:
        pytest.fail("dovecot is not installed: run scripts/system-deps (scripts/test does)")
    _, cert, key = imap_cert
    server = Dovecot(IMAP_USERS, cert=(cert, key)).start()  # type: ignore[arg-type]
    yield server
    server.stop()
