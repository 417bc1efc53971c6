"""The processor core for one shard: decode -> validate -> dedup -> stock -> effects.

One core per shard, because a store's events all live in one shard (partition key = store): the
state of a shard can then be checkpointed, moved to another worker, or split along hash-key ranges
on resharding, without touching any other shard's state.
"""

from __future__ import annotations

import pickle
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from processors.core.dedup import Dedup
from processors.core.effects import Effects, RejectedRecord
from processors.core.inventory import Inventory
from shelfstream.contract import Count, Product, Refund, Rejection, Restock, Sale, decode_event

SNAPSHOT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class CoreConfig:
    default_restock_threshold: int = 5
    default_target_stock: int = 40
    dedup_horizon_ms: int = 7 * 24 * 3600 * 1000
    archive: bool = True


@dataclass(slots=True)
class CoreStats:
    events_read: int = 0
    events_valid: int = 0
    events_rejected: int = 0
    duplicates_ignored: int = 0
    late_events: int = 0
    alerts: Counter[str] = field(default_factory=Counter)

    def add(self, other: CoreStats) -> None:
        self.events_read += other.events_read
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


class ShardCore:
    def __init__(self, config: CoreConfig | None = None) -> None:
        self.config = config or CoreConfig()
        self.state = CoreState(
            inventory=Inventory(self.config.default_restock_threshold, self.config.default_target_stock),
            dedup=Dedup(self.config.dedup_horizon_ms),
            stats=CoreStats(),
        )
        self.out = Effects()

    # --- the hot path ---------------------------------------------------------------------------

    def apply(self, raw: bytes, ref: str = "") -> bool:
        """Apply one record; returns True when it was a new, valid event. Never raises for bad input."""
        state = self.state
        stats = state.stats
        stats.events_read += 1
        ev = decode_event(raw)
        if isinstance(ev, Rejection):
            stats.events_rejected += 1
            self.out.rejected.append(RejectedRecord(ref, ev.reason, raw))
            return False
        stats.events_valid += 1
        if not state.dedup.first_time(ev.event_id, ev.ts_ms):
            stats.duplicates_ignored += 1
            return False
        out = self.out
        inv = state.inventory
        alerts_before = len(out.alerts)
        requests_before = len(out.requests)
        if isinstance(ev, Sale):
            inv.sale(ev, out)
        elif isinstance(ev, Refund):
            inv.refund(ev, out)
        elif isinstance(ev, Restock):
            inv.restock(ev, out)
        elif isinstance(ev, Count):
            inv.count(ev, out)
        elif isinstance(ev, Product):
            inv.product(ev, out)
        if self.config.archive:
            out.archive.append(raw)
        if len(out.requests) != requests_before:
            stats.alerts["restock_request"] += len(out.requests) - requests_before
        if len(out.alerts) != alerts_before:
            for alert in out.alerts[alerts_before:]:
                stats.alerts[alert.__struct_config__.tag] += 1  # type: ignore[index]
        return True

    def finish(self) -> None:
        """End of input (a backtest's last line): nothing is pending in the stock core itself."""

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
        if version != SNAPSHOT_VERSION:
            raise ValueError(f"checkpoint format {version} is not {SNAPSHOT_VERSION}")
        core = cls(config)
        core.state = state
        return core
