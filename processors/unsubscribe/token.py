"""Unsubscribe tokens and the headers that carry them. Pure: the secret and
the clock are arguments (the secret is read by ``streams.secrets``).

A token names a tenant, a list and a recipient address, and when it
expires; an HMAC-SHA256 (truncated to 80 bits) over those with the
operator's secret makes it unforgeable. It is written in lower-case base32
so the same string works in a URL path and in a mail's subject, whatever a
mail system does to its case. (It is ~100 characters: too long for the
local part of an address, 64 at most, so the mailto form is
``mailto:unsubscribe@CATCHALL?subject=unsubscribe%20TOKEN``.)
``token_id`` (the MAC in hex) names one token: the event it becomes
carries it, so a token used twice is one fact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from schemas import SendRequested, UnsubscribeRequested, ids
from schemas.addresses import AddressError, split_address
from schemas.errors import PostlaneError

VERSION = "1"
_SEP = "\x1f"
_MAC_BYTES = 10
_CONTEXT = b"postlane-unsubscribe\x00"
_EVENT_NS = ids.UNSUBSCRIBED
ONE_CLICK = "List-Unsubscribe=One-Click"


class TokenError(PostlaneError, ValueError):
    """A token that is not ours, altered, or expired; ``reason`` is one of
    malformed, forged, expired. The message is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class Claims:
    tenant: str
    list_id: str
    address: str
    expires_at: float
    token_id: str


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _CONTEXT + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(secret: bytes, tenant: str, list_id: str, address: str, expires_at: float) -> str:
    """A token for ``address`` leaving ``list_id`` of ``tenant``."""
    fields = [VERSION, str(int(expires_at)), tenant, list_id, address.strip().lower()]
    if any(_SEP in f for f in fields):
        raise ValueError("tenant, list_id and address must not contain control characters")
    payload = _SEP.join(fields).encode()
    raw = payload + _mac(secret, payload)
    return base64.b32encode(raw).decode().rstrip("=").lower()


def read_token(secret: bytes, token: str, now: float) -> Claims:
    """The claims of a token made with ``secret``; TokenError when it is
    malformed, its MAC does not match (forged or altered) or it expired."""
    text = token.strip().upper()
    if not text or len(text) > 1000:
        raise TokenError("malformed", "this unsubscribe link is not valid")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "this unsubscribe link is not valid") from None
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if len(payload) < 5 or not hmac.compare_digest(mac, _mac(secret, payload)):
        raise TokenError("forged", "this unsubscribe link is not valid (it was not made "
                         "by this sender or it was altered)")
    try:
        version, expires, tenant, list_id, address = payload.decode().split(_SEP)
        expires_at = float(int(expires))
    except (UnicodeDecodeError, ValueError):
        raise TokenError("malformed", "this unsubscribe link is not valid") from None
    if version != VERSION:
        raise TokenError("malformed", "this unsubscribe link is of an unknown version")
    if expires_at < now:
        raise TokenError("expired", "this unsubscribe link has expired: use the link of a "
                         "more recent mail, or reply to ask to be removed")
    return Claims(tenant, list_id, address, expires_at, mac.hex())


def unsubscribe_event(claims: Claims, via: str, now: float, message_id: str = ""
                      ) -> UnsubscribeRequested:
    """The fact a valid token becomes; its event_id is derived from the
    token and ``via``, so the same link used twice is one fact twice
    (readers drop the repeat)."""
    return UnsubscribeRequested(
        event_id=uuid.uuid5(_EVENT_NS, f"{claims.token_id}/{via}").hex,
        address=claims.address, tenant=claims.tenant, list_id=claims.list_id, via=via,
        requested_at=now, token_id=claims.token_id, message_id=message_id,
    )


# --- the headers ---------------------------------------------------------------------------------


def token_recipient(request: SendRequested) -> str:
    """The address a mass mail's token names: its first recipient (To, then
    Cc, then Bcc). Mass mail should have one recipient; with several, only
    the first is unsubscribed by the link."""
    for value in [*request.to, *request.cc, *request.bcc]:
        try:
            return split_address(value)[1].lower()
        except AddressError:
            continue
    return ""


def list_unsubscribe_headers(
    request: SendRequested, secret: bytes, *, base_url: str, mailto_domain: str,
    alias: str, now: float, valid_days: float,
) -> dict[str, str]:
    """List-Unsubscribe (https, and mailto when there is a catchall domain)
    and List-Unsubscribe-Post for a mass mail; nothing for transactional
    mail or a mail without a recipient."""
    address = token_recipient(request)
    if request.kind != "mass" or not address:
        return {}
    token = make_token(secret, request.tenant, request.list_id, address,
                       now + valid_days * 86400.0)
    links = [f"<{base_url.rstrip('/')}/u/{token}>"]
    if mailto_domain and alias:
        # the token goes in the subject: in the local part (alias+TOKEN) it
        # would pass RFC 5321's 64 octets, and mail systems refuse that address
        links.append(f"<mailto:{alias}@{mailto_domain}?subject=unsubscribe%20{token}>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": ONE_CLICK}
