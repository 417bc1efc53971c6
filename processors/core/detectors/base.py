"""What every detector shares: its settings, what it reports (findings, verdicts), the spread of
window counts, the local time of a window and the fleet's shape of a day.

Detectors live one per module in this package and are chosen by the `kind` setting through
`registry.py`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

import msgspec

from foundation.timeunits import DAY_MS, MINUTE_MS
from processors.core.detectors.fleet_shape import (
    MAX_DAYS_WEIGHT,
    SHAPE_VERSION,
    FleetShape,
    KindShape,
)
from processors.core.windows import WindowResult, WindowSpec

_WINSOR_2SD: Final = 0.92  # E[min(z^2, 4)] for a standard normal z
PRIOR_WINDOWS: Final = 24  # windows' worth of weight the spread's prior keeps
# 1970-01-01 was a Thursday: weekday (Monday = 0) of local day number d is (d + 3) % 7.
_EPOCH_WEEKDAY: Final = 3


def local_day(local_ms: int) -> int:
    """Day number of a local time in epoch milliseconds."""
    return local_ms // DAY_MS


def weekday(day: int) -> int:
    """Monday = 0 ... Sunday = 6, of a local day number."""
    return (day + _EPOCH_WEEKDAY) % 7


def day_type(day: int) -> int:
    """0 for Monday to Friday, 1 for Saturday, 2 for Sunday."""
    wd = weekday(day)
    return 0 if wd < 5 else wd - 4


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """Detector parameters; the defaults are the ones measured in docs/detection.md."""

    kind: str = "seasonal"  # the registry's name of a detector (registry.py); "off": windows only
    warmup_days: int = 1  # no alert before a store has this much history of its own
    # -log10 p a window must reach: 4.5 is one chance in 30,000 that an ordinary window gets there.
    threshold: float = 4.5
    # ... for a drop of sales (0: the same as a jump's): a little lower, since today's level waits
    # while a drop builds (level_hold) and a drop's bound is the store's own, so a lower bar catches
    # more drops without more pages; lower still pages more for the same catch (the tuning seeds'
    # figures are in benchmarks/detection-experiments.md)
    drop_threshold: float = 4.2
    refund_threshold: float = 4.0  # refunds are rarer and their tail is discrete: a bit lower
    season_fading: float = 0.35  # weight of the newest week in a slot's baseline
    profile_fading: float = 0.25  # ... and of the newest day in a slot of the day's profile
    full_weeks: int = 3  # weeks a slot of the week must have seen before it alone is the baseline
    own_days: int = 3  # days of a kind (weekday, Saturday, Sunday) before the fleet's shape is dropped
    fleet_spread: float = 0.35  # relative error of the fleet's shape for one store
    level_fading: float = 0.15  # weight of the newest window in today's level
    level_clip: float = 2.0  # standard deviations a window may pull the level by
    # While the evidence of a drop (below) is at least this, windows do not teach today's level: an
    # outage that has begun but is not yet sure enough to alert must not drag the expectation down
    # with it (0 turns it off).
    level_hold: float = 4.0
    learn_clip: float = 3.0  # ... and the baseline of its slot
    day_fading: float = 0.1  # weight of the newest day in the learned day-to-day variation
    spread_fading: float = 0.01
    sales_spread_prior: float = 0.03  # phi before a store has its own (sd = 17% of a busy window)
    refund_spread_prior: float = 1.5
    refund_fading: float = 0.005  # the refund rate (refunds per sale) has a long memory
    min_spread_windows: int = 0  # windows the spread must have learned from before alerts
    # How far towards the most extreme of the estimates (highest for a jump, lowest of the store's own
    # for a drop) a window is judged: 1.0 the extreme one, 0.0 their weighted centre.
    bound_weight: float = 0.25
    jump_bound_weight: float = 0.25  # ... for a jump
    # Evidence accumulated over consecutive 15-minute windows (a CUSUM of the log-likelihood ratio of
    # "sales at cusum_drop / cusum_jump times the expected" against "as expected"): an alert when it
    # reaches cusum_threshold (natural log; 0 turns it off), so a quiet store whose single windows
    # hold too few sales still shows a collapse after a few of them.
    cusum_threshold: float = 12.0
    cusum_drop: float = 0.3
    cusum_jump: float = 2.5
    cusum_windows: int = 4  # the evidence spans at most this many windows
    # The evidence is divided by a window's dispersion (variance over mean) up to this much: beyond
    # it, the spread is the estimate's own uncertainty, which a fall to a third leaves far behind.
    cusum_max_dispersion: float = 2.0
    # A weekend day the store has not traded yet and too few peers have: jumps are judged against
    # the store's own weekday profile (the busiest of the slot and its neighbours) times guess_ratio,
    # give or take guess_spread of it (0 turns it off). Drops, where the peers agree the store should
    # trade, against the quietest of the slot and two either side in that profile times the day's own
    # ratio to it since opening (once that has guess_prior expected sales), never above the peers, and
    # only while the store still sells.
    guess_ratio: float = 2.0
    guess_spread: float = 0.5
    # ... moved towards the store's own day so far (its sales against its weekday profile), which
    # weighs in against guess_ratio once it has this many expected sales (0: guess_ratio alone)
    guess_prior: float = 30.0
    # Drops judged by the peers' shape alone, where the store has no history of that slot (its
    # first Saturday): False, a store closing earlier than its peers is not an outage.
    peer_drops: bool = False
    own_learning: bool = True  # only windows the store's own history covers teach spread and level
    # What is worth an alert at all, however unlikely: sales below drop_ratio or above jump_ratio
    # times the expected, at least min_extra_sales above the range, at least min_refunds refunds.
    min_expected_sales: float = 4.0
    min_extra_sales: float = 5.0
    drop_ratio: float = 0.5
    jump_ratio: float = 1.5
    min_refunds: int = 4
    cooldown_ms: int = 45 * MINUTE_MS  # one alert per incident: repeats within this are the same one
    # Operator feedback (processors/core/feedback.py, docs/detection.md "Feedback"): a mark holds for
    # this many weeks over the same local hours of the week, widened by this many slots each side
    # (4 weeks and 2 slots: the fewest false alerts after the marks with recall kept on the tuning
    # seeds 1-12 of the promotions fleet, `detect_fleet --feedback --feedback-tune`)
    feedback_weeks: int = 4
    feedback_slack_slots: int = 2
    # a `not_anomaly` mark excuses the same deviation up to this much bigger (observed / expected)
    feedback_margin: float = 0.25
    feedback_alerts_kept: int = 256  # anomaly alerts remembered per store (and at most 8 weeks)
    # a `missed` mark lowers the bar there: thresholds by this (-log10 p), size gates by this
    # (a drop at 0.5 + ease of the expected, a jump at 1.5 - ease times it)
    missed_relief: float = 1.0
    missed_ease: float = 0.15
    # Baselines (for the benchmark)
    static_refunds: int = 4
    static_sales_high: float = 3.0  # static rule: sales above this many times the store's average
    static_sales_low: float = 0.2  # ... or below this share of it, in business hours
    static_hours: tuple[int, int] = (10, 18)  # the static rule's business hours (local time)
    naive_threshold: float = 8.0  # seasonal-naive: -log10 p (the best of 4, 6, 8 on the tuning seeds)
    hst_threshold: float = 0.99  # HST scores busy windows high: its best F1 on the tuning seeds is here
    seed: int = 42

    def __post_init__(self) -> None:
        # The kind is checked against the registry where detectors are made (registry.py, and
        # AnomalyMonitor at start), so this module needs nothing from above it.
        if self.warmup_days < 1:
            raise ValueError("the detector needs at least one day of warm-up")


class Running:
    """An exponentially weighted mean that starts as a plain mean: the first 1/fading values weigh
    alike, later ones fade at `fading`. (`river.stats.EWMean` starts from its first value, which a
    slow one then remembers for hundreds of updates: one odd first window would set a store's
    refund rate for days.)"""

    __slots__ = ("fading", "mean", "n")

    def __init__(self, fading: float) -> None:
        self.fading = fading
        self.n = 0
        self.mean = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        self.mean += (x - self.mean) * max(self.fading, 1.0 / self.n)

    def get(self) -> float:
        return self.mean


class FadingMean(Running):
    """An exponentially weighted mean that starts from its first value: `river.stats.EWMean`'s
    arithmetic (the same floats, operation for operation), held as plain fields so that a
    checkpoint stores it as data (river's keeps its state inside a compiled object)."""

    __slots__ = ()

    def update(self, x: float) -> None:
        self.mean = float(x) if self.n == 0 else self.fading * x + (1.0 - self.fading) * self.mean
        self.n += 1


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


QUIET: Final = Verdict()


class Detector(Protocol):
    """One store's detector. `offset_ms` is the store's UTC offset at the window's start (its local
    time is `start_ms + offset_ms`); `fleet` is what the shard's stores have in common."""

    def observe(self, window: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict: ...


def within_marked(
    direction: str,
    observed: float,
    mean: float,
    span_ms: int,
    mark: tuple[float, float],
    margin: float,
) -> bool:
    """Whether a deviation over `span_ms` is no bigger than one an operator marked as ordinary
    (`mark`: its observed over expected, and its observed count per ms): a jump up to the count the
    marked size gives here *and* the count the marked one had over as long a span, plus `margin` of
    it and two standard deviations of Poisson noise; a drop down to the larger of the two, less them.
    The count keeps a slot that has since learned the marked pattern from excusing a new deviation on
    top of it (a spike in the hour of a promotion); the noise term keeps a 15-minute window of a few
    sales from looking bigger than the hour it belongs to."""
    marked, per_ms = mark
    at = marked * max(mean, 1.0)
    if per_ms > 0.0:
        count = per_ms * span_ms
        at = min(at, count) if direction == "high" else max(at, count)
    noise = 2.0 * math.sqrt(at)
    if direction == "high":
        return observed <= at * (1.0 + margin) + noise
    return observed >= at * (1.0 - margin) - noise


def severity(score: float, threshold: float, magnitude: float) -> int:
    """0-100 from how sure (score against the threshold) and how big (0-1) the deviation is."""
    sure = min(1.0, score / (2.0 * threshold))
    return max(1, min(100, round(100.0 * (0.5 * sure + 0.5 * max(0.0, min(1.0, magnitude))))))


class Spread:
    """Learned spread of residuals for one window size and metric.

    Sales: variance = mean + known + phi * mean^2, where `known` is the baseline's own estimation
    variance (from how many weeks each slot has seen) and phi, learned here, is what is left: day-to-
    day and hour-to-hour swings. Refunds: variance = D * mean (quasi-Poisson: refunds are rare, so a
    quadratic term could not be estimated). Both are ratios of two faded means (`Running`).
    """

    __slots__ = ("excess", "factor", "n", "prior", "quadratic", "scale")

    def __init__(self, fading: float, quadratic: bool, prior: float | None = None) -> None:
        self.quadratic = quadratic
        self.excess = Running(fading)
        self.scale = Running(fading)
        self.n = 0
        # phi or D, kept up to date by learn(); until it has learned from PRIOR_WINDOWS windows it
        # leans on a prior (a new store is judged from its second day, before it has a spread of its own)
        self.prior = (0.0 if quadratic else 1.0) if prior is None else prior
        self.factor = self.prior

    def variance(self, mean: float, known: float = 0.0) -> float:
        if self.quadratic:
            return mean + known + self.factor * mean * mean
        return self.factor * mean + known

    def learn(self, observed: float, mean: float, known: float = 0.0) -> None:
        """Learn from a window that looks ordinary (within 3.5 standard deviations).

        Windows further out are left out, or a burst would widen the ranges it is judged by; those
        kept are winsorised at 2 standard deviations (and scaled back up by the 0.92 that this costs
        a normal variable), so the part of an incident that is not yet flagged moves it little. This
        holds from a store's first window: a spike on its second day, learned whole, would have
        tripled the spread it is judged by before it was flagged.
        """
        var = self.variance(mean, known)
        sq = (observed - mean) ** 2
        if sq > 12.25 * var:
            return
        sq = min(sq, 4.0 * var) / _WINSOR_2SD
        if self.quadratic:
            self.excess.update(sq - mean - known)
            self.scale.update(mean * mean)
            ratio = min(1.0, max(0.0, self.excess.get() / max(self.scale.get(), 1e-9)))
        else:
            self.excess.update(sq - known)
            self.scale.update(mean)
            ratio = min(20.0, max(1.0, self.excess.get() / max(self.scale.get(), 1e-9)))
        self.n += 1
        lean = PRIOR_WINDOWS / (PRIOR_WINDOWS + self.n)
        self.factor = lean * self.prior + (1.0 - lean) * ratio


def inverse_neff(fading: float, limit: int = 255) -> list[float]:
    """Sum of squared weights of `river.stats.EWMean` after k updates (k = 0..limit): the variance of
    its estimate relative to one observation's."""
    keep = 1.0 - fading
    table = [0.0]
    for k in range(1, limit + 1):
        first = keep ** (2 * (k - 1))
        rest = fading * fading * (1.0 - keep ** (2 * (k - 1))) / (1.0 - keep * keep) if k > 1 else 0.0
        table.append(first + rest)
    return table


def merge(parts: list[WindowResult], spec: WindowSpec) -> WindowResult:
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


class PeerDayShape:
    """The shape of a day shared by a store's peers, for a store too new to have its own.

    Per kind of day (weekday, Saturday, Sunday) and slot of the local day: the share of a store's
    weekday sales that falls in that slot, averaged over the stores' finished days, and how much the
    stores disagree about it (faded means of the share and of its square). A new store's
    expected sales in a slot are that share times its own weekday total: the peers' shape, scaled to
    its level, as wide as the peers are different.

    The peers are the stores of this shard and, through `prior`, the rest of the fleet: the shape
    the other shards published (fleet_shape.py), or one built from an earlier run. Each kind of day
    blends the two by store-days, so a store alone in its shard, or a shard's first Sunday, is judged
    against the fleet's shape instead of nothing.
    """

    __slots__ = ("days", "prior", "revision", "shares", "squares")

    MIN_DAYS: Final = 3  # store-days of a kind before the fleet speaks for it

    def __init__(self, slots_per_day: int, fading: float = 0.05) -> None:
        self.shares = [[Running(fading) for _ in range(slots_per_day)] for _ in range(3)]
        self.squares = [[Running(fading) for _ in range(slots_per_day)] for _ in range(3)]
        self.days = [0, 0, 0]  # store-days learned here, per kind of day
        self.prior: FleetShape | None = None  # the rest of the fleet's shape
        self.revision = 0  # moves when the prior changes (what detectors cache from the fleet)

    @property
    def slots_per_day(self) -> int:
        return len(self.shares[0])

    def set_prior(self, prior: FleetShape | None) -> None:
        """The rest of the fleet's shape (None: this shard's stores alone). One of another slot
        length is ignored: it cannot be lined up with this detector's slots."""
        if prior is not None and (prior.slots_per_day != self.slots_per_day or prior.empty()):
            prior = None
        if prior != self.prior:
            self.prior = prior
            self.revision += 1

    def _weights(self, kind: int) -> tuple[float, float]:
        """(this shard's weight, the prior's) for a kind of day. The shard's own stores speak alone
        once they have `MIN_DAYS` store-days of that kind (they are the peers whose trade is known
        to be in the same stream); until then the prior fills in, blended by store-days."""
        own = self.days[kind]
        if own >= self.MIN_DAYS:
            return float(own), 0.0
        other = self.prior.kinds[kind].days if self.prior is not None else 0
        if other < self.MIN_DAYS:
            return 0.0, 0.0
        return float(own), float(min(other, MAX_DAYS_WEIGHT))

    def share(self, kind: int, slot: int) -> tuple[float, float] | None:
        """A slot's share of a weekday's sales and its variance across store-days, or None when
        too few store-days of that kind were seen (here and in the prior)."""
        w_own, w_other = self._weights(kind)
        total = w_own + w_other
        if total <= 0:
            return None
        mean = w_own * self.shares[kind][slot].get()
        square = w_own * self.squares[kind][slot].get()
        if w_other and self.prior is not None:
            part = self.prior.kinds[kind]
            mean += w_other * part.share[slot]
            square += w_other * part.square[slot]
        mean /= total
        return mean, max(0.0, square / total - mean * mean)

    def known(self, kind: int) -> bool:
        """Whether the fleet speaks for this kind of day (here or in the prior)."""
        return sum(self._weights(kind)) > 0

    def ratio(self, kind: int) -> float:
        """A day of this kind against a weekday (1.0 until both were seen)."""
        if not self.known(kind) or not self.known(0):
            return 1.0
        n = self.slots_per_day
        total = sum((self.share(kind, i) or (0.0, 0.0))[0] for i in range(n))
        base = sum((self.share(0, i) or (0.0, 0.0))[0] for i in range(n))
        return max(0.2, min(3.0, total / base)) if base > 0 else 1.0

    def learn(self, kind: int, slots: list[float], weekday_total: float) -> None:
        """One store's finished day (its slots' sales, NaN where it had no window)."""
        if weekday_total <= 0:
            return
        for share, square, value in zip(self.shares[kind], self.squares[kind], slots, strict=True):
            if value == value:  # not NaN
                x = value / weekday_total
                share.update(x)
                square.update(x * x)
        self.days[kind] += 1

    def shape(self, stores: int = 0) -> FleetShape:
        """What this shard has learned, as the data it publishes (its own stores only: the prior
        is the others', and publishing it back would count them twice)."""
        return FleetShape(
            SHAPE_VERSION,
            self.slots_per_day,
            [
                KindShape(
                    self.days[k],
                    [r.get() for r in self.shares[k]],
                    [r.get() for r in self.squares[k]],
                )
                for k in range(3)
            ],
            stores,
        )
