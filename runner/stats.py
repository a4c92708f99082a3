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
# differs from that run's mean by more than STEP_MIN and by more than STEP_SPREAD of its cv,
# and an independent witness of the cause (the host's own speed) moved the same way.
STEP_MIN = 0.05
STEP_SPREAD = 4.0
STEADY_MIN = 3  # fewer passes than this make no level to judge a step against


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def steady_start(values: list[float], witness: Optional[list[float]], min_len: int = STEADY_MIN) -> int:
    """Index of the first value of the steady run that ends the series, after a step (the
    warm-up / changepoint treatment of repeated benchmark runs, as in Barrett et al., "Virtual
    machine warmup blows hot and cold", 2017); 0 when there is no such step.

    A start is a step when every value before it lies clearly off the level of the values
    after it, all on the same side (at least `min_len` and 3 of them, and at least half of all), and the witness (a
    speed measured beside each value: the host's) moved the same way, by at least half as much
    and 5%. Without a witness of the same length there is no step: judged on the values alone
    (at 3 cv), noise made one in about 1 of 10 series of 5 values at 5% cv. Of adjacent starts that qualify, the later one:
    a value that is itself off the level after it belongs before the step. A drift, a step
    near the end, or a series that flips between two levels keeps every value."""
    if witness is None or len(witness) != len(values) or min(witness, default=0.0) <= 0:
        return 0
    need = max(STEADY_MIN, min_len)
    last = min(len(values) - need, len(values) // 2)

    def is_step(start: int) -> bool:
        if not 1 <= start <= last:
            return False
        after, before = values[start:], values[:start]
        level, spread = mean(after), cv(after)
        if not level or spread is None:
            return False
        bound = max(STEP_MIN, STEP_SPREAD * spread)
        # Off the level, and all on one side of it: passes above and below it are noise, not a
        # step (a pass 20% fast on a host 5% slow had been left out with one 30% slow).
        if not (all(v / level - 1 > bound for v in before) or all(1 - v / level > bound for v in before)):
            return False
        moved = level / mean(before) - 1
        host_moved = mean(witness[start:]) / mean(witness[:start]) - 1
        return moved * host_moved > 0 and abs(host_moved) >= max(STEP_MIN, abs(moved) / 2)

    return next((s for s in range(1, last + 1) if is_step(s) and not is_step(s + 1)), 0)
