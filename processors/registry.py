"""The processor table, as code: one declaration per processor a worker can
run (``postlane worker NAME...``) saying what it reads (in its consumer
group), follows (whole, outside any group: a view), writes, which tables it
owns (it is their one writer), which secrets it may read and whether more
workers share its partitions.

The README's "What runs" table is made from it (``scripts/processor-table``)
and ``tests/unit/test_processor_table.py`` checks it against the code (the
agents' inputs and tables in a built app, the topics and secrets each
processor's modules import), the README and docker-compose.yml, so a
drift fails a test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from streams import tables as T
from streams import topics as t
from streams.tables import TableSpec
from streams.topics import TopicSpec

from .runtime import Runtime

# what a processor may read through streams/secrets.py
SECRETS = {
    "server-password": "an outgoing (SMTP) or incoming (IMAP) server's password_env/_file",
    "dkim-key": "a [[dkim]] entry's key_file/key_env",
    "unsubscribe-secret": "the secret signing one-click unsubscribe tokens",
    "webhook-secret": "a webhook's signing secret",
}


@dataclass(frozen=True)
class Processor:
    name: str
    module: str  # holds ``register(rt: Runtime) -> None``
    reads: tuple[TopicSpec, ...]  # its agents' inputs (consumer group postlane-<name>)
    writes: tuple[TopicSpec, ...]
    follows: tuple[TopicSpec, ...] = (t.CONFIG,)  # read whole into a view, outside any group
    tables: tuple[TableSpec, ...] = ()
    secrets: tuple[str, ...] = ()
    scales: bool = True  # more workers of this name share its partitions
    outside: str = ""  # what it talks to besides the broker
    note: str = ""  # what the table cannot say (which records of an input it takes)

    @property
    def group(self) -> str:
        return f"postlane-{self.name}"


_DL = t.DEAD_LETTER
ALL: tuple[Processor, ...] = (
    Processor("router", "processors.router.agent",
              reads=(t.SEND_REQUESTED, t.SEND_REQUESTED_MASS),
              follows=(t.CONFIG, t.BLACKLIST),
              writes=(t.ROUTING_DECIDED, t.ROUTING_DECIDED_MASS, _DL)),
    Processor("limiter", "processors.limiter.agent",
              reads=(t.ROUTING_DECIDED, t.ROUTING_DECIDED_MASS, t.COMMANDS, t.DELIVERY,
                     t.QUOTA, t.QUOTA_ANSWERS),
              writes=(t.RELEASED, t.HELD, t.COMMAND_RESULTS, t.QUOTA, t.QUOTA_ANSWERS,
                      t.DELIVERY_QUOTA, _DL),
              tables=(T.LIMITER_MASS, T.LIMITER_HELD, T.LIMITER_METERS, T.LIMITER_QUOTA),
              note="not the router's `direct` decisions (delivery takes those)"),
    Processor("delivery", "processors.delivery.agent",
              reads=(t.RELEASED, t.ROUTING_DECIDED, t.DELIVERY_DUE, t.DELIVERY_QUOTA),
              writes=(t.DELIVERY, t.DELIVERY_DUE, t.COMMAND_RESULTS, t.QUOTA, _DL),
              tables=(T.DELIVERY_LEDGER,),
              secrets=("server-password", "dkim-key", "unsubscribe-secret"),
              outside="SMTP servers",
              note="of routing-decided only the router's `direct` decisions (no limit "
                   "applies)"),
    Processor("status", "processors.status.agent",
              reads=(t.SEND_REQUESTED, t.SEND_REQUESTED_MASS, t.ROUTING_DECIDED,
                     t.ROUTING_DECIDED_MASS, t.HELD, t.RELEASED, t.DELIVERY, t.COMMANDS,
                     t.COMMAND_RESULTS),
              follows=(),
              writes=(t.STATUS, t.COMMAND_RESULTS, _DL),
              tables=(T.STATUS,)),
    Processor("inbound", "processors.inbound.agent",
              reads=(t.INBOUND, t.INBOUND_THREADS, t.INBOUND_ALIASES, t.SENT_IDS,
                     t.ROUTING_DECIDED, t.ROUTING_DECIDED_MASS, t.DELIVERY),
              writes=(t.INBOUND_ROUTED, t.INBOUND_THREADS, t.INBOUND_ALIASES, t.SENT_IDS,
                      t.SEND_REQUESTED, t.BOUNCES, _DL),
              tables=(T.INBOUND_SEEN, T.SENT_INDEX, T.ALIAS_LOOPS, T.SENT_THREADS),
              secrets=("unsubscribe-secret",)),
    Processor("fetcher", "processors.fetcher.agent",
              reads=(t.INCOMING_STATUS,),
              writes=(t.INBOUND, t.INCOMING_STATUS),
              tables=(T.INCOMING_CHECKPOINTS, T.INCOMING_STATUS),
              secrets=("server-password",),
              outside="IMAP servers (each polled by the owner of its incoming-status "
                      "partition)"),
    Processor("ingress", "processors.ingress.agent",
              reads=(), writes=(t.INBOUND,), scales=False,
              outside="SMTP on POSTLANE_INGRESS_HOST:PORT (127.0.0.1:2526)"),
    Processor("bounces", "processors.bounces.agent",
              reads=(t.INBOUND_ROUTED, t.BOUNCE_MAIL, t.DELIVERY, t.BOUNCE_DOMAINS,
                     t.BOUNCE_ATTRIBUTION),
              writes=(t.BOUNCE_DOMAINS, t.BOUNCE_ATTRIBUTION, t.BOUNCES, _DL),
              tables=(T.BOUNCE_DOMAINS, T.BOUNCE_RECIPIENTS)),
    Processor("blacklist", "processors.blacklist.agent",
              reads=(t.BOUNCES,), follows=(),
              writes=(t.BLACKLIST, _DL),
              tables=(T.BLACKLIST,)),
    Processor("webhooks", "processors.webhooks.agent",
              reads=(t.ROUTING_DECIDED, t.ROUTING_DECIDED_MASS, t.DELIVERY, t.BOUNCES,
                     t.WEBHOOK_EVENTS),
              writes=(t.WEBHOOK_EVENTS, t.WEBHOOKS, _DL),
              tables=(T.WEBHOOK_TENANTS, T.WEBHOOK_OUTBOX),
              secrets=("webhook-secret",),
              outside="HTTP POSTs to the configured endpoints"),
)

BY_NAME: dict[str, Processor] = {p.name: p for p in ALL}
# name -> module holding ``register(rt: Runtime) -> None``
PROCESSORS: dict[str, str] = {p.name: p.module for p in ALL}


def owner_of(table: TableSpec) -> Processor:
    """The one processor that writes ``table``."""
    for p in ALL:
        if table in p.tables:
            return p
    raise KeyError(f"no processor owns the table {table.name!r}")


def available() -> list[str]:
    """Every processor's name (``postlane dev`` runs them all)."""
    return list(PROCESSORS)


def registrar(name: str) -> Callable[[Runtime], None]:
    if name not in PROCESSORS:
        raise KeyError(f"unknown processor {name!r}; known: {', '.join(PROCESSORS)}")
    module = importlib.import_module(PROCESSORS[name])
    fn: Callable[[Runtime], None] = module.register
    return fn


def _topics(specs: tuple[TopicSpec, ...]) -> str:
    """Topic names, a lane pair as ``x(-mass)``."""
    names = [s.name for s in specs]
    out = []
    for n in names:
        if n.endswith("-mass") and n[:-5] in names:
            continue
        out.append(f"{n}(-mass)" if f"{n}-mass" in names else n)
    return ", ".join(out) or "-"


def markdown() -> str:
    """The README's processor table."""
    rows = ["| processor | reads (group `postlane-NAME`) | follows | writes | tables owned "
            "(key -> value, encoding) | secrets | scales |",
            "|---|---|---|---|---|---|---|"]
    for p in ALL:
        reads = _topics(p.reads)
        if p.outside:
            reads = f"{reads}; {p.outside}" if p.reads else p.outside
        if p.note:
            reads = f"{reads} ({p.note})"
        owned = "; ".join(f"`{x.name}` ({x.key} -> {x.doc})" for x in p.tables)
        rows.append(f"| {p.name} | {reads} | {_topics(p.follows)} | {_topics(p.writes)} | "
                    f"{owned or '-'} | {', '.join(p.secrets) or '-'} | "
                    f"{'by partitions' if p.scales else 'one'} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - scripts/processor-table
    print(markdown(), end="")
