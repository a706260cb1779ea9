"""Percentiles, medians and latency summaries (pure).

Percentiles use the nearest-rank definition: the p-th percentile of n sorted
values is the value at rank ceil(p/100 * n). It is always one of the measured
values, never an interpolation between two, so a p99 of 0.4 ms means that
some delivery really took 0.4 ms.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Quantiles, in percent, kept of every latency distribution for the picture.
CDF_QUANTILES: tuple[float, ...] = (
    *[float(q) for q in range(0, 90, 5)],
    *[90 + q / 2 for q in range(0, 18)],
    99.0,
    99.5,
    99.9,
    100.0,
)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0 to 100) of values sorted ascending.

    Raises:
        ValueError: no values, or ``p`` out of range.
    """
    if not sorted_values:
        raise ValueError("the percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is out of range")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def median(values: Iterable[float]) -> float:
    """The median (the mean of the middle two for an even count).

    Raises:
        ValueError: no values.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("the median of no values")
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """End-to-end latency of one run, in milliseconds."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    #: Latency in ms at each of CDF_QUANTILES, for the picture.
    cdf_ms: tuple[float, ...]


def summarize_latencies(latencies_ns: Iterable[int]) -> LatencySummary | None:
    """Summarise latencies given in nanoseconds; None when there are none."""
    ordered = sorted(latencies_ns)
    if not ordered:
        return None

    def ms(p: float) -> float:
        return round(percentile(ordered, p) / 1e6, 4)

    return LatencySummary(
        count=len(ordered),
        p50_ms=ms(50),
        p99_ms=ms(99),
        max_ms=ms(100),
        cdf_ms=tuple(ms(q) for q in CDF_QUANTILES),
    )


def rate(count: int, seconds: float) -> float:
    """Events per second, 0 when no time passed."""
    return count / seconds if seconds > 0 else 0.0
