"""The README's `postlane route` examples give what the command gives with
the README's own configuration (they had drifted: issue 20)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import orjson
from click.testing import CliRunner

from postlane.cli import main

README = Path(__file__).parent.parent.parent / "README.md"


def test_readme_route_examples(tmp_path: Path) -> None:
    text = README.read_text()
    config = re.search(r"## Configuration is events\n\n```toml\n(.*?)```", text, re.S)
    assert config is not None
    (tmp_path / "postlane.toml").write_text(config.group(1))
    block = re.search(r"```sh\n(postlane route .*?)```", text, re.S)
    assert block is not None
    lines = block.group(1).strip().splitlines()
    assert len(lines) == 4
    for command, shown in zip(lines[::2], lines[1::2], strict=True):
        args = shlex.split(command)[1:]
        args[args.index("--config") + 1] = str(tmp_path / "postlane.toml")
        out = CliRunner().invoke(main, args)
        assert out.exit_code == 0, out.output
        got = orjson.loads(out.stdout)
        expected = orjson.loads(shown.replace(", ...}", "}"))
        assert {k: got[k] for k in expected} == expected, (command, got)
