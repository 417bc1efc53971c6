"""`shelfstream replay` keeps the file's order across stores, not only per store: a replay runs far
faster than the stores traded, and stores put in parallel lanes would drift hours of event time apart
in one shard, making the later one's sales late for every window."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from config import Settings
from config.settings import to_env
from foundation.aws.clients import AioClients
from shelfstream.cli import main

ReadStream = Callable[[Any, str], Awaitable[dict[str, list[dict[str, Any]]]]]


@pytest.mark.slow
def test_replay_keeps_the_order_of_the_file_across_stores_in_a_shard(
    make_settings: Callable[..., Settings],
    read_stream: ReadStream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from foundation.aws.provision import provision

    settings = make_settings(aws={"shard_count": 1}, producers={"max_batches_in_flight": 4})
    provision(settings)
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)
    stores = [f"store-{i:03d}" for i in range(8)]
    lines = [
        orjson.dumps(
            {
                "event_id": f"e{n}",
                "type": "sale",
                "store_id": stores[n % len(stores)],
                "ts": f"2026-03-02T{8 + n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}.000Z",
                "product_id": "p1",
                "quantity": 1,
                "unit_price": 1.0,
            }
        )
        for n in range(6000)
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    assert main(["replay", str(path)]) == 0

    async def read() -> list[str]:
        async with AioClients(settings, "kinesis") as clients:
            (records,) = (await read_stream(clients["kinesis"], settings.aws.stream_name)).values()
        return [orjson.loads(r["Data"])["event_id"] for r in records]

    assert asyncio.run(read()) == [f"e{n}" for n in range(6000)]
