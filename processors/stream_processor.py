"""The embedded stream processor: one worker per shard, all in one process (the local mode).

At scale the same cores run inside KCL record processors instead, one per leased shard.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from config import Settings
from foundation.aws.lineage import ShardInfo, ready
from foundation.contract import Alert, RestockRequest, alert_kind
from processors.checkpoints import (
    Checkpoint,
    MergedInventory,
    S3Checkpoints,
    merge_inventories,
    return_large_buffers_to_the_system,
)
from processors.core import CoreConfig, CoreStats, Effects, ShardCore
from processors.core.demand import RestockConfig
from processors.core.detectors import DetectorConfig
from processors.core.partition import merge, split
from processors.fleet_shapes import FleetExchange, S3FleetShapes
from processors.shard_clocks import follow
from processors.shard_worker import ShardWorker
from processors.sinks import Sinks
from processors.stream_silence import StreamSilence

log = logging.getLogger(__name__)


def core_config(settings: Settings, archive: bool = True) -> CoreConfig:
    return CoreConfig(
        archive=archive,
        default_restock_threshold=settings.default_restock_threshold,
        default_target_stock=settings.default_target_stock,
        dedup_horizon_ms=settings.dedup_horizon_s * 1000,
        dedup_bucket_ms=settings.dedup_bucket_s * 1000,
        dedup_max_ahead_ms=settings.dedup_max_ahead_s * 1000,
        store_retention_ms=settings.store_retention_s * 1000,
        window_ms=settings.window_s * 1000,
        hopping_window_ms=settings.hopping_window_s * 1000,
        hopping_hop_ms=settings.hopping_hop_s * 1000,
        allowed_lateness_ms=settings.allowed_lateness_s * 1000,
        store_idle_ms=settings.store_idle_s * 1000,
        late_bound_ms=settings.late_bound_s * 1000,
        restock=restock_config(settings),
        detection=DetectorConfig(kind=settings.detector),
    )


def restock_config(settings: Settings) -> RestockConfig:
    return RestockConfig(
        policy=settings.restock_policy,
        service_level=settings.service_level,
        lead_time_prior_ms=int(settings.lead_time_prior_s * 1000),
        cycle_ms=int(settings.restock_cycle_s * 1000),
        min_history_ms=int(settings.forecast_min_history_s * 1000),
    )


class StreamProcessor:
    RELIST_S = 30.0  # look for new shards at least this often, besides when a shard ends

    def __init__(
        self,
        settings: Settings,
        clients: Any,
        resources: Any,
        on_effects: Callable[[str, Effects], None] | None = None,
    ) -> None:
        return_large_buffers_to_the_system()
        self._settings = settings
        self._kinesis = clients["kinesis"]
        self._sinks = Sinks(clients, settings, resources)
        self._checkpoints = S3Checkpoints(clients["s3"], resources.bucket, settings)
        self._fleet_shapes = S3FleetShapes(clients["s3"], resources.bucket, settings)
        self._on_effects = on_effects
        self.workers: dict[str, ShardWorker] = {}
        self.shard_info: dict[str, ShardInfo] = {}
        self.recent: deque[Alert | RestockRequest] = deque(maxlen=50)
        self.recent_windows: deque[bytes] = deque(maxlen=50)
        self.recent_anomalies: deque[Alert] = deque(maxlen=50)
        self.alert_counts: Counter[str] = Counter()
        self.started = asyncio.Event()
        # State learned before the stream began (a demo's history, loaded without the stream): a
        # shard with no checkpoint and no parents starts from its stores' part of it.
        self.seed_core: ShardCore | None = None
        self.silence = StreamSilence(settings.stream_quiet_after_s, settings.stream_quiet_min_sales, log)

    @property
    def sinks(self) -> Sinks:
        return self._sinks

    async def _shards(self) -> list[ShardInfo]:
        shards: list[ShardInfo] = []
        args: dict[str, Any] = {"StreamName": self._settings.stream_name}
        while True:
            resp = await self._kinesis.list_shards(**args)
            shards.extend(ShardInfo.from_api(s) for s in resp["Shards"])
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
            kind = alert_kind(alert)
            self.alert_counts[kind] += 1
            if kind == "anomaly":
                self.recent_anomalies.append(alert)
        self.recent_windows.extend(effects.windows)
        if self._on_effects is not None:
            self._on_effects(shard_id, effects)

    async def run(self, stop: asyncio.Event) -> None:
        """Read every shard; when one closes (resharding), start its children from its state."""
        tasks: dict[str, asyncio.Task[None]] = {}
        ended: set[str] = set()
        checkpoints: dict[str, Checkpoint | None] = {}
        stopping = asyncio.create_task(stop.wait())
        watching = asyncio.create_task(self._watch_silence(stop), name="stream-silence")
        try:
            while not stop.is_set():
                shards = await self._shards()
                for info in shards:
                    self.shard_info[info.shard_id] = info
                    if info.shard_id not in checkpoints:
                        checkpoints[info.shard_id] = await self._checkpoints.load(info.shard_id)
                    checkpoint = checkpoints[info.shard_id]
                    if checkpoint is not None and checkpoint.shard_ended:
                        ended.add(info.shard_id)
                for info in ready(shards, ended, set(tasks)):
                    worker = self._worker_for(info, checkpoints, {s.shard_id: s for s in shards})
                    self.workers[info.shard_id] = worker
                    tasks[info.shard_id] = asyncio.create_task(
                        worker.run(stop), name=f"shard-{info.shard_id}"
                    )
                self.started.set()
                done, _ = await asyncio.wait(
                    [stopping, *tasks.values()], timeout=self.RELIST_S, return_when=asyncio.FIRST_COMPLETED
                )
                for shard_id, task in list(tasks.items()):
                    if task in done:
                        task.result()  # a worker's failure is the processor's failure
                        del tasks[shard_id]
                        if self.workers[shard_id].status.ended:
                            ended.add(shard_id)
                            checkpoints[shard_id] = await self._checkpoints.load(shard_id)
                            log.info("shard ended", extra={"shard_id": shard_id})
            await asyncio.gather(*tasks.values())
        finally:
            stopping.cancel()
            watching.cancel()
            for task in tasks.values():
                task.cancel()

    def _worker_for(
        self, info: ShardInfo, checkpoints: dict[str, Checkpoint | None], shards: dict[str, ShardInfo]
    ) -> ShardWorker:
        checkpoint = checkpoints.get(info.shard_id)
        if checkpoint is not None:
            core, start_after = checkpoint.core, checkpoint.sequence_number
        else:
            # A child of a split or merge: its stores' state comes from its parents, cut along its range.
            inherited = [
                split(parent.core, info.owns)
                for parent in (checkpoints.get(p) for p in info.parents)
                if parent is not None
            ]
            if inherited:
                core = merge(inherited)
            elif self.seed_core is not None:
                core = split(self.seed_core, info.owns)
            else:
                core = ShardCore(core_config(self._settings))
            start_after = None
        log.info(
            "shard assigned",
            extra={"shard_id": info.shard_id, "resume_after": start_after, "parents": list(info.parents)},
        )
        return ShardWorker(
            info.shard_id,
            self._kinesis,
            core,
            self._sinks,
            self._checkpoints,
            self._settings,
            start_after,
            self._observe,
            functools.lru_cache(maxsize=4096)(info.owns),
            functools.partial(self.others_event_ms, info.shard_id),
            FleetExchange(self._fleet_shapes, self._settings.fleet_shape_every_s),
        )

    async def _watch_silence(self, stop: asyncio.Event) -> None:
        """Every few seconds: is the whole stream quiet while its stores would trade?"""
        if not self.silence.enabled:
            return
        every = min(5.0, max(0.05, self._settings.stream_quiet_after_s / 4))
        while not stop.is_set():
            await _pause(stop, every)
            self.check_silence()

    def check_silence(self) -> bool:
        """One reading of `StreamSilence` over the open shards; True while the feed is out."""
        live = self.live_workers()
        cores = [w.core for w in live]
        return self.silence.check(
            time.monotonic(),
            [w.status.last_read_at for w in live],
            self.newest_event_ms(),
            lambda a, b: sum(core.expected_sales(a, b) for core in cores),
        ).quiet

    def newest_event_ms(self) -> int | None:
        """The newest event time any shard read here has reached."""
        times = [t for w in self.workers.values() if (t := w.newest_event_ms()) is not None]
        return max(times) if times else None

    def others_event_ms(self, shard_id: str) -> int | None:
        """The event time an idle shard follows (`follow`): the other open shards' own (not a time
        they moved to with the others), those that read records within `idle_shard_patience_s`
        counting as still trading (an ended parent's time has stopped for good, as the KCL's shard
        clocks forget it)."""
        now = time.monotonic()
        patience = self._settings.idle_shard_patience_s
        return follow(
            [
                (t, now - w.status.last_read_at < patience)
                for sid, w in self.workers.items()
                if sid != shard_id and not w.status.ended and (t := w.own_event_ms()) is not None
            ]
        )

    async def wait_caught_up(self, since: float | None = None, timeout: float = 60.0) -> bool:
        """Wait until every shard has had an empty poll that began after `since` (monotonic)."""
        mark = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        await self.started.wait()
        while time.monotonic() < deadline:
            if self.workers and all(
                w.status.caught_up_at >= mark or w.status.ended for w in self.workers.values()
            ):
                return True
            await asyncio.sleep(0.05)
        return False

    def stats(self) -> CoreStats:
        total = CoreStats()
        for worker in self.workers.values():
            total.add(worker.core.stats)
        return total

    def feedback(self) -> dict[str, int]:
        """Operators' feedback events by what became of them (applied, unknown_alert, no_detector),
        over every shard: an unknown alert id changes nothing, so this is where it shows."""
        total: dict[str, int] = {}
        for worker in self.workers.values():
            monitor = worker.core.state.monitor
            for outcome, n in (monitor.feedback.counts if monitor is not None else {}).items():
                total[outcome] = total.get(outcome, 0) + n
        return total

    def live_workers(self) -> list[ShardWorker]:
        """Workers of shards still open: a closed shard's stores live on in its children."""
        return [w for w in self.workers.values() if not w.status.ended]

    def inventory(self) -> dict[str, dict[str, int]]:
        return self.merged_inventory().stock

    def merged_inventory(self) -> MergedInventory:
        """Every live shard's stock; a store two shards hold is reported, not merged silently."""
        views = [(w.shard_id, w.core.inventory()) for w in self.live_workers()]
        merged = merge_inventories(views, list(self.shard_info.values()))
        for warning in merged.warnings():
            log.warning(warning)
        return merged

    def open_requests(self) -> int:
        return sum(len(w.core.open_requests()) for w in self.live_workers())

    def stock_outs(self) -> int:
        return sum(len(w.core.state.inventory.out_of_stock) for w in self.live_workers())

    def records_read(self) -> int:
        return sum(w.status.records for w in self.workers.values())


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
