"""From closed windows to effects: the window records to archive and the anomaly alerts to send.

Holds one detector per store (created on the store's first window, of the kind the settings name:
processors/core/detectors/registry.py), the stores' time zones (from `store` events; UTC until one
says otherwise), the fleet's shape of a day that new stores borrow, each store's product mix (for
the products that drove an anomaly), and the alert cool-down: once a
metric of a store has alerted, further anomalous windows of the same metric and direction (the
overlapping hopping windows, the rest of a long outage) extend the incident instead of paging again,
until the metric has been normal for `cooldown_ms`. Operators' `feedback` events become rules of
their store (processors/core/feedback.py): a deviation a `not_anomaly` mark covers raises no alert,
and a `missed` mark lowers the bar in its hours. All of it is state, stored with the checkpoint, so a
replay from a checkpoint makes the same decisions and the same alert ids.

Revised windows (sales that arrived late, within the late bound: windows.py) and partial ones (after
the end of an input) are archived but never judged, and the detectors do not learn from them. For
each recent anomaly alert (within the late bound) the monitor keeps what it judged: the span, metric,
direction, expected mean and variance, threshold and observed count. When a revision changes an
alerted span, the span is scored again by the detector's own bars (`still_anomalous`); if it no longer
qualifies, an `anomaly_withdrawn` alert says so.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import Counter, deque
from collections.abc import Mapping
from typing import Final, Protocol

import msgspec

from foundation.contract import Anomaly, AnomalyWithdrawn, Contributor, Feedback, alert_id, format_ts
from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS
from processors.core import tails
from processors.core.detectors import (
    DETECTOR_KINDS,
    Detector,
    DetectorConfig,
    Finding,
    PeerDayShape,
    SeasonalDetector,
    Verdict,
    make_detector,
)
from processors.core.detectors.fleet_shape import FleetShape
from processors.core.effects import Effects
from processors.core.explain import explain
from processors.core.feedback import FeedbackBook, Rule
from processors.core.windows import WindowResult, WindowSpec

_MIX_LIMIT: Final = 20_000.0  # sale lines a store's product mix counts before halving (a long memory)
_TOP: Final = 3  # products named per anomaly


_ZONE_HISTORY: Final = 4  # earlier zones kept per store (a window closes hours, not days, after it starts)


class _Cataloged(Protocol):
    category: str | None


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
    timezone: str | None = None  # the store's IANA zone (absent: UTC), for showing it in local time
    revision: int = 0  # 1, 2, ...: the window again, with sales that arrived late (absent: the first)
    partial: bool = False  # it ends after the input's last event (end of a backtest): not judged


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


# What an anomaly alert was judged on, kept for the late bound: (alert id, span start, span end, metric,
# direction, expected mean, variance, threshold, observed, zone offset at the start)
Judged = tuple[str, int, int, str, str, float, float, float, float, int]


def still_anomalous(
    config: DetectorConfig, metric: str, direction: str, x: float, mean: float, var: float, threshold: float
) -> bool:
    """Whether a count is still anomalous by the detector's bars (SeasonalDetector._sales/_refunds:
    the drop ratio or the jump's margin, and the tail score against the threshold)."""
    _lo, hi = tails.expected_range(mean, var)
    if metric == "sales" and direction == "low":
        if mean < config.min_expected_sales or x > config.drop_ratio * mean:
            return False
        return tails.score(tails.lower_tail(x, mean, var)) >= threshold
    if metric == "sales":
        if x < hi + config.min_extra_sales or x < config.jump_ratio * mean:
            return False
        return tails.score(tails.upper_tail(x, max(mean, 0.05), max(var, 0.05))) >= threshold
    if x < config.min_refunds or x <= hi:
        return False
    return tails.score(tails.upper_tail(x, max(mean, 0.01), max(var, 0.01))) >= threshold


class AnomalyMonitor:
    def __init__(self, config: DetectorConfig, specs: tuple[WindowSpec, ...], late_bound_ms: int = 0) -> None:
        if config.kind not in DETECTOR_KINDS:
            raise ValueError(f"detector kind {config.kind!r} is not one of {', '.join(DETECTOR_KINDS)}")
        self.config = config
        slots = detector_slots(specs) if config.kind != "off" else None
        self.slot_ms, self.long_slots = slots if slots is not None else (0, 0)
        self.detectors: dict[str, Detector] = {}
        self.open_until: dict[tuple[str, str, str], int] = {}
        self.zones: dict[str, str] = {}  # store -> IANA zone (UTC when absent)
        # store -> its earlier zones, (until when, zone), oldest first: a window is judged in the zone
        # of its own time, also when it closes after a `store` event changed the zone
        self.zone_history: dict[str, list[tuple[int, str]]] = {}
        self.fleet = PeerDayShape(DAY_MS // self.slot_ms if self.slot_ms else 1)
        self.mix: dict[str, dict[str, float]] = {}  # store -> sale lines per product (decaying)
        self.mix_total: dict[str, float] = {}
        # store -> the last short windows' lines per product: (start, end, sales, refunds)
        self.recent_mix: dict[str, deque[tuple[int, int, dict[str, int], dict[str, int]]]] = {}
        # Operator feedback: alerts raised, the rules marks made, the last hours (processors/core/feedback.py)
        self.feedback = FeedbackBook(config, self.slot_ms)
        self._ts: dict[int, str] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        # How far back revised windows may reach (0: no revisions, nothing kept for them)
        self.late_bound_ms = late_bound_ms
        # store -> the last short windows' (start, sales, refunds), and the anomaly alerts within the
        # late bound with what they were judged on (Judged)
        self.slot_counts: dict[str, deque[tuple[int, int, int]]] = {}
        self.judged: dict[str, list[Judged]] = {}

    # --- operator feedback -----------------------------------------------------------------------

    def apply_feedback(self, ev: Feedback) -> str:
        """Teach a store's detector an operator's mark (docs/detection.md "Feedback"); returns what
        became of it, also counted in `feedback.counts`: "applied", "unknown_alert" (not an anomaly
        alert of this store that is still remembered: nothing changes) or "no_detector" (a store
        with no detector, or detection off: nothing to teach)."""
        book = self.feedback
        store = ev.store_id
        if not self.enabled or store not in self.detectors:
            outcome = "no_detector"
        elif ev.verdict == "not_anomaly":
            known = ev.alert_id is not None and book.not_anomaly(store, ev.alert_id)
            outcome = "applied" if known else "unknown_alert"
        else:
            span = ev.span_ms
            assert span is not None  # the contract requires the period of a missed incident
            book.missed(store, span[0], span[1], self._offset(store, span[0]))
            outcome = "applied"
        book.count(outcome)
        return outcome

    def _offset(self, store_id: str, ts_ms: int) -> int:
        return self.offset_ms(store_id, ts_ms) if self.zones or self.zone_history else 0

    def _observe(self, w: WindowResult, offset: int, rules: list[Rule]) -> Verdict:
        """The store's detector on one window, with the feedback rules in force there."""
        det = self._detector(w.store_id)
        if not rules or not isinstance(det, SeasonalDetector):
            return det.observe(w, offset, self.fleet)
        det.excused = self.feedback.excused(rules)
        det.keen = self.feedback.keen(rules)
        try:
            return det.observe(w, offset, self.fleet)
        finally:
            # back to the class's empty defaults: nothing of it is stored with the detector
            for transient in ("excused", "keen", "hits"):
                vars(det).pop(transient, None)

    # --- the rest of the fleet ----------------------------------------------------------------------

    def fleet_shape(self) -> FleetShape | None:
        """What this shard's stores have taught of the shape of a day (None: no detector slots)."""
        return self.fleet.shape(len(self.detectors)) if self.slot_ms else None

    def set_fleet_prior(self, prior: FleetShape | None) -> None:
        """The other shards' shape of a day (or one from an earlier run), for stores too new to have
        their own and kinds of day this shard has not seen."""
        if self.slot_ms:
            self.fleet.set_prior(prior)

    def expected_sales(self, from_ms: int, to_ms: int) -> float:
        """Sales this shard's stores' own histories expect between two instants (whole slots from
        the one holding `from_ms`; 0 for stores whose detector knows nothing of those slots)."""
        if not self.slot_ms or to_ms <= from_ms:
            return 0.0
        first = from_ms - from_ms % self.slot_ms
        total = 0.0
        for store_id, detector in self.detectors.items():
            if not isinstance(detector, SeasonalDetector):
                continue
            for start in range(first, to_ms, self.slot_ms):
                offset = self.offset_ms(store_id, start) if self.zones or self.zone_history else 0
                found = detector.expected_sales(start, offset)
                if found is not None:
                    total += found
        return total

    # --- local time ------------------------------------------------------------------------------

    def set_zone(self, store_id: str, zone: str, since_ms: int | None = None) -> None:
        """A `store` event: the store's time zone from its time `since_ms` on (already checked by the
        contract). Windows before it keep the zone they had, even if they close after it."""
        before = self.zones.get(store_id, "UTC")
        if since_ms is not None and zone != before:
            history = self.zone_history.setdefault(store_id, [])
            history.append((since_ms, before))
            del history[:-_ZONE_HISTORY]
        if zone == "UTC":
            self.zones.pop(store_id, None)
        else:
            self.zones[store_id] = zone

    def zone(self, store_id: str, ts_ms: int | None = None) -> str:
        """The store's zone now, or at an instant (the zone then in force)."""
        if ts_ms is not None:
            for until, zone in self.zone_history.get(store_id, ()):
                if ts_ms < until:
                    return zone
        return self.zones.get(store_id, "UTC")

    def offset_ms(self, store_id: str, ts_ms: int) -> int:
        """The store's UTC offset at an instant (whole hours of UTC share one answer: zones change
        offset on the hour or half hour, and windows start on the quarter)."""
        zone = self.zone(store_id, ts_ms)
        if zone == "UTC":
            return 0
        key = (zone, ts_ms // (HOUR_MS // 4))
        offset = self._offsets.get(key)
        if offset is None:
            if len(self._offsets) > 65_536:
                self._offsets.clear()
            when = dt.datetime.fromtimestamp(ts_ms / 1000, zoneinfo.ZoneInfo(zone))
            delta = when.utcoffset()
            offset = self._offsets[key] = 0 if delta is None else int(delta.total_seconds() * 1000)
        return offset

    def _record_zone(self, w: WindowResult) -> str | None:
        """The zone a window record names: None for UTC (the field is left out)."""
        zone = self.zone(w.store_id, w.start_ms)
        return None if zone == "UTC" else zone

    @property
    def enabled(self) -> bool:
        return self.slot_ms > 0

    def _detector(self, store_id: str) -> Detector:
        det = self.detectors.get(store_id)
        if det is None:
            det = self.detectors[store_id] = make_detector(self.config, self.slot_ms, self.long_slots)
        return det

    # --- which products drove it ----------------------------------------------------------------

    def _learn_mix(self, w: WindowResult) -> None:
        if w.products is None or w.end_ms - w.start_ms != self.slot_ms:
            return
        store = w.store_id
        recent = self.recent_mix.get(store)
        if recent is None:
            recent = self.recent_mix[store] = deque(maxlen=max(self.long_slots, 2))
        recent.append((w.start_ms, w.end_ms, w.products, w.refund_products or {}))

    def _commit_mix(self, w: WindowResult, flagged: bool) -> None:
        """Ordinary windows teach the store's product mix (an anomalous one would skew it)."""
        if flagged or not w.products or w.end_ms - w.start_ms != self.slot_ms:
            return
        store = w.store_id
        mix = self.mix.get(store)
        if mix is None:
            mix = self.mix[store] = {}
        total = self.mix_total.get(store, 0.0)
        for product, lines in w.products.items():
            mix[product] = mix.get(product, 0.0) + lines
            total += lines
        if total > _MIX_LIMIT:
            for product in list(mix):
                mix[product] *= 0.5
            total *= 0.5
        self.mix_total[store] = total

    def contributors(
        self, span: WindowResult, finding: Finding, catalog: Mapping[tuple[str, str], _Cataloged]
    ) -> tuple[Contributor, ...]:
        """The few products accounting for most of a finding's deviation, with their share of it."""
        store = span.store_id
        observed: Counter[str] = Counter()
        for start, end, sales, refunds in self.recent_mix.get(store, ()):
            if start >= span.start_ms and end <= span.end_ms:
                observed.update(refunds if finding.metric == "refunds" else sales)
        mix = self.mix.get(store) or {}
        mix_total = self.mix_total.get(store, 0.0)
        lines = sum(observed.values())
        if finding.observed > 0 and lines > 0:
            per_unit = lines / finding.observed  # lines per sale (or refund) in this span
        else:
            per_unit = span.lines / span.sales if span.sales else 1.5
        expected_lines = finding.mean * per_unit
        deviation: dict[str, tuple[float, int, float]] = {}
        products = set(observed) | (set(mix) if finding.direction == "low" else set())
        for product in products:
            if not product:
                continue  # lines added without a product (WindowEngine used directly)
            share = mix.get(product, 0.0) / mix_total if mix_total > 0 else 0.0
            expected = share * expected_lines
            got = observed.get(product, 0)
            dev = got - expected if finding.direction == "high" else expected - got
            if dev > 0:
                deviation[product] = (dev, got, expected)
        total = sum(d for d, _, _ in deviation.values())
        if total <= 0:
            return ()
        top = sorted(deviation.items(), key=lambda kv: (-kv[1][0], kv[0]))[:_TOP]
        out = []
        for product, (dev, got, expected) in top:
            entry = catalog.get((store, product))
            out.append(
                Contributor(
                    product_id=product,
                    share=round(dev / total, 2),
                    category=entry.category if entry is not None else None,
                    observed=got,
                    expected=round(expected, 1),
                )
            )
        return tuple(out)

    def _format(self, ts_ms: int) -> str:
        text = self._ts.get(ts_ms)
        if text is None:
            if len(self._ts) > 4096:
                self._ts.clear()
            text = self._ts[ts_ms] = format_ts(ts_ms)
        return text

    def window_closed(
        self,
        w: WindowResult,
        out: Effects,
        alerts: Counter[str],
        catalog: Mapping[tuple[str, str], _Cataloged] | None = None,
    ) -> None:
        """Judge one closed window; append its record to `out.windows` and any alert to `out.alerts`.
        A revision is not judged (its alerts may be withdrawn); a partial window is not judged."""
        if w.revision or w.partial:
            if w.revision and self.slot_ms and w.end_ms - w.start_ms == self.slot_ms:
                self._revised(w, out, alerts)
            self._record(out, w, None, ())
            return
        book = self.feedback
        rules: list[Rule] = []
        if self.slot_ms:
            offset = self._offset(w.store_id, w.start_ms)
            if book.rules:
                rules = book.active(w.store_id, w.end_ms, w.start_ms, offset)
            verdict = self._observe(w, offset, rules)
            self._learn_mix(w)
            if w.end_ms - w.start_ms == self.slot_ms and verdict.expected is not None:
                expected = verdict.expected
                book.saw(
                    w.store_id,
                    w.start_ms,
                    float(w.sales),
                    expected.get("sales"),
                    float(w.refunds),
                    expected.get("refunds"),
                )
        else:
            offset, verdict = 0, _NO_VERDICT
        start = self._format(w.start_ms)
        end = self._format(w.end_ms)
        flagged: list[str] = []
        for finding in verdict.findings:
            span = finding.window or w
            if rules and book.excuses(rules, finding, span.end_ms - span.start_ms):
                continue  # an operator said a deviation like this is ordinary here
            flagged.append(finding.metric)
            key = (w.store_id, finding.metric, finding.direction)
            until = self.open_until.get(key)
            self.open_until[key] = span.end_ms + self.config.cooldown_ms
            if until is not None and span.start_ms < until:
                book.extend(w.store_id, finding, (span.start_ms, span.end_ms))
                continue  # the same incident, still going on
            span_start = self._format(span.start_ms)
            contributors = self.contributors(span, finding, catalog or {})
            aid = alert_id("anomaly", w.store_id, span.spec.name, span_start, finding.metric)
            book.remember(w.store_id, aid, finding, (span.start_ms, span.end_ms), offset)
            if self.late_bound_ms:
                self._remember(w, span, finding, aid, offset)
            out.alerts.append(
                Anomaly(
                    alert_id=aid,
                    store_id=w.store_id,
                    ts=end,
                    window_start=span_start,
                    window_end=self._format(span.end_ms),
                    severity=finding.severity,
                    score=round(finding.score, 2),
                    metric=finding.metric,
                    observed=finding.observed,
                    expected=(round(finding.low, 2), round(finding.high, 2)),
                    explanation=explain(
                        span, finding, self.zone(w.store_id, w.start_ms), offset, contributors
                    ),
                    contributors=contributors,
                )
            )
            alerts["anomaly"] += 1
        if self.slot_ms:
            self._commit_mix(w, "sales" in flagged)
            if self.late_bound_ms and w.end_ms - w.start_ms == self.slot_ms and w.spec.kind == "tumbling":
                self._count_slot(w)
        self._record(out, w, verdict.expected, tuple(flagged), start, end)
        if len(self.open_until) > 4096:
            horizon = w.end_ms - WEEK_MS
            self.open_until = {k: v for k, v in self.open_until.items() if v >= horizon}

    def _record(
        self,
        out: Effects,
        w: WindowResult,
        expected: dict[str, tuple[float, float]] | None,
        flagged: tuple[str, ...],
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        spec = w.spec
        ratio = w.refund_ratio
        basket = w.avg_basket
        out.windows.append(
            _encoder.encode(
                WindowRecord(
                    w.store_id,
                    spec.name,
                    spec.kind,
                    start or self._format(w.start_ms),
                    end or self._format(w.end_ms),
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
                    expected,
                    flagged,
                    self._record_zone(w),
                    w.revision,
                    w.partial,
                )
            )
        )

    # --- late sales: revisions and withdrawn alerts ------------------------------------------------

    def _count_slot(self, w: WindowResult) -> None:
        counts = self.slot_counts.get(w.store_id)
        if counts is None:
            keep = self.late_bound_ms // self.slot_ms + max(self.long_slots, 2) + 2
            counts = self.slot_counts[w.store_id] = deque(maxlen=keep)
        counts.append((w.start_ms, w.sales, w.refunds))
        judged = self.judged.get(w.store_id)
        if judged:
            horizon = w.end_ms - self.late_bound_ms - max(self.long_slots, 2) * self.slot_ms
            kept = [j for j in judged if j[2] >= horizon]
            if kept:
                self.judged[w.store_id] = kept
            else:
                del self.judged[w.store_id]

    def _remember(self, w: WindowResult, span: WindowResult, finding: Finding, aid: str, offset: int) -> None:
        """Keep what an alert was judged on, for the late bound."""
        cfg = self.config
        var = ((finding.high - finding.mean) / tails.Z99) ** 2
        if finding.metric == "refunds":
            rule = cfg.refund_threshold
        elif finding.direction == "low":
            rule = cfg.drop_threshold or cfg.threshold
        else:
            rule = cfg.threshold
        if finding.metric == "sales" and finding.direction == "low":
            own = tails.score(tails.lower_tail(finding.observed, finding.mean, var))
        else:
            own = tails.score(tails.upper_tail(finding.observed, max(finding.mean, 0.01), max(var, 0.01)))
        # An alert raised on the evidence of several windows (or by another detector's rule) keeps the
        # unlikelihood it was raised with as its bar, when that is below the rule's
        threshold = min(rule, own)
        entry: Judged = (
            aid,
            span.start_ms,
            span.end_ms,
            finding.metric,
            finding.direction,
            finding.mean,
            var,
            threshold,
            finding.observed,
            offset,
        )
        self.judged.setdefault(w.store_id, []).append(entry)

    def _revised(self, w: WindowResult, out: Effects, alerts: Counter[str]) -> None:
        """A short window revised with late sales: its count replaces the one judged, and every alert
        whose span holds it is scored again; one that no longer qualifies is withdrawn."""
        store = w.store_id
        counts = self.slot_counts.get(store)
        if counts is None:
            return
        for i, (start, _, _) in enumerate(counts):
            if start == w.start_ms:
                counts[i] = (start, w.sales, w.refunds)
                break
        else:
            return
        judged = self.judged.get(store)
        if not judged:
            return
        by_start = {start: (sales, refunds) for start, sales, refunds in counts}
        still: list[Judged] = []
        for entry in judged:
            aid, start, end, metric, direction, mean, var, threshold, observed, offset = entry
            if not start <= w.start_ms < end:
                still.append(entry)
                continue
            parts = [by_start.get(t) for t in range(start, end, self.slot_ms)]
            if any(p is None for p in parts):
                still.append(entry)
                continue
            x = float(sum(p[0 if metric == "sales" else 1] for p in parts if p is not None))
            if x == observed or still_anomalous(self.config, metric, direction, x, mean, var, threshold):
                still.append((aid, start, end, metric, direction, mean, var, threshold, x, offset))
                continue
            out.alerts.append(
                AnomalyWithdrawn(
                    alert_id=alert_id("anomaly_withdrawn", aid),
                    store_id=store,
                    ts=self._format(w.end_ms),
                    withdrawn_alert_id=aid,
                    reason=_withdrawn_reason(store, metric, start + offset, end + offset, x, mean, var),
                    observed=x,
                    metric=metric,
                    window_start=self._format(start),
                    window_end=self._format(end),
                )
            )
            alerts["anomaly_withdrawn"] += 1
        if still:
            self.judged[store] = still
        else:
            del self.judged[store]


def _withdrawn_reason(
    store: str, metric: str, local_start: int, local_end: int, x: float, mean: float, var: float
) -> str:
    """E.g. "Sales at s1 between 14:00 and 15:30 were uploaded late by the tills: 212 sales, as expected
    (180-240); the alert is withdrawn." (times in the store's local time)"""

    def clock(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%H:%M")

    lo, hi = tails.expected_range(mean, var)
    low, high = max(0, int(lo)), max(0, int(-(-hi // 1)))
    what = "Sales" if metric == "sales" else "Refunds"
    noun = "sales" if metric == "sales" else "refunds"
    verdict = "as expected" if lo <= x <= hi else "no longer unusual against"
    return (
        f"{what} at {store} between {clock(local_start)} and {clock(local_end)} were uploaded late by the "
        f"tills: {x:,.0f} {noun}, {verdict} ({low}-{high}); the alert is withdrawn."
    )


_NO_VERDICT: Final = Verdict()
