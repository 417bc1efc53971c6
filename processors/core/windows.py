"""Event-time windows per store: tumbling and hopping windows of sales and refunds, with a watermark.

Every window is a sum of *panes*: fixed slices of event time whose length divides every window's size
and hop (15 minutes for the defaults: 15-minute tumbling windows, 1-hour windows every 15 minutes).
An event only touches its pane (two dict lookups and a few additions); all the work of building
windows happens when a pane closes, once per store per pane.

The watermark is per shard (per core): the newest event time seen minus the allowed lateness. A
pane closes when the watermark passes its end, for every store of the shard at once. It is not per
store on purpose: a store whose tills stop sending (the very outage we must detect) would otherwise
freeze its own watermark, and its empty windows would only close when it sends again. An event whose
pane has already closed is late: it is counted (and still archived and applied to stock by the
caller), never added to a window that was already emitted.

Closed windows are emitted even when empty (a store closed at night), so that a consumer (and the
detector's seasonal slots) sees one window per slot, every slot. A jump of the watermark longer than
`max_gap_ms` (a clock far off, a long outage) is not filled with empty windows: open panes are
flushed and the span is skipped.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final

import msgspec

MINUTE_MS: Final = 60_000
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
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
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

    def __getstate__(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in Pane.__slots__)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        names = Pane.__slots__ if len(state) == len(Pane.__slots__) else _PANE_V2_SLOTS
        self.items = []
        self.refund_items = []
        for name, value in zip(names, state, strict=True):
            setattr(self, name, value)


# A pane as checkpointed before it kept its products (snapshot format 2)
_PANE_V2_SLOTS: Final = tuple(n for n in Pane.__slots__ if n not in ("items", "refund_items"))


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
    """The open panes of one store and the recently closed ones that hopping windows still need."""

    first_idx: int
    panes: dict[int, Pane] = field(default_factory=dict)
    recent: deque[PaneTotals] = field(default_factory=deque)
    # Panes below this were already closed by the store's previous shard (a merge of two shards whose
    # clocks differ): they are not closed again.
    resume_idx: int = 0


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
    """Per-store event-time windows of one shard, closed by the shard's watermark."""

    __slots__ = (
        "_hops",
        "_max_gap_panes",
        "_span",
        "ahead_run",
        "closed_idx",
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
        self, specs: tuple[WindowSpec, ...], lateness_ms: int, max_gap_ms: int, max_ahead_ms: int = _NO_AHEAD
    ) -> None:
        if not specs:
            raise ValueError("at least one window spec is needed")
        if lateness_ms < 0:
            raise ValueError("allowed lateness cannot be negative")
        self.specs = specs
        self.lateness_ms = lateness_ms
        pane = 0
        for spec in specs:
            pane = math.gcd(pane, spec.size_ms, spec.hop_ms)
        self.pane_ms = pane
        # Per spec: (panes per hop, panes per window)
        self._hops = tuple((s.hop_ms // pane, s.size_ms // pane) for s in specs)
        self._span = max(n for _, n in self._hops)
        self._max_gap_panes = max(max_gap_ms // pane, self._span)
        self.stores: dict[str, StoreWindows] = {}
        self.started = False
        self.newest_ms = _NEVER  # the newest event time seen in the shard
        self.closed_idx = _NEVER  # panes below this index are closed (for every store)
        self.next_close_ms = _NEVER  # once newest_ms reaches this, call due(): a pane closes
        # An event more than max_ahead_ms ahead of newest_ms moves the clock only with a quorum (ahead())
        self.max_ahead_ms = _NO_AHEAD
        self.guard(max_ahead_ms)
        self.ahead_run = AheadRun()

    def guard(self, max_ahead_ms: int) -> None:
        """Guard the clock against events more than this far ahead (0 or less: no guard)."""
        self.max_ahead_ms = max_ahead_ms if max_ahead_ms > 0 else _NO_AHEAD

    def __setstate__(self, state: tuple[object, ...]) -> None:
        _, slots = state
        assert isinstance(slots, dict)
        # A checkpoint from before the clock was guarded: no guard until the core sets it (_upgraded)
        defaults = {"max_ahead_ms": _NO_AHEAD, "ahead_run": AheadRun()}
        for name, value in {**defaults, **slots}.items():
            object.__setattr__(self, name, value)

    @property
    def watermark_ms(self) -> int | None:
        return self.newest_ms - self.lateness_ms if self.started else None

    # --- per event (the hot path) ----------------------------------------------------------------

    def new_pane(self, store_id: str, idx: int) -> Pane:
        store = self.stores.get(store_id)
        if store is None:
            store = self.stores[store_id] = StoreWindows(first_idx=idx)
        elif idx < store.first_idx:
            store.first_idx = idx
        pane = store.panes[idx] = Pane()
        return pane

    def _pane_at(self, store_id: str, ts_ms: int) -> Pane | None:
        """The store's pane for an event time; None when it is late (its window has closed)."""
        idx = ts_ms // self.pane_ms
        if idx < self.closed_idx:
            return None
        store = self.stores.get(store_id)
        pane = store.panes.get(idx) if store is not None else None
        return pane if pane is not None else self.new_pane(store_id, idx)

    def sale(
        self,
        store_id: str,
        ts_ms: int,
        quantity: int,
        unit_price: float,
        tid: str | None,
        product_id: str = "",
    ) -> bool:
        """Add a sale line; False when it is late. (ShardCore.apply inlines this: the hottest path.)"""
        pane = self._pane_at(store_id, ts_ms)
        if pane is None:
            return False
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
        """Add a refund line; False when it is late (its window has closed)."""
        pane = self._pane_at(store_id, ts_ms)
        if pane is None:
            return False
        pane.refund_lines += 1
        pane.refund_units += quantity
        pane.refund_amount += quantity * unit_price
        pane.refund_items.append(product_id)
        if tid is None:
            pane.refunds_anon += 1
        else:
            pane.refund_ids.add(tid)
        return True

    # --- when the watermark moves -----------------------------------------------------------------
    #
    # The caller keeps `newest_ms` up to date on the hot path (one comparison per event) and calls
    # `due()` only once `newest_ms` reaches `next_close_ms`.

    def due(self) -> list[WindowResult]:
        """Close the panes the watermark has passed; returns the windows that closed."""
        if not self.started:
            # The shard's first event: windows begin at the pane its watermark is in (or earlier, at
            # the first pane that already holds data).
            self.started = True
            first = min((s.first_idx for s in self.stores.values()), default=None)
            self.closed_idx = (self.newest_ms - self.lateness_ms) // self.pane_ms
            if first is not None and first < self.closed_idx:
                self.closed_idx = first
        return self._close_until((self.newest_ms - self.lateness_ms) // self.pane_ms)

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
        return None if last < self.closed_idx else last * self.pane_ms

    def flush(self, last_ms: int | None = None) -> list[WindowResult]:
        """End of input: close every window that holds data, as if the watermark passed them all.

        `last_ms` moves the end out to another engine's last data (a backtest split over workers
        ends every worker where one worker over the whole file would)."""
        last = self._last_pane(self._horizon())
        if last_ms is not None:
            last = max(last, last_ms // self.pane_ms)
        if not self.started or last < self.closed_idx:
            return []
        # Past the last pane with data, far enough for every hopping window over it to end.
        return self._close_until(last + self._span)

    def _horizon(self) -> int:
        """Panes from here on hold only events far ahead of the clock (a till with a wrong clock):
        the end of input does not close them, or it would fill the time up to them with empty windows."""
        if self.max_ahead_ms >= _NO_AHEAD or self.newest_ms == _NEVER:
            return _NO_LIMIT
        return (self.newest_ms + self.max_ahead_ms) // self.pane_ms + 1

    def _last_pane(self, below: int) -> int:
        """The last pane holding data before `below` (closed_idx - 1 if none)."""
        last = self.closed_idx - 1
        for store in self.stores.values():
            for idx in store.panes:
                if last < idx < below:
                    last = idx
        return last

    def _close_until(self, target: int) -> list[WindowResult]:
        results: list[WindowResult] = []
        if target - self.closed_idx > self._max_gap_panes:
            flush_to = min(target, self._last_pane(target) + self._span)
            self._close_range(self.closed_idx, flush_to, results)
            for store in self.stores.values():
                store.recent.clear()
                store.first_idx = target
            self.closed_idx = target
        else:
            self._close_range(self.closed_idx, target, results)
        self.next_close_ms = (self.closed_idx + 1) * self.pane_ms + self.lateness_ms
        return results

    def _close_range(self, begin: int, end: int, results: list[WindowResult]) -> None:
        pane_ms = self.pane_ms
        span = self._span
        for idx in range(begin, end):
            for store_id, store in self.stores.items():
                if idx < store.first_idx or idx < store.resume_idx:
                    continue
                pane = store.panes.pop(idx, None)
                totals = _EMPTY if pane is None else _totals(pane)
                mix = _mix(pane)
                recent = store.recent
                recent.append(totals)
                if len(recent) > span:
                    recent.popleft()
                for spec, (hop_panes, size_panes) in zip(self.specs, self._hops, strict=True):
                    if (idx + 1) % hop_panes:
                        continue
                    first = idx + 1 - size_panes
                    if first < store.first_idx:
                        continue  # the store's first windows would be partial
                    window = _window(store_id, spec, first * pane_ms, (idx + 1) * pane_ms, recent, size_panes)
                    if size_panes == 1 and mix is not None:
                        window = msgspec.structs.replace(window, products=mix[0], refund_products=mix[1])
                    results.append(window)
            self.closed_idx = idx + 1


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
