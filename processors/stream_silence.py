"""A whole stream gone quiet: the feed's outage, said once, never one alert per store.

A store whose tills stop while the others trade is an incident of that store: the quiet shard
follows the others' event time and the store's detector judges the silence (shard_clocks.py). When
every shard stops at once, nothing moves event time, so no store is judged, and rightly: the end of
a replay, a fleet closed for the night and a broken feed (producers down, credentials expired, a
network cut) all look alike from inside one store. Which one it is shows in what the stores' own
histories expected: if, over the quiet spell (wall clock, laid from the newest event time on),
they would have made at least `min_expected_sales`, the feed is out. That is said once a spell: one
warning in the logs, and the `StreamQuiet` gauge (1 while it lasts) that the stack's alarm watches;
a line again when records flow.

Pure: the shell passes wall-clock readings and a function for the expected sales.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from foundation.timeunits import HOUR_MS

_MAX_SPAN_MS: Final = 2 * HOUR_MS  # the expectation looks at most this far (bounded work)


@dataclass(frozen=True, slots=True)
class Quiet:
    """The stream's state at one reading."""

    quiet: bool  # every shard silent past the bound, while its stores would have traded
    silent_s: float = 0.0  # wall-clock seconds since the last shard read a record
    expected_sales: float = 0.0  # what the stores' histories expected over that spell


class StreamSilence:
    """Watches the shards' last reads; says when the whole stream is quiet while it should trade."""

    def __init__(self, quiet_after_s: float, min_expected_sales: float, log: logging.Logger) -> None:
        self._quiet_after_s = quiet_after_s
        self._min_expected = min_expected_sales
        self._log = log
        self.state = Quiet(False)

    @property
    def enabled(self) -> bool:
        return self._quiet_after_s > 0

    def check(
        self,
        now_s: float,
        last_reads_s: Sequence[float],
        newest_event_ms: int | None,
        expected: Callable[[int, int], float],
    ) -> Quiet:
        """One reading: `last_reads_s`, each open shard's last read (the clock of `now_s`);
        `expected(from_ms, to_ms)`, the sales the stores would make in that event-time span."""
        was = self.state.quiet
        if not self.enabled or not last_reads_s or newest_event_ms is None:
            self.state = Quiet(False)
            return self.state
        silent_s = now_s - max(last_reads_s)
        if silent_s < self._quiet_after_s:
            if was:
                self._log.info("the stream is trading again", extra={"silent_s": round(silent_s, 1)})
            self.state = Quiet(False)
            return self.state
        span_ms = min(int(silent_s * 1000), _MAX_SPAN_MS)
        sales = expected(newest_event_ms, newest_event_ms + span_ms)
        quiet = sales >= self._min_expected
        if quiet and not was:
            self._log.warning(
                "the whole stream is quiet while its stores would trade: a feed outage, not each "
                "store's (no store is alerted for it)",
                extra={
                    "silent_s": round(silent_s, 1),
                    "expected_sales": round(sales, 1),
                    "shards": len(last_reads_s),
                    "since_event_ms": newest_event_ms,
                },
            )
        elif was and not quiet:
            self._log.info("the stream's quiet spell is no longer unexpected", extra={"silent_s": silent_s})
        self.state = Quiet(quiet, silent_s, sales)
        return self.state
