"""``postlane send --send-at``: the times a person types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from postlane.cli.send_cmd import parse_when


def test_send_at_accepts_iso_with_or_without_zone_and_unix_seconds() -> None:
    utc9 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC).timestamp()
    assert parse_when("2026-11-23T09:00") == utc9  # no zone: UTC
    assert parse_when("2026-11-23T10:00+01:00") == utc9
    assert parse_when(str(utc9)) == utc9
    assert parse_when("") == 0.0


def test_send_at_refuses_other_text_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_when("tomorrow")
    assert exc.value.code == 2
    assert "neither ISO 8601" in capsys.readouterr().err
