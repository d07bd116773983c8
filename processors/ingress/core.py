"""The SMTP ingress's decisions. Pure.

It takes mail only for recipients in our alias domains (the catchall
domain, ``allowed_domains`` and the domains of full-address aliases), so it
is never an open relay; the router decides the rest (an unknown local part
in our domain is accepted here and rejected there, with the reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from processors.config.view import ConfigView
from processors.inbound.core import accepted_domains
from schemas.addresses import AddressError, check_address, idna_domain


def refuse_recipient(address: str, view: ConfigView) -> str | None:
    """None when the ingress takes mail for ``address``, else the SMTP
    reply (code, enhanced status, text) refusing it."""
    try:
        check_address(address)
        domain = idna_domain(address.rpartition("@")[2])
    except AddressError as exc:
        return f"553 5.1.3 {exc}"
    ours = accepted_domains(view)
    if not ours:
        return ("550 5.7.1 this gateway has no alias domain yet (set catchall_domain or "
                "allowed_domains): relaying denied")
    if domain not in ours:
        return f"550 5.7.1 {domain} is not a domain of this gateway: relaying denied"
    return None


def received_header(peer: str, helo: str, hostname: str, inbound_id: str, rcpt: str,
                    now: float) -> bytes:
    """The trace field an SMTP server adds (RFC 5321 4.4)."""
    when = format_datetime(datetime.fromtimestamp(now, tz=UTC))
    helo = helo.replace("\r", "").replace("\n", "")[:200] or "unknown"
    return (f"Received: from {helo} ({peer})\r\n\tby {hostname} (Postlane ingress) with ESMTP "
            f"id {inbound_id}\r\n\tfor <{rcpt}>; {when}\r\n").encode()
