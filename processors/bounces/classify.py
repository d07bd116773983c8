"""What a failure means: a reason class and hard or soft. Pure.

Inputs are what a bounce or an SMTP answer gives: the enhanced status code
(RFC 3463, ``5.1.1``), the SMTP reply code (``550``) and the server's text.
Words in the text win over the status code when they are specific (Microsoft
answers ``5.1.10`` for an unknown recipient, which RFC 7505 reserves for a
null MX; many servers say ``5.7.1`` for everything); then the status code's
detail; then generic words ("rejected"); then the reply code.

Hard means the address is bad: a permanent failure whose reason is an
unknown (or disabled) mailbox or a domain or host that does not exist. Every
other failure is soft, even when reported as permanent: refusals by policy,
block lists, spam or content filters, size, rate, a full mailbox, a message
that expired in a queue, a network failure (they are about the sender, the
message or the moment, not the address).

When a bounce carries no enhanced status code (or only ``X.0.0``), the code
is inferred from the text (``infer_status``: user unknown -> X.1.1, mailbox
full -> X.2.2, host not found -> X.1.2, message too big -> X.3.4, ...) and
the result says so.
"""

from __future__ import annotations

import re

from schemas.bounces import REASONS

__all__ = ["REASONS", "best_status", "classify", "derived_status_overridden",
           "find_replycode", "find_status", "infer_detail", "infer_status", "reason_of"]

ALWAYS_SOFT = frozenset({"mailbox_full", "expired", "network_error"})
HARD_REASONS = frozenset({"unknown_user", "host_unknown"})

_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"^\s*([245]\d\d)(?:[\s\-]|$)")


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{a})" for a in alternatives), re.IGNORECASE)


# Specific words, checked in this order (the first class that matches wins).
_SPECIFIC: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("mailbox_full", _words(
        r"mail ?box (is )?full", r"full mail ?box", r"over ?quota", r"quota exceeded",
        r"exceeded (its |the |his |her )?(storage|quota|mailbox)", r"QuotaExceeded",
        r"insufficient (system )?storage", r"mail ?box size limit", r"mailfolder is over",
        r"out of (disk )?space", r"too many messages (in|on)", r"no space left",
        r"storage (space )?(limit|quota)", r"mailbox (is )?over", r"is over (the )?quota",
        r"user has exceeded",
    )),
    ("expired", _words(
        r"retry timeout exceeded", r"message expired", r"delivery time expired",
        r"expired after", r"too long in (the )?queue", r"message timed out",
        r"(has been|was) (in the queue|queued) (for )?too long", r"delivery expired",
        r"could not be delivered (for|within) (the last )?\d+", r"maximum (queue )?time",
        r"unable to deliver .{0,40} within", r"retry time not reached for any host",
        r"timeout waiting for",
    )),
    ("host_unknown", _words(
        r"host or domain name not found", r"domain (name )?not found", r"no such domain",
        r"unrouteable", r"unroutable", r"name service error", r"\bnxdomain\b",
        r"domain .{1,80} does not exist", r"no (valid )?mx (record|host)", r"null mx",
        r"unknown host", r"host unknown", r"unable to look up host", r"no valid hosts",
        r"mx records point to non-existent", r"bad destination system",
        r"domain (is )?(not|no longer) (exist|valid|in use)", r"dns (error|lookup failed)",
    )),
    ("unknown_user", _words(
        r"user unknown", r"unknown user", r"no such (user|mailbox|recipient|address|account)",
        r"(user|recipient|mailbox|address|account|addressee) (does not|doesn't|did not|"
        r"dont|don't) exist", r"(does not|doesn't) exist", r"not (a )?known user",
        r"unknown (recipient|local|mailbox|address|addressee)", r"addressee unknown",
        r"invalid (recipient|mailbox|address|user)",
        r"(recipient|user|mailbox|address|account)( address)? (not found|unknown|invalid)",
        r"RecipNotFound", r"RecipientNotFound", r"NoSuchUser", r"not listed in",
        r"mail ?box (unavailable|not found|disabled|inactive|does not exist|is disabled)",
        r"account (is |has been )?(disabled|inactive|deactivated|suspended|closed)",
        r"is disabled", r"no mailbox here", r"bad destination mailbox",
        r"unknown or illegal alias", r"this user doesn't have a .{1,30} account",
        r"user not found", r"couldn't be found", r"wasn't found at",
        r"no longer (active|available|valid|in use)", r"is not a valid (mailbox|user|recipient)",
        r"recipient name is not recognized", r"address (couldn't|could not) be found",
        r"AS\(201806281\)", r"ディレクトリのリストにありません",
    )),
    ("spam", _words(
        r"\bspam\b", r"junk mail", r"unsolicited", r"bulk mail", r"\bUCE\b",
        r"content (was )?rejected", r"message content", r"looks like (spam|junk)",
        r"phish", r"\bvirus\b", r"malware", r"high probability",
    )),
    ("auth_failure", _words(
        r"authentication (failed|required|credentials|unsuccessful)",
        r"auth(entication)? (failure|failed)", r"invalid credentials",
        r"not authenticated", r"must (be authenticated|authenticate)", r"login (failed|incorrect)",
        r"username and password not accepted", r"\b535[ -]", r"5\.7\.8\b", r"5\.7\.139\b",
    )),
    ("network_error", _words(
        r"connection refused", r"connection timed out", r"timed out", r"network is unreachable",
        r"no route to host", r"connection reset", r"lost connection", r"connect to .{1,120} failed",
        r"host unreachable", r"temporary failure in name resolution", r"could not connect",
        r"broken pipe", r"tls (handshake|negotiation) failed", r"connection (dropped|closed)",
    )),
    ("blocked", _words(
        r"blocked", r"block ?list", r"black ?list", r"listed (in|at|on|by)", r"\bRBL\b",
        r"\bDNSBL\b", r"spamhaus", r"spamcop", r"barracuda", r"reputation",
        r"relay(ing)? (access )?(denied|not permitted|not allowed)", r"not permitted to relay",
        r"relay not permitted", r"policy", r"not authori[sz]ed", r"access denied", r"banned",
        r"\bSPF\b", r"\bDKIM\b", r"\bDMARC\b", r"unauthenticated",
        r"sender (address )?(rejected|denied|refused|blocked)", r"rate limit",
        r"too many (connections|messages|recipients)", r"throttl", r"denied", r"prohibited",
        r"(no|not have|without) permission to (post|send)", r"not (be )?allowed to post",
    )),
)
_GENERIC: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("rejected", _words(
        r"rejected", r"not accepted", r"message (size|too (big|large))", r"too large",
        r"too big", r"exceeds (the )?(maximum|size|message)", r"size limit", r"refused",
        r"loop", r"too many hops", r"header error", r"syntax",
    )),
)

# (class digit, subject.detail) -> reason; class "x" = any
_BY_STATUS: dict[str, str] = {
    "1.0": "unknown_user", "1.1": "unknown_user", "1.2": "host_unknown",
    "1.3": "unknown_user", "1.4": "unknown_user", "1.5": "unknown_user",
    "1.6": "unknown_user", "1.7": "blocked", "1.8": "blocked", "1.9": "other",
    "1.10": "host_unknown",
    "2.0": "unknown_user", "2.1": "unknown_user", "2.2": "mailbox_full", "2.3": "rejected",
    "2.4": "other",
    "3.0": "other", "3.1": "mailbox_full", "3.2": "network_error", "3.3": "rejected",
    "3.4": "rejected", "3.5": "other",
    "4.0": "network_error", "4.1": "network_error", "4.2": "network_error",
    "4.3": "network_error", "4.4": "host_unknown", "4.5": "network_error",
    "4.6": "network_error", "4.7": "expired",
    "5.0": "rejected", "5.1": "rejected", "5.2": "rejected", "5.3": "rejected",
    "5.4": "rejected", "5.5": "rejected", "5.6": "rejected",
    "6.0": "rejected", "6.1": "rejected", "6.2": "rejected", "6.3": "rejected",
    "6.4": "rejected", "6.5": "rejected",
    "7.0": "blocked", "7.1": "blocked", "7.2": "blocked", "7.3": "blocked",
    "7.4": "blocked", "7.5": "blocked", "7.6": "blocked", "7.7": "blocked",
    "7.8": "auth_failure", "7.9": "auth_failure", "7.10": "auth_failure",
    "7.11": "auth_failure", "7.12": "auth_failure", "7.13": "blocked", "7.14": "blocked",
}
_BY_REPLY: dict[int, str] = {
    421: "network_error", 450: "other", 451: "other", 452: "mailbox_full",
    530: "auth_failure", 535: "auth_failure", 550: "other", 551: "unknown_user",
    552: "mailbox_full", 553: "unknown_user", 554: "rejected",
}


def find_status(text: str) -> str:
    """The first enhanced status code in ``text`` (``"5.1.1"``), or ""."""
    m = _STATUS.search(text or "")
    return f"{m.group(1)}.{m.group(2)}.{m.group(3)}" if m else ""


_REPLY_SAID = re.compile(
    r"(?:said|returned|answered|replied|reply|response|error)[^0-9\n]{0,24}\b([245]\d\d)\b"
    r"|\b([45]\d\d)[ -][245]\.\d{1,3}\.\d{1,3}\b",
    re.IGNORECASE,
)


def find_replycode(text: str) -> int:
    """The SMTP reply code in a server's answer: leading (``"550 5.1.1
    ..."``), after "said:" and the like, or before an enhanced code; 0."""
    m = _REPLY.match(text or "")
    if m:
        return int(m.group(1))
    m = _REPLY_SAID.search(text or "")
    return int(m.group(1) or m.group(2)) if m else 0


_LEADING = re.compile(r"^\s*(?:smtp;\s*)?[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b", re.I)


def best_status(declared: str, text: str, diagnostic: str = "") -> str:
    """The declared status, unless it is a bare ``X.0.0`` and the server's
    text has a more specific code of the same class (Exim and others write
    ``5.0.0`` and quote ``550 5.1.1`` in the diagnostic), or the remote
    server's own reply (``diagnostic``) starts with another specific code of
    the same class: the reporting MTA derived its ``Status`` from the reply
    code (Sendmail writes ``5.2.2`` for any 552, ``5.2.0`` for a refusal at
    DATA, ``5.1.1`` for any 550 at RCPT) while the receiving server said what
    it meant (``552 5.3.4``)."""
    found = find_status(text)
    if not declared:
        return found
    if declared.endswith(".0.0") and found and found[0] == declared[0] and found != declared:
        return found
    m = _LEADING.match(diagnostic or "")
    if m and m.group(1) != declared and m.group(1)[0] == declared[0] \
            and not m.group(1).endswith(".0.0"):
        return m.group(1)
    return declared


def reason_of(status: str, replycode: int, text: str) -> str:
    """The reason class (see REASONS)."""
    for reason, pattern in _SPECIFIC:
        if pattern.search(text or ""):
            return reason
    if status:
        _, _, detail = status.partition(".")
        found = _BY_STATUS.get(detail)
        if found and detail != "0.0":
            return found
    for reason, pattern in _GENERIC:
        if pattern.search(text or ""):
            return reason
    if replycode in _BY_REPLY:
        return _BY_REPLY[replycode]
    if status:
        return _BY_STATUS.get(status.partition(".")[2], "other")
    return "other"


def permanent(status: str, replycode: int, default: bool = True) -> bool:
    """Permanent by the status class, else the reply code, else ``default``."""
    if status:
        return status.startswith("5")
    if replycode:
        return replycode >= 500
    return default


def classify(
    status: str, replycode: int, text: str, *, action: str = "failed"
) -> tuple[str, bool]:
    """(reason, hard) for one recipient. ``action`` is the DSN action:
    ``failed`` with a temporary (4.x.x) status is a mail that expired in a
    queue after temporary errors; ``delayed`` is never hard."""
    reason = reason_of(status, replycode, text)
    if action == "failed" and status.startswith("4") and reason in ("network_error", "other"):
        reason = "expired"
    elif action == "failed" and reason == "network_error" and not replycode:
        # a final failure whose last error is a network one (no server answered):
        # the queue gave up retrying (Courier writes 5.0.0 and "Connection refused")
        reason = "expired"
    hard = (
        action == "failed"
        and permanent(status, replycode)
        and reason in HARD_REASONS
    )
    return reason, hard


# Finer than the reason classes: text -> subject.detail (RFC 3463), first match wins.
_INFER_TEXT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("3.4", _words(r"message (size|too (big|large))", r"too (big|large)",
                   r"exceeds? (the )?(maximum|fixed|size|message)", r"size limit",
                   r"message length exceeds", r"\bmesgtoobig\b")),
    ("2.1", _words(r"(mailbox|account|user|address)( is| has been)? (disabled|inactive|"
                   r"deactivated|suspended|closed|locked|frozen)", r"is disabled",
                   r"mailbox (is )?not active")),
    ("4.6", _words(r"mail (forwarding )?loop", r"too many hops", r"loops back to myself",
                   r"routing loop")),
    ("7.1", _words(r"relay(ing)? (access )?(denied|not permitted|not allowed)",
                   r"not permitted to relay", r"relay not permitted")),
    ("4.1", _words(r"connection refused", r"no route to host", r"network is unreachable",
                   r"host unreachable")),
    ("4.2", _words(r"connection (timed out|reset|dropped|closed)", r"lost connection",
                   r"timed out")),
)
_INFER_REASON: dict[str, str] = {
    "unknown_user": "1.1", "host_unknown": "1.2", "mailbox_full": "2.2", "expired": "4.7",
    "spam": "7.1", "blocked": "7.1", "auth_failure": "7.8", "network_error": "4.1",
}


def infer_detail(text: str) -> str:
    """The subject.detail the words of ``text`` name specifically (``"3.4"`` for a
    message too big), or ""; not from the reason class."""
    for d, pattern in _INFER_TEXT:
        if pattern.search(text or ""):
            return d
    return ""


_BARE_REPLY = re.compile(r"^\s*(?:smtp;\s*)?[245]\d\d(?:[ -](?![245]\.\d{1,3}\.\d)|$)", re.I)


def derived_status_overridden(declared: str, diagnostic: str, text: str) -> str:
    """The status a server's own words give when the reporting MTA derived its
    ``Status`` from a bare reply code: Sendmail writes ``5.2.2`` for any 552, so
    ``552 Message size exceeds fixed maximum message size`` (no enhanced code)
    is reported as a full mailbox. "" when the declared status stands."""
    if not declared or declared.endswith(".0.0") or not _BARE_REPLY.match(diagnostic or ""):
        return ""
    detail = infer_detail(text)
    if not detail or declared.partition(".")[2] == detail:
        return ""
    return f"{declared[0]}.{detail}"


def infer_status(reason: str, text: str, replycode: int, action: str = "failed") -> str:
    """The enhanced status a bounce without one (or with only ``X.0.0``)
    implies: the class from the reply code, else the action (delayed: 4,
    failed: 5); the subject and detail from the text, else the reason.
    "" when nothing specific is known."""
    detail = "4.7" if reason == "expired" else ""  # whatever the last error was
    for d, pattern in () if detail else _INFER_TEXT:
        if pattern.search(text or ""):
            detail = d
            break
    if not detail:
        detail = _INFER_REASON.get(reason, "")
    if not detail:
        return ""
    if 400 <= replycode < 500:
        klass = "4"
    elif 500 <= replycode < 600:
        klass = "5"
    else:
        klass = "4" if action == "delayed" else "5"
    return f"{klass}.{detail}"
