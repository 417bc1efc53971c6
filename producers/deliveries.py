"""The simulated stores' view of their trucks when they run as their own process (`shelfstream simulate`):
the trucks' restock events read back from the stream, put onto the simulated shelves.

In the demo the dispatcher hands each delivery to the simulator directly; a separate `simulate` process
only sees the stream. New records from the shards open when it starts (no resharding followed); each
restock event counted once (by event id), like the processor does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from foundation.contract import Restock, decode_event
from producers.simulator import StoreSimulator

log = logging.getLogger(__name__)


async def watch_deliveries(
    kinesis: Any, stream: str, simulator: StoreSimulator, stop: asyncio.Event, poll_s: float = 0.5
) -> int:
    """Until ``stop``: every truck delivery (a restock event with a ``delivery_id``) for one of the
    simulator's stores goes onto its shelf. Returns the number of deliveries taken."""
    shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
    iterators: dict[str, str | None] = {}
    for shard in shards:
        resp = await kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
        )
        iterators[shard["ShardId"]] = resp["ShardIterator"]
    stores = set(simulator.store_ids)
    seen: set[tuple[str, str]] = set()
    taken = 0
    while not stop.is_set():
        for shard_id, iterator in list(iterators.items()):
            if iterator is None:
                continue
            resp = await kinesis.get_records(ShardIterator=iterator, Limit=1000)
            iterators[shard_id] = resp.get("NextShardIterator")
            for record in resp.get("Records", []):
                event = decode_event(record["Data"])
                if (
                    isinstance(event, Restock)
                    and event.delivery_id is not None
                    and event.store_id in stores
                    and (event.store_id, event.event_id) not in seen
                ):
                    seen.add((event.store_id, event.event_id))
                    simulator.deliver(event.store_id, event.product_id, event.quantity)
                    taken += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
    return taken
