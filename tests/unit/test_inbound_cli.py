"""``postlane inbound route FILE.eml --config ... [--sent-ids FILE] --json``."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from postlane.cli.inbound_cmd import inbound

CONFIG = """
[settings]
catchall_domain = "mycompany.com"
allowed_domains = "mycompany.com, mycompany.eu"
loop_minutes = 120
loop_threshold = 20
loop_allowed_senders = "robot@partner.com"
[[aliases]]
alias = "sales"
target = "crm.lead"
tenant = ""
policy = "everyone"
"""


def run(tmp_path: Path, mail: bytes, *extra: str) -> tuple[int, dict[str, object]]:
    (tmp_path / "postlane.toml").write_text(CONFIG)
    eml = tmp_path / "in.eml"
    eml.write_bytes(mail)
    result = CliRunner().invoke(inbound, ["route", str(eml), "--config",
                                          str(tmp_path / "postlane.toml"), "--json", *extra])
    return result.exit_code, orjson.loads(result.output)


def test_alias(tmp_path: Path) -> None:
    code, out = run(tmp_path, b"From: a@client.org\r\nCc: sales@mycompany.eu\r\n\r\nhi\r\n")
    assert code == 0
    assert (out["route"], out["target"]) == ("alias", "crm.lead")
    assert out["reason"]


def test_reply_with_sent_ids_file(tmp_path: Path) -> None:
    sent = tmp_path / "sent.txt"
    sent.write_text("<other@mycompany.com>\n<abc@mycompany.com>\n")
    mail = (b"From: a@client.org\r\nTo: wrong@nowhere.org\r\nReferences: <x@y.org>\r\n"
            b" <abc@mycompany.com>\r\n\r\nhi\r\n")
    code, out = run(tmp_path, mail, "--sent-ids", str(sent))
    assert code == 0 and out["route"] == "reply" and out["target"] == "<abc@mycompany.com>"
    code, out = run(tmp_path, mail)
    assert code == 1 and out["route"] == "reject"


def test_malformed_is_a_decision_not_a_crash(tmp_path: Path) -> None:
    code, out = run(tmp_path, b"\x00garbage")
    assert code == 1 and out["route"] == "reject" and "malformed" in str(out["reason"])


def test_bad_config_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[[aliases]]\nalias = 'a b'\ntarget = 'x'\n")
    eml = tmp_path / "in.eml"
    eml.write_bytes(b"From: a@b.org\r\n\r\n")
    result = CliRunner().invoke(inbound, ["route", str(eml), "--config",
                                          str(tmp_path / "bad.toml")])
    assert result.exit_code == 2 and "alias" in result.output
