"""Operator feedback on anomaly alerts (docs/detection.md "Feedback: what one mark changes"): the
contract's `feedback` event, what a `not_anomaly` or `missed` mark changes in the store's detector,
for how long and where, and that it survives checkpoints and replays."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from foundation.contract import Anomaly, Feedback, Rejection, decode_event, encode, format_ts, parse_ts
from processors.backtest import run_backtest
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig, Finding, SeasonalDetector
from processors.core.effects import Effects
from processors.core.feedback import FeedbackBook, Raised, Rule, overlaps, week_position
from processors.core.monitor import AnomalyMonitor
from processors.core.partition import merge, split
from processors.core.windows import WindowResult
from tests.unit.stored import encoded
from tests.unit.test_detector import DAY, MIN, MONDAY, SPECS, Incident, simulate

HOUR = 60 * MIN

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


# --- what a mark changes --------------------------------------------------------------------------

SPIKE = Incident(15, 15 * 60 + 30, 16 * 60 + 30, "spike", 3.0)  # a Tuesday afternoon, 3x the sales


def _event(store: str = "s1", **fields: object) -> Feedback:
    ev = decode_event(_feedback(store, **fields))
    assert isinstance(ev, Feedback), ev
    return ev


def _day(alert: Anomaly) -> int:
    return (parse_ts(alert.window_start) - MONDAY) // DAY


def watch_marked(
    windows: list[WindowResult],
    marks: list[tuple[int, object]],
    config: DetectorConfig | None = None,
    monitor: AnomalyMonitor | None = None,
) -> tuple[AnomalyMonitor, list[Anomaly]]:
    """Feed a monitor the windows; before the first window ending after each mark's time, the
    operator marks: ("not_anomaly", day) marks the first alert of that day, a Feedback is applied
    as it is."""
    monitor = monitor or AnomalyMonitor(config or DetectorConfig(), SPECS)
    out, counts = Effects(), Counter[str]()
    pending = sorted(marks, key=lambda m: m[0])
    for w in windows:
        while pending and w.end_ms > pending[0][0]:
            _, what = pending.pop(0)
            if isinstance(what, tuple):
                first = next(a for a in out.alerts if isinstance(a, Anomaly) and _day(a) == what[1])
                what = _event(verdict="not_anomaly", alert_id=first.alert_id)
            assert isinstance(what, Feedback)
            assert monitor.apply_feedback(what) == "applied"
        monitor.window_closed(w, out, counts)
    return monitor, [a for a in out.alerts if isinstance(a, Anomaly)]


def _sales_alert_days(alerts: list[Anomaly], hour: int) -> set[int]:
    """Days with a sales alert in the given local hour (UTC here)."""
    return {_day(a) for a in alerts if a.metric == "sales" and int(a.window_start[11:13]) in (hour, hour + 1)}


AFTER_SPIKE = MONDAY + 16 * DAY  # the next morning: the operator looks at yesterday's alert


def test_not_anomaly_silences_the_same_deviation_in_the_same_local_hours_next_week() -> None:
    again = replace(SPIKE, day=22)  # the same promotion, a week later
    windows = simulate(24, seed=5, incidents=(SPIKE, again))
    _, unmarked = watch_marked(windows, [])
    assert _sales_alert_days(unmarked, 15) == {15, 22}  # without the mark, it pages both weeks
    monitor, marked = watch_marked(windows, [(AFTER_SPIKE, ("not_anomaly", 15))])
    assert _sales_alert_days(marked, 15) == {15}  # with it, the second is ordinary
    assert monitor.feedback.counts == {"applied": 1}


def test_not_anomaly_leaves_other_hours_and_bigger_deviations_alerting() -> None:
    elsewhere = Incident(22, 10 * 60 + 30, 11 * 60 + 30, "spike", 3.0)  # the same size, in the morning
    bigger = Incident(29, 15 * 60 + 30, 16 * 60 + 30, "spike", 8.0)  # the same hours, far bigger
    windows = simulate(31, seed=5, incidents=(SPIKE, elsewhere, bigger))
    _, marked = watch_marked(windows, [(AFTER_SPIKE, ("not_anomaly", 15))])
    assert 22 in _sales_alert_days(marked, 10)
    assert 29 in _sales_alert_days(marked, 15)


def test_not_anomaly_leaves_another_metric_alerting() -> None:
    refunds = Incident(22, 15 * 60 + 30, 16 * 60 + 30, "refunds", 30.0)  # a refund burst in those hours
    windows = simulate(24, seed=5, incidents=(SPIKE, refunds))
    _, marked = watch_marked(windows, [(AFTER_SPIKE, ("not_anomaly", 15))])
    assert any(a.metric == "refunds" and _day(a) == 22 for a in marked)


def test_a_mark_expires_after_its_weeks() -> None:
    weeks_later = (replace(SPIKE, day=22), replace(SPIKE, day=29))
    windows = simulate(31, seed=5, incidents=(SPIKE, *weeks_later))
    _, one_week = watch_marked(
        windows, [(AFTER_SPIKE, ("not_anomaly", 15))], DetectorConfig(feedback_weeks=1)
    )
    assert _sales_alert_days(one_week, 15) == {15, 29}  # day 22 is within the week, day 29 is not
    _, two_weeks = watch_marked(
        windows, [(AFTER_SPIKE, ("not_anomaly", 15))], DetectorConfig(feedback_weeks=2)
    )
    assert _sales_alert_days(two_weeks, 15) == {15}


def test_missed_lowers_the_bar_of_a_drop_in_those_hours() -> None:
    collapse = Incident(15, 12 * 60, 13 * 60 + 30, "collapse", 0.4)  # 60% of lunch sales gone
    windows = simulate(24, seed=5, incidents=(collapse, replace(collapse, day=22)))
    _, unmarked = watch_marked(windows, [])
    assert 22 not in _sales_alert_days(unmarked, 12)  # the second week's is not caught ...
    period = {"window_start": format_ts(MONDAY + 15 * DAY + 12 * 60 * MIN)}
    period["window_end"] = format_ts(MONDAY + 15 * DAY + 13 * 60 * MIN + 30 * MIN)
    monitor, marked = watch_marked(windows, [(AFTER_SPIKE, _event(verdict="missed", **period))])
    assert 22 in _sales_alert_days(marked, 12)  # ... once that period was marked as missed
    alert = next(a for a in marked if _day(a) == 22)
    assert alert.observed < alert.expected[0]  # a drop: the direction the period showed
    (rule,) = monitor.feedback.rules["s1"].values()
    assert rule[:3] == ("keen", "sales", "low")


def test_missed_without_the_hours_kept_lowers_every_direction() -> None:
    book = FeedbackBook(DetectorConfig(), 15 * MIN)
    assert book.missed("s1", MONDAY, MONDAY + HOUR, 0) == (
        ("sales", "low"),
        ("sales", "high"),
        ("refunds", "high"),
    )
    book.saw("s1", MONDAY + 2 * DAY, 30.0, (10.0, 20.0), 0.0, (0.0, 2.0))  # busier than expected
    assert book.missed("s1", MONDAY + 2 * DAY, MONDAY + 2 * DAY + HOUR, 0) == (("sales", "high"),)


def test_an_unknown_alert_changes_nothing_and_is_counted() -> None:
    windows = simulate(17, seed=5, incidents=(SPIKE,))
    monitor, _ = watch_marked(windows, [])
    before = encoded(monitor.feedback.rules, dict[str, dict[str, Rule]])
    assert monitor.apply_feedback(_event(verdict="not_anomaly", alert_id="ano-not-ours")) == "unknown_alert"
    assert monitor.apply_feedback(_event("s9", verdict="not_anomaly", alert_id="ano-x")) == "no_detector"
    assert encoded(monitor.feedback.rules, dict[str, dict[str, Rule]]) == before
    assert monitor.feedback.counts == {"unknown_alert": 1, "no_detector": 1}


def test_the_same_feedback_twice_changes_nothing_the_second_time() -> None:
    windows = simulate(17, seed=5, incidents=(SPIKE,))
    monitor, alerts = watch_marked(windows, [])
    mark = _event(verdict="not_anomaly", alert_id=alerts[0].alert_id)
    monitor.apply_feedback(mark)
    marks = tuple[dict[str, dict[str, Rule]], dict[str, dict[str, Raised]]]
    once = encoded((monitor.feedback.rules, monitor.feedback.raised), marks)
    monitor.apply_feedback(mark)  # a replay past the dedup's horizon
    assert encoded((monitor.feedback.rules, monitor.feedback.raised), marks) == once


def test_alerts_are_remembered_for_a_bounded_time_and_number() -> None:
    book = FeedbackBook(DetectorConfig(feedback_alerts_kept=3), 15 * MIN)
    finding = Finding("sales", "high", 30.0, 10.0, 2.0, 18.0, 6.0, 50)
    for i in range(5):
        book.remember("s1", f"a{i}", finding, (MONDAY + i * HOUR, MONDAY + i * HOUR + 15 * MIN), 0)
    assert list(book.raised["s1"]) == ["a2", "a3", "a4"]
    book.remember("s1", "late", finding, (MONDAY + 9 * WEEK, MONDAY + 9 * WEEK + 15 * MIN), 0)
    assert list(book.raised["s1"]) == ["late"]  # older than 8 weeks: forgotten


def test_hours_of_the_week_are_local_and_wrap_past_sunday() -> None:
    assert week_position(MONDAY, 0) == 0
    assert week_position(MONDAY - HOUR, 2 * HOUR) == HOUR  # 23:00 UTC on Sunday is 01:00 on Monday at +2
    assert overlaps(WEEK - HOUR, 2 * HOUR, 0, 15 * MIN)  # Sunday 23:00 to Monday 01:00 holds Monday 00:00
    assert not overlaps(HOUR, HOUR, 3 * HOUR, HOUR)


# --- checkpoints ------------------------------------------------------------------------------------


def test_marks_survive_snapshots_and_checkpoint_parts() -> None:
    again = replace(SPIKE, day=22)
    windows = simulate(24, seed=5, incidents=(SPIKE, again))
    cut = next(i for i, w in enumerate(windows) if w.end_ms > AFTER_SPIKE + HOUR)
    monitor, _ = watch_marked(windows[:cut], [(AFTER_SPIKE, ("not_anomaly", 15))])
    core = ShardCore(CoreConfig(archive=False))
    core.state.monitor = monitor
    restored = [ShardCore.restore(core.snapshot())]
    parts = core.checkpoint_parts()
    restored.append(ShardCore.from_parts(parts.head, parts.runs, parts.pieces))
    for other in restored:
        assert other.state.monitor is not None
        assert other.state.monitor.feedback.rules == monitor.feedback.rules
        assert other.state.monitor.feedback.raised == monitor.feedback.raised
        _, later = watch_marked(windows[cut:], [], monitor=other.state.monitor)
        assert _sales_alert_days(later, 15) == set()  # the mark still holds after the restore


def test_marks_follow_their_store_through_a_split_and_a_merge() -> None:
    windows = simulate(17, seed=5, incidents=(SPIKE,))
    monitor, alerts = watch_marked(windows, [])
    monitor.apply_feedback(_event(verdict="not_anomaly", alert_id=alerts[0].alert_id))
    core = ShardCore(CoreConfig(archive=False))
    core.state.monitor = monitor
    mine, other = split(core, lambda s: s == "s1"), split(core, lambda s: s != "s1")
    assert other.state.monitor is not None
    assert other.state.monitor.feedback.rules == {}
    assert other.state.monitor.feedback.raised == {}
    merged = merge([other, mine])
    assert merged.state.monitor is not None
    assert merged.state.monitor.feedback.rules == monitor.feedback.rules
    assert merged.state.monitor.feedback.raised == monitor.feedback.raised


def test_a_backtest_counts_what_became_of_each_feedback(tmp_path: Path) -> None:
    lines = [
        _feedback("s1", verdict="not_anomaly", alert_id="ano-unknown"),
        encode(
            {
                "event_id": "e2",
                "type": "sale",
                "store_id": "s1",
                "ts": "2026-03-18T10:00:01Z",
                "product_id": "p",
                "quantity": 1,
                "unit_price": 1.0,
            }
        ),
    ]
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for workers in (1, 2):
        result = run_backtest(str(tmp_path / "in.jsonl"), str(tmp_path / f"out{workers}"), workers=workers)
        assert result.summary["feedback"] == {"no_detector": 1}
        assert result.summary["events_valid"] == 2
        assert result.inventory == {"s1": {"p": -1}}  # the feedback changed no stock


def test_an_excused_window_teaches_its_slot_but_not_the_store_wide_estimates() -> None:
    again = replace(SPIKE, day=22)
    windows = simulate(23, seed=5, incidents=(SPIKE, again))  # up to the end of the second spike's day
    plain, _ = watch_marked(windows, [])
    marked, _ = watch_marked(windows, [(AFTER_SPIKE, ("not_anomaly", 15))])
    a, b = plain.detectors["s1"], marked.detectors["s1"]
    assert isinstance(a, SeasonalDetector)
    assert isinstance(b, SeasonalDetector)
    # The spike's slots of the week learned it as ordinary where it was marked ...
    slot = 1 * 96 + (15 * 60 + 30) // 15  # Tuesday 15:30
    assert b.week[slot].get() > a.week[slot].get() * 1.2
    # ... while the spread and the refund rate, which judge every other hour, learned nothing of it.
    assert b.spread["short", "sales"].factor == pytest.approx(a.spread["short", "sales"].factor)
    assert b.refund_rate == pytest.approx(a.refund_rate)
    # The day-to-day variation: within 1% (the spike's edges, unflagged in both, differ a little);
    # learning the excused windows into it moves it by 14%.
    assert b.today.variation.get() == pytest.approx(a.today.variation.get(), rel=0.01)
    assert vars(b).keys() == vars(a).keys()  # nothing of the mark is left on the detector


def test_a_new_spike_on_top_of_a_marked_pattern_still_alerts() -> None:
    """Once the slot has learned the marked promotion, "no bigger than the marked one" is also a
    count: a spike on top of the promotion is not excused by the promotion's ratio to the new,
    higher expectation."""
    weeks = (replace(SPIKE, day=22), replace(SPIKE, day=29), replace(SPIKE, day=36, size=6.0))
    windows = simulate(38, seed=5, incidents=(SPIKE, *weeks))
    _, marked = watch_marked(windows, [(AFTER_SPIKE, ("not_anomaly", 15))], DetectorConfig(feedback_weeks=8))
    assert _sales_alert_days(marked, 15) == {15, 36}
