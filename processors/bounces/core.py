"""Bounce intake and the outage check: pure functions.

Stage 1 (``intake_*``) turns its inputs into events:

- an ``InboundMailRouted`` with route ``bounce`` (or a ``BounceMailReceived``)
  is parsed: each failed recipient becomes a ``RecipientBounced`` for the
  outage check (keyed by the recipient's domain; when it names our mail,
  first for the attribution check, keyed by that mail: attribution.py), each complaint a
  ``ComplaintReceived`` (on ``bounces``: suppressed at once), an automatic reply a
  ``MailReceivedFrom`` its author (the address works); delay notices and
  anything else produce nothing;
- an ``InboundMailRouted`` that is a person's mail (reply, alias, loop)
  becomes a ``MailReceivedFrom`` its sender;
- a ``DeliveryAttempted``: each recipient with a final answer counts as
  mailed (``RecipientsMailed`` per domain), and each 5xx is a bounce of that
  recipient at delivery time.

Stage 2 (``check_outage``), one partition per recipient domain, decides
whether a bounce is part of a burst of the same error from one server: at
least ``bounce_burst_min`` different addresses within
``bounce_burst_seconds``, making up at least ``bounce_burst_share`` of the
recipients mailed at that domain in that time (when nothing was seen mailed,
the count alone decides). The bounces of a burst do not count; those
published before the burst was recognised are withdrawn with
``BounceDiscounted``. A share, not only a count: a campaign to a large
domain with 1% dead addresses gives many bounces with the same "user
unknown" text, and those must count.

Event ids are derived from the source, so a redelivered input gives the same
events again and every reader can drop the repeat.
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from processors.config.view import ConfigView
from schemas import (
    BounceDiscounted,
    BounceMailReceived,
    BounceRecorded,
    ComplaintReceived,
    DeliveryAttempted,
    Event,
    InboundMailRouted,
    MailReceivedFrom,
    RecipientBounced,
    RecipientsMailed,
    ids,
)
from schemas.addresses import AddressError, check_address, idna_domain
from schemas.config import split_list
from streams.settings import Settings
from streams.topics import BOUNCE_ATTRIBUTION, BOUNCE_DOMAINS, BOUNCES, TopicSpec

from .classify import best_status, classify, find_replycode
from .parser import BounceParseError, BounceResult, ParsedBounce, parse_bounce

_NS = ids.BOUNCE_DERIVED
# routes of the inbound router that are a person's (or their autoresponder's) mail
RESET_ROUTES = ("reply", "alias", "loop")

Out = list[tuple[TopicSpec, str, Event]]


def derived_id(*parts: str) -> str:
    return uuid.uuid5(_NS, "/".join(parts)).hex


def bounce_id(source: str, recipient: str) -> str:
    return derived_id(source, recipient.lower())


def normal_address(value: str) -> str:
    """Lower-cased bare address, or "" when it is not a valid address."""
    v = value.strip().strip("<>").strip().lower()
    try:
        check_address(v)
    except AddressError:
        return ""
    return v


def domain_of(address: str) -> str:
    domain = address.rpartition("@")[2].lower()
    try:
        return idna_domain(domain)
    except AddressError:
        return domain


def our_domains(view: ConfigView) -> set[str]:
    """Domains our bounce addresses and Message-IDs use: the catchall domain,
    allowed_domains, and the domains in the servers' from_filters and
    sender addresses (the header From's domain makes the Message-ID)."""
    s = view.settings
    out: set[str] = set()
    for d in [s.catchall_domain, *split_list(s.allowed_domains)]:
        if d:
            out.add(d.strip().lower())
    for server in view.servers.values():
        for part in server.from_filter.split(","):
            part = part.strip().lower()
            if part:
                out.add(part.rpartition("@")[2])
        if server.sender:
            out.add(server.sender.rpartition("@")[2].lower())
    if "@" in s.default_from:
        out.add(s.default_from.rpartition("@")[2].lower())
    return {d for d in out if d}


def parse_for(view: ConfigView, raw: bytes, envelope_message_id: str = "") -> ParsedBounce:
    s = view.settings
    return parse_bounce(raw, bounce_alias=s.bounce_alias or "bounce", domains=our_domains(view),
                        envelope_message_id=envelope_message_id)


# --- stage 1 ----------------------------------------------------------------------------


def _bounce_fields(source_id: str, r: BounceResult, at: float, server: str, source: str,
                   fmt: str) -> dict[str, Any]:
    return {
        "bounce_id": bounce_id(source_id, r.recipient),
        "address": r.recipient,
        "bounced_at": at,
        "reason": r.reason,
        "hard": r.hard,
        "status": r.status,
        "replycode": r.replycode if 200 <= r.replycode <= 599 else 0,
        "diagnostic": r.diagnostic[:1000],
        "message_id": r.message_id,
        "server": server,
        "source": source,
        "format": fmt,
    }


def from_parsed(source_id: str, parsed: ParsedBounce, at: float) -> Out:
    """The events of one parsed bounce mail (``source_id`` names the mail)."""
    out: Out = []
    for r in parsed.results:
        addr = normal_address(r.recipient)
        if not addr:
            continue
        r = BounceResult(**{**r.__dict__, "recipient": addr})
        server = (r.remote_mta or parsed.reporting_mta or domain_of(addr)).lower()[:200]
        fields = _bounce_fields(source_id, r, at, server, "mail", parsed.format)
        bounced = RecipientBounced(event_id=derived_id(fields["bounce_id"], "parsed"), **fields)
        if r.message_id:  # it names our mail: checked against its recipients first
            out.append((BOUNCE_ATTRIBUTION, r.message_id, bounced))
        else:
            out.append((BOUNCE_DOMAINS, domain_of(addr), bounced))
    for r in parsed.complaints:
        addr = normal_address(r.recipient)
        if not addr:
            continue
        cid = bounce_id(source_id, addr)
        ftype, agent = complaint_words(r.diagnostic)
        out.append((BOUNCES, addr, ComplaintReceived(
            event_id=derived_id(cid, "complaint"), complaint_id=cid, address=addr,
            complained_at=at, message_id=r.message_id, feedback_type=ftype,
            format=parsed.format, reporting_mta=_line(parsed.reporting_mta)[:200],
            user_agent=agent)))
    if parsed.kind == "auto_reply":
        addr = normal_address(parsed.sender)
        if addr and addr.partition("@")[0] not in ("mailer-daemon", "postmaster"):
            out.append((BOUNCES, addr, MailReceivedFrom(
                event_id=derived_id(source_id, "received-from"), address=addr,
                received_at=at, inbound_id=source_id, source="auto_reply")))
    return out


def _line(value: str) -> str:
    return " ".join(value.split())


def complaint_words(diagnostic: str) -> tuple[str, str]:
    """(feedback type, user agent) from the parser's ``complaint: ...`` text."""
    m = re.search(r"feedback-type (\S+)(?: \((.*)\))?", diagnostic)
    if m:
        return _line(m.group(1))[:40], _line(m.group(2) or "")[:200]
    m = re.search(r"complaint: (\S+)", diagnostic)
    return (_line(m.group(1))[:40] if m else "abuse"), ""


def intake_routed(view: ConfigView, ev: InboundMailRouted) -> tuple[Out, str]:
    """(events, what happened in words) for one inbound routing decision."""
    at = ev.received_at or ev.occurred_at
    if ev.route == "bounce":
        if not ev.mail:
            return [], f"bounce {ev.inbound_id} carried no mail"
        try:
            parsed = parse_for(view, base64.b64decode(ev.mail), ev.original_message_id)
        except BounceParseError as exc:
            return [], f"bounce {ev.inbound_id} could not be read: {exc}"
        return from_parsed(f"mail:{ev.inbound_id}", parsed, at), _summary(parsed)
    if ev.route in RESET_ROUTES:
        addr = normal_address(ev.sender)
        if not addr:
            return [], f"{ev.route} from {ev.sender!r}: no usable sender address"
        event = MailReceivedFrom(event_id=derived_id(f"mail:{ev.inbound_id}", "received-from"),
                                 address=addr, received_at=at, inbound_id=ev.inbound_id,
                                 source=ev.route)
        return [(BOUNCES, addr, event)], f"mail from {addr} ({ev.route}): its count restarts"
    return [], ""


def intake_bounce_mail(view: ConfigView, ev: BounceMailReceived) -> tuple[Out, str]:
    at = ev.received_at or ev.occurred_at
    try:
        parsed = parse_for(view, ev.raw(), ev.original_message_id)
    except BounceParseError as exc:
        return [], f"bounce mail {ev.bounce_mail_id} could not be read: {exc}"
    return from_parsed(f"mail:{ev.bounce_mail_id}", parsed, at), _summary(parsed)


def _summary(parsed: ParsedBounce) -> str:
    if parsed.kind == "bounce":
        rcpts = ", ".join(f"{r.recipient} {r.status or r.replycode or ''} {r.reason}"
                          for r in parsed.results[:5])
        return f"{parsed.format} bounce: {rcpts}"
    return f"{parsed.kind} ({parsed.format}): {parsed.note}"


def intake_delivery(ev: DeliveryAttempted) -> Out:
    """Mailed counts per domain and the 5xx answers of one attempt."""
    out: Out = []
    mailed: dict[str, int] = {}
    bounced: list[tuple[str, RecipientBounced]] = []
    source = f"delivery:{ev.event_id}"
    for o in ev.outcomes:
        addr = normal_address(str(o.get("recipient") or ""))
        status = o.get("status")
        if not addr or status not in ("accepted", "failed"):
            continue
        domain = domain_of(addr)
        mailed[domain] = mailed.get(domain, 0) + 1
        code = o.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else 0
        if status != "failed" or not 500 <= code <= 599:
            continue
        text = str(o.get("text") or "")
        enhanced = str(o.get("enhanced") or "")
        status_code = best_status(enhanced, text)
        reason, hard = classify(status_code, code, text)
        diag = " ".join(p for p in (str(code), enhanced, text) if p)
        r = BounceResult(addr, status_code, code or find_replycode(text), hard, reason, diag,
                         ev.message_id)
        fields = _bounce_fields(source, r, ev.occurred_at, f"outgoing:{ev.server}", "delivery",
                                "smtp")
        bounced.append((domain, RecipientBounced(
            event_id=derived_id(fields["bounce_id"], "parsed"), **fields)))
    for domain, count in mailed.items():
        out.append((BOUNCE_DOMAINS, domain, RecipientsMailed(
            event_id=derived_id(source, domain, "mailed"), domain=domain, count=count,
            at=ev.occurred_at, message_id=ev.message_id)))
    out.extend((BOUNCE_DOMAINS, d, e) for d, e in bounced)
    return out


# --- stage 2: the outage check --------------------------------------------------------------


@dataclass(frozen=True)
class BurstRules:
    min_addresses: int = 10
    seconds: float = 3600.0
    share: float = 0.5

    @classmethod
    def from_settings(cls, s: Settings) -> BurstRules:
        return cls(s.bounce_burst_min, s.bounce_burst_seconds, s.bounce_burst_share)


MAX_HITS = 2000  # per error signature and domain, newest kept


@dataclass
class DomainState:
    """Per recipient domain: recipients mailed per minute, and per error
    signature the recent bounces ``[at, address, bounce_id]`` and the burst
    in progress (``outage`` words, until ``outage_until``)."""

    mailed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mailed": dict(self.mailed), "errors": copy.deepcopy(self.errors)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DomainState:
        if not data:
            return cls()
        return cls(mailed={str(k): int(v) for k, v in (data.get("mailed") or {}).items()},
                   errors=copy.deepcopy(data.get("errors") or {}))


_SIG_ADDR = re.compile(r"<?[^\s<>@]+@[^\s<>]+>?")
_SIG_NUM = re.compile(r"\b[0-9a-f]*\d[0-9a-f]*\b", re.I)


def signature(ev: RecipientBounced) -> str:
    """What "the same error from one server" means: the server, the status
    and the diagnostic with addresses, ids and numbers blotted out."""
    text = _SIG_ADDR.sub("<addr>", ev.diagnostic.lower())
    text = _SIG_NUM.sub("#", text)
    text = " ".join(text.split())[:200]
    return f"{ev.server}|{ev.status or ev.replycode}|{text}"


def _mailed_since(state: DomainState, since: float) -> int:
    first = int(since // 60)
    return sum(c for b, c in state.mailed.items() if int(b) >= first)


def check_outage(
    state: DomainState | None, ev: Event, rules: BurstRules
) -> tuple[DomainState, Out]:
    """Apply one RecipientBounced or RecipientsMailed of a domain."""
    st = DomainState.from_dict(state.to_dict() if state else None)
    if isinstance(ev, RecipientsMailed):
        bucket = str(int(ev.at // 60))
        st.mailed[bucket] = st.mailed.get(bucket, 0) + ev.count
        oldest = int((ev.at - 2 * rules.seconds) // 60)
        st.mailed = {b: c for b, c in st.mailed.items() if int(b) >= oldest}
        return st, []
    if not isinstance(ev, RecipientBounced):
        return st, []
    at = ev.bounced_at
    sig = signature(ev)
    entry = st.errors.setdefault(sig, {"hits": [], "outage": "", "until": 0.0})
    hits = [h for h in entry["hits"] if h[0] > at - rules.seconds]
    fields = {k: getattr(ev, k) for k in (
        "bounce_id", "address", "bounced_at", "reason", "hard", "status", "replycode",
        "diagnostic", "message_id", "server", "source", "format", "kind")}
    recorded_id = derived_id(ev.bounce_id, "recorded")
    out: Out = []
    if any(h[2] == ev.bounce_id for h in entry["hits"]):  # redelivered: same answer again
        outage = entry["outage"] if entry["until"] >= at else ""
        out.append((BOUNCES, ev.address, BounceRecorded(event_id=recorded_id, outage=outage,
                                                        **fields)))
        return st, out
    hits.append([at, ev.address, ev.bounce_id])
    entry["hits"] = hits[-MAX_HITS:]
    if entry["outage"] and entry["until"] >= at:
        entry["until"] = at + rules.seconds
        outage = entry["outage"]
    else:
        entry["outage"], outage = "", ""
        distinct = {h[1] for h in hits}
        mailed = _mailed_since(st, at - rules.seconds)
        share = len(distinct) / max(mailed, len(distinct))
        if len(distinct) >= rules.min_addresses and share >= rules.share:
            what = f"{ev.status or ev.replycode or ''} {ev.diagnostic[:80]}".strip()
            outage = (
                f"burst: {len(distinct)} addresses at {domain_of(ev.address)} got the same "
                f"error from {ev.server or 'one server'} within {rules.seconds / 60:g} min "
                f"({share:.0%} of the mail sent there): {what}"
            )
            entry["outage"], entry["until"] = outage, at + rules.seconds
            for _at, h_addr, h_id in hits[:-1]:
                out.append((BOUNCES, h_addr, BounceDiscounted(
                    event_id=derived_id(h_id, "discounted"), address=h_addr, bounce_id=h_id,
                    outage=outage)))
    out.append((BOUNCES, ev.address, BounceRecorded(event_id=recorded_id, outage=outage,
                                                    **fields)))
    # forget signatures that are quiet and not in a burst
    st.errors = {
        k: v for k, v in st.errors.items()
        if (v["hits"] and v["hits"][-1][0] > at - rules.seconds) or v["until"] >= at
    }
    return st, out
