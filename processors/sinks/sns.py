"""Alerts to the SNS alerts topic, ten to a call, with attributes subscribers can filter on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from foundation.contract import Alert, Anomaly, alert_kind, encode
from processors.core import Effects
from processors.sinks.base import SinkDeadLetters, SinkStats, retry_entries

SNS_BATCH = 10


def message_attributes(alert: Alert) -> dict[str, dict[str, str]]:
    """SNS attributes so subscribers can filter on kind, store and (anomalies) severity."""
    attrs = {
        "kind": {"DataType": "String", "StringValue": alert_kind(alert)},
        "store_id": {"DataType": "String", "StringValue": alert.store_id},
    }
    if isinstance(alert, Anomaly):
        attrs["severity"] = {"DataType": "Number", "StringValue": str(alert.severity)}
    return attrs


class AlertTopic:
    def __init__(
        self, sns: Any, topic_arn: str, stats: SinkStats, dead: SinkDeadLetters, base_s: float
    ) -> None:
        self._sns = sns
        self._topic_arn = topic_arn
        self._stats = stats
        self._dead = dead
        self._base_s = base_s

    async def send(self, shard_id: str, effects: Effects) -> None:
        if effects.alerts:
            await self.publish_alerts(effects.alerts)

    async def publish_alerts(self, alerts: Sequence[Alert]) -> None:
        for start in range(0, len(alerts), SNS_BATCH):
            chunk = alerts[start : start + SNS_BATCH]
            entries = [
                {
                    "Id": str(i),
                    "Message": encode(alert).decode(),
                    "MessageAttributes": message_attributes(alert),
                }
                for i, alert in enumerate(chunk)
            ]

            async def send(batch: Sequence[dict[str, Any]]) -> list[tuple[int, str]]:
                renumbered = [dict(entry, Id=str(i)) for i, entry in enumerate(batch)]
                resp = await self._sns.publish_batch(
                    TopicArn=self._topic_arn, PublishBatchRequestEntries=renumbered
                )
                return [
                    (int(f["Id"]), f"{f.get('Code')}: {f.get('Message', '')}") for f in resp.get("Failed", [])
                ]

            failed = await retry_entries(entries, send, self._stats, self._base_s)
            self._stats.alerts_published += len(chunk) - len(failed)
            await self._dead.keep("sns-alerts", [(e["Message"].encode(), r) for e, r in failed])
