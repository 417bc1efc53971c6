"""The core's configuration, counters and state: plain data, apart from the code that moves it, so
the checkpoint format (state_schema.py) can declare it without importing the processor."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from foundation.timeunits import DAY_MS, HOUR_MS, MINUTE_MS, WEEK_MS
from processors.core.dedup import DEFAULT_BUCKET_MS, Dedup
from processors.core.demand import DemandForecast, RestockConfig
from processors.core.detectors import DetectorConfig
from processors.core.monitor import AnomalyMonitor
from processors.core.restock_policy import RestockPolicy, ThresholdPolicy
from processors.core.stock_ledger import StockLedger
from processors.core.windows import WindowEngine, WindowSpec


@dataclass(frozen=True, slots=True)
class CoreConfig:
    default_restock_threshold: int = 5
    default_target_stock: int = 40
    dedup_horizon_ms: int = DAY_MS
    dedup_bucket_ms: int = DEFAULT_BUCKET_MS
    dedup_max_ahead_ms: int = HOUR_MS
    # A store that has sent nothing for this long (event time) is forgotten: stock, catalog, open
    # requests, windows and detector go (0 keeps every store for ever).
    store_retention_ms: int = 35 * DAY_MS
    archive: bool = True
    # Event-time windows per store (0 turns windows, and so detection, off).
    window_ms: int = 15 * MINUTE_MS
    hopping_window_ms: int = 60 * MINUTE_MS  # 0: no hopping window
    hopping_hop_ms: int = 15 * MINUTE_MS
    allowed_lateness_ms: int = 2 * MINUTE_MS
    max_window_gap_ms: int = WEEK_MS
    detection: DetectorConfig = field(default_factory=DetectorConfig)
    restock: RestockConfig = field(default_factory=RestockConfig)
    # A store's windows close by its own event time; a store silent for this long (by the shard's
    # clock) has its windows closed anyway, so an outage is judged (docs/detection.md)
    store_idle_ms: int = 5 * MINUTE_MS
    # A sale or refund up to this far behind its store's closing point is added to its closed windows,
    # which are emitted again as revisions (0: every late event is only counted)
    late_bound_ms: int = 4 * HOUR_MS

    def window_specs(self) -> tuple[WindowSpec, ...]:
        if self.window_ms <= 0:
            return ()
        specs = [WindowSpec(self.window_ms, self.window_ms)]
        if self.hopping_window_ms > 0:
            specs.append(WindowSpec(self.hopping_window_ms, self.hopping_hop_ms))
        return tuple(specs)


@dataclass(slots=True)
class CoreStats:
    events_valid: int = 0
    events_rejected: int = 0
    duplicates_ignored: int = 0
    late_events: int = 0
    stores_forgotten: int = 0
    alerts: Counter[str] = field(default_factory=Counter)

    @property
    def events_read(self) -> int:
        return self.events_valid + self.events_rejected

    def add(self, other: CoreStats) -> None:
        self.events_valid += other.events_valid
        self.events_rejected += other.events_rejected
        self.duplicates_ignored += other.duplicates_ignored
        self.late_events += other.late_events
        self.stores_forgotten += other.stores_forgotten
        self.alerts.update(other.alerts)


@dataclass(slots=True)
class CoreState:
    """Everything the core knows; a checkpoint stores it as data (processors/core/state_schema.py)."""

    inventory: StockLedger
    dedup: Dedup
    stats: CoreStats
    windows: WindowEngine | None = None
    monitor: AnomalyMonitor | None = None
    # The newest event time of each store, for forgetting stores that went silent for good.
    last_seen: dict[str, int] = field(default_factory=dict)
    next_sweep_ms: int = 0
    # Demand learned from the stock's changes: kept only under the forecast policy (None: not kept).
    forecast: DemandForecast | None = None
    policy: RestockPolicy = field(default_factory=ThresholdPolicy)
