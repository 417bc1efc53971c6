"""From closed windows to effects: the window records to archive and the anomaly alerts to send.

Holds one detector per store (created on the store's first window) and the alert cool-down: once a
metric of a store has alerted, further anomalous windows of the same metric and direction (the
overlapping hopping windows, the rest of a long outage) extend the incident instead of paging again,
until the metric has been normal for `cooldown_ms`. All of it is state, pickled with the core, so a
replay from a checkpoint makes the same decisions and the same alert ids.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

import msgspec

from foundation.contract import Anomaly, alert_id, format_ts
from processors.core.detector import (
    DAY_MS,
    MINUTE_MS,
    WEEK_MS,
    Detector,
    DetectorConfig,
    HSTDetector,
    SeasonalDetector,
    ThresholdDetector,
    Verdict,
)
from processors.core.effects import Effects
from processors.core.explain import explain
from processors.core.windows import WindowResult, WindowSpec

_MIN_SLOT_MS: Final = 5 * MINUTE_MS
_encoder: Final = msgspec.json.Encoder()


class WindowRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """A closed window as archived and streamed (JSON, one per window)."""

    store_id: str
    window: str
    kind: str
    window_start: str
    window_end: str
    sales: int
    lines: int
    units: int
    revenue: float
    refunds: int
    refund_lines: int
    refund_units: int
    refund_amount: float
    refund_ratio: float | None
    avg_basket: float | None
    expected: dict[str, tuple[float, float]] | None = None
    anomalies: tuple[str, ...] = ()


def detector_slots(specs: tuple[WindowSpec, ...]) -> tuple[int, int] | None:
    """(slot length, slots per long window) the detector works with, or None when no window fits.

    The slot is the first tumbling window of at least 5 minutes that divides a day; the long window
    is the first hopping window made of whole, aligned slots.
    """
    slot = next(
        (
            s.size_ms
            for s in specs
            if s.kind == "tumbling" and s.size_ms >= _MIN_SLOT_MS and DAY_MS % s.size_ms == 0
        ),
        None,
    )
    if slot is None:
        return None
    long_slots = next(
        (
            s.size_ms // slot
            for s in specs
            if s.kind == "hopping" and s.size_ms % slot == 0 and s.hop_ms % slot == 0
        ),
        1,
    )
    return slot, long_slots


class AnomalyMonitor:
    def __init__(self, config: DetectorConfig, specs: tuple[WindowSpec, ...]) -> None:
        self.config = config
        slots = detector_slots(specs) if config.kind != "off" else None
        self.slot_ms, self.long_slots = slots if slots is not None else (0, 0)
        self.detectors: dict[str, Detector] = {}
        self.open_until: dict[tuple[str, str, str], int] = {}
        self._ts: dict[int, str] = {}

    @property
    def enabled(self) -> bool:
        return self.slot_ms > 0

    def _detector(self, store_id: str) -> Detector:
        det = self.detectors.get(store_id)
        if det is None:
            kind = self.config.kind
            if kind == "seasonal":
                det = SeasonalDetector(self.config, self.slot_ms, self.long_slots)
            elif kind == "threshold":
                det = ThresholdDetector(self.config, self.slot_ms)
            else:
                det = HSTDetector(self.config, self.slot_ms)
            self.detectors[store_id] = det
        return det

    def _format(self, ts_ms: int) -> str:
        text = self._ts.get(ts_ms)
        if text is None:
            if len(self._ts) > 4096:
                self._ts.clear()
            text = self._ts[ts_ms] = format_ts(ts_ms)
        return text

    def window_closed(self, w: WindowResult, out: Effects, alerts: Counter[str]) -> None:
        """Judge one closed window; append its record to `out.windows` and any alert to `out.alerts`."""
        verdict = self._detector(w.store_id).observe(w) if self.slot_ms else _NO_VERDICT
        start = self._format(w.start_ms)
        end = self._format(w.end_ms)
        flagged: list[str] = []
        for finding in verdict.findings:
            flagged.append(finding.metric)
            span = finding.window or w
            key = (w.store_id, finding.metric, finding.direction)
            until = self.open_until.get(key)
            self.open_until[key] = span.end_ms + self.config.cooldown_ms
            if until is not None and span.start_ms < until:
                continue  # the same incident, still going on
            span_start = self._format(span.start_ms)
            out.alerts.append(
                Anomaly(
                    alert_id=alert_id("anomaly", w.store_id, span.spec.name, span_start, finding.metric),
                    store_id=w.store_id,
                    ts=end,
                    window_start=span_start,
                    window_end=self._format(span.end_ms),
                    severity=finding.severity,
                    score=round(finding.score, 2),
                    metric=finding.metric,
                    observed=finding.observed,
                    expected=(round(finding.low, 2), round(finding.high, 2)),
                    explanation=explain(span, finding),
                )
            )
            alerts["anomaly"] += 1
        spec = w.spec
        ratio = w.refund_ratio
        basket = w.avg_basket
        out.windows.append(
            _encoder.encode(
                WindowRecord(
                    w.store_id,
                    spec.name,
                    spec.kind,
                    start,
                    end,
                    w.sales,
                    w.lines,
                    w.units,
                    round(w.revenue, 2),
                    w.refunds,
                    w.refund_lines,
                    w.refund_units,
                    round(w.refund_amount, 2),
                    None if ratio is None else round(ratio, 4),
                    None if basket is None else round(basket, 2),
                    verdict.expected,
                    tuple(flagged),
                )
            )
        )
        if len(self.open_until) > 4096:
            horizon = w.end_ms - WEEK_MS
            self.open_until = {k: v for k, v in self.open_until.items() if v >= horizon}


_NO_VERDICT: Final = Verdict()
