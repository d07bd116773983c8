"""The processors a worker can run, by name (``postlane worker NAME...``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .runtime import Runtime

# name -> module holding ``register(rt: Runtime) -> None``
PROCESSORS: dict[str, str] = {
    "router": "processors.router.agent",
    "limiter": "processors.limiter.agent",
    "delivery": "processors.delivery.agent",
    "status": "processors.status.agent",
    "inbound": "processors.inbound.agent",
    "fetcher": "processors.fetcher.agent",
    "ingress": "processors.ingress.agent",
    "bounces": "processors.bounces.agent",
    "blacklist": "processors.blacklist.agent",
    "webhooks": "processors.webhooks.agent",
}


def available() -> list[str]:
    out = []
    for name, module in PROCESSORS.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise
            continue
        out.append(name)
    return out


def registrar(name: str) -> Callable[[Runtime], None]:
    if name not in PROCESSORS:
        raise KeyError(f"unknown processor {name!r}; known: {', '.join(PROCESSORS)}")
    module = importlib.import_module(PROCESSORS[name])
    fn: Callable[[Runtime], None] = module.register
    return fn
