"""The KCL record processor keeps going whatever a record holds (needs amazon-kclpy: `make kclpy`)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import amazon_kclpy  # noqa: F401  built by `make test` (make kclpy): missing, this fails, not skips
import pytest

from config import Settings
from processors.core import Effects, ShardCore
from processors.core.stock_ledger import StockChange, StockLedger
from processors.kcl_processor import KclShardProcessor
from tests.unit.test_kcl_processor import (
    STORE,
    T0,
    Clock,
    Journal,
    MemoryStore,
    ScriptedCheckpointer,
    count,
    initialize,
    message,
    sale,
    seq,
)


class KeepingStore(MemoryStore):
    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.effects: list[Effects] = []

    async def send(self, shard_id: str, effects: Effects) -> None:
        await super().send(shard_id, effects)
        self.effects.append(effects)


def batch(*items: tuple[int, bytes, str]) -> Any:
    return message(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                {
                    "action": "record",
                    "data": base64.b64encode(data).decode(),
                    "partitionKey": key,
                    "sequenceNumber": seq(i),
                    "subSequenceNumber": 0,
                    "approximateArrivalTimestamp": T0,
                }
                for i, data, key in items
            ],
        }
    )


@pytest.fixture
def started(tmp_path: Path) -> tuple[KclShardProcessor, KeepingStore, Journal]:
    journal: Journal = []
    store = KeepingStore(journal)
    settings = Settings(
        checkpoints={"every_records": 1, "every_s": 60}, ops={"health_file": str(tmp_path / "b")}
    )
    processor = KclShardProcessor(settings, store, clock=Clock(), sleep=lambda _: None)
    initialize().dispatch(ScriptedCheckpointer(journal), processor)
    return processor, store, journal


def test_undecodable_records_are_rejected_and_the_shard_goes_on(
    started: tuple[KclShardProcessor, KeepingStore, Journal],
) -> None:
    processor, store, journal = started
    bad = b'{"event_id":"x\xff","type":"sale"}'
    corrupt_aggregate = b"\xf3\x89\x9a\xc2" + b"\x0a\x01a" + b"\x00" * 16
    batch(
        (1, count(1, 8), STORE), (2, bad, STORE), (3, corrupt_aggregate, STORE), (4, sale(4), STORE)
    ).dispatch(ScriptedCheckpointer(journal), processor)
    rejected = [r for e in store.effects for r in e.rejected]
    assert [r.record for r in rejected] == [bad, corrupt_aggregate]
    assert "UTF-8" in rejected[0].reason
    assert "MD5" in rejected[1].reason
    assert processor.core is not None
    assert processor.core.inventory() == {STORE: {"tea": 7}}
    assert ("checkpoint", seq(4), 0) in journal


def test_a_record_that_makes_applying_fail_is_a_dead_letter_not_a_crash_loop(
    started: tuple[KclShardProcessor, KeepingStore, Journal], monkeypatch: pytest.MonkeyPatch
) -> None:
    processor, store, journal = started
    real_sale = StockLedger.sale

    def faulty(self: StockLedger, ev: Any, *args: Any) -> StockChange:
        if ev.event_id == "e3":
            raise KeyError("a fault in our own code")
        return real_sale(self, ev, *args)

    monkeypatch.setattr(StockLedger, "sale", faulty)
    batch((1, count(1, 8), STORE), (3, sale(3), STORE), (4, sale(4), STORE)).dispatch(
        ScriptedCheckpointer(journal), processor
    )
    failed = [r for e in store.effects for r in e.failed]
    assert [(r.ref, r.record) for r in failed] == [(seq(3), sale(3))]
    assert "KeyError" in failed[0].reason
    assert processor.records_failed == 1
    assert processor.core is not None
    assert processor.core.inventory() == {STORE: {"tea": 7}}
    assert ("checkpoint", seq(4), 0) in journal  # the shard moved past it


def test_an_event_under_another_stores_partition_key_is_rejected(
    started: tuple[KclShardProcessor, KeepingStore, Journal],
) -> None:
    processor, store, journal = started
    batch((1, count(1, 8), STORE), (2, sale(2), "store-001")).dispatch(
        ScriptedCheckpointer(journal), processor
    )
    rejected = [r for e in store.effects for r in e.rejected]
    assert [r.record for r in rejected] == [sale(2)]
    assert "partition key 'store-001'" in rejected[0].reason
    assert isinstance(processor.core, ShardCore)
    assert processor.core.inventory() == {STORE: {"tea": 8}}
    assert processor.core.stats.events_valid == 1
