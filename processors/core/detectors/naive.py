"""Baseline detector: seasonal-naive, as a careful engineer would write it first.

The expected count of a window is the mean of the same local slot yesterday and a week ago (whichever
of the two it has seen); a window is anomalous when a Poisson test puts it past `naive_threshold`
(-log10 p) and the change is one worth an alert (the same minimum sizes as the seasonal detector).
"""

from __future__ import annotations

from foundation.timeunits import DAY_MS, WEEK_MS
from processors.core import tails
from processors.core.detectors.base import QUIET, DetectorConfig, Finding, PeerDayShape, Verdict, severity
from processors.core.windows import WindowResult


class NaiveDetector:
    """Same slot yesterday and a week ago, Poisson test (see the module docstring)."""

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.ring = 8 * (DAY_MS // slot_ms)  # eight days of slots
        self.slot_ids = [-1] * self.ring  # which local slot each entry holds
        self.sales = [0] * self.ring
        self.refunds = [0] * self.ring

    def _seen(self, slot: int) -> tuple[int, int] | None:
        i = slot % self.ring
        return (self.sales[i], self.refunds[i]) if self.slot_ids[i] == slot else None

    def observe(self, w: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        if w.spec.kind != "tumbling" or w.end_ms - w.start_ms != self.slot_ms:
            return QUIET
        cfg = self.config
        slot = (w.start_ms + offset_ms) // self.slot_ms
        before = [
            seen
            for seen in (
                self._seen(slot - DAY_MS // self.slot_ms),
                self._seen(slot - WEEK_MS // self.slot_ms),
            )
            if seen is not None
        ]
        i = slot % self.ring
        self.slot_ids[i], self.sales[i], self.refunds[i] = slot, w.sales, w.refunds
        if not before:
            return QUIET
        mean = sum(s for s, _ in before) / len(before)
        r_mean = max(sum(r for _, r in before) / len(before), 0.25)
        findings: list[Finding] = []
        x = float(w.sales)
        if mean >= cfg.min_expected_sales and x <= cfg.drop_ratio * mean:
            sc = tails.score(tails.lower_tail(x, mean, mean))
            if sc >= cfg.naive_threshold:
                sev = severity(sc, cfg.naive_threshold, 1.0 - x / mean)
                findings.append(Finding("sales", "low", x, mean, 0.0, mean, sc, sev))
        elif x >= mean + cfg.min_extra_sales and x >= cfg.jump_ratio * mean:
            sc = tails.score(tails.upper_tail(x, max(mean, 0.5), max(mean, 0.5)))
            if sc >= cfg.naive_threshold:
                sev = severity(sc, cfg.naive_threshold, (x / max(mean, 1.0) - 1.0) / 3.0)
                findings.append(Finding("sales", "high", x, mean, 0.0, mean, sc, sev))
        if w.refunds >= cfg.min_refunds:
            sc = tails.score(tails.upper_tail(float(w.refunds), r_mean, r_mean))
            if sc >= cfg.naive_threshold:
                sev = severity(sc, cfg.naive_threshold, (w.refunds - r_mean) / 10.0)
                findings.append(Finding("refunds", "high", float(w.refunds), r_mean, 0.0, r_mean, sc, sev))
        return Verdict(tuple(findings))
