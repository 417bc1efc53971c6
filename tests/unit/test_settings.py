"""Settings in groups: read from SHELFSTREAM_<GROUP>__<NAME>, the flat names of earlier releases still
read, the core's configs derived in one place from defaults written once, mistakes reported as one line
naming the variable, and docs/settings.md written from the models."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from config import Settings, SettingsFault, core_config, load_settings, reference
from config.legacy import FLAT_NAMES
from config.settings import env_name, members, to_env
from processors.core import CoreConfig
from processors.core.detectors import DetectorConfig
from shelfstream.cli import main

CORE_GROUPS = ("restock", "dedup", "windows", "detector")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SHELFSTREAM_"):
            monkeypatch.delenv(name)


def _other(value: Any) -> Any:
    """A valid value different from a default (every core setting's constraints allow these)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.9
    if isinstance(value, tuple):
        return tuple(v - 1 for v in value)
    return {"seasonal": "hst", "forecast": "threshold"}[value]


def test_the_core_configs_defaults_are_the_settings_defaults() -> None:
    assert core_config(load_settings()) == CoreConfig()
    assert core_config(load_settings(), archive=False) == CoreConfig(archive=False)


def test_every_core_setting_reaches_the_core_and_every_core_field_has_a_setting() -> None:
    """Each member of the core's groups changed at once: every field of CoreConfig, RestockConfig and
    DetectorConfig (but `archive`, a caller's choice) must come out changed, so none is left unsettable
    and none is wired to the wrong field."""
    groups = members()
    changed: dict[str, dict[str, Any]] = {}
    for group in CORE_GROUPS:
        changed[group] = {m: _other(info.get_default()) for m, info in groups[group].items()}
    changed["processor"] = {"store_retention_s": 10}
    derived = core_config(Settings(**changed))  # type: ignore[arg-type]
    defaults = CoreConfig()
    for config, default in (
        (derived, defaults),
        (derived.restock, defaults.restock),
        (derived.detection, defaults.detection),
    ):
        for field in dataclasses.fields(config):
            if field.name in {"archive", "detection", "restock"}:
                continue
            assert getattr(config, field.name) != getattr(default, field.name), field.name


def test_seconds_become_the_cores_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFSTREAM_WINDOWS__LATE_BOUND_S", "7200")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__COOLDOWN_S", "600")
    monkeypatch.setenv("SHELFSTREAM_RESTOCK__LEAD_TIME_PRIOR_S", "1.5")
    config = core_config(load_settings())
    assert config.late_bound_ms == 7_200_000
    assert config.detection.cooldown_ms == 600_000
    assert config.restock.lead_time_prior_ms == 1500


def test_detector_settings_are_settable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__KIND", "naive")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__THRESHOLD", "5.5")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__PEER_DROPS", "true")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__STATIC_HOURS", "[9, 17]")
    detection = core_config(load_settings()).detection
    assert detection == dataclasses.replace(
        DetectorConfig(), kind="naive", threshold=5.5, peer_drops=True, static_hours=(9, 17)
    )


def test_a_flag_overrides_one_member_and_keeps_the_groups_other_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__KIND", "hst")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__THRESHOLD", "6")
    settings = load_settings(detector={"kind": "off"})
    assert (settings.detector.kind, settings.detector.threshold) == ("off", 6.0)


def test_the_backtest_detector_flag_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHELFSTREAM_DETECTOR__KIND", "not-a-detector")
    source = tmp_path / "e.jsonl"
    source.write_text(
        '{"event_id": "e1", "type": "count", "store_id": "s", "ts": "2026-08-01T10:00:00Z", '
        '"product_id": "p", "count": 3}\n'
    )
    assert main(["backtest", str(source), "--out", str(tmp_path / "o"), "--detector", "off"]) == 0


def test_flat_names_of_earlier_releases_still_work_and_are_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SHELFSTREAM_STREAM_NAME", "prod-events")
    monkeypatch.setenv("SHELFSTREAM_TRUCKS", "7")
    monkeypatch.setenv("SHELFSTREAM_DETECTOR", "threshold")
    monkeypatch.setenv("SHELFSTREAM_TRAVEL_PAIRS", '{"a|b": 3}')
    monkeypatch.setenv("SHELFSTREAM_LATE_BOUND_S", "60")
    monkeypatch.setattr("config.settings._warned", set())
    with caplog.at_level(logging.WARNING, logger="config.settings"):
        first = load_settings()
        again = load_settings()
    assert first == again
    assert first.aws.stream_name == "prod-events"
    assert first.trucks.count == 7
    assert first.trucks.travel_pairs_s == {"a|b": 3.0}
    assert first.detector.kind == "threshold"
    assert core_config(first).late_bound_ms == 60_000
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "SHELFSTREAM_STREAM_NAME -> SHELFSTREAM_AWS__STREAM_NAME" in lines[0]


def test_the_grouped_name_wins_over_the_flat_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFSTREAM_BUCKET", "old")
    monkeypatch.setenv("SHELFSTREAM_AWS__BUCKET", "new")
    assert load_settings().aws.bucket == "new"


def test_every_flat_name_points_at_a_member() -> None:
    groups = members()
    assert all(member in groups[group] for group, member in FLAT_NAMES.values())
    assert len(set(FLAT_NAMES.values())) == len(FLAT_NAMES)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "SHELFSTREAM_AWS__SHARD_COUNT",
            "zero",
            "bad setting SHELFSTREAM_AWS__SHARD_COUNT=zero: Input should be a valid integer",
        ),
        (
            "SHELFSTREAM_WINDOWS__LATE_BOUND_S",
            "-5",
            "bad setting SHELFSTREAM_WINDOWS__LATE_BOUND_S=-5: Input should be greater than or equal to 0",
        ),
        (
            "SHELFSTREAM_LATE_BOUND_S",
            "-5",
            "bad setting SHELFSTREAM_LATE_BOUND_S=-5: Input should be greater than or equal to 0",
        ),
        (
            "SHELFSTREAM_DETECTOR__TRESHOLD",
            "5",
            "unknown setting SHELFSTREAM_DETECTOR__TRESHOLD: the detector group has no member 'treshold' "
            "(did you mean SHELFSTREAM_DETECTOR__THRESHOLD?)",
        ),
        (
            "SHELFSTREAM_DETECTR__THRESHOLD",
            "5",
            "unknown setting SHELFSTREAM_DETECTR__THRESHOLD: the groups are",
        ),
        ("SHELFSTREAM_AWS", '{"bucket": "b"}', "SHELFSTREAM_AWS sets a whole group: set its members"),
        (
            "SHELFSTREAM_TRUCKS__TRAVEL_PAIRS_S",
            "a|b=3",
            "bad setting SHELFSTREAM_TRUCKS__TRAVEL_PAIRS_S=a|b=3: not valid JSON",
        ),
        (
            "SHELFSTREAM_DETECTOR",
            "bogus",
            "bad setting SHELFSTREAM_DETECTOR=bogus: Input should be 'seasonal'",
        ),
    ],
)
def test_a_mistake_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    name: str,
    value: str,
    expected: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsFault) as caught:
        load_settings()
    assert str(caught.value).startswith(expected)
    source = tmp_path / "e.jsonl"
    source.write_text("")
    assert main(["backtest", str(source), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"shelfstream: error: {expected}")


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.aws.bucket = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        settings.aws = settings.aws  # type: ignore[misc]


def test_replaced_validates_like_the_environment() -> None:
    settings = load_settings()
    assert settings.replaced(aws={"shard_count": 2}).aws.shard_count == 2
    assert settings.replaced(aws={"shard_count": 2}).aws.bucket == settings.aws.bucket
    with pytest.raises(ValidationError):
        settings.replaced(windows={"late_bound_s": -1})


@hyp_settings(max_examples=40, deadline=None)
@given(
    stream=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
    shards=st.integers(1, 500),
    patience=st.floats(0, 1e6, allow_nan=False),
    pairs=st.dictionaries(st.from_regex(r"[a-z0-9]{1,5}\|[a-z0-9]{1,5}", fullmatch=True), st.floats(0, 1e4)),
    limits=st.booleans(),
)
def test_to_env_gives_another_process_the_same_settings(
    stream: str, shards: int, patience: float, pairs: dict[str, float], limits: bool
) -> None:
    settings = Settings(
        aws={"stream_name": stream, "shard_count": shards, "embedded_kinesis_limits": limits},
        processor={"idle_shard_patience_s": patience},
        trucks={"travel_pairs_s": pairs},
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in to_env(settings).items():
            mp.setenv(name, value)
        assert load_settings() == settings


def test_every_setting_has_a_description_and_its_variable_is_in_the_reference() -> None:
    text = reference.render()
    for group, fields in members().items():
        for member, info in fields.items():
            assert info.description, env_name(group, member)
            assert f"| `{env_name(group, member)}` |" in text


def test_docs_settings_md_is_current() -> None:
    assert reference.DOC.read_text(encoding="utf-8") == reference.render(), (
        "docs/settings.md is stale: run python -m config.reference"
    )


def test_the_reference_command_checks_and_writes(tmp_path: Path) -> None:
    out = tmp_path / "settings.md"
    assert reference.main(["--check", "--out", str(out)]) == 1
    assert reference.main(["--out", str(out)]) == 0
    assert reference.main(["--check", "--out", str(out)]) == 0
