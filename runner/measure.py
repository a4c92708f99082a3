"""Measurement as fixed, named phases within one time budget. Raw samples only; summarizing
lives in summary.py.

    check      distinct requests through the request protocol vs eager (before any timing)
    warm-up    untimed schedule for `warmup_ms`, or its budget share (clocks ramp, graphs upload)
    repeats    the schedule's throughput passes back to back until the relative standard error
               of their mean is under `stdrel` (at least `min_repeats`, at most `repeats`;
               after a step in the host's speed, of the passes after it: stats.steady_start);
               then as many ceiling passes, then as many baseline passes, each block after a
               short warm-up of its own. (`measure.interleave` runs baseline, schedule and
               ceiling in turn per repeat instead.)
    host time  the throughput loop with a host clock between the protocol's steps
    latency    the schedule with CUDA events at every stage of every request

Every phase gets a share of `measure.budget_s` (time a phase leaves unused goes to the ones
after it); a pass never runs past `max_pass_ms` nor past its phase's share, and always runs at
least one turn of the ring. Ctrl-C ends the measurement with what has finished.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from runner import environment, schedule
from runner import spec as rules  # its REFUSE_* read at each use: tests scale them down
from runner.build import ProbeLimit, Workload
from runner.check import CheckResult, check_compute_graphs, check_schedule, first_chunk, probe_reused
from runner.cli import hold_interrupts, interrupts_restored
from runner.errors import ConfigError
from runner.inputs import bucket_of
from runner.lanes import Lanes
from runner.load import (
    MAX_ARRIVALS,
    MIN_REQUESTS,
    Point,
    Search,
    at_rate,
    judge,
    least_length_s,
    open_loop,
    past_one_request,
    poisson_arrivals,
    search_length_s,
    search_rate,
)
from runner.printer import rate_text
from runner.progress import PROGRESS, Progress
from runner.protocol import open_servers
from runner.schedule import no_gc
from runner.spec import RunSpec
from runner.stats import steady_start, summarize

log = logging.getLogger(__name__)

Pass = tuple[int, float]  # (requests, seconds)

# Shares of the budget; a phase that does not run gives its share to the others.
SHARES = {"check": 0.20, "warmup": 0.05, "throughput": 0.35, "ceiling": 0.10, "baseline": 0.15, "latency": 0.15,
          "load": 0.50, "load_baseline": 0.25}


class Budget:
    """Splits a time budget among the phases still to run."""

    def __init__(self, total_s: float, phases: list[str]) -> None:
        self.start = time.perf_counter()
        self.end = self.start + total_s
        self.pending = {p: SHARES[p] for p in phases}
        self.total_s, self.shares = total_s, dict(self.pending)

    def nominal(self, *names: str) -> float:
        """Seconds the phases `names` would have together had no phase before them overrun."""
        total = sum(self.shares.values())
        return self.total_s * sum(self.shares.get(name, 0.0) for name in names) / total if total > 0 else 0.0

    def allowance(self, *names: str) -> float:
        """Seconds the phases `names` may take together: their shares of what is left, among the
        phases not yet run. (Phases that run in turn take their shares in one call: one at a
        time, each would be a share of the same time left.)"""
        share = sum(self.pending.pop(name, 0.0) for name in names)  # 0: not a phase of this job, or given already
        if share == 0.0:
            return 0.0
        total = share + sum(self.pending.values())
        left = max(0.0, self.end - time.perf_counter())
        return left * share / total if total > 0 else left

    def drop(self, name: str) -> None:
        """A phase that will not run after all: its share goes to the phases still to run (a
        ceiling dropped after the check had kept its share, and the baseline's block, the latency
        passes and the throughput's shares were cut by it, the rest of the budget unused)."""
        self.pending.pop(name, None)
        self.shares.pop(name, None)  # nor counted in the others' nominal shares

    def elapsed(self) -> float:
        return time.perf_counter() - self.start


@dataclass
class Measurement:
    check: Optional[CheckResult] = None
    warmup_s: float = 0.0
    throughput: list[Pass] = field(default_factory=list)
    baseline: list[Pass] = field(default_factory=list)
    ceiling: list[Pass] = field(default_factory=list)
    host_s: dict[str, list[float]] = field(default_factory=dict)  # wait, copy, launch per request
    samples_per_request: Optional[float] = None  # real samples per request over the timed plan
    throughput_samples: list[int] = field(default_factory=list)  # real samples each throughput pass served
    baseline_samples: list[int] = field(default_factory=list)  # the same for the baseline's passes
    ceiling_samples: list[int] = field(default_factory=list)  # and the ceiling's
    padding_waste: Optional[float] = None  # padded elements per real element (buckets only)
    latency: Optional[dict] = None  # from schedule.latency_pass
    baseline_latency_s: list[float] = field(default_factory=list)
    steady_state_allocations: Optional[int] = None  # device allocations during timed passes
    graphs_ran: Optional[bool] = None  # whether those passes replayed graphs
    buffers_moved: Optional[bool] = None  # did any static buffer change address?
    stop_reason: Optional[str] = None  # why the repeats stopped: stdrel, repeats, budget
    estimate_s: Optional[float] = None  # the timed phase's duration, as estimated before it (its least)
    estimate_most_s: Optional[float] = None  # the most it was estimated to take
    budget_left_s: Optional[float] = None  # the time the budget had left for it then (plus a pass)
    after_estimate_s: Optional[float] = None  # what it took: from the estimate to the end of measuring
    pass_cap_s: Optional[float] = None  # the longest a throughput pass could run, after the budget
    throughput_caps_s: list[float] = field(default_factory=list)  # what each could run: less at the budget's end
    side_cap_s: dict[str, float] = field(default_factory=dict)  # the same for the ceiling's and the baseline's
    side_caps_s: dict[str, list[float]] = field(default_factory=dict)  # what each of theirs could run
    # The timed passes kept their shares past the budget's end: (the throughput's, all of theirs).
    kept_share_s: Optional[tuple[float, float]] = None
    load: Optional[dict] = None  # single_stream and server scenarios: see measure_load
    phases_s: dict[str, float] = field(default_factory=dict)  # seconds each phase took
    skipped: dict[str, str] = field(default_factory=dict)  # passes the budget could not hold, and why
    slow: Optional[str] = None  # said before measuring when the least this job can do overruns its budget
    # Per throughput pass, the share of busy CPU time the hypervisor took (a VM's steal time).
    host_stolen: list[Optional[float]] = field(default_factory=list)
    # Per throughput pass, (CPU seconds other processes ran on this job's CPUs, the pass's seconds,
    # how many CPUs) (environment.others_cores).
    host_others: list[Optional[tuple[float, float, int]]] = field(default_factory=list)
    # Per throughput pass, seconds of a fixed Python loop timed just before it (the host's speed).
    host_canary_s: list[float] = field(default_factory=list)
    # The same before each ceiling and baseline pass: in blocks, a ratio of two blocks run in two
    # host states is the host's as much as the schedule's.
    side_canary_s: dict[str, list[float]] = field(default_factory=dict)
    # And other processes' CPU around each ceiling and baseline pass, as `host_others`: a busy
    # host during the baseline's passes alone reads as a larger speedup. A load's passes (each
    # point of a server's, a single stream's one) under "load" and "load_baseline".
    side_others: dict[str, list[Optional[tuple[float, float, int]]]] = field(default_factory=dict)
    interrupted: Optional[KeyboardInterrupt] = None  # Ctrl-C (or SIGTERM, raised as one): what finished is kept
    elapsed_s: float = 0.0


def kept_share_text(kept: tuple[float, float], budget_s: float) -> str:
    throughput_s, all_s = kept
    shares = f"{all_s:.1f} s, the throughput's {throughput_s:.1f} s" if all_s > throughput_s + 0.05 else f"{all_s:.1f} s"
    return (f"the phases before the timed passes overran their shares of measure.budget_s={budget_s:g}: the timed "
            f"passes kept theirs ({shares}), past the budget's end")


def _allocation_count(device: torch.device) -> int:
    return int(torch.cuda.memory_stats(device).get("allocation.all.allocated", 0))


def stdrel(rates: list[float]) -> float:
    """Relative standard error of the mean of the passes: cv / sqrt(n) (nvbench's stdrel
    criterion stops on the cv itself)."""
    if len(rates) < 2:
        return math.inf
    return statistics.stdev(rates) / statistics.fmean(rates) / math.sqrt(len(rates))


def run_check(spec: RunSpec, workload: Workload, lanes: Lanes, max_duration_s: float = math.inf) -> CheckResult:
    result = check_schedule(spec, workload, lanes, spec.measure.check_requests, max_duration_s)
    if result.passed:
        # As the summary prints it: the error had read 0.00e+00 here and 0.0e+00 there.
        log.info("check: %d requests match eager (max rel err %.1e, tolerance %.0e)",
                 result.requests, result.max_rel_err, result.tolerance_rel)
    else:
        log.error(
            "CHECK FAILED: %d of %d requests differ from eager (max rel err %.3g > %.0e)",
            result.mismatches, result.requests, result.max_rel_err, result.tolerance_rel,
        )
    return result


def measure(spec: RunSpec, workload: Workload, lanes: Lanes, out: Optional[Measurement] = None) -> Measurement:
    """Fills `out` (a fresh Measurement if None) phase by phase, so whoever holds it keeps what
    finished when a phase fails or is interrupted."""
    out = out if out is not None else Measurement()
    # One full collection, then the survivors frozen out of the collector's view: the passes
    # run with the collector off, and what runs between them stays cheap.
    gc.collect()
    gc.freeze()
    progress = Progress(spec.measure.budget_s)
    out.phases_s = progress.phases_s
    began = time.perf_counter()
    # After an interrupt, further ones wait until the lanes are settled; the caller, which keeps
    # `out`, holds them again while it records (run_job), and finds the handlers as they were.
    with interrupts_restored():
        try:
            _measure(spec, workload, lanes, out, progress)
        except KeyboardInterrupt as exc:
            hold_interrupts()
            out.interrupted = exc
            out.elapsed_s = time.perf_counter() - began  # what ran until the Ctrl-C (the phases set it at their end)
            lanes.synchronize()
            lanes.restore_default_stream()
        finally:
            progress.close()
            gc.unfreeze()
            out.elapsed_s = out.elapsed_s or time.perf_counter() - began  # a failure's too: what ran until it
    return out


def _measure(spec: RunSpec, workload: Workload, lanes: Lanes, out: Measurement, progress: Progress) -> None:
    m = spec.measure
    device = lanes.device
    sources, keys, forward = workload.sources, workload.keys, workload.reference  # the baseline is uncompiled
    out.samples_per_request, out.padding_waste = workload.mean_batch, workload.padding_waste
    pointers = [lane.buffer_pointers() for lane in lanes]
    offline = spec.load.scenario == "offline"
    phases = [p for p, on in (("check", spec.check), ("warmup", True), ("throughput", offline),
                              ("ceiling", offline and m.ceiling), ("baseline", offline and spec.baseline),
                              ("latency", offline and m.latency_requests > 0), ("load", not offline),
                              ("load_baseline", not offline and spec.baseline)) if on]
    budget = Budget(m.budget_s, phases)
    min_s, max_s = m.min_duration_ms / 1e3, m.max_pass_ms / 1e3

    ring = len(lanes.ring)
    checked = first_chunk(spec, ring, m.check_requests) if spec.check else 0
    _tell_if_slow(spec, workload, lanes.is_cuda, ring, checked, out)

    with torch.no_grad():
        ceiling_on = m.ceiling
        if spec.check:
            with progress.phase("check"):
                out.check = run_check(spec, workload, lanes, budget.allowance("check"))
                differs = check_compute_graphs(spec, workload, lanes) if m.ceiling and offline else None
            if differs:
                ceiling_on, out.skipped["ceiling"] = False, differs
                budget.drop("ceiling")
                log.warning("%s", differs)

        warm_allowance = min(m.warmup_ms / 1e3, budget.allowance("warmup"))
        # Off CUDA there are no clocks to ramp nor graphs to upload: when the check has run the
        # same code and one turn of the ring would overrun the warm-up's time, it is skipped.
        served = out.check.requests if out.check is not None else 0
        forwards = 2 * served - (out.check.reused_references if out.check is not None else 0)
        per_request_s = progress.phases_s.get("check", 0.0) / forwards if served else 0.0
        if not lanes.is_cuda and served and _overruns(ring * per_request_s, warm_allowance, m.budget_s):
            warm_n, warm_s = served, per_request_s * served  # the check's pace, for the estimates below
            out.skipped["warm-up"] = (f"warm-up skipped: the check's {served} requests ran the same code, and "
                                      f"{ring} more (about {ring * per_request_s:.1f} s) would overrun its time")
            log.warning("%s", out.skipped["warm-up"])
        else:
            with progress.phase("warmup"):
                warm_n, warm_s = schedule.throughput_pass(lanes, sources, keys, 1, warm_allowance)
        out.warmup_s = progress.phases_s.get("warmup", 0.0)
        if not offline:
            out.load = measure_load(spec, workload, lanes, budget, warm_n / max(warm_s, 1e-9), progress, out)
            out.buffers_moved = pointers != [lane.buffer_pointers() for lane in lanes]
            out.elapsed_s = budget.elapsed()
            return

        # Each pass: at least min_duration, at most max_pass, and min_repeats of them must fit.
        # Interleaved, the three kinds of pass share one window, taken at once.
        timed = ("throughput", "ceiling", "baseline") if m.interleave else ("throughput",)
        allowance, nominal = budget.allowance(*timed), budget.nominal(*timed)
        if allowance < 0.5 * nominal:
            # The phases before overran (a host slowed during the check): the timed passes keep
            # their shares (the baseline's and the ceiling's too), past the budget's end, rather
            # than time a few requests (a quick job's figure had rested on one request of 7 ms).
            out.kept_share_s = (budget.nominal("throughput"), budget.nominal("throughput", "ceiling", "baseline"))
            log.warning("%s", kept_share_text(out.kept_share_s, m.budget_s))
            allowance = nominal
        cap = min(max_s, allowance / m.min_repeats)
        per_request_s = warm_pace_s = warm_s / max(1, warm_n)
        turn_s = ring * per_request_s  # no pass is shorter than one turn of the ring, whatever the cap
        expected_pass = max(turn_s, min(cap, max(min_s, m.min_requests * per_request_s)))
        kinds = 1 + ceiling_on + spec.baseline
        low = m.min_repeats * expected_pass * kinds
        # Within the time left, but never below one pass of each kind: those run even past the budget.
        left_s = max(0.0, budget.end - time.perf_counter(), out.kept_share_s[1] if out.kept_share_s else 0.0)
        out.estimate_s = max(kinds * turn_s, min(low + (m.latency_requests > 0) * 0.15 * m.budget_s, left_s))

        allocations = 0
        # Where each kind of pass goes on in the plan: every pass starts where the one of its
        # kind before it ended, so that over the repeats each serves the whole plan (with
        # buckets, a short pass from the plan's start each time would serve only its first sizes).
        cursor = {"throughput": 0, "ceiling": 0, "baseline": 0}
        batches = [r.size.batch for r in workload.plan]

        def throughput(end: float) -> None:
            nonlocal allocations
            before = _allocation_count(device) if lanes.is_cuda else 0
            out.host_canary_s.append(environment.canary_s())  # before the clock starts: not timed
            ticks = environment.cpu_ticks()
            left = end - time.perf_counter()
            first = cursor["throughput"]
            out.throughput_caps_s.append(max(0.0, min(cap, left)))
            with progress.phase("throughput"):
                out.throughput.append(schedule.throughput_pass(lanes, _from(sources, first), _from(keys, first),
                                                               m.min_requests, min(min_s, cap), out.throughput_caps_s[-1]))
            cursor["throughput"] += out.throughput[-1][0]
            out.throughput_samples.append(_served(batches, first, out.throughput[-1][0]))
            ticks_after = environment.cpu_ticks(ticks.job_busy if ticks else None)  # the same CPUs as before the pass
            out.host_stolen.append(environment.stolen_fraction(ticks, ticks_after))
            out.host_others.append(environment.others_cores(ticks, ticks_after))
            if lanes.is_cuda:
                allocations += _allocation_count(device) - before
            n, s = out.throughput[-1]
            # The repeats there may be at this pace, as `_stop` will allow them (the asked
            # measure.repeats had followed "at most 5 repeats" as "repeat 1 (at most 10)").
            done = len(out.throughput)
            most = min(m.repeats, done + _more_repeats(end - time.perf_counter(), s, kinds if m.interleave else 1))
            log.info("repeat %d (at most %d): %s requests/s, %.1f s of %g s budget",
                     done, most, rate_text(n / s), budget.elapsed(), m.budget_s, extra=PROGRESS)
            progress.show(f"repeat {done} (at most {most}): {rate_text(n / s)} requests/s")

        def ceiling_stride(cap_s: float) -> int:
            """Requests between the ceiling's waits: a few per pass for a slow model, so that its
            two queued strides stay a small part of the pass."""
            # Interleaved, its warm-up runs before any throughput pass: the warm-up's pace then.
            per_request_s = _seconds_per_request(out.throughput) or warm_pace_s
            if per_request_s <= 0:
                return schedule.CEILING_STRIDE
            return max(1, min(schedule.CEILING_STRIDE, int(cap_s / per_request_s / 8)))

        def ceiling(cap_s: float) -> None:
            out.side_canary_s.setdefault("ceiling", []).append(environment.canary_s())  # untimed, as the throughput's
            out.side_caps_s.setdefault("ceiling", []).append(cap_s)
            ticks = environment.cpu_ticks()
            with progress.phase("ceiling"):
                out.ceiling.append(schedule.ceiling_pass(lanes, _from(keys, cursor["ceiling"]), m.min_requests,
                                                         min(min_s, cap_s), cap_s, ceiling_stride(cap_s)))
            _watch_others(out, "ceiling", ticks)
            out.ceiling_samples.append(_served(batches, cursor["ceiling"], out.ceiling[-1][0]))
            cursor["ceiling"] += out.ceiling[-1][0]

        def baseline(cap_s: float) -> None:
            out.side_canary_s.setdefault("baseline", []).append(environment.canary_s())
            out.side_caps_s.setdefault("baseline", []).append(cap_s)
            ticks = environment.cpu_ticks()
            with progress.phase("baseline"):
                out.baseline.append(schedule.baseline_pass(forward, _from(workload.baseline_sources, cursor["baseline"]),
                                                           device, m.min_requests, min(min_s, cap_s), cap_s))
            _watch_others(out, "baseline", ticks)
            out.baseline_samples.append(_served(batches, cursor["baseline"], out.baseline[-1][0]))
            cursor["baseline"] += out.baseline[-1][0]

        def warm_up(name: str, cap_s: float) -> None:
            """Untimed: one turn of the ring at least, up to `cap_s`."""
            with progress.phase(name):
                if name == "ceiling":
                    schedule.ceiling_pass(lanes, keys, 1, 0.0, cap_s, ceiling_stride(cap_s))
                else:
                    schedule.baseline_pass(forward, workload.baseline_sources, device, 1, 0.0, cap_s)

        end = time.perf_counter() + allowance
        if m.interleave:  # the window holds all three kinds of pass, taken in turn; none runs past its end
            cap = min(cap, (end - time.perf_counter()) / (m.min_repeats * kinds))
        out.pass_cap_s = cap
        if m.interleave:
            out.side_cap_s = dict.fromkeys(("ceiling", "baseline"), cap)
        # The repeats the throughput window fits, as `_stop` will count them (a repeat starts
        # while half a pass is left): one at least, even past the budget.
        per_pass_s = max(turn_s, min(expected_pass, cap))  # interleaved, the cap may have shrunk
        per_repeat_s = per_pass_s * (kinds if m.interleave else 1)
        window_s = end - time.perf_counter()
        fitting = m.min_repeats if per_repeat_s <= 0 else \
            max(1, min(m.min_repeats, int((window_s + 0.5 * per_pass_s) / per_repeat_s)))
        fewer = f", fewer than measure.min_repeats={m.min_repeats}: the budget is nearly spent" if fitting < m.min_repeats else ""
        # The repeats go on past min_repeats while the spread is too wide: up to m.repeats, or to
        # the budget's end (one pass may overrun it: a pass that starts runs to its minimum).
        # The latency passes come last and may take what time is left: up to latency_requests
        # each, at about a turn of the ring per request (one request alone in flight).
        latency_most_s = (m.latency_requests > 0) * max(0.15 * m.budget_s,
                                                         _latency_passes(spec) * m.latency_requests * turn_s)
        most_s = max(out.estimate_s, min(left_s + per_pass_s, m.repeats * per_pass_s * kinds + latency_most_s))
        out.estimate_most_s, out.budget_left_s = most_s, left_s + per_pass_s
        estimated_at = time.perf_counter()
        span = f"about {out.estimate_s:.1f}" if most_s <= 1.2 * out.estimate_s else f"{out.estimate_s:.1f} to {most_s:.1f}"
        # At most: as many as the window holds, plus the one a pass may start near its end (a
        # GPT-2's "at most 3 repeats of about 3.38 s" came with "3.4 to 4.3 s more").
        most_repeats = m.repeats if per_repeat_s <= 0 else \
            min(m.repeats, max(fitting, int(window_s / per_repeat_s) + 1))
        repeats = f"{fitting} repeat{'s' * (fitting > 1)}" if most_repeats == fitting else \
            f"at least {fitting} and at most {most_repeats} repeats"
        log.info("measuring: %s s more (measure.budget_s=%g: %s of about %.2f s per pass%s)",
                 span, m.budget_s, repeats, per_pass_s, fewer)
        if m.interleave:
            # Each kind's first timed pass must not pay for its own first replays (a graph's
            # upload) or a cold eager path: short untimed warm-ups, as in the blocks below.
            for name, on in (("ceiling", ceiling_on), ("baseline", spec.baseline)):
                if on:
                    out.side_cap_s[name] = cap  # as the throughput's: a pass cut short is said, and by what
                    warm_up(name, cap / 4)
            while True:
                if spec.baseline:
                    baseline(max(0.0, min(cap, end - time.perf_counter())))
                throughput(end)
                if ceiling_on:
                    ceiling(max(0.0, min(cap, end - time.perf_counter())))
                if _stop(out, m, end, kinds):
                    break
        else:
            while True:
                throughput(end)
                if _stop(out, m, end):
                    break
            count = len(out.throughput)
            for name, run, on in (("ceiling", ceiling, ceiling_on), ("baseline", baseline, spec.baseline)):
                if not on:
                    continue
                share = budget.allowance(name)
                if out.kept_share_s is not None:  # as the throughput's passes: a ratio rests on both sides
                    share = max(share, budget.nominal(name))
                per_pass = min(max_s, share / (count + 0.25))
                out.side_cap_s[name] = per_pass
                warm_up(name, per_pass / 4)  # a short untimed warm-up of the block's own
                for _ in range(count):
                    run(per_pass)
        out.steady_state_allocations = allocations if lanes.is_cuda else None
        out.graphs_ran = lanes.graph  # not after a capture that fell back to eager

        if m.latency_requests:
            share = budget.allowance("latency")
            parts = _latency_passes(spec)
            # Percentiles of a handful of requests mean nothing: two turns of the ring at least.
            floor = min(m.latency_requests, 2 * len(lanes.ring))
            # A pass whose floor would overrun its share by far (slow requests, small budget) is
            # skipped and the result says so, rather than the job running past its budget.
            # Two passes (host time per step, then latency) of `floor` requests each, in two parts.
            runner_fits = _fits(2 * floor, out.throughput, 2 * share / parts, "latency and host time per step", m, out)
            if runner_fits:
                # Its per-request records are made before the pass: no more than its time can
                # serve (measure.latency_requests=1e9 allocated for minutes before the pass).
                requests = _within(m.latency_requests, out.throughput, share / parts, floor)
                with progress.phase("enqueue", "host time per step"):
                    out.host_s = schedule.enqueue_pass(lanes, sources, keys, requests, share / parts, floor)
                with progress.phase("latency", "latency per stage"):
                    out.latency = schedule.latency_pass(lanes, sources, keys, requests, share / parts, floor)
                if spec.model.bucketed:  # each request's bucket, for latency per bucket
                    plan = workload.plan
                    out.latency["bucket"] = [str(bucket_of(spec.model, plan[j % len(plan)].size))
                                             for j in range(len(out.latency["lane"]))]
            if spec.baseline and _fits(floor, out.baseline, share / parts, "baseline latency", m, out):
                with progress.phase("baseline_latency", "baseline latency"):
                    out.baseline_latency_s = schedule.baseline_latency_pass(
                        forward, workload.baseline_sources, device,
                        _within(m.latency_requests, out.baseline, share / parts, floor), share / parts, floor
                    )
    out.buffers_moved = pointers != [lane.buffer_pointers() for lane in lanes]
    out.elapsed_s = budget.elapsed()
    out.after_estimate_s = time.perf_counter() - estimated_at


def _latency_passes(spec: RunSpec) -> int:
    """The passes of the latency phase: host time per step and latency, and the baseline's."""
    return 3 if spec.baseline else 2


# How far past its share a pass's minimum may be estimated to run before it is skipped: twice
# the share (the estimate comes from the throughput passes, and a pass of few requests runs with
# the ring partly empty), plus a twentieth of the budget (a pass of a few fast requests is
# never worth skipping, even when the phases before it used up the time).
OVERRUN_ALLOWED = 2.0
OVERRUN_SLACK = 0.05


def _from(items: list, first: int) -> list:
    """The plan's `items` from request `first` on, round the cycle."""
    k = first % len(items)
    return items[k:] + items[:k]


def _served(batches: list[int], first: int, requests: int) -> int:
    """Real samples in `requests` requests of the plan (whose sizes are `batches`) from request
    `first` on."""
    whole, part = divmod(requests, len(batches))
    return whole * sum(batches) + sum(_from(batches, first)[:part])


def _seconds_per_request(passes: list[Pass]) -> Optional[float]:
    """The mean time per request over `passes`; None before any pass."""
    done = sum(n for n, _ in passes)
    return sum(s for _, s in passes) / done if done else None


def _refuse_long_first_point(spec: RunSpec, label: str, rate: float, least_s: float) -> None:
    """A rate search's first point runs whole (a search has one point at least): refused where
    it would run past what a fixed load.rate is refused for (rules.refused_past_s)."""
    budget_s = spec.measure.budget_s
    if least_s > rules.refused_past_s(budget_s):
        raise ConfigError(
            f"load.rate=max: the {label}'s rate search starts at half the closed loop's rate, {rate_text(rate)}/s, and "
            f"its first point needs {MIN_REQUESTS} arrivals at least, {least_s:.0f} s at that rate, over "
            f"{rules.REFUSE_FACTOR:g} times measure.budget_s={budget_s:g}: not measured; raise measure.budget_s to "
            f"{math.ceil(least_s * 1.5)} or more, or measure a fixed load.rate, or make a forward cheaper "
            "(model.batch, model.seq, dtype)")


def _overruns(estimate_s: float, allowance_s: float, budget_s: float) -> bool:
    return estimate_s > OVERRUN_ALLOWED * allowance_s + OVERRUN_SLACK * budget_s


def _tell_if_slow(spec: RunSpec, workload: Workload, is_cuda: bool, ring: int, checked: int,
                  out: Measurement) -> None:
    """Before measuring: when one forward says the least this job can do (the check's first
    chunk, each request with its eager reference, and one timed turn of the ring) will overrun
    the budget by far, say so now, with the figure, rather than after minutes of silence."""
    budget_s, first_s = spec.measure.budget_s, workload.forward_s
    least, what = _least_work(spec, is_cuda, ring, checked, workload.probe is not None)
    if first_s * least <= 2 * budget_s:
        return
    least_s = first_s * least
    if least_s > rules.refused_past_s(budget_s):
        # Minutes past a budget of seconds: the user's time, spent on what they did not ask for.
        raise ConfigError(
            f"measure.budget_s={budget_s:g}: one forward at the largest size took {_short_s(first_s)}, so the least this "
            f"job can do ({what}) takes about {least_s:.0f} s, over {rules.REFUSE_FACTOR:g} times its budget: not measured; "
            f"raise measure.budget_s to {math.ceil(least_s * 1.2)} or more to measure it anyway, or make a forward "
            "cheaper (model.batch, model.seq, dtype)"
        )
    out.slow = (f"one forward at the largest size took {_short_s(first_s)}: if the others are as slow, the least "
                f"this job can do ({what}) takes about {least_s:.0f} s, past measure.budget_s={budget_s:g}")
    log.warning("%s", out.slow)


def _short_s(seconds: float) -> str:
    """A forward's time as read: milliseconds below a tenth of a second (5 ms had read "0.0 s")."""
    return f"{seconds * 1e3:.0f} ms" if seconds < 0.1 else f"{seconds:.1f} s"


def _least_work(spec: RunSpec, is_cuda: bool, ring: int, checked: int, has_probe: bool) -> tuple[int, str]:
    """The forwards the least this job can do takes (the check's first chunk, each request with
    its eager reference, a warm-up, one timed turn of the ring), and those words."""
    # The warm-up: always on CUDA; elsewhere skipped when the check ran (and would overrun).
    warm = ring if is_cuda or not checked else 0
    reused = 1 if probe_reused(spec, has_probe, checked, ring) else 0  # the probe's output is one reference
    references = f"{checked - reused} more eager reference{'s' if checked - reused != 1 else ''}" if reused else \
        "their eager references"
    check = f"the check's {checked} request{'s' if checked != 1 else ''} with {references}, " if checked else ""
    check += f"a warm-up of {warm} request{'s' if warm > 1 else ''}, " if warm else ""
    if spec.load.scenario == "server" and spec.load.search and not is_cuda:
        # Its first point, at half the closed loop's rate: MIN_REQUESTS arrivals take twice as
        # many forwards' time (a CPU serves one at a time). tiny_llm on 2 cores: 200 s of it,
        # against a 2 s budget, and nothing said. (On a GPU the eager forward timed here says
        # nothing of the rate graph lanes serve: the measured rate decides, in the search.)
        return (2 * checked - reused + warm + 2 * MIN_REQUESTS,
                f"{check}the rate search's first point: {MIN_REQUESTS} arrivals at half the closed loop's rate")
    return 2 * checked - reused + ring + warm, f"{check}one timed pass of {ring} request{'s' if ring > 1 else ''}"


def probe_limit(spec: RunSpec) -> Optional[ProbeLimit]:
    """Off CUDA, how long the build's first forward may run: once the least this job can do
    (that many forwards) would take past what is refused anyway, it is stopped there, and the
    job refused then, not after the whole forward (95.7 s for GPT-2 in fp16 on 2 cores)."""
    if torch.device(spec.device).type == "cuda":
        return None  # milliseconds per forward, after one-time costs the first one pays
    ring = spec.streams * spec.slots
    checked = first_chunk(spec, ring, spec.measure.check_requests) if spec.check else 0
    least, what = _least_work(spec, False, ring, checked, True)
    refused_s = rules.refused_past_s(spec.measure.budget_s)
    return ProbeLimit(
        seconds=refused_s / least,
        refusal=lambda ran_s: (
            f"measure.budget_s={spec.measure.budget_s:g}: one forward at the largest size ran {ran_s:.1f} s without "
            f"ending (stopped there), so the least this job can do ({what}, {least} forwards) takes over "
            f"{refused_s:.0f} s, over {rules.REFUSE_FACTOR:g} times its budget: not measured; raise measure.budget_s to "
            f"{math.ceil(least * ran_s * 1.2)} or more to measure it anyway, or make a forward cheaper "
            "(model.batch, model.seq, dtype)"),
    )


def _within(requests: int, passes: list[Pass], seconds: float, floor: int) -> int:
    """`requests`, or fewer: four times what `seconds` serves at the rate `passes` measured
    (the pass ends at its time anyway), never fewer than `floor`."""
    per_request_s = _seconds_per_request(passes)
    if per_request_s is None or per_request_s <= 0:
        return requests
    return min(requests, max(floor, math.ceil(4 * seconds / per_request_s)))


def _fits(requests: int, passes: list[Pass], allowance_s: float, what: str, m: Any, out: Measurement) -> bool:
    """Whether `requests` fit in `allowance_s` at the rate `passes` measured; if not, the
    skip is recorded with what it would take."""
    per_request_s = _seconds_per_request(passes)
    if per_request_s is None:
        return True  # nothing to estimate from
    estimate_s = requests * per_request_s
    if not _overruns(estimate_s, allowance_s, m.budget_s):
        return True
    share = f"its {allowance_s:.1f} s share" if allowance_s >= 0.05 else "the time left"
    out.skipped[what] = (
        f"{what} not measured: its least {requests} requests would take about {estimate_s:.1f} s, past "
        f"{share} of measure.budget_s={m.budget_s:g}; raise measure.budget_s to measure it"
    )
    log.warning("%s", out.skipped[what])
    return False


def host_speeds(m: Measurement) -> Optional[list[float]]:
    """The host's speed before each throughput pass (1 / the canary's time), or None where a
    pass has none (an interrupted pass has its canary, not its rate)."""
    canary_s = list(m.host_canary_s[: len(m.throughput)])
    if len(canary_s) != len(m.throughput) or not all(s > 0 for s in canary_s):
        return None
    return [1 / s for s in canary_s]


def _watch_others(out: Measurement, side: str, ticks: Optional[environment.CpuTicks]) -> None:
    """After a ceiling's, a baseline's or a load's pass (`side`: "ceiling", "baseline", "load",
    "load_baseline"): other processes' CPU since `ticks`, on the same CPUs."""
    after = environment.cpu_ticks(ticks.job_busy if ticks else None)
    out.side_others.setdefault(side, []).append(environment.others_cores(ticks, after))


def _more_repeats(left_s: float, pass_s: float, passes_per_repeat: int) -> int:
    """How many more repeats `_stop` lets start in `left_s` when each pass takes `pass_s`: one
    starts while its last pass has half a pass of time."""
    first_s = (passes_per_repeat - 0.5) * pass_s  # what the next repeat needs to start
    if pass_s <= 0 or left_s < first_s:
        return 0 if pass_s > 0 else 1
    return int((left_s - first_s) // (passes_per_repeat * pass_s)) + 1


def _stop(out: Measurement, m, end: float, passes_per_repeat: int = 1) -> bool:
    """After a repeat: stop once the mean is known well enough, at `repeats`, or when the next
    repeat (`passes_per_repeat` passes, interleaved) would not fit in the time left. The mean is
    that of the steady passes: after a step in the host's speed (its canary moved with the rate)
    the passes before it say nothing of the level now, and the repeats go on until the passes
    after it are enough."""
    rates = [n / s for n, s in out.throughput]
    steady = rates[steady_start(rates, host_speeds(out), m.min_repeats):]
    # The target first: a last repeat that met it stopped the repeats as "stable", not as the cap.
    if len(steady) >= m.min_repeats and stdrel(steady) <= m.stdrel:
        out.stop_reason = "stdrel"
        return True
    if len(rates) >= m.repeats:
        out.stop_reason = "repeats"
        return True
    last_s = out.throughput[-1][1]
    # A repeat starts while its last pass has half a pass of time: interleaved, the passes before
    # it must fit whole, or they would be cut short (and a short pass still counts).
    if time.perf_counter() + (passes_per_repeat - 0.5) * last_s > end:
        out.stop_reason = "budget"
        return True
    return False


def _stats_us(seconds: list[float]) -> dict[str, Any]:
    return summarize(s * 1e6 for s in seconds)


def measure_load(spec: RunSpec, workload: Workload, lanes: Lanes, budget: Budget, closed_rate: float,
                 progress: Progress, out: Measurement) -> dict:
    """The single_stream or server scenario, for the runner and (if asked) the eager baseline."""
    load, device = spec.load, lanes.device
    sources, keys, forward, base = workload.sources, workload.keys, workload.reference, workload.baseline_sources

    def share_of(name: str, label: str) -> float:
        """The load's share of what is left; its whole share where the phases before overran
        (a slow check), as the timed passes keep theirs, rather than measure next to nothing
        (a BERT search had ended "not measured: the budget ran out before its first point",
        status ok)."""
        share, nominal = budget.allowance(name), budget.nominal(name)
        if share >= 0.5 * nominal:
            return share
        out.skipped[f"{name} share"] = (
            f"the phases before the {label} overran their shares of measure.budget_s={spec.measure.budget_s:g}: "
            f"the {label} kept its {nominal:.1f} s, past the budget's end")
        log.warning("%s", out.skipped[f"{name} share"])
        return nominal

    if load.scenario == "single_stream":
        share = share_of("load", "single stream")
        ticks = environment.cpu_ticks()
        with progress.phase("single_stream", "single stream"):
            runner_s = schedule.single_stream_pass(lanes, sources, keys, load.requests, share, min(load.requests, 10))
        _watch_others(out, "load", ticks)
        found: dict[str, Any] = {"scenario": "single_stream", "runner": _stats_us(runner_s)}
        out.load = found  # a Ctrl-C in the baseline's pass keeps the runner's
        if spec.baseline:
            ticks = environment.cpu_ticks()
            with progress.phase("baseline_single_stream", "baseline single stream"):
                found["baseline"] = _stats_us(schedule.baseline_latency_pass(
                    forward, base, device, load.requests, share_of("load_baseline", "baseline's single stream"),
                    min(load.requests, 10)))
            _watch_others(out, "load_baseline", ticks)
        return found

    @functools.lru_cache(maxsize=2)  # a search asks a rate's length, then runs it: one draw
    def arrivals_at(rate: float) -> tuple[float, ...]:
        """A point's arrivals. One draw for every point, the runner's and the baseline's: the
        same gaps scaled by 1 / rate (common random numbers), at the rate asked exactly
        (at_rate). A draw per point moved each point's offered rate by 6-7% at 200-300
        arrivals, finer steps than the search's 5%: a rate offered 253/s held and a higher
        one, offered 236/s, failed."""
        duration = search_length_s(rate, load.duration_s)
        if duration < least_length_s(rate, load.duration_s) and "load arrivals" not in out.skipped:
            out.skipped["load arrivals"] = (
                f"load: a point draws {MAX_ARRIVALS:,} arrivals at most: those above "
                f"{rate_text(MAX_ARRIVALS / load.duration_s)}/s run shorter than load.duration_s={load.duration_s:g}")
            log.warning("%s", out.skipped["load arrivals"])
        return tuple(at_rate(poisson_arrivals(rate, duration, spec.seed * 1_000_003, MIN_REQUESTS), rate))

    def point_s(rate: float) -> float:
        """How long a point runs at least: to its last arrival (stretched to the rate, up to
        16% past least_length_s)."""
        return arrivals_at(rate)[-1]

    def run_at(name: str, servers_of: Any, end: float, rate: float) -> Point:
        arrivals = arrivals_at(rate)
        label = f"{name.replace('_', ' ')}: server at {rate:,.0f}/s"
        ticks = environment.cpu_ticks()
        with progress.phase(name, label, expected_s=arrivals[-1]), no_gc(), servers_of() as servers:
            # Every arrival is admitted (the deadline is never before the last, which lies past
            # `duration` when MIN_REQUESTS needed more); past the share's end, an overloaded
            # rate's queue is dropped rather than served.
            served = open_loop(arrivals, servers, max(end - time.perf_counter(), arrivals[-1]))
        _watch_others(out, name, ticks)  # every point's figures: the search's steps follow each
        point = judge(rate, served, load.p99_ms)
        p99_us = point.latency_us["p99"]
        log.info("server at %s requests/s: p99 %s us, %s", rate_text(rate), "-" if p99_us is None else f"{p99_us:,.1f}",
                 "valid" if point.valid else f"invalid ({point.why})", extra=PROGRESS)
        return point

    def runner_servers() -> Any:
        return open_servers(lanes, sources, keys)

    @contextlib.contextmanager
    def baseline_servers() -> Any:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        yield [schedule.BaselineServer(forward, base, device)]

    def say_runs_whole(name: str, what: str, least_s: float, share: float) -> None:
        """A point runs whole: one longer than its share is said before it runs, not after."""
        if _overruns(least_s, share, spec.measure.budget_s):
            out.skipped[f"{name} length"] = (
                f"{name.replace('_', ' ')}: {what} runs {least_s:.1f} s at least ({MIN_REQUESTS} arrivals"
                + ("), " if load.search else f", load.duration_s={load.duration_s:g}), ")
                + f"past its {share:.1f} s share of measure.budget_s={spec.measure.budget_s:g}; it runs whole")
            log.warning("%s", out.skipped[f"{name} length"])

    def scenario(name: str, servers_of: Any, start_rate: float) -> Optional[dict[str, Any]]:
        label = name.replace("_", " ")
        first_rate = max(1.0, start_rate)
        first_s = point_s(first_rate) if load.search else 0.0
        if name == "load_baseline" and first_s > rules.refused_past_s(spec.measure.budget_s):
            # After the runner's whole search: its figures are kept, the baseline's search
            # is not run (a refusal here had thrown the runner's away).
            out.skipped["load_baseline"] = (
                f"the baseline's rate search was not run: it would start at half its closed loop's rate, "
                f"{rate_text(start_rate)}/s, where its first point needs {MIN_REQUESTS} arrivals, {first_s:.0f} s "
                f"at least, over {rules.REFUSE_FACTOR:g} times measure.budget_s={spec.measure.budget_s:g}; raise "
                f"measure.budget_s to {math.ceil(first_s * 1.5)} or more to measure it")
            log.warning("%s", out.skipped["load_baseline"])
            return None
        share = share_of(name, label)  # after the skip: a search not run keeps no share past the budget
        if load.search:
            _refuse_long_first_point(spec, label, first_rate, first_s)
            say_runs_whole(name, "the rate search's first point, at half the closed loop's rate "
                           f"({rate_text(start_rate)}/s),", first_s, share)
        else:
            say_runs_whole(name, f"a point at load.rate={load.rate:g}", point_s(load.rate), share)
        end = time.perf_counter() + share
        run = functools.partial(run_at, name, servers_of, end)
        if not load.search:
            point = run(load.rate)
            return {"points": [point.as_dict()], "valid": point.valid, "rate": load.rate}
        search = in_progress[name] = Search()
        search_rate(run, first_rate, load.resolution, end, least_s=point_s, found=search,
                    hopeless=functools.partial(past_one_request, p99_ms=load.p99_ms))
        del in_progress[name]
        return _search_figures(search)

    # A Ctrl-C keeps what finished: the searches' points so far (stopped_by "interrupted"), and
    # the runner's whole figures while the baseline's ran.
    in_progress: dict[str, Search] = {}
    result: dict[str, Any] = {"scenario": "server", "rate": "max" if load.search else load.rate,
                              "p99_ms": load.p99_ms}
    try:
        runner = scenario("load", runner_servers, closed_rate / 2)
        assert runner is not None  # only the baseline's search is left out (the runner's is refused)
        result["runner"] = runner
        if spec.baseline:
            # Its closed-loop rate to start from, over 0.1 s (one request's would carry first-call costs).
            n, s = schedule.baseline_pass(forward, base, device, 1, 0.1, 0.2)
            found = scenario("load_baseline", baseline_servers, n / s / 2)
            if found is not None:  # else not run, and said (out.skipped)
                result["baseline"] = found
    except BaseException as exc:  # a Ctrl-C, or a failure at a later rate (out of memory): what finished is kept
        for name, search in in_progress.items():
            search.stopped_by = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            result["runner" if name == "load" else "baseline"] = _search_figures(search)
        if "runner" in result:  # (a fixed rate's point that did not finish leaves nothing: no figures)
            out.load = result
        raise
    return result


def _search_figures(found: Search) -> dict[str, Any]:
    return {"points": [p.as_dict() for p in found.points], "max_rate": found.best,
            "lowest_invalid_rate": found.failed, "stopped_by": found.stopped_by}
