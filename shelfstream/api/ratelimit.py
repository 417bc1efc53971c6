"""Token buckets per key (a token's digest, or a client address for failed sign-ins).

A bucket holds up to `burst` requests and refills at `rate_per_s`; a request that finds it empty is
refused with the time until the next one would fit (the 429's ``Retry-After``).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens left, at)

    def take(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 when allowed, else seconds to wait."""
        now = self._clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_keys:
                self._forget_full(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold no information, and memory stays bounded."""
        self._buckets = {
            key: (tokens, at)
            for key, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * self.rate_per_s < self.burst
        }
        if len(self._buckets) > self._max_keys:  # still too many: the longest idle go first
            newest = sorted(self._buckets.items(), key=lambda item: item[1][1])[-self._max_keys // 2 :]
            self._buckets = dict(newest)
