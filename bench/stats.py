"""Percentiles of one run and medians over rounds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from sasfleet.cli.stats import percentile


def latency_summary(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95 and p99 in milliseconds."""
    p50, p95, p99 = (percentile(latencies_s, p) * 1000 for p in (50, 95, 99))
    return p50, p95, p99


def median(values: Sequence[float]) -> float:
    """The median, 0.0 for no values."""
    return statistics.median(values) if values else 0.0
