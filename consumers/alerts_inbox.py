"""`shelfstream alerts`: what arrived on the alerts topic, read from its SQS inbox queue.

Messages are looked at, not consumed: one pass hides each message while it is read (so the pass sees
every message once), then makes them all visible again for the next reader. Repeats (a replay sends
the same `alert_id` again) are folded.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from foundation.contract import Alert, decode_alert

_HIDE_S = 30


def read_alerts(sqs: Any, queue_url: str, wait_s: float = 0.0) -> list[Alert]:
    """Every distinct alert on the inbox; waits up to `wait_s` for the first ones to arrive."""
    seen: dict[str, Alert] = {}
    receipts: list[str] = []
    deadline = time.monotonic() + wait_s
    try:
        while True:
            resp = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=_HIDE_S,
                WaitTimeSeconds=1 if time.monotonic() < deadline else 0,
            )
            messages = resp.get("Messages", [])
            for message in messages:
                receipts.append(message["ReceiptHandle"])
                try:
                    alert = decode_alert(message["Body"])
                except (msgspec.ValidationError, msgspec.DecodeError):
                    continue
                seen.setdefault(alert.alert_id, alert)
            if not messages and (seen or time.monotonic() >= deadline):
                break
    finally:
        for start in range(0, len(receipts), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(receipts[start : start + 10])
            ]
            sqs.change_message_visibility_batch(QueueUrl=queue_url, Entries=entries)
    return sorted(seen.values(), key=lambda a: (a.ts, a.alert_id))
