"""One sentence a store manager can act on, for every anomaly alert."""

from __future__ import annotations

import datetime as dt
from typing import Final

from foundation.contract import Contributor
from processors.core.detectors import Finding
from processors.core.windows import WindowResult

_DAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _clock(ts_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC)


def _part_of_day(hour: int) -> str:
    if hour < 6:
        return "night"
    if hour < 12:
        return "morning"
    if hour < 14:
        return "lunchtime"
    if hour < 18:
        return "afternoon"
    return "evening"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _range(finding: Finding) -> str:
    low = max(0, int(finding.low))
    high = max(low, int(-(-finding.high // 1)))
    return f"{low}-{high}" if high > low else f"{low}"


def _driver(window: WindowResult, finding: Finding, contributors: tuple[Contributor, ...]) -> str:
    """E.g. ", mostly sku-12 (4 of 5 refunds)"; empty when no product stands out."""
    if not contributors:
        return ""
    top = contributors[0]
    name = top.product_id if top.category is None else f"{top.product_id} ({top.category})"
    if finding.direction == "low":
        return f", mostly {name} ({top.observed} sold against {top.expected:.0f} expected)"
    if finding.metric == "refunds":
        return f", mostly {name} ({top.observed} of {window.refund_lines} refunds)"
    return f", mostly {name} ({top.observed} of {window.lines} lines sold)"


def explain(
    window: WindowResult,
    finding: Finding,
    zone: str = "UTC",
    offset_ms: int = 0,
    contributors: tuple[Contributor, ...] = (),
) -> str:
    """E.g. "Refunds at store-004 reached 14 (612.00 refunded) between 10:00 and 10:15 on Tuesday
    2026-03-17 (Europe/Berlin), mostly p-012 (11 of 14 refunds), against 0-3 expected for a Tuesday
    morning: check the till and recent returns." All times are the store's local time.
    """
    start = _clock(window.start_ms + offset_ms)
    end = _clock(window.end_ms + offset_ms)
    day = _DAYS[start.weekday()]
    when = f"between {start:%H:%M} and {end:%H:%M} on {day} {start:%Y-%m-%d} ({zone})"
    when += _driver(window, finding, contributors)
    usual = f"against {_range(finding)} expected for a {day} {_part_of_day(start.hour)}"
    store = window.store_id
    if finding.metric == "refunds":
        refunded = _money(window.refund_amount)
        return (
            f"Refunds at {store} reached {_count(finding.observed)} ({refunded} refunded) {when}, "
            f"{usual}: check the till and recent returns for fraud or a faulty batch."
        )
    if finding.direction == "low":
        return (
            f"Sales at {store} fell to {_count(finding.observed)} ({_money(window.revenue)} taken) {when}, "
            f"{usual}: check the tills, the card terminal and the network."
        )
    return (
        f"Sales at {store} jumped to {_count(finding.observed)} ({window.units} units, "
        f"{_money(window.revenue)} taken) {when}, {usual}: check shelf and till prices for a pricing error."
    )
