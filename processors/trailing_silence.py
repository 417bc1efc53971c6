"""The end of an input is not a store's silence: alerts about the time after a store's last event.

Live, a store that stops sending while the others trade is an outage, judged while it lasts
(shard_clocks.py). An input has an end, and a store's events may end before the input's do: its
history was cut at its local midnight while stores in other zones still traded, or its file ended
first. From inside the input the two look alike until the input ends. So an anomaly alert whose window
starts at or after its store's newest event so far waits: it is written as soon as the store sends a
later event (the silence was followed by trade: it was news), and dropped, counted, when the input
ends first (the alert was about the end of the store's data). A withdrawal of a waiting alert goes
with it. Used by `backtest`, which knows where its input ends; never by the live processor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from foundation.contract import Alert, Anomaly, AnomalyWithdrawn, parse_ts


class TrailingSilence:
    """Holds the alerts that may be about the end of a store's data (see the module)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[int, Alert]]] = {}  # store -> (window start, alert)
        self.dropped = 0  # anomaly alerts dropped at the end of the input
        self.cancelled = 0  # waiting alerts withdrawn before the end (neither is written)

    def admit(self, alerts: Sequence[Alert], newest: Mapping[str, int]) -> list[Alert]:
        """The alerts to write now, of these new ones and those waiting, given each store's newest
        event time so far."""
        ready: list[Alert] = []
        for alert in alerts:
            if isinstance(alert, Anomaly):
                start = parse_ts(alert.window_start)
                if start >= newest.get(alert.store_id, start + 1):
                    self._waiting.setdefault(alert.store_id, []).append((start, alert))
                    continue
            elif isinstance(alert, AnomalyWithdrawn) and self._withdraw(alert):
                continue
            ready.append(alert)
        for store in list(self._waiting):
            seen = newest.get(store)
            if seen is None:
                continue
            waiting = self._waiting[store]
            ready.extend(alert for start, alert in waiting if start < seen)
            rest = [(start, alert) for start, alert in waiting if start >= seen]
            if rest:
                self._waiting[store] = rest
            else:
                del self._waiting[store]
        return ready

    def _withdraw(self, withdrawal: AnomalyWithdrawn) -> bool:
        """Drop a waiting alert that is being withdrawn, with its withdrawal; False if none waits."""
        waiting = self._waiting.get(withdrawal.store_id, [])
        kept = [(s, a) for s, a in waiting if getattr(a, "alert_id", None) != withdrawal.withdrawn_alert_id]
        if len(kept) == len(waiting):
            return False
        self._waiting[withdrawal.store_id] = kept
        self.cancelled += 1
        return True

    def end(self) -> int:
        """The input ended: what still waits was about the end of its stores' data. Returns how many
        anomaly alerts were dropped now."""
        dropped = sum(len(w) for w in self._waiting.values())
        self._waiting.clear()
        self.dropped += dropped
        return dropped
