"""The processor table (processors/registry.py) against the code, the
README and docker-compose.yml: a drift in any of them fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from processors import registry
from processors.registry import ALL, BY_NAME, SECRETS, Processor
from processors.runtime import make_runtime
from streams import tables, topics
from streams.app import create_app
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TOPIC_NAMES = {n: v.name for n, v in vars(topics).items() if isinstance(v, topics.TopicSpec)}
SECRET_READERS = {"require_password": "server-password", "resolve_password": "server-password",
                  "read_dkim_key": "dkim-key", "unsubscribe_secret": "unsubscribe-secret",
                  "webhook_secret": "webhook-secret"}
# shared by every processor: the config view (followed when used) and the runtime
NOT_FOLLOWED = {"processors.runtime", "processors.config.reader", "processors.config.view",
                "processors.registry"}


def built(name: str, data_dir: Path) -> Any:
    """A Faust app holding only ``name`` (not started)."""
    s = Settings(uvloop=False, data_dir=str(data_dir))
    rt = make_runtime(create_app(f"table-{name}", s), s)
    registry.registrar(name)(rt)
    return rt.app


def module_path(module: str) -> Path:
    p = ROOT / Path(*module.split("."))
    return p / "__init__.py" if p.is_dir() else p.with_suffix(".py")


def resolve(module: str, node: ast.ImportFrom) -> list[str]:
    """The processors.* modules an import names (relative ones resolved)."""
    if node.level:
        base = module.split(".")[:-node.level]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    if not target.startswith("processors"):
        return []
    out = [target] if module_path(target).exists() else []
    for alias in node.names:  # ``from . import core``
        sub = f"{target}.{alias.name}"
        if module_path(sub).exists():
            out.append(sub)
    return out


def closure(module: str) -> dict[str, ast.Module]:
    """Every processors.* module ``module`` imports, transitively."""
    seen: dict[str, ast.Module] = {}
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen or m in NOT_FOLLOWED or not module_path(m).exists():
            continue
        seen[m] = tree = ast.parse(module_path(m).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                todo.extend(resolve(m, node))
            elif isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names if a.name.startswith("processors."))
    return seen


def imported_names(trees: dict[str, ast.Module], module: str) -> set[str]:
    return {a.name for tree in trees.values() for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == module for a in node.names}


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_inputs_and_tables_are_the_declared_ones(p: Processor, tmp_path: Path) -> None:
    app = built(p.name, tmp_path)
    inputs = {name.removeprefix("postlane.") for agent in app.agents.values()
              for name in getattr(agent.channel, "topics", ())}
    assert inputs == {spec.name for spec in p.reads}
    assert set(app.tables) == {spec.name for spec in p.tables}
    s = Settings()
    for spec in p.tables:
        table = app.tables[spec.name]
        assert table.key_type is bytes, spec.name
        # the one row encoding: the bytes Rows made, held and logged as they are
        assert spec.value == tables.ROW_ENCODING, spec.name
        assert table.value_type is bytes and table.value_serializer == "raw", spec.name
        assert table.partitions == spec.partitions(s), spec.name
        assert table.use_partitioner == spec.use_partitioner, spec.name


@pytest.mark.parametrize("p", ALL, ids=lambda p: p.name)
def test_topics_and_secrets_its_modules_use_are_the_declared_ones(p: Processor) -> None:
    trees = closure(p.module)
    used = {TOPIC_NAMES[n] for n in imported_names(trees, "streams.topics") if n in TOPIC_NAMES}
    if any("rt.config" in module_path(m).read_text() for m in trees):
        used.add(topics.CONFIG.name)
    declared = {spec.name for spec in (*p.reads, *p.writes, *p.follows)}
    assert used == declared
    secrets = {SECRET_READERS[n] for n in imported_names(trees, "streams.secrets")
               if n in SECRET_READERS}
    assert secrets == set(p.secrets)
    assert set(p.secrets) <= set(SECRETS)


def test_every_table_has_one_owner() -> None:
    owners: dict[str, list[str]] = {}
    for p in ALL:
        for spec in p.tables:
            owners.setdefault(spec.name, []).append(p.name)
    assert owners == {spec.name: [owners[spec.name][0]] for spec in tables.ALL_TABLES}


def test_the_registry_is_the_table() -> None:
    assert list(registry.PROCESSORS) == [p.name for p in ALL] == registry.available()
    assert len(BY_NAME) == len(ALL)
    for p in ALL:
        assert callable(registry.registrar(p.name))
        assert p.scales == bool(p.reads), "only partitioned input scales by partitions"


def test_the_readme_table_is_generated_from_it() -> None:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- processor-table -->\n(.*?)<!-- /processor-table -->", text, re.S)
    assert m, "README: the processor table's markers are missing"
    assert m.group(1) == registry.markdown(), "run scripts/processor-table"


def test_docker_compose_runs_every_processor() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    workers = {name: svc for name, svc in services.items()
               if list(svc.get("command") or [])[:1] == ["worker"]}
    assert set(workers) == set(BY_NAME)
    for name, svc in workers.items():
        assert svc["command"] == ["worker", name]
        if BY_NAME[name].scales:
            # a fixed name, host or host port would stop `docker compose up --scale NAME=5`
            assert not {"container_name", "hostname", "ports"} & set(svc), name
