"""Correctness before timing: the schedule's outputs for many concurrent requests with distinct
inputs, compared with eager outputs of the same model, request by request."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from runner.build import Workload, make_inputs, request_bytes
from runner.lanes import Lanes
from runner.protocol import serve
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
    requested: int = 0  # asked for; fewer were checked when the budget ran out

    @property
    def passed(self) -> bool:
        return self.mismatches == 0


def serve_and_collect(lanes: Lanes, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
    """Serve `inputs` through the request protocol, every slot in flight, into `outputs` (host).

    A slot's response is read when the slot is next acquired (its event has completed then)
    or at the end. In direct staging the check writes each request into its slot after
    acquiring it, as the server's deserializer would; in copy staging the protocol copies it.
    """
    requests = inputs.shape[0]
    with serve(lanes, list(inputs.unbind(0))) as session:
        acquire, launch, direct = session.acquire, session.launch, session.direct
        ring_size = session.size
        pending = [-1] * ring_size  # request whose response is in flight in each slot
        for j in range(requests):
            slot = acquire(j)
            i = j % ring_size
            if pending[i] >= 0:
                outputs[pending[i]].copy_(slot.host_out)
            if direct:
                slot.host_in.copy_(inputs[j])
            launch(slot)
            pending[i] = j
    ring = session.ring
    for i, j in enumerate(pending):
        if j >= 0:
            outputs[j].copy_(ring[i].host_out)


def check_schedule(
    spec: RunSpec, workload: Workload, lanes: Lanes, requests: int, max_duration_s: float = math.inf
) -> CheckResult:
    """Compare `requests` distinct requests with eager, in chunks; after `max_duration_s` no new
    chunk starts. The first chunk (every slot used twice) always runs; later chunks are sized
    by the time the ones before took."""
    generator = torch.Generator().manual_seed(spec.seed + 1)  # not the timed inputs
    device = lanes.device
    tol = tolerance(spec)
    mismatches, worst, bad = 0, 0.0, []
    largest = max(len(lanes.ring), min(CHUNK_REQUESTS, CHUNK_BYTES // max(1, request_bytes(spec))))
    chunk = min(largest, requests, 2 * len(lanes.ring))
    start = time.perf_counter()
    first = 0
    with torch.no_grad():
        while first < requests:
            count = min(chunk, requests - first)
            inputs = make_inputs(spec.input, spec.torch_dtype, count, generator)
            outputs = torch.full((count, *workload.out_shape), float("nan"), dtype=workload.out_dtype)
            if not workload.out_dtype.is_floating_point:
                outputs.fill_(-1)
            serve_and_collect(lanes, inputs, outputs)
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
            first += count
            elapsed = time.perf_counter() - start
            left = max_duration_s - elapsed
            if left <= 0:
                break
            per_request = elapsed / first
            chunk = int(max(len(lanes.ring), min(largest, left / per_request)))
    return CheckResult(first, mismatches, worst, tol, bad, requested=requests)
