"""Measurement as fixed, named phases. Raw samples only; summarizing lives in summary.py.

    check      distinct requests through the request protocol vs eager (before any timing)
    warm-up    untimed schedule until `warmup_ms` has passed (clocks ramp, graphs upload)
    repeats    the schedule's throughput passes back to back; then the ceiling's, then the
               baseline's, each block after a short warm-up of its own. (`measure.interleave`
               runs baseline, schedule and ceiling in turn per repeat instead: what runs before
               a pass then disturbs it: the eager baseline leaves the allocator, the host's
               caches and the GPU's clocks in another state.)
    enqueue    the throughput loop with a host clock between the protocol's steps
    latency    the schedule with CUDA events at every stage of every request
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from runner import schedule
from runner.build import Workload
from runner.check import CheckResult, check_schedule
from runner.lanes import Lanes
from runner.spec import RunSpec
from runner.trace import phase

log = logging.getLogger(__name__)

Pass = tuple[int, float]  # (requests, seconds)


@dataclass
class Measurement:
    check: Optional[CheckResult] = None
    warmup_s: float = 0.0
    throughput: list[Pass] = field(default_factory=list)
    baseline: list[Pass] = field(default_factory=list)
    ceiling: list[Pass] = field(default_factory=list)
    host_s: dict[str, list[float]] = field(default_factory=dict)  # wait, copy, launch per request
    latency: Optional[dict] = None  # from schedule.latency_pass
    baseline_latency_s: list[float] = field(default_factory=list)
    steady_state_allocations: Optional[int] = None  # device allocations during timed passes
    buffers_moved: Optional[bool] = None  # did any static buffer change address?


def _allocation_count(device: torch.device) -> int:
    return int(torch.cuda.memory_stats(device).get("allocation.all.allocated", 0))


def run_check(spec: RunSpec, workload: Workload, lanes: Lanes) -> CheckResult:
    result = check_schedule(spec, workload, lanes, spec.measure.check_requests)
    if result.passed:
        log.info("check: %d requests match eager (max rel err %.2e)", result.requests, result.max_rel_err)
    else:
        log.error(
            "CHECK FAILED: %d of %d requests differ from eager (max rel err %.3g > %.0e)",
            result.mismatches, result.requests, result.max_rel_err, result.tolerance_rel,
        )
    return result


def measure(spec: RunSpec, workload: Workload, lanes: Lanes) -> Measurement:
    m = spec.measure
    device = lanes.device
    sources, model = workload.sources, workload.model
    out = Measurement()
    pointers = [lane.buffer_pointers() for lane in lanes]
    min_s = m.min_duration_ms / 1e3
    warmup_s = m.warmup_ms / 1e3

    def baseline() -> None:
        with phase("baseline"):
            out.baseline.append(schedule.baseline_pass(model, workload.baseline_sources, device, m.min_requests, min_s))

    def ceiling() -> None:
        with phase("ceiling"):
            out.ceiling.append(schedule.ceiling_pass(lanes, m.min_requests, min_s))

    allocations = 0

    def throughput(repeat: int) -> None:
        nonlocal allocations
        before = _allocation_count(device) if lanes.is_cuda else 0
        with phase("throughput"):
            out.throughput.append(schedule.throughput_pass(lanes, sources, m.min_requests, min_s))
        if lanes.is_cuda:
            allocations += _allocation_count(device) - before
        log.info("repeat %d/%d: %.0f requests/s", repeat + 1, m.repeats, out.throughput[-1][0] / out.throughput[-1][1])

    with torch.no_grad():
        if spec.check:
            with phase("check"):
                out.check = run_check(spec, workload, lanes)

        start = time.perf_counter()
        with phase("warmup"):
            schedule.throughput_pass(lanes, sources, 1, warmup_s)
        out.warmup_s = time.perf_counter() - start

        if m.interleave:
            for repeat in range(m.repeats):
                if spec.baseline:
                    baseline()
                throughput(repeat)
                if m.ceiling:
                    ceiling()
        else:
            for repeat in range(m.repeats):
                throughput(repeat)
            if m.ceiling:
                schedule.ceiling_pass(lanes, 1, warmup_s / 4)
                for _ in range(m.repeats):
                    ceiling()
            if spec.baseline:
                schedule.baseline_pass(model, workload.baseline_sources, device, 1, warmup_s / 4)
                for _ in range(m.repeats):
                    baseline()
        out.steady_state_allocations = allocations if lanes.is_cuda else None

        if m.latency_requests:
            with phase("enqueue"):
                out.host_s = schedule.enqueue_pass(lanes, sources, m.latency_requests)
            with phase("latency"):
                out.latency = schedule.latency_pass(lanes, sources, m.latency_requests)
            if spec.baseline:
                with phase("baseline-latency"):
                    out.baseline_latency_s = schedule.baseline_latency_pass(
                        model, workload.baseline_sources, device, m.latency_requests
                    )
    out.buffers_moved = pointers != [lane.buffer_pointers() for lane in lanes]
    return out
