"""The embedded stream processor: one worker per shard, all in one process (the local mode).

At scale the same cores run inside KCL record processors instead, one per leased shard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from config import Settings
from processors.checkpoints import S3Checkpoints
from processors.core import CoreConfig, CoreStats, Effects, ShardCore
from processors.shard_worker import ShardWorker
from processors.sinks import Sinks
from shelfstream.contract import Alert, RestockRequest, alert_kind

log = logging.getLogger(__name__)


def core_config(settings: Settings, archive: bool = True) -> CoreConfig:
    return CoreConfig(
        archive=archive,
        default_restock_threshold=settings.default_restock_threshold,
        default_target_stock=settings.default_target_stock,
        dedup_horizon_ms=settings.dedup_horizon_s * 1000,
    )


class StreamProcessor:
    def __init__(
        self,
        settings: Settings,
        clients: Any,
        resources: Any,
        on_effects: Callable[[str, Effects], None] | None = None,
    ) -> None:
        self._settings = settings
        self._kinesis = clients["kinesis"]
        self._sinks = Sinks(clients, settings, resources)
        self._checkpoints = S3Checkpoints(clients["s3"], resources.bucket, settings)
        self._on_effects = on_effects
        self.workers: dict[str, ShardWorker] = {}
        self.recent: deque[Alert | RestockRequest] = deque(maxlen=50)
        self.recent_windows: deque[bytes] = deque(maxlen=50)
        self.alert_counts: Counter[str] = Counter()
        self.started = asyncio.Event()

    @property
    def sinks(self) -> Sinks:
        return self._sinks

    async def _shards(self) -> list[str]:
        shards: list[str] = []
        args: dict[str, Any] = {"StreamName": self._settings.stream_name}
        while True:
            resp = await self._kinesis.list_shards(**args)
            shards.extend(s["ShardId"] for s in resp["Shards"])
            token = resp.get("NextToken")
            if not token:
                return shards
            args = {"NextToken": token}

    def _observe(self, shard_id: str, effects: Effects) -> None:
        for req in effects.requests:
            self.recent.append(req)
            self.alert_counts["restock_request"] += 1
        for alert in effects.alerts:
            self.recent.append(alert)
            self.alert_counts[alert_kind(alert)] += 1
        self.recent_windows.extend(effects.windows)
        if self._on_effects is not None:
            self._on_effects(shard_id, effects)

    async def run(self, stop: asyncio.Event) -> None:
        config = core_config(self._settings)
        for shard_id in await self._shards():
            checkpoint = await self._checkpoints.load(shard_id)
            if checkpoint is not None and checkpoint.shard_ended:
                continue
            core = checkpoint.core if checkpoint is not None else ShardCore(config)
            start_after = checkpoint.sequence_number if checkpoint is not None else None
            self.workers[shard_id] = ShardWorker(
                shard_id,
                self._kinesis,
                core,
                self._sinks,
                self._checkpoints,
                self._settings,
                start_after,
                self._observe,
            )
            log.info("shard assigned", extra={"shard_id": shard_id, "resume_after": start_after})
        self.started.set()
        tasks = [asyncio.create_task(w.run(stop), name=f"shard-{sid}") for sid, w in self.workers.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def wait_caught_up(self, since: float | None = None, timeout: float = 60.0) -> bool:
        """Wait until every shard has had an empty poll that began after `since` (monotonic)."""
        mark = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        await self.started.wait()
        while time.monotonic() < deadline:
            if all(w.status.caught_up_at >= mark or w.status.ended for w in self.workers.values()):
                return True
            await asyncio.sleep(0.05)
        return False

    def stats(self) -> CoreStats:
        total = CoreStats()
        for worker in self.workers.values():
            total.add(worker.core.stats)
        return total

    def inventory(self) -> dict[str, dict[str, int]]:
        merged: dict[str, dict[str, int]] = {}
        for worker in self.workers.values():
            for store, products in worker.core.inventory().items():
                merged.setdefault(store, {}).update(products)
        return dict(sorted(merged.items()))

    def open_requests(self) -> int:
        return sum(len(w.core.open_requests()) for w in self.workers.values())

    def stock_outs(self) -> int:
        return sum(len(w.core.state.inventory.out_of_stock) for w in self.workers.values())

    def records_read(self) -> int:
        return sum(w.status.records for w in self.workers.values())
