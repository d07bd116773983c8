"""The packages are layered: schemas (events) < streams (settings, topics,
broker, secrets) < processors < postlane (CLI, console, tools). A module
never imports a layer above its own, also inside a function."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("schemas", "streams", "processors", "postlane")


def imported(path: Path) -> set[str]:
    """Top-level package names a module imports (absolute imports)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_no_module_imports_a_layer_above_its_own(layer: str) -> None:
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    wrong = {str(p.relative_to(ROOT)): sorted(imported(p) & above)
             for p in sorted((ROOT / layer).rglob("*.py")) if imported(p) & above}
    assert wrong == {}


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from postlane.secrets import x\n    return x\n")
    assert imported(module) == {"postlane"}


def test_every_path_the_readme_layout_names_exists() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("\n## ", text.index("## Layout") + 3)]
    named = {m for m in re.findall(r"`([\w./<>-]+)`", layout) if "/" in m or m.endswith(".py")}
    assert len(named) > 10
    missing = []
    for name in named:
        if "<name>" in name:
            continue
        candidates = [ROOT / name] + [p for p in ROOT.glob(f"*/**/{name}")
                                      if ".venv" not in p.parts]
        if not any(c.exists() for c in candidates):
            missing.append(name)
    assert missing == []


def test_the_readme_layout_names_every_part_of_the_tree() -> None:
    """The other way round: each top-level directory, each directory of
    tests/ and each module or package directly under processors/ (but the
    processors' own, ``processors/<name>/``) is in the Layout."""
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout"):text.index("\n## ", text.index("## Layout") + 3)]
    named = set(re.findall(r"`([\w./<>-]+)`", layout))
    parts = [f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")
             and not p.name.endswith(".egg-info") and p.name != "__pycache__"]
    parts += [f"tests/{p.name}" for p in (ROOT / "tests").iterdir()
              if p.is_dir() and p.name != "__pycache__"]
    parts += [p.name for p in (ROOT / "processors").glob("*.py") if p.name != "__init__.py"]
    # a processor's package is ``processors/<name>/`` (the processor table lists them)
    from processors.registry import PROCESSORS

    packages = {module.split(".")[1] for module in PROCESSORS.values()}
    parts += [f"{p.name}/" for p in (ROOT / "processors").iterdir()
              if p.is_dir() and p.name != "__pycache__" and p.name not in packages]
    def said(part: str) -> bool:
        return any(n == part or n.rstrip("/") == part.rstrip("/") or n.startswith(part)
                   or n in (f"processors/{part}", f"processors/{part}".rstrip("/"))
                   for n in named)

    missing = sorted(x for x in parts if not said(x))
    assert missing == [], "not in the README's Layout section"
