"""Operator feedback on anomaly alerts (docs/detection.md "Feedback: what one mark changes"): the
contract's `feedback` event, what a `not_anomaly` or `missed` mark changes in the store's detector,
for how long and where, and that it survives checkpoints and replays."""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import replace

import pytest

from foundation.contract import Anomaly, Feedback, Rejection, decode_event, encode, format_ts, parse_ts
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig
from processors.core.effects import Effects
from processors.core.feedback import FeedbackBook, overlaps, week_position
from processors.core.monitor import AnomalyMonitor
from processors.core.windows import WindowResult
from tests.unit.test_detector import DAY, MIN, MONDAY, SPECS, Incident, simulate

WEEK = 7 * DAY


def _feedback(store: str = "s1", **fields: object) -> bytes:
    body = {"event_id": "fb-1", "type": "feedback", "store_id": store, "ts": "2026-03-18T10:00:00Z", **fields}
    return encode(body)


# --- the contract ---------------------------------------------------------------------------------


def test_a_not_anomaly_feedback_names_its_alert() -> None:
    ev = decode_event(_feedback(verdict="not_anomaly", alert_id="ano-1", note="a promotion", by="maria"))
    assert isinstance(ev, Feedback)
    assert (ev.verdict, ev.alert_id, ev.note, ev.by) == ("not_anomaly", "ano-1", "a promotion", "maria")
    assert ev.span_ms is None


def test_a_missed_feedback_names_its_period() -> None:
    ev = decode_event(
        _feedback(verdict="missed", window_start="2026-03-17T12:00:00Z", window_end="2026-03-17T13:30:00Z")
    )
    assert isinstance(ev, Feedback)
    assert ev.span_ms == (parse_ts("2026-03-17T12:00:00Z"), parse_ts("2026-03-17T13:30:00Z"))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"verdict": "not_anomaly"}, "a `not_anomaly` feedback needs the `alert_id`"),
        ({"verdict": "maybe", "alert_id": "a"}, "Invalid enum value 'maybe' - at `$.verdict`"),
        ({"alert_id": "a"}, "Object missing required field `verdict`"),
        ({"verdict": "missed"}, "a `missed` feedback needs `window_start` and `window_end`"),
        (
            {"verdict": "missed", "window_start": "2026-03-17T12:00:00Z"},
            "a `missed` feedback needs `window_start` and `window_end`",
        ),
        (
            {
                "verdict": "missed",
                "window_start": "2026-03-17T12:00:00Z",
                "window_end": "2026-03-17T12:00:00Z",
            },
            "`window_end` must be after `window_start`",
        ),
        (
            {
                "verdict": "missed",
                "window_start": "2026-03-17T12:00:00Z",
                "window_end": "2026-03-18T12:00:01Z",
            },
            "at most 24 hours",
        ),
        (
            {
                "verdict": "missed",
                "window_start": "2026-03-17T12:00:00+01:00",
                "window_end": "2026-03-17T13:00:00Z",
            },
            "`window_start` must be in UTC",
        ),
        (
            {"verdict": "missed", "window_start": "noon", "window_end": "2026-03-17T13:00:00Z"},
            "$.window_start",
        ),
        ({"verdict": "not_anomaly", "alert_id": ""}, "$.alert_id"),
        ({"verdict": "not_anomaly", "alert_id": "a", "note": "x" * 1001}, "$.note"),
        (
            {"verdict": "not_anomaly", "alert_id": "a", "by": 7},
            "Expected `str | null`, got `int` - at `$.by`",
        ),
    ],
)
def test_bad_feedback_is_rejected_with_one_clear_reason(fields: dict[str, object], reason: str) -> None:
    found = decode_event(_feedback(**fields))
    assert isinstance(found, Rejection)
    assert found.reason.startswith("invalid event: ")
    assert reason in found.reason


def test_a_feedback_event_changes_no_stock_and_is_archived_once() -> None:
    core = ShardCore(CoreConfig())
    raw = _feedback(verdict="not_anomaly", alert_id="ano-unknown")
    assert core.apply(raw, partition_key="s1")
    assert not core.apply(raw, partition_key="s1")  # the same (store, event_id): a duplicate
    out = core.drain()
    assert out.archive == [raw]
    assert core.inventory() == {}
    assert core.stats.duplicates_ignored == 1
    assert core.state.monitor is not None
    assert core.state.monitor.feedback.counts == {"no_detector": 1}  # a store without detector
