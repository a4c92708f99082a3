"""Per-stream lanes and their rings of staging slots: every buffer, graph and event a request
touches, built and captured at setup. How requests move through them is `runner.protocol`.

A lane owns what one stream's requests touch, so lanes share nothing:
- its own stream, on which its graphs are captured and replayed (graphs captured on one stream
  can embed the same cuBLAS workspace and race when replayed concurrently);
- its own graph memory pools (graphs sharing a pool overwrite each other's intermediates when
  replayed concurrently);
- its own static device input and output;
- a ring of `slots`: each slot is a pinned host input and output plus the `done` event recorded
  after the slot's last copy. A slot's host buffers are rewritten, or read, only after its
  event has completed; with several slots the host can stage the lane's next request while
  the previous one still runs.

With `copies_in_graph` every slot has a graph of its own (the slot's host addresses are baked
into it). The slot graphs of one lane share one pool: they replay strictly one after another
on the lane's stream, and each ends with its own D2H copy, so no graph reads memory that
another one's replay may have reused.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from runner.build import Workload
from runner.errors import CaptureError
from runner.spec import RunSpec


def _nothing() -> None:
    pass


class Slot:
    """One request's staging on a lane: pinned input and output, and the event guarding them.

    The callables are bound once at setup so the request protocol calls C functions directly:
    `wait` (the event's synchronize), `select` (make the lane's stream current: replay() and the
    copies launch on the current stream), `enqueue` (H2D copy, compute, D2H copy), `record` (the
    event, on the lane's stream; `Event.record()` without a stream builds a Stream object per
    call). `h2d`, the lane's `compute` and `d2h` are the three stages of `enqueue`, for the
    latency pass; `h2d` and `d2h` are None when the copies live inside the slot's graph.
    """

    __slots__ = (
        "lane", "index", "host_in", "host_out", "done", "graph",
        "wait", "select", "enqueue", "record", "h2d", "d2h",
        "ready", "free",  # the copy thread's handshake locks, set by the protocol per session
    )

    def __init__(self, lane: Lane, index: int, host_in: torch.Tensor, host_out: torch.Tensor, done: Any) -> None:
        self.lane = lane
        self.index = index
        self.host_in = host_in  # (B, ...) the request is written (or materialized) here
        self.host_out = host_out  # where the response lands
        self.done = done  # None on the CPU, where wait and record do nothing
        self.graph: Optional[torch.cuda.CUDAGraph] = None  # with copies in graph: H2D, compute, D2H
        self.ready = self.free = None
        stream = lane.stream
        if stream is None:
            self.wait, self.record, self.select = _nothing, _nothing, _nothing
        else:
            base = torch._C._CudaEventBase
            self.wait = base.synchronize.__get__(done)
            self.record = functools.partial(base.record, done, stream)
            self.select = functools.partial(
                torch._C._cuda_setStream,
                stream_id=stream.stream_id, device_index=stream.device_index, device_type=stream.device_type,
            )
        self.h2d: Optional[Callable[[], None]] = None
        self.d2h: Optional[Callable[[], None]] = None
        self.enqueue: Callable[[], None] = _nothing
        self.bind_eager()

    def bind_eager(self) -> None:
        lane, host_in, host_out = self.lane, self.host_in, self.host_out
        dev_in, model = lane.dev_in, lane.model

        def h2d() -> None:
            dev_in.copy_(host_in, non_blocking=True)

        def d2h() -> None:
            host_out.copy_(lane.dev_out, non_blocking=True)

        def enqueue() -> None:
            dev_in.copy_(host_in, non_blocking=True)
            host_out.copy_(model(dev_in), non_blocking=True)

        self.h2d, self.d2h, self.enqueue = h2d, d2h, enqueue

    def bind_graph(self, compute_graph: torch.cuda.CUDAGraph, dev_out: torch.Tensor) -> None:
        """Copies around the lane's compute graph."""
        host_in, host_out, dev_in = self.host_in, self.host_out, self.lane.dev_in
        replay = compute_graph.replay

        def h2d() -> None:
            dev_in.copy_(host_in, non_blocking=True)

        def d2h() -> None:
            host_out.copy_(dev_out, non_blocking=True)

        def enqueue() -> None:
            dev_in.copy_(host_in, non_blocking=True)
            replay()
            host_out.copy_(dev_out, non_blocking=True)

        self.h2d, self.d2h, self.enqueue = h2d, d2h, enqueue

    def bind_full_graph(self, graph: torch.cuda.CUDAGraph) -> None:
        """The copies are inside the slot's own graph: one replay is the whole request."""
        self.graph = graph
        self.h2d = self.d2h = None
        self.enqueue = graph.replay


class Lane:
    """One stream: its static device buffers, its compute graph, its ring of slots."""

    __slots__ = ("index", "stream", "model", "dev_in", "dev_out", "compute_graph", "compute", "pools", "slots")

    def __init__(self, index: int, model: nn.Module, dev_in: torch.Tensor, stream) -> None:
        self.index = index
        self.model = model
        self.stream: Optional[torch.cuda.Stream] = stream
        self.dev_in: torch.Tensor = dev_in  # static device input, read by the graphs
        self.dev_out: Optional[torch.Tensor] = None  # static device output of the compute graph
        self.compute_graph: Optional[torch.cuda.CUDAGraph] = None  # compute only (the ceiling)
        self.compute: Callable[[], None] = self._eager_compute  # no copies: the ceiling, the latency stages
        self.pools: list = []
        self.slots: tuple[Slot, ...] = ()

    def _eager_compute(self) -> None:
        self.dev_out = self.model(self.dev_in)

    def buffer_pointers(self) -> dict[str, int]:
        """Addresses of the static buffers: they must never move while graphs hold them."""
        pointers = {"dev_in": self.dev_in.data_ptr()}
        if self.compute_graph is not None and self.dev_out is not None:
            pointers["dev_out"] = self.dev_out.data_ptr()
        for slot in self.slots:
            pointers[f"host_in[{slot.index}]"] = slot.host_in.data_ptr()
            pointers[f"host_out[{slot.index}]"] = slot.host_out.data_ptr()
        return pointers


@dataclass
class Lanes:
    lanes: tuple[Lane, ...]
    device: torch.device
    graph: bool  # graphs were captured (False after an eager fallback)
    capture_time_s: float  # eager warm-up on the capture streams plus the captures
    staging: str  # "direct" or "copy"
    copy_thread: bool  # copy staging on a second host thread
    fallback_reason: Optional[str] = None  # set when capture failed and eager ran instead

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def ring(self) -> tuple[Slot, ...]:
        """Every slot in request order: request j goes to lane j % streams, slot (j // streams) % slots."""
        depth = len(self.lanes[0].slots)
        return tuple(lane.slots[k] for k in range(depth) for lane in self.lanes)

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


def _make_lane(index: int, spec: RunSpec, workload: Workload, device: torch.device) -> Lane:
    pinned = spec.pinned and device.type == "cuda"
    sources = workload.sources
    dev_in = sources[0].to(device, copy=True)  # real data, so the warm-up runs on real values
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    lane = Lane(index, workload.model, dev_in, stream)
    slots = []
    for k in range(spec.slots):
        host_in = torch.empty(sources[0].shape, dtype=sources[0].dtype, pin_memory=pinned)
        # Direct staging serves what the slots hold: distinct requests, one per slot.
        host_in.copy_(sources[(k * spec.streams + index) % len(sources)])
        host_out = torch.empty(workload.out_shape, dtype=workload.out_dtype, pin_memory=pinned)
        done = torch.cuda.Event() if stream is not None else None  # the CPU is synchronous
        slots.append(Slot(lane, k, host_in, host_out, done))
    lane.slots = tuple(slots)
    return lane


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


def capture_lane(lane: Lane, warmup_iters: int, copies_in_graph: bool) -> None:
    """Capture the lane's compute graph, and with `copies_in_graph` one graph per slot, on the
    lane's own stream into pools of the lane's own."""
    model, dev_in, stream = lane.model, lane.dev_in, lane.stream
    with torch.no_grad():
        compute_pool = torch.cuda.graph_pool_handle()
        lane.compute_graph, lane.dev_out = _capture(lambda: model(dev_in), warmup_iters, compute_pool, stream)
        lane.pools.append(compute_pool)
        lane.compute = lane.compute_graph.replay
        if not copies_in_graph:
            for slot in lane.slots:
                slot.bind_graph(lane.compute_graph, lane.dev_out)
            return
        slot_pool = torch.cuda.graph_pool_handle()  # shared by the lane's slot graphs: see above
        lane.pools.append(slot_pool)
        for slot in lane.slots:
            host_in, host_out = slot.host_in, slot.host_out

            def request(host_in=host_in, host_out=host_out) -> torch.Tensor:
                dev_in.copy_(host_in, non_blocking=True)
                out = model(dev_in)
                host_out.copy_(out, non_blocking=True)
                return out

            graph, _ = _capture(request, warmup_iters, slot_pool, stream)
            slot.bind_full_graph(graph)


def build_lanes(spec: RunSpec, workload: Workload) -> Lanes:
    """One lane per stream; with graphs, each lane's graphs are captured on its own stream."""
    device = torch.device(spec.device)

    def lanes_of(graph: bool, capture_time_s: float, lanes, reason: Optional[str] = None) -> Lanes:
        return Lanes(lanes, device, graph, capture_time_s, spec.staging, spec.copy_thread, reason)

    lanes = tuple(_make_lane(i, spec, workload, device) for i in range(spec.streams))
    if not spec.graph:
        return lanes_of(False, 0.0, lanes)

    start = time.perf_counter()
    current = torch.cuda.current_stream(device)
    try:
        for lane in lanes:
            capture_lane(lane, spec.warmup_iters, spec.copies_in_graph)
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
        return lanes_of(False, 0.0, eager, message)
    torch.cuda.synchronize(device)
    return lanes_of(True, time.perf_counter() - start, lanes)


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
