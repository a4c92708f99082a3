"""Correctness before timing: the schedule's outputs for many concurrent requests with distinct
inputs, compared with eager outputs of the same model, request by request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from runner.build import Workload, make_inputs, request_bytes
from runner.lanes import Lanes
from runner.spec import RunSpec

# Largest accepted ||out - ref|| / ||ref|| per request. A response computed from another
# request's input, or from overwritten intermediates, is off by O(1); rounding differences
# between graph and eager kernels stay far below these.
REL_TOLERANCE = {"fp32": 1e-5, "fp32+tf32": 5e-3, "bf16": 3e-2, "fp16": 5e-3}
CHUNK_REQUESTS = 512  # requests generated and compared at once...
CHUNK_BYTES = 256 * 2**20  # ...unless their inputs would take more host memory than this


def tolerance(spec: RunSpec) -> float:
    key = "fp32+tf32" if spec.dtype == "fp32" and spec.tf32 and spec.is_cuda else spec.dtype
    return REL_TOLERANCE[key]


@dataclass
class CheckResult:
    requests: int
    mismatches: int
    max_rel_err: float
    tolerance_rel: float
    bad_requests: list[int] = field(default_factory=list)  # the first few, for the report

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def _schedule_collect(
    lanes: Lanes, inputs: torch.Tensor, outputs: torch.Tensor, hazard: Optional[str]
) -> None:
    """Run `inputs` through the schedule, all lanes in flight, into `outputs` (host).

    `hazard="early_rewrite"` is the deliberately broken variant for tests: it rewrites a
    lane's host input (and reads its host output) without waiting for the lane's `done`
    event, so a copy still queued behind the GPU's work reads the next request's data.
    """
    select = lanes.select_stream()
    order = tuple(lanes)
    pending = [-1] * len(order)  # request whose response is in flight on each lane
    lanes.synchronize()
    try:
        for j in range(inputs.shape[0]):
            s = j % len(order)
            lane = order[s]
            if hazard != "early_rewrite":  # the broken variant never waits for the guard
                lane.done.synchronize()
            lane.host_in.copy_(inputs[j])
            if pending[s] >= 0:
                outputs[pending[s]].copy_(lane.host_out)
            select(lane.stream)
            lane.enqueue()
            lane.done.record()
            pending[s] = j
        lanes.synchronize()
    finally:
        lanes.restore_default_stream()
    for s, j in enumerate(pending):
        if j >= 0:
            outputs[j].copy_(order[s].host_out)


def check_schedule(
    spec: RunSpec, workload: Workload, lanes: Lanes, requests: int, hazard: Optional[str] = None
) -> CheckResult:
    generator = torch.Generator().manual_seed(spec.seed + 1)  # not the timed inputs
    device = lanes.device
    tol = tolerance(spec)
    mismatches, worst, bad = 0, 0.0, []
    chunk = max(len(lanes), min(CHUNK_REQUESTS, CHUNK_BYTES // max(1, request_bytes(spec))))
    with torch.no_grad():
        for first in range(0, requests, chunk):
            count = min(chunk, requests - first)
            inputs = make_inputs(spec.input, spec.torch_dtype, count, generator)
            outputs = torch.full((count, *workload.out_shape), float("nan"), dtype=workload.out_dtype)
            if not workload.out_dtype.is_floating_point:
                outputs.fill_(-1)
            _schedule_collect(lanes, inputs, outputs, hazard)
            reference = torch.stack([workload.model(x.to(device)).cpu() for x in inputs])
            got = outputs.double().flatten(1)
            want = reference.double().flatten(1)
            err = (got - want).norm(dim=1) / want.norm(dim=1).clamp_min(1e-30)
            wrong = ~(err <= tol)  # NaN counts as wrong
            mismatches += int(wrong.sum())
            finite = err[torch.isfinite(err)]
            worst = max(worst, float(finite.max()) if finite.numel() else 0.0)
            if not torch.isfinite(err).all():
                worst = float("inf")
            bad += [first + int(i) for i in wrong.nonzero().flatten()[: 10 - len(bad)]]
    return CheckResult(requests, mismatches, worst, tol, bad)
