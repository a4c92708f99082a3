"""The request schedule and its timed passes.

Every pass issues requests round-robin over the lanes. Per request on lane s:
  1. wait for s's `done` event (its previous request's copies have completed), so the staging
     buffers may be rewritten and the previous response read;
  2. write the request into s's host input buffer;
  3. make s's stream current and enqueue: async H2D copy, graph replay (or eager forward),
     async D2H copy;
  4. record `done` on s's stream.
The loops below do nothing else: no allocation, logging or bookkeeping beyond a counter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from runner.lanes import Lanes

perf_counter = time.perf_counter


def throughput_pass(
    lanes: Lanes, sources: Sequence[torch.Tensor], min_requests: int, min_duration_s: float
) -> tuple[int, float]:
    """All lanes in flight until both minimums are met. Returns (requests, seconds)."""
    select = lanes.select_stream()
    order = tuple(lanes)
    n_sources = len(sources)
    k = 0
    requests = 0
    lanes.synchronize()
    start = perf_counter()
    deadline = start + min_duration_s
    try:
        while requests < min_requests or perf_counter() < deadline:
            for lane in order:
                lane.done.synchronize()
                lane.host_in.copy_(sources[k])
                select(lane.stream)
                lane.enqueue()
                lane.done.record()
                k += 1
                if k == n_sources:
                    k = 0
            requests += len(order)
        lanes.synchronize()
        return requests, perf_counter() - start
    finally:
        lanes.restore_default_stream()


def enqueue_pass(lanes: Lanes, sources: Sequence[torch.Tensor], requests: int) -> list[float]:
    """The throughput loop with a host clock around steps 2-4: host enqueue seconds per request."""
    select = lanes.select_stream()
    order = tuple(lanes)
    n_lanes, n_sources = len(order), len(sources)
    seconds = [0.0] * requests
    lanes.synchronize()
    try:
        for j in range(requests):
            lane = order[j % n_lanes]
            lane.done.synchronize()
            t0 = perf_counter()
            lane.host_in.copy_(sources[j % n_sources])
            select(lane.stream)
            lane.enqueue()
            lane.done.record()
            seconds[j] = perf_counter() - t0
        lanes.synchronize()
        return seconds
    finally:
        lanes.restore_default_stream()


class Timeline:
    """Stage marks per request: CUDA events on a GPU, the host clock on the CPU.

    Marks are 0: H2D start, 1: H2D end, 2: compute end, 3: D2H end; with the copies inside the
    graph only 0 and 3 exist. Times come back in microseconds since an origin taken just
    before the pass.
    """

    def __init__(self, requests: int, device: torch.device, stages: tuple[int, ...]) -> None:
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.origin = torch.cuda.Event(enable_timing=True)
            self.events = [
                [torch.cuda.Event(enable_timing=True) if k in stages else None for k in range(4)]
                for _ in range(requests)
            ]
        self.stamps = [[float("nan")] * 4 for _ in range(requests)]
        self.host_origin_s = 0.0

    def start(self) -> None:
        if self.cuda:
            self.origin.record()
        self.host_origin_s = perf_counter()

    def mark(self, request: int, stage: int) -> None:
        if self.cuda:
            self.events[request][stage].record()
        else:
            self.stamps[request][stage] = perf_counter()

    def times_us(self) -> list[list[float]]:
        """Per request, the four marks in microseconds since the origin (NaN: not marked)."""
        if not self.cuda:
            return [[(t - self.host_origin_s) * 1e6 for t in row] for row in self.stamps]
        nan = float("nan")
        origin = self.origin
        return [[nan if e is None else origin.elapsed_time(e) * 1e3 for e in row] for row in self.events]


def latency_pass(lanes: Lanes, sources: Sequence[torch.Tensor], requests: int) -> dict[str, list]:
    """The schedule with stage marks on every request, all lanes in flight.

    Returns per-request device marks (us since the origin) and host enqueue start/end times
    (us since the same origin, host clock). Event records cost host time, so this pass is
    separate from the throughput passes.
    """
    select = lanes.select_stream()
    order = tuple(lanes)
    n_lanes, n_sources = len(order), len(sources)
    staged = all(lane.h2d is not None for lane in order)
    timeline = Timeline(requests, lanes.device, (0, 1, 2, 3) if staged else (0, 3))
    mark = timeline.mark
    host = [[0.0, 0.0] for _ in range(requests)]
    lane_of = [j % n_lanes for j in range(requests)]
    lanes.synchronize()
    timeline.start()
    try:
        for j in range(requests):
            lane = order[lane_of[j]]
            lane.done.synchronize()
            t0 = perf_counter()
            lane.host_in.copy_(sources[j % n_sources])
            select(lane.stream)
            mark(j, 0)
            if staged:
                lane.h2d()
                mark(j, 1)
                lane.compute()
                mark(j, 2)
                lane.d2h()
            else:  # copies inside the graph: one replay does all three stages
                lane.enqueue()
            mark(j, 3)
            lane.done.record()
            host[j][0] = t0
            host[j][1] = perf_counter()
        lanes.synchronize()
    finally:
        lanes.restore_default_stream()
    origin = timeline.host_origin_s
    return {
        "device_us": timeline.times_us(),
        "host_us": [[(a - origin) * 1e6, (b - origin) * 1e6] for a, b in host],
        "lane": lane_of,
    }


def ceiling_pass(lanes: Lanes, min_requests: int, min_duration_s: float) -> tuple[int, float]:
    """The same compute replayed back to back across the lanes: no copies, no host waits."""
    select = lanes.select_stream()
    order = tuple(lanes)
    requests = 0
    lanes.synchronize()
    start = perf_counter()
    deadline = start + min_duration_s
    try:
        while requests < min_requests or perf_counter() < deadline:
            for lane in order:
                select(lane.stream)
                lane.compute()
            requests += len(order)
        lanes.synchronize()
        return requests, perf_counter() - start
    finally:
        lanes.restore_default_stream()


def baseline_pass(
    model: nn.Module,
    sources: Sequence[torch.Tensor],
    device: torch.device,
    min_requests: int,
    min_duration_s: float,
) -> tuple[int, float]:
    """What a naive user writes: pageable input, default stream, blocking copies."""
    n_sources = len(sources)
    k = 0
    requests = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = perf_counter()
    deadline = start + min_duration_s
    while requests < min_requests or perf_counter() < deadline:
        model(sources[k].to(device)).cpu()
        k += 1
        if k == n_sources:
            k = 0
        requests += 1
    return requests, perf_counter() - start


def baseline_latency_pass(
    model: nn.Module, sources: Sequence[torch.Tensor], device: torch.device, requests: int
) -> list[float]:
    """Seconds per baseline request; each request ends in a blocking D2H copy."""
    n_sources = len(sources)
    seconds = [0.0] * requests
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    for j in range(requests):
        t0 = perf_counter()
        model(sources[j % n_sources].to(device)).cpu()
        seconds[j] = perf_counter() - t0
    return seconds
