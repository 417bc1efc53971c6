"""Our detector: what is normal for a store at this local time, learned online from its second day.

Each window is compared with what is normal for *that store at that local time*, so the morning
ramp-up and the lunch peak are expected, not alarming. Normal comes from up to three estimates of a
slot's sales (15 minutes of the store's local day), each one kept in checkpointed state:

* **week**: the same slot of the local week (an exponentially weighted mean per slot, smoothed with its
  neighbours except across an opening or closing edge); the newest week weighs `season_fading`.
* **day**: the same slot of the store's own days of the same kind (weekday, Saturday, Sunday),
  learned day by day (`profile_fading` for the newest).
* **fleet**: the share of a weekday's sales the shard's stores make in that slot on that kind of day
  (`PeerDayShape`), times this store's own weekday total: its peers' shape, scaled to its level.

From its second day a store is judged on what it has. While its history is short, the estimates
disagree, so a window must be anomalous against all of them: a jump is judged against the highest,
a drop against the lowest of the store's own (the fleet alone never raises a drop, so a Saturday that
closes earlier than the peers' does not page). On a weekend day of a kind the store has not had, a
drop is judged against its own weekday shape at the level the day has shown since opening, never
above the peers, and only while it still sells (nothing sold may be a closing it cannot know).
The fleet is left out once a store has `own_days` of that kind of day, the day profile once the
slot of the week has `full_weeks`: weekly detail takes over as weeks accrue. So one odd day defines
nothing: an outage on day one is outvoted by the fleet on day two, and a week later by the store's
other days.

Everything is learned clipped to a band around what was expected (a narrow one when the window was
anomalous), so an incident does not teach any estimate that it is normal.

* Level: today's traffic against the estimate (a gamma-Poisson update from 1.0, with the store's
  learned day-to-day variation as the prior), so a busy or quiet day shifts the expectation instead
  of raising alarms all day. "Today" is the store's local day. While the evidence of a drop builds,
  windows wait instead of teaching it, so an outage does not lower its own expectation.
* Spread: window counts are negative binomial with variance = expected + the estimate's own
  variance + phi * expected^2, phi learned per window size from ordinary windows (starting from a
  prior). Refunds are expected at the store's own refund rate (refunds per sale), quasi-Poisson.
* Score: -log10 of the tail probability of the observed count; an alert needs the score over the
  threshold *and* a change that matters (half the sales gone, half as many again, four refunds).
* Closed days: a drop is only judged where the store's own history says it is open; a day kind the
  store has only ever been closed on stays quiet.

It judges each 15-minute window, the last 30 minutes (two windows) and each 1-hour window.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, NamedTuple

import msgspec

from foundation.timeunits import DAY_MS, WEEK_MS
from processors.core import tails
from processors.core.detectors.base import (
    QUIET,
    DetectorConfig,
    FadingMean,
    Finding,
    PeerDayShape,
    Running,
    Spread,
    Verdict,
    day_type,
    inverse_neff,
    merge,
    severity,
    weekday,
    within_marked,
)
from processors.core.windows import WindowResult, WindowSpec

_KERNEL: Final = (0.3, 0.4, 0.3)
_EDGE: Final = 0.1  # neighbours tenfold (and clearly, not by chance) apart are not smoothed together
_QUIET_MEAN: Final = 0.05  # expected sales below this and nothing happened: a closed store
_DAY_OVER: Final = 4  # closed windows in a row that end a trading day
_MIN_DAY_SALES: Final = 20.0
_NAN: Final = float("nan")
_AGREE: Final = 0.5625  # peers agree on a slot when their shares' sd is within 75% of the mean
_DAY_SD: Final = 0.15  # relative difference of one day's slot from the usual, before it is measured

# An estimate of a window's sales: (mean, variance of that estimate)
Estimate = tuple[float, float]


class _DayLevel:
    """Today's traffic against the expectation: busy days and quiet days shift it.

    Before the first window of a day the level is 1.0, give or take the learned day-to-day
    variation; each ordinary window of the day then moves it (a gamma-Poisson update:
    level = (observed + k) / (expected + k), with k = 1 / variation), and its uncertainty shrinks.
    A new local day, or an hour with the store closed, ends the day; the day's ratio of sales to
    expectation teaches the variation (a faded mean), with the part Poisson noise explains
    taken out.
    """

    __slots__ = ("closed_run", "day_exp", "day_obs", "days", "exp", "fading", "level", "obs", "variation")

    def __init__(self, fading: float, day_fading: float) -> None:
        self.fading = fading
        self.obs = 0.0  # exponentially weighted sums over today's ordinary windows
        self.exp = 0.0
        self.day_obs = 0.0  # plain sums over today, for the day-to-day variation
        self.day_exp = 0.0
        self.variation = Running(day_fading)
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

    def held(self, observed: float, expected: float) -> None:
        """A window under suspicion of a drop: it counts for how the day went (the day-to-day
        variation), not for today's level."""
        self.closed_run = 0
        self.day_obs += observed
        self.day_exp += expected

    def closed(self) -> None:
        self.closed_run += 1
        if self.closed_run == _DAY_OVER:
            self.end_day()

    def end_day(self) -> None:
        if self.day_exp >= _MIN_DAY_SALES:
            ratio = self.day_obs / self.day_exp
            # Winsorised at 2 standard deviations of what it has learned so far (at least 10%): a
            # young store's days are judged against rough estimates, and an incident's day is odd
            # by design; neither should loosen every later day's level for weeks.
            noise = 1.0 / self.day_exp
            cap = 4.0 * max(self._prior_var(), 0.01) + noise
            self.variation.update(min((ratio - 1.0) ** 2, cap) - noise)
            self.days += 1
        self.obs = self.exp = self.day_obs = self.day_exp = 0.0
        self._update()


class _Slot(NamedTuple):
    """Where a window falls in the store's local week: its kind of day, its slot of the day, and its
    slot of the week."""

    kind: int
    slot: int
    week_slot: int


class _Window(msgspec.Struct, frozen=True):
    """A judged 15-minute window as the 30-minute and 1-hour views need it."""

    window: WindowResult
    central: Estimate | None  # None: nothing to compare it with
    low: Estimate | None
    high: Estimate | None


class SeasonalDetector:
    """One store's detector (see the module docstring)."""

    # Operator feedback in force for the window being observed, set by the monitor around `observe`
    # (processors/core/feedback.py): deviations excused as ordinary, (metric, direction, the marked
    # size (observed / expected), margin: base.within_marked), and directions with a lower bar,
    # (metric, direction, threshold relief in -log10 p, size gate ease). Empty outside `observe`.
    excused: tuple[tuple[str, str, tuple[float, float], float], ...] = ()
    keen: tuple[tuple[str, str, float, float], ...] = ()
    # The metrics a mark excused in the window being observed (set by _excuse, cleared by the monitor)
    hits: tuple[str, ...] = ()

    def __init__(self, config: DetectorConfig, slot_ms: int, long_slots: int) -> None:
        self.config = config
        self.slot_ms = slot_ms
        self.long_slots = long_slots  # slots in the long (hopping) window
        self.per_day = DAY_MS // slot_ms
        n = WEEK_MS // slot_ms
        self.week = [FadingMean(config.season_fading) for _ in range(n)]
        self.weeks_seen = bytearray(n)  # updates per slot of the local week (Monday first), capped at 255
        self._inv_neff = inverse_neff(config.season_fading)
        # Per kind of day (weekday, Saturday, Sunday) and slot of the local day
        self.profile = [[0.0] * self.per_day for _ in range(3)]
        self.profile_sq = [[0.0] * self.per_day for _ in range(3)]  # ... of the squares
        self.profile_seen = [bytearray(self.per_day) for _ in range(3)]
        self.days_seen = [0, 0, 0]  # local days of each kind the store has finished
        self.day = -1  # the local day being traded (day number)
        self.day_slots = [_NAN] * self.per_day  # today's sales per slot, as learned (clipped)
        self.day_total = 0.0
        self.sold_today = 0  # sales of the local day so far
        self.weekday_total = Running(config.profile_fading)  # a weekday's sales, for the fleet
        self.totals_seen = 0
        self._scale_key = (-1, -1, -1)
        self._scale_value = 0.0
        self.first_ms: int | None = None  # the store's first window
        self.suspicion = 0.0  # the evidence of a drop at the last window (_evidence)
        # A day kind nothing is known of: today's sales and the weekday profile over the same slots
        # (sums, and the newest two windows waiting to join them), for _guess
        self.guess_day = (0.0, 0.0)
        self.open_day = (0.0, 0.0)  # ... since its first sale of the day, for drops
        self.guess_recent: deque[tuple[float, float, bool]] = deque()
        self.today = _DayLevel(config.level_fading, config.day_fading)
        self.refund_num = Running(config.refund_fading)
        self.refund_den = Running(config.refund_fading)
        self.refund_rate = 0.0  # refunds per sale, derived from the two above
        self.refund_seen = 0
        self.spread = {
            (size, metric): Spread(
                config.spread_fading,
                metric == "sales",
                config.sales_spread_prior if metric == "sales" else config.refund_spread_prior,
            )
            for size in ("short", "mid", "long")
            for metric in ("sales", "refunds")
        }
        self.recent: deque[_Window] = deque(maxlen=max(long_slots, 2, config.cusum_windows))
        # Per recent window, what the evidence of a drop or a jump is computed from: (start, observed
        # sales, low mean, its variance, high mean, its variance)
        self.evidence: deque[tuple[int, float, float, float, float, float]] = deque(
            maxlen=max(config.cusum_windows, 1)
        )

    # --- the estimates -------------------------------------------------------------------------

    def _week(self, slot: int) -> Estimate | None:
        """Expected sales in a slot of the week (smoothed over its neighbours) and its variance."""
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
        mean = total / weight
        var = var / (weight * weight)
        k = seen[slot]
        if k < 3:
            var += (_DAY_SD * mean) ** 2 / k  # one or two weeks: the days not being alike
        return mean, var

    def _profile(self, kind: int, slot: int) -> Estimate | None:
        n = self.profile_seen[kind][slot]
        if not n:
            return None
        mean = self.profile[kind][slot]
        # How far one day's slot strays from the profile: measured across the days seen (a Friday is
        # not a Tuesday), with a prior of a third of the mean that one or two days cannot overrule.
        spread = max(self.profile_sq[kind][slot] - mean * mean, 0.0)
        prior = max(mean, 0.1) + (_DAY_SD * mean) ** 2
        if n == 1:
            return mean, prior
        return mean, ((n - 1) * spread + prior) / n

    def expected_sales(self, start_ms: int, offset_ms: int) -> float | None:
        """What the store's own history expects in the slot starting at `start_ms` (UTC; its local
        time is `start_ms + offset_ms`): the same slot of the week once seen, else the same slot of
        its days of that kind; None when it knows neither. For judging a silence of the whole
        stream, not a window: no level, no peers."""
        local = start_ms + offset_ms
        day = local // DAY_MS
        slot = (local % DAY_MS) // self.slot_ms
        found = self._week(weekday(day) * self.per_day + slot) or self._profile(day_type(day), slot)
        return None if found is None else found[0]

    def _fleet(self, fleet: PeerDayShape, kind: int, slot: int) -> tuple[Estimate, bool] | None:
        """The peers' estimate, and whether they agree enough (within half the share) to judge by."""
        if not self.totals_seen:
            return None
        found = fleet.share(kind, slot)
        if found is None:
            return None  # too few peers have had such a day: a weekday's shape would mislead
        share, share_var = found
        total = self._scale(fleet)
        mean = share * total
        # Peers that disagree here (one opens at 7, another at 9) make a wide estimate.
        var = max(mean, 0.1) + max(share_var * total * total, (self.config.fleet_spread * mean) ** 2)
        return (mean, var), share > 0 and share_var <= _AGREE * share * share

    def _scale(self, fleet: PeerDayShape) -> float:
        """The store's weekday total, to scale the peers' shape by: the median over the fleet's busy
        slots of the store's own weekday profile against the fleet's share (one odd hour, even an
        outage of a whole morning, does not move a median), or the plain total when that cannot be
        had. Kept until the day or the fleet changes."""
        key = (self.day, fleet.days[0], fleet.revision)
        if self._scale_key == key:
            return self._scale_value
        value = self.weekday_total.get()
        if fleet.known(0):
            seen = self.profile_seen[0]
            profile = self.profile[0]
            floor = 0.3 / self.per_day  # slots with at least a third of an average slot's share
            ratios = []
            for i in range(self.per_day):
                found = fleet.share(0, i)
                if seen[i] and found is not None and found[0] > floor:
                    ratios.append(profile[i] / found[0])
            if len(ratios) >= 8:
                ratios.sort()
                value = ratios[len(ratios) // 2]
        self._scale_key, self._scale_value = key, value
        return value

    # --- days ----------------------------------------------------------------------------------

    def _new_day(self, day: int, fleet: PeerDayShape) -> None:
        """The store's local day changed: learn from the day that ended."""
        if self.day >= 0:
            self.today.end_day()
            kind = day_type(self.day)
            self.days_seen[kind] += 1
            covered = [i for i, v in enumerate(self.day_slots) if v == v]
            total = self.day_total
            if total > 0:
                # A weekday's worth: scaled by the fleet's ratio of this kind of day to a weekday,
                # and by the part of a day the store's first (partial) day covered.
                part = 1.0
                if len(covered) < self.per_day and fleet.known(kind):
                    shares = [(fleet.share(kind, i) or (0.0, 0.0))[0] for i in range(self.per_day)]
                    whole = sum(shares)
                    part = sum(shares[i] for i in covered) / whole if whole > 0 else 1.0
                if part >= 0.5:
                    self.weekday_total.update(total / (fleet.ratio(kind) * part))
                    self.totals_seen += 1
            if self.totals_seen and total > 0:  # a closed day says nothing about the shape of a day
                fleet.learn(kind, self.day_slots, self.weekday_total.get())
        self.day = day
        self.guess_day = (0.0, 0.0)
        self.open_day = (0.0, 0.0)
        self.guess_recent.clear()
        self.day_slots = [_NAN] * self.per_day
        self.day_total = 0.0
        self.sold_today = 0

    # --- per window ----------------------------------------------------------------------------

    def observe(self, window: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        if self.first_ms is None:
            self.first_ms = window.start_ms
        duration = window.end_ms - window.start_ms
        if duration == self.slot_ms and window.spec.kind == "tumbling":
            return self._short(window, offset_ms, fleet)
        if self.long_slots > 1 and duration == self.long_slots * self.slot_ms:
            return self._long(window)
        return QUIET

    def _short(self, w: WindowResult, offset_ms: int, fleet: PeerDayShape) -> Verdict:
        """One window of the slot's length: judged against what the store's own history (its week,
        its shape of a day) and its peers' shape expect at today's level, then learned, clipped so
        that an incident barely moves an estimate."""
        cfg = self.config
        local = w.start_ms + offset_ms
        day = local // DAY_MS
        slot = (local % DAY_MS) // self.slot_ms
        if day != self.day:
            self._new_day(day, fleet)
        at = _Slot(day_type(day), slot, weekday(day) * self.per_day + slot)
        kind = at.kind

        weekly = self._week(at.week_slot)
        k_week = self.weeks_seen[at.week_slot]
        own_day = self._profile(kind, slot) if k_week < cfg.full_weeks else None
        found = self._fleet(fleet, kind, slot) if self.days_seen[kind] < cfg.own_days and k_week < 2 else None
        peers, agreed = found if found is not None else (None, False)
        own = [e for e in (weekly, own_day) if e is not None]
        every = own + ([peers] if peers is not None else [])
        if not every:
            return self._short_unheard(w, at)
        # The central estimate (for learning and the expected range): own history outweighs peers.
        weights = [2.0 * k_week] if weekly is not None else []
        if own_day is not None:
            weights.append(float(min(self.profile_seen[kind][slot], 4)))
        if peers is not None:
            weights.append(1.0)
        wsum = sum(weights)
        c_mean = sum(wt * e[0] for wt, e in zip(weights, every, strict=True)) / wsum
        c_var = sum(wt * wt * e[1] for wt, e in zip(weights, every, strict=True)) / (wsum * wsum)
        mean = c_mean * self.today.level[0]
        if mean < _QUIET_MEAN and w.sales == 0 and w.refunds == 0:
            self.today.closed()
            self._learn_slots(kind, slot, at.week_slot, 0.0, None)
            self.recent.append(_Window(w, (mean, 0.0), None, None))
            return QUIET
        central, low, high = self._short_bounds(w, at, (c_mean, c_var), own, weights, peers, agreed)
        self.sold_today += w.sales
        previous = self.recent[-1] if self.recent else None
        self.recent.append(_Window(w, central, low, high))
        # Where the store has no history of its own for the slot (before its first opening time, a
        # kind of day it has not had), the peers' shape judges, but it does not teach the spread or
        # today's level: a store that opens later than its peers is not a quiet day.
        teach = bool(own) or not cfg.own_learning
        verdict = self._short_verdict(w, previous, central, low, high, bool(own), teach)
        self._short_learn(w, at, verdict.findings, central, c_mean, own, every, teach)
        return verdict

    def _short_unheard(self, w: WindowResult, at: _Slot) -> Verdict:
        """The store's first day, or the first of a kind no peer has had either: nothing to compare
        sales with yet; learn them as they are. Refunds are still judged (from the second day),
        against the store's refund rate on the sales it has."""
        kind, slot = at.kind, at.slot
        sales = float(w.sales)
        guess = self._guess(kind, slot)
        self._follow_day(kind, slot, sales)
        self.sold_today += w.sales
        previous = self.recent[-1] if self.recent else None
        self.recent.append(_Window(w, None, None, guess))
        verdict = QUIET
        if self._warm(w) and w.sales > 0:
            verdict = self._judge(w, (sales, 0.0), None, guess, "short", learn=guess is None)
            if (
                guess is not None
                and not verdict.findings
                and previous is not None
                and previous.central is None
                and previous.high is not None
                and previous.window.end_ms == w.start_ms
            ):
                both = merge([previous.window, w], WindowSpec(2 * self.slot_ms, self.slot_ms))
                total = (float(both.sales), 0.0)
                mid = self._judge(both, total, None, _add(previous.high, guess), "mid", learn=False)
                if mid.findings:
                    spans = tuple(msgspec.structs.replace(f, window=both) for f in mid.findings)
                    verdict = Verdict(spans, verdict.expected)
        learned = sales
        if guess is not None:
            # What the first weekend teaches is capped at a standard deviation over the guess
            # (the day's own level times the busiest weekday slot around, plus half), so a spike on
            # a store's first Sunday does not make its next Sunday a "collapse".
            learned = min(sales, guess[0] + math.sqrt(guess[1]))
        self._learn_slots(kind, slot, at.week_slot, learned, None)
        if w.sales > 0 and not verdict.findings and "refunds" not in self.hits:
            self._learn_refunds(float(w.refunds), sales)
        return verdict

    def _short_bounds(
        self,
        w: WindowResult,
        at: _Slot,
        centre: Estimate,
        own: list[Estimate],
        weights: list[float],
        peers: Estimate | None,
        agreed: bool,
    ) -> tuple[Estimate, Estimate | None, Estimate | None]:
        """The window's expected sales at today's level, and the bounds of a drop and of a jump."""
        cfg = self.config
        level, level_var = self.today.level
        sales = float(w.sales)

        def scaled(e: Estimate) -> Estimate:
            m = e[0] * level
            return m, level * level * e[1] + m * m * level_var

        central = scaled(centre)
        # A jump must be one against every estimate that can speak here; a drop, against the
        # store's own history, or the peers when they agree and the store has traded today.
        judges = own + ([peers] if peers is not None and agreed else [])
        alpha = cfg.bound_weight
        high = scaled(_towards(centre, max(judges), cfg.jump_bound_weight)) if judges else None
        low: Estimate | None
        drop_guess = None
        if not own:
            drop_guess = self._drop_guess(at.kind, at.slot, sales) if agreed and self.sold_today > 0 else None
            self._follow_day(at.kind, at.slot, sales)
        if drop_guess is not None and peers is not None:
            # A weekend day of a kind the store has not had: a drop against its own weekday shape at
            # today's level, never above the peers (both must see it)
            low = drop_guess if drop_guess[0] <= peers[0] else peers
        elif peers is not None and agreed and self.sold_today > 0 and (own or cfg.peer_drops):
            # The peers may lower the bar of a drop, never raise it above the store's own history
            # (a store that closes its Saturday at 17:00 while its peers trade on).
            low = scaled(_towards(_centre(own, weights) if own else centre, min(judges), alpha))
        else:
            low = scaled(_towards(_centre(own, weights), min(own), alpha)) if own else None
        return central, low, high

    def _short_verdict(
        self,
        w: WindowResult,
        previous: _Window | None,
        central: Estimate,
        low: Estimate | None,
        high: Estimate | None,
        own: bool,
        teach: bool,
    ) -> Verdict:
        """The window judged alone, over the last 30 minutes with the one before it, and as the
        latest of a run of evidence."""
        cfg = self.config
        # Refunds follow the customers in the store: where only the peers' shape speaks (a first
        # Sunday against peers that open later), the sales the store is making count too.
        traffic = None if own else float(w.sales)
        verdict = self._judge(w, central, low, high, "short", learn=teach, traffic=traffic)
        findings = verdict.findings
        if previous is not None and previous.central is not None and previous.window.end_ms == w.start_ms:
            # The last 30 minutes: a change that is too small for one window shows over two.
            both = merge([previous.window, w], WindowSpec(2 * self.slot_ms, self.slot_ms))
            mid = self._judge(
                both,
                (previous.central[0] + central[0], previous.central[1] + central[1]),
                _add(previous.low, low),
                _add(previous.high, high),
                "mid",
                learn=teach,
                traffic=None if own else float(both.sales),
            )
            if mid.findings:
                seen = {f.metric for f in findings}
                extra = tuple(
                    msgspec.structs.replace(f, window=both) for f in mid.findings if f.metric not in seen
                )
                findings = findings + extra
                verdict = Verdict(findings, verdict.expected)
        found_run = self._evidence(w, low, high) if cfg.cusum_threshold > 0 else None
        if found_run is not None and not any(f.metric == "sales" for f in findings):
            findings = (*findings, found_run)
            verdict = Verdict(findings, verdict.expected)
        return verdict

    def _short_learn(
        self,
        w: WindowResult,
        at: _Slot,
        findings: tuple[Finding, ...],
        central: Estimate,
        c_mean: float,
        own: list[Estimate],
        every: list[Estimate],
        teach: bool,
    ) -> None:
        """Learn the window: its slot's estimates, today's level and the refund rate."""
        cfg = self.config
        sales = float(w.sales)
        sales_flag = refund_flag = False
        for f in findings:
            if f.metric == "sales":
                sales_flag = True
            else:
                refund_flag = True
        # Learn, clipped to a band around what was expected (one standard deviation when the window
        # is anomalous), so an incident, even one not flagged, barely moves any estimate. The band is
        # as wide as the estimates are unsure (one odd first day against its peers: wide), and the
        # peers' shape alone clips nothing: where it is wrong for this store, the store's own trade
        # must be able to correct it.
        m, known = central
        sd = math.sqrt(self.spread["short", "sales"].variance(m, known))
        if own:
            band = sd if sales_flag else cfg.learn_clip * sd
            learned = min(max(sales, m - band), m + band)
        else:
            learned = sales
        self._learn_slots(at.kind, at.slot, at.week_slot, learned, c_mean)
        if c_mean < 0.5:
            self.today.closed()
        elif not teach or _disagree(every):
            # Estimates far apart (an outage on the store's first day against its peers' trade) say
            # nothing about today's level: ordinary trade against the outage would look like a
            # day at 2.5 times, and the rest of the day would then look like a collapse.
            self.today.flagged()
        elif "sales" in self.hits:
            # Excused by a mark: ordinary for its own slot (learned above at the ordinary band), but
            # the store's level today says how the day goes elsewhere, which a promotion does not.
            self.today.flagged()
        elif not sales_flag:
            band = cfg.level_clip * sd
            clipped = min(max(sales, m - band), m + band)
            if 0.0 < cfg.level_hold <= self.suspicion:
                self.today.held(clipped, c_mean)  # the day's total counts it, today's level waits
            else:
                self.today.learn(clipped, c_mean)
        else:
            self.today.flagged()
        if not refund_flag and w.sales > 0 and "refunds" not in self.hits:
            self._learn_refunds(float(w.refunds), sales)

    def _evidence(self, w: WindowResult, low: Estimate | None, high: Estimate | None) -> Finding | None:
        """Evidence of a drop or a jump of sales over the last few windows, and a finding once it
        is enough.

        Per window, the log-likelihood ratio of "sales are cusum_drop (cusum_jump) times the
        expected" against "as expected", for Poisson counts, divided by the window's dispersion
        (variance over mean, quasi-likelihood, at most `cusum_max_dispersion`); the evidence is the
        largest sum over the last 1 to `cusum_windows` windows, so a collapse in a quiet store, a
        few sales short in each window, adds up within the hour."""
        cfg = self.config
        spread = self.spread["short", "sales"]
        evidence = self.evidence
        if evidence and evidence[-1][0] + self.slot_ms != w.start_ms:
            evidence.clear()  # not consecutive: a gap of event time
        lo_m, lo_v = low if low is not None else (0.0, 0.0)
        hi_m, hi_v = high if high is not None else (0.0, 0.0)
        if lo_m > 0:
            lo_v = spread.variance(lo_m, lo_v)
        if hi_m > 0:
            hi_v = spread.variance(hi_m, hi_v)
        evidence.append((w.start_ms, float(w.sales), lo_m, lo_v, hi_m, hi_v))
        self.suspicion = 0.0
        if not self._warm(w):
            return None
        cap = cfg.cusum_max_dispersion
        log_drop, log_jump = math.log(cfg.cusum_drop), math.log(cfg.cusum_jump)
        best = drop = 0.0
        best_at = (0, "")
        n = len(evidence)
        sum_drop = sum_jump = 0.0
        for first in range(n - 1, -1, -1):  # the spans ending with this window, shortest first
            _, x, lm, lv, hm, hv = evidence[first]
            if lm > 0:
                sum_drop += (x * log_drop + lm * (1.0 - cfg.cusum_drop)) / min(cap, max(1.0, lv / lm))
            if hm > 0:
                sum_jump += (x * log_jump + hm * (1.0 - cfg.cusum_jump)) / max(1.0, hv / hm)
            drop = max(drop, sum_drop)
            if sum_drop > best:
                best, best_at = sum_drop, (first, "low")
            if sum_jump > best:
                best, best_at = sum_jump, (first, "high")
        # Only a drop holds today's level: a busy day looks like the start of a spike for a while, and
        # a level that may not follow it pages at its peak; a spike is seldom subtle enough to need it.
        self.suspicion = drop
        first, direction = best_at
        relief, ease = self._relief("sales", direction) if direction else (0.0, 0.0)
        if best < cfg.cusum_threshold - relief * math.log(10.0):
            return None
        parts = [evidence[i] for i in range(first, n)]
        observed = sum(p[1] for p in parts)
        low_side = direction == "low"
        mean = sum(p[2] if low_side else p[4] for p in parts)
        var = sum(p[3] if low_side else p[5] for p in parts)
        if direction == "low" and (
            mean < cfg.min_expected_sales or observed > (cfg.drop_ratio + ease) * mean
        ):
            return None
        lo, hi = tails.expected_range(mean, var)
        if direction == "high" and (
            observed < hi + cfg.min_extra_sales or observed < (cfg.jump_ratio - ease) * mean
        ):
            return None
        windows = [r.window for r in list(self.recent)[-len(parts) :]]
        if len(windows) != len(parts) or windows[0].start_ms != parts[0][0]:
            return None
        span = merge(windows, WindowSpec(len(parts) * self.slot_ms, self.slot_ms)) if len(parts) > 1 else w
        sc = best / math.log(10.0)
        magnitude = 1.0 - observed / mean if direction == "low" else (observed / max(mean, 1.0) - 1.0) / 3.0
        sev = severity(sc, cfg.threshold, magnitude)
        found = Finding("sales", direction, observed, mean, lo, hi, sc, sev, None if span is w else span)
        return None if self._excuse(found, span.end_ms - span.start_ms) else found

    def _learn_slots(
        self, kind: int, slot: int, week_slot: int, value: float, expected: float | None
    ) -> None:
        """Teach the day profile and (once there is something to clip against) the week's slot."""
        n = self.profile_seen[kind][slot]
        profile = self.profile[kind]
        squares = self.profile_sq[kind]
        if n == 0:
            profile[slot] = value
            squares[slot] = value * value
        else:
            rate = max(self.config.profile_fading, 1.0 / (n + 1))
            profile[slot] += (value - profile[slot]) * rate
            squares[slot] += (value * value - squares[slot]) * rate
        if n < 255:
            self.profile_seen[kind][slot] = n + 1
        if expected is not None:
            self.week[week_slot].update(value)
            if self.weeks_seen[week_slot] < 255:
                self.weeks_seen[week_slot] += 1
        self.day_slots[slot] = value
        self.day_total += value

    def _guess(self, kind: int, slot: int) -> Estimate | None:
        """A weekend day nothing is known of yet: the store's weekday profile around the slot, times
        `guess_ratio`, as wide as `guess_spread` says (only jumps are judged against it)."""
        ratio = self.config.guess_ratio
        if ratio <= 0 or kind == 0:
            return None
        seen = self.profile_seen[0]
        profile = self.profile[0]
        n = self.per_day
        values = [profile[i % n] for i in range(slot - 2, slot + 3) if seen[i % n]]
        if len(values) < 3:
            return None
        prior = self.config.guess_prior
        if prior > 0:
            # The store's own day so far: its sales against its weekday profile in the same slots
            # (the newest two windows left out, so a jump does not raise its own bar), starting
            # from guess_ratio with the weight of `prior` expected sales.
            obs, base = self.guess_day
            ratio = (obs + prior * ratio) / (base + prior)
        mean = max(values) * ratio
        if mean < 1.0:
            return None
        return mean, mean + (self.config.guess_spread * mean) ** 2

    def _follow_day(self, kind: int, slot: int, sales: float) -> None:
        """On a weekend day of a kind the store has not had: its sales so far against its weekday
        profile in the same slots (the newest two windows wait, so a change does not set its own bar).
        For jumps, every slot the weekday profile knows; for drops, only those since the store's first
        sale of the day (a later opening is not a quiet day), and none while a drop builds."""
        if kind and self.profile_seen[0][slot]:
            self.guess_recent.append((sales, self.profile[0][slot], self.sold_today + sales > 0))
            if len(self.guess_recent) > 2:
                done_sales, done_base, opened = self.guess_recent.popleft()
                obs, base = self.guess_day
                self.guess_day = (obs + done_sales, base + done_base)
                if opened and not 0.0 < self.config.level_hold <= self.suspicion:
                    obs, base = self.open_day
                    self.open_day = (obs + done_sales, base + done_base)

    def _drop_guess(self, kind: int, slot: int, sales: float) -> Estimate | None:
        """The bar of a drop on a weekend day of a new kind: the quietest of the slot and two either
        side in the store's weekday profile, times the day's own ratio since opening to that profile.
        Only where even that quietest slot is busy (inside weekday hours, away from their edges), once
        the day has shown its level, and only while the store still sells: a store that sells nothing
        may have closed, which its first such day cannot tell from an outage."""
        if kind == 0 or sales <= 0:
            return None
        seen = self.profile_seen[0]
        profile = self.profile[0]
        n = self.per_day
        values = [profile[i % n] for i in range(slot - 2, slot + 3) if seen[i % n]]
        obs, base = self.open_day
        if len(values) < 5 or base < self.config.guess_prior:
            return None
        mean = min(values) * obs / base
        if mean < self.config.min_expected_sales:
            return None
        return mean, mean + (self.config.guess_spread * mean) ** 2

    # --- operator feedback ---------------------------------------------------------------------

    def _excuse(self, finding: Finding, span_ms: int) -> bool:
        """A finding an operator's `not_anomaly` mark makes ordinary here (no bigger than the marked
        one): not flagged, so the window teaches its slot's baselines as an ordinary one does. The
        store-wide estimates (the spread, today's level, the refund rate) do not learn from it: they
        judge every other hour too, and a deviation that is ordinary here would loosen them there."""
        if any(
            metric == finding.metric
            and direction == finding.direction
            and within_marked(direction, finding.observed, finding.mean, span_ms, mark, margin)
            for metric, direction, mark, margin in self.excused
        ):
            self.hits = (*self.hits, finding.metric)
            return True
        return False

    def _relief(self, metric: str, direction: str) -> tuple[float, float]:
        """How much lower the bar of this direction is here (a `missed` mark): (score, size gate)."""
        for m, d, relief, ease in self.keen:
            if m == metric and d == direction:
                return relief, ease
        return 0.0, 0.0

    def _learn_refunds(self, refunds: float, sales: float) -> None:
        self.refund_num.update(refunds)
        self.refund_den.update(sales)
        self.refund_seen += 1
        den = self.refund_den.get()
        self.refund_rate = self.refund_num.get() / den if den > 0 else 0.0

    def _warm(self, w: WindowResult) -> bool:
        assert self.first_ms is not None
        return w.end_ms >= self.first_ms + self.config.warmup_days * DAY_MS

    def _long(self, w: WindowResult) -> Verdict:
        n = self.long_slots
        recent = self.recent
        if len(recent) < n:
            return QUIET
        parts = [recent[i] for i in range(len(recent) - n, len(recent))]
        if parts[0].window.start_ms != w.start_ms:
            return QUIET
        central: Estimate | None = (0.0, 0.0)
        low: Estimate | None = (0.0, 0.0)
        high: Estimate | None = (0.0, 0.0)
        for p in parts:
            if p.central is None:
                return QUIET
            central = _add(central, p.central)
            low = _add(low, p.low)
            high = _add(high, p.high)
        if central is None:
            return QUIET
        if central[0] < _QUIET_MEAN and w.sales == 0 and w.refunds == 0:
            return QUIET
        return self._judge(w, central, low, high, "long")

    def _judge(
        self,
        w: WindowResult,
        central: Estimate,
        low: Estimate | None,
        high: Estimate | None,
        size: str,
        learn: bool = True,
        traffic: float | None = None,
    ) -> Verdict:
        """Score a window against the estimates, then learn the spread from it. Refunds are
        expected at the store's refund rate on the expected sales, or on `traffic` (the sales made)
        when that is more: given where the expectation rests on the peers alone."""
        cfg = self.config
        sales = float(w.sales)
        refunds = float(w.refunds)
        mean, known = central
        s_spread = self.spread[size, "sales"]
        r_spread = self.spread[size, "refunds"]
        s_var = s_spread.variance(mean, known)
        r_mean = self.refund_rate * (mean if traffic is None else max(mean, traffic))
        r_var = r_spread.variance(r_mean)
        s_range = tails.expected_range(mean, s_var)
        r_range = tails.expected_range(r_mean, r_var)
        findings: tuple[Finding, ...] = ()
        sales_flag = refund_flag = False
        if self._warm(w) and s_spread.n >= cfg.min_spread_windows:
            found = self._sales(sales, low, high, s_spread)
            if found is not None and not self._excuse(found, w.end_ms - w.start_ms):
                findings = (found,)
                sales_flag = True
            if r_spread.n >= cfg.min_spread_windows and self.refund_seen >= 8:
                found = self._refunds(refunds, r_mean, r_var, r_range)
                if found is not None and not self._excuse(found, w.end_ms - w.start_ms):
                    findings = (*findings, found)
                    refund_flag = True
        if mean >= 1.0 and not sales_flag and learn and "sales" not in self.hits:
            s_spread.learn(sales, mean, known)
        if r_mean > 0.0 and not refund_flag and "refunds" not in self.hits:
            r_spread.learn(refunds, r_mean)
        return Verdict(findings, {"sales": s_range, "refunds": r_range})

    def _sales(self, x: float, low: Estimate | None, high: Estimate | None, spread: Spread) -> Finding | None:
        cfg = self.config
        if low is not None:
            mean, known = low
            var = spread.variance(mean, known)
            lo, hi = tails.expected_range(mean, var)
            relief, ease = self._relief("sales", "low")
            if mean >= cfg.min_expected_sales and x <= (cfg.drop_ratio + ease) * mean:
                sc = tails.score(tails.lower_tail(x, mean, var))
                drop_threshold = cfg.drop_threshold or cfg.threshold
                if sc >= drop_threshold - relief:
                    sev = severity(sc, drop_threshold, 1.0 - x / mean)
                    return Finding("sales", "low", x, mean, lo, hi, sc, sev)
        if high is not None:
            mean, known = high
            var = spread.variance(mean, known)
            lo, hi = tails.expected_range(mean, var)
            relief, ease = self._relief("sales", "high")
            if x > hi and x >= hi + cfg.min_extra_sales and x >= (cfg.jump_ratio - ease) * mean:
                sc = tails.score(tails.upper_tail(x, max(mean, 0.05), max(var, 0.05)))
                if sc >= cfg.threshold - relief:
                    sev = severity(sc, cfg.threshold, (x / max(mean, 1.0) - 1.0) / 3.0)
                    return Finding("sales", "high", x, mean, lo, hi, sc, sev)
        return None

    def _refunds(self, x: float, mean: float, var: float, rng: tuple[float, float]) -> Finding | None:
        cfg = self.config
        low, high = rng
        if x >= cfg.min_refunds and x > high:
            sc = tails.score(tails.upper_tail(x, max(mean, 0.01), max(var, 0.01)))
            if sc >= cfg.refund_threshold - self._relief("refunds", "high")[0]:
                sev = severity(sc, cfg.refund_threshold, (x - mean) / 10.0)
                return Finding("refunds", "high", x, mean, low, high, sc, sev)
        return None


def _disagree(estimates: list[Estimate]) -> bool:
    """Whether the estimates of a slot are too far apart to say what today's level is (an outage on
    the store's first day against its peers' trade): more than twice apart, beyond Poisson noise."""
    means = [e[0] for e in estimates]
    low, high = min(means), max(means)
    return high > 2.0 * low + 3.0 * math.sqrt(max(high, 1.0))


def _centre(estimates: list[Estimate], weights: list[float]) -> Estimate:
    """The weighted centre of the first estimates (the store's own: the peers come last)."""
    used = weights[: len(estimates)]
    total = sum(used)
    mean = sum(wt * e[0] for wt, e in zip(used, estimates, strict=True)) / total
    var = sum(wt * wt * e[1] for wt, e in zip(used, estimates, strict=True)) / (total * total)
    return mean, var


def _towards(centre: Estimate, bound: Estimate, alpha: float) -> Estimate:
    """An estimate a share `alpha` of the way from the weighted centre to the most extreme one."""
    if alpha >= 1.0:
        return bound
    if alpha <= 0.0:
        return centre
    return (
        centre[0] + alpha * (bound[0] - centre[0]),
        centre[1] + alpha * (bound[1] - centre[1]),
    )


def _add(a: Estimate | None, b: Estimate | None) -> Estimate | None:
    if a is None or b is None:
        return None
    return a[0] + b[0], a[1] + b[1]
