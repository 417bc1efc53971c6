"""The stored form of every class of a shard's state: its fields, their types and what they hold.

This is the checkpoint format's definition (docs/checkpoints.md is generated from it): a part's
fields are what a checkpoint stores of it, its derived attributes are worked out again from the
configuration on restore. Changing what a class keeps means changing its part here, with a new
version and an upgrade from the previous one; tests/unit/test_state_format.py fails when a class's
attributes and its part disagree, so a rename cannot change the format unnoticed.
"""

from __future__ import annotations

import dataclasses
import types
from array import array
from collections import Counter, deque
from typing import Any, Final, Literal, Union, get_args, get_origin, get_type_hints

from processors.core.dedup import Manifest
from processors.core.demand import DemandForecast, ItemDemand, RestockConfig, StoreDemand
from processors.core.detectors.base import DetectorConfig, FadingMean, PeerDayShape, Running, Spread
from processors.core.detectors.fleet_shape import FleetShape, KindShape
from processors.core.detectors.hst import HSTDetector
from processors.core.detectors.naive import NaiveDetector
from processors.core.detectors.registry import make_detector
from processors.core.detectors.seasonal import SeasonalDetector, _DayLevel, _Window
from processors.core.detectors.threshold import ThresholdDetector
from processors.core.feedback import FeedbackBook, Hour, Raised, Rule
from processors.core.monitor import AnomalyMonitor, Judged
from processors.core.restock_policy import ForecastPolicy, ThresholdPolicy
from processors.core.state import CoreConfig, CoreStats
from processors.core.state_codec import Bounded, Codec, Context, Custom, Part, StateFormatError
from processors.core.stock_ledger import CatalogEntry, Key, StockLedger
from processors.core.windows import (
    AheadRun,
    Pane,
    PaneTotals,
    StoreWindows,
    WindowEngine,
    WindowResult,
    WindowSpec,
)

Estimate = tuple[float, float]
_DETECTOR_CONTEXT: Final = "the detector's configuration and slot length"


def _config_part(cls: type, name: str, doc: str) -> Part:
    """A configuration's part, from its dataclass fields: settings are documented where they are
    set (docs/settings.md), and a checkpoint keeps the ones it was written with."""
    hints = get_type_hints(cls)
    stored = {f.name: (hints[f.name], "a setting") for f in dataclasses.fields(cls) if f.init}
    derived = {f.name: "worked out from the settings" for f in dataclasses.fields(cls) if not f.init}
    return Part(cls, name, 1, stored, derived=derived, build=cls, doc=doc, settings=True)


# --- river's HalfSpaceTrees (the `hst` baseline detector) -------------------------------------------


def _hst_to_data(model: Any) -> dict[str, Any]:
    scaler, trees = model.steps["MinMaxScaler"], model.steps["HalfSpaceTrees"]
    return {
        "min": {k: float(v.get()) for k, v in scaler.min.items()},
        "max": {k: float(v.get()) for k, v in scaler.max.items()},
        "counter": int(trees.counter),
        "first_window": bool(trees._first_window),
        "masses": [[[int(n.l_mass), int(n.r_mass)] for n in nodes] for nodes in trees._tree_nodes],
    }


def _hst_from_data(data: Any, ctx: Context, where: str) -> Any:
    from processors.core.detectors import hst

    if type(data) is not dict or set(data) != {"min", "max", "counter", "first_window", "masses"}:
        raise StateFormatError(f"{where}: not a HalfSpaceTrees model")
    model = hst.compose.Pipeline(
        hst.preprocessing.MinMaxScaler(), hst.anomaly.HalfSpaceTrees(seed=ctx["detection"].seed)
    )
    scaler, trees = model.steps["MinMaxScaler"], model.steps["HalfSpaceTrees"]
    for side in ("min", "max"):
        values = data[side]
        if type(values) is not dict or any(type(v) not in (int, float) for v in values.values()):
            raise StateFormatError(f"{where}.{side}: not a map of feature to number")
        for feature, value in values.items():
            getattr(scaler, side)[feature].update(float(value))
    masses = data["masses"]
    if type(data["counter"]) is not int or type(data["first_window"]) is not bool or type(masses) is not list:
        raise StateFormatError(f"{where}: counter, first_window or masses of the wrong type")
    if masses:
        # The trees are drawn from the seed and the feature names alone: grow them as learning
        # would, then put the stored masses on their nodes.
        trees.learn_one(dict.fromkeys(hst.FEATURES, 0.0))
        if len(masses) != len(trees._tree_nodes) or any(
            type(m) is not list or len(m) != len(nodes)
            for m, nodes in zip(masses, trees._tree_nodes, strict=False)
        ):
            raise StateFormatError(f"{where}.masses: not the shape of this detector's trees")
        for stored, nodes in zip(masses, trees._tree_nodes, strict=True):
            for pair, node in zip(stored, nodes, strict=True):
                if type(pair) is not list or len(pair) != 2 or any(type(m) is not int for m in pair):
                    raise StateFormatError(f"{where}.masses: a node's masses are not two integers")
                node.l_mass, node.r_mass = pair
    trees.counter = data["counter"]
    trees._first_window = data["first_window"]
    return model


HST_MODEL: Final = Custom(
    "HalfSpaceTrees",
    _hst_to_data,
    _hst_from_data,
    "{min: {feature: float}, max: {feature: float}, counter: int, first_window: bool, "
    "masses: [[[l_mass, r_mass] per node, depth-first] per tree]} (the trees themselves are drawn "
    "again from the detector's seed)",
)


def _river_stat(cls_path: str) -> type:
    module, _, name = cls_path.rpartition(".")
    mod = __import__(module, fromlist=[name])
    cls: type = getattr(mod, name)
    return cls


# --- the parts --------------------------------------------------------------------------------------

_KEY = "(store, product)"
# The monitor's per-store deques, bounded by the window settings
_RECENT_MIX: Final = Bounded(
    tuple[int, int, dict[str, int], dict[str, int]], lambda c: max(c["long_slots"], 2)
)
_SLOT_COUNTS: Final = Bounded(
    tuple[int, int, int], lambda c: c["late_bound_ms"] // c["slot_ms"] + max(c["long_slots"], 2) + 2
)


def _per_store(value: Any) -> Any:
    """`dict[str, value]` for a declared type that is no Python type (a Bounded deque)."""
    return types.GenericAlias(dict, (str, value))


def _config_and_stock_parts() -> list[Part]:
    """The settings a checkpoint keeps, and the stock and restocking state."""
    return [
        _config_part(DetectorConfig, "detector_config", "The detector's settings."),
        _config_part(RestockConfig, "restock_config", "The restocking policy's settings."),
        _config_part(CoreConfig, "core_config", "The core's settings (windows, dedup, retention)."),
        Part(
            CoreStats,
            "core_stats",
            1,
            {
                "events_valid": (int, "valid events read"),
                "events_rejected": (int, "records rejected"),
                "duplicates_ignored": (int, "duplicates skipped"),
                "late_events": (int, "events too late for their window"),
                "stores_forgotten": (int, "stores dropped after the retention"),
                "alerts": (Counter[str], "alerts raised by kind"),
            },
            build=CoreStats,
            doc="The shard's counters.",
        ),
        Part(
            CatalogEntry,
            "catalog_entry",
            1,
            {
                "name": (str | None, "product name"),
                "category": (str | None, "product category"),
                "price": (float | None, "unit price"),
                "restock_threshold": (int | None, "ask for a truck at or below this (threshold policy)"),
                "target_stock": (int | None, "order up to this"),
            },
            build=CatalogEntry,
            doc="What a `product` event said of a store's product.",
        ),
        Part(
            StockLedger,
            "stock_ledger",
            1,
            {
                "stock": (dict[Key, int], f"on hand per {_KEY}"),
                "catalog": (dict[Key, CatalogEntry], f"catalog per {_KEY}"),
                "open_requests": (dict[Key, str], f"the open restock request's id per {_KEY}"),
                "out_of_stock": (set[Key], f"{_KEY} pairs at 0 (a back-in-stock alert is due)"),
                "limits": (dict[Key, tuple[int, int]], f"(threshold, target) per {_KEY}"),
                "requested_at": (dict[Key, int], f"event time of each open request per {_KEY}"),
            },
            derived={
                "default_threshold": "CoreConfig.default_restock_threshold",
                "default_target": "CoreConfig.default_target_stock",
            },
            fresh=lambda ctx: ctx["inventory"],
            doc="Stock, catalog and open restock requests of the shard's stores.",
        ),
        Part(
            DemandForecast,
            "demand_forecast",
            1,
            {
                "stores": (dict[str, StoreDemand], "per store: its sales by hour of the week"),
                "items": (dict[str, dict[str, ItemDemand]], "per store and product: its share"),
            },
            derived={"config": "CoreConfig.restock"},
            fresh=lambda ctx: DemandForecast(ctx["config"].restock),
            doc="What the forecast learned of each store's demand (kept under the forecast policy only).",
        ),
        Part(
            ThresholdPolicy,
            "threshold_policy",
            1,
            {},
            build=ThresholdPolicy,
            doc="The threshold rule: it reads every change afresh and keeps nothing.",
        ),
        Part(
            ForecastPolicy,
            "forecast_policy",
            1,
            {"reorder_points": (dict[Key, tuple[int, float]], f"(valid until ms, reorder point) per {_KEY}")},
            build=ForecastPolicy,
            doc="The forecast policy: the reorder points it worked out, until they expire.",
        ),
        Part(
            StoreDemand,
            "store_demand",
            1,
            {
                "week": (array, "units per hour of the week (168 float64, little-endian bytes)"),
                "week_seen": (bytearray, "updates per hour of the week (168 bytes)"),
                "week_var": (array, "week-to-week variance of units per hour of the week (168 float64)"),
                "day": (array, "units per hour of the day (24 float64)"),
                "day_seen": (bytearray, "updates per hour of the day (24 bytes)"),
                "hour": (int, "the hour being counted (absolute index; -1: none yet)"),
                "hour_units": (float, "units so far in that hour"),
                "hours_seen": (int, "hours counted"),
                "cum": (float, "every unit the store sold: the clock of product shares"),
                "lines": (float, "decayed count of sale lines"),
                "line_units": (float, "decayed units of those lines"),
                "line_units_sq": (float, "decayed squared units"),
                "lead_ms": (float, "learned delivery lead time"),
                "lead_var": (float, "its variance"),
                "lead_n": (int, "deliveries it learned from"),
            },
            derived={
                "sums": "a cache of cumulative week sums, rebuilt when needed",
                "noise_sums": "a cache of cumulative relative variances, rebuilt when needed",
            },
            build=StoreDemand,
            doc="One store's demand over the hours of its week.",
        ),
        Part(
            ItemDemand,
            "item_demand",
            1,
            {
                "units": (float, "decayed units sold"),
                "exposure": (float, "decayed store units sold while it was on the shelf"),
                "mark": (float, "the store's `cum` when last brought up to date"),
                "in_stock": (bool, "on the shelf now"),
                "last_ms": (int, "event time of its last sale"),
            },
            build=ItemDemand,
            doc="One product's share of its store's demand.",
        ),
    ]


def _window_parts() -> list[Part]:
    """The event-time windows."""
    return [
        Part(
            WindowSpec,
            "window_spec",
            1,
            {"size_ms": (int, "window length"), "hop_ms": (int, "hop (= size: tumbling)")},
            derived={"kind": "from size and hop", "name": "from size and hop"},
            build=WindowSpec,
            doc="A window's length and hop.",
        ),
        Part(
            Pane,
            "pane",
            1,
            {
                "lines": (int, "sale lines"),
                "units": (int, "units sold"),
                "revenue": (float, "revenue"),
                "sales_anon": (int, "sale lines without a transaction id"),
                "sale_ids": (set[str], "transaction ids of sales"),
                "refund_lines": (int, "refund lines"),
                "refund_units": (int, "units refunded"),
                "refund_amount": (float, "amount refunded"),
                "refunds_anon": (int, "refund lines without a transaction id"),
                "refund_ids": (set[str], "transaction ids of refunds"),
                "items": (list[str], "product of every sale line"),
                "refund_items": (list[str], "product of every refund line"),
            },
            doc="One store's sums over one pane of event time.",
        ),
        Part(
            StoreWindows,
            "store_windows",
            1,
            {
                "first_idx": (int, "its first pane"),
                "panes": (dict[int, Pane], "open panes by index"),
                "recent": (deque[PaneTotals], "closed panes' totals the hopping windows still need"),
                "resume_idx": (int, "panes below this were closed by a previous shard"),
                "closed": (int, "its panes below this index are closed"),
                "newest_ms": (int, "its newest sale or refund time"),
                "kept": (dict[int, Pane], "closed panes within the late bound"),
                "revisions": (dict[tuple[int, int], int], "(spec, end pane) -> last revision emitted"),
            },
            build=StoreWindows,
            doc="One store's windows and event-time progress.",
        ),
        Part(
            AheadRun,
            "ahead_run",
            1,
            {
                "count": (int, "events in the run (0: none)"),
                "store": (str, "the store of its first event"),
                "first_ms": (int, "that event's time"),
            },
            doc="Events far ahead of the shard's clock, in a row.",
        ),
        Part(
            WindowEngine,
            "window_engine",
            1,
            {
                "stores": (dict[str, StoreWindows], "per store"),
                "started": (bool, "an event was seen"),
                "newest_ms": (int, "the shard's clock: newest event time"),
                "closed_idx": (int, "the shard's watermark pane"),
                "next_close_ms": (int, "when a pane may close next"),
                "ahead_run": (AheadRun, "events far ahead"),
                "dirty": (set[tuple[str, int]], "(store, pane) of closed panes that took late events"),
            },
            derived={
                name: "from the window settings"
                for name in (
                    "specs",
                    "lateness_ms",
                    "idle_ms",
                    "pane_ms",
                    "_hops",
                    "_span",
                    "_max_gap_panes",
                    "late_panes",
                    "_keep_panes",
                    "max_ahead_ms",
                )
            },
            fresh=lambda ctx: ctx["windows"],
            doc="The shard's per-store event-time windows.",
        ),
        Part(
            WindowResult,
            "window_result",
            1,
            {
                "store_id": (str, "store"),
                "spec": (WindowSpec, "window length and hop"),
                "start_ms": (int, "start"),
                "end_ms": (int, "end"),
                "sales": (int, "sales"),
                "lines": (int, "sale lines"),
                "units": (int, "units"),
                "revenue": (float, "revenue"),
                "refunds": (int, "refunds"),
                "refund_lines": (int, "refund lines"),
                "refund_units": (int, "refunded units"),
                "refund_amount": (float, "refunded amount"),
                "products": (dict[str, int] | None, "sale lines per product"),
                "refund_products": (dict[str, int] | None, "refund lines per product"),
                "revision": (int, "0: as first closed"),
                "partial": (bool, "ends after the input's last event"),
            },
            build=WindowResult,
            doc="A closed window (detectors keep their last few).",
        ),
    ]


def _detector_building_blocks() -> list[Part]:
    """What the detectors are made of: faded means, spreads, the fleet's shape."""
    return [
        Part(
            Running,
            "running",
            1,
            {
                "fading": (float, "weight of the newest value"),
                "n": (int, "values seen"),
                "mean": (float, "mean"),
            },
            doc="A faded mean that starts as a plain mean.",
        ),
        Part(
            FadingMean,
            "fading_mean",
            1,
            {
                "fading": (float, "weight of the newest value"),
                "n": (int, "values seen"),
                "mean": (float, "mean"),
            },
            doc="An exponentially weighted mean that starts from its first value.",
        ),
        Part(
            Spread,
            "spread",
            1,
            {
                "quadratic": (bool, "sales (variance grows with the square of the mean) or refunds"),
                "excess": (Running, "faded excess of squared residuals"),
                "scale": (Running, "faded scale they are divided by"),
                "n": (int, "windows learned from"),
                "prior": (float, "the factor before it learned"),
                "factor": (float, "phi (sales) or D (refunds)"),
            },
            doc="The learned spread of one window size and metric.",
        ),
        Part(
            KindShape,
            "kind_shape",
            1,
            {
                "days": (int, "store-days behind it"),
                "share": (list[float], "mean share of a weekday's sales per slot"),
                "square": (list[float], "mean of its square"),
            },
            build=KindShape,
            doc="The fleet's shape of one kind of day.",
        ),
        Part(
            FleetShape,
            "fleet_shape",
            1,
            {
                "version": (int, "the shared object's format"),
                "slots_per_day": (int, "slots of a day"),
                "kinds": (list[KindShape], "weekday, Saturday, Sunday"),
                "stores": (int, "stores behind it"),
            },
            build=FleetShape,
            doc="The shape of a day the rest of the fleet published.",
        ),
        Part(
            PeerDayShape,
            "peer_day_shape",
            1,
            {
                "shares": (list[list[Running]], "per kind of day and slot: share of a weekday's sales"),
                "squares": (list[list[Running]], "... of its square"),
                "days": (list[int], "store-days learned per kind of day"),
                "prior": (FleetShape | None, "the rest of the fleet's shape"),
                "revision": (int, "moves when the prior changes"),
            },
            doc="The shape of a day this shard's stores taught, and the fleet's prior.",
        ),
        Part(
            _DayLevel,
            "day_level",
            1,
            {
                "fading": (float, "weight of the newest window"),
                "obs": (float, "weighted observed sales today"),
                "exp": (float, "weighted expected sales today"),
                "day_obs": (float, "plain observed sum today"),
                "day_exp": (float, "plain expected sum today"),
                "variation": (Running, "day-to-day variation of the level"),
                "days": (int, "days finished"),
                "closed_run": (int, "closed windows in a row"),
                "level": (Estimate, "(today's level, its relative variance)"),
            },
            doc="A store's level today against its usual.",
        ),
        Part(
            _Window,
            "judged_window",
            1,
            {
                "window": (WindowResult, "the window"),
                "central": (Estimate | None, "(expected, variance)"),
                "low": (Estimate | None, "the low bound's estimate"),
                "high": (Estimate | None, "the high bound's estimate"),
            },
            build=_Window,
            doc="A recent window with what it was judged against.",
        ),
    ]


def _detector_parts() -> list[Part]:
    """Each kind of detector (a store's piece)."""
    from river import stats

    return [
        Part(
            SeasonalDetector,
            "seasonal_detector",
            1,
            {
                "week": (list[FadingMean], "expected sales per slot of the local week"),
                "weeks_seen": (bytearray, "updates per slot of the week (capped at 255)"),
                "profile": (list[list[float]], "per kind of day and slot: faded mean share"),
                "profile_sq": (list[list[float]], "... of its square"),
                "profile_seen": (list[bytearray], "updates per kind of day and slot"),
                "days_seen": (list[int], "finished days per kind"),
                "day": (int, "the local day being traded"),
                "day_slots": (list[float], "today's sales per slot (NaN: no window)"),
                "day_total": (float, "today's sales as learned"),
                "sold_today": (int, "today's sales"),
                "weekday_total": (Running, "a weekday's sales"),
                "totals_seen": (int, "weekdays behind it"),
                "_scale_key": (tuple[int, int, int], "the cached level's key"),
                "_scale_value": (float, "the cached level"),
                "first_ms": (int | None, "the store's first window"),
                "suspicion": (float, "evidence of a drop at the last window"),
                "guess_day": (Estimate, "today's sales and the profile over the same slots"),
                "open_day": (Estimate, "... since the day's first sale"),
                "guess_recent": (deque[tuple[float, float, bool]], "windows waiting to join them"),
                "today": (_DayLevel, "today's level"),
                "refund_num": (Running, "faded refunds"),
                "refund_den": (Running, "faded sales"),
                "refund_rate": (float, "refunds per sale"),
                "refund_seen": (int, "windows behind it"),
                "spread": (dict[tuple[str, str], Spread], "(size, metric) -> learned spread"),
                "recent": (deque[_Window], "the last windows (bounded by the settings)"),
                "evidence": (deque[tuple[int, float, float, float, float, float]], "drop/jump evidence"),
            },
            derived={
                "config": _DETECTOR_CONTEXT,
                "slot_ms": _DETECTOR_CONTEXT,
                "long_slots": _DETECTOR_CONTEXT,
                "per_day": _DETECTOR_CONTEXT,
                "_inv_neff": "a table from the settings",
            },
            fresh=lambda ctx: make_detector(ctx["detection"], ctx["slot_ms"], ctx["long_slots"]),
            doc="One store's seasonal detector (docs/detection.md).",
        ),
        Part(
            NaiveDetector,
            "naive_detector",
            1,
            {
                "slot_ids": (list[int], "which local slot each ring entry holds"),
                "sales": (list[int], "sales per ring entry"),
                "refunds": (list[int], "refunds per ring entry"),
            },
            derived={"config": _DETECTOR_CONTEXT, "slot_ms": _DETECTOR_CONTEXT, "ring": _DETECTOR_CONTEXT},
            fresh=lambda ctx: make_detector(ctx["detection"], ctx["slot_ms"], ctx["long_slots"]),
            doc="The seasonal-naive baseline.",
        ),
        Part(
            _river_stat("river.stats.Mean"),
            "river_mean",
            1,
            {"n": (float, "values seen"), "_mean": (float, "mean")},
            doc="river's running mean.",
        ),
        Part(
            _river_stat("river.stats.Var"),
            "river_var",
            1,
            {
                "ddof": (int, "delta degrees of freedom"),
                "mean": (stats.Mean, "mean"),
                "_S": (float, "sum of squares"),
            },
            doc="river's running variance.",
        ),
        Part(
            ThresholdDetector,
            "threshold_detector",
            1,
            {
                "first_ms": (int | None, "the store's first window"),
                "open_mean": (stats.Mean, "mean sales of an open window"),
                "day": (int, "the local day"),
                "sold_today": (int, "its sales"),
            },
            derived={"config": _DETECTOR_CONTEXT, "slot_ms": _DETECTOR_CONTEXT},
            fresh=lambda ctx: make_detector(ctx["detection"], ctx["slot_ms"], ctx["long_slots"]),
            doc="The static-rule baseline.",
        ),
        Part(
            HSTDetector,
            "hst_detector",
            1,
            {
                "first_ms": (int | None, "the store's first window"),
                "model": (HST_MODEL, "river's HalfSpaceTrees and its scaler"),
                "means": (dict[str, stats.Var], "per feature: running mean and variance"),
            },
            derived={"config": _DETECTOR_CONTEXT, "slot_ms": _DETECTOR_CONTEXT},
            fresh=lambda ctx: make_detector(ctx["detection"], ctx["slot_ms"], ctx["long_slots"]),
            doc="The HalfSpaceTrees baseline.",
        ),
    ]


def _monitor_parts() -> list[Part]:
    """The monitor around the detectors, and the dedup memory's manifest."""
    return [
        Part(
            FeedbackBook,
            "feedback_book",
            1,
            {
                "raised": (dict[str, dict[str, Raised]], "per store: anomaly alerts raised, by id"),
                "rules": (dict[str, dict[str, Rule]], "per store: rules operators' marks made, by id"),
                "hours": (dict[str, list[Hour]], "per store: the last hours as judged"),
                "counts": (dict[str, int], "marks by outcome"),
            },
            derived={
                name: "the detector's feedback settings"
                for name in ("weeks", "margin", "slack_ms", "kept", "relief")
            },
            fresh=lambda ctx: FeedbackBook(ctx["detection"], ctx["slot_ms"]),
            doc="Operators' feedback (docs/detection.md, Feedback).",
        ),
        Part(
            AnomalyMonitor,
            "anomaly_monitor",
            1,
            {
                "open_until": (
                    dict[tuple[str, str, str], int],
                    "(store, metric, direction) -> cool-down end",
                ),
                "zones": (dict[str, str], "store -> IANA zone"),
                "zone_history": (dict[str, list[tuple[int, str]]], "store -> earlier zones (until, zone)"),
                "fleet": (PeerDayShape, "the shape of a day of the shard's stores"),
                "mix": (dict[str, dict[str, float]], "store -> decaying sale lines per product"),
                "mix_total": (dict[str, float], "store -> their total"),
                "recent_mix": (_per_store(_RECENT_MIX), "store -> last short windows' lines per product"),
                "feedback": (FeedbackBook, "operators' feedback"),
                "slot_counts": (
                    _per_store(_SLOT_COUNTS),
                    "store -> last short windows' (start, sales, refunds)",
                ),
                "judged": (dict[str, list[Judged]], "store -> alerts within the late bound, as judged"),
            },
            derived={
                "config": "CoreConfig.detection",
                "slot_ms": "from the window settings",
                "long_slots": "from the window settings",
                "late_bound_ms": "CoreConfig.late_bound_ms",
                "detectors": "each store's detector is stored apart (a piece), by content",
                "_ts": "a cache of formatted times",
                "_offsets": "a cache of zone offsets",
            },
            fresh=lambda ctx: ctx["monitor"],
            doc="The shard's anomaly detection: everything but the stores' detectors.",
        ),
        Part(
            Manifest,
            "dedup_manifest",
            1,
            {
                "horizon_ms": (int, "how long an event id is remembered"),
                "bucket_ms": (int, "event time per bucket"),
                "max_ahead_ms": (int, "how far ahead of the clock a key may be"),
                "ahead_quorum": (int, "keys before far-ahead ones move the clock"),
                "clock_ms": (int, "the dedup's guarded clock"),
                "next_run": (int, "the next run's number"),
                "beyond_horizon": (int, "events older than the horizon"),
                "buckets": (
                    tuple[tuple[int, tuple[str, ...], bool], ...],
                    "(bucket index, the runs holding its keys, still current)",
                ),
            },
            build=Manifest,
            doc="The dedup memory but its keys, which are in immutable runs.",
        ),
    ]


def _parts() -> list[Part]:
    return [
        *_config_and_stock_parts(),
        *_window_parts(),
        *_detector_building_blocks(),
        *_detector_parts(),
        *_monitor_parts(),
    ]


def _type_text(tp: Any) -> str:
    """A declared type as the documentation writes it."""
    if isinstance(tp, Bounded):
        return f"deque[{_type_text(tp.item)}] (bounded)"
    if isinstance(tp, Custom):
        return tp.name
    if tp is type(None):
        return "None"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_text(a) for a in get_args(tp))
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join("..." if a is Ellipsis else _type_text(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    part = CODEC.parts.get(tp) if isinstance(tp, type) else None
    if part is not None:
        return part.name
    return getattr(tp, "__name__", str(tp))


def _cell(tp: Any) -> str:
    return _type_text(tp).replace("|", "\\|")  # a table cell's pipe


def reference() -> str:
    """The format's reference page (docs/checkpoints.md's generated section)."""
    lines: list[str] = []
    for part in sorted(CODEC.by_name.values(), key=lambda p: p.name):
        lines += ["", f"### `{part.name}` (version {part.version})", "", part.doc, ""]
        lines += ["| field | type | holds |", "|---|---|---|"]
        lines += [f"| `{n}` | `{_cell(t)}` | {d} |" for n, (t, d) in part.fields.items()]
        if part.derived:
            lines += [
                "",
                "Not stored: " + "; ".join(f"`{n}` ({why})" for n, why in part.derived.items()) + ".",
            ]
        if isinstance(part.fields, dict):
            customs = [t for t, _ in part.fields.values() if isinstance(t, Custom)]
            for custom in customs:
                lines += ["", f"`{custom.name}` is stored as {custom.shape}."]
    return "\n".join(lines).strip() + "\n"


CODEC: Final = Codec(_parts())
