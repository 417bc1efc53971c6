"""Event-time windows per store: tumbling and hopping windows of sales and refunds, with a watermark.

Every window is a sum of *panes*: fixed slices of event time whose length divides every window's size
and hop (15 minutes for the defaults: 15-minute tumbling windows, 1-hour windows every 15 minutes).
An event only touches its pane (two dict lookups and a few additions); all the work of building
windows happens when a pane closes, once per store per pane.

Each store keeps its own event-time progress: its newest sale or refund time. A store's pane closes
when the store's own watermark (its newest time minus the allowed lateness) passes it, or, for a store
that has gone silent, when the shard's clock (the newest time of any store) is `idle_ms` past it. So a
store whose uploads are consistently behind its shard-mates' (a slow uplink, a till that batches) is
not judged by their progress, and a store whose tills stop completely (the very outage we must
detect) is still judged `idle_ms` after the fact. Closing is evaluated at fixed points of the shard's
clock (each pane boundary plus the lateness, and plus `idle_ms`), so where a store's windows close
does not depend on which other stores share its shard.

An event whose pane has already closed for its store is late. Within `late_bound_ms` behind the
store's closing point it is added to the closed pane (closed panes are kept that long) and every
closed window containing it is emitted again, with `revision` 1, 2, ... (batched: once per closing
point). Beyond the bound it is only counted (and still archived and applied to stock by the caller).

Closed windows are emitted even when empty (a store closed at night), so that a consumer (and the
detector's seasonal slots) sees one window per slot, every slot. A jump of a store's closing point
longer than `max_gap_ms` (a clock far off, a long outage) is not filled with empty windows: its open
panes are flushed and the span is skipped. At the end of an input (`flush`), a window that ends after
the input's last event time says nothing about silence: it is emitted `partial` (not judged), or not
at all when it starts after it.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

from foundation.timeunits import HOUR_MS, MINUTE_MS

_NEVER: Final = -(2**62)
_NO_LIMIT: Final = 2**62
_NO_AHEAD: Final = 2**62  # no guard: any newer event moves the clock
# One store's events far ahead of the clock, in a row, before the clock believes them (AheadRun)
AHEAD_QUORUM: Final = 5
AHEAD_SPAN_MS: Final = 15 * MINUTE_MS


class WindowSpec:
    """One window shape; tumbling when hop == size. Immutable; `name` and `kind` are computed once."""

    __slots__ = ("hop_ms", "kind", "name", "size_ms")

    def __init__(self, size_ms: int, hop_ms: int) -> None:
        if size_ms <= 0 or hop_ms <= 0:
            raise ValueError("window size and hop must be positive")
        if hop_ms > size_ms:
            raise ValueError("a window's hop cannot be longer than its size (events would fall between)")
        self.size_ms = size_ms
        self.hop_ms = hop_ms
        self.kind = "tumbling" if hop_ms == size_ms else "hopping"
        self.name = _duration(size_ms) if hop_ms == size_ms else f"{_duration(size_ms)}/{_duration(hop_ms)}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WindowSpec) and (self.size_ms, self.hop_ms) == (other.size_ms, other.hop_ms)

    def __hash__(self) -> int:
        return hash((self.size_ms, self.hop_ms))

    def __repr__(self) -> str:
        return f"WindowSpec({self.size_ms}, {self.hop_ms})"

    def __reduce__(self) -> tuple[type[WindowSpec], tuple[int, int]]:
        return WindowSpec, (self.size_ms, self.hop_ms)


def _duration(ms: int) -> str:
    if ms % HOUR_MS == 0:
        return f"{ms // HOUR_MS}h"
    if ms % MINUTE_MS == 0:
        return f"{ms // MINUTE_MS}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


class Pane:
    """Sums of one store's sales and refunds over one pane of event time, and the products of its lines
    (counted only when the pane closes: an append is the cheapest thing the hot path can do)."""

    __slots__ = (
        "items",
        "lines",
        "refund_amount",
        "refund_ids",
        "refund_items",
        "refund_lines",
        "refund_units",
        "refunds_anon",
        "revenue",
        "sale_ids",
        "sales_anon",
        "units",
    )

    def __init__(self) -> None:
        self.lines = 0
        self.units = 0
        self.revenue = 0.0
        self.sales_anon = 0
        self.sale_ids: set[str] = set()
        self.refund_lines = 0
        self.refund_units = 0
        self.refund_amount = 0.0
        self.refunds_anon = 0
        self.refund_ids: set[str] = set()
        self.items: list[str] = []  # product id of every sale line
        self.refund_items: list[str] = []  # ... and of every refund line


# A closed pane reduced to numbers (its id sets counted), kept for the hopping windows:
# (sales, lines, units, revenue, refunds, refund_lines, refund_units, refund_amount)
PaneTotals = tuple[int, int, int, float, int, int, int, float]
_EMPTY: Final[PaneTotals] = (0, 0, 0, 0.0, 0, 0, 0, 0.0)


def _totals(pane: Pane) -> PaneTotals:
    return (
        len(pane.sale_ids) + pane.sales_anon,
        pane.lines,
        pane.units,
        pane.revenue,
        len(pane.refund_ids) + pane.refunds_anon,
        pane.refund_lines,
        pane.refund_units,
        pane.refund_amount,
    )


class WindowResult(msgspec.Struct, frozen=True):
    """One closed window of one store.

    `sales` counts sales (distinct transaction ids, or sale events without one); `lines` counts sale
    events. A sale whose lines straddle a pane boundary counts once in each pane (its lines are seconds
    apart, so this is rare and never hides a trend).
    """

    store_id: str
    spec: WindowSpec
    start_ms: int
    end_ms: int
    sales: int
    lines: int
    units: int
    revenue: float
    refunds: int
    refund_lines: int
    refund_units: int
    refund_amount: float
    # Lines per product, for a window that is one pane (the detector's slot): who drove an anomaly.
    products: dict[str, int] | None = None
    refund_products: dict[str, int] | None = None
    # 0: the window as it first closed; 1, 2, ...: it again, with sales that arrived late (within the
    # late bound) added. Revisions are not judged by the detector.
    revision: int = 0
    # The window ends after the input's last event time (the end of a backtest): not judged.
    partial: bool = False

    @property
    def refund_ratio(self) -> float | None:
        """Refunded amount over sold amount; None when nothing was sold."""
        return self.refund_amount / self.revenue if self.revenue > 0 else None

    @property
    def avg_basket(self) -> float | None:
        """Revenue per sale; None when nothing was sold."""
        return self.revenue / self.sales if self.sales else None

    @property
    def empty(self) -> bool:
        return self.lines == 0 and self.refund_lines == 0


@dataclass(slots=True)
class StoreWindows:
    """The open panes of one store, the recently closed ones that hopping windows still need, and the
    store's own event-time progress."""

    first_idx: int
    panes: dict[int, Pane] = field(default_factory=dict)
    recent: deque[PaneTotals] = field(default_factory=deque)
    # Panes below this were already closed by the store's previous shard (a merge of two shards whose
    # clocks differ): they are not closed again.
    resume_idx: int = 0
    closed: int = _NEVER  # this store's panes below this index are closed
    newest_ms: int = _NEVER  # the store's newest sale or refund time
    # Closed panes holding data, within the late bound (and a window's span before it): late events
    # within the bound are added here
    kept: dict[int, Pane] = field(default_factory=dict)
    # (spec index, end pane) -> the last revision emitted of that window
    revisions: dict[tuple[int, int], int] = field(default_factory=dict)


class AheadRun:
    """Sales and refunds far ahead of a shard's clock, in a row (nothing in step between them).

    A till with a wrong clock (local time sent as UTC, a wrong date) must not close every store's
    windows: its events come between the other stores' events, which break its run, so it never
    moves the clock. A run moves it when a second store's event joins it (two clocks agree that time
    moved on: the shard is back after an outage, or the first stores open in the morning), or when
    one store alone keeps going for `AHEAD_QUORUM` events over `AHEAD_SPAN_MS` of its own time (the
    only store trading at that hour has no one to be checked against)."""

    __slots__ = ("count", "first_ms", "store")

    def __init__(self) -> None:
        self.count = 0  # events in the run (0: none open)
        self.store = ""  # the store of its first event
        self.first_ms = 0  # ... and that event's time

    def add(self, store_id: str, ts_ms: int) -> bool:
        """One more event far ahead; True when the run is believed (and it starts over)."""
        if self.count == 0:
            self.store, self.first_ms = store_id, ts_ms
        elif store_id != self.store or (
            self.count + 1 >= AHEAD_QUORUM and ts_ms - self.first_ms >= AHEAD_SPAN_MS
        ):
            self.count = 0
            return True
        self.count += 1
        return False


class WindowEngine:
    """Per-store event-time windows of one shard: each store's closed by its own watermark, or by the
    shard's clock once the store has been silent for `idle_ms` (module docstring)."""

    __slots__ = (
        "_hops",
        "_keep_panes",
        "_max_gap_panes",
        "_span",
        "ahead_run",
        "closed_idx",
        "dirty",
        "idle_ms",
        "late_panes",
        "lateness_ms",
        "max_ahead_ms",
        "newest_ms",
        "next_close_ms",
        "pane_ms",
        "specs",
        "started",
        "stores",
    )

    def __init__(
        self,
        specs: tuple[WindowSpec, ...],
        lateness_ms: int,
        max_gap_ms: int,
        max_ahead_ms: int = _NO_AHEAD,
        idle_ms: int | None = None,
        late_bound_ms: int = 0,
    ) -> None:
        if not specs:
            raise ValueError("at least one window spec is needed")
        if lateness_ms < 0:
            raise ValueError("allowed lateness cannot be negative")
        if late_bound_ms < 0:
            raise ValueError("the late bound cannot be negative")
        self.specs = specs
        self.lateness_ms = lateness_ms
        # A silent store's panes close once the shard's clock is this far past them (None: with the
        # shard's watermark, every store at once)
        self.idle_ms = lateness_ms if idle_ms is None else max(idle_ms, lateness_ms)
        pane = 0
        for spec in specs:
            pane = math.gcd(pane, spec.size_ms, spec.hop_ms)
        self.pane_ms = pane
        # Per spec: (panes per hop, panes per window)
        self._hops = tuple((s.hop_ms // pane, s.size_ms // pane) for s in specs)
        self._span = max(n for _, n in self._hops)
        self._max_gap_panes = max(max_gap_ms // pane, self._span)
        # Closed panes within this many of a store's closing point take late events (0: none do)
        self.late_panes = -(-late_bound_ms // pane)
        self._keep_panes = self.late_panes + self._span if self.late_panes else 0
        self.stores: dict[str, StoreWindows] = {}
        self.started = False
        self.newest_ms = _NEVER  # the newest event time seen in the shard (the shard's clock)
        self.closed_idx = _NEVER  # the shard's watermark pane: up-to-date stores are closed below it
        self.next_close_ms = _NEVER  # once newest_ms reaches this, call due(): a pane may close
        # An event more than max_ahead_ms ahead of newest_ms moves the clock only with a quorum (ahead())
        self.max_ahead_ms = _NO_AHEAD
        self.guard(max_ahead_ms)
        self.ahead_run = AheadRun()
        # (store, pane) of closed panes that took late events since the last closing point
        self.dirty: set[tuple[str, int]] = set()

    def guard(self, max_ahead_ms: int) -> None:
        """Guard the clock against events more than this far ahead (0 or less: no guard)."""
        self.max_ahead_ms = max_ahead_ms if max_ahead_ms > 0 else _NO_AHEAD

    def settings(self, idle_ms: int, late_bound_ms: int) -> None:
        """Set the idle bound and late bound (a checkpoint from before they existed gets the config's)."""
        self.idle_ms = max(idle_ms, self.lateness_ms)
        self.late_panes = -(-late_bound_ms // self.pane_ms)
        self._keep_panes = self.late_panes + self._span if self.late_panes else 0

    @property
    def watermark_ms(self) -> int | None:
        return self.newest_ms - self.lateness_ms if self.started else None

    @property
    def floor_idx(self) -> int:
        """Every store's panes below this are closed (the lowest store's closing point)."""
        return min((s.closed for s in self.stores.values()), default=self.closed_idx)

    # --- per event (the hot path) ----------------------------------------------------------------

    def new_pane(self, store_id: str, idx: int, ts_ms: int = _NEVER) -> Pane | None:
        """A new open pane of the store; None when the store has closed it (the event is late).
        (`ShardCore.apply_decoded` calls this when the store has no open pane at `idx`.)"""
        store = self.stores.get(store_id)
        if store is None:
            # A new store: its windows start at its first event, but not further back than the late
            # bound behind what the shard's clock has left behind for silent stores.
            closed = _NEVER
            if self.started:
                floor = (self.newest_ms - self.idle_ms) // self.pane_ms
                closed = max(min(idx, floor), floor - self.late_panes)
            store = self.stores[store_id] = StoreWindows(first_idx=max(idx, closed), closed=closed)
        if ts_ms > store.newest_ms:
            store.newest_ms = ts_ms
        if idx < store.closed:
            return None
        if idx < store.first_idx:
            store.first_idx = idx
        pane = store.panes[idx] = Pane()
        return pane

    def _pane_at(self, store_id: str, ts_ms: int) -> Pane | None:
        """The store's pane for an event time; None when it is late (its window has closed)."""
        idx = ts_ms // self.pane_ms
        store = self.stores.get(store_id)
        pane = store.panes.get(idx) if store is not None else None
        if pane is None:
            return self.new_pane(store_id, idx, ts_ms)
        if ts_ms > store.newest_ms:  # type: ignore[union-attr]
            store.newest_ms = ts_ms  # type: ignore[union-attr]
        return pane

    def sale(
        self,
        store_id: str,
        ts_ms: int,
        quantity: int,
        unit_price: float,
        tid: str | None,
        product_id: str = "",
    ) -> bool:
        """Add a sale line; False when it is late beyond the bound (a late line within it revises
        its closed windows). (ShardCore.apply inlines this: the hottest path.)"""
        pane = self._pane_at(store_id, ts_ms)
        if pane is None:
            return self.late(store_id, ts_ms // self.pane_ms, True, quantity, unit_price, tid)
        pane.lines += 1
        pane.units += quantity
        pane.revenue += quantity * unit_price
        pane.items.append(product_id)
        if tid is None:
            pane.sales_anon += 1
        else:
            pane.sale_ids.add(tid)
        return True

    def refund(
        self,
        store_id: str,
        ts_ms: int,
        quantity: int,
        unit_price: float,
        tid: str | None,
        product_id: str = "",
    ) -> bool:
        """Add a refund line; False when it is late beyond the bound."""
        pane = self._pane_at(store_id, ts_ms)
        if pane is None:
            return self.late(store_id, ts_ms // self.pane_ms, False, quantity, unit_price, tid)
        pane.refund_lines += 1
        pane.refund_units += quantity
        pane.refund_amount += quantity * unit_price
        pane.refund_items.append(product_id)
        if tid is None:
            pane.refunds_anon += 1
        else:
            pane.refund_ids.add(tid)
        return True

    def late(
        self, store_id: str, idx: int, is_sale: bool, quantity: int, unit_price: float, tid: str | None
    ) -> bool:
        """A sale or refund line whose pane the store has closed: added to the closed pane when it is
        within the late bound (its windows are emitted again at the next closing point); False when
        it is beyond it (the caller counts it as late)."""
        store = self.stores.get(store_id)
        if (
            store is None
            or idx < store.closed - self.late_panes
            or idx < store.first_idx
            or idx < store.resume_idx
            or idx >= store.closed
        ):
            return False
        pane = store.kept.get(idx)
        if pane is None:
            pane = store.kept[idx] = Pane()
        if is_sale:
            pane.lines += 1
            pane.units += quantity
            pane.revenue += quantity * unit_price
            if tid is None:
                pane.sales_anon += 1
            else:
                pane.sale_ids.add(tid)
        else:
            pane.refund_lines += 1
            pane.refund_units += quantity
            pane.refund_amount += quantity * unit_price
            if tid is None:
                pane.refunds_anon += 1
            else:
                pane.refund_ids.add(tid)
        self.dirty.add((store_id, idx))
        return True

    # --- when the watermark moves -----------------------------------------------------------------
    #
    # The caller keeps `newest_ms` up to date on the hot path (one comparison per event) and calls
    # `due()` only once `newest_ms` reaches `next_close_ms`.

    def due(self) -> list[WindowResult]:
        """Close the panes each store's watermark (or the idle bound) has passed; returns the windows
        that closed, after the revisions of windows that took late events."""
        pane_ms = self.pane_ms
        newest = self.newest_ms
        lead = (newest - self.lateness_ms) // pane_ms
        if not self.started:
            # The shard's first closing point: each store's windows begin at the pane the watermark is
            # in (or earlier, at its first pane holding data).
            self.started = True
            for store in self.stores.values():
                if store.closed == _NEVER:
                    store.closed = min(store.first_idx, lead)
        results: list[WindowResult] = []
        if self.dirty:
            self._revise(results)
        floor = (newest - self.idle_ms) // pane_ms
        lateness = self.lateness_ms
        targets: dict[str, int] = {}
        for store_id, store in self.stores.items():
            own = store.newest_ms if store.newest_ms < newest else newest
            target = (own - lateness) // pane_ms
            if target < floor:
                target = floor
            if target > store.closed:
                targets[store_id] = target
        if targets:
            self._close_targets(targets, results, _NO_LIMIT)
        if lead > self.closed_idx:
            self.closed_idx = lead
        self._schedule()
        return results

    def _schedule(self) -> None:
        """The next closing point: the next pane boundary plus the lateness, or plus the idle bound
        (fixed points of the shard's clock, whichever stores the shard has)."""
        pane_ms = self.pane_ms
        newest = self.newest_ms
        by_own = ((newest - self.lateness_ms) // pane_ms + 1) * pane_ms + self.lateness_ms
        by_idle = ((newest - self.idle_ms) // pane_ms + 1) * pane_ms + self.idle_ms
        self.next_close_ms = min(by_own, by_idle)

    def ahead(self, store_id: str, ts_ms: int) -> None:
        """An event more than `max_ahead_ms` ahead of the clock (the caller checks that): a till with
        a wrong clock must not close every store's windows (`AheadRun`). The event itself waits in its
        own pane either way."""
        if self.newest_ms == _NEVER or self.ahead_run.add(store_id, ts_ms):
            self.newest_ms = ts_ms  # the shard's first event, or time really moved on

    def advance(self, ts_ms: int) -> list[WindowResult]:
        """Move the shard's event time to `ts_ms` if it is newer (e.g. the shell's clock while idle)."""
        if ts_ms <= self.newest_ms:
            return []
        self.newest_ms = ts_ms
        if ts_ms < self.next_close_ms:
            return []
        return self.due()

    def last_data_ms(self) -> int | None:
        """The start of the last pane holding data (None when none does): where `flush` ends."""
        last = self._last_pane(self._horizon())
        return None if last is None else last * self.pane_ms

    def flush(self, last_ms: int | None = None) -> list[WindowResult]:
        """End of input: close every window that holds data, as far as the input says anything.

        A window that ends at or before the input's last event time (the shard's clock: a store silent
        there while others traded is judged) closes as usual; one that ends after it is emitted
        `partial` (its record, not judged: the input ended, not the store's trade), and one that starts
        after it is not emitted. `last_ms` moves the end out to another engine's last data (a backtest
        split over workers ends every worker where one worker over the whole file would)."""
        if not self.started:
            return []
        results: list[WindowResult] = []
        if self.dirty:
            self._revise(results)
        last = self._last_pane(self._horizon())
        if last_ms is not None:
            last = max(last if last is not None else last_ms // self.pane_ms, last_ms // self.pane_ms)
        if last is None:
            return results
        # Past the last pane with data, far enough for every hopping window over it to end.
        end = last + self._span
        targets = {sid: end for sid, store in self.stores.items() if store.closed < end}
        if targets:
            self._close_targets(targets, results, self.newest_ms)
        if end > self.closed_idx:
            self.closed_idx = end
        self._schedule()
        return results

    def _horizon(self) -> int:
        """Panes from here on hold only events far ahead of the clock (a till with a wrong clock):
        the end of input does not close them, or it would fill the time up to them with empty windows."""
        if self.max_ahead_ms >= _NO_AHEAD or self.newest_ms == _NEVER:
            return _NO_LIMIT
        return (self.newest_ms + self.max_ahead_ms) // self.pane_ms + 1

    def _last_pane(self, below: int) -> int | None:
        """The last open pane holding data before `below` (None if none)."""
        last = None
        for store in self.stores.values():
            for idx in store.panes:
                if idx < below and (last is None or idx > last):
                    last = idx
        return last

    def _close_targets(self, targets: dict[str, int], results: list[WindowResult], input_end: int) -> None:
        """Close each store's panes up to its target, pane by pane across the stores (a pane of every
        store before the next pane of any)."""
        stores = self.stores
        gap = self._max_gap_panes
        begin = _NO_LIMIT
        end = _NEVER
        for store_id, target in list(targets.items()):
            store = stores[store_id]
            if target - store.closed > gap:
                # A long jump: flush the open panes with data, skip the span.
                last = max((i for i in store.panes if i < target), default=store.closed - 1)
                flush_to = min(target, last + self._span)
                for idx in range(store.closed, flush_to):
                    self._close_pane(store_id, store, idx, results, input_end)
                store.recent.clear()
                store.kept.clear()
                store.revisions.clear()
                store.first_idx = max(store.first_idx, target)
                store.closed = target
                del targets[store_id]
                continue
            begin = min(begin, store.closed)
            end = max(end, target)
        for idx in range(begin, end):
            for store_id, target in targets.items():
                store = stores[store_id]
                if store.closed <= idx < target:
                    self._close_pane(store_id, store, idx, results, input_end)

    def _close_pane(
        self, store_id: str, store: StoreWindows, idx: int, results: list[WindowResult], input_end: int
    ) -> None:
        store.closed = idx + 1
        if idx < store.first_idx or idx < store.resume_idx:
            return
        pane = store.panes.pop(idx, None)
        totals = _EMPTY if pane is None else _totals(pane)
        mix = _mix(pane)
        recent = store.recent
        recent.append(totals)
        if len(recent) > self._span:
            recent.popleft()
        keep = self._keep_panes
        if keep:
            if pane is not None:
                pane.items = []  # the products were counted (mix): a late line adds none
                pane.refund_items = []
                store.kept[idx] = pane
            store.kept.pop(idx - keep, None)
        pane_ms = self.pane_ms
        end_ms = (idx + 1) * pane_ms
        for spec, (hop_panes, size_panes) in zip(self.specs, self._hops, strict=True):
            if (idx + 1) % hop_panes:
                continue
            first = idx + 1 - size_panes
            if first < store.first_idx:
                continue  # the store's first windows would be partial
            start_ms = first * pane_ms
            if start_ms > input_end:
                continue  # after the input's end: it says nothing
            window = _window(store_id, spec, start_ms, end_ms, recent, size_panes)
            if size_panes == 1 and mix is not None:
                window = msgspec.structs.replace(window, products=mix[0], refund_products=mix[1])
            if end_ms > input_end:
                window = msgspec.structs.replace(window, partial=True)
            results.append(window)

    def _revise(self, results: list[WindowResult]) -> None:
        """Emit again every closed window holding a pane that took late events (once each, in (end,
        store, spec) order), with its next revision number."""
        dirty = sorted(self.dirty, key=lambda sp: (sp[1], sp[0]))
        self.dirty = set()
        pane_ms = self.pane_ms
        due: set[tuple[int, str, int]] = set()  # (end pane, store, spec index)
        for store_id, idx in dirty:
            store = self.stores.get(store_id)
            if store is None:
                continue
            pane = store.kept.get(idx)
            pos = len(store.recent) - (store.closed - idx)
            if pane is not None and 0 <= pos < len(store.recent):
                store.recent[pos] = _totals(pane)  # the hopping windows still to close see it
            for i, (hop_panes, size_panes) in enumerate(self._hops):
                # windows [e - size, e) with idx inside, e a multiple of the hop, closed for the store
                e = (idx // hop_panes + 1) * hop_panes
                while e - size_panes <= idx:
                    if e <= store.closed and e - size_panes >= store.first_idx:
                        due.add((e, store_id, i))
                    e += hop_panes
        for e, store_id, i in sorted(due):
            store = self.stores[store_id]
            spec = self.specs[i]
            size_panes = self._hops[i][1]
            panes = [store.kept.get(j) for j in range(e - size_panes, e)]
            columns = list(zip(*(_EMPTY if p is None else _totals(p) for p in panes), strict=True))
            revision = store.revisions.get((i, e), 0) + 1
            store.revisions[i, e] = revision
            results.append(
                WindowResult(
                    store_id,
                    spec,
                    (e - size_panes) * pane_ms,
                    e * pane_ms,
                    sum(columns[0]),
                    sum(columns[1]),
                    sum(columns[2]),
                    sum(columns[3]),
                    sum(columns[4]),
                    sum(columns[5]),
                    sum(columns[6]),
                    sum(columns[7]),
                    revision=revision,
                )
            )
        for store_id in {s for s, _ in dirty}:
            store = self.stores.get(store_id)
            if store is not None and store.revisions:
                old = store.closed - self._keep_panes
                store.revisions = {k: v for k, v in store.revisions.items() if k[1] > old}


def _mix(pane: Pane | None) -> tuple[dict[str, int], dict[str, int]] | None:
    """Lines per product of a closed pane (sales, refunds); None for an empty one."""
    if pane is None or not (pane.items or pane.refund_items):
        return None
    return dict(Counter(pane.items)), dict(Counter(pane.refund_items))


def _window(
    store_id: str, spec: WindowSpec, start_ms: int, end_ms: int, recent: deque[PaneTotals], n: int
) -> WindowResult:
    if n == 1:
        return WindowResult(store_id, spec, start_ms, end_ms, *recent[-1])
    size = len(recent)
    panes = recent if n == size else [recent[i] for i in range(size - n, size)]
    columns = list(zip(*panes, strict=True))
    return WindowResult(
        store_id,
        spec,
        start_ms,
        end_ms,
        sum(columns[0]),
        sum(columns[1]),
        sum(columns[2]),
        sum(columns[3]),
        sum(columns[4]),
        sum(columns[5]),
        sum(columns[6]),
        sum(columns[7]),
    )
