from __future__ import annotations

import math
import statistics

import pytest

from runner.stats import cv, quantile, summarize


def test_summary_of_known_samples():
    values = [float(v) for v in range(1, 101)]  # 1..100
    s = summarize(reversed(values))
    assert s["n"] == 100 and s["min"] == 1 and s["max"] == 100
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p99"] == pytest.approx(99.01)
    assert s["stdev"] == pytest.approx(statistics.stdev(values))


def test_nan_is_ignored_and_empty_is_none():
    assert summarize([]) is None
    assert summarize([math.nan]) is None
    assert summarize([1.0, math.nan, 3.0])["mean"] == 2.0


def test_quantile_matches_linear_interpolation():
    assert quantile([0.0, 10.0], 0.25) == 2.5
    assert quantile([5.0], 0.99) == 5.0


def test_cv():
    assert cv([1.0]) is None
    assert cv([10.0, 10.0, 10.0]) == 0.0
    assert cv([9.0, 11.0]) == pytest.approx(statistics.stdev([9, 11]) / 10)


def test_correlation():
    from runner.stats import correlation

    assert correlation([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(1.0)
    assert correlation([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert correlation([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 1.0, 3.0]) == pytest.approx(0.4472, abs=1e-4)
    assert correlation([1.0, 2.0], [1.0, 2.0]) is None  # too few pairs to mean anything
    assert correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # no spread


def test_a_slow_models_rate_keeps_its_digits():
    """A BERT forward in fp16 on a 2-core CPU: 0.31 requests/s, once printed as "0"."""
    from runner.printer import rate_text

    assert [rate_text(v) for v in (0.31, 4.94, 0.0, 12_345.6)] == ["0.31", "4.94", "0", "12,346"]


def test_steady_start_leaves_out_only_passes_before_a_step_the_host_made():
    from runner.stats import steady_start

    def host(before: int, n: int, to: float) -> list[float]:  # the host's speed: 1, then `to`
        return [1.0] * before + [to] * (n - before)

    # Measured on the H200: the host stepped after one pass (up) or two (down), the rates with it.
    up, down = [1.0, 1.357, 1.432, 1.387, 1.383], [1.0, 0.966, 0.646, 0.635, 0.615]
    assert steady_start(up, [1.0, 1.138, 1.911, 1.902, 1.914]) == 1
    assert steady_start(down, [1.0, 1.042, 0.656, 0.671, 0.554]) == 2
    # The same rates, but the host's speed stayed (or moved the other way, or too little): the
    # cause is not the host, and every pass counts.
    assert steady_start(down, [1.0] * 5) == 0
    assert steady_start(down, host(2, 5, 1.4)) == 0
    assert steady_start(down, host(2, 5, 0.9)) == 0  # -10% against the rate's -36%
    assert steady_start(down, None) == 0 and steady_start(down, [1.0, 1.0]) == 0  # no witness
    # A pass that is itself off the level after it belongs before the step.
    assert steady_start([0.5, 0.8] + [1.0] * 8, host(2, 10, 1.5)) == 2
    assert steady_start([1.06, 1.0] + [0.65] * 8, host(2, 10, 0.6)) == 2
    # Of two adjacent starts that both qualify, the later: the second pass is off the level too
    # (the case above never let the first start qualify: its host moved too little there).
    assert steady_start([0.5, 0.8, 1, 1, 1, 1], [0.5, 0.8, 1, 1, 1, 1]) == 2
    # Passes off the level on both sides are noise, not a step, whatever the host did (review:
    # the 120 on a slower host had been left out with the 70, and the cv read narrower).
    assert steady_start([70, 120, 100, 100.5, 99.5, 100, 100.2], [0.9, 0.95, 1, 1, 1, 1, 1]) == 0
    # The first pass alone, on a host 40% slower, is a step; the 120 stays among the steady.
    assert steady_start([60, 120, 100, 100.5, 99.5, 100, 100.2], [0.6, 0.8, 1, 1, 1, 1, 1]) == 1
    assert steady_start([70, 80, 100, 100.5, 99.5, 100, 100.2], [0.7, 0.8, 1, 1, 1, 1, 1]) == 2  # one side: a step
    # Noise, a drift, two levels taking turns, a step too close to the end: every pass counts.
    assert steady_start([1.0, 1.025, 0.893, 0.964, 1.0], host(1, 5, 0.9)) == 0
    assert steady_start([1.0 - 0.02 * i for i in range(10)], [1.0 - 0.03 * i for i in range(10)]) == 0
    assert steady_start([1.0, 0.65, 1.0, 0.65, 1.0, 0.65], [1.0, 0.6, 1.0, 0.6, 1.0, 0.6]) == 0
    assert steady_start([1.0, 1.0, 1.0, 0.6, 0.6], host(3, 5, 0.6)) == 0
    # A step smaller than 5%, or within four cv of the passes after it, is not a step.
    assert steady_start([1.04, 1.0, 1.0, 1.0], host(1, 4, 0.9)) == 0
    assert steady_start([1.2, 1.0, 1.1, 0.9, 1.0], host(1, 5, 0.8)) == 0
    # The last three of ten passes agree after seven that scatter (the H200, eager x4): chance,
    # not a settled level; at most half of the passes are ever left out.
    assert steady_start([1.0, 0.981, 0.874, 0.728, 0.692, 0.746, 1.057, 1.128, 1.152, 1.133], host(7, 10, 1.3)) == 0
    assert steady_start([2.0, 2.1, 1.9, 2.0, 2.05, 1.0, 1.01, 1.0, 0.99, 1.0], host(5, 10, 0.5)) == 5
    # The steady run must be at least as long as asked (and three passes in any case).
    assert steady_start([2.0, 1.0, 1.0, 1.0], host(1, 4, 0.5), min_len=4) == 0
    assert steady_start([2.0, 1.0, 1.0], host(1, 3, 0.5), min_len=1) == 0
    assert steady_start([2.0, 1.0, 1.0, 1.0], host(1, 4, 0.5), min_len=1) == 1
