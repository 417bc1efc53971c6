"""The processor core for one shard: decode -> validate -> dedup -> stock -> windows -> detection -> effects.

One core per shard, because a store's events all live in one shard (partition key = store): the
state of a shard can then be checkpointed, moved to another worker, or split along hash-key ranges
on resharding, without touching any other shard's state.

Stock follows stream order; windows follow event time (processors/core/windows.py), and each closed
window is judged by the store's detector (processors/core/detector.py, monitor.py).
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Final

import msgspec

from processors.core.dedup import Dedup
from processors.core.detector import DetectorConfig
from processors.core.effects import Effects, RejectedRecord
from processors.core.inventory import Inventory
from processors.core.monitor import AnomalyMonitor
from processors.core.windows import WindowEngine, WindowResult, WindowSpec
from shelfstream.contract import (
    MAX_RECORD_BYTES,
    Count,
    Event,
    Product,
    Refund,
    Rejection,
    Restock,
    Sale,
    decode_event,
    decode_strict,
)

SNAPSHOT_VERSION: Final = 2
_MINUTE_MS: Final = 60_000


@dataclass(frozen=True, slots=True)
class CoreConfig:
    default_restock_threshold: int = 5
    default_target_stock: int = 40
    dedup_horizon_ms: int = 7 * 24 * 3600 * 1000
    archive: bool = True
    # Event-time windows per store (0 turns windows, and so detection, off).
    window_ms: int = 15 * _MINUTE_MS
    hopping_window_ms: int = 60 * _MINUTE_MS  # 0: no hopping window
    hopping_hop_ms: int = 15 * _MINUTE_MS
    allowed_lateness_ms: int = 2 * _MINUTE_MS
    max_window_gap_ms: int = 7 * 24 * 3600 * 1000
    detection: DetectorConfig = field(default_factory=DetectorConfig)

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
    alerts: Counter[str] = field(default_factory=Counter)

    @property
    def events_read(self) -> int:
        return self.events_valid + self.events_rejected

    def add(self, other: CoreStats) -> None:
        self.events_valid += other.events_valid
        self.events_rejected += other.events_rejected
        self.duplicates_ignored += other.duplicates_ignored
        self.late_events += other.late_events
        self.alerts.update(other.alerts)


@dataclass(slots=True)
class CoreState:
    """Everything the core knows; pickled whole into a checkpoint."""

    inventory: Inventory
    dedup: Dedup
    stats: CoreStats
    windows: WindowEngine | None = None
    monitor: AnomalyMonitor | None = None


def _windows_and_monitor(config: CoreConfig) -> tuple[WindowEngine | None, AnomalyMonitor | None]:
    specs = config.window_specs()
    if not specs:
        return None, None
    engine = WindowEngine(specs, config.allowed_lateness_ms, config.max_window_gap_ms)
    return engine, AnomalyMonitor(config.detection, specs)


class ShardCore:
    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        windows, monitor = _windows_and_monitor(self.config)
        self.state = CoreState(
            inventory=Inventory(self.config.default_restock_threshold, self.config.default_target_stock),
            dedup=Dedup(self.config.dedup_horizon_ms),
            stats=CoreStats(),
            windows=windows,
            monitor=monitor,
        )
        self.out = Effects()
        self._archive = self.config.archive

    # --- the hot path ---------------------------------------------------------------------------

    def apply(self, raw: bytes, ref: str | int = "") -> bool:
        """Apply one record; returns True when it was a new, valid event. Never raises for bad input."""
        state = self.state
        stats = state.stats
        ev: Event | Rejection
        if len(raw) <= MAX_RECORD_BYTES:
            try:
                ev = decode_strict(raw)
            except (msgspec.ValidationError, msgspec.DecodeError):
                ev = decode_event(raw)  # again, for the rejection and its reason (the rare path)
        else:
            ev = decode_event(raw)
        if isinstance(ev, Rejection):
            stats.events_rejected += 1
            self.out.rejected.append(RejectedRecord(str(ref), ev.reason, raw))
            return False
        stats.events_valid += 1
        ts_ms = ev.ts_ms
        if not state.dedup.first_time(ev.event_id, ts_ms):
            stats.duplicates_ignored += 1
            return False
        out = self.out
        tally = stats.alerts
        inv = state.inventory
        win = state.windows
        if type(ev) is Sale:  # the most common type first, by identity (cheaper than isinstance)
            inv.sale(ev, out, tally)
            if win is not None:
                # WindowEngine.sale, inlined: this is the hottest line of the core.
                idx = ts_ms // win.pane_ms
                if idx < win.closed_idx:
                    stats.late_events += 1
                else:
                    store = win.stores.get(ev.store_id)
                    pane = store.panes.get(idx) if store is not None else None
                    if pane is None:
                        pane = win.new_pane(ev.store_id, idx)
                    quantity = ev.quantity
                    pane.lines += 1
                    pane.units += quantity
                    pane.revenue += quantity * ev.unit_price
                    tid = ev.transaction_id
                    if tid is None:
                        pane.sales_anon += 1
                    else:
                        pane.sale_ids.add(tid)
        elif isinstance(ev, Refund):
            inv.refund(ev, out, tally)
            if win is not None and not win.refund(
                ev.store_id, ts_ms, ev.quantity, ev.unit_price, ev.transaction_id
            ):
                stats.late_events += 1
        elif isinstance(ev, Restock):
            inv.restock(ev, out, tally)
        elif isinstance(ev, Count):
            inv.count(ev, out, tally)
        elif isinstance(ev, Product):
            inv.product(ev, out, tally)
        if self._archive:
            out.archive.append(raw)  # late events too: they are kept, only their window has closed
        if win is not None and ts_ms > win.newest_ms:
            win.newest_ms = ts_ms
            if ts_ms >= win.next_close_ms:
                self._closed(win.due())  # counts its own anomaly alerts
        return True

    def finish(self, last_data_ms: int | None = None) -> None:
        """End of input (a backtest's last line): close every open window, as if time moved past them
        (at least past `last_data_ms`, another core's `last_data_ms()`, when one input is split over
        several cores).

        Not for a live shard at shutdown: there, open windows are part of the checkpoint and close
        when later events arrive.
        """
        if self.state.windows is not None:
            self._closed(self.state.windows.flush(last_data_ms))

    def last_data_ms(self) -> int | None:
        """Event time of the last window pane holding data (None without windows or data)."""
        windows = self.state.windows
        return None if windows is None else windows.last_data_ms()

    def advance_watermark(self, ts_ms: int) -> None:
        """Move event time forward without an event (the shell's clock while a shard is idle), so the
        windows of a store that went silent still close and its outage is seen."""
        if self.state.windows is not None:
            self._closed(self.state.windows.advance(ts_ms))

    def _closed(self, windows: list[WindowResult]) -> None:
        monitor = self.state.monitor
        if not windows or monitor is None:
            return
        out = self.out
        alerts = self.state.stats.alerts
        for window in windows:
            monitor.window_closed(window, out, alerts)

    def drain(self) -> Effects:
        """Hand the collected effects to the shell and start a fresh collection."""
        out, self.out = self.out, Effects()
        return out

    # --- views ----------------------------------------------------------------------------------

    @property
    def stats(self) -> CoreStats:
        return self.state.stats

    def inventory(self) -> dict[str, dict[str, int]]:
        return self.state.inventory.by_store()

    def open_requests(self) -> dict[tuple[str, str], str]:
        return dict(self.state.inventory.open_requests)

    # --- checkpoints ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as bytes. Effects not yet drained are not part of it: drain and send first."""
        return pickle.dumps((SNAPSHOT_VERSION, self.config, self.state), protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def restore(cls, blob: bytes) -> ShardCore:
        version, config, state = pickle.loads(blob)
        if version == 1:
            # Before windows: keep the stock state, start windows and detectors fresh.
            known = {f.name: getattr(config, f.name) for f in fields(CoreConfig) if hasattr(config, f.name)}
            core = cls(CoreConfig(**known))
            core.state.inventory = state.inventory
            core.state.dedup = state.dedup
            core.state.stats = state.stats
            return core
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"checkpoint format {version} is not {SNAPSHOT_VERSION}")
        core = cls(config)
        core.state = state
        return core
