"""Online anomaly detection per store, on closed windows, learned without labels (built on river).

The seasonal detector compares each window with what is normal for *that store at that time of the
week*, so the morning ramp-up and the lunch peak are expected, not alarming:

* Baseline: one `river.stats.EWMean` of sales per slot of the week (672 slots of 15 minutes),
  smoothed with its neighbours except across an opening or closing edge; the newest week weighs
  `season_fading`, older weeks fade.
* Level: today's traffic against the baseline (a gamma-Poisson update from 1.0, with the store's
  learned day-to-day variation as the prior), so a busy or quiet day shifts the expectation instead
  of raising alarms all day.
* Spread: window counts are negative binomial with variance = expected + the baseline's and the
  level's own estimation variance + phi * expected^2, phi learned per window size from ordinary
  windows (`river.stats.EWMean`). Refunds are expected at the store's own refund rate (refunds per
  sale, a slow `river.stats.EWMean`), quasi-Poisson.
* Score: -log10 of the tail probability of the observed count; an alert needs the score over the
  threshold *and* a change that matters (half the sales gone, half as many again, four refunds).

It judges each 15-minute window (a strong change shows in one), the last 30 minutes (a moderate one
shows over two) and each 1-hour window (a slow one over four). Every window is learned clipped to a
band around what was expected (a narrow one when it was anomalous), so an incident does not teach
the baseline that it is normal.

Warm-up: no alert before a store has `warmup_days` (7) of history: a slot of the week needs to have
been seen once (Sunday is not Tuesday). The second week is noisier; from the third on it is at full
strength (docs/detection.md has the measurements).

Two baselines share the interface, for the benchmark: a static threshold rule, and river's
`HalfSpaceTrees` with its default parameters on min-max scaled window features.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from processors.core import tails
from processors.core.lazy import LazyModule
from processors.core.windows import WindowResult, WindowSpec

stats = LazyModule("river.stats")  # imported when a detector is first built

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS
DETECTOR_KINDS: Final = ("seasonal", "threshold", "hst", "off")
_KERNEL: Final = (0.3, 0.4, 0.3)
_EDGE: Final = 0.1  # neighbours tenfold (and clearly, not by chance) apart are not smoothed together
_WINSOR_2SD: Final = 0.92  # E[min(z^2, 4)] for a standard normal z


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Detector parameters; the defaults are the ones measured in docs/detection.md."""

    kind: str = "seasonal"  # or a baseline: "threshold", "hst"; "off": windows only
    warmup_days: int = 7  # no alert before a store has this much history
    # -log10 p a window must reach: 4.5 is one chance in 30,000 that an ordinary window gets there.
    threshold: float = 4.5
    refund_threshold: float = 4.0  # refunds are rarer and their tail is discrete: a bit lower
    season_fading: float = 0.35  # weight of the newest week in a slot's baseline
    level_fading: float = 0.15  # weight of the newest window in today's level
    level_clip: float = 2.0  # standard deviations a window may pull the level by
    learn_clip: float = 3.0  # ... and the baseline of its slot
    day_fading: float = 0.1  # weight of the newest day in the learned day-to-day variation
    spread_fading: float = 0.01
    refund_fading: float = 0.005  # the refund rate (refunds per sale) has a long memory
    min_spread_windows: int = 48  # windows the spread must have learned from before alerts
    # What is worth an alert at all, however unlikely: sales below drop_ratio or above jump_ratio
    # times the expected, at least min_extra_sales above the range, at least min_refunds refunds.
    min_expected_sales: float = 4.0
    min_extra_sales: float = 5.0
    drop_ratio: float = 0.5
    jump_ratio: float = 1.5
    min_refunds: int = 4
    cooldown_ms: int = 45 * MINUTE_MS  # one alert per incident: repeats within this are the same one
    # Baselines (for the benchmark)
    static_refunds: int = 4
    static_hours: tuple[int, int] = (10, 18)
    hst_threshold: float = 0.99  # HST scores busy windows high; this was its best F1 on the tuning seeds
    seed: int = 42

    def __post_init__(self) -> None:
        if self.kind not in DETECTOR_KINDS:
            raise ValueError(f"detector kind {self.kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
        if self.warmup_days < 1:
            raise ValueError("the detector needs at least one day of warm-up")


class Finding(msgspec.Struct, frozen=True):
    """One anomalous metric of one window, with what was expected and how bad it is."""

    metric: str  # "sales" or "refunds"
    direction: str  # "low" or "high"
    observed: float
    mean: float
    low: float
    high: float
    score: float
    severity: int
    # The span judged, when it is not the closed window itself (the 30-minute view of two windows)
    window: WindowResult | None = None


class Verdict(msgspec.Struct, frozen=True):
    """What a detector says about one window: findings and (when it knows) the expected ranges."""

    findings: tuple[Finding, ...] = ()
    expected: dict[str, tuple[float, float]] | None = None


_QUIET: Final = Verdict()


class Detector(Protocol):
    def observe(self, window: WindowResult) -> Verdict: ...


def _severity(score: float, threshold: float, magnitude: float) -> int:
    """0-100 from how sure (score against the threshold) and how big (0-1) the deviation is."""
    sure = min(1.0, score / (2.0 * threshold))
    return max(1, min(100, round(100.0 * (0.5 * sure + 0.5 * max(0.0, min(1.0, magnitude))))))


class _Spread:
    """Learned spread of residuals for one window size and metric.

    Sales: variance = mean + known + phi * mean^2, where `known` is the baseline's own estimation
    variance (from how many weeks each slot has seen) and phi, learned here, is what is left: day-to-
    day and hour-to-hour swings. Refunds: variance = D * mean (quasi-Poisson: refunds are rare, so a
    quadratic term could not be estimated). Both are ratios of two `river.stats.EWMean`.
    """

    __slots__ = ("excess", "factor", "n", "quadratic", "scale")

    def __init__(self, fading: float, quadratic: bool) -> None:
        self.quadratic = quadratic
        self.excess = stats.EWMean(fading)
        self.scale = stats.EWMean(fading)
        self.n = 0
        self.factor = 0.0 if quadratic else 1.0  # phi or D, kept up to date by learn()

    def variance(self, mean: float, known: float = 0.0) -> float:
        if self.quadratic:
            return mean + known + self.factor * mean * mean
        return self.factor * mean + known

    def learn(self, observed: float, mean: float, known: float = 0.0) -> None:
        """Learn from a window that looks ordinary (within 3.5 standard deviations).

        Windows further out are left out, or a burst would widen the ranges it is judged by; those
        kept are winsorised at 2 standard deviations (and scaled back up by the 0.92 that this costs
        a normal variable), so the part of an incident that is not yet flagged moves it little.
        """
        var = self.variance(mean, known)
        sq = (observed - mean) ** 2
        if self.n >= 8:
            if sq > 12.25 * var:
                return
            sq = min(sq, 4.0 * var) / _WINSOR_2SD
        if self.quadratic:
            self.excess.update(sq - mean - known)
            self.scale.update(mean * mean)
            ratio = self.excess.get() / max(self.scale.get(), 1e-9)
            self.factor = min(1.0, max(0.0, ratio))
        else:
            self.excess.update(sq - known)
            self.scale.update(mean)
            ratio = self.excess.get() / max(self.scale.get(), 1e-9)
            self.factor = min(20.0, max(1.0, ratio))
        self.n += 1


def _inverse_neff(fading: float, limit: int = 255) -> list[float]:
    """Sum of squared weights of `river.stats.EWMean` after k updates (k = 0..limit): the variance of
    its estimate relative to one observation's."""
    keep = 1.0 - fading
    table = [0.0]
    for k in range(1, limit + 1):
        first = keep ** (2 * (k - 1))
        rest = fading * fading * (1.0 - keep ** (2 * (k - 1))) / (1.0 - keep * keep) if k > 1 else 0.0
        table.append(first + rest)
    return table


_QUIET_MEAN: Final = 0.05  # expected sales below this and nothing happened: a closed store
_DAY_OVER: Final = 4  # closed windows in a row that end a trading day
_MIN_DAY_SALES: Final = 20.0


class _DayLevel:
    """Today's traffic against the baseline: busy days and quiet days shift the expectation.

    Before the first window of a day the level is 1.0 (the baseline), give or take the learned
    day-to-day variation; each ordinary window of the day then moves it (a gamma-Poisson update:
    level = (observed + k) / (expected + k), with k = 1 / variation), and its uncertainty shrinks.
    An hour with the store closed ends the day; the day's ratio of sales to baseline teaches the
    variation (`river.stats.EWMean`), with the part Poisson noise alone explains taken out.
    """

    __slots__ = ("closed_run", "day_exp", "day_obs", "days", "exp", "fading", "level", "obs", "variation")

    def __init__(self, fading: float, day_fading: float) -> None:
        self.fading = fading
        self.obs = 0.0  # exponentially weighted sums over today's ordinary windows
        self.exp = 0.0
        self.day_obs = 0.0  # plain sums over today, for the day-to-day variation
        self.day_exp = 0.0
        self.variation = stats.EWMean(day_fading)
        self.days = 0
        self.closed_run = 0
        self.level = (1.0, self._prior_var())  # (level, its relative variance)

    def _prior_var(self) -> float:
        return 0.04 if self.days < 3 else min(0.25, max(0.0025, self.variation.get()))

    def _update(self) -> None:
        k = 1.0 / self._prior_var()
        level = (self.obs + k) / (self.exp + k)
        self.level = (min(2.5, max(0.4, level)), 1.0 / (self.obs + k))

    def learn(self, observed: float, expected: float) -> None:
        self.closed_run = 0
        keep = 1.0 - self.fading
        self.obs = self.obs * keep + observed
        self.exp = self.exp * keep + expected
        self.day_obs += observed
        self.day_exp += expected
        self._update()

    def flagged(self) -> None:
        self.closed_run = 0

    def closed(self) -> None:
        self.closed_run += 1
        if self.closed_run != _DAY_OVER:
            return
        if self.day_exp >= _MIN_DAY_SALES:
            ratio = self.day_obs / self.day_exp
            self.variation.update((ratio - 1.0) ** 2 - 1.0 / self.day_exp)
            self.days += 1
        self.obs = self.exp = self.day_obs = self.day_exp = 0.0
        self._update()


class SeasonalDetector:
    """One store's detector (see the module docstring)."""

    def __init__(self, config: DetectorConfig, slot_ms: int, long_slots: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.long_slots = long_slots  # slots in the long (hopping) window
        n = WEEK_MS // slot_ms
        self.week = [stats.EWMean(config.season_fading) for _ in range(n)]
        self.weeks_seen = bytearray(n)  # updates per slot, capped at 255
        self._inv_neff = _inverse_neff(config.season_fading)
        self.warm_from: int | None = None  # event time from which it may alert
        self.today = _DayLevel(config.level_fading, config.day_fading)
        self.refund_num = stats.EWMean(config.refund_fading)
        self.refund_den = stats.EWMean(config.refund_fading)
        self.refund_rate = 0.0  # refunds per sale, derived from the two above
        self.spread = {
            (size, metric): _Spread(config.spread_fading, metric == "sales")
            for size in ("short", "mid", "long")
            for metric in ("sales", "refunds")
        }
        # Recent short windows with their expected sales and its estimation variance (-1: none)
        self.recent: deque[tuple[WindowResult, float, float]] = deque(maxlen=max(long_slots, 2))

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_inv_neff"]  # derived from the config
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._inv_neff = _inverse_neff(self.config.season_fading)

    # --- model ---------------------------------------------------------------------------------

    def _base(self, slot: int) -> tuple[float, float] | None:
        """Expected sales in a slot (smoothed over its neighbours) and the variance of that estimate."""
        seen = self.weeks_seen
        k = seen[slot]
        if not k:
            return None
        week = self.week
        inv = self._inv_neff
        side, centre_w, _ = _KERNEL
        value = week[slot].get()
        total = centre_w * value
        weight = centre_w
        var = centre_w * centre_w * max(value, 0.1) * inv[k]
        n = len(week)
        centre = value
        for s in ((slot - 1) % n, (slot + 1) % n):
            k = seen[s]
            if k:
                value = week[s].get()
                low, high = (value, centre) if value < centre else (centre, value)
                if low < _EDGE * high and high - low > 3.0 * math.sqrt(high):
                    continue  # opening or closing time: do not blur the open and the closed slot
                total += side * value
                weight += side
                var += side * side * max(value, 0.1) * inv[k]
        return total / weight, var / (weight * weight)

    def _learn_refunds(self, refunds: float, sales: float) -> None:
        self.refund_num.update(refunds)
        self.refund_den.update(sales)
        den = self.refund_den.get()
        self.refund_rate = self.refund_num.get() / den if den > 0 else 0.0

    # --- per window ----------------------------------------------------------------------------

    def observe(self, window: WindowResult) -> Verdict:
        if self.warm_from is None:
            self.warm_from = window.start_ms + self.config.warmup_days * DAY_MS
        duration = window.end_ms - window.start_ms
        if duration == self.slot_ms and window.spec.kind == "tumbling":
            return self._short(window)
        if self.long_slots > 1 and duration == self.long_slots * self.slot_ms:
            return self._long(window)
        return _QUIET

    def _short(self, w: WindowResult) -> Verdict:
        slot = (w.start_ms % WEEK_MS) // self.slot_ms
        base = self._base(slot)
        sales = float(w.sales)
        week = self.week[slot]
        if base is None:
            week.update(sales)
            self.weeks_seen[slot] = 1
            self.recent.append((w, -1.0, 0.0))
            return _QUIET
        base_mean, base_var = base
        level, level_var = self.today.level
        mean = base_mean * level
        if mean < _QUIET_MEAN and w.sales == 0 and w.refunds == 0:
            self.today.closed()
            week.update(0.0)
            if self.weeks_seen[slot] < 255:
                self.weeks_seen[slot] += 1
            self.recent.append((w, mean, 0.0))
            return _QUIET
        known = level * level * base_var + mean * mean * level_var
        previous = self.recent[-1] if self.recent else None
        self.recent.append((w, mean, known))
        verdict = self._judge(w, mean, known, "short")
        findings = verdict.findings
        if previous is not None and previous[1] >= 0 and previous[0].end_ms == w.start_ms:
            # The last 30 minutes: a change that is too small for one window shows over two.
            both = _merge([previous[0], w], WindowSpec(2 * self.slot_ms, self.slot_ms))
            mid = self._judge(both, previous[1] + mean, previous[2] + known, "mid")
            if mid.findings:
                seen = {f.metric for f in findings}
                extra = tuple(
                    msgspec.structs.replace(f, window=both) for f in mid.findings if f.metric not in seen
                )
                findings = findings + extra
                verdict = Verdict(findings, verdict.expected)
        sales_flag = refund_flag = False
        for f in findings:
            if f.metric == "sales":
                sales_flag = True
            else:
                refund_flag = True
        # Learn: a window is learned clipped to a band around what was expected (one standard
        # deviation when it is anomalous), so an incident, even one not flagged, barely moves next
        # week's baseline, while a lasting change still gets in, a band at a time.
        sd = math.sqrt(self.spread["short", "sales"].variance(mean, known))
        band = sd if sales_flag else self.config.learn_clip * sd
        week.update(min(max(sales, mean - band), mean + band))
        if self.weeks_seen[slot] < 255:
            self.weeks_seen[slot] += 1
        if base_mean < 0.5:
            self.today.closed()
        elif not sales_flag:
            # The level learns from the window clipped to a band around what was expected, so an
            # incident that is still building up does not drag the expectation along with it.
            band = self.config.level_clip * math.sqrt(self.spread["short", "sales"].variance(mean, known))
            self.today.learn(min(max(sales, mean - band), mean + band), base_mean)
        else:
            self.today.flagged()
        if not refund_flag and w.sales > 0:
            self._learn_refunds(float(w.refunds), sales)
        return verdict

    def _long(self, w: WindowResult) -> Verdict:
        n = self.long_slots
        recent = self.recent
        if len(recent) < n:
            return _QUIET
        mean = known = 0.0
        for i in range(len(recent) - n, len(recent)):
            _, m, v = recent[i]
            if m < 0:
                return _QUIET
            mean += m
            known += v
        if recent[len(recent) - n][0].start_ms != w.start_ms:
            return _QUIET
        if mean < _QUIET_MEAN and w.sales == 0 and w.refunds == 0:
            return _QUIET
        return self._judge(w, mean, known, "long")

    def _judge(self, w: WindowResult, mean: float, known: float, size: str) -> Verdict:
        """Score a window against `mean` expected sales, then learn the spread from it."""
        cfg = self.config
        sales = float(w.sales)
        refunds = float(w.refunds)
        s_spread = self.spread[size, "sales"]
        r_spread = self.spread[size, "refunds"]
        s_var = s_spread.variance(mean, known)
        r_mean = self.refund_rate * mean
        r_var = r_spread.variance(r_mean)
        s_range = tails.expected_range(mean, s_var)
        r_range = tails.expected_range(r_mean, r_var)
        findings: tuple[Finding, ...] = ()
        sales_flag = refund_flag = False
        assert self.warm_from is not None
        if w.end_ms >= self.warm_from and s_spread.n >= cfg.min_spread_windows:
            found = self._sales(sales, mean, s_var, s_range)
            if found is not None:
                findings = (found,)
                sales_flag = True
            if r_spread.n >= cfg.min_spread_windows:
                found = self._refunds(refunds, r_mean, r_var, r_range)
                if found is not None:
                    findings = (*findings, found)
                    refund_flag = True
        if mean >= 1.0 and not sales_flag:
            s_spread.learn(sales, mean, known)
        if r_mean > 0.0 and not refund_flag:
            r_spread.learn(refunds, r_mean)
        return Verdict(findings, {"sales": s_range, "refunds": r_range})

    def _sales(self, x: float, mean: float, var: float, rng: tuple[float, float]) -> Finding | None:
        cfg = self.config
        low, high = rng
        if x < low and mean >= cfg.min_expected_sales and x <= cfg.drop_ratio * mean:
            sc = tails.score(tails.lower_tail(x, mean, var))
            if sc >= cfg.threshold:
                sev = _severity(sc, cfg.threshold, 1.0 - x / mean)
                return Finding("sales", "low", x, mean, low, high, sc, sev)
        elif x > high and x >= high + cfg.min_extra_sales and x >= cfg.jump_ratio * mean:
            sc = tails.score(tails.upper_tail(x, max(mean, 0.05), max(var, 0.05)))
            if sc >= cfg.threshold:
                sev = _severity(sc, cfg.threshold, (x / max(mean, 1.0) - 1.0) / 3.0)
                return Finding("sales", "high", x, mean, low, high, sc, sev)
        return None

    def _refunds(self, x: float, mean: float, var: float, rng: tuple[float, float]) -> Finding | None:
        cfg = self.config
        low, high = rng
        if x >= cfg.min_refunds and x > high:
            sc = tails.score(tails.upper_tail(x, max(mean, 0.01), max(var, 0.01)))
            if sc >= cfg.refund_threshold:
                sev = _severity(sc, cfg.refund_threshold, (x - mean) / 10.0)
                return Finding("refunds", "high", x, mean, low, high, sc, sev)
        return None


def _merge(parts: list[WindowResult], spec: WindowSpec) -> WindowResult:
    """Several consecutive windows of a store as one."""
    first = parts[0]
    if len(parts) == 1 and first.spec == spec:
        return first
    return WindowResult(
        first.store_id,
        spec,
        first.start_ms,
        parts[-1].end_ms,
        sum(p.sales for p in parts),
        sum(p.lines for p in parts),
        sum(p.units for p in parts),
        sum(p.revenue for p in parts),
        sum(p.refunds for p in parts),
        sum(p.refund_lines for p in parts),
        sum(p.refund_units for p in parts),
        sum(p.refund_amount for p in parts),
    )


class ThresholdDetector:
    """Baseline: a static rule a shop would write by hand.

    During the warm-up it learns the store's average sales per open 15-minute window, then freezes it.
    Alerts: refunds >= `static_refunds` in a window; sales above 3x the average; sales below a fifth of
    the average during fixed business hours (`static_hours`, UTC).
    """

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.first_ms: int | None = None
        self.open_mean = stats.Mean()

    def observe(self, w: WindowResult) -> Verdict:
        if w.spec.kind != "tumbling" or w.end_ms - w.start_ms != self.slot_ms:
            return _QUIET
        cfg = self.config
        if self.first_ms is None:
            self.first_ms = w.start_ms
        if w.end_ms - self.first_ms < cfg.warmup_days * DAY_MS:
            if w.sales > 0:
                self.open_mean.update(float(w.sales))
            return _QUIET
        avg = self.open_mean.get()
        findings: list[Finding] = []
        hour = (w.start_ms % DAY_MS) // HOUR_MS
        if w.refunds >= cfg.static_refunds:
            sev = _severity(cfg.threshold, cfg.threshold, w.refunds / 10.0)
            findings.append(Finding("refunds", "high", w.refunds, 0.0, 0.0, cfg.static_refunds - 1, 0.0, sev))
        if avg >= 1.0 and w.sales > 3.0 * avg:
            sev = _severity(cfg.threshold, cfg.threshold, (w.sales / avg - 1.0) / 3.0)
            findings.append(Finding("sales", "high", w.sales, avg, 0.0, 3.0 * avg, 0.0, sev))
        elif avg >= 5.0 and cfg.static_hours[0] <= hour < cfg.static_hours[1] and w.sales < 0.2 * avg:
            sev = _severity(cfg.threshold, cfg.threshold, 1.0 - w.sales / avg)
            findings.append(Finding("sales", "low", w.sales, avg, 0.2 * avg, 3.0 * avg, 0.0, sev))
        return Verdict(tuple(findings))


_HST_FEATURES: Final = ("sales", "units", "revenue", "refunds", "refund_amount")


class HSTDetector:
    """Baseline: river's HalfSpaceTrees with its defaults, on min-max scaled window features.

    The metric named in an alert is the feature furthest from its running mean (HST itself does not
    say which one), so the alert is still readable.
    """

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.first_ms: int | None = None
        # Imported here: river's anomaly models cost about a second to import, and only this
        # baseline uses them.
        from river import anomaly, compose, preprocessing

        self.model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=config.seed))
        self.means = {name: stats.Var() for name in _HST_FEATURES}

    def observe(self, w: WindowResult) -> Verdict:
        if w.spec.kind != "tumbling" or w.end_ms - w.start_ms != self.slot_ms:
            return _QUIET
        cfg = self.config
        if self.first_ms is None:
            self.first_ms = w.start_ms
        x = {name: float(getattr(w, name)) for name in _HST_FEATURES}
        score = float(self.model.score_one(x))
        self.model.learn_one(x)
        zs = {}
        for name, var in self.means.items():
            sd = math.sqrt(var.get()) if var.n > 1 else 0.0
            zs[name] = (x[name] - var.mean.get()) / sd if sd > 0 else 0.0
            var.update(x[name])
        if w.end_ms - self.first_ms < cfg.warmup_days * DAY_MS or score < cfg.hst_threshold:
            return _QUIET
        metric = "refunds" if abs(zs["refunds"]) >= abs(zs["sales"]) else "sales"
        direction = "high" if zs[metric] >= 0 else "low"
        mean = self.means[metric].mean.get()
        sd = math.sqrt(self.means[metric].get())
        sev = _severity(cfg.threshold, cfg.threshold, (score - cfg.hst_threshold) / (1 - cfg.hst_threshold))
        finding = Finding(
            metric, direction, x[metric], mean, max(0.0, mean - 2 * sd), mean + 2 * sd, score, sev
        )
        return Verdict((finding,))
