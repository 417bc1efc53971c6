"""Baseline detector: river's HalfSpaceTrees on window features and the local time of week."""

from __future__ import annotations

import math
from typing import Final

from river import stats

from foundation.timeunits import DAY_MS
from processors.core.detectors.base import (
    QUIET,
    DetectorConfig,
    Finding,
    PeerDayShape,
    Verdict,
    severity,
    weekday,
)
from processors.core.lazy import LazyModule
from processors.core.windows import WindowResult

# river's anomaly models cost seconds to import: only a core that runs this baseline pays for them.
anomaly = LazyModule("river.anomaly")
compose = LazyModule("river.compose")
preprocessing = LazyModule("river.preprocessing")

_HST_FEATURES: Final = ("sales", "units", "revenue", "refunds", "refund_amount")
# Every feature the model sees: the window's and the local time of week on two circles
FEATURES: Final = (*_HST_FEATURES, "day_sin", "day_cos", "week_sin", "week_cos")


class HSTDetector:
    """Baseline: river's HalfSpaceTrees with its defaults, on min-max scaled window features and the
    local time of week (hour of the day and day of the week as points on a circle, so 23:00 is next
    to midnight and Sunday next to Monday).

    The metric named in an alert is the feature furthest from its running mean (HST itself does not
    say which one), so the alert is still readable.
    """

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.first_ms: int | None = None
        self.model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=config.seed))
        self.means = {name: stats.Var() for name in _HST_FEATURES}

    def observe(self, w: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        if w.spec.kind != "tumbling" or w.end_ms - w.start_ms != self.slot_ms:
            return QUIET
        cfg = self.config
        if self.first_ms is None:
            self.first_ms = w.start_ms
        x = {name: float(getattr(w, name)) for name in _HST_FEATURES}
        local = w.start_ms + offset_ms
        day_angle = 2.0 * math.pi * (local % DAY_MS) / DAY_MS
        week_angle = 2.0 * math.pi * weekday(local // DAY_MS) / 7.0
        features = dict(x)
        features["day_sin"] = 0.5 + 0.5 * math.sin(day_angle)
        features["day_cos"] = 0.5 + 0.5 * math.cos(day_angle)
        features["week_sin"] = 0.5 + 0.5 * math.sin(week_angle)
        features["week_cos"] = 0.5 + 0.5 * math.cos(week_angle)
        score = float(self.model.score_one(features))
        self.model.learn_one(features)
        zs = {}
        for name, var in self.means.items():
            sd = math.sqrt(var.get()) if var.n > 1 else 0.0
            zs[name] = (x[name] - var.mean.get()) / sd if sd > 0 else 0.0
            var.update(x[name])
        if w.end_ms - self.first_ms < cfg.warmup_days * DAY_MS or score < cfg.hst_threshold:
            return QUIET
        metric = "refunds" if abs(zs["refunds"]) >= abs(zs["sales"]) else "sales"
        direction = "high" if zs[metric] >= 0 else "low"
        mean = self.means[metric].mean.get()
        sd = math.sqrt(self.means[metric].get())
        sev = severity(cfg.threshold, cfg.threshold, (score - cfg.hst_threshold) / (1 - cfg.hst_threshold))
        finding = Finding(
            metric, direction, x[metric], mean, max(0.0, mean - 2 * sd), mean + 2 * sd, score, sev
        )
        return Verdict((finding,))
