"""The uuid5 namespaces are in one module (schemas/ids.py), distinct, and
unchanged (a changed one gives new ids for the same causes)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from postlane.publisher import message_id_for
from schemas import ids

ROOT = Path(__file__).resolve().parents[2]
LITERAL = re.compile(r"uuid\.UUID\(\s*[\"']")
# files other engineers are changing now (the change is listed in notes/issue-19.md)
PENDING: set[str] = set()


def test_namespaces_are_distinct() -> None:
    assert len(ids.ALL) == 14
    assert len(set(ids.ALL.values())) == len(ids.ALL)


def _param(path: str) -> object:
    marks = [pytest.mark.xfail(strict=True, reason="declared in another engineer's file for now")
             ] if path in PENDING else []
    return pytest.param(path, id=path, marks=marks)


@pytest.mark.parametrize("path", [_param(str(p.relative_to(ROOT)))
                                  for package in ("schemas", "streams", "processors", "postlane")
                                  for p in sorted((ROOT / package).rglob("*.py"))
                                  if p.name != "ids.py"])
def test_no_namespace_outside_the_ids_module(path: str) -> None:
    assert not LITERAL.search((ROOT / path).read_text())


def test_an_id_is_the_same_as_before() -> None:
    # measured before the namespaces moved: the same request gives the same message id
    assert ids.derived(ids.PUBLISHED, "t\x00k") == uuid.uuid5(
        uuid.UUID("5b1d1c38-3d4e-4f43-9d53-6f1f5a0c2b17"), "t\x00k").hex
    assert message_id_for("k", "t") == ids.derived(ids.PUBLISHED, "t\x00k")
