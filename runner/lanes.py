"""Per-stream lanes: each stream's buffers, captured graphs and the event that guards reuse.

A lane owns everything one in-flight request touches, so lanes share nothing:
- its own stream, on which its graphs are captured and replayed (graphs captured on one stream
  can embed the same cuBLAS workspace and race when replayed concurrently);
- its own graph memory pool per graph (graphs sharing a pool overwrite each other's
  intermediates when replayed concurrently);
- its own static device input and output, and host staging buffers (pinned if asked);
- its `done` event, recorded after the lane's last copy: a host buffer is rewritten, or read,
  only after that event has completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from runner.build import Workload
from runner.errors import CaptureError
from runner.spec import RunSpec


class HostEvent:
    """Stands in for a CUDA event on the CPU, where every operation is already synchronous."""

    __slots__ = ()

    def record(self, stream: object = None) -> None:
        pass

    def synchronize(self) -> None:
        pass


class Lane:
    """One stream's request path: H2D copy, compute, D2H copy on `stream`."""

    __slots__ = (
        "index",
        "stream",
        "done",
        "model",
        "host_in",
        "dev_in",
        "dev_out",
        "host_out",
        "graph",
        "compute_graph",
        "pools",
        "enqueue",
        "h2d",
        "compute",
        "d2h",
    )

    def __init__(self, index: int, model: nn.Module, host_in, dev_in, host_out, stream, done) -> None:
        self.index = index
        self.model = model
        self.stream: Optional[torch.cuda.Stream] = stream
        self.done = done
        self.host_in: torch.Tensor = host_in  # (B, ...) staging: the request is written here
        self.dev_in: torch.Tensor = dev_in  # static device input, read by the graph
        self.host_out: torch.Tensor = host_out  # where the response lands
        self.dev_out: Optional[torch.Tensor] = None  # static device output (graphs)
        self.graph: Optional[torch.cuda.CUDAGraph] = None  # replayed per request
        self.compute_graph: Optional[torch.cuda.CUDAGraph] = None  # compute only (the ceiling)
        self.pools: list = []
        # The stages, bound per mode below. `h2d` and `d2h` are None when the copies live
        # inside the graph (then only end-to-end timing is possible).
        self.h2d: Optional[Callable[[], None]] = self._h2d
        self.d2h: Optional[Callable[[], None]] = self._d2h
        self.compute: Callable[[], None] = self._eager_compute
        self.enqueue: Callable[[], None] = self._eager_enqueue

    # --- stages -------------------------------------------------------------------------
    def _h2d(self) -> None:
        self.dev_in.copy_(self.host_in, non_blocking=True)

    def _d2h(self) -> None:
        self.host_out.copy_(self.dev_out, non_blocking=True)

    def _eager_compute(self) -> None:
        self.dev_out = self.model(self.dev_in)

    def _eager_enqueue(self) -> None:
        self.dev_in.copy_(self.host_in, non_blocking=True)
        self.dev_out = self.model(self.dev_in)
        self.host_out.copy_(self.dev_out, non_blocking=True)

    def _graph_enqueue(self) -> None:
        self.dev_in.copy_(self.host_in, non_blocking=True)
        self.graph.replay()
        self.host_out.copy_(self.dev_out, non_blocking=True)

    def buffer_pointers(self) -> dict[str, int]:
        """Addresses of the static buffers: they must never move while graphs hold them."""
        names = ("host_in", "dev_in", "host_out") + (("dev_out",) if self.graph is not None else ())
        return {n: getattr(self, n).data_ptr() for n in names}


@dataclass
class Lanes:
    lanes: tuple[Lane, ...]
    device: torch.device
    graph: bool  # graphs were captured (False after an eager fallback)
    capture_time_s: float  # eager warm-up on the capture streams plus the captures
    fallback_reason: Optional[str] = None  # set when capture failed and eager ran instead

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def select_stream(self) -> Callable[[Optional[torch.cuda.Stream]], None]:
        """Makes a lane's stream current; replay() and the copies launch on the current stream."""
        if self.is_cuda:
            return torch.cuda.set_stream  # type: ignore[return-value]
        return _no_stream

    def restore_default_stream(self) -> None:
        if self.is_cuda:
            torch.cuda.set_stream(torch.cuda.default_stream(self.device))

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def __iter__(self):
        return iter(self.lanes)

    def __len__(self) -> int:
        return len(self.lanes)


def _no_stream(stream: object) -> None:
    pass


def _make_lane(index: int, spec: RunSpec, workload: Workload, device: torch.device) -> Lane:
    pinned = spec.pinned and device.type == "cuda"
    first = workload.sources[0]
    host_in = torch.empty(first.shape, dtype=first.dtype, pin_memory=pinned)
    host_in.copy_(first)
    dev_in = first.to(device, copy=True)  # real data, so the warm-up runs on real values
    host_out = torch.empty(workload.out_shape, dtype=workload.out_dtype, pin_memory=pinned)
    if device.type == "cuda":
        stream, done = torch.cuda.Stream(device), torch.cuda.Event()
    else:
        stream, done = None, HostEvent()
    return Lane(index, workload.model, host_in, dev_in, host_out, stream, done)


def _capture(body: Callable[[], torch.Tensor], warmup_iters: int, pool, stream) -> tuple:
    """Warm `body` up eagerly on `stream`, then capture it there into `pool`."""
    with torch.cuda.stream(stream):
        for _ in range(warmup_iters):  # lazy init (cuBLAS handles, autotuning) stays out of capture
            body()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=stream):
        out = body()
    return graph, out


def _capture_lane(lane: Lane, spec: RunSpec, shared) -> None:
    """Capture the lane's graphs on the lane's own stream, each into a pool of its own
    (`shared`, for the broken test variant, replaces both with one pool and one stream)."""
    model, dev_in = lane.model, lane.dev_in
    stream = shared[1] if shared else lane.stream

    def forward() -> torch.Tensor:
        return model(dev_in)

    def new_pool():
        return shared[0] if shared else torch.cuda.graph_pool_handle()

    with torch.no_grad():
        compute_pool = new_pool()
        lane.compute_graph, lane.dev_out = _capture(forward, spec.warmup_iters, compute_pool, stream)
        lane.pools.append(compute_pool)
        if spec.copies_in_graph:
            host_in, host_out = lane.host_in, lane.host_out

            def request() -> torch.Tensor:
                dev_in.copy_(host_in, non_blocking=True)
                out = model(dev_in)
                host_out.copy_(out, non_blocking=True)
                return out

            full_pool = new_pool()
            lane.graph, _ = _capture(request, spec.warmup_iters, full_pool, stream)
            lane.pools.append(full_pool)
            lane.enqueue = lane.graph.replay
            lane.h2d = lane.d2h = None
        else:
            lane.graph = lane.compute_graph
            lane.enqueue = lane._graph_enqueue
        lane.compute = lane.compute_graph.replay


def build_lanes(spec: RunSpec, workload: Workload, hazard: Optional[str] = None) -> Lanes:
    """One lane per stream; with graphs, each lane's graphs are captured on its own stream.

    `hazard` builds a deliberately broken variant for tests: "shared_pool" captures every graph
    into one memory pool on one capture stream (what the defaults of torch.cuda.graph plus a
    shared pool give), so graphs reuse each other's intermediates: the race the correctness
    check must catch when they replay concurrently.
    """
    device = torch.device(spec.device)
    lanes = tuple(_make_lane(i, spec, workload, device) for i in range(spec.streams))
    if not spec.graph:
        return Lanes(lanes, device, graph=False, capture_time_s=0.0)

    shared = (torch.cuda.graph_pool_handle(), torch.cuda.Stream(device)) if hazard == "shared_pool" else None
    start = time.perf_counter()
    current = torch.cuda.current_stream(device)
    try:
        for lane in lanes:
            _capture_lane(lane, spec, shared)
    except Exception as exc:
        # A failed capture leaves its stream current (graph.__exit__ raises before restoring).
        torch.cuda.set_stream(current)
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        torch.cuda.synchronize(device)
        message = f"capture of model {spec.model_name} into a CUDA graph failed: {reason}"
        if not spec.fallback_eager:
            raise CaptureError(
                f"{message}; make the forward capturable (no .item(), host syncs or "
                "data-dependent control flow), or set capture.fallback_eager=true or graph=false"
            ) from exc
        eager = tuple(_make_lane(i, spec, workload, device) for i in range(spec.streams))
        return Lanes(eager, device, graph=False, capture_time_s=0.0, fallback_reason=message)
    torch.cuda.synchronize(device)
    return Lanes(lanes, device, graph=True, capture_time_s=time.perf_counter() - start)


def graph_pool_bytes(device: torch.device) -> Optional[int]:
    """Device memory reserved by CUDA graph pools: segments outside the default pool (0, 0)."""
    try:
        segments = torch.cuda.memory._snapshot(device)["segments"]
    except Exception:
        return None
    total = 0
    for segment in segments:
        if segment.get("device", device.index) != device.index:
            continue
        pool = segment.get("segment_pool_id")
        if pool is None:
            return None
        if tuple(pool) != (0, 0):
            total += int(segment["total_size"])
    return total
