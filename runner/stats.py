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


# A level shift in a series of passes, as opposed to noise: every pass before the steady run
# differs from that run's mean by more than STEP_MIN and by more than STEP_SPREAD of its cv.
STEP_MIN = 0.05
STEP_SPREAD = 3.0
STEADY_MIN = 3  # fewer passes than this make no level to judge a step against


def steady_start(values: list[float], min_len: int = STEADY_MIN) -> int:
    """Index of the first value of the longest steady run that ends the series, after a step
    (the warm-up / changepoint treatment of repeated benchmark runs, as in Barrett et al.,
    "Virtual machine warmup blows hot and cold", 2017); 0 when there is no such step.

    Only a leading part, at most half of the values, is ever left out, and only when every one
    of its values lies clearly off the level of the values after it: a drift, a step near the end, or a series that
    flips between two levels has no steady run after a step and keeps every value."""
    need = max(STEADY_MIN, min_len)
    # At most half of the passes are left out: a level that only the last few passes share,
    # after many that scatter, is those few passes agreeing by chance, not a settled state.
    for start in range(1, min(len(values) - need, len(values) // 2) + 1):
        after = values[start:]
        mean = math.fsum(after) / len(after)
        spread = cv(after)
        if not mean or spread is None:
            continue
        bound = max(STEP_MIN, STEP_SPREAD * spread)
        if all(abs(v / mean - 1) > bound for v in values[:start]):
            return start
    return 0
