"""Operator feedback on a store's anomaly detection: what one mark changes, exactly.

An operator marks an anomaly alert "not an anomaly" (`not_anomaly`, by its `alert_id`), or a period of
a store as a "missed incident" (`missed`, by its start and end). Each mark becomes a *rule* of the
store, kept for `feedback_weeks` weeks after the period it is about, over the same local hours of the
week (the period, widened by `feedback_slack_slots` slots on each side; local time, so a mark survives
a daylight saving change):

* `not_anomaly` -> rule "ordinary": a later finding of the same metric and direction whose span
  overlaps those hours, and whose size (observed over expected) is no bigger than the marked one's
  (the biggest of its incident) by more than `feedback_margin` and Poisson noise
  (`detectors.base.within_marked`), is ordinary: no alert, and the detector learns the window as an
  ordinary one. A bigger deviation, another metric or direction, or other hours still alert.
* `missed` -> rule "keen": in those hours the detector's bar for the missed direction is lower (its
  score thresholds by `missed_relief` in -log10 p, its size gates by `missed_ease`). The direction
  is the one the period showed, from the store's hourly sums kept for the last `SEEN_HOURS` (sales
  below what was expected: drops; above: jumps; refunds above their expected range: refund bursts
  too); for a period older than that, every direction.

The windows a missed period taught are not taken back out of the baselines: the slots' faded means
keep no history to subtract them from (and an unflagged window is learned clipped to 3 standard
deviations of what was expected, so it moved them little).

Everything here is plain data (dicts of tuples, ints, floats and strings), checkpointed with the
monitor, and a mark is keyed by what it is about, so the same feedback applied twice (a replay past
the dedup's horizon) leaves the same state as once.
"""

from __future__ import annotations

from typing import Final

from foundation.timeunits import DAY_MS, HOUR_MS, WEEK_MS
from processors.core.detectors.base import DetectorConfig, Finding, within_marked

# An anomaly alert as remembered for its feedback: (metric, direction, start_ms, end_ms, UTC offset
# at start in ms, observed, expected mean, observed per ms) of its incident's biggest finding
Raised = tuple[str, str, int, int, int, float, float, float]
# A rule of a store: (effect, metric, direction, first ms of the local week, length in ms, ratio,
# until ms, per ms). effect "ordinary" (from not_anomaly) or "keen" (from missed); ratio and per ms
# are the marked observed over expected and its count per ms ("ordinary" only; 0.0 for "keen").
Rule = tuple[str, str, str, int, int, float, int, float]
# One hour of a store as judged: (hour start ms, sales, expected sales, refunds, refunds' upper bound)
Hour = tuple[int, float, float, float, float]

SEEN_HOURS: Final = 48
_MONDAY: Final = 3 * DAY_MS  # 1970-01-01 was a Thursday: local ms + this, mod a week, from Monday 00:00
_DIRECTIONS: Final = (("sales", "low"), ("sales", "high"), ("refunds", "high"))


def week_position(utc_ms: int, offset_ms: int) -> int:
    """Milliseconds since the store's local Monday 00:00 of an instant."""
    return (utc_ms + offset_ms + _MONDAY) % WEEK_MS


def overlaps(rule_from: int, rule_len: int, at: int, length: int) -> bool:
    """Whether two spans of the week (start, length; either may wrap past Sunday) overlap."""
    return (at - rule_from) % WEEK_MS < rule_len or (rule_from - at) % WEEK_MS < length


def ratio(observed: float, mean: float) -> float:
    """A deviation's size: observed over expected (expected floored at 1, as severity does)."""
    return observed / max(mean, 1.0)


class FeedbackBook:
    """Per store: the anomaly alerts raised (for an `alert_id` to mean something), the rules marks
    made, and the last hours as judged (the direction of a missed period). Bounded: alerts for
    `feedback_weeks` (at least 8) weeks and at most `feedback_alerts_kept`, rules until they expire,
    hours for SEEN_HOURS."""

    def __init__(self, config: DetectorConfig, slot_ms: int) -> None:
        self.weeks = config.feedback_weeks
        self.margin = config.feedback_margin
        self.slack_ms = config.feedback_slack_slots * slot_ms
        self.kept = config.feedback_alerts_kept
        self.relief = (config.missed_relief, config.missed_ease)
        self.raised: dict[str, dict[str, Raised]] = {}
        self.rules: dict[str, dict[str, Rule]] = {}
        self.hours: dict[str, list[Hour]] = {}
        self.counts: dict[str, int] = {}

    # --- what the detector raised and saw --------------------------------------------------------

    def remember(self, store_id: str, aid: str, finding: Finding, span: tuple[int, int], offset: int) -> None:
        """An anomaly alert was raised: keep what a `not_anomaly` mark of it needs."""
        raised = self.raised.setdefault(store_id, {})
        raised[aid] = (
            finding.metric,
            finding.direction,
            span[0],
            span[1],
            offset,
            finding.observed,
            finding.mean,
            finding.observed / max(span[1] - span[0], 1),
        )
        horizon = span[1] - max(self.weeks, 8) * WEEK_MS
        while raised and (len(raised) > self.kept or next(iter(raised.values()))[3] < horizon):
            del raised[next(iter(raised))]

    def extend(self, store_id: str, finding: Finding, span: tuple[int, int]) -> None:
        """A finding the cool-down took for the same incident as the last alert of its metric and
        direction: that alert now stands for it too (its hours reach this span's end, its size is
        the incident's biggest), so a mark of it covers the whole incident."""
        raised = self.raised.get(store_id)
        if not raised:
            return
        for aid in reversed(raised):
            metric, direction, start, end, offset, observed, mean, per_ms = raised[aid]
            if metric != finding.metric or direction != finding.direction:
                continue
            size, old = ratio(finding.observed, finding.mean), ratio(observed, mean)
            if size > old if direction == "high" else size < old:
                observed, mean = finding.observed, finding.mean
                per_ms = observed / max(span[1] - span[0], 1)
            raised[aid] = (metric, direction, start, max(end, span[1]), offset, observed, mean, per_ms)
            return

    def saw(
        self,
        store_id: str,
        start_ms: int,
        sales: float,
        expected: tuple[float, float] | None,
        refunds: float,
        refund_range: tuple[float, float] | None,
    ) -> None:
        """A short window was judged: add it to its hour (only windows with an expectation count)."""
        if expected is None:
            return
        hour = start_ms - start_ms % HOUR_MS
        hours = self.hours.setdefault(store_id, [])
        mid = 0.5 * (expected[0] + expected[1])
        r_hi = refund_range[1] if refund_range is not None else 0.0
        if hours and hours[-1][0] == hour:
            _, s, e, r, rh = hours[-1]
            hours[-1] = (hour, s + sales, e + mid, r + refunds, rh + r_hi)
        else:
            hours.append((hour, sales, mid, refunds, r_hi))
            del hours[:-SEEN_HOURS]

    # --- marks -----------------------------------------------------------------------------------

    def count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def not_anomaly(self, store_id: str, aid: str) -> bool:
        """Mark an alert of this store as no anomaly; False when the store has no such alert."""
        found = self.raised.get(store_id, {}).get(aid)
        if found is None:
            return False
        metric, direction, start, end, offset, observed, mean, per_ms = found
        at, length = self._hours(start, end, offset)
        until = end + self.weeks * WEEK_MS
        rules = self.rules.setdefault(store_id, {})
        rules["not_anomaly:" + aid] = (
            "ordinary",
            metric,
            direction,
            at,
            length,
            ratio(observed, mean),
            until,
            per_ms,
        )
        return True

    def missed(self, store_id: str, start: int, end: int, offset: int) -> tuple[tuple[str, str], ...]:
        """Mark a period of this store as a missed incident; returns the directions made keener."""
        at, length = self._hours(start, end, offset)
        until = end + self.weeks * WEEK_MS
        rules = self.rules.setdefault(store_id, {})
        directions = self._directions(store_id, start, end)
        for metric, direction in directions:
            rules[f"missed:{start}:{end}:{metric}:{direction}"] = (
                "keen",
                metric,
                direction,
                at,
                length,
                0.0,
                until,
                0.0,
            )
        return directions

    def _hours(self, start: int, end: int, offset: int) -> tuple[int, int]:
        at = week_position(start - self.slack_ms, offset)
        return at, min(end - start + 2 * self.slack_ms, WEEK_MS)

    def _directions(self, store_id: str, start: int, end: int) -> tuple[tuple[str, str], ...]:
        """The directions a missed period showed, from the hours kept; every one if none is kept."""
        inside = [h for h in self.hours.get(store_id, ()) if h[0] + HOUR_MS > start and h[0] < end]
        expected = sum(h[2] for h in inside)
        if not inside or expected <= 0:
            return _DIRECTIONS
        sales = sum(h[1] for h in inside)
        found = [("sales", "low" if sales < expected else "high")]
        if sum(h[3] for h in inside) > sum(h[4] for h in inside):
            found.append(("refunds", "high"))
        return tuple(found)

    # --- what the rules say about a window -------------------------------------------------------

    def active(self, store_id: str, end_ms: int, start_ms: int, offset: int) -> list[Rule]:
        """The store's rules in force for a span ending at `end_ms` (expired ones are dropped)."""
        rules = self.rules.get(store_id)
        if not rules:
            return []
        gone = [key for key, rule in rules.items() if rule[6] < end_ms]
        for key in gone:
            del rules[key]
        if not rules:
            del self.rules[store_id]
            return []
        at = week_position(start_ms, offset)
        length = end_ms - start_ms
        return [r for r in rules.values() if overlaps(r[3], r[4], at, length)]

    def excuses(self, rules: list[Rule], finding: Finding, span_ms: int) -> bool:
        """Whether an "ordinary" rule covers this finding (same metric and direction, no bigger)."""
        return any(
            metric == finding.metric
            and direction == finding.direction
            and within_marked(direction, finding.observed, finding.mean, span_ms, mark, margin)
            for metric, direction, mark, margin in self.excused(rules)
        )

    def excused(self, rules: list[Rule]) -> tuple[tuple[str, str, tuple[float, float], float], ...]:
        """The detector's view of the "ordinary" rules: (metric, direction, (marked size, marked
        count per ms), margin)."""
        return tuple(
            (metric, direction, (marked, per_ms), self.margin)
            for effect, metric, direction, _, _, marked, _, per_ms in rules
            if effect == "ordinary"
        )

    def keen(self, rules: list[Rule]) -> tuple[tuple[str, str, float, float], ...]:
        """The directions whose bar is lowered here, with by how much (score, size gate)."""
        pairs = sorted({(metric, direction) for effect, metric, direction, *_ in rules if effect == "keen"})
        return tuple((metric, direction, *self.relief) for metric, direction in pairs)

    def forget(self, stores: set[str]) -> None:
        """Stores gone silent for good: their alerts, rules and hours go with them."""
        for store in stores:
            self.raised.pop(store, None)
            self.rules.pop(store, None)
            self.hours.pop(store, None)
