"""Write this release's golden checkpoints (tests/unit/test_state_format.py restores every kept one).

    python -m tests.golden.checkpoints.make

A release that changes the checkpoint format adds its own files beside the older ones (never replaces
them) and ships the upgrade that reads them. Each golden is a checkpoint object as S3 holds it (core,
runs and detector pieces inside) and a JSON file of what it must restore to.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.scenario import ScenarioConfig, generate
from processors.checkpoints import FORMAT, encode_checkpoint
from processors.core import CoreConfig, ShardCore
from processors.core.detectors import DetectorConfig

HERE = Path(__file__).parent
KINDS = {"seasonal": (3, 9), "threshold": (2, 3), "naive": (2, 3), "hst": (1, 3)}


def lines_for(kind: str) -> list[bytes]:
    stores, days = KINDS[kind]
    _, lines = generate(ScenarioConfig(seed=7, stores=stores, days=days, warmup_days=1))
    return [line.encode() if isinstance(line, str) else line for line in lines]


def cut(lines: list[bytes]) -> int:
    return len(lines) * 3 // 4


def core_for(kind: str) -> ShardCore:
    return ShardCore(CoreConfig(detection=DetectorConfig(kind=kind)))


def main() -> None:
    for kind in KINDS:
        lines = lines_for(kind)
        core = core_for(kind)
        for i, raw in enumerate(lines[: cut(lines)]):
            core.apply(raw, i)
            core.drain()
        blob = encode_checkpoint("shardId-000000000000", str(cut(lines)), core, False)
        name = f"format-{FORMAT}-{kind}"
        (HERE / f"{name}.ckpt").write_bytes(blob)
        monitor = core.state.monitor
        expect = {
            "sequence_number": str(cut(lines)),
            "stock": core.inventory(),
            "dedup_keys": len(core.state.dedup),
            "demand_stores": sorted(core.state.forecast.stores) if core.state.forecast else [],
            "detectors": sorted(monitor.detectors) if monitor else [],
            "events_valid": core.stats.events_valid,
        }
        (HERE / f"{name}.json").write_text(json.dumps(expect, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(blob):,} bytes")


if __name__ == "__main__":
    main()
