"""The labelled benchmark: scenario generator, incident-level scoring, and detection through `backtest`."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from benchmarks.detect import AlertWindow, Outcome, evaluate, read_anomalies
from benchmarks.scenario import MIN_VISIBILITY, Incident, ScenarioConfig, generate, read_labels, write
from foundation.contract import Rejection, decode_event, parse_ts
from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.backtest import run_backtest
from processors.core import CoreConfig
from processors.core.detectors import DetectorConfig

T0 = 1_773_043_200_000  # 2026-03-09T08:00:00Z


# --- scoring ------------------------------------------------------------------------------------


def _inc(store: str, start_min: int, end_min: int, kind: str = "sales_collapse") -> Incident:
    return Incident(store, kind, T0 + start_min * MINUTE_MS, T0 + end_min * MINUTE_MS, 0.1, 30.0, 9.0)


def _alert(store: str, start_min: int, end_min: int) -> AlertWindow:
    return AlertWindow(store, T0 + start_min * MINUTE_MS, T0 + end_min * MINUTE_MS, "sales")


def test_incidents_are_scored_by_overlap_delay_and_false_groups() -> None:
    incidents = [_inc("a", 10, 70), _inc("b", 100, 130, "refund_burst"), _inc("c", 0, 30)]
    alerts = [
        _alert("a", 15, 30),  # detects a: closes at 30 + 2 minutes of lateness, 22 minutes in
        _alert("a", 0, 60),  # overlaps a as well: still one detection
        _alert("b", 200, 215),  # b is at another time: false
        _alert("b", 215, 230),  # ... and this one belongs to the same false incident
        _alert("b", 400, 415),  # a second false incident
        _alert("c", 30, 45),  # starts when c ends: no overlap, false
    ]
    out = evaluate(alerts, incidents, eval_start_ms=T0, store_days=50, lateness_ms=2 * MINUTE_MS)
    assert (out.incidents, out.detected, out.false_incidents) == (3, 1, 3)
    assert out.delays_min == [22.0]
    assert out.recall == pytest.approx(1 / 3)
    assert out.precision == pytest.approx(1 / 4)
    assert out.f1 == pytest.approx(2 * (1 / 3) * (1 / 4) / (1 / 3 + 1 / 4))
    assert out.false_per_100_store_days == pytest.approx(6.0)
    assert out.by_kind == {"sales_collapse": [1, 2], "refund_burst": [0, 1]}


def test_incidents_and_alerts_before_the_evaluation_are_left_out() -> None:
    incidents = [_inc("a", 10, 70)]
    alerts = [_alert("a", 0, 15), _alert("z", -60, -45)]
    out = evaluate(alerts, incidents, eval_start_ms=T0 + 80 * MINUTE_MS, store_days=10, lateness_ms=0)
    assert (out.incidents, out.detected, out.false_incidents, out.alerts) == (0, 0, 0, 0)
    assert out.f1 == 0.0


def test_outcomes_add_up_over_seeds() -> None:
    a = Outcome(incidents=4, detected=3, false_incidents=1, store_days=100, delays_min=[10.0, 20.0])
    b = Outcome(incidents=6, detected=6, false_incidents=0, store_days=100, delays_min=[30.0])
    a.add(b)
    assert (a.incidents, a.detected, a.false_incidents, a.store_days) == (10, 9, 1, 200)
    assert a.median_delay_min == 20.0
    assert a.row()["false_per_100_store_days"] == 0.5


# --- the generator ---------------------------------------------------------------------------------

SMALL = ScenarioConfig(seed=21, stores=3, days=22, warmup_days=14, incidents_per_store_week=2.0)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenario")
    write(SMALL, out)
    return out


def test_the_generator_is_deterministic_per_seed() -> None:
    config = ScenarioConfig(seed=5, stores=2, days=3, warmup_days=1)
    first_scn, first = generate(config)
    _, second = generate(config)
    _, other = generate(ScenarioConfig(seed=6, stores=2, days=3, warmup_days=1))
    assert first == second
    assert first != other
    assert first_scn.events == len(first)


def test_labels_are_visible_incidents_in_opening_hours_after_the_warm_up(scenario: Path) -> None:
    meta = json.loads((scenario / "meta.json").read_text())
    incidents = read_labels(scenario / "labels.jsonl")
    assert len(incidents) >= 3
    assert {i.kind for i in incidents} <= {"refund_burst", "sales_collapse", "sales_spike"}
    for inc in incidents:
        assert inc.start_ms >= meta["eval_start_ms"]
        assert inc.visibility >= MIN_VISIBILITY
        assert 0 < inc.end_ms - inc.start_ms <= 4 * 60 * MINUTE_MS
        hours = meta["stores"][inc.store_id]["hours"][((inc.start_ms - meta["start_ms"]) // DAY_MS) % 7]
        minute = (inc.start_ms % DAY_MS) / MINUTE_MS
        assert hours is not None
        assert hours[0] * 60 <= minute < hours[1] * 60
    assert meta["eval_store_days"] <= SMALL.stores * (SMALL.days - SMALL.warmup_days)


def test_events_come_in_arrival_order_with_duplicates_and_late_ones(scenario: Path) -> None:
    lines = (scenario / "events.jsonl").read_bytes().splitlines()
    events = [e for e in map(decode_event, lines) if not isinstance(e, Rejection)]
    assert len(events) == len(lines)  # every generated line is valid
    ids = [e.event_id for e in events]
    assert len(ids) > len(set(ids))  # a few redeliveries
    times = [e.ts_ms for e in events]
    newest = 0
    late = 0
    for ts in times:
        if ts < newest - 2 * MINUTE_MS:
            late += 1
        newest = max(newest, ts)
    assert late > 0  # a few arrive beyond the allowed lateness
    assert late < len(times) / 100


# --- through backtest ------------------------------------------------------------------------------


def test_backtest_detects_the_labelled_incidents(scenario: Path, tmp_path: Path) -> None:
    result = run_backtest(str(scenario / "events.jsonl"), str(tmp_path), CoreConfig(archive=False))
    meta = json.loads((scenario / "meta.json").read_text())
    incidents = read_labels(scenario / "labels.jsonl")
    alerts = read_anomalies(tmp_path / "alerts.jsonl")
    outcome = evaluate(alerts, incidents, meta["eval_start_ms"], meta["eval_store_days"], 2 * MINUTE_MS)
    assert outcome.recall >= 0.6, outcome.row()  # 3 of 5 here (docs/detection.md: the loss on this benchmark)
    assert outcome.false_incidents <= 1, outcome.row()
    assert isinstance(result.summary["late_events"], int)
    # The scenario's late sales (minutes behind) are within the late bound: counted in their windows,
    # which are emitted again as revisions, not left out as before
    assert result.summary["late_events"] == 0
    assert b'"revision":1' in (tmp_path / "windows.jsonl").read_bytes()
    assert result.summary["alerts"]["anomaly"] == len(alerts)  # type: ignore[index]
    windows = (tmp_path / "windows.jsonl").read_bytes().splitlines()
    # (revisions repeat a window, with late sales added)
    quarters = [orjson.loads(w) for w in windows if b'"tumbling"' in w and b'"revision"' not in w]
    # One 15-minute window per store per quarter-hour, nights and closed Sundays included.
    assert len(quarters) >= SMALL.stores * (SMALL.days - 1) * 96
    starts = {(q["store_id"], q["window_start"]) for q in quarters}
    assert len(starts) == len(quarters)
    assert all(parse_ts(q["window_end"]) - parse_ts(q["window_start"]) == 15 * MINUTE_MS for q in quarters)


@pytest.mark.slow  # seconds each: in `make test`, not the fast lane
def test_the_baselines_run_through_backtest_too(scenario: Path, tmp_path: Path) -> None:
    for kind in ("threshold", "hst"):
        out = tmp_path / kind
        run_backtest(
            str(scenario / "events.jsonl"), str(out), CoreConfig(detection=DetectorConfig(kind=kind))
        )
        alerts = read_anomalies(out / "alerts.jsonl")
        assert alerts, kind
        assert all(a.metric in ("sales", "refunds") for a in alerts)
