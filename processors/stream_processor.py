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

from config import Settings, core_config
from foundation.aws.lineage import ShardInfo, list_shards, ready
from foundation.contract import Alert, RestockRequest, alert_kind
from processors.checkpoints import (
    Checkpoint,
    MergedInventory,
    S3Checkpoints,
    SaveReport,
    merge_inventories,
    return_large_buffers_to_the_system,
)
from processors.core import CoreStats, Effects, ShardCore
from processors.fleet_shapes import FleetExchange, S3FleetShapes
from processors.shard_clocks import follow
from processors.shard_lifecycle import ShardLifecycle
from processors.shard_worker import ShardWorker
from processors.shard_worker import log as shard_log
from processors.sinks import Sinks
from processors.stream_silence import StreamSilence

log = logging.getLogger(__name__)


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
        self.silence = StreamSilence(
            settings.processor.stream_quiet_after_s, settings.processor.stream_quiet_min_sales, log
        )

    @property
    def sinks(self) -> Sinks:
        return self._sinks

    async def _shards(self) -> list[ShardInfo]:
        return await list_shards(self._kinesis, self._settings.aws.stream_name)

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
                    worker = await self._worker_for(info, checkpoints)
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
            await asyncio.gather(*tasks.values())
        finally:
            stopping.cancel()
            watching.cancel()
            for task in tasks.values():
                task.cancel()

    async def _worker_for(self, info: ShardInfo, checkpoints: dict[str, Checkpoint | None]) -> ShardWorker:
        """A reader for a shard whose parents have ended, its state restored by its lifecycle."""
        ports = _ProcessPorts(
            info,
            checkpoints,
            self._checkpoints,
            self._sinks,
            FleetExchange(self._fleet_shapes, self._settings.processor.fleet_shape_every_s),
            self._observe,
        )
        lifecycle = ShardLifecycle(
            info.shard_id,
            self._settings,
            core_config(self._settings),
            ports,
            shard_log,  # the reader's logger: its lines say which shell moved
            clocks=_ProcessClocks(self),
            owns=functools.lru_cache(maxsize=4096)(info.owns),
        )
        await lifecycle.assign(self.seed_core)
        return ShardWorker(self._kinesis, lifecycle, self._settings)

    async def _watch_silence(self, stop: asyncio.Event) -> None:
        """Every few seconds: is the whole stream quiet while its stores would trade?"""
        if not self.silence.enabled:
            return
        every = min(5.0, max(0.05, self._settings.processor.stream_quiet_after_s / 4))
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
        """The event time an idle shard follows (`follow`) of the other shards' (`other_clocks`)."""
        return follow(self.other_clocks(shard_id))

    def other_clocks(self, shard_id: str) -> list[tuple[int, bool]]:
        """The other open shards' own event time (not a time they moved to with the others), each
        with whether it read records within `idle_shard_patience_s` (still trading); an ended
        parent's time has stopped for good, as the KCL's shard clocks forget it."""
        now = time.monotonic()
        patience = self._settings.processor.idle_shard_patience_s
        return [
            (t, now - w.status.last_read_at < patience)
            for sid, w in self.workers.items()
            if sid != shard_id and not w.status.ended and (t := w.own_event_ms()) is not None
        ]

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
            for outcome, n in worker.core.feedback_outcomes().items():
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
        return sum(w.core.stock_outs() for w in self.live_workers())

    def records_read(self) -> int:
        return sum(w.status.records for w in self.workers.values())


class _ProcessPorts:
    """Where an embedded shard's state and effects go: the checkpoints this process loaded while
    listing the shards (read once, to know which had ended), S3 for saves, the sinks (then the
    processor's own view of what was sent), and the fleet's shape of a day."""

    def __init__(
        self,
        info: ShardInfo,
        loaded: dict[str, Checkpoint | None],
        checkpoints: S3Checkpoints,
        sinks: Sinks,
        fleet: FleetExchange,
        observe: Callable[[str, Effects], None],
    ) -> None:
        self._info = info
        self._loaded = loaded
        self._checkpoints = checkpoints
        self._sinks = sinks
        self._fleet = fleet
        self._observe = observe

    async def load(self, shard_id: str) -> Checkpoint | None:
        return self._loaded.get(shard_id)

    async def lineage(self, shard_id: str) -> ShardInfo | None:
        return self._info if shard_id == self._info.shard_id else None

    async def save(
        self, shard_id: str, sequence_number: str | None, core: ShardCore, ended: bool
    ) -> SaveReport:
        return await self._checkpoints.save(shard_id, sequence_number, core, ended)

    async def send(self, shard_id: str, effects: Effects) -> None:
        await self._sinks.send(shard_id, effects)
        self._observe(shard_id, effects)

    async def exchange_fleet(self, shard_id: str, core: ShardCore) -> None:
        await self._fleet.exchange(shard_id, core)


class _ProcessClocks:
    """The other shards' event time when they are all read in this process: each lifecycle's own
    time, read where it is kept, so there is nothing to publish and nothing to forget (an ended
    shard is left out of `other_clocks`)."""

    def __init__(self, processor: StreamProcessor) -> None:
        self._processor = processor

    async def publish(self, shard_id: str, event_ms: int) -> None:
        return None

    async def others(self, shard_id: str) -> list[tuple[int, bool]]:
        return self._processor.other_clocks(shard_id)

    async def forget(self, shard_id: str) -> None:
        return None


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when asked to stop."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
