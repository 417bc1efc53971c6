"""Tail probabilities of over-dispersed counts, for turning a window's count into a score.

A window's count (sales, refunds) is modelled as negative binomial with a given mean and variance
(Poisson when the variance is not above the mean). The score of an observation is -log10 of the
probability of a count at least as extreme, so 6 means "one chance in a million if nothing is wrong".
"""

from __future__ import annotations

import math
from typing import Final

from processors.core.lazy import LazyModule

special = LazyModule("scipy.special")  # imported when a window is first scored

_TINY: Final = 1e-300
Z99: Final = 2.5758  # two-sided 99% of a normal: the "expected range" shown to people


def upper_tail(k: float, mean: float, var: float) -> float:
    """P(X >= k)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if var <= mean * (1.0 + 1e-9):
        return float(special.gammainc(k, mean))
    r = mean * mean / (var - mean)
    return float(special.betainc(k, r, 1.0 - mean / var))


def lower_tail(k: float, mean: float, var: float) -> float:
    """P(X <= k)."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0
    if var <= mean * (1.0 + 1e-9):
        return float(special.gammaincc(k + 1.0, mean))
    r = mean * mean / (var - mean)
    return float(special.betainc(r, k + 1.0, mean / var))


def score(p: float) -> float:
    """-log10 of a tail probability."""
    return -math.log10(max(p, _TINY))


def expected_range(mean: float, var: float) -> tuple[float, float]:
    """A 99% range for display (normal approximation, floored at zero, to two decimals)."""
    sd = math.sqrt(max(var, 0.0))
    return round(max(0.0, mean - Z99 * sd), 2), round(mean + Z99 * sd, 2)
