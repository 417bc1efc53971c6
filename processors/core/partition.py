"""Cutting a shard's state along store lines and joining it again, for resharding.

A split gives each child the parent's state for the stores whose hash key it owns; a merge joins two
parents' states (their stores are disjoint). Shard-wide parts go whole to each side: the dedup memory
(its keys are hashes of (store, event id), so they do not say their store; a superset is harmless and
ages out within the horizon; a merge takes the union of both memories' runs, renamed so the two
parents' names never clash) and the window clock, where a
merge keeps the earlier of the two closing points so no store's open window is skipped, and each store
remembers where its own shard had closed, so no window is closed twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TypeVar

from processors.core.dedup import Dedup
from processors.core.effects import Effects
from processors.core.processor import CoreStats, ShardCore
from processors.core.restock_policy import ForecastPolicy

V = TypeVar("V")


def _copy(core: ShardCore) -> ShardCore:
    # The dedup memory is not copied through the format: the copy shares its immutable runs (up to
    # ~1 GB) under names of its own, and gets its own buckets and pre-check sets.
    dedup = core.state.dedup
    core.state.dedup = Dedup(1)
    try:
        copy = ShardCore.restore(core.snapshot())
    finally:
        core.state.dedup = dedup
    copy.state.dedup = dedup.renamed()
    copy.state.stats = CoreStats()  # a shard's own counts start at zero; the parent keeps its own
    copy.out = Effects()
    return copy


def split(core: ShardCore, owns: Callable[[str], bool]) -> ShardCore:
    """The part of `core` for the stores `owns` accepts (by store id, i.e. partition key)."""
    child = _copy(core)
    state = child.state
    inv = state.inventory
    inv.stock = {k: v for k, v in inv.stock.items() if owns(k[0])}
    inv.catalog = {k: v for k, v in inv.catalog.items() if owns(k[0])}
    inv.open_requests = {k: v for k, v in inv.open_requests.items() if owns(k[0])}
    inv.out_of_stock = {k for k in inv.out_of_stock if owns(k[0])}
    inv.limits = {k: v for k, v in inv.limits.items() if owns(k[0])}
    state.last_seen = {s: ts for s, ts in state.last_seen.items() if owns(s)}
    inv.requested_at = {k: v for k, v in inv.requested_at.items() if owns(k[0])}
    if isinstance(state.policy, ForecastPolicy):
        points = state.policy.reorder_points
        state.policy.reorder_points = {k: v for k, v in points.items() if owns(k[0])}
    if state.forecast is not None:
        state.forecast.stores = {s: d for s, d in state.forecast.stores.items() if owns(s)}
        state.forecast.items = {s: d for s, d in state.forecast.items.items() if owns(s)}
    if state.windows is not None:
        state.windows.stores = {s: w for s, w in state.windows.stores.items() if owns(s)}
    if state.monitor is not None:
        state.monitor.detectors = {s: d for s, d in state.monitor.detectors.items() if owns(s)}
        state.monitor.open_until = {k: v for k, v in state.monitor.open_until.items() if owns(k[0])}
        book = state.monitor.feedback
        book.forget({s for s in (*book.raised, *book.rules, *book.hours) if not owns(s)})
        book.counts = {}  # like the stats: a shard's own counts start at zero
    return child


def merge(cores: Sequence[ShardCore]) -> ShardCore:
    """One core holding the (disjoint) stores of every core given."""
    if not cores:
        raise ValueError("nothing to merge")
    merged = _copy(cores[0])
    state = merged.state
    for other in cores[1:]:
        o = other.state
        inv, oinv = state.inventory, o.inventory
        inv.stock.update(oinv.stock)
        inv.catalog.update(oinv.catalog)
        inv.open_requests.update(oinv.open_requests)
        inv.out_of_stock |= oinv.out_of_stock
        inv.limits.update(oinv.limits)
        inv.requested_at.update(oinv.requested_at)
        if isinstance(state.policy, ForecastPolicy) and isinstance(o.policy, ForecastPolicy):
            state.policy.reorder_points.update(o.policy.reorder_points)
        if state.forecast is not None and o.forecast is not None:
            state.forecast.stores.update(o.forecast.stores)
            state.forecast.items.update(o.forecast.items)
        state.dedup.merge(o.dedup)
        state.last_seen.update(o.last_seen)
        state.next_sweep_ms = min(state.next_sweep_ms, o.next_sweep_ms)
        if state.windows is not None and o.windows is not None:
            w, ow = state.windows, o.windows
            # Each store carries where it has closed (`StoreWindows.closed`): none is closed twice, and
            # its closed panes within the late bound still take late sales after the merge.
            w.stores.update(ow.stores)
            if ow.started:
                if w.started:
                    w.closed_idx = min(w.closed_idx, ow.closed_idx)
                    w.next_close_ms = min(w.next_close_ms, ow.next_close_ms)
                    w.newest_ms = max(w.newest_ms, ow.newest_ms)
                else:
                    w.started, w.closed_idx = True, ow.closed_idx
                    w.next_close_ms, w.newest_ms = ow.next_close_ms, ow.newest_ms
        if state.monitor is not None and o.monitor is not None:
            m, om = state.monitor, o.monitor
            # The other core's stores keep their zones (and earlier zones) and product mixes: the
            # core that judged a store knows them best
            theirs = om.detectors.keys() - m.detectors.keys()  # before the detectors are merged
            _take(m.zones, om.zones, theirs, m.detectors.keys())
            _take(m.zone_history, om.zone_history, theirs, m.detectors.keys())
            _take(m.mix, om.mix, theirs, m.detectors.keys())
            _take(m.mix_total, om.mix_total, theirs, m.detectors.keys())
            _take(m.recent_mix, om.recent_mix, theirs, m.detectors.keys())
            # ... and the operators' marks of them, with the alerts the marks name
            fb, ofb = m.feedback, om.feedback
            _take(fb.raised, ofb.raised, theirs, m.detectors.keys())
            _take(fb.rules, ofb.rules, theirs, m.detectors.keys())
            _take(fb.hours, ofb.hours, theirs, m.detectors.keys())
            for outcome, n in ofb.counts.items():
                fb.counts[outcome] = fb.counts.get(outcome, 0) + n
            _take(m.slot_counts, om.slot_counts, theirs, m.detectors.keys())
            _take(m.judged, om.judged, theirs, m.detectors.keys())
            m.detectors.update(om.detectors)
            m.open_until.update(om.open_until)
    return merged


def _take(
    mine: dict[str, V], theirs: Mapping[str, V], owned: AbstractSet[str], judged: AbstractSet[str]
) -> None:
    """Another core's entries for the stores only it judged (a split copies every store's entries to
    both children; the one that judged a store since knows it best, even where it removed one), and
    for the stores neither judged yet that only it knows (a store that has announced its zone and
    sold nothing)."""
    for store in owned:
        if store in theirs:
            mine[store] = theirs[store]
        else:
            mine.pop(store, None)
    for store, value in theirs.items():
        if store not in mine and store not in judged:
            mine[store] = value
