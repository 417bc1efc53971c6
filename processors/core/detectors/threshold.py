"""Baseline detector: a static rule with per-store thresholds, as a shop would write by hand."""

from __future__ import annotations

from river import stats

from foundation.timeunits import DAY_MS, HOUR_MS
from processors.core.detectors.base import QUIET, DetectorConfig, Finding, PeerDayShape, Verdict, severity
from processors.core.windows import WindowResult


class ThresholdDetector:
    """Baseline: a static rule a shop would write by hand.

    During the warm-up (its first day) it learns the store's average sales per open 15-minute
    window, then freezes it: a threshold per store. Alerts: refunds >= `static_refunds` in a window;
    sales above `static_sales_high` times the average; sales below `static_sales_low` of the average
    during business hours (`static_hours`, the store's local time) on days it has traded.
    """

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.first_ms: int | None = None
        self.open_mean = stats.Mean()
        self.day = -1
        self.sold_today = 0

    def observe(self, w: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        if w.spec.kind != "tumbling" or w.end_ms - w.start_ms != self.slot_ms:
            return QUIET
        cfg = self.config
        if self.first_ms is None:
            self.first_ms = w.start_ms
        if w.end_ms - self.first_ms < cfg.warmup_days * DAY_MS:
            if w.sales > 0:
                self.open_mean.update(float(w.sales))
            return QUIET
        avg = self.open_mean.get()
        findings: list[Finding] = []
        local = w.start_ms + offset_ms
        hour = (local % DAY_MS) // HOUR_MS
        day = local // DAY_MS
        if day != self.day:
            self.day, self.sold_today = day, 0
        self.sold_today += w.sales
        if w.refunds >= cfg.static_refunds:
            sev = severity(cfg.threshold, cfg.threshold, w.refunds / 10.0)
            findings.append(Finding("refunds", "high", w.refunds, 0.0, 0.0, cfg.static_refunds - 1, 0.0, sev))
        high, low = cfg.static_sales_high, cfg.static_sales_low
        if avg >= 1.0 and w.sales > high * avg:
            sev = severity(cfg.threshold, cfg.threshold, (w.sales / avg - 1.0) / 3.0)
            findings.append(Finding("sales", "high", w.sales, avg, 0.0, high * avg, 0.0, sev))
        elif (
            avg >= 5.0
            and self.sold_today > w.sales
            and cfg.static_hours[0] <= hour < cfg.static_hours[1]
            and w.sales < low * avg
        ):
            sev = severity(cfg.threshold, cfg.threshold, 1.0 - w.sales / avg)
            findings.append(Finding("sales", "low", w.sales, avg, low * avg, high * avg, 0.0, sev))
        return Verdict(tuple(findings))
