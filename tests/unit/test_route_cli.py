"""``postlane route``: offline routing check from a config file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from postlane.cli import main
from postlane.cli.route import route

CONFIG = """
[settings]
default_from = "notifications"
catchall_domain = "mycompany.com"

[[servers]]
name = "primary"
host = "smtp.example.com"
from_filter = "example.com"
password_env = "SMTP_PASSWORD"

[[servers]]
name = "acme-only"
host = "smtp.acme.test"
tenant = "acme"
kind = "mass"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> str:
    p = tmp_path / "postlane.toml"
    p.write_text(CONFIG, encoding="utf-8")
    return str(p)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(route, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_domain_match(cfg: str) -> None:
    code, out, _ = run("--config", cfg, "--from", "Admin <admin@Example.com>", "--json")
    assert code == 0
    data = json.loads(out)
    assert data == {
        "server": "primary",
        "from": "Admin <admin@Example.com>",
        "envelope_from": "bounce+route-check@mycompany.com",
        "rule": "from_filter_domain",
        "reason": data["reason"],
    }
    assert "example.com" in data["reason"]


def test_json_rewrite_to_notifications(cfg: str) -> None:
    code, out, _ = run("--config", cfg, "--from", '"Bob" <bob@elsewhere.org>', "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["server"], data["rule"]) == ("primary", "first_server")
    assert data["from"] == '"Bob" <notifications@mycompany.com>'


def test_readable_line(cfg: str) -> None:
    code, out, _ = run("--config", cfg, "--from", "admin@example.com")
    assert code == 0
    assert "server primary (from_filter_domain)" in out
    assert "bounce+route-check@mycompany.com" in out


def test_no_server_exit_1(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[[servers]]\nname = "a"\nhost = "h.test"\ntenant = "acme"\n', encoding="utf-8")
    code, out, _ = run("--config", str(p), "--from", "x@y.com", "--tenant", "globex", "--json")
    assert code == 1
    data = json.loads(out)
    assert data["server"] is None and data["rule"] == "none"
    assert "'a' only serves tenant 'acme'" in data["reason"]
    code, out, _ = run("--config", str(p), "--from", "x@y.com")
    assert code == 1 and out.startswith("no server:")


def test_tenant_and_kind(cfg: str) -> None:
    args = ("--config", cfg, "--from", "x@acme.test", "--json")
    code, out, _ = run(*args, "--tenant", "acme", "--kind", "mass")
    assert (code, json.loads(out)["server"]) == (0, "acme-only")
    code, out, _ = run(*args, "--tenant", "acme")
    assert (code, json.loads(out)["server"]) == (0, "primary")


def test_config_error_exit_2(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text(
        '[[servers]]\nname = "a"\nhost = "h.test"\npassword = "s3cret"\n', encoding="utf-8"
    )
    code, out, err = run("--config", str(p), "--from", "x@y.com")
    assert code == 2 and out == ""
    assert "password_env" in err and "s3cret" not in err
    code, _, err = run("--config", str(tmp_path / "missing.toml"), "--from", "x@y.com")
    assert code == 2 and "cannot read" in err


def test_bad_from_exit_2(cfg: str) -> None:
    code, _, err = run("--config", cfg, "--from", "not an address")
    assert code == 2 and "from" in err


def test_registered_on_main(cfg: str) -> None:
    result = CliRunner().invoke(main, ["route", "--config", cfg, "--from", "a@example.com"])
    assert result.exit_code == 0, result.output
    assert "primary" in result.stdout
