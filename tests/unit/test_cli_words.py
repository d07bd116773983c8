"""What the CLI prints, in words (issue 20's smaller items)."""

from __future__ import annotations

from postlane.cli.status_cmd import _answer


def test_the_enhanced_code_is_said_once() -> None:
    assert _answer({"code": 550, "enhanced": "5.1.1", "text": "5.1.1 user unknown"}) == \
        "550 5.1.1 user unknown"
    assert _answer({"code": 250, "enhanced": "2.0.0", "text": "Ok: queued as X1"}) == \
        "250 2.0.0 Ok: queued as X1"
    assert _answer({"code": 421, "enhanced": "", "text": ""}) == "421"
