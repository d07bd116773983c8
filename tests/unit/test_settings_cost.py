"""The settings that decide the cost per mail: a bad codec is refused in
words when the settings are made; uvloop runs the workers' loops; the
worker's garbage collector is tuned."""

from __future__ import annotations

import asyncio
import gc

import pytest

from postlane.runner import tune_gc, use_event_loop
from streams.settings import Settings, SettingsError


def test_an_unknown_codec_is_refused_when_the_settings_are_read() -> None:
    with pytest.raises(SettingsError, match="POSTLANE_PRODUCER_COMPRESSION='lz5': use lz4"):
        Settings.from_env({"POSTLANE_PRODUCER_COMPRESSION": "lz5"})


def test_a_negative_background_linger_is_refused_in_words() -> None:
    with pytest.raises(SettingsError, match="POSTLANE_BACKGROUND_LINGER_MS=-5: milliseconds"):
        Settings.from_env({"POSTLANE_BACKGROUND_LINGER_MS": "-5"})
    assert Settings.from_env({"POSTLANE_BACKGROUND_LINGER_MS": "0"}).background_linger_ms == 0


def test_codecs_as_kafka_clients_take_them() -> None:
    assert Settings().compression_type == "zstd"
    assert Settings(producer_compression="lz4").compression_type == "lz4"
    assert Settings(producer_compression=" ZSTD ").compression_type == "zstd"
    assert Settings(producer_compression="none").compression_type is None


def test_workers_run_on_uvloop_unless_turned_off() -> None:
    import uvloop

    before = asyncio.get_event_loop_policy()
    try:
        use_event_loop(Settings(uvloop=False))
        assert asyncio.get_event_loop_policy() is before
        use_event_loop(Settings())
        loop = asyncio.new_event_loop()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    finally:
        asyncio.set_event_loop_policy(before)


def test_the_workers_collector_freezes_start_up_and_runs_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(Settings(gc_threshold=0))
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
        tune_gc(Settings())
        assert gc.get_threshold() == (Settings().gc_threshold, *before[1:])
        assert Settings().gc_threshold > 700  # Python's own default
        assert gc.get_freeze_count() > 1000  # the modules loaded so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
