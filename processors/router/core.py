"""Server selection, From rewriting and the bounce address: pure functions.

``decide`` follows Odoo's order among the eligible active servers (lowest
priority number first, then name): the From address in a ``from_filter``,
then its domain, then the notifications address (``default_from``) the same
two ways with the From rewritten to it, then the first server without a
``from_filter``, then the first server at all. As in Odoo, that last resort
also rewrites the From to the notifications address when there is one: the
server was set up for other senders, so the author's address would be
refused or look spoofed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from processors.blacklist.core import applies, describe
from processors.config.view import ConfigView
from processors.limiter.core import Limits, limited, recipient_domains
from schemas import (
    OutgoingServerConfigured,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
    compact,
)
from schemas.addresses import AddressError, check_address, idna_domain, normalize, split_address

Server = OutgoingServerConfigured
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")
_ANGLE = re.compile(r"<([^<>]*)>")


def _canon_domain(domain: str) -> str:
    try:
        return idna_domain(domain)
    except AddressError:
        return domain.strip().lower()


def _canon_address(addr: str) -> str:
    try:
        return normalize(addr)
    except AddressError:
        return addr.strip().lower()


def filter_parts(from_filter: str) -> tuple[set[str], set[str]]:
    """``"Example.com, Boss@Other.com"`` -> ({"boss@other.com"}, {"example.com"})."""
    addresses: set[str] = set()
    domains: set[str] = set()
    for part in (p.strip() for p in from_filter.split(",")):
        if "@" in part:
            addresses.add(_canon_address(part))
        elif part:
            domains.add(_canon_domain(part))
    return addresses, domains


def _first(servers: list[Server], value: str, *, as_domain: bool) -> Server | None:
    for server in servers:
        addresses, domains = filter_parts(server.from_filter)
        if value in (domains if as_domain else addresses):
            return server
    return None


def notifications_address(settings: SettingsChanged) -> str | None:
    """``default_from``, completed with ``@catchall_domain`` when it is only a
    local part; None when it cannot be made into a valid address."""
    value = settings.default_from.strip()
    if value and "@" not in value:
        value = f"{value}@{settings.catchall_domain.strip()}" if settings.catchall_domain else ""
    try:
        check_address(value)
    except AddressError:
        return None
    return value


def _quoted(name: str, addr: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + f'" <{addr}>'


def encapsulate(author: str, new_addr: str) -> str:
    """``'"Admin" <admin@example.com>'`` -> ``'"Admin" <new_addr>'``; an author
    without a display name gives its local part as the name."""
    name, addr = split_address(author)
    return _quoted(name or addr.rpartition("@")[0], new_addr)


def bounce_address(settings: SettingsChanged, message_id: str) -> str:
    """``bounce+<message id>@<catchall domain>``; characters outside
    ``[A-Za-z0-9._=-]`` in the id become ``=``."""
    alias = settings.bounce_alias.strip() or "bounce"
    safe = _UNSAFE.sub("=", message_id)
    return f"{alias}+{safe}@{_canon_domain(settings.catchall_domain)}"


def message_id_from_bounce(addr: str, settings: SettingsChanged) -> str | None:
    """The (local-part safe) message id carried by a bounce address, or None
    when ``addr`` is not one of ours. Accepts ``Name <addr>`` forms."""
    if not settings.catchall_domain:
        return None
    m = _ANGLE.search(addr)
    bare = (m.group(1) if m else addr).strip()
    local, at, domain = bare.rpartition("@")
    if not at or _canon_domain(domain) != _canon_domain(settings.catchall_domain):
        return None
    prefix = (settings.bounce_alias.strip() or "bounce").lower() + "+"
    if not local.lower().startswith(prefix):
        return None
    return local[len(prefix) :] or None


def envelope_sender(
    settings: SettingsChanged, server: Server, header_addr: str, message_id: str
) -> str:
    """Return-Path: the bounce address when a catchall domain is set, else the
    server's separate sender, else the bare header From address."""
    if settings.catchall_domain:
        return bounce_address(settings, message_id)
    return server.sender or header_addr


def eligible(view: ConfigView, request: SendRequested) -> tuple[list[Server], list[str]]:
    """Active servers that may carry this request (priority order), and why
    each other active server may not."""
    out: list[Server] = []
    skipped: list[str] = []
    for server in view.active_servers():
        if server.tenant and server.tenant != request.tenant:
            skipped.append(f"{server.name!r} only serves tenant {server.tenant!r}")
        elif server.kind != "any" and server.kind != request.kind:
            skipped.append(f"{server.name!r} only sends {server.kind} mail")
        else:
            out.append(server)
    return out, skipped


def _no_server_reason(view: ConfigView, request: SendRequested, skipped: list[str]) -> str:
    if not view.servers:
        return "no outgoing server is configured: add one ([[servers]] in the config file)"
    if not skipped:
        names = ", ".join(sorted(view.servers))
        return f"no outgoing server is active (inactive: {names}): activate one"
    tenant = f"tenant {request.tenant!r}" if request.tenant else "no tenant"
    return (
        f"no active server serves {request.kind} mail for {tenant}: "
        + "; ".join(skipped)
        + ". Add a server for it, or widen a server's tenant or kind"
    )


def _cascade(servers: list[Server], addr: str, notif: str | None) -> tuple[Server, str, bool, str]:
    """(server, rule, rewrite From to notifications?, reason); servers non-empty."""
    norm, domain = normalize(addr), _canon_domain(addr.rpartition("@")[2])
    if s := _first(servers, norm, as_domain=False):
        return s, "from_filter_address", False, f"{s.name!r} has {norm} in its from_filter"
    if s := _first(servers, domain, as_domain=True):
        return s, "from_filter_domain", False, f"{s.name!r} has {domain} in its from_filter"
    miss = f"no from_filter has {norm} or {domain}"
    if notif:
        n_norm, n_domain = normalize(notif), _canon_domain(notif.rpartition("@")[2])
        rewrite = f"From rewritten to the notifications address {notif}"
        if s := _first(servers, n_norm, as_domain=False):
            return s, "default_from_address", True, f"{miss}; {s.name!r} has {n_norm}: {rewrite}"
        if s := _first(servers, n_domain, as_domain=True):
            return s, "default_from_domain", True, f"{miss}; {s.name!r} has {n_domain}: {rewrite}"
        miss += f" nor the notifications address {notif}"
    for s in servers:
        if filter_parts(s.from_filter) == (set(), set()):
            return s, "unfiltered_server", False, f"{miss}; {s.name!r} has no from_filter"
    s = servers[0]
    reason = (
        f"{miss}, and every server has one; falling back to {s.name!r} (first by priority): "
        f"add {domain} to a from_filter"
        + ("" if notif else ", or set default_from and catchall_domain")
    )
    if notif:
        reason += f"; From rewritten to the notifications address {notif}"
    return s, "first_server", notif is not None, reason


Suppressions = Mapping[str, "str | Sequence[Mapping[str, Any]]"]


def _why(value: str | Sequence[Mapping[str, Any]], request: SendRequested) -> str | None:
    """Why this recipient is not mailed, naming the suppression's type, or
    None. A plain string (a bare blacklist) is its own reason."""
    if isinstance(value, str):
        return value
    for entry in value:
        if applies(dict(entry), request.tenant, request.kind, request.list_id):
            return describe(dict(entry))
    return None


def suppress(
    request: SendRequested, blacklist: Suppressions
) -> tuple[SendRequested, dict[str, str]]:
    """The request without its suppressed recipients (To, Cc and Bcc), and
    those recipients (lower-cased bare address -> why, the type first:
    ``hard_bounce (every tenant): 5 counted bounces ...``). ``blacklist`` is
    keyed by the lower-cased address; its values are the address's
    suppressions (``processors.blacklist.core.applies`` scopes them by
    tenant, kind and list: an unsubscribe never stops transactional mail)
    or a plain reason. The suppressed addresses leave the headers too: a
    To naming someone who never gets the mail invites replies to a dead
    address."""
    suppressed: dict[str, str] = {}
    kept: dict[str, list[str]] = {}
    for fname in ("to", "cc", "bcc"):
        kept[fname] = []
        for value in getattr(request, fname):
            try:
                bare = split_address(value)[1]
            except AddressError:
                kept[fname].append(value)
                continue
            found = blacklist.get(bare.strip().lower())
            why = None if found is None else _why(found, request)
            if why is None:
                kept[fname].append(value)
            else:
                suppressed.setdefault(bare.lower(), why)
    if not suppressed:
        return request, {}
    if not any(kept.values()):
        return request, suppressed
    data = dict(request.to_representation())
    data.update(kept)
    return SendRequested.from_data(data), suppressed


def mass_recipients_problem(request: SendRequested) -> str:
    """Why a mass mail cannot go as it is ("" when it can): its one-click
    List-Unsubscribe link (RFC 8058) names one recipient, as listmonk's and
    the sending APIs' campaigns do, so a mass mail has exactly one."""
    count = len(request.recipients())
    if request.kind != "mass" or count <= 1:
        return ""
    return (f"a mass mail goes to one recipient (it has {count}): its one-click "
            "List-Unsubscribe link names that recipient; publish one mail per recipient, "
            "or send it as transactional")


def decide(
    view: ConfigView, request: SendRequested, blacklist: Suppressions | None = None,
    limits: Limits | None = None, now: float = 0.0,
) -> RoutingDecided:
    """The routing decision for one request; never raises on bad addresses.
    Recipients in ``blacklist`` are suppressed (see ``suppress``). With
    ``limits``, a routed mail none of them applies to at ``now`` is
    ``direct`` (see ``direct``)."""
    suppressed: dict[str, str] = {}
    if blacklist:
        request, suppressed = suppress(request, blacklist)
        if suppressed and set(suppressed) >= {a.lower() for a in request.recipients()}:
            who = "; ".join(f"{a}: {why}" for a, why in suppressed.items())
            return RoutingDecided(
                message_id=request.message_id, outcome="suppressed",
                reason=f"every recipient is blacklisted or suppressed, nothing is sent ({who})",
                request=carried_request(request), suppressed=suppressed,
            )
    base: dict[str, Any] = {
        "message_id": request.message_id,
        "request": carried_request(request),
        "suppressed": suppressed,
    }
    refused = mass_recipients_problem(request)
    if refused:
        return RoutingDecided(outcome="rejected", reason=refused, **base)
    servers, skipped = eligible(view, request)
    if not servers:
        reason = _no_server_reason(view, request, skipped)
        return RoutingDecided(outcome="no_server", reason=reason, **base)
    settings = view.settings
    try:
        _, addr = split_address(request.from_)
        notif = notifications_address(settings)
        server, rule, rewrite, reason = _cascade(servers, addr, notif)
        header_from = request.from_
        if rewrite and notif and normalize(notif) != normalize(addr):
            header_from, addr = encapsulate(request.from_, notif), notif
    except AddressError as exc:
        reason = f"From {request.from_!r} is not usable: {exc}"
        return RoutingDecided(outcome="rejected", reason=reason, **base)
    return RoutingDecided(
        outcome="routed",
        server=server.name,
        header_from=header_from,
        envelope_from=envelope_sender(settings, server, addr, request.message_id),
        rule=rule,
        reason=reason,
        direct=limits is not None and direct(request, server.name, limits, now),
        **base,
    )



def carried_request(request: SendRequested) -> dict[str, Any]:
    """The request as the decision carries it: without the fields that hold
    their default (``schemas.compact``; empty cc, bcc, html, headers, ...,
    about 150 bytes of every decision, release and ledger row of a mail).
    Delivery, the limiter and the status fold read it with its defaults."""
    return compact(SendRequested, request.to_representation())


def direct(request: SendRequested, server: str, limits: Limits, now: float) -> bool:
    """May the router release this routed mail itself (``RoutingDecided.direct``)?
    Yes when the limiter has nothing to do with it: a transactional mail
    that no daily limit or rate (of ``server``, its tenant, its recipients'
    domains or ``*``) and no future ``send_at`` applies to. Delivery then
    takes it from ``routing-decided`` (one hop, one record and one table row
    less per mail); anything limited, scheduled or of the mass lane goes
    through the limiter. A limit configured after the decision applies from
    the next decision on."""
    if request.kind == "mass" or (request.send_at or 0.0) > now:
        return False
    data = {"to": request.to, "cc": request.cc, "bcc": request.bcc}
    return not limited(server, request.tenant, recipient_domains(data), limits)
