"""Fuzzing every input topic's decoder: at least 10,000 generated records per
decoder, none may raise anything its agent does not catch, every refused
one has a reason (the words the dead letter carries), none takes over 1 s.

A decoder here is what an agent does with a record's bytes before its pure
core sees the event (``processors/*/agent.py``, the config and blacklist
readers), with the exceptions that agent catches around it; everything
else would stop the agent. The records are made from a valid sample of
each event type its topics carry (``tests/unit/test_schemas.SAMPLES``),
mutated by hypothesis: fields dropped, replaced by values of other types
(huge integers, NaN, nested junk, CR/LF, NUL), ``type`` changed, nested
objects (the decision a MailReleased carries, the mail an inbound event
carries) broken, the JSON cut short, or no JSON at all.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from processors.blacklist import agent as blacklist_agent
from processors.blacklist.reader import BlacklistReader
from processors.bounces import agent as bounces_agent
from processors.config.reader import ConfigReader
from processors.delivery import agent as delivery_agent
from processors.fetcher import agent as fetcher_agent
from processors.inbound import agent as inbound_agent
from processors.inbound.mail import MalformedMail, parse_mail
from processors.status import agent as status_agent
from schemas import (
    CONFIG_EVENTS,
    AliasConfigured,
    BlacklistChanged,
    DeliveryAttempted,
    DeliveryStarted,
    Event,
    InboundAliasMatched,
    InboundMailReceived,
    InboundReplyLookupRequested,
    IncomingServerChecked,
    InvalidEvent,
    MailReleased,
    QueueCommandIssued,
    RoutingDecided,
    SendRequested,
    decode,
    decode_any,
)
from streams.settings import Settings
from tests.unit.test_schemas import SAMPLES

from .fuzz import Counter, bounded, fuzz_settings

PER_DECODER = 10_000
VARIANTS = 5  # records per recipe and decoder (the mutations shifted to other keys)
BATCH = 25  # recipes per hypothesis example
EXAMPLES = PER_DECODER // (BATCH * VARIANTS)

# --- the decoders, as the agents run them -----------------------------------------------


def _plain(cls: type[Event]) -> Callable[[bytes | None], Any]:
    return lambda raw: decode(cls, raw)


def _any(registry: dict[str, type[Event]]) -> Callable[[bytes | None], Any]:
    return lambda raw: decode_any(registry, raw)


def delivery_input(raw: bytes | None) -> Any:
    """delivery/agent.py ``_decide``: the input, the decision a release
    carries, and the request a routed decision carries."""
    event = decode_any(delivery_agent._INPUTS, raw)
    if isinstance(event, MailReleased):
        event = decode(RoutingDecided, event.decision)
    if isinstance(event, RoutingDecided) and event.outcome == "routed":
        request = SendRequested.from_data(event.request)
        request.__post_init__()
    return event


def limiter_delivery(raw: bytes | None) -> Any:
    """limiter/agent.py ``_take`` on the delivery topic (its batch loop
    dead-letters any exception with its repr)."""
    return orjson.loads(raw) if raw else None


def inbound_mail(raw: bytes | None) -> Any:
    """inbound/agent.py ``classify``: the event, then the mail it carries."""
    ev = decode_any(inbound_agent._INBOUND, raw)
    if isinstance(ev, InboundMailReceived):
        try:
            return parse_mail(ev.raw(), ev.envelope_to)
        except MalformedMail as exc:
            return exc  # routed as rejected with the reason
    return ev


def inbound_threads(raw: bytes | None) -> Any:
    """inbound/agent.py ``threads`` / ``lookup``: a lookup ends by reading
    the mail and the parse it carries."""
    ev = decode_any(inbound_agent._THREADS, raw)
    if isinstance(ev, InboundReplyLookupRequested):
        inbound_agent.carried_mail(ev.inbound, ev.parsed)
    return ev


def inbound_aliases(raw: bytes | None) -> Any:
    """inbound/agent.py ``aliases``."""
    ev = decode(InboundAliasMatched, raw)
    inbound_agent.carried_mail(ev.inbound, ev.parsed)
    AliasConfigured(alias=ev.alias, target=ev.target, tenant=ev.tenant, policy=ev.policy)
    return ev


class Skipped(Exception):
    """A reader skipped the record: the reason is what it logged."""


class _Logged(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


SETTINGS = Settings.from_env(environ={})


def _follow(reader: Any, logger: str, raw: bytes | None) -> Any:
    handler = _Logged()
    log = logging.getLogger(logger)
    log.addHandler(handler)
    propagate, log.propagate = log.propagate, False
    try:
        reader.apply(raw, 0)
    finally:
        log.removeHandler(handler)
        log.propagate = propagate
    if handler.messages:
        raise Skipped("; ".join(handler.messages))
    return reader.view


def config_reader(raw: bytes | None) -> Any:
    """Every worker's config view: the reader skips (and logs) what it cannot decode."""
    return _follow(ConfigReader(SETTINGS), "postlane.config", raw)


def blacklist_reader(raw: bytes | None) -> Any:
    """The router's blacklist view."""
    return _follow(BlacklistReader(SETTINGS), "postlane.blacklist", raw)


INV = (InvalidEvent,)
# name: (decoder, the exceptions its agent catches, the event types its topics carry)
DECODERS: dict[str, tuple[Callable[[bytes | None], Any], tuple[type[BaseException], ...],
                          list[type[Event]]]] = {
    "router <- send-requested(-mass)": (_plain(SendRequested), INV, [SendRequested]),
    "limiter <- routing-decided(-mass)": (_plain(RoutingDecided), INV, [RoutingDecided]),
    "limiter <- commands": (_plain(QueueCommandIssued), INV, [QueueCommandIssued]),
    "limiter <- delivery": (limiter_delivery, (Exception,), [DeliveryStarted, DeliveryAttempted]),
    "delivery <- released, delivery-due": (
        delivery_input, (InvalidEvent, TypeError, ValueError),
        list(delivery_agent._INPUTS.values())),
    "status <- its nine topics": (_any(status_agent.REGISTRY), INV,
                                  list(status_agent.REGISTRY.values())),
    "bounces <- inbound-routed, bounce-mail, delivery": (
        _any(bounces_agent._INTAKE), INV, list(bounces_agent._INTAKE.values())),
    "bounces <- bounce-domains": (_any(bounces_agent._OUTAGE), INV,
                                  list(bounces_agent._OUTAGE.values())),
    "blacklist <- bounces": (_any(blacklist_agent.REGISTRY), INV,
                             list(blacklist_agent.REGISTRY.values())),
    "inbound <- inbound": (inbound_mail, INV, list(inbound_agent._INBOUND.values())),
    "inbound <- sent-ids, inbound-threads": (inbound_threads, INV,
                                             list(inbound_agent._THREADS.values())),
    "inbound <- inbound-aliases": (inbound_aliases, (InvalidEvent, TypeError, ValueError),
                                   [InboundAliasMatched]),
    "inbound <- routing-decided(-mass), delivery": (_any(inbound_agent._INDEX), INV,
                                                    list(inbound_agent._INDEX.values())),
    "fetcher <- incoming-status": (_plain(IncomingServerChecked), INV,
                                   [IncomingServerChecked]),
    "fetcher <- inbound (its own batches)": (_any(fetcher_agent._REGISTRY), INV,
                                             list(fetcher_agent._REGISTRY.values())),
    "every worker <- config": (config_reader, (Skipped,), list(CONFIG_EVENTS.values())),
    "router <- blacklist": (blacklist_reader, (Skipped,), [BlacklistChanged]),
}


# --- the records -------------------------------------------------------------------------


def sample(cls: type[Event]) -> dict[str, Any]:
    """A valid wire object of ``cls``, nested objects valid too."""
    data: dict[str, Any] = json.loads(json.dumps(SAMPLES[cls]))
    if cls is MailReleased:
        data["decision"]["request"] = {
            "message_id": "m-1", "from_": "a@example.com", "to": ["b@example.org"],
            "subject": "Hi", "text": "Hello"}
    if cls in (InboundReplyLookupRequested, InboundAliasMatched):
        data["parsed"] = PARSED  # what the router's first stage carries
    data["type"] = cls.__name__
    return data


PARSED = json.loads(json.dumps(parse_mail(base64.b64decode(SAMPLES[InboundMailReceived]["mail"]))
                               .to_dict()))


NASTY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\r\n", "a\r\nBcc: x@evil.test", "\x00", "<>", "@", "a@", "@b",
                     "x" * 5000, "bounce+@mycompany.com", "=?utf-8?b?////?=", "é" * 100,
                     "a@b@c", "\ud7ff", "🙂@🙂.test", "..", "-1", "null", "[]", "{}"]),
)
LEAF = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    NASTY_TEXT,
)
VALUE = st.recursive(
    LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                  st.dictionaries(NASTY_TEXT, inner, max_size=4)),
    max_leaves=4,
)


Op = tuple[str, int, Any]  # (what, which key, the value or the nested ops)


def ops(depth: int = 0) -> st.SearchStrategy[list[Op]]:
    """Mutations that apply to any event: keys are picked by position, so
    one drawn list mutates an event of whatever type a decoder reads."""
    kinds = ["drop", "replace", "type", "add"] + (["nested"] if depth < 2 else [])
    op = st.sampled_from(kinds).flatmap(lambda k: st.tuples(
        st.just(k), st.integers(0, 63),
        ops(depth + 1) if k == "nested" else
        st.one_of(st.sampled_from(sorted(SAMPLE_TYPES)), LEAF) if k == "type" else
        st.tuples(NASTY_TEXT, VALUE) if k == "add" else VALUE))
    return st.lists(op, max_size=3)


def apply(data: dict[str, Any], mutations: list[Op], shift: int = 0) -> dict[str, Any]:
    out = dict(data)
    for what, pick, value in mutations:
        keys = sorted(out)
        key = keys[(pick + shift) % len(keys)] if keys else None
        if what == "drop" and key is not None:
            out.pop(key)
        elif what == "replace" and key is not None:
            out[key] = value
        elif what == "type":
            out["type"] = value
        elif what == "add":
            out[value[0]] = value[1]
        elif what == "nested":
            nested = [k for k in keys if isinstance(out[k], dict)]
            if nested:
                k = nested[(pick + shift) % len(nested)]
                out[k] = apply(out[k], value, shift)
    return out


SAMPLE_TYPES = {cls.__name__ for cls in SAMPLES}
ALL_SAMPLED = sorted(SAMPLES, key=lambda c: c.__name__)


@dataclass(frozen=True)
class Recipe:
    """One generated record, for any decoder: ``build`` makes its bytes from
    an event of that decoder's own types."""

    shape: str  # event | other | cut | bytes | json | none
    pick: int
    mutations: list[Op]
    blob: bytes
    value: Any
    cut: float
    ascii: bool
    mail: str | None

    def build(self, types: list[type[Event]], variant: int = 0) -> bytes | None:
        """The record for a decoder reading ``types``; each ``variant`` picks
        another event type and mutates other keys."""
        if self.shape == "none":
            return [None, b"", b" ", b"null"][(self.pick + variant) % 4]
        if self.shape == "bytes":
            return self.blob[variant:] + self.blob[:variant]
        if self.shape == "json":
            return json.dumps([self.value] * variant or self.value).encode()
        pool = ALL_SAMPLED if self.shape == "other" else types
        cls = pool[(self.pick + variant) % len(pool)]
        data = apply(sample(cls), self.mutations, variant)
        if cls is InboundMailReceived and self.mail is not None:
            data["mail"] = self.mail
        raw = json.dumps(data, ensure_ascii=self.ascii).encode("utf-8", "surrogatepass")
        if self.shape == "cut":
            raw = raw[: int(len(raw) * self.cut)]
        return raw


RECIPES = st.builds(
    Recipe,
    shape=st.sampled_from(["event"] * 6 + ["other", "cut", "bytes", "json", "none"]),
    pick=st.integers(0, 1023),
    mutations=ops(),
    blob=st.binary(max_size=48),
    value=VALUE,
    cut=st.floats(0.0, 0.999),
    ascii=st.booleans(),
    mail=st.one_of(st.none(), NASTY_TEXT,
                   st.binary(max_size=120).map(lambda b: base64.b64encode(b).decode())),
)


# --- the property --------------------------------------------------------------------------


def check(name: str, raw: bytes | None) -> str:
    """Decode one record as the agent would: "ok", or the reason it is refused."""
    decoder, handled, _ = DECODERS[name]
    try:
        bounded(decoder, raw, what=f"{name} on {raw[:80] if raw else raw!r}")
    except handled as exc:
        reason = str(exc)
        assert reason.strip(), f"{name}: {type(exc).__name__} without a reason for {raw!r}"
        return reason
    return "ok"


def test_every_decoder_never_escapes() -> None:
    """Each generated recipe is built into a record of every decoder's own
    event types and decoded by it: PER_DECODER records per decoder."""
    counts = {name: Counter() for name in DECODERS}

    @fuzz_settings(EXAMPLES)
    @given(st.lists(RECIPES, min_size=BATCH, max_size=BATCH))
    def run(recipes: list[Recipe]) -> None:
        for recipe in recipes:
            for name, (_, _, types) in DECODERS.items():
                for variant in range(VARIANTS):
                    outcome = check(name, recipe.build(types, variant))
                    counts[name].add("ok" if outcome == "ok" else "refused")

    run()
    for name, c in counts.items():
        assert sum(c.n.values()) >= PER_DECODER, (name, c.n)
        # the mutations reach both sides: valid events decode, broken ones are refused
        assert c.n.get("refused", 0) > PER_DECODER // 20, (name, c.n)
        assert c.n.get("ok", 0) > PER_DECODER // 20, (name, c.n)


# --- what the fuzzer found, kept as plain examples ----------------------------------------


def test_reply_lookup_carrying_a_broken_mail_is_refused_with_the_reason() -> None:
    """Found by the fuzzer: the reply lookup read the mail it carries with
    ``from_data`` (no type checks) and crashed the inbound agent on a
    ``mail`` that is not text or a parse with fields missing."""
    name = "inbound <- sent-ids, inbound-threads"
    data = sample(InboundReplyLookupRequested)
    data["inbound"]["mail"] = None
    assert "field 'mail' must be str, got NoneType" in check(name, json.dumps(data).encode())
    data = sample(InboundReplyLookupRequested)
    data["parsed"] = {"message_id": "x1@example.org"}
    assert "missing" in check(name, json.dumps(data).encode())
    data = sample(InboundAliasMatched)
    data["inbound"].pop("inbound_id")
    assert "missing field 'inbound_id'" in check("inbound <- inbound-aliases",
                                                 json.dumps(data).encode())
