"""The processor core for one shard: decode -> validate -> dedup -> stock -> restock -> windows ->
detection -> effects.

One core per shard, because a store's events all live in one shard (partition key = store): the
state of a shard can then be checkpointed, moved to another worker, or split along hash-key ranges
on resharding, without touching any other shard's state.

Stock follows stream order: a stock event goes to the stock ledger, which says what changed, then to
the demand forecast, which learns from that, then to the restock policy, which reads both and decides
(stock_ledger.py, demand.py, restock_policy.py), once each. Windows follow event time
(processors/core/windows.py), and each closed window is judged by the store's detector
(processors/core/detectors/, monitor.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    RestockRequest,
    Sale,
    Store,
    decode_event,
    decode_strict,
    is_utf8,
)
from foundation.timeunits import HOUR_MS
from processors.core import state_format
from processors.core.dedup import Dedup, Run
from processors.core.demand import DemandForecast
from processors.core.detectors.fleet_shape import FleetShape
from processors.core.effects import Effects, RejectedRecord
from processors.core.monitor import AnomalyMonitor
from processors.core.restock_policy import policy_for
from processors.core.state import CoreConfig, CoreState, CoreStats
from processors.core.stock_ledger import StockChange, StockLedger
from processors.core.windows import WindowEngine, WindowResult

__all__ = ["CheckpointParts", "CoreConfig", "CoreState", "CoreStats", "ShardCore", "decode_record"]

_SWEEP_EVERY_MS: Final = HOUR_MS  # how often (in event time) silent stores are looked for


@dataclass(frozen=True, slots=True)
class StockLine:
    """One product of one store as the shard keeps it (`ShardCore.stock_view`)."""

    store_id: str
    product_id: str
    on_hand: int
    threshold: int
    name: str | None
    open_request: bool


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
        restock = self.config.restock
        self.state = CoreState(
            inventory=StockLedger(self.config.default_restock_threshold, self.config.default_target_stock),
            dedup=_dedup(self.config),
            stats=CoreStats(),
            windows=windows,
            monitor=monitor,
            forecast=DemandForecast(restock) if restock.policy == "forecast" else None,
            policy=policy_for(restock.policy),
        )
        self.out = Effects()
        self._archive = self.config.archive
        # Each store's detector as last encoded for a checkpoint, until one of its windows closes.
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
            change = inv.sale(ev, ts_ms, out, tally)
            forecast = state.forecast
            if forecast is not None:
                forecast.sale(ev.store_id, ev.product_id, ev.quantity, ts_ms, change.on_hand)
            requests = state.policy.decide(change, inv, forecast)
            if requests:
                self._requested(requests, ts_ms)
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
            self._stock_changed(inv.refund(ev, ts_ms, out, tally))
            if win is not None and not win.refund(
                ev.store_id, ts_ms, ev.quantity, ev.unit_price, ev.transaction_id, ev.product_id
            ):
                stats.late_events += 1
        elif isinstance(ev, Restock):
            self._stock_changed(inv.restock(ev, ts_ms, out, tally))
        elif isinstance(ev, Count):
            self._stock_changed(inv.count(ev, ts_ms, out, tally))
        elif isinstance(ev, Product):
            inv.product(ev, out, tally)
            state.policy.catalog_changed((ev.store_id, ev.product_id))
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

    def _stock_changed(self, change: StockChange) -> None:
        """A stock event other than a sale, after the ledger: the forecast learns, the policy decides
        (a sale does the same, spelled out on the hot path)."""
        state = self.state
        forecast = state.forecast
        if forecast is not None:
            forecast.learn(change)
        requests = state.policy.decide(change, state.inventory, forecast)
        if requests:
            self._requested(requests, change.ts_ms)

    def _requested(self, requests: Sequence[RestockRequest], ts_ms: int) -> None:
        self.state.inventory.opened(requests, ts_ms)
        self.out.requests.extend(requests)
        self.state.stats.alerts["restock_request"] += len(requests)

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
            pieces.pop(window.store_id, None)  # its detector learned: encode it again

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

    def tag_runs(self, tag: str, *, rename: bool) -> None:
        """Mark the dedup runs this core writes from now on as one owner's (the checkpoint store's
        tag). rename=True: the runs it holds were never stored under this tag (a new shard's core, a
        split's or merge's) and take names of their own; False: they were loaded from its store."""
        dedup = self.state.dedup
        if dedup.run_tag != tag or not rename:
            dedup.tag_runs(tag, rename=rename)

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
        """The whole state as one object (head, runs and pieces together): for copies and tests.
        Effects not yet drained are not part of it: drain and send first."""
        return state_format.whole(self.checkpoint_parts())

    def checkpoint_parts(self) -> CheckpointParts:
        """The state as a head, named immutable dedup runs and detector pieces (see CheckpointParts),
        each in the documented format (processors/core/state_format.py, docs/checkpoints.md)."""
        dedup = self.state.dedup
        dedup.cut()
        monitor = self.state.monitor
        pieces: dict[str, bytes] = {}
        detectors: dict[str, str] = {}
        if monitor is not None:
            cache = self._pieces
            for store_id, detector in monitor.detectors.items():
                cached = cache.get(store_id)
                if cached is not None and cached[0] is detector:
                    _, name, blob = cached
                else:
                    blob = state_format.encode_piece(detector)
                    name = PIECE_PREFIX + hashlib.blake2b(blob, digest_size=16).hexdigest()
                    cache[store_id] = (detector, name, blob)
                pieces[name] = blob
                detectors[store_id] = name
            for gone in cache.keys() - monitor.detectors.keys():
                del cache[gone]
        head = state_format.encode_head(self.config, self.state, dedup.manifest(), detectors)
        return CheckpointParts(head, dedup.runs(), pieces)

    @staticmethod
    def head_names(head: bytes) -> list[str]:
        """The names of the runs and pieces a head needs."""
        return state_format.head_names(head)

    @classmethod
    def from_parts(
        cls, head: bytes, runs: Mapping[str, Run], pieces: Mapping[str, bytes], keys: bool = True
    ) -> ShardCore:
        """The core of a head, its runs and pieces; `StateFormatError` when any of them is not in a
        format this release knows. keys=False: a reader of stock only, given no runs and maybe no
        pieces; the dedup memory is left empty and missing detectors out."""
        return state_format.restore(cls, head, runs, pieces, keys)

    @classmethod
    def restore(cls, blob: bytes) -> ShardCore:
        """The core of a `snapshot`."""
        head, runs, pieces = state_format.split_whole(blob)
        return cls.from_parts(head, runs, pieces)
