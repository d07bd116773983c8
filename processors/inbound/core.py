"""Inbound routing: one decision per mail, in the contract's order. Pure.

1. duplicate: the Message-ID was already received (as another inbound mail);
2. bounce: a recipient is the bounce address (``bounce`` or ``bounce+<id>``
   in our domains), the sender is MAILER-DAEMON, or the mail is a
   delivery-status report;
2b. unsubscribe: a recipient is ``unsubscribe`` (or ``unsubscribe+TOKEN``)
   in our domains, the token in the subject (the mailto form of a mass
   mail's List-Unsubscribe, ``?subject=unsubscribe%20TOKEN``): a valid token becomes
   UnsubscribeRequested (via mailto, carried on the route for the agent to
   publish on ``bounces``); a forged or expired one is rejected, no bounce;
3. reply: an In-Reply-To / References id is one Postlane sent; routed to
   that mail's thread (replies match by thread, not by alias or recipient,
   so renaming an alias or a wrong To does not lose them);
4. catchall: every To recipient is the catchall address: rejected, with a
   bounce back to the sender;
5. alias: the first recipient that is an alias (a full-address alias, or a
   local-part alias in an allowed domain), subject to its policy;
6. loop: an alias takes at most ``loop_threshold`` mails from one sender
   within ``loop_minutes``; beyond, dropped as a loop, bounced once per window;
7. anything else: rejected with the reason.

The processor splits this over three partitioned stages (see agent.py);
``route_offline`` runs the same functions in one go for
``postlane inbound route``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from processors.config.view import ConfigView
from schemas import (
    AliasConfigured,
    DeliveryAttempted,
    RoutingDecided,
    SendRequested,
    SettingsChanged,
    ids,
)
from schemas.addresses import AddressError, domain_of, idna_domain, split_address
from schemas.config import split_list

from ..delivery.message import make_smtp_message_id
from ..unsubscribe.token import TokenError, read_token, unsubscribe_event
from .mail import MalformedMail, ParsedMail, parse_mail


@dataclass(frozen=True)
class UnsubscribeCheck:
    """What step 2b needs: the mailto alias (``unsubscribe``), the token
    secret (read by the secrets edge) and the mail's receive time."""

    alias: str
    secret: bytes
    now: float

_BOUNCE_NS = ids.INBOUND_BOUNCE
_NO_REPLY_LOCALS = ("mailer-daemon", "postmaster", "no-reply", "noreply", "do-not-reply")


@dataclass(frozen=True)
class Route:
    """A routing decision (the agent adds the mail's metadata)."""

    route: str  # duplicate | bounce | reply | reject | alias | loop
    rule: str
    reason: str
    target: str = ""
    alias: str = ""
    policy: str = ""
    tenant: str = ""
    thread_ref: str = ""
    original_message_id: str = ""
    bounce_to: str = ""  # send a bounce back to this address
    # an UnsubscribeRequested (its representation) to publish on ``bounces``
    unsubscribe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AliasMatch:
    """Step 5 found an alias; step 6 (loop) decides."""

    alias: AliasConfigured
    recipient: str
    rule: str  # alias_address | alias_local_part
    note: str = ""


@dataclass(frozen=True)
class SentInfo:
    """A mail Postlane sent, as the reply table knows it."""

    message_id: str
    thread_ref: str = ""
    tenant: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SentInfo:
        return cls(str(data.get("message_id", "")), str(data.get("thread_ref", "")),
                   str(data.get("tenant", "")))


@dataclass(frozen=True)
class LoopState:
    """Per (alias, sender): the mails counted in the window (time, inbound
    id) and when a loop bounce was last sent."""

    hits: list[tuple[float, str]] = field(default_factory=list)
    bounced_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"hits": [list(h) for h in self.hits], "bounced_at": self.bounced_at}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LoopState:
        if not data:
            return cls()
        hits = [(float(t), str(i)) for t, i in data.get("hits", [])]
        return cls(hits=hits, bounced_at=float(data.get("bounced_at", 0.0)))


# --- domains -------------------------------------------------------------------


def _canon(domain: str) -> str:
    try:
        return idna_domain(domain)
    except AddressError:
        return domain.strip().lower()


def _split(addr: str) -> tuple[str, str]:
    local, _, domain = addr.rpartition("@")
    return local, _canon(domain)


def allowed_domains(settings: SettingsChanged) -> set[str]:
    return {_canon(d) for d in split_list(settings.allowed_domains)}


def our_domains(settings: SettingsChanged) -> set[str]:
    """The alias domains: the catchall domain and ``allowed_domains``."""
    out = allowed_domains(settings)
    if settings.catchall_domain:
        out.add(_canon(settings.catchall_domain))
    return out


def local_part_domain_ok(domain: str, settings: SettingsChanged) -> bool:
    """May a local part (alias, bounce, catchall) match at ``domain``? Any
    domain when ``allowed_domains`` is empty, else those and the catchall
    domain."""
    if not allowed_domains(settings):
        return True
    return _canon(domain) in our_domains(settings)


def accepted_domains(view: ConfigView) -> set[str]:
    """Domains the SMTP ingress accepts recipients for: our alias domains
    plus the domains of full-address aliases. Never "any": no open relay."""
    out = our_domains(view.settings)
    for alias in view.aliases.values():
        if "@" in alias.alias:
            out.add(_split(alias.alias)[1])
    return out


# --- steps ---------------------------------------------------------------------


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duplicate(seen: dict[str, Any] | None, inbound_id: str, message_id: str) -> Route | None:
    """Step 1: ``seen`` is the duplicate table's entry for the Message-ID.
    The same inbound mail delivered again is not a duplicate (it gets the
    same decision again)."""
    if not seen or seen.get("inbound_id") == inbound_id:
        return None
    where = seen.get("server") or seen.get("source") or "?"
    at = float(seen.get("received_at") or 0.0)
    return Route(
        "duplicate", "duplicate_message_id",
        f"Message-ID <{message_id}> was already received as inbound mail "
        f"{seen.get('inbound_id')} (via {where}, {_when(at)}): this copy is dropped",
    )


def first_seen(seen: dict[str, Any] | None, inbound_id: str, server: str, source: str,
               received_at: float) -> dict[str, Any] | None:
    """The duplicate table's row to write for a mail not a duplicate: its
    first copy (None when the Message-ID has a row already)."""
    if seen is not None:
        return None
    return {"inbound_id": inbound_id, "server": server, "source": source,
            "received_at": received_at}


# --- the tables of what Postlane sent ------------------------------------------------------


def sent_index_row(message_id: str, thread_ref: str, tenant: str) -> dict[str, str]:
    """``sent-index``: a Message-ID Postlane sent -> its mail and thread."""
    return {"message_id": message_id, "thread_ref": thread_ref, "tenant": tenant}


def header_domain(header_from: str) -> str:
    """The domain of a mail's header From (``postlane.invalid`` when it has
    none), as delivery builds its SMTP Message-ID with."""
    try:
        return domain_of(split_address(header_from)[1])
    except (AddressError, ValueError):
        return "postlane.invalid"


def sent_with(row: dict[str, Any] | None,
              ev: RoutingDecided | DeliveryAttempted) -> tuple[str, dict[str, Any]] | None:
    """``sent-threads`` after a mail's routing decision (the Message-ID
    delivery will give it, with its thread, tenant and header From) or a
    delivery attempt (the Message-ID it was sent with): (the Message-ID to
    record on ``sent-ids``, the new row), or None when nothing is new."""
    if isinstance(ev, RoutingDecided):
        if ev.outcome != "routed":
            return None
        request = ev.request or {}
        smtp_id = make_smtp_message_id(ev.message_id, header_domain(ev.header_from))
        info = {"thread_ref": str(request.get("thread_ref", "")),
                "tenant": str(request.get("tenant", "")), "header_from": ev.header_from}
        new = sent_thread(row, smtp_id, info)
    elif ev.smtp_message_id:
        smtp_id = ev.smtp_message_id
        new = sent_thread(row, smtp_id)
    else:
        return None
    return None if new is None else (smtp_id, new)


def sent_thread(row: dict[str, Any] | None, smtp_id: str,
                info: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``sent-threads`` after Postlane sent ``smtp_id`` for a mail: the row
    with it added (to record once on ``sent-ids``), or None when it is known
    already. ``info`` (thread_ref, tenant, header_from) comes with a routing
    decision; a delivery attempt keeps the row's."""
    old = row or {}
    ids = list(old.get("ids", []))
    if smtp_id in ids:
        return None
    return {**(old if info is None else info), "ids": [*ids, smtp_id]}


def bounce(mail: ParsedMail, settings: SettingsChanged) -> Route | None:
    """Step 2."""
    alias = (settings.bounce_alias.strip() or "bounce").lower()
    for rcpt in mail.recipients:
        local, domain = _split(rcpt)
        low = local.lower()
        if (low == alias or low.startswith(alias + "+")) and local_part_domain_ok(
            domain, settings
        ):
            original = local[len(alias) + 1 :] if low != alias else ""
            return Route(
                "bounce", "bounce_address",
                f"sent to the bounce address {rcpt}: handed to bounce processing"
                + (f" (for message {original})" if original else ""),
                original_message_id=original,
            )
    if _split(mail.sender)[0].lower() == "mailer-daemon":
        return Route("bounce", "mailer_daemon",
                     f"sent by {mail.sender}: handed to bounce processing")
    if mail.content_type == "multipart/report" and mail.report_type == "delivery-status":
        return Route("bounce", "delivery_report",
                     "a delivery-status report (multipart/report): handed to bounce processing")
    return None


def unsubscribe(mail: ParsedMail, settings: SettingsChanged, check: UnsubscribeCheck | None
                ) -> Route | None:
    """Step 2b: a mail to ``<alias>`` (or ``<alias>+TOKEN``) in our
    domains; the token is the last word of the subject (or the local
    part's suffix) that is a valid token."""
    if check is None or not check.alias:
        return None
    alias = check.alias.lower()
    for rcpt in mail.recipients:
        local, domain = _split(rcpt)
        low = local.lower()
        if (low != alias and not low.startswith(alias + "+")) or not local_part_domain_ok(
                domain, settings):
            continue
        words = [w for w in mail.subject.split() if len(w) >= 16]
        if low != alias:
            words.append(local[len(alias) + 1:])
        claims = None
        refused: TokenError | None = None
        for word in reversed(words):
            try:
                claims = read_token(check.secret, word, check.now)
                break
            except TokenError as exc:
                refused = refused or exc
        if claims is None:
            why = (f"{refused} ({refused.reason})" if refused is not None
                   else "it carries no unsubscribe token in its subject")
            return Route("reject", "unsubscribe_token",
                         f"sent to the unsubscribe address {rcpt}, but {why}: "
                         "rejected, nothing recorded, no bounce")
        event = unsubscribe_event(claims, "mailto", check.now)
        what = f"list {claims.list_id!r}" if claims.list_id else "every mass mail"
        return Route(
            "unsubscribe", "unsubscribe_mailto",
            f"sent to the unsubscribe address of {claims.address}: unsubscribed from {what}"
            + (f" of tenant {claims.tenant!r}" if claims.tenant else ""),
            target=claims.list_id, tenant=claims.tenant,
            unsubscribe=dict(event.to_representation()),
        )
    return None


def reply_candidates(mail: ParsedMail) -> list[str]:
    """Ids to look up, best first: In-Reply-To, then References newest first."""
    out: dict[str, None] = {}
    for mid in [*mail.in_reply_to, *reversed(mail.references)]:
        out.setdefault(mid, None)
    return list(out)


def reply(mail: ParsedMail, candidate: str, info: SentInfo) -> Route:
    """Step 3, once the reply table matched ``candidate``."""
    target = info.thread_ref or info.message_id
    header = "In-Reply-To" if candidate in mail.in_reply_to else "References"
    thread = f"thread {info.thread_ref!r}" if info.thread_ref else "no thread_ref, so its id"
    return Route(
        "reply", "in_reply_to" if header == "In-Reply-To" else "references",
        f"{header} has <{candidate}>, which Postlane sent as message {info.message_id} "
        f"({thread}): routed as a reply",
        target=target, thread_ref=info.thread_ref, original_message_id=info.message_id,
        tenant=info.tenant,
    )


def bounce_target(mail: ParsedMail, view: ConfigView) -> tuple[str, str]:
    """(address to bounce to, "") or ("", why not): never to automatic
    mail, lists, our own domains or mailer daemons (no mail loops)."""
    local, domain = _split(mail.sender)
    if mail.auto_submitted and mail.auto_submitted != "no":
        return "", f"no bounce: the mail is Auto-Submitted ({mail.auto_submitted})"
    if mail.precedence in ("bulk", "junk", "list") or mail.list_id:
        return "", "no bounce: the mail comes from a list or is bulk mail"
    if mail.return_path.strip() == "<>":
        return "", "no bounce: the mail has an empty Return-Path"
    if local.lower() in _NO_REPLY_LOCALS:
        return "", f"no bounce: {mail.sender} does not take replies"
    if domain in our_domains(view.settings):
        return "", f"no bounce: {mail.sender} is in our own domain (it would loop)"
    if not view.settings.catchall_domain:
        return "", "no bounce: set catchall_domain so Postlane has an address to send it from"
    return mail.sender, ""


def _is_catchall(addr: str, settings: SettingsChanged) -> bool:
    local, domain = _split(addr)
    alias = settings.catchall_alias.strip().lower()
    return bool(alias) and local.lower() == alias and local_part_domain_ok(domain, settings)


def recipients(mail: ParsedMail, view: ConfigView, tenant: str) -> Route | AliasMatch:
    """Steps 4, 5 and 7 (pure config lookups)."""
    settings = view.settings
    to = mail.to or mail.recipients
    if to and all(_is_catchall(a, settings) for a in to):
        bounce_to, why_not = bounce_target(mail, view)
        return Route(
            "reject", "catchall",
            f"sent only to the catchall address ({', '.join(to)}), which takes no mail of "
            "its own: rejected, " + (f"a bounce goes back to {bounce_to}" if bounce_to
                                    else why_not),
            bounce_to=bounce_to,
        )
    notes: list[str] = []
    for rcpt in mail.recipients:
        local, domain = _split(rcpt)
        full = view.aliases.get(f"{local}@{domain}".lower())
        if full is not None and "@" in full.alias:
            if full.tenant and tenant and full.tenant != tenant:
                notes.append(f"{rcpt} is alias {full.alias!r} of tenant {full.tenant!r}, "
                             f"but the mail came in for tenant {tenant!r}")
                continue
            return AliasMatch(full, rcpt, "alias_address")
        by_local = view.aliases.get(local.lower())
        if by_local is None or "@" in by_local.alias:
            continue
        if not local_part_domain_ok(domain, settings):
            notes.append(
                f"{rcpt}: the local part matches alias {by_local.alias!r}, but {domain} is "
                f"not in allowed_domains ({', '.join(sorted(our_domains(settings)))})"
            )
            continue
        if by_local.tenant and tenant and by_local.tenant != tenant:
            notes.append(f"{rcpt} is alias {by_local.alias!r} of tenant {by_local.tenant!r}, "
                         f"but the mail came in for tenant {tenant!r}")
            continue
        return AliasMatch(by_local, rcpt, "alias_local_part")
    shown = ", ".join(mail.recipients[:5]) + (" ..." if len(mail.recipients) > 5 else "")
    reason = (
        f"no recipient is an alias ({shown or 'no recipient'})" + "".join(f"; {n}" for n in notes)
        + ": rejected (add an alias in [[aliases]] if this address should take mail)"
    )
    return Route("reject", "no_alias", reason)


def alias(match: AliasMatch, note: str = "") -> Route:
    a = match.alias
    policy = (
        "" if a.policy == "everyone"
        else f"; policy {a.policy!r}: the consuming service accepts it only from {a.policy}"
    )
    how = "is" if match.rule == "alias_address" else "has the local part of"
    return Route(
        "alias", match.rule,
        f"{match.recipient} {how} alias {a.alias!r}: a new {a.target} record{policy}{note}",
        target=a.target, alias=a.alias, policy=a.policy, tenant=a.tenant,
    )


def loop(
    state: LoopState, match: AliasMatch, sender: str, inbound_id: str, now: float,
    settings: SettingsChanged, bounce_to: str = "",
) -> tuple[LoopState, Route]:
    """Step 6. ``now`` is the mail's receive time (replays decide alike);
    ``bounce_to``: the sender when a bounce may be sent (bounce_target)."""
    window = settings.loop_minutes * 60.0
    allowed = {a.lower() for a in split_list(settings.loop_allowed_senders)}
    if sender.lower() in allowed:
        return state, alias(match, f" ({sender} is in loop_allowed_senders)")
    hits = [h for h in state.hits if h[0] > now - window]
    if any(i == inbound_id for _, i in hits):  # the same mail again: same decision
        return replace(state, hits=hits), alias(match)
    if len(hits) >= settings.loop_threshold:
        send = bool(bounce_to) and (not state.bounced_at or state.bounced_at <= now - window)
        what = (
            f"a bounce goes back to {bounce_to}" if send
            else "a bounce was already sent in this window" if bounce_to
            else "no bounce sent"
        )
        route = Route(
            "loop", "loop",
            f"{sender} already created {len(hits)} records through alias "
            f"{match.alias.alias!r} within {settings.loop_minutes} minutes (loop_threshold "
            f"{settings.loop_threshold}): dropped as a mail loop; {what}",
            alias=match.alias.alias, tenant=match.alias.tenant,
            bounce_to=bounce_to if send else "",
        )
        return LoopState(hits=hits, bounced_at=now if send else state.bounced_at), route
    return LoopState(hits=[*hits, (now, inbound_id)], bounced_at=state.bounced_at), alias(match)


def malformed(exc: MalformedMail) -> Route:
    return Route("reject", "malformed", f"malformed mail: {exc}: rejected")


def classify(
    mail: ParsedMail, view: ConfigView, tenant: str, check: UnsubscribeCheck | None = None,
) -> Route | AliasMatch | list[str]:
    """Steps 2-7 but the lookups: a Route, an AliasMatch for the loop
    check, or the reply candidates to look up (step 3) first. Without
    ``check``, step 2b (unsubscribe) is skipped."""
    found = bounce(mail, view.settings) or unsubscribe(mail, view.settings, check)
    if found is not None:
        return found
    candidates = reply_candidates(mail)
    if candidates:
        return candidates
    return recipients(mail, view, tenant)


# --- reply lookups across partitions ---------------------------------------------


def lookup_here(
    candidates: list[str], pending: list[int], found_index: int, found: dict[str, Any],
    here: int, partition_of: Callable[[str], int], get: Callable[[str], dict[str, Any] | None],
) -> tuple[list[int], int, dict[str, Any]]:
    """Look up every pending candidate that lives on partition ``here``
    (one hop answers all of them); keep the best (lowest index) match."""
    rest: list[int] = []
    for i in pending:
        if partition_of(candidates[i]) != here:
            rest.append(i)
            continue
        if found_index >= 0 and i > found_index:
            continue
        info = get(candidates[i])
        if info is not None:
            found_index, found = i, info
    return rest, found_index, found


def next_candidate(candidates: list[str], pending: list[int], found_index: int) -> str | None:
    """The candidate to re-key the lookup by next, or None when done: no
    candidate left that could beat the match found so far."""
    better = [i for i in pending if found_index < 0 or i < found_index]
    return candidates[min(better)] if better else None


# --- bounce mail ------------------------------------------------------------------


def bounce_message_id(inbound_id: str) -> str:
    """The message id of the bounce for one inbound mail (a redelivery
    publishes the same mail, which delivery sends once)."""
    return "bounce-" + uuid.uuid5(_BOUNCE_NS, inbound_id).hex


def bounce_request(
    route: Route, mail: ParsedMail, inbound_id: str, settings: SettingsChanged, tenant: str = ""
) -> SendRequested | None:
    """The bounce sent back for a catchall or loop rejection; None when
    the route asks for none."""
    if not route.bounce_to or not settings.catchall_domain:
        return None
    domain = _canon(settings.catchall_domain)
    subject = f"Undelivered Mail Returned to Sender: {mail.subject}"[:200]
    if route.rule == "catchall":
        why = (
            f"Your mail to {', '.join(mail.to)} was not delivered: that address does not "
            "accept mail of its own. Reply to the mail you received instead, or write to "
            "the address given there."
        )
    else:
        why = (
            f"Your mail to {route.alias or 'this address'} was not delivered: we received "
            f"too many mails from you in a short time ({settings.loop_threshold} within "
            f"{settings.loop_minutes} minutes), which looks like a mail loop. Mails from you "
            "are dropped until the rate goes down."
        )
    headers = {"Auto-Submitted": "auto-replied"}
    if mail.message_id:
        headers["In-Reply-To"] = f"<{mail.message_id}>"
        headers["References"] = f"<{mail.message_id}>"
    return SendRequested(
        message_id=bounce_message_id(inbound_id),
        from_=f'"Mail Delivery System" <MAILER-DAEMON@{domain}>',
        to=[route.bounce_to],
        subject=subject.replace("\r", " ").replace("\n", " "),
        text=why + f"\n\nSubject of your mail: {mail.subject}\nMessage-ID: <{mail.message_id}>\n",
        headers=headers,
        tenant=tenant,
        kind="transactional",
    )


# --- offline ------------------------------------------------------------------------


def route_offline(
    raw: bytes, view: ConfigView, sent_ids: Iterable[str], tenant: str = "",
    envelope_to: list[str] | None = None, now: float = 0.0,
    check: UnsubscribeCheck | None = None,
) -> Route:
    """The whole decision without the tables: ``sent_ids`` stands in for the
    reply table (a match's thread is then the Message-ID itself); no
    duplicate or loop history."""
    from .mail import normalize_message_id

    try:
        mail = parse_mail(raw, envelope_to)
    except MalformedMail as exc:
        return malformed(exc)
    sent = {normalize_message_id(s): s for s in sent_ids if s.strip()}
    step = classify(mail, view, tenant, check)
    if isinstance(step, list):
        for candidate in step:
            if candidate in sent:
                return reply(mail, candidate, SentInfo(message_id=f"<{candidate}>"))
        step = recipients(mail, view, tenant)
    if isinstance(step, AliasMatch):
        bounce_to, _ = bounce_target(mail, view)
        _, step = loop(LoopState(), step, mail.sender, "offline", now, view.settings, bounce_to)
    return step
