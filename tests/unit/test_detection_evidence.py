"""The seasonal detector's evidence over several windows, its first-weekend guess, and the fleet
benchmark's replay of recorded windows (docs/detection.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.detect_fleet import Feed, read_alerts, recording, replay, score
from benchmarks.local_scenario import FleetConfig, write
from benchmarks.scenario import read_labels
from foundation.timeunits import DAY_MS
from processors.backtest import run_backtest
from processors.core import CoreConfig
from processors.core.detectors import DetectorConfig, SeasonalDetector
from processors.core.detectors.base import Finding, PeerDayShape
from processors.core.detectors.seasonal import _Window
from processors.core.windows import WindowResult, WindowSpec
from tests.unit import stored

SLOT = 15 * 60_000
SHORT = WindowSpec(SLOT, SLOT)
T0 = 20_000 * DAY_MS  # a Friday, 00:00 UTC


def window(start_ms: int, sales: int) -> WindowResult:
    return WindowResult(
        "s-1", SHORT, start_ms, start_ms + SLOT, sales, sales, sales, 3.0 * sales, 0, 0, 0, 0.0
    )


def detector(**settings: Any) -> SeasonalDetector:
    det = SeasonalDetector(dataclasses.replace(DetectorConfig(), **settings), SLOT, 4)
    det.first_ms = T0 - 3 * DAY_MS  # warm: three days of its own history
    return det


def feed_evidence(
    det: SeasonalDetector, counts: list[int], expected: float, start: int = T0
) -> list[Finding | None]:
    """Each count as the next window, judged against `expected` sales (its variance: Poisson)."""
    found = []
    for i, sales in enumerate(counts):
        w = window(start + i * SLOT, sales)
        det.recent.append(_Window(w, None, None, None))
        found.append(det._evidence(w, (expected, 0.0), (expected, 0.0)))
    return found


def test_a_collapse_adds_up_over_windows_that_are_each_too_small_to_alert() -> None:
    # A quiet store expecting 5 sales a quarter hour sells none: one window is not enough (the
    # evidence of a single empty window is 0.7 * 5 = 3.5), four in a row are (14 > 12).
    det = detector()
    found = feed_evidence(det, [0, 0, 0, 0], 5.0)
    assert found[:3] == [None, None, None]
    finding = found[3]
    assert finding is not None
    assert finding.metric == "sales"
    assert finding.direction == "low"
    assert finding.observed == 0
    assert abs(finding.mean - 20.0) < 1e-9
    assert finding.window is not None  # the hour the evidence spans, as one window
    assert (finding.window.start_ms, finding.window.end_ms) == (T0, T0 + 4 * SLOT)
    assert finding.score >= 12.0 / 2.31


def test_evidence_forgets_a_gap_of_event_time() -> None:
    det = detector()
    # Two empty windows, then event time jumps a day: the next two start the evidence afresh.
    assert feed_evidence(det, [0, 0], 5.0) == [None, None]
    assert feed_evidence(det, [0, 0], 5.0, start=T0 + DAY_MS) == [None, None]
    assert len(det.evidence) == 2


def test_ordinary_windows_and_a_partial_drop_raise_nothing() -> None:
    det = detector()
    assert feed_evidence(det, [5, 4, 6, 5, 3, 7, 5, 4], 5.0) == [None] * 8
    det = detector()
    assert all(f is None for f in feed_evidence(det, [3, 3, 3, 3], 5.0))  # 60% left: no collapse


def test_a_jump_adds_up_too() -> None:
    det = detector()
    found = feed_evidence(det, [14, 14, 14, 14], 5.0)
    finding = next(f for f in found if f is not None)
    assert finding.direction == "high"
    assert finding.observed >= 28


def test_the_dispersion_cap_lets_an_unsure_estimate_still_see_a_collapse() -> None:
    # Expected 10 a window, but unsure (variance 60: dispersion 6). Without the cap the evidence of
    # four empty windows is 4 * 7 / 6 < 12; with it (2) it is 14.
    unsure = (10.0, 50.0)
    for cap, alerts in ((2.0, True), (100.0, False)):
        det = detector(cusum_max_dispersion=cap)
        found = []
        for i in range(4):
            w = window(T0 + i * SLOT, 0)
            det.recent.append(_Window(w, None, None, None))
            found.append(det._evidence(w, unsure, unsure))
        assert (found[-1] is not None) is alerts, cap


def test_a_first_weekend_is_judged_for_jumps_against_the_weekday_profile() -> None:
    det = detector()
    for slot in range(40, 48):
        det.profile[0][slot] = 10.0
        det.profile_seen[0][slot] = 1
    guess = det._guess(1, 44)  # Saturday, 11:00
    assert guess is not None
    mean, var = guess
    assert mean == 2.0 * 10.0
    assert var == mean + (0.5 * mean) ** 2
    assert det._guess(0, 44) is None  # a weekday has its own profile
    assert det._guess(1, 10) is None  # nothing known around 02:30
    assert detector(guess_ratio=0.0)._guess(1, 44) is None


def test_a_first_weekend_guess_follows_the_stores_own_day_so_far() -> None:
    det = detector()
    for slot in range(40, 48):
        det.profile[0][slot] = 10.0
        det.profile_seen[0][slot] = 1
    det.guess_day = (100.0, 100.0)  # the Saturday so far has sold what a weekday does
    guess = det._guess(1, 44)
    assert guess is not None
    assert guess[0] == 10.0 * (100.0 + 30.0 * 2.0) / (100.0 + 30.0)  # from 2x towards 1x
    assert stored.detector(det).guess_day == (100.0, 100.0)


def _first_sunday(prior: float, spike: int) -> list[int]:
    """A Friday and a Saturday at 10 sales a window from 08:00 to 20:00, then a Sunday morning at the same
    rate until 11:00, then `spike` a window: the slots flagged."""
    det, fleet = detector(guess_prior=prior), PeerDayShape(96)
    for day in range(2):
        for slot in range(96):
            det.observe(window(T0 + day * DAY_MS + slot * SLOT, 10 if 32 <= slot < 80 else 0), 0, fleet)
    sunday = T0 + 2 * DAY_MS
    flagged = []
    for slot in range(32, 48):
        verdict = det.observe(window(sunday + slot * SLOT, spike if slot >= 44 else 10), 0, fleet)
        if any(f.direction == "high" for f in verdict.findings):
            flagged.append(slot)
    return flagged


def test_a_jump_on_a_first_sunday_is_judged_against_the_days_own_level() -> None:
    # 5x the weekday rate: against 2x the weekday it is not beyond doubt, against the Sunday's own
    # morning (1x) it is.
    assert _first_sunday(30.0, 50)
    assert not _first_sunday(0.0, 50)
    assert not _first_sunday(30.0, 10)  # an ordinary Sunday raises nothing


def _days(
    det: SeasonalDetector,
    fleet: PeerDayShape,
    days: int,
    change: Callable[[int, int], int | None] | None = None,
) -> list[tuple[int, int, str]]:
    """Feed `days` days from T0 (a Friday) of 10 sales a window from 08:00 to 20:00;
    `change(day, slot)` may give another count. The findings, as (day, slot, direction)."""
    found = []
    for day in range(days):
        for slot in range(96):
            sales = 10 if 32 <= slot < 80 else 0
            other = change(day, slot) if change is not None else None
            verdict = det.observe(
                window(T0 + day * DAY_MS + slot * SLOT, other if other is not None else sales), 0, fleet
            )
            found += [(day, slot, f.direction) for f in verdict.findings]
    return found


def test_a_spike_on_a_first_saturday_does_not_make_the_next_an_outage() -> None:
    det = detector()
    spike = _days(det, PeerDayShape(96), 9, lambda day, slot: 50 if day == 1 and 44 <= slot < 48 else None)
    # What the first Saturday taught its slots is capped over the guess, not the spike's 50
    assert max(det.profile[1][44:48]) < 30.0
    assert [f for f in spike if f[0] == 8] == []  # the second Saturday, ordinary trade: no alert


def test_peers_do_not_raise_the_bar_of_a_drop_above_the_stores_own_history() -> None:
    # The peers trade on Sundays until 20:00; this store closes at 17:00 (slot 68).
    fleet = PeerDayShape(96)
    shape = [1.0 if 32 <= i < 80 else 0.0 for i in range(96)]
    for _ in range(3):
        for kind in (0, 1, 2):
            fleet.learn(kind, shape, 48.0)
    det = detector()

    def closes(day: int, slot: int) -> int | None:
        return 0 if day % 7 == 2 and slot >= 68 else None

    _days(det, fleet, 9, closes)  # to the second Sunday (T0 + 2 days is the first)
    sunday = T0 + 9 * DAY_MS
    for slot in range(71):
        sales = 0 if slot >= 68 else 10 * (slot >= 32)
        det.observe(window(sunday + slot * SLOT, sales), 0, fleet)
    judged = det.recent[-1]
    assert judged.central is not None  # the peers' shape still speaks for the slot (the store is young)
    assert judged.central[0] > 1.0
    assert judged.low is not None
    assert judged.low[0] < 0.5  # but the bar of a drop is the store's own closed hour


def test_today_waits_while_the_evidence_of_a_drop_builds() -> None:
    def level(hold: float) -> float:
        det, fleet = detector(level_hold=hold), PeerDayShape(96)
        _days(det, fleet, 4)
        day = T0 + 4 * DAY_MS
        for slot in range(52):
            sales = 3 if slot >= 48 else (10 if slot >= 32 else 0)  # a fall to 0.3 from 12:00
            det.observe(window(day + slot * SLOT, sales), 0, fleet)
        assert det.suspicion >= 5.0
        return det.today.level[0]

    # The first windows of the fall teach the level before the evidence is there; later ones wait.
    assert level(5.0) > level(0.0) + 0.03


def test_the_new_state_survives_a_checkpoint() -> None:
    det = detector()
    feed_evidence(det, [0, 0, 0], 5.0)
    copy = stored.detector(det)
    assert list(copy.evidence) == list(det.evidence)
    w = window(T0 + 3 * SLOT, 0)
    det.recent.append(_Window(w, None, None, None))
    copy.recent.append(_Window(w, None, None, None))
    assert copy._evidence(w, (5.0, 0.0), (5.0, 0.0)) == det._evidence(w, (5.0, 0.0), (5.0, 0.0))


def test_replaying_recorded_windows_gives_the_backtests_alerts(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    write(FleetConfig(seed=7, stores=4, days=9, late_store_day=3), fleet)
    feed: Feed = []
    core = CoreConfig(archive=False)
    with recording(feed):
        run_backtest(str(fleet / "events.jsonl"), str(tmp_path / "out"), core)
    from_backtest = read_alerts(tmp_path / "out" / "alerts.jsonl")
    assert any(isinstance(item, tuple) for item in feed)  # the stores' zones, in order
    assert sorted(replay(feed, DetectorConfig()), key=repr) == sorted(from_backtest, key=repr)
    # A different setting decides differently on the same windows (the replay is not a cache).
    meta = json.loads((fleet / "meta.json").read_text())
    labels = read_labels(fleet / "labels.jsonl")
    strict = replay(feed, DetectorConfig(threshold=50.0, refund_threshold=50.0, cusum_threshold=500.0))
    assert len(strict) < len(from_backtest) or not from_backtest
    assert score(strict, labels, meta, core.allowed_lateness_ms).total.false_incidents == 0


def test_the_fleets_incidents_carry_their_visibility_and_none_is_dropped_by_it(tmp_path: Path) -> None:
    from benchmarks.local_scenario import generate
    from benchmarks.scenario import MIN_VISIBILITY

    config = FleetConfig(seed=11, stores=6, days=14, late_store_day=5, incidents_per_store_week=3.0)
    fleet, lines = generate(config)
    kinds = {i.kind for i in fleet.incidents}
    assert kinds == {"sales_collapse", "sales_spike", "refund_burst"}
    assert all(i.impact > 0 for i in fleet.incidents)
    # Measured against the day's true rate, for the report only: faint ones stay labelled
    assert any(i.visibility >= MIN_VISIBILITY for i in fleet.incidents)
    assert any(i.visibility < MIN_VISIBILITY for i in fleet.incidents)
    big = [i for i in fleet.incidents if i.kind == "sales_collapse" and i.impact >= 100]
    assert all(i.visibility >= MIN_VISIBILITY for i in big)
    # The same seed makes the same events (measuring draws no random number)
    assert generate(config)[1] == lines
