"""Replay any table: fold its source topics from offset 0 with the
processor's own pure functions, read the live table back from its changelog
topic, and compare the two.

Each table is a ``TableReplay``: the topics it is folded from, the fold
(records -> key -> comparable row) and how a changelog value reads as a
comparable row. A *comparable* row keeps what the table means (a mail's
state and recipients, a ledger's accepted/failed/pending recipients ...)
and leaves out what depends on the moment it was computed (wall-clock
times, the order of history entries of events from different topics).

With ``as_of``, only records (of the source topics and of the changelog)
whose own timestamp is at or before it are used: the embedded broker's
``offsets_for_times`` is approximate, so nothing is trusted to an index.

The folds, by table:

- ``status``: every status source, merged in timestamp order, each event
  applied with ``processors.status.core.fold_in_place``: the value
  ``batch.apply`` gives (what the agent's ``fold_batch`` applies per event:
  ``core.evolve``, ``core.acknowledge``), the same transitions made in place
  and without the MessageStatusChanged the replay would drop.
- ``delivery-ledger``: ``processors.delivery.core``: a release is
  ``on_routed``'s decision, each ``DeliveryStarted`` is ``start``'s
  ledger (``started``; a ledger is made with ``new_ledger`` from the
  recipients it names), each ``DeliveryAttempted`` is ``finish``'s with its
  own outcomes (``finished``; then its recorded next attempt time and next
  server), each forwarded command ``on_command``. The limiter's decision
  is read twice, on routing-decided and in its release: when the two are the
  same JSON, byte for byte, whichever comes second takes the event the first
  decoded (the same bytes decode to the same event, or fail the same way).
- ``limiter-held`` / ``limiter-mass``: ``limiter_replay`` (own module).
- ``blacklist``: ``postlane.blacklistops`` (``processors.blacklist.core.evolve``).
- ``inbound-seen``, ``sent-index``, ``alias-loops``, ``sent-threads``:
  ``processors.inbound.core`` / ``mail`` (``duplicate``, ``loop``,
  ``bounce_target``, ``parse_mail``), the same steps as the agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, cast

import orjson
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from schemas import Event, InvalidEvent, decode, decode_any
from schemas.base import decode_any_owned, decode_given, owned_decoder
from streams import tables as T
from streams.client import Record
from streams.settings import Settings
from streams.tables import TableSpec, changelog_topic, decode_row
from streams.topics import TopicSpec

from .logread import Rec, gc_paused, read_all, unavailable

Fold = Callable[[Settings, list[Rec]], "Folded"]


@dataclass
class Folded:
    rows: dict[str, Any] = field(default_factory=dict)  # key -> comparable row
    folded: int = 0  # events applied
    skipped: int = 0  # records the processor would refuse or ignore


@dataclass(frozen=True)
class TableReplay:
    spec: TableSpec  # the table (streams/tables.py): its changelog is <app>-<name>-changelog
    sources: tuple[TopicSpec, ...]
    fold: Fold
    live: Callable[[Settings, str, Any], Any]  # (settings, key, row) -> comparable
    doc: str = ""
    # the comparable rows of the whole live table, when a row's meaning
    # depends on the others (applied to what ``live`` gave)
    live_all: Callable[[Settings, dict[str, Any]], dict[str, Any]] | None = None

    @property
    def name(self) -> str:
        """What the CLI calls it: the table's name."""
        return self.spec.name

    @property
    def table(self) -> str:
        return self.spec.name

    @property
    def owner(self) -> str:
        """The processor writing it (``postlane worker OWNER``), as the
        registry declares."""
        from processors.registry import owner_of

        return owner_of(self.spec).name


@dataclass
class Outcome:
    table: str
    as_of: float | None
    records: int
    folded: int
    skipped: int
    rows: dict[str, Any]
    live_topic: str | None
    live: dict[str, Any]
    differences: list[str]
    seconds: float

    @property
    def agree(self) -> bool:
        return self.live_topic is not None and not self.differences


# --- reading -------------------------------------------------------------------------------


def changelog_topics(s: Settings, table: str) -> list[str]:
    """Changelog topics of ``table`` (``<app_prefix>-<app>-<table>-changelog``)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=s.bootstrap, client_id="postlane-admin",
                                 request_timeout_ms=10000)
    except KafkaError as exc:
        raise unavailable(s, exc) from exc
    try:
        names = admin.list_topics()
    finally:
        admin.close()
    suffix = changelog_topic("", table)  # -<table>-changelog, whatever the app
    return sorted(t for t in names if t.startswith(f"{s.app_prefix}-") and t.endswith(suffix))


def pick_changelog(s: Settings, table: str, owner: str, topics: list[str]) -> str | None:
    """The owner's own worker first (``postlane worker OWNER``), then a
    worker running the owner with others (its app is the sorted names joined
    by ``-``: ``limiter-OWNER-router``), then the dev stack's, else the first."""
    if not topics:
        return None
    exact = changelog_topic(f"{s.app_prefix}-{owner}", table)
    if exact in topics:
        return exact
    for t in topics:
        app = t[len(s.app_prefix) + 1:-len(changelog_topic("", table))]
        if owner in app.split("-"):
            return t
    dev = changelog_topic(f"{s.app_prefix}-dev", table)
    return dev if dev in topics else topics[0]


def table_value(raw: bytes | None) -> Any:
    """A changelog value: the row in the one table encoding
    (``streams.tables.decode_row``); None for a tombstone."""
    return decode_row(raw)


def table_key(raw: bytes | None) -> str:
    key = (raw or b"").decode("utf-8", "replace")
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def read_live(s: Settings, topic: str, as_of: float | None,
              live: Callable[[Settings, str, Any], Any]) -> dict[str, Any]:
    """The table as its changelog says (the last value per key; a tombstone
    deletes), as comparable rows."""
    out: dict[str, Any] = {}
    for rec in read_all(s, [topic], until=as_of):
        key = table_key(rec.key)
        try:
            value = table_value(rec.value)
        except orjson.JSONDecodeError:
            continue
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return {k: live(s, k, v) for k, v in out.items()}


def differences(replayed: dict[str, Any], live: dict[str, Any], limit: int = 50) -> list[str]:
    out: list[str] = []
    for key in sorted(set(replayed) | set(live)):
        a, b = replayed.get(key), live.get(key)
        if a != b:
            if len(out) < limit:
                out.append(f"{key}: replay {_short(a)} / live {_short(b)}")
            else:
                out.append("... (more differences)")
                break
    return out


def _short(value: Any, width: int = 400) -> str:
    text = "none" if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return text if len(text) <= width else text[:width] + "..."


def in_order(recs: list[Rec], specs: tuple[TopicSpec, ...], s: Settings) -> list[Rec]:
    """Records of several topics in the order their writers produced them
    (their timestamps; ties by the order of ``specs``, then offset): the
    order a processor reading them all comes closest to. Every source is
    keyed by the same id, so one key's events are on one partition of each."""
    rank = {spec.full(s): i for i, spec in enumerate(specs)}
    if len(specs) < 99:
        # the same order with small ints (tuples compare several times slower,
        # one int of all three is past 64 bits): by offset, then, stably, by
        # time and topic (a rank below 128)
        out = sorted(recs, key=_OFFSET)
        out.sort(key=lambda r: r.timestamp_ms * 128 + rank.get(r.topic, 99))
        return out
    return sorted(recs, key=lambda r: (r.timestamp_ms, rank.get(r.topic, 99), r.offset))


_OFFSET = attrgetter("offset")


def by_key(recs: list[Rec]) -> list[Rec]:
    """The records grouped by key, each key's in their order: for a fold
    whose rows are each folded from their own key's records alone (one
    row's events never change another), the same rows, while a row's state
    is still in the CPU's cache from its previous event (a blacklist
    address's bounces are days apart in the log, thousands of records)."""
    groups: dict[bytes | None, list[Rec]] = {}
    for rec in recs:
        group = groups.get(rec.key)
        if group is None:
            groups[rec.key] = [rec]
        else:
            group.append(rec)
    if len(groups) == len(recs):
        return recs
    out: list[Rec] = []
    for group in groups.values():
        out += group
    return out


def run(s: Settings, spec: TableReplay, as_of: float | None = None,
        changelog: str | None = None) -> Outcome:
    """Replay ``spec`` and compare it with the live table."""
    t0 = time.perf_counter()
    with gc_paused():
        recs = read_all(s, [t.full(s) for t in spec.sources], until=as_of)
        folded = spec.fold(s, recs)
    topic = changelog or pick_changelog(s, spec.table, spec.owner,
                                        changelog_topics(s, spec.table))
    with gc_paused():
        live = read_live(s, topic, as_of, spec.live) if topic else {}
        if topic and spec.live_all is not None:
            live = spec.live_all(s, live)
    diffs = differences(folded.rows, live) if topic else []
    return Outcome(spec.name, as_of, len(recs), folded.folded, folded.skipped, folded.rows,
                   topic, live, diffs, time.perf_counter() - t0)


# --- status --------------------------------------------------------------------------------


def status_comparable(st: Any) -> dict[str, Any]:
    """What a status row means, whatever order its sources were read in.
    (Loops, not comprehensions: a mail has a recipient or two and a few
    history entries, and a comprehension is a function call.)"""
    recipients: dict[str, Any] = {}
    for a, r in st.recipients.items():
        get = r.get
        recipients[a] = {"state": get("state"), "code": get("code"),
                         "enhanced": get("enhanced"), "server": get("server")}
    events = set()
    for h in st.history:
        events.add(h.get("event_id", ""))
    return {
        "state": st.state, "server": st.server, "attempt": st.attempt,
        "recipients": recipients,
        "acknowledged": st.acknowledged,
        "events": sorted(events),
    }


def fold_status(s: Settings, recs: list[Rec]) -> Folded:
    from processors.status.agent import REGISTRY, SOURCES
    from processors.status.core import MessageStatus, fold_in_place
    from schemas import QueueCommandIssued
    from streams.topics import RELEASED, untyped_by_topic

    untyped = untyped_by_topic(s)
    released = RELEASED.full(s)
    out = Folded()
    rows: dict[str, MessageStatus] = {}
    folded = skipped = 0
    topic, kind = None, ""  # the last record's topic and its untyped events' type
    decode = owned_decoder(REGISTRY)  # decode_any's event or refusal
    for rec in in_order(recs, SOURCES, s):
        if rec.topic is not topic:
            topic = rec.topic
            kind = untyped.get(topic, "")
        try:
            ev = decode(rec.value, kind)
        except InvalidEvent:
            skipped += 1
            continue
        mid: str = ev.__dict__["message_id"]  # (every event of its registry has one)
        if rec.key != mid.encode():
            skipped += 1
            continue
        if isinstance(ev, QueueCommandIssued) and rec.topic == released:
            continue  # the limiter's forwarded copy (the status agent ignores it)
        # the value batch.apply gives (what fold_batch applies per event),
        # made in place: only each mail's last value is kept
        try:
            new = fold_in_place(rows.get(mid), ev)
        except Exception:  # noqa: BLE001 - the agent dead-letters what fails to fold
            skipped += 1
            continue
        folded += 1
        if new is not None:
            rows[mid] = new
    out.folded, out.skipped = folded, skipped
    out.rows = {mid: status_comparable(st) for mid, st in rows.items()}
    return out


def status_live(_s: Settings, _key: str, value: Any) -> Any:
    from processors.status.core import MessageStatus

    return status_comparable(MessageStatus.from_dict(value, fresh=True))


# --- delivery ledger -----------------------------------------------------------------------


def ledger_comparable(ledger: Any) -> dict[str, Any]:
    return {
        "server": ledger.server, "attempt": ledger.attempt, "inflight": ledger.inflight,
        "done": ledger.done, "cancelled": ledger.cancelled,
        "pending": sorted(ledger.pending), "accepted": sorted(ledger.accepted),
        "failed": sorted(ledger.failed), "interrupted_attempts": ledger.interrupted_attempts,
        "commands": sorted(ledger.commands),
    }


def fold_ledger(s: Settings, recs: list[Rec]) -> Folded:
    from processors.delivery import core
    from schemas import (
        DeliveryAttempted,
        DeliveryStarted,
        MailReleased,
        QueueCommandIssued,
        RoutingDecided,
    )
    from streams.topics import DELIVERY, RELEASED, ROUTING_DECIDED

    registry: dict[str, type[Event]] = {c.__name__: c for c in (
        MailReleased, RoutingDecided, QueueCommandIssued, DeliveryStarted, DeliveryAttempted)}
    retry = s  # the settings are the RetrySettings delivery uses
    out = Folded()
    ledgers: dict[str, core.Ledger] = {}
    decisions: dict[str, RoutingDecided] = {}
    guessed: dict[str, bool] = {}  # message_id -> its running attempt taken as interrupted
    # the limiter's decisions, by their JSON: one read on routing-decided and
    # the same decision carried by its release (in either order) decode to
    # the same event when their JSON is the same bytes (the same values of
    # the same types), so the second takes the first's (see below)
    by_json: dict[bytes, RoutingDecided] = {}
    routing_topic = ROUTING_DECIDED.full(s)
    dumps = orjson.dumps
    for rec in in_order(recs, (RELEASED, ROUTING_DECIDED, DELIVERY), s):
        ev: Event | None = None
        if by_json and rec.topic == routing_topic and rec.value is not None:
            ev = by_json.pop(rec.value, None)  # its release's decision, decoded already
        if ev is None:
            try:
                ev = decode_any_owned(registry, rec.value)
            except InvalidEvent:
                out.skipped += 1
                continue
            if (isinstance(ev, RoutingDecided) and not ev.direct and rec.value is not None
                    and ev.message_id not in decisions):
                by_json[rec.value] = ev  # for its release
        mid: str = ev.message_id  # type: ignore[attr-defined]
        now = rec.timestamp_ms / 1000.0
        ledger = ledgers.get(mid)
        try:
            if isinstance(ev, MailReleased | RoutingDecided):
                # a release, or the router's own (direct); the limiter's other
                # decisions come as releases
                if isinstance(ev, RoutingDecided) and not ev.direct:
                    continue
                if isinstance(ev, RoutingDecided):
                    decision = ev
                else:
                    carried = ev.decision
                    raw = _json_of(dumps, carried)
                    seen = by_json.pop(raw, None) if raw is not None else None
                    if seen is None:
                        # the release is dropped after this: its decision
                        # dict becomes the event (decode's event, no copy)
                        decision = decode_given(RoutingDecided, carried)
                        if raw is not None and carried.get("type") == "RoutingDecided":
                            by_json[raw] = decision  # for the record on routing-decided
                    else:
                        decision = seen
                decisions.setdefault(mid, decision)
                if ledger is not None:
                    continue  # on_routed on an existing ledger changes nothing in it
            elif isinstance(ev, QueueCommandIssued):
                new, _action, _answers = core.on_command(ledger, ev, now)
                if new is not None:
                    ledgers[mid] = new
            elif isinstance(ev, DeliveryStarted):
                if ledger is None:
                    routed = decisions.get(mid)
                    if routed is None:
                        out.skipped += 1
                        continue
                    ledger = core.new_ledger(routed, list(ev.recipients), now)
                    _made(ledger, server=ev.server)
                elif ev.attempt <= ledger.attempt:
                    continue  # the same start again
                else:
                    ledger = core.changed(ledger, server=ev.server)
                # an attempt started over one without an outcome was interrupted
                # (the outcome, when it comes, says for sure: below)
                action = core.Action("deliver", interrupted=ledger.inflight)
                guessed[mid] = action.interrupted
                ledger = core.started(ledger, action)  # start's ledger
                ledgers[mid] = ledger
            elif isinstance(ev, DeliveryAttempted):
                if ledger is None or not ledger.inflight or ev.attempt != ledger.attempt:
                    continue  # an outcome folded already
                ledger = core.finished(  # finish's ledger
                    ledger, list(ev.outcomes), now=ev.occurred_at, settings=retry,
                    session_error=ev.error)
                # the times and the next server are the recorded ones (they
                # were computed from the clock and the config of that moment)
                _made(ledger, next_at=ev.next_attempt_at,
                      server=ev.next_server or ledger.server)
                # a crash after the previous outcome reached the log and before
                # the ledger recorded it: delivery took that attempt as
                # interrupted, and this outcome says so
                if ev.interrupted != guessed.pop(mid, False):
                    _made(ledger, interrupted_attempts=(
                        ledger.interrupted_attempts + (1 if ev.interrupted else -1)))
                ledgers[mid] = ledger
            out.folded += 1
        except (InvalidEvent, TypeError, ValueError, KeyError):
            out.skipped += 1
    out.rows = {mid: ledger_comparable(ledger) for mid, ledger in ledgers.items()}
    return out


def _made(ledger: Any, **changes: Any) -> None:
    """``core.changed(ledger, **changes)`` on a ledger this fold has just
    made (``new_ledger``, ``finished``: a new object nothing else holds, its
    lists and dicts not shared with an earlier ledger's, so the copy
    ``changed`` makes would be thrown away at once): the same fields set
    in place, in the same order."""
    values = ledger.__dict__
    for name, value in changes.items():
        if name not in values:
            raise TypeError(f"Ledger has no field {name!r}")
        values[name] = value


def _json_of(dumps: Callable[[Any], bytes], value: Any) -> bytes | None:
    try:
        return dumps(value)
    except (TypeError, ValueError):  # e.g. an int beyond 64 bits: decoded the long way
        return None


def ledger_live(_s: Settings, _key: str, value: Any) -> Any:
    from processors.delivery.core import Ledger

    ledger = Ledger.from_dict(value)
    return ledger_comparable(ledger) if ledger is not None else None


# --- blacklist -----------------------------------------------------------------------------


def fold_blacklist(s: Settings, recs: list[Rec]) -> Folded:
    from processors.blacklist.core import Rules, comparable

    from . import blacklistops

    rules = Rules.from_settings(s)
    # a Rec has what fold_records reads of a Record (timestamp_ms, key, value)
    r = blacklistops.fold_records(iter(cast(list[Record], by_key(recs))), rules)
    return Folded(rows={a: comparable(st, rules) for a, st in r.states.items()},
                  folded=r.records - r.skipped - r.after, skipped=r.skipped)


def blacklist_live(s: Settings, _key: str, value: Any) -> Any:
    from processors.blacklist.core import AddressState, Rules, comparable

    return comparable(AddressState.from_dict(value), Rules.from_settings(s))


# --- inbound -------------------------------------------------------------------------------


def fold_seen(s: Settings, recs: list[Rec]) -> Folded:
    from processors.inbound import core
    from processors.inbound.mail import MalformedMail, parse_mail
    from schemas import InboundMailReceived

    out = Folded()
    seen: dict[str, dict[str, Any]] = {}
    for rec in recs:
        try:
            data = orjson.loads(rec.value or b"null")
            if not isinstance(data, dict) or data.get("type") != "InboundMailReceived":
                out.skipped += 1
                continue
            ev = decode(InboundMailReceived, data)
            mail = parse_mail(ev.raw(), ev.envelope_to)
        except (InvalidEvent, MalformedMail, orjson.JSONDecodeError, ValueError):
            out.skipped += 1
            continue
        key = mail.message_id or f"inbound:{ev.inbound_id}"
        if rec.key != key.encode() or not mail.message_id:
            continue  # re-keyed by the agent (its copy comes later) or no Message-ID
        out.folded += 1
        entry = seen.get(key)
        first = core.first_seen(entry, ev.inbound_id, ev.server, ev.source, ev.received_at)
        if core.duplicate(entry, ev.inbound_id, mail.message_id) is None and first is not None:
            seen[key] = first
    out.rows = seen
    return out


def fold_sent_index(s: Settings, recs: list[Rec]) -> Folded:
    from processors.inbound import core
    from processors.inbound.mail import normalize_message_id
    from schemas import SentMessageRecorded

    out = Folded()
    index: dict[str, dict[str, Any]] = {}
    for rec in recs:
        try:
            ev = decode(SentMessageRecorded, rec.value)
        except InvalidEvent:
            out.skipped += 1
            continue
        key = normalize_message_id(ev.smtp_message_id)
        if rec.key != key.encode():
            continue  # the agent re-keys it; the re-keyed copy is folded
        out.folded += 1
        index[key] = core.sent_index_row(ev.message_id, ev.thread_ref, ev.tenant)
    out.rows = index
    return out


def fold_loops(s: Settings, recs: list[Rec]) -> Folded:
    from processors.inbound import core
    from processors.inbound.mail import ParsedMail
    from schemas import AliasConfigured, InboundAliasMatched, InboundMailReceived

    from .configops import current_view

    view = current_view(s)
    out = Folded()
    loops: dict[str, Any] = {}
    for rec in recs:
        try:
            ev = decode(InboundAliasMatched, rec.value)
            inbound = InboundMailReceived.from_data(ev.inbound)
            mail = ParsedMail.from_dict(ev.parsed)
            alias = AliasConfigured(alias=ev.alias, target=ev.target, tenant=ev.tenant,
                                    policy=ev.policy)
        except (InvalidEvent, TypeError, ValueError):
            out.skipped += 1
            continue
        key = table_key(rec.key) if rec.key else f"{ev.alias.lower()}|{ev.sender.lower()}"
        state = core.LoopState.from_dict(loops.get(key))
        bounce_to, _ = core.bounce_target(mail, view)
        now = inbound.received_at or ev.occurred_at
        new, _route = core.loop(state, core.AliasMatch(alias, ev.recipient, ev.rule),
                                ev.sender, inbound.inbound_id, now, view.settings, bounce_to)
        out.folded += 1
        if new != state:
            loops[key] = new.to_dict()
    out.rows = {k: _loops_comparable(v) for k, v in loops.items()}
    return out


def _loops_comparable(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {"hits": sorted(str(i) for _, i in value.get("hits", [])),
            "bounced": bool(value.get("bounced_at"))}


def fold_threads(s: Settings, recs: list[Rec]) -> Folded:
    """``sent-threads``: as the inbound index agent writes it (``core.sent_with``)."""
    from processors.inbound import core
    from schemas import DeliveryAttempted, RoutingDecided

    registry: dict[str, type[Event]] = {"RoutingDecided": RoutingDecided,
                                        "DeliveryAttempted": DeliveryAttempted}
    out = Folded()
    rows: dict[str, dict[str, Any]] = {}
    for rec in recs:
        try:
            ev = decode_any(registry, rec.value)
        except InvalidEvent:
            continue  # other events of these topics
        assert isinstance(ev, RoutingDecided | DeliveryAttempted)
        out.folded += 1
        sent = core.sent_with(rows.get(ev.message_id), ev)
        if sent is not None:
            rows[ev.message_id] = sent[1]
    out.rows = {k: _threads_comparable(v) for k, v in rows.items()}
    return out


def _threads_comparable(value: Any) -> Any:
    """The Message-IDs a mail was sent with. (Its thread and tenant are
    copied from whichever of its routing decision and attempt the agent
    met first: after a restart it may meet the attempt first, so they are
    not compared.)"""
    if not isinstance(value, dict):
        return value
    return {"ids": sorted(value.get("ids", []))}


def _same(_s: Settings, _key: str, value: Any) -> Any:
    return value


# --- the tables ----------------------------------------------------------------------------


def tables() -> dict[str, TableReplay]:
    from processors.status.agent import SOURCES as STATUS_SOURCES
    from streams.topics import (
        BOUNCES,
        DELIVERY,
        INBOUND,
        INBOUND_ALIASES,
        RELEASED,
        ROUTING_DECIDED,
        ROUTING_DECIDED_MASS,
        SENT_IDS,
    )

    from . import limiter_replay

    specs = [
        TableReplay(T.STATUS, STATUS_SOURCES, fold_status, status_live,
                    "message_id -> status (state, recipients, history)"),
        TableReplay(T.DELIVERY_LEDGER, (RELEASED, ROUTING_DECIDED, DELIVERY),
                    fold_ledger, ledger_live,
                    "message_id -> attempts, accepted / failed / pending recipients"),
        *limiter_replay.tables(),
        TableReplay(T.BLACKLIST, (BOUNCES,), fold_blacklist,
                    blacklist_live, "address -> counted bounces, blacklisting, suppressions"),
        TableReplay(T.INBOUND_SEEN, (INBOUND,), fold_seen, _same,
                    "Message-ID -> first inbound mail (duplicates)"),
        TableReplay(T.SENT_INDEX, (SENT_IDS,), fold_sent_index, _same,
                    "Message-ID Postlane sent -> message id, thread, tenant"),
        TableReplay(T.ALIAS_LOOPS, (INBOUND_ALIASES,), fold_loops,
                    lambda _s, _k, v: _loops_comparable(v), "alias|sender -> loop counter"),
        TableReplay(T.SENT_THREADS, (ROUTING_DECIDED, ROUTING_DECIDED_MASS, DELIVERY),
                    fold_threads, lambda _s, _k, v: _threads_comparable(v),
                    "message id -> thread, tenant and the Message-IDs it was sent with"),
    ]
    return {t.name: t for t in specs}


ALIASES = {"ledger": T.DELIVERY_LEDGER.name, "seen": T.INBOUND_SEEN.name,
           "loops": T.ALIAS_LOOPS.name, "threads": T.SENT_THREADS.name,
           "suppressions": T.BLACKLIST.name, "held": T.LIMITER_HELD.name,
           "mass": T.LIMITER_MASS.name}


def replay(s: Settings, name: str, as_of: float | None = None,
           changelog: str | None = None) -> Outcome:
    spec = tables()[ALIASES.get(name, name)]
    return run(s, spec, as_of, changelog)
