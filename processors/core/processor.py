"""The processor core for one shard: decode -> validate -> dedup -> stock -> windows -> detection -> effects.

One core per shard, because a store's events all live in one shard (partition key = store): the
state of a shard can then be checkpointed, moved to another worker, or split along hash-key ranges
on resharding, without touching any other shard's state.

Stock follows stream order; windows follow event time (processors/core/windows.py), and each closed
window is judged by the store's detector (processors/core/detectors/, monitor.py).
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Final

from foundation.contract import (
    MAX_RECORD_BYTES,
    Count,
    Event,
    Feedback,
    Product,
    Refund,
    Rejection,
    Restock,
    Sale,
    Store,
    decode_event,
    decode_strict,
    is_utf8,
)
from processors.core.dedup import DEFAULT_BUCKET_MS, Dedup, Manifest, Run
from processors.core.demand import RestockConfig
from processors.core.detectors import DetectorConfig
from processors.core.detectors.fleet_shape import FleetShape
from processors.core.effects import Effects, RejectedRecord
from processors.core.inventory import Inventory
from processors.core.monitor import AnomalyMonitor
from processors.core.windows import WindowEngine, WindowResult, WindowSpec

SNAPSHOT_VERSION: Final = 3
_MINUTE_MS: Final = 60_000
_DAY_MS: Final = 24 * 3600 * 1000
_SWEEP_EVERY_MS: Final = 3600 * 1000  # how often (in event time) silent stores are looked for


@dataclass(frozen=True, slots=True)
class CoreConfig:
    default_restock_threshold: int = 5
    default_target_stock: int = 40
    dedup_horizon_ms: int = _DAY_MS
    dedup_bucket_ms: int = DEFAULT_BUCKET_MS
    dedup_max_ahead_ms: int = 3600 * 1000
    # A store that has sent nothing for this long (event time) is forgotten: stock, catalog, open
    # requests, windows and detector go (0 keeps every store for ever).
    store_retention_ms: int = 35 * _DAY_MS
    archive: bool = True
    # Event-time windows per store (0 turns windows, and so detection, off).
    window_ms: int = 15 * _MINUTE_MS
    hopping_window_ms: int = 60 * _MINUTE_MS  # 0: no hopping window
    hopping_hop_ms: int = 15 * _MINUTE_MS
    allowed_lateness_ms: int = 2 * _MINUTE_MS
    max_window_gap_ms: int = 7 * 24 * 3600 * 1000
    detection: DetectorConfig = field(default_factory=DetectorConfig)
    restock: RestockConfig = field(default_factory=RestockConfig)
    # (New fields go last: a checkpoint's config is pickled by position, and `_upgraded` fills in
    # the ones an older checkpoint lacks.)
    # A store's windows close by its own event time; a store silent for this long (by the shard's
    # clock) has its windows closed anyway, so an outage is judged (docs/detection.md)
    store_idle_ms: int = 5 * _MINUTE_MS
    # A sale or refund up to this far behind its store's closing point is added to its closed windows,
    # which are emitted again as revisions (0: every late event is only counted)
    late_bound_ms: int = 4 * 3600 * 1000

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


@dataclass(frozen=True, slots=True)
class StockLine:
    """One product of one store as the shard keeps it (`ShardCore.stock_view`)."""

    store_id: str
    product_id: str
    on_hand: int
    threshold: int
    name: str | None
    open_request: bool


@dataclass(slots=True)
class CoreState:
    """Everything the core knows; pickled whole into a checkpoint."""

    inventory: Inventory
    dedup: Dedup
    stats: CoreStats
    windows: WindowEngine | None = None
    monitor: AnomalyMonitor | None = None
    # The newest event time of each store, for forgetting stores that went silent for good.
    last_seen: dict[str, int] = field(default_factory=dict)
    next_sweep_ms: int = 0


@dataclass(frozen=True, slots=True)
class CheckpointParts:
    """A checkpoint in parts: a small head (everything but the dedup keys and the stores' detectors,
    which it names), the dedup's immutable runs, and each store's detector as a piece named by its
    content. A run or piece once stored never changes, so it is written once; a detector changes
    when one of its store's windows closes, and only then is a new piece written."""

    head: bytes
    runs: dict[str, Run]
    pieces: dict[str, bytes]

    @property
    def names(self) -> list[str]:
        return sorted([*self.runs, *self.pieces])


PIECE_PREFIX: Final = "d-"


def _upgraded(config: CoreConfig, state: CoreState) -> CoreConfig:
    """A checkpoint's config and state brought up to this code (one from before the forecast policy
    has no restock config)."""
    if not all(hasattr(config, f.name) for f in fields(CoreConfig)):
        known = {f.name: getattr(config, f.name) for f in fields(CoreConfig) if hasattr(config, f.name)}
        config = CoreConfig(**known)
        state.inventory.restock_config = config.restock
    state.inventory.ensure_demand()
    if state.windows is not None:
        state.windows.guard(config.dedup_max_ahead_ms)  # one from before the windows' clock was guarded
        state.windows.settings(config.store_idle_ms, config.late_bound_ms)
    if state.monitor is not None:
        state.monitor.late_bound_ms = config.late_bound_ms
    return config


def _dedup(config: CoreConfig) -> Dedup:
    return Dedup(config.dedup_horizon_ms, config.dedup_bucket_ms, config.dedup_max_ahead_ms)


def forget_stores(state: CoreState, stores: set[str]) -> None:
    """Drop every piece of state of these stores (they went silent for good)."""
    inv = state.inventory
    inv.stock = {k: v for k, v in inv.stock.items() if k[0] not in stores}
    inv.catalog = {k: v for k, v in inv.catalog.items() if k[0] not in stores}
    inv.open_requests = {k: v for k, v in inv.open_requests.items() if k[0] not in stores}
    inv.out_of_stock = {k for k in inv.out_of_stock if k[0] not in stores}
    inv.limits = {k: v for k, v in inv.limits.items() if k[0] not in stores}
    if state.windows is not None:
        for store in stores:
            state.windows.stores.pop(store, None)
    if state.monitor is not None:
        for store in stores:
            state.monitor.detectors.pop(store, None)
        state.monitor.open_until = {k: v for k, v in state.monitor.open_until.items() if k[0] not in stores}
        for store in stores:  # its zone stays: where a store is does not expire
            state.monitor.mix.pop(store, None)
            state.monitor.mix_total.pop(store, None)
            state.monitor.recent_mix.pop(store, None)
            state.monitor.slot_counts.pop(store, None)
            state.monitor.judged.pop(store, None)
        state.monitor.feedback.forget(stores)
    for store in stores:
        state.last_seen.pop(store, None)


def _windows_and_monitor(config: CoreConfig) -> tuple[WindowEngine | None, AnomalyMonitor | None]:
    specs = config.window_specs()
    if not specs:
        return None, None
    # The dedup's limit guards the windows' clock too: one till with a wrong clock moves neither.
    engine = WindowEngine(
        specs,
        config.allowed_lateness_ms,
        config.max_window_gap_ms,
        config.dedup_max_ahead_ms,
        idle_ms=config.store_idle_ms,
        late_bound_ms=config.late_bound_ms,
    )
    return engine, AnomalyMonitor(config.detection, specs, config.late_bound_ms)


def _wrong_key(partition_key: str, store_id: str) -> str:
    return (
        f"partition key {partition_key[:64]!r} is not the store_id {store_id!r}: a store's events must "
        "all go to its own shard (put it again with partition key = store_id)"
    )


def decode_record(raw: bytes) -> Event | Rejection:
    """The event in a record, or the reason it is none (`apply` decodes with this)."""
    if len(raw) <= MAX_RECORD_BYTES:
        try:
            ev: Event | Rejection = decode_strict(raw)
        except Exception:  # any decode failure (msgspec's, UnicodeDecodeError, RecursionError, ...)
            return decode_event(raw)  # again, for the rejection and its reason (the rare path)
        # Where msgspec did not look (unknown fields): invalid UTF-8, or \u escapes that are no
        # character. Any escape sends the record to decode_event, which checks them: a one-byte
        # search (memchr) costs far less than searching for the two bytes.
        if (not raw.isascii() and not is_utf8(raw)) or b"\\" in raw:
            return decode_event(raw)
        return ev
    return decode_event(raw)


class ShardCore:
    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        windows, monitor = _windows_and_monitor(self.config)
        self.state = CoreState(
            inventory=Inventory(
                self.config.default_restock_threshold,
                self.config.default_target_stock,
                restock_config=self.config.restock,
            ),
            dedup=_dedup(self.config),
            stats=CoreStats(),
            windows=windows,
            monitor=monitor,
        )
        self.out = Effects()
        self._archive = self.config.archive
        # Each store's detector as last pickled for a checkpoint, until one of its windows closes.
        self._pieces: dict[str, tuple[object, str, bytes]] = {}

    # --- the hot path ---------------------------------------------------------------------------

    def apply(self, raw: bytes, ref: str | int = "", partition_key: str | None = None) -> bool:
        """Apply one record; returns True when it was a new, valid event. Never raises for bad input:
        whatever the bytes, the record is counted once, as valid or as rejected with a reason.

        `partition_key` (the stream's, when there is one) must be the event's `store_id`: an event
        put with another key is in another store's shard, where this core has none of its stock,
        so it is rejected with the reason instead of being applied to an empty stock."""
        return self.apply_decoded(decode_record(raw), raw, ref, partition_key)

    def apply_decoded(
        self, ev: Event | Rejection, raw: bytes, ref: str | int = "", partition_key: str | None = None
    ) -> bool:
        """`apply` for a record already decoded by `decode_record` (a reader that had to decode it
        anyway, to route it, need not pay for that twice)."""
        state = self.state
        stats = state.stats
        if isinstance(ev, Rejection):
            stats.events_rejected += 1
            self.out.rejected.append(RejectedRecord(str(ref), ev.reason, raw))
            return False
        if partition_key is not None and partition_key != ev.store_id:
            self.reject(raw, ref, _wrong_key(partition_key, ev.store_id))
            return False
        stats.events_valid += 1
        ts_ms = ev.ts_ms
        store_id = ev.store_id
        if not state.dedup.first_time(store_id, ev.event_id, ts_ms):
            stats.duplicates_ignored += 1
            return False
        seen = state.last_seen
        if seen.get(store_id, -1) < ts_ms:
            seen[store_id] = ts_ms
            if ts_ms >= state.next_sweep_ms:
                self._sweep()
        out = self.out
        tally = stats.alerts
        inv = state.inventory
        win = state.windows
        if type(ev) is Sale:  # the most common type first, by identity (cheaper than isinstance)
            inv.sale(ev, ts_ms, out, tally)
            if win is not None:
                # WindowEngine.sale, inlined: this is the hottest line of the core. A pane the store
                # has not open is new, or closed (late: revised within the bound, else counted).
                idx = ts_ms // win.pane_ms
                store = win.stores.get(store_id)
                pane = store.panes.get(idx) if store is not None else None
                if pane is None:
                    pane = win.new_pane(store_id, idx, ts_ms)
                elif ts_ms > store.newest_ms:  # type: ignore[union-attr]
                    store.newest_ms = ts_ms  # type: ignore[union-attr]
                if pane is None:
                    if not win.late(store_id, idx, True, ev.quantity, ev.unit_price, ev.transaction_id):
                        stats.late_events += 1
                else:
                    quantity = ev.quantity
                    pane.lines += 1
                    pane.units += quantity
                    pane.revenue += quantity * ev.unit_price
                    pane.items.append(ev.product_id)
                    tid = ev.transaction_id
                    if tid is None:
                        pane.sales_anon += 1
                    else:
                        pane.sale_ids.add(tid)
        elif isinstance(ev, Refund):
            inv.refund(ev, ts_ms, out, tally)
            if win is not None and not win.refund(
                ev.store_id, ts_ms, ev.quantity, ev.unit_price, ev.transaction_id, ev.product_id
            ):
                stats.late_events += 1
        elif isinstance(ev, Restock):
            inv.restock(ev, ts_ms, out, tally)
        elif isinstance(ev, Count):
            inv.count(ev, ts_ms, out, tally)
        elif isinstance(ev, Product):
            inv.product(ev, out, tally)
        elif isinstance(ev, Store) and state.monitor is not None:
            state.monitor.set_zone(ev.store_id, ev.timezone, ts_ms)
        elif isinstance(ev, Feedback) and state.monitor is not None:
            state.monitor.apply_feedback(ev)  # no stock effect; an unknown alert is only counted
        if self._archive:
            out.archive.append(raw)  # late events too: they are kept, only their window has closed
        # Only the events the windows aggregate move their watermark: a delivery or stock take stamped
        # by another system's clock (a truck's wall clock during a replay of last month) must not close
        # every window ahead of the sales still to come.
        # One far ahead (a till with a wrong clock) moves it only with a quorum (WindowEngine.ahead).
        if win is not None and ts_ms > win.newest_ms and (type(ev) is Sale or isinstance(ev, Refund)):
            if ts_ms - win.newest_ms <= win.max_ahead_ms:
                win.newest_ms = ts_ms
                if win.ahead_run.count:
                    win.ahead_run.count = 0  # a run of events far ahead is broken
            else:
                win.ahead(store_id, ts_ms)
            if win.newest_ms >= win.next_close_ms:
                self._closed(win.due())  # counts its own anomaly alerts
        return True

    def _sweep(self) -> None:
        """Forget stores silent for longer than the retention (by the dedup's guarded clock, so one
        event from a far-off clock cannot make every store look silent)."""
        state = self.state
        clock = state.dedup.clock_ms
        state.next_sweep_ms = max(clock, 0) + _SWEEP_EVERY_MS
        retention = self.config.store_retention_ms
        if retention <= 0:
            return
        cutoff = clock - retention
        gone = {s for s, ts in state.last_seen.items() if ts < cutoff}
        if gone:
            forget_stores(state, gone)
            state.stats.stores_forgotten += len(gone)

    def reject(self, raw: bytes, ref: str | int, reason: str) -> None:
        """Count and keep a record the shell found unreadable before the core saw an event in it
        (a KPL aggregate that fails its checksum, say)."""
        self.state.stats.events_rejected += 1
        self.out.rejected.append(RejectedRecord(str(ref), reason, raw))

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
        pieces = self._pieces
        catalog = self.state.inventory.catalog
        for window in windows:
            monitor.window_closed(window, out, alerts, catalog)
            pieces.pop(window.store_id, None)  # its detector learned: pickle it again

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

    def newest_event_times(self) -> Mapping[str, int]:
        """Each store's newest event time so far (a read-only view: what a store last said)."""
        return MappingProxyType(self.state.last_seen)

    def open_requests(self) -> dict[tuple[str, str], str]:
        return dict(self.state.inventory.open_requests)

    def stock_outs(self) -> int:
        """How many of the shard's (store, product) pairs are out of stock now."""
        return len(self.state.inventory.out_of_stock)

    def stock_view(self) -> list[StockLine]:
        """Every (store, product) the shard keeps stock of, with what a person looking at it needs."""
        inventory = self.state.inventory
        catalog = inventory.catalog
        open_requests = inventory.open_requests
        lines = []
        for key, on_hand in inventory.stock.items():
            entry = catalog.get(key)
            lines.append(
                StockLine(
                    store_id=key[0],
                    product_id=key[1],
                    on_hand=on_hand,
                    threshold=inventory.threshold_of(key)[0],
                    name=entry.name if entry is not None else None,
                    open_request=key in open_requests,
                )
            )
        return lines

    def settle_requests(self) -> None:
        """Close every open restock request and stock-out, and zero the alert tally: for a history
        loaded before the stream, whose requests were delivered in the past."""
        inventory = self.state.inventory
        inventory.open_requests.clear()
        inventory.out_of_stock.clear()
        self.state.stats.alerts.clear()

    def event_clock_ms(self) -> int | None:
        """The event time the shard's windows have reached (None without windows, or before the
        first sale or refund): what a quiet shard is behind or ahead of the others by."""
        windows = self.state.windows
        return windows.newest_ms if windows is not None and windows.started else None

    def feedback_outcomes(self) -> dict[str, int]:
        """Operators' feedback events by what became of them (applied, unknown_alert, no_detector)."""
        monitor = self.state.monitor
        return dict(monitor.feedback.counts) if monitor is not None else {}

    def window_engine(self) -> WindowEngine | None:
        """The windows themselves, for a reader that moves their clock by a file's time (the backtest's
        workers, each holding part of one input); None with windows off."""
        return self.state.windows

    def dedup_memory(self) -> Dedup:
        """The dedup memory itself, for the soak benchmark that feeds it ids in bulk and measures it."""
        return self.state.dedup

    def expected_sales(self, from_ms: int, to_ms: int) -> float:
        """Sales the shard's stores would make between two event times, by their own histories
        (0 without detection): what a silence of the whole stream over that span hides."""
        monitor = self.state.monitor
        return 0.0 if monitor is None else monitor.expected_sales(from_ms, to_ms)

    def fleet_shape(self) -> FleetShape | None:
        """The shape of a day this shard's stores have taught (published for the other shards)."""
        monitor = self.state.monitor
        return None if monitor is None else monitor.fleet_shape()

    def set_fleet_prior(self, prior: FleetShape | None) -> None:
        """The rest of the fleet's shape of a day (the other shards', or an earlier run's)."""
        monitor = self.state.monitor
        if monitor is not None:
            monitor.set_fleet_prior(prior)

    # --- checkpoints ----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole state as bytes. Effects not yet drained are not part of it: drain and send first."""
        return pickle.dumps((SNAPSHOT_VERSION, self.config, self.state), protocol=pickle.HIGHEST_PROTOCOL)

    def checkpoint_parts(self) -> CheckpointParts:
        """The state as a head, named immutable dedup runs and detector pieces (see CheckpointParts)."""
        dedup = self.state.dedup
        dedup.cut()
        monitor = self.state.monitor
        pieces: dict[str, bytes] = {}
        detectors: dict[str, str] = {}
        head_monitor = monitor
        if monitor is not None:
            cache = self._pieces
            for store_id, detector in monitor.detectors.items():
                cached = cache.get(store_id)
                if cached is not None and cached[0] is detector:
                    _, name, blob = cached
                else:
                    blob = pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)
                    name = PIECE_PREFIX + hashlib.blake2b(blob, digest_size=16).hexdigest()
                    cache[store_id] = (detector, name, blob)
                pieces[name] = blob
                detectors[store_id] = name
            for gone in cache.keys() - monitor.detectors.keys():
                del cache[gone]
            head_monitor = copy.copy(monitor)
            head_monitor.detectors = {}
            head_monitor._ts = {}  # a cache of formatted times: not state
        # The keys go in runs (named by the manifest), the detectors in pieces.
        head_state = replace(self.state, dedup=Dedup(1), monitor=head_monitor)
        head = pickle.dumps(
            (SNAPSHOT_VERSION, self.config, head_state, dedup.manifest(), detectors),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        return CheckpointParts(head, dedup.runs(), pieces)

    @staticmethod
    def head_names(head: bytes) -> list[str]:
        """The names of the runs and pieces a head needs."""
        _, _, _, manifest, detectors = pickle.loads(head)
        runs = [name for _, names, _ in manifest.buckets for name in names]
        return sorted({*runs, *detectors.values()})

    @classmethod
    def from_parts(
        cls, head: bytes, runs: Mapping[str, Run], pieces: Mapping[str, bytes], keys: bool = True
    ) -> ShardCore:
        """The core of a head, its runs and pieces. keys=False: a reader of stock only, given no
        runs and maybe no pieces; the dedup memory is left empty and missing detectors out."""
        version, config, state, manifest, detectors = pickle.loads(head)
        if version != SNAPSHOT_VERSION or not isinstance(manifest, Manifest):
            raise ValueError(f"checkpoint head format {version} is not {SNAPSHOT_VERSION}")
        if not keys:
            manifest = replace(manifest, buckets=())
        core = cls(_upgraded(config, state))
        state.dedup = Dedup.from_manifest(manifest, runs)
        if state.monitor is not None:
            state.monitor.detectors = {
                store_id: pickle.loads(pieces[name])
                for store_id, name in detectors.items()
                if keys or name in pieces
            }
        core.state = state
        return core

    @classmethod
    def restore(cls, blob: bytes) -> ShardCore:
        version, config, state = pickle.loads(blob)
        if version in (1, 2):
            # Older formats: the dedup memory was a dict of event ids (not per store), and windows and
            # detectors were in UTC before local time and the detector registry: keep the stock state,
            # start the dedup memory, windows and detectors afresh.
            known = {f.name: getattr(config, f.name) for f in fields(CoreConfig) if hasattr(config, f.name)}
            known["dedup_horizon_ms"] = min(known.get("dedup_horizon_ms", _DAY_MS), _DAY_MS)
            core = cls(CoreConfig(**known))
            core.state.inventory = state.inventory
            for f in fields(CoreStats):
                if hasattr(state.stats, f.name):
                    setattr(core.state.stats, f.name, getattr(state.stats, f.name))
            core.state.inventory.restock_config = core.config.restock
            core.state.inventory.ensure_demand()
            return core
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"checkpoint format {version} is not {SNAPSHOT_VERSION}")
        core = cls(_upgraded(config, state))
        core.state = state
        return core
