"""Measurement -> figures: every number with its unit in its name, plus warnings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from runner.check import first_chunk
from runner.environment import tick_seconds
from runner.load import MIN_REQUESTS
from runner.measure import Measurement, Pass, host_speeds, kept_share_text, stdrel
from runner.printer import rate_text
from runner.record import LOOPS_APART_SAID, PASSES_CUT_SAID, check_short, latency_short
from runner.spec import RunSpec
from runner.stats import correlation, cv, mean, median, steady_start, summarize

# Stage marks: 0 before the copy in, 1 after it, 2 after compute, 3 after the copy out. On a GPU
# they are CUDA events and the copies are H2D and D2H; on the CPU the host clock and host copies.
STAGES = {"h2d": (0, 1), "compute": (1, 2), "d2h": (2, 3), "e2e": (0, 3)}
HOST_STAGES = {"copy_in": (0, 1), "compute": (1, 2), "copy_out": (2, 3), "e2e": (0, 3)}


@dataclass
class Summary:
    figures: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a reader should know, nothing to doubt


def _rates(passes: list[Pass]) -> list[float]:
    return [requests / seconds for requests, seconds in passes]


def _sample_rates(passes: list[Pass], samples: list[int]) -> Optional[list[float]]:
    """Each pass's samples/s (the samples it served over its own time); None where the passes
    did not record what they served."""
    if not passes or len(samples) != len(passes):
        return None
    return [k / seconds for (_, seconds), k in zip(passes, samples, strict=True)]


def _rate_figures(prefix: str, passes: list[Pass], batch: float, start: int = 0,
                  samples: Optional[list[int]] = None) -> dict[str, Any]:
    rates = _rates(passes)
    if not rates:
        return {}
    rps = median(rates[start:])
    # With buckets each pass serves its own mix of sizes: the median of the passes' own
    # samples/s, the figures the ratios' intervals are drawn from (the median of requests/s
    # times the pooled mean batch had put a ratio off the centre of its own interval).
    sample_rates = _sample_rates(passes, samples or [])
    figures = {
        f"{prefix}_requests_per_s": rps,
        f"{prefix}_samples_per_s": median(sample_rates[start:]) if sample_rates else rps * batch,
        f"{prefix}_requests_per_s_repeats": rates,
        f"{prefix}_cv": cv(rates[start:]),
        # Its samples/s's own cv: with buckets each pass's mix moves its samples/s apart from its
        # requests/s (a bucketed job's 3.9% in requests/s was 10.0% in samples/s).
        f"{prefix}_samples_cv": cv(sample_rates[start:]) if sample_rates else cv(rates[start:]),
        f"{prefix}_requests": sum(r for r, _ in passes),
    }
    if prefix == "throughput":
        # The passes the median and cv are taken over: from this one (1-based) to the last.
        figures.update(throughput_steady_from_repeat=start + 1, throughput_cv_all_repeats=cv(rates))
    return figures


def _others_figures(passes: list[Optional[tuple[float, float, int]]]) -> tuple[Optional[float], Optional[int],
                                                                                  Optional[float]]:
    """Over `passes` (environment.others_cores per pass): the cores other processes kept busy,
    summed before it is clamped at 0 (signed per pass: the ticks' rounding); the CPUs watched;
    and the figure's grain per busy CPU, in cores over those passes: up to a tick at each end
    of a pass (the kernel charges a tick to what runs when it fires: sampled, so taken as two
    ticks a pass, not the one a rounded count would be off by), independent from pass to pass,
    so adding up over them as a root sum of squares."""
    others = [x for x in passes if x is not None]
    wall_s = sum(w for _, w, _ in others)
    if not others or wall_s <= 0:
        return None, None, None
    return (max(0.0, sum(s for s, _, _ in others) / wall_s), others[-1][2],
            2 * math.sqrt(len(others)) * tick_seconds() / wall_s)


def _step_warning(rates: list[float], speeds: list[float], start: int) -> str:
    """Which passes a step in speed left out of the throughput's figures, and how far the rate
    and the host moved."""
    before, after = rates[:start], rates[start:]
    moved = mean(after) / mean(before) - 1
    host_moved = mean(speeds[start:]) / mean(speeds[:start]) - 1
    first = "pass 1" if start == 1 else f"passes 1-{start}"
    return (f"throughput: {first} of {len(rates)} left out of its median and cv: the host's own speed "
            f"moved {host_moved:+.0%} after {'it' if start == 1 else 'them'} and the rate {moved:+.0%}; passes "
            f"{start + 1}-{len(rates)} have cv {cv(after):.1%}, all passes {cv(rates):.1%} "
            "(every pass is in throughput_requests_per_s_repeats)")


def _cut_passes(mq: Any, kind: str, passes: list[tuple[int, float]], cap_s: Optional[float], least: int = 1,
                caps_s: Optional[list[float]] = None) -> str:
    """The passes of one kind ("" for the throughput's, " ceiling", " baseline") that their cap
    ended before both minimums were met (a pass runs at least one turn of the ring, so under a
    cap shorter than that it may still meet them): what they were, and which cap. A speedup
    rests on the baseline's passes as much as on the throughput's. `caps_s`: what each pass
    could run, less than `cap_s` for one started near the budget's end."""
    short_at = [i for i, (n, sec) in enumerate(passes) if n < mq.min_requests or sec * 1e3 < mq.min_duration_ms]
    short = [passes[i] for i in short_at]
    # Started with less than a pass of time left: the budget's end cut it, not the cap (a 900 ms
    # pass had been said cut "to fit in measure.max_pass_ms=2000").
    at_end = sum(1 for i in short_at if caps_s is not None and i < len(caps_s) and cap_s is not None
                 and caps_s[i] < cap_s * (1 - 1e-6))
    if cap_s is None or not short:
        return ""
    counts = sorted(n for n, _ in short)
    longest_ms = max(sec for _, sec in short) * 1e3
    span = f"{counts[0]:,}" if counts[0] == counts[-1] else f"{counts[0]:,}-{counts[-1]:,}"
    missed = [f"measure.min_requests={mq.min_requests}"] if any(n < mq.min_requests for n, _ in short) else []
    missed += [f"measure.min_duration_ms={mq.min_duration_ms:g}"] if any(sec * 1e3 < mq.min_duration_ms
                                                                       for _, sec in short) else []
    # Which cap: measure.max_pass_ms, or the budget's share per pass (a quick job's 300 ms
    # passes had been blamed on its budget, and raising the budget would not have helped).
    fit = (f"measure.max_pass_ms={mq.max_pass_ms:g}, the longest a pass may run"
           if cap_s >= mq.max_pass_ms / 1e3 * (1 - 1e-9) else f"the budget (measure.budget_s={mq.budget_s:g})")
    # A pass runs `least` requests (a turn of the ring) at least: where a pass of no more than
    # that outran the cap, the passes did not "fit in" it (a GPT-2 on a CPU: 1 request of
    # 4,400 ms "to fit in" 300 ms). A pass of more overshot it by its last request alone.
    outran = any(n <= least and sec > cap_s * 1.05 for n, sec in short)
    if outran:
        within = f"under {fit}: the least a pass runs (a turn of the ring, each slot once) took longer than that"
    elif longest_ms > cap_s * 1e3 * 1.05:
        # Slow requests overshoot the cap by the one running when it is reached: "at most 499 ms
        # each ... to fit in measure.max_pass_ms=300" read as a contradiction.
        within = f"under {fit}: a pass ends with the request that crosses it"
    else:
        within = f"to fit in {fit}"
    end = (f"the budget's end (measure.budget_s={mq.budget_s:g}): {'they' if at_end > 1 else 'it'} started with less "
           "than a pass of time left")
    if at_end == len(short):
        within = f"at {end}"
    elif at_end:
        within += f"; {at_end} of them at {end}"
    return (f"{len(short)} of {len(passes)}{kind}{PASSES_CUT_SAID}{span} request{'s' if counts[-1] > 1 else ''} and at most "
            f"{longest_ms:,.0f} ms each (asked: {' and '.join(missed)}) {within}")


# The host canary's medians of two blocks this far apart (1.25x: the host's two states on the
# H200 VMs were 1.6-1.9x apart, a state's own spread a few percent) ran in two host states.
HOST_STATES_APART = 1.25


def _host_apart(spec: RunSpec, fig: dict[str, Any], throughput_canary_s: list[float],
                side_canary_s: dict[str, list[float]]) -> list[str]:
    """The ratios whose two blocks of passes ran while the host ran Python at speeds this far
    apart: their intervals see each block's spread, not the step between them. Records each
    side's median canary. Interleaved passes run in turn: a pair shares the host's state."""
    said = []
    for side, ratio, what in (("baseline", "speedup_vs_baseline", "speedup"),
                              ("ceiling", "efficiency_vs_ceiling", "efficiency")):
        canary = side_canary_s.get(side) or []
        fig[f"host_canary_us_{side}"] = median(canary) * 1e6 if canary else None
        if spec.measure.interleave or not canary or not throughput_canary_s or fig.get(ratio) is None:
            continue
        own, theirs = median(throughput_canary_s), median(canary)
        apart = max(own, theirs) / min(own, theirs) if min(own, theirs) > 0 else 1.0
        if apart >= HOST_STATES_APART:
            said.append(f"the host ran Python {apart:.2f}x {'slower' if theirs > own else 'faster'} during the "
                        f"{side}'s passes than during the throughput's (host canary {theirs * 1e6:.0f} us against "
                        f"{own * 1e6:.0f} us): the {what} compares two host states, whatever its interval; "
                        "measure.interleave=true runs the passes in turn")
    return said


def _stage_us(latency: dict, marks: tuple[int, int]) -> list[float]:
    a, b = marks
    return [row[b] - row[a] for row in latency["device_us"]]


# The standard error of the median of n normal draws, in sigma / sqrt(n), for n = 1..12
# (simulated; the median of two is their mean): 1.25 at every n had made a 2-pass interval
# 1.25x too wide, and the asymptote is sqrt(pi / 2).
MEDIAN_SE = (1.0, 1.0, 1.160, 1.092, 1.198, 1.133, 1.216, 1.161, 1.223, 1.175, 1.226, 1.189)


def median_error(rates: list[float]) -> float:
    """Relative standard error of the median of `rates`; inf for one."""
    c = cv(rates)
    if c is None:
        return math.inf
    n = len(rates)
    return (MEDIAN_SE[n - 1] if n <= len(MEDIAN_SE) else math.sqrt(math.pi / 2)) * c / math.sqrt(n)


# Student's t at 97.5% for 1..30 degrees of freedom: a 95% interval from a few repeats.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t_975(dof: float) -> float:
    """Student's t at 97.5% for `dof` degrees of freedom (rounded down: the wider interval)."""
    whole = max(1, int(dof + 1e-9))
    return T_975[whole - 1] if whole <= len(T_975) else 1.96 + 2.4 / whole


def welch_dof(errors: list[tuple[float, int]]) -> float:
    """Welch-Satterthwaite degrees of freedom of a sum of squared errors, each (error, passes)."""
    total = sum(e * e for e, _ in errors)
    spread = sum(e ** 4 / (n - 1) for e, n in errors if n > 1)
    return total * total / spread if spread > 0 else max(n for _, n in errors) - 1


def ratio_figures(name: str, ratio: float, numerator: list[float],
                  denominator: Optional[list[float]] = None) -> dict[str, Any]:
    """A ratio of two medians with its 95% interval (on the log scale; Student's t for the
    Welch-Satterthwaite degrees of freedom of the two sides' errors); `within_noise` when it
    covers 1.0. Without a denominator, `numerator` holds the ratios themselves (paired passes).
    Simulated (tests/test_job_cpu.py, test_the_ratios_interval_holds_95_percent_in_simulation),
    equal rates read "beyond noise" in at most 5% of runs:
    about 4% at ten passes a side, 2% at three, 0.7% at two (the other side's spread, estimated
    from two passes, is most of what it knows). With the fewer passes of the two sides as the
    degrees of freedom and 1.25 sigma / sqrt(n) per median, 0.5% at two and 0.7% at three, and a
    real 1.5x at 5% cv over two passes a side had read "within noise" in 77% of runs (66% now);
    the sum of the two sides' degrees of freedom reads 10% beyond noise at two passes when their
    cvs differ 5x (a graph job beside its eager baseline). A 2-sigma interval: 12.7% at two."""
    sides = [numerator] + ([denominator] if denominator is not None else [])
    errors = [(median_error(side), len(side)) for side in sides]
    err = math.hypot(*(e for e, _ in errors))
    k = t_975(welch_dof(errors)) if math.isfinite(err) else 2.0
    # On the log scale, where a ratio's error is relative: the same as ratio * (1 +- k * err)
    # for a small error, and never below 0 for a large one (2 passes a side had given -3.45-6.04).
    low, high = ratio * math.exp(-k * err), ratio * math.exp(k * err)
    return {
        name: ratio,
        f"{name}_interval": [low, high] if math.isfinite(err) else None,
        # One pass has no spread to judge by: unknown, not "within noise".
        f"{name}_within_noise": (low <= 1.0 <= high) if math.isfinite(err) else None,
    }


def _bucket_figures(latency: dict, cuda: bool) -> dict[str, Any]:
    """Requests and end-to-end latency per bucket, from the latency pass."""
    e2e = _stage_us(latency, STAGES["e2e"])
    per: dict[str, list[float]] = {}
    for bucket, us in zip(latency["bucket"], e2e, strict=True):
        per.setdefault(bucket, []).append(us)
    order = sorted(per, key=lambda b: tuple(int(x) for x in b.split("x")))
    return {b: {"requests": len(per[b]), "latency_e2e_us": summarize(per[b])} for b in order}


def _load_figures(load: dict[str, Any]) -> dict[str, Any]:
    """The scenario's headline figures; `load` keeps every point, so curves can be redrawn."""
    fig: dict[str, Any] = {"load": load}
    runner, baseline = load.get("runner") or {}, load.get("baseline") or {}
    if load["scenario"] == "single_stream":
        fig["single_stream_latency_us"] = runner
        fig["baseline_single_stream_latency_us"] = baseline or None
        if runner.get("p50") and baseline.get("p50"):
            fig["single_stream_speedup"] = baseline["p50"] / runner["p50"]
        return fig
    if load["rate"] == "max":
        fig["server_max_rate"] = runner.get("max_rate")
        fig["baseline_server_max_rate"] = baseline.get("max_rate")
        if runner.get("max_rate") and baseline.get("max_rate"):
            fig["server_max_rate_vs_baseline"] = runner["max_rate"] / baseline["max_rate"]
    elif runner.get("points"):  # (none where a Ctrl-C came during the point)
        point = runner["points"][0]
        fig["server_valid"] = point["valid"]
        fig["server_latency_us"] = point["latency_us"]
        fig["server_achieved_rate"] = point["achieved"]
    return fig


# A point's issue slack p99 (the loop's timer running late) past this share of the p99 bound
# is said: its verdict may be the host's, not the model's.
LATE_SHARE = 0.5


def _load_warnings(spec: RunSpec, load: dict[str, Any]) -> list[str]:
    """A single stream the budget cut short of load.requests; a rate search it ended before
    its resolution: what their figures rest on."""
    said = []
    if load.get("scenario") == "single_stream":
        for who in ("runner", "baseline"):
            n = (load.get(who) or {}).get("n")
            if n is not None and n < spec.load.requests:
                tail = _p99_basis(n)
                said.append(f"load: the {who}'s single stream ran {n} of load.requests={spec.load.requests} requests "
                            f"in its share of the budget (measure.budget_s={spec.measure.budget_s:g}): {tail}; "
                            "raise measure.budget_s for more")
        return said
    bound_us = (load.get("p99_ms") or 0) * 1e3
    for who in ("runner", "baseline"):
        # Points failed on their p99 while the loop's own timer ran late by half the bound or
        # more: on a busy VM a model 7% busy "could not hold 2 ms", its issue slack p99 3 ms.
        # (Only where the lateness could account for the failure: a p99 of 345 us against a 10 us
        # bound, with 15 us of lateness, had been put down to the host.)
        late = [pt for pt in (load.get(who) or {}).get("points") or [] if bound_us and not pt.get("valid")
                and "p99 " in (pt.get("why") or "") and ((pt.get("slack_us") or {}).get("p99") or 0) >= LATE_SHARE * bound_us
                and ((pt.get("latency_us") or {}).get("p99") or math.inf) - pt["slack_us"]["p99"] <= bound_us]
        if late:
            worst = max(pt["slack_us"]["p99"] for pt in late) / 1e3
            said.append(f"load: at {len(late)} of the {who}'s points that failed on p99, the runner's own timer issued "
                        f"requests late by up to {worst:.3g} ms at p99 (slack: how late a request that found a free "
                        f"server was issued), {LATE_SHARE:.0%} of load.p99_ms={load['p99_ms']:g} or more: the host ran "
                        "the runner's loop late (a busy host?), so the bound may have failed on the host, not on the "
                        "model; measure on a quiet host")
    for who in ("runner", "baseline"):
        part = load.get(who) or {}
        if part.get("stopped_by") == "bound":
            last = part["points"][-1]
            said.append(f"load: no rate can hold load.p99_ms={load['p99_ms']:g} for the {who}: at {rate_text(last['rate'])} "
                        f"requests/s even its fastest request took {last['service_min_us']:,.1f} us from its issue to its "
                        "completion, so one request's own latency is past the bound and a lower rate, which only "
                        "shortens the queue, would not bring it under; raise load.p99_ms")
        if part.get("stopped_by") != "budget":
            continue
        best, failed = part.get("max_rate"), part.get("lowest_invalid_rate")
        if best is not None and failed is not None:
            known = f"the highest valid rate is between {rate_text(best)} and {rate_text(failed)} requests/s"
        elif best is not None:
            known = f"the highest valid rate is {rate_text(best)} requests/s or more (every rate tried was valid)"
        else:
            known = f"no rate tried held the bound (the lowest, {rate_text(failed)} requests/s, did not)" \
                if failed is not None else "no point fit in the time left"
            fastest = ((part.get("points") or [{}])[-1]).get("service_min_us")
            if failed is not None and fastest is not None and bound_us and fastest > bound_us:
                # One such point does not end the search (two in a row do): said, as a likely cause.
                known += (f"; even its fastest request took {fastest:,.1f} us from issue to completion, past the "
                          "bound: load.p99_ms may be below one request's own latency")
        points = part.get("points") or []
        # A shorter load.duration_s shortens only points it sets the length of: not those whose
        # MIN_REQUESTS arrivals take longer (it had been offered where it could not help).
        shorter = any(spec.load.duration_s * (p.get("rate") or 0) > MIN_REQUESTS for p in points)
        said.append(f"load: the budget (measure.budget_s={spec.measure.budget_s:g}) ended the {who}'s rate search "
                    f"after {len(points)} point{'s' if len(points) != 1 else ''}, short of load.resolution="
                    f"{spec.load.resolution:g}: {known}; raise measure.budget_s" + (", or lower load.duration_s" if shorter else ""))
    return said


# An offline job's throughput keys, there (null) even when no pass finished.
THROUGHPUT_KEYS = ("throughput_requests_per_s", "throughput_samples_per_s", "throughput_requests_per_s_repeats",
                   "throughput_cv")


# Distinct requests all answered alike, from this many on, are said (the first chunk on a CPU
# has 2 requests: 1 distinct pair says little).
SAME_ANSWER_REQUESTS = 3

def summarize_measurement(spec: RunSpec, m: Measurement) -> Summary:
    batch = m.samples_per_request or spec.model.batch  # real samples: padding is not served
    fig: dict[str, Any] = {}
    warnings: list[str] = []
    notes: list[str] = []
    # After a step in the host's speed, the throughput's figures are those of the passes after
    # it (stats.steady_start); the baseline's and the ceiling's have no witness of the host.
    rates = _rates(m.throughput)
    speeds = host_speeds(m)
    start = steady_start(rates, speeds, spec.measure.min_repeats)
    steady = rates[start:]
    fig.update(dict.fromkeys(THROUGHPUT_KEYS))  # None when no pass finished (a Ctrl-C, say), or none ran (load)
    # Each kind of pass serves its own part of the plan (with buckets, its own mix of sizes): its
    # samples are those it served; the plan's mean where a pass's were not recorded.
    def served_batch(passes: list[Pass], samples: list[int], first: int = 0) -> float:
        served = sum(n for n, _ in passes[first:])
        return sum(samples[first:]) / served if served and len(samples) == len(passes) else batch

    throughput_batch = served_batch(m.throughput, m.throughput_samples, start)
    fig.update(_rate_figures("throughput", m.throughput, throughput_batch, start, m.throughput_samples))
    fig.update(_rate_figures("baseline", m.baseline, served_batch(m.baseline, m.baseline_samples), 0, m.baseline_samples))
    fig.update(_rate_figures("ceiling", m.ceiling, served_batch(m.ceiling, m.ceiling_samples), 0, m.ceiling_samples))
    # The speedup and the efficiency compare work done: with buckets, samples/s of what each kind
    # served (its requests/s are of another mix; the same divisor a pass without buckets), pass by
    # pass for their intervals.
    mixed = spec.model.bucketed and all(len(samples) == len(passes) for passes, samples in (
        (m.throughput, m.throughput_samples), (m.baseline, m.baseline_samples), (m.ceiling, m.ceiling_samples)))
    unit = "samples" if mixed else "requests"

    def per_pass(passes: list[Pass], samples: list[int]) -> list[float]:
        return (_sample_rates(passes, samples) or []) if mixed else _rates(passes)

    work = per_pass(m.throughput, m.throughput_samples)
    if m.baseline and m.throughput:
        base = per_pass(m.baseline, m.baseline_samples)
        if spec.measure.interleave:
            # Paired per repeat (the passes ran back to back), then the median of the ratios.
            paired = [t / b for t, b in zip(work, base, strict=False)]
            fig["speedup_vs_baseline"] = median(paired)
            fig["speedup_vs_baseline_repeats"] = paired
            # The pairs' own spread: a step in the host's speed moves both passes of a pair.
            fig.update(ratio_figures("speedup_vs_baseline", fig["speedup_vs_baseline"], paired))
        else:
            fig["speedup_vs_baseline"] = fig[f"throughput_{unit}_per_s"] / fig[f"baseline_{unit}_per_s"]
            fig.update(ratio_figures("speedup_vs_baseline", fig["speedup_vs_baseline"], work[start:], base))
    if m.ceiling and m.throughput:
        ceiling = per_pass(m.ceiling, m.ceiling_samples)
        if spec.measure.interleave:
            # Paired as the speedup is: each ceiling pass ran beside its throughput pass, in the
            # same state of the host (the throughput's steady passes against every ceiling pass
            # had compared two windows across a step).
            paired = [t / c for t, c in zip(work, ceiling, strict=False)]
            fig["efficiency_vs_ceiling_repeats"] = paired
            fig.update(ratio_figures("efficiency_vs_ceiling", median(paired), paired))
        else:
            fig.update(ratio_figures("efficiency_vs_ceiling",
                                     fig[f"throughput_{unit}_per_s"] / fig[f"ceiling_{unit}_per_s"],
                                     work[start:], ceiling))

    if m.latency is not None:
        stages = STAGES if spec.is_cuda else HOST_STAGES
        for stage, marks in stages.items():
            fig[f"latency_{stage}_us"] = summarize(_stage_us(m.latency, marks))
        fig["latency_clock"] = "cuda events" if spec.is_cuda else "host"
        if "bucket" in m.latency:
            fig["buckets"] = _bucket_figures(m.latency, spec.is_cuda)
    if spec.model.bucketed:
        fig["samples_per_request"] = batch  # the plan's mean
        fig["throughput_samples_per_request"] = throughput_batch  # what the throughput's passes served
        fig["padding_waste"] = m.padding_waste if spec.graph else 0.0  # eager runs the real sizes
        # What graphs would pad on this plan, so an eager (or CPU) job's 0% is read as such.
        fig["padding_waste_in_graphs"] = m.padding_waste
    host = m.host_s or {"wait": [], "copy": [], "launch": []}
    for step in ("wait", "copy", "launch"):
        fig[f"host_{step}_us"] = summarize(s * 1e6 for s in host[step])
    # What the submitting thread spends per request apart from waiting: the copy and the launch.
    fig["host_enqueue_us"] = summarize((c + lau) * 1e6 for c, lau in zip(host["copy"], host["launch"], strict=True))
    fig["baseline_latency_us"] = summarize(s * 1e6 for s in m.baseline_latency_s)
    fig["warmup_time_ms"] = m.phases_s.get("warmup", m.warmup_s) * 1e3  # (an interrupted warm-up's too)
    fig["measure_time_s"] = m.elapsed_s
    fig["measure_phases_s"] = dict(m.phases_s)  # where the measuring time went
    fig["measure_estimate_s"] = m.estimate_s  # of the timed phases, after the check and the warm-up
    fig["measure_estimate_most_s"] = m.estimate_most_s
    fig["measure_after_estimate_s"] = m.after_estimate_s  # what they took
    fig["repeats_stop_reason"] = m.stop_reason
    fig["pass_cap_ms"] = None if m.pass_cap_s is None else m.pass_cap_s * 1e3
    fig["throughput_stdrel"] = stdrel(steady) if len(steady) > 1 else None
    fig["steady_state_allocations"] = m.steady_state_allocations
    fig["static_buffers_moved"] = m.buffers_moved

    if m.load is not None:
        fig.update(_load_figures(m.load))
        warnings += _load_warnings(spec, m.load)

    if m.check is not None:
        fig["check_requests"] = m.check.requests
        fig["check_mismatches"] = m.check.mismatches
        fig["check_same_responses"] = m.check.same_responses
        fig["check_padded_requests"] = m.check.padded_requests  # compared on their real rows in a larger bucket
        if m.check.distinct_requests >= SAME_ANSWER_REQUESTS and m.check.same_responses == m.check.distinct_requests:
            # Eager answers alike, so the check passes: a model that returns its first answer
            # (or a parameter) read 279k requests/s as ok.
            warnings.append(
                f"each of the check's {m.check.distinct_requests} requests that differ from the first of their size "
                "got the same response as it (every output equal): the model's answer does not follow "
                "its input (a cached first answer, a constant, a parameter returned?); the figures time that"
            )
        fig["check_max_rel_err"] = m.check.max_rel_err if math.isfinite(m.check.max_rel_err) else None
        fig["check_tolerance_rel"] = m.check.tolerance_rel
        fig["check_bad_requests"] = m.check.bad_requests
        if m.check.eager_spread is not None:  # two eager forwards of the first mismatching request
            fig["check_eager_spread"] = m.check.eager_spread if math.isfinite(m.check.eager_spread) else None
        fig["check_nonfinite_requests"] = m.check.nonfinite_requests
        if m.check.nonfinite_requests:
            warnings.append(
                f"eager's own output held NaN or inf in {m.check.nonfinite_requests} of the {m.check.requests} "
                "requests checked (a row masked out entirely, or an overflow in this dtype?); the schedule's held "
                "the same at the same places, and the check compared the finite values"
            )

    if not spec.check:
        warnings.append("outputs were not compared with eager (check=false): the figures are unverified")
    # Did the hypervisor take CPU time from the host during the throughput passes?
    stolen = [x for x in m.host_stolen if x is not None]
    fig["host_stolen_repeats"] = list(m.host_stolen) or None
    fig["host_stolen_max"] = max(stolen) if stolen else None
    # Cores' worth of CPU other processes kept busy on this job's CPUs during the throughput
    # passes: per pass (signed: the ticks' rounding), and over the passes the figures rest on,
    # summed before it is clamped (job._busy_during_warning weighs it against the cores this job
    # needs, and the ticks' resolution).
    per_pass_others = m.host_others[: len(rates)]
    fig["host_others_cores_repeats"] = [None if x is None else x[0] / x[1] for x in per_pass_others] or None
    fig["host_others_cores"], fig["host_others_cpus"], fig["host_others_tick_cores"] = \
        _others_figures(per_pass_others[start:])
    # The same around the baseline's and the ceiling's passes (all of them, as their figures):
    # other work during the baseline's alone reads as a larger speedup.
    for side in ("baseline", "ceiling"):
        cores, _, grain = _others_figures((m.side_others.get(side) or [])[: len(getattr(m, side))])
        fig[f"host_others_cores_{side}"], fig[f"host_others_tick_cores_{side}"] = cores, grain
    # A load's figures rest on its own passes (no throughput pass runs then): watched alike,
    # over all its points (a search's next step follows each).
    for side in ("load", "load_baseline"):
        cores, cpus, grain = _others_figures(m.side_others.get(side) or [])
        fig[f"host_others_cores_{side}"], fig[f"host_others_tick_cores_{side}"] = cores, grain
        fig["host_others_cpus"] = fig["host_others_cpus"] or cpus
    # How fast the host ran Python before each throughput pass: a host-bound schedule follows it.
    canary_s = list(m.host_canary_s[: len(rates)])  # an interrupted pass has its canary, not its rate
    fig["host_canary_us_repeats"] = [s * 1e6 for s in canary_s] or None
    fig["host_canary_cv"] = cv(speeds) if speeds else None
    fig["host_canary_correlation"] = correlation(rates, speeds) if speeds else None
    if start:
        warnings.append(_step_warning(rates, speeds or [], start))
    warnings += _host_apart(spec, fig, canary_s[start:], m.side_canary_s)
    threshold = spec.measure.cv_warn
    for name in ("throughput", "baseline", "ceiling"):
        value: Optional[float] = fig.get(f"{name}_cv")
        if value is not None and value > threshold:
            host = ""
            # Said where it shows as 1% or more: "took up to 0%" (0.27%) had explained nothing.
            if name == "throughput" and (fig["host_stolen_max"] or 0) >= 0.005:
                host = f"; the hypervisor took up to {fig['host_stolen_max']:.0%} of the busy CPU time in a pass"
            counted = len(fig[f"{name}_requests_per_s_repeats"])
            if name == "throughput":  # over the passes the cv is of
                counted = len(steady)
                window = (speeds or [])[start:]
                host += _host_speed_clause(cv(window) if window else None,
                                           correlation(steady, window) if window else None, counted, threshold)
            warnings.append(
                f"{name} varied by {value:.1%} across {counted} passes "
                f"(above measure.cv_warn={threshold:.0%}): differences smaller than that are noise{host}"
            )
    # The least a pass runs: a turn of the ring (the ceiling replays each lane; the baseline is one
    # request at a time).
    ring = spec.streams * spec.slots
    for name, passes, cap_s, least, caps_s in (
            ("", m.throughput, m.pass_cap_s, ring, m.throughput_caps_s),
            (" ceiling", m.ceiling, m.side_cap_s.get("ceiling"), spec.streams, m.side_caps_s.get("ceiling")),
            (" baseline", m.baseline, m.side_cap_s.get("baseline"), 1, m.side_caps_s.get("baseline"))):
        cut = _cut_passes(spec.measure, name, passes, cap_s, least, caps_s)
        warnings += [cut] if cut else []
    if m.stop_reason == "budget":
        warnings.append(
            f"the budget (measure.budget_s={spec.measure.budget_s:g}) ended the repeats after {len(rates)} "
            f"(asked: {spec.measure.min_repeats} to {spec.measure.repeats}, until the relative standard error "
            f"is under {spec.measure.stdrel:g}); raise measure.budget_s for more"
        )
    warnings += ([m.slow] if m.slow else []) + list(m.skipped.values())
    if m.check is not None:
        shared = m.check.seconds is not None and math.isfinite(m.check.allowance_s)
        took = f" (it took {m.check.seconds:.1f} s; its share: {m.check.allowance_s:.1f} s)" if shared else ""
        overran = shared and m.check.seconds > CHECK_OVERRUN * m.check.allowance_s + 0.25
        if m.check.requests < m.check.requested:
            # Cut by the budget past most of what was asked (or a whole quick check): a note. The
            # README's default job on a CPU compared about 1,370 of 2,048, and warned of it
            # every time; quick's 124 of 128 on nearly every quick CPU job.
            (warnings if check_short(m.check.requests, m.check.requested) else notes).append(
                f"the check compared {m.check.requests} of measure.check_requests={m.check.requested} requests "
                f"before its share of the budget ran out{'' if overran else took}"
            )
        if overran:
            # Far past its share, cut or not: its later chunks were sized by a pace the host did
            # not keep (a quick job's 0.5 s share took 2.2 s); or its first chunk, which always
            # runs, was all it had and took that long. Said as a warning however many it compared.
            past = (f"the check took {m.check.seconds:.1f} s, past its {m.check.allowance_s:.1f} s share of "
                    f"measure.budget_s={spec.measure.budget_s:g}")
            if m.check.requests <= first_chunk(spec, spec.streams * spec.slots, m.check.requested):
                warnings.append(f"{past}: its first {m.check.requests} request(s) always run, each with its eager "
                                "reference")
            else:
                warnings.append(f"{past}: the host ran slower than its first requests promised")
    if m.kept_share_s is not None:
        warnings.append(kept_share_text(m.kept_share_s, spec.measure.budget_s))
    warnings += _latency_cut(spec, fig, m)
    # Past the most estimated and past what the budget had left then: the estimate prices every
    # kind of pass at the throughput's pace, and a slow baseline's passes may rightly run longer
    # within the budget (a large budget, a large speedup).
    bound = max(m.estimate_most_s or 0.0, m.budget_left_s or 0.0)
    if m.after_estimate_s is not None and m.estimate_most_s is not None \
            and m.after_estimate_s > ESTIMATE_OVERRUN * bound + 0.5:
        warnings.append(f"the timed phases took {m.after_estimate_s:.1f} s, past the {m.estimate_most_s:.1f} s at most "
                        f"estimated before them from the warm-up's pace and the {m.budget_left_s or 0.0:.1f} s the "
                        "budget had left: the job ran slower than its start promised (the host's load or speed "
                        "changed?)")
    warnings += _loops_disagree(spec, fig)
    for name in ("speedup_vs_baseline", "efficiency_vs_ceiling"):
        if fig.get(f"{name}_within_noise") and fig.get(f"{name}_interval"):
            low, high = fig[f"{name}_interval"]
            warnings.append(f"{name} {fig[name]:.2f} is within noise (its 95% interval {low:.2f}-{high:.2f} covers 1.0)")
    if fig.get("efficiency_vs_ceiling") and fig["efficiency_vs_ceiling"] > 1.0:
        # Beyond noise only where the interval says so: with one pass a side the noise is unknown.
        if fig.get("efficiency_vs_ceiling_within_noise") is False:
            warnings.append("the schedule beat its device-only ceiling beyond noise: the ceiling does not bound it")
        elif fig.get("efficiency_vs_ceiling_within_noise") is None:
            warnings.append(f"the schedule measured {fig['efficiency_vs_ceiling']:.2f} of its device-only ceiling, "
                            "on one pass of a side: its noise is unknown, more repeats would tell")
    if m.steady_state_allocations and spec.graph and m.graphs_ran is not False:  # eager allocates as it goes
        warnings.append(f"{m.steady_state_allocations} device allocations during the timed graph passes")
    if m.buffers_moved:
        warnings.append("a static buffer changed address during the run")
    for key in FIGURE_KEYS:  # a figure not measured is null, never missing (reading it raised KeyError)
        fig.setdefault(key, None)
    return Summary(fig, warnings, notes)


SERVER_KEYS = ("server_max_rate", "baseline_server_max_rate", "server_max_rate_vs_baseline", "server_valid",
               "server_latency_us", "server_achieved_rate")
SINGLE_STREAM_KEYS = ("single_stream_latency_us", "baseline_single_stream_latency_us", "single_stream_speedup")


def _figure_keys() -> tuple[str, ...]:
    keys = list(THROUGHPUT_KEYS)
    for prefix in ("throughput", "baseline", "ceiling"):
        keys += [f"{prefix}_{k}" for k in ("requests_per_s", "samples_per_s", "requests_per_s_repeats", "cv", "samples_cv",
                                           "requests")]
    keys += ["throughput_cv_all_repeats", "throughput_steady_from_repeat"]
    for name in ("speedup_vs_baseline", "efficiency_vs_ceiling"):
        keys += [name, f"{name}_interval", f"{name}_within_noise"]
    keys += [f"latency_{stage}_us" for stage in {**STAGES, **HOST_STAGES}] + ["latency_clock"]
    keys += [f"check_{k}" for k in ("requests", "mismatches", "same_responses", "padded_requests", "max_rel_err",
                                    "tolerance_rel", "bad_requests", "nonfinite_requests")]  # null with check=false
    return tuple(dict.fromkeys(keys + list(SINGLE_STREAM_KEYS) + list(SERVER_KEYS)))


# The headline figures every result holds, whatever its scenario and device: null where not
# measured (a latency pass the budget skipped, no baseline, the CPU's ceiling, the closed-loop
# passes of a load scenario, the other device's names of the latency stages), so a script that
# reads one key over many results never meets a KeyError.
FIGURE_KEYS = _figure_keys()


def _p99_basis(n: int) -> str:
    """What a p99 from `n` latencies rests on, as a cut pass's warning says it."""
    return "its p99 lies between its two largest latencies" if n < 100 else f"its p99 rests on {n} requests"


def _latency_cut(spec: RunSpec, fig: dict[str, Any], m: Measurement) -> list[str]:
    """The latency passes end at their share of the budget: one that served fewer requests
    than measure.latency_requests says what its tail rests on (the default CPU job's served
    40-142 of 2000, and its p99 was printed as if from 2000)."""
    asked = spec.measure.latency_requests
    said = []
    for who, key in (("latency pass", "latency_e2e_us"), ("baseline's latency pass", "baseline_latency_us")):
        n = (fig.get(key) or {}).get("n")
        if n is None or not latency_short(n, asked):
            continue
        tail = _p99_basis(n)
        buckets = [part["requests"] for part in (fig.get("buckets") or {}).values()] if who == "latency pass" else []
        if buckets and min(buckets) < 100:
            tail += f"; per bucket, on as few as {min(buckets)}"
        said.append(f"the {who} served {n} of measure.latency_requests={asked} requests in its share of the budget "
                    f"(measure.budget_s={spec.measure.budget_s:g}): {tail}; raise measure.budget_s for more")
    return said


# How far past the most it was estimated to take the timed phase may run before the job says so.
ESTIMATE_OVERRUN = 1.25
# A check that compared every request is said to have overrun past this many times its share.
CHECK_OVERRUN = 2.0


# How far apart, on the CPU, the throughput passes' rate and the latency pass's (one over its
# mean latency) may lie before the job says so: they run the same one-at-a-time loop, the
# latency pass with four clock reads more per request (and with buckets, another part of the plan).
LOOPS_APART = 2.0


def _loops_disagree(spec: RunSpec, fig: dict[str, Any]) -> list[str]:
    """On the CPU the throughput passes and the latency pass are one loop, timed two ways: far
    apart, the host's load changed between them. A job beside another process read 22
    requests/s in its passes and 846 from its latency pass, while every host check, taken as it
    began, read quiet."""
    rate = fig.get("throughput_requests_per_s")
    mean_us = (fig.get("latency_e2e_us") or {}).get("mean")
    if spec.is_cuda or spec.model.bucketed or not rate or not mean_us:  # buckets: other mixes of sizes
        return []
    latency_rate = 1e6 / mean_us
    apart = max(rate, latency_rate) / min(rate, latency_rate)
    if apart < LOOPS_APART:
        return []
    return [f"{LOOPS_APART_SAID}{rate_text(rate)} requests/s) and the latency pass ({rate_text(latency_rate)} "
            f"requests/s, from its mean latency) ran the same one-at-a-time loop on the CPU, yet differ {apart:.1f}x: "
            "the host's load or speed changed during the job (another process?); rerun it on a quiet host"]


# Correlation from which, over at least so many passes, the passes are said to have followed
# the host's speed (over three points a correlation says little).
FOLLOWED_HOST = 0.5
FOLLOWED_HOST_PASSES = 4


def _host_speed_clause(canary_cv: Optional[float], r: Optional[float], passes: int, threshold: float) -> str:
    """For the throughput cv warning: did the host's own speed move over the same passes?"""
    if canary_cv is None or canary_cv <= threshold:
        return ""
    clause = (f"; the host's own speed varied by {canary_cv:.1%} over the same passes (a fixed Python loop "
              f"timed before each")
    if r is None:
        return clause + ")"
    clause += f"; correlation with the passes' rates {r:.2f})"
    return clause + (": the rates followed the host" if r >= FOLLOWED_HOST and passes >= FOLLOWED_HOST_PASSES else "")
