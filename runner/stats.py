"""Summary statistics of raw samples. Pure Python: no numpy dependency."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Optional

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(samples: Iterable[float]) -> Optional[dict[str, float]]:
    """min, mean, median and tail quantiles, max, sample stdev and count; None if empty."""
    values = sorted(v for v in samples if not math.isnan(v))
    if not values:
        return None
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    out = {"n": n, "min": values[0], "mean": mean}
    out.update({name: quantile(values, q) for name, q in QUANTILES.items()})
    out.update({"max": values[-1], "stdev": math.sqrt(var)})
    return out


def median(values: Iterable[float]) -> float:
    return quantile(sorted(values), 0.5)


def cv(values: list[float]) -> Optional[float]:
    """Coefficient of variation (sample stdev / mean); None with fewer than two values."""
    if len(values) < 2:
        return None
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(var) / mean if mean else None


def correlation(a: list[float], b: list[float]) -> Optional[float]:
    """Pearson's r of two equally long series; None with fewer than three pairs or no spread."""
    if len(a) != len(b) or len(a) < 3:
        return None
    ma, mb = math.fsum(a) / len(a), math.fsum(b) / len(b)
    cov = math.fsum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    spread = math.sqrt(math.fsum((x - ma) ** 2 for x in a) * math.fsum((y - mb) ** 2 for y in b))
    return cov / spread if spread else None
