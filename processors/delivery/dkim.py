"""DKIM signing of outgoing mail, with dkimpy (canonicalisation, body hash,
header selection and folding are dkimpy's; nothing here rewrites them).

- ``choose``: the ``[[dkim]]`` entry for a header From domain (the domain
  itself, else its nearest parent: ``news.shop.example`` is signed with
  ``shop.example``'s key, which relaxed DMARC alignment accepts). Pure.
- ``load_key``: check a private key read by the secrets edge and turn it
  into what dkimpy takes; ``DkimError`` says what is wrong in words.
- ``sign``: prepend a DKIM-Signature to the wire bytes of a built mail
  (called after every header change: From rewrite, List-Unsubscribe,
  Feedback-ID; the archive BCC is envelope-only).
- ``Signer``: the delivery worker's keys, read once per config entry
  through ``streams.secrets`` (the only place a key is read; it is never
  on a topic or in a log).

Speed: dkimpy does the RSA operation in pure Python (~7 ms per mail with a
2048-bit key). ``_OpenSSLRsa`` hands that one operation to OpenSSL (the
``cryptography`` package) for the keys loaded here, so a mail costs ~0.5 ms
(``bench/dkim_sign.py``). It replaces two names in the ``dkim`` module
(``parse_pem_private_key``, ``RSASSA_PKCS1_v1_5_sign``) with wrappers that
fall back to dkimpy's own functions for any key not loaded here.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from schemas import DkimKeyConfigured
from schemas.addresses import AddressError, idna_domain
from schemas.errors import PostlaneError

# Signed when present: the identity and content headers, MIME headers, the
# one-click unsubscribe pair and the feedback loop id (RFC 6376 5.4.1 and
# RFC 8058 section 4: List-Unsubscribe and List-Unsubscribe-Post MUST be signed).
SIGNED_HEADERS = (
    "from", "to", "cc", "reply-to", "subject", "date", "message-id", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "list-unsubscribe", "list-unsubscribe-post", "list-id", "feedback-id",
)
MIN_RSA_BITS = 1024


class DkimError(PostlaneError):
    """A DKIM key cannot be used. ``domain`` is the ``[[dkim]]`` entry; the
    message says what the operator should do (never the key)."""

    def __init__(self, domain: str, message: str) -> None:
        self.domain = domain
        super().__init__(message, processor="delivery")


@dataclass(frozen=True)
class LoadedKey:
    domain: str  # d= (ASCII)
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    private: bytes  # as dkimpy takes it: PEM (rsa) or the base64 seed (ed25519)
    public_txt: str  # the DNS TXT record value to publish


# --- OpenSSL for the RSA operation ---------------------------------------------------------------


class _OpenSSLRsa:
    """dkimpy's RSA private-key operation done by OpenSSL, for keys loaded
    with ``load_key``. Registered PEMs parse to dkimpy's own key dict (so
    its fallback still works); a signature over a SHA-256 digest with a
    registered modulus is made by OpenSSL."""

    def __init__(self) -> None:
        self.by_pem: dict[bytes, dict[str, int]] = {}
        self.by_modulus: dict[int, rsa.RSAPrivateKey] = {}
        self.lock = threading.Lock()
        self.parse: Callable[[bytes], Any] = dkim.parse_pem_private_key
        self.rsa_sign: Callable[[Any, Any], bytes] = dkim.RSASSA_PKCS1_v1_5_sign
        dkim.parse_pem_private_key = self._parse  # type: ignore[attr-defined]
        dkim.RSASSA_PKCS1_v1_5_sign = self._sign  # type: ignore[attr-defined]

    def register(self, pem: bytes, key: rsa.RSAPrivateKey) -> None:
        n = key.private_numbers()
        pub = n.public_numbers
        with self.lock:
            self.by_pem[pem] = {
                "version": 0, "modulus": pub.n, "publicExponent": pub.e,
                "privateExponent": n.d, "prime1": n.p, "prime2": n.q, "exponent1": n.dmp1,
                "exponent2": n.dmq1, "coefficient": n.iqmp,
            }
            self.by_modulus[pub.n] = key

    def _parse(self, data: bytes) -> Any:
        found = self.by_pem.get(data)
        return found if found is not None else self.parse(data)

    def _sign(self, hasher: Any, pk: Any) -> bytes:
        key = self.by_modulus.get(pk.get("modulus", 0)) if isinstance(pk, dict) else None
        if key is not None:
            digest = hasher.digest()
            if len(digest) == 32:
                return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return self.rsa_sign(hasher, pk)


_OPENSSL = _OpenSSLRsa()


# --- keys ---------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def rsa_txt(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={_b64(der)}"


def ed25519_txt(key: ed25519.Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return f"v=DKIM1; k=ed25519; p={_b64(raw)}"


def ed25519_seed(key: ed25519.Ed25519PrivateKey) -> bytes:
    """The base64 seed dkimpy (and ``dknewkey``) use as an ed25519 key file."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    return base64.b64encode(raw)


def load_key(entry: DkimKeyConfigured, raw: bytes) -> LoadedKey:
    """Check ``raw`` (as the secrets edge read it) is a private key of the
    entry's algorithm; raise DkimError saying what to fix."""
    raw = raw.strip()
    where = f"the DKIM key of {entry.domain} (selector {entry.selector}, " + (
        f"file {entry.key_file})" if entry.key_file else f"variable {entry.key_env})")
    try:
        domain = idna_domain(entry.domain)
    except AddressError as exc:
        raise DkimError(entry.domain, f"[[dkim]] domain {entry.domain!r}: {exc}") from None
    if entry.algorithm == "rsa-sha256":
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimError(entry.domain, (
                f"{where} is not a PEM private key without a passphrase ({exc}): write the "
                "key `postlane dkim keygen` makes (or `openssl genrsa 2048`)")) from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimError(entry.domain, (
                f"{where} is a {type(key).__name__.lstrip('_')} key, but algorithm is "
                "rsa-sha256: give an RSA key or set algorithm to match the key"))
        if key.key_size < MIN_RSA_BITS:
            raise DkimError(entry.domain, (
                f"{where} has {key.key_size} bits: receivers ignore RSA keys under "
                f"{MIN_RSA_BITS} bits; make a 2048-bit key"))
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        _OPENSSL.register(pem, key)
        return LoadedKey(domain, entry.selector, entry.algorithm, pem, rsa_txt(key))
    # ed25519-sha256: the base64 seed, or a PEM (openssl genpkey -algorithm ed25519)
    ed: ed25519.Ed25519PrivateKey | None = None
    if raw.startswith(b"-----BEGIN"):
        try:
            loaded = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimError(entry.domain, f"{where} is not a readable PEM key ({exc})") from None
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            ed = loaded
    else:
        try:
            seed = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) == 32:
            ed = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if ed is None:
        raise DkimError(entry.domain, (
            f"{where} is not an ed25519 private key (the base64 seed `postlane dkim keygen "
            "--algorithm ed25519-sha256` writes, or a PEM): give one or set algorithm to "
            "match the key"))
    return LoadedKey(domain, entry.selector, entry.algorithm, ed25519_seed(ed), ed25519_txt(ed))


# --- choosing and signing ----------------------------------------------------------------------


def choose(entries: dict[str, DkimKeyConfigured], from_domain: str) -> DkimKeyConfigured | None:
    """The entry for ``from_domain`` (ASCII or not, any case): its own, else
    the nearest parent domain's; None when no entry covers it."""
    if not entries:
        return None
    try:
        labels = idna_domain(from_domain).split(".")
    except AddressError:
        labels = from_domain.strip().lower().split(".")
    by_ascii: dict[str, DkimKeyConfigured] = {}
    for entry in entries.values():
        try:
            by_ascii[idna_domain(entry.domain)] = entry
        except AddressError:
            continue
    for i in range(len(labels) - 1):
        found = by_ascii.get(".".join(labels[i:]))
        if found is not None:
            return found
    return None


def signed_headers(present: Iterable[str]) -> list[bytes]:
    """The SIGNED_HEADERS a mail has, in that order (From always)."""
    have = {h.lower() for h in present} | {"from"}
    return [h.encode() for h in SIGNED_HEADERS if h in have]


def sign(data: bytes, key: LoadedKey, present: Iterable[str]) -> bytes:
    """``data`` (the mail as handed to DATA, CRLF) with a DKIM-Signature
    header first: relaxed/simple canonicalisation (dkimpy's default)."""
    try:
        header = dkim.sign(
            data, key.selector.encode(), key.domain.encode(), key.private,
            signature_algorithm=key.algorithm.encode(), include_headers=signed_headers(present),
            linesep=b"\r\n",
        )
    except dkim.DKIMException as exc:
        raise DkimError(key.domain, f"DKIM signing for {key.domain} failed: {exc}") from None
    return header + data


class Signer:
    """The delivery worker's DKIM keys: read through ``read`` (the secrets
    edge) when an entry is first used, kept per entry (a changed entry, e.g.
    a new selector, is read again). A key that cannot be read is not kept:
    the next attempt reads it again, so fixing the file is enough."""

    def __init__(self, read: Callable[[DkimKeyConfigured], bytes]) -> None:
        self.read = read
        self.keys: dict[tuple[str, ...], LoadedKey] = {}

    def key_for(self, entries: dict[str, DkimKeyConfigured], from_domain: str
                ) -> LoadedKey | None:
        """The key to sign mail from ``from_domain`` with; None when no entry
        covers it. Raises DkimError (or the secrets edge's
        SecretUnavailable) when the entry's key cannot be used."""
        entry = choose(entries, from_domain)
        if entry is None:
            return None
        ident = (entry.domain.lower(), entry.selector, entry.key_file, entry.key_env,
                 entry.algorithm)
        key = self.keys.get(ident)
        if key is None:
            key = self.keys[ident] = load_key(entry, self.read(entry))
        return key
