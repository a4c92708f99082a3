"""Per-stream lanes and their rings of staging slots: every buffer, graph and event a request
touches, built and captured at setup. How requests move through them is `runner.protocol`.

A lane owns what one stream's requests touch, so lanes share nothing:
- its own stream, on which its graphs are captured and replayed (graphs captured on one stream
  can embed the same cuBLAS workspace and race when replayed concurrently);
- its own graph memory pools (graphs sharing a pool overwrite each other's intermediates when
  replayed concurrently);
- its own static device input (one flat byte buffer; each input is a typed view of it) and
  static device outputs;
- a ring of `slots`: each slot is a pinned host input and outputs plus the `done` event
  recorded after the slot's last copy. A slot's host buffers are rewritten, or read, only
  after its event has completed; with several slots the host can stage the lane's next
  request while the previous one still runs.

A request of a given launch shape (a bucket with graphs; the exact size in eager) uses a
`Port`: the slot's buffers seen in that shape's layout, with the callables that launch it.

With `copies_in_graph` every slot has a graph of its own per bucket (the slot's host
addresses are baked into it). Within one lane, all graphs of one kind share one pool: the
compute graphs of every bucket share one, and the slot graphs of every slot and bucket share
another. That is safe because a lane's graphs replay strictly one after another on the lane's
stream, and a graph's outputs are read right after its own replay, on that stream (its D2H
copy, inside a slot graph or just after the compute graph; the check's and the latency pass's
reads the same): buckets are captured largest first, so the smaller ones fit in memory the
largest already reserved, and a smaller bucket's static outputs may lie in what a larger
bucket's replay uses as scratch. Read `dev_out[key]` only right after replaying `key`'s graph.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch

from runner.build import Workload, storage_address
from runner.errors import CaptureError, ConfigError
from runner.inputs import Size, buckets
from runner.spec import RunSpec


def _nothing() -> None:
    pass


def byte_copy(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], None]:
    """`dst` <- `src` as one memmove of src's bytes on the calling thread, bound now.

    Not `Tensor.copy_`: torch spreads a copy of more than 32K elements (32 KB of request
    bytes) over its intra-op threads, so a request's copy would cost what torch's thread count
    and the other cores' load make it, and no longer be paid by the thread the method names.
    ctypes releases the GIL around the call, so the copy thread still overlaps the launches.
    The pointers are taken once: both tensors must outlive the returned call (the session
    holds its sources, the lanes their slots)."""
    for what, t in (("slot", dst), ("request", src)):
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"request copy: the {what} must be a contiguous host tensor, not {t.device} "
                             f"with strides {t.stride()}")
    nbytes, room = src.numel() * src.element_size(), dst.numel() * dst.element_size()
    if nbytes != room:
        raise ValueError(f"request copy: a request of {nbytes} bytes into a slot input of {room}")
    return functools.partial(ctypes.memmove, dst.data_ptr(), src.data_ptr(), nbytes)


def _host_copy(host: torch.Tensor, dev: torch.Tensor) -> None:
    """A response leaf copied out on the CPU, where "device" and host are both host memory:
    one memmove on this thread where the leaf has the slot's shape and type and is contiguous
    (see `byte_copy`), and holds its values as stored (no lazy conjugate or negation flag)."""
    if dev.shape != host.shape:
        # copy_ would broadcast a (1, n) leaf over a (2, n) buffer: a response whose size follows
        # its values then passed the check with its first row repeated (review).
        raise RuntimeError(f"an output came back as {tuple(dev.shape)}, its response buffer holds {tuple(host.shape)}")
    if dev.dtype == host.dtype and dev.is_contiguous() and not dev.is_conj() and not dev.is_neg():
        ctypes.memmove(host.data_ptr(), dev.data_ptr(), host.numel() * host.element_size())
    else:  # another layout or type, or a lazy flag: copy_ converts and resolves
        host.copy_(dev)


def _unfit(unfit: Sequence[str], paths: Sequence[str]) -> str:
    """The fix for outputs `unfit` (of `paths`) whose size the response buffers cannot hold:
    keep the others, those that kept their size here (boxes and their scores both follow a
    threshold: the hint had offered the scores)."""
    others = [p for p in paths if p not in unfit]
    fix = f"leave it out with model.outputs=[{','.join(others)}]" if others else \
        "return one of a fixed size per request size"
    if len(unfit) > 1:
        fix = f"so did {', '.join(unfit[1:])}; " + fix.replace("leave it out", "leave them out")
    return f"an output whose size follows the input's values, or grows as requests shrink, does not fit the " \
           f"response buffers; {fix}"


class Slot:
    """One position of a lane's ring: pinned input and output buffers and the event guarding
    them. `ports` holds the slot seen in each launch shape (built on first use in eager).

    The callables are bound once at setup so the request protocol calls C functions directly:
    `wait` (the event's synchronize), `select` (make the lane's stream current: replay() and the
    copies launch on the current stream), `record` (the event, on the lane's stream;
    `Event.record()` without a stream builds a Stream object per call).
    """

    __slots__ = ("lane", "index", "host_in", "host_out", "done", "wait", "select", "record", "ports",
                 "ready", "free")  # the copy thread's handshake locks, set by the protocol per session

    def __init__(self, lane: Lane, index: int, host_in: torch.Tensor, host_out: tuple, done: Any) -> None:
        self.lane = lane
        self.index = index
        self.host_in = host_in  # flat uint8: the request is written (or materialized) here
        self.host_out = host_out  # one flat buffer per output leaf, sized for the largest bucket
        self.done = done  # None on the CPU, where wait and record do nothing
        self.ports: dict[Size, Port] = {}
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

    def port(self, key: Size) -> Port:
        port = self.ports.get(key)
        if port is None:  # eager: any size, set up on first use
            if self.lane.compute_graphs:
                raise RuntimeError(f"no graph was captured for requests of size {key}")
            port = self.ports[key] = Port(self, key)
            port.bind_eager()
        return port


class Port:
    """A slot in one launch shape: views of its buffers in that layout, and how to launch it.

    `enqueue` is the whole request (H2D copy, compute, D2H copies); `h2d`, `compute` and `d2h`
    are its three stages, for the latency pass; `h2d` and `d2h` are None when the copies live
    inside the slot's graph. `host_out` are the response's leaves (in eager, bound on the first
    request, when their shapes are known).
    """

    __slots__ = ("slot", "key", "host_in", "dev_in", "args", "host_out", "dev_out", "graph",
                 "wait", "select", "record", "enqueue", "h2d", "compute", "d2h")

    def __init__(self, slot: Slot, key: Size) -> None:
        lane = slot.lane
        layout = lane.layout(key)
        self.slot, self.key = slot, key
        self.host_in = slot.host_in[: layout.nbytes]
        self.dev_in = lane.dev_in[: layout.nbytes]
        self.args = layout.views(lane.dev_in)  # what forward reads
        self.host_out: Optional[tuple[torch.Tensor, ...]] = None
        self.dev_out: tuple[torch.Tensor, ...] = ()
        self.graph: Optional[torch.cuda.CUDAGraph] = None  # with copies in graph: H2D, compute, D2H
        self.wait, self.select, self.record = slot.wait, slot.select, slot.record
        self.enqueue: Callable[[], None] = _nothing
        self.h2d: Optional[Callable[[], None]] = None
        self.compute: Callable[[], None] = _nothing
        self.d2h: Optional[Callable[[], None]] = None

    def bind_host_out(self, outs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        flats, paths = self.slot.host_out, self.slot.lane.out_paths
        unfit = [(path, flat, out) for path, flat, out in zip(paths, flats, outs, strict=True)
                 if out.numel() > flat.numel()]
        if unfit:
            path, flat, out = unfit[0]
            raise ConfigError(f"output '{path}' of a request of size {self.key} has {out.numel()} elements, more than "
                              f"the {flat.numel()} it had in the first forward (a request of the largest size): "
                              + _unfit([p for p, _, _ in unfit], paths))
        self.host_out = tuple(flat[: out.numel()].view(out.shape) for flat, out in zip(flats, outs, strict=False))
        return self.host_out

    def changed_shape(self) -> Optional[ConfigError]:
        """After a failed eager request: the output whose shape differs from the one its
        response buffer was bound to (its size follows the input's values), named, or None."""
        paths = self.slot.lane.out_paths
        changed = [(path, host, dev) for path, host, dev in zip(paths, self.host_out or (), self.dev_out, strict=False)
                   if tuple(host.shape) != tuple(dev.shape)]
        if not changed:
            return None
        path, host, dev = changed[0]
        return ConfigError(f"output '{path}' of requests of size {self.key} came back as {tuple(host.shape)}, then "
                           f"as {tuple(dev.shape)}: " + _unfit([p for p, _, _ in changed], paths))

    def bind_eager(self) -> None:
        host_in, dev_in, args, forward = self.host_in, self.dev_in, self.args, self.slot.lane.forward
        if self.slot.lane.stream is None:
            # On the CPU the copies in and out are host copies: one memmove each on this thread.
            # Tensor.copy_ spreads a copy of over 32K elements across torch's threads: on a busy
            # 2-core host a 128 KB request's copy in took 7.9 ms (3.6 us on one thread).
            h2d: Callable[[], Any] = byte_copy(dev_in, host_in)
            copy_out: Callable[[torch.Tensor, torch.Tensor], Any] = _host_copy
        else:  # partials of C methods: no Python frame of their own per request
            h2d = functools.partial(dev_in.copy_, host_in, non_blocking=True)
            copy_out = functools.partial(torch.Tensor.copy_, non_blocking=True)

        def compute() -> None:
            self.dev_out = forward(args)

        def d2h() -> None:
            for host, dev in zip(self.host_out or self.bind_host_out(self.dev_out), self.dev_out, strict=False):
                copy_out(host, dev)

        def enqueue() -> None:
            h2d()
            outs = self.dev_out = forward(args)
            for host, dev in zip(self.host_out or self.bind_host_out(outs), outs, strict=False):
                copy_out(host, dev)

        self.h2d, self.compute, self.d2h, self.enqueue = h2d, compute, d2h, enqueue

    def bind_graph(self, compute_graph: torch.cuda.CUDAGraph, dev_out: tuple[torch.Tensor, ...]) -> None:
        """Copies around the lane's compute graph of this shape."""
        host_in, dev_in, replay = self.host_in, self.dev_in, compute_graph.replay
        self.dev_out = dev_out
        pairs = tuple(zip(self.bind_host_out(dev_out), dev_out, strict=False))

        def h2d() -> None:
            dev_in.copy_(host_in, non_blocking=True)

        def d2h() -> None:
            for host, dev in pairs:
                host.copy_(dev, non_blocking=True)

        def enqueue() -> None:
            dev_in.copy_(host_in, non_blocking=True)
            replay()
            for host, dev in pairs:
                host.copy_(dev, non_blocking=True)

        self.h2d, self.compute, self.d2h, self.enqueue = h2d, replay, d2h, enqueue

    def bind_full_graph(self, graph: torch.cuda.CUDAGraph, compute_graph: torch.cuda.CUDAGraph) -> None:
        """The copies are inside this port's own graph: one replay is the whole request."""
        self.graph = graph
        self.h2d = self.d2h = None
        self.enqueue = graph.replay
        self.compute = compute_graph.replay


class Lane:
    """One stream: its static device buffers, its graphs per launch shape, its ring of slots."""

    __slots__ = ("index", "stream", "forward", "out_paths", "layout", "dev_in", "dev_out",
                 "compute_graphs", "pools", "slots")

    def __init__(self, index: int, workload: Workload, dev_in: torch.Tensor, stream) -> None:
        self.index = index
        self.forward = workload.forward  # forward's keyword arguments -> the kept output leaves
        self.out_paths = workload.out_paths
        self.layout = workload.layout  # launch shape -> where its inputs sit in dev_in / host_in
        self.stream: Optional[torch.cuda.Stream] = stream
        self.dev_in: torch.Tensor = dev_in  # static device input (flat bytes), read by the graphs
        self.dev_out: dict[Size, tuple[torch.Tensor, ...]] = {}  # static device outputs per shape
        self.compute_graphs: dict[Size, torch.cuda.CUDAGraph] = {}  # compute only (the ceiling)
        self.pools: list = []
        self.slots: tuple[Slot, ...] = ()

    def compute(self, key: Size) -> Callable[[], None]:
        """The compute alone (no copies) for one shape: the ceiling's unit of work."""
        graph = self.compute_graphs.get(key)
        return graph.replay if graph is not None else self.slots[0].port(key).compute

    def buffer_pointers(self) -> dict[str, int]:
        """Addresses of the static buffers: they must never move while graphs hold them."""
        pointers = {"dev_in": self.dev_in.data_ptr()}
        for key, outs in self.dev_out.items():
            for i, out in enumerate(outs):
                pointers[f"dev_out[{key}][{i}]"] = out.data_ptr()
        for slot in self.slots:
            pointers[f"host_in[{slot.index}]"] = slot.host_in.data_ptr()
            for i, out in enumerate(slot.host_out):
                pointers[f"host_out[{slot.index}][{i}]"] = out.data_ptr()
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
    plan = workload.plan
    nbytes = workload.layout(workload.largest).nbytes
    first = workload.largest_request
    dev_in = first.to(device, copy=True)  # real data, so the warm-up runs on real values
    stream = torch.cuda.Stream(device) if device.type == "cuda" else None
    lane = Lane(index, workload, dev_in, stream)
    slots = []
    for k in range(spec.slots):
        host_in = torch.zeros(nbytes, dtype=torch.uint8, pin_memory=pinned)
        # Direct staging serves what the slots hold: distinct requests, one per slot, until the
        # check writes its own there (with buckets, a slot's bytes are read in each request's
        # shape: every input sits where it does in the largest, so they are that input's values).
        # Under a smaller request, the largest one's: values in every input's range, where zeros
        # were not (1-based ids, read in a larger bucket's shape by the capture's warm-up).
        host_in[: first.numel()].copy_(first)
        entry = plan[(k * spec.streams + index) % len(plan)]
        for _, offset, field_bytes, _, _ in workload.layout(entry.key).fields:  # its inputs, not the gaps between
            host_in[offset : offset + field_bytes].copy_(entry.flat[offset : offset + field_bytes])
        host_out = tuple(torch.empty(n, dtype=dt, pin_memory=pinned) for n, dt in workload.out_numel_dtypes)
        done = torch.cuda.Event() if stream is not None else None  # the CPU is synchronous
        slots.append(Slot(lane, k, host_in, host_out, done))
    lane.slots = tuple(slots)
    return lane


def _capture(body: Callable[[], Any], warmup_iters: int, pool, stream) -> tuple:
    """Warm `body` up eagerly on `stream`, then capture it there into `pool`."""
    with torch.cuda.stream(stream):
        for _ in range(warmup_iters):  # lazy init (cuBLAS handles, autotuning) stays out of capture
            body()
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool, stream=stream):
        out = body()
    return graph, out


def capture_lane(lane: Lane, keys: list[Size], warmup_iters: int, copies_in_graph: bool) -> None:
    """Capture, on the lane's own stream into pools of the lane's own, a compute graph per
    launch shape, and with `copies_in_graph` one graph per slot and shape. `keys` come largest
    first. A lane's shapes share its pools: see the module's docstring."""
    forward, stream = lane.forward, lane.stream
    compute_pool = torch.cuda.graph_pool_handle()
    lane.pools.append(compute_pool)
    slot_pool = torch.cuda.graph_pool_handle() if copies_in_graph else None
    if slot_pool is not None:
        lane.pools.append(slot_pool)
    with torch.no_grad():
        for key in keys:
            args = lane.layout(key).views(lane.dev_in)
            graph, outs = _capture(lambda args=args: forward(args), warmup_iters, compute_pool, stream)
            lane.compute_graphs[key], lane.dev_out[key] = graph, tuple(outs)
            for slot in lane.slots:
                port = slot.ports[key] = Port(slot, key)
                if not copies_in_graph:
                    port.bind_graph(graph, lane.dev_out[key])
                    continue
                host_out = port.bind_host_out(lane.dev_out[key])

                # One copy per input, of its bytes at this size: a smaller shape's span would
                # carry the gaps to where each input starts in the largest (see inputs.Layout),
                # up to 86x the bytes for a small bucket of three inputs. Inside the graph the
                # extra copy nodes cost the host nothing.
                pairs = tuple((port.dev_in[o : o + n], port.host_in[o : o + n]) for _, o, n, _, _ in lane.layout(key).fields)

                def request(pairs=pairs, port=port, host_out=host_out) -> tuple:
                    for dev, host in pairs:
                        dev.copy_(host, non_blocking=True)
                    outs = forward(port.args)
                    for host, dev in zip(host_out, outs, strict=False):
                        host.copy_(dev, non_blocking=True)
                    return outs

                full, _ = _capture(request, warmup_iters, slot_pool, stream)
                port.bind_full_graph(full, graph)


def build_lanes(spec: RunSpec, workload: Workload) -> Lanes:
    """One lane per stream; with graphs, each lane's graphs are captured on its own stream."""
    device = torch.device(spec.device)

    def lanes_of(graph: bool, capture_time_s: float, lanes, reason: Optional[str] = None) -> Lanes:
        return Lanes(lanes, device, graph, capture_time_s, spec.staging, spec.copy_thread, reason)

    lanes = tuple(_make_lane(i, spec, workload, device) for i in range(spec.streams))
    if device.type == "cuda" and len({lane.stream.cuda_stream for lane in lanes}) < len(lanes):  # type: ignore[union-attr]
        raise RuntimeError(f"the {len(lanes)} lanes did not get distinct CUDA streams from torch's pool")
    if not spec.graph:
        _refuse_shared_eager_outputs(spec, workload, lanes)
        return lanes_of(False, 0.0, lanes)

    start = time.perf_counter()
    current = torch.cuda.current_stream(device)
    try:
        _capture_lanes(spec, lanes)
    except Exception as exc:
        # A failed capture leaves its stream current (graph.__exit__ raises before restoring).
        torch.cuda.set_stream(current)
        if isinstance(exc, (torch.cuda.OutOfMemoryError, ConfigError)):  # ConfigError: an output that does not fit
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        torch.cuda.synchronize(device)
        message = f"capture of model {spec.model_name} into a CUDA graph failed: {reason}"
        if not spec.fallback_eager:
            raise CaptureError(
                f"{message}; make the forward capturable (no .item(), host syncs or "
                "data-dependent control flow), or set capture.fallback_eager=true or graph=false"
            ) from exc
    else:
        torch.cuda.synchronize(device)
        _refuse_shared_outputs(spec, workload, [lane.dev_out.values() for lane in lanes], lanes, "every stream's graph",
                               "replayed at once")
        return lanes_of(True, time.perf_counter() - start, lanes)
    # The eager fallback, outside the handler: the failed lanes' graphs and pools (held by them
    # and by the exception's frames) are freed before the eager lanes' first forwards.
    lanes = ()
    gc.collect()
    eager = tuple(_make_lane(i, spec, workload, device) for i in range(spec.streams))
    try:
        _refuse_shared_eager_outputs(spec, workload, eager)
    except ConfigError as exc:  # the capture's failure first: it is why eager was tried
        raise ConfigError(f"{message}; its eager fallback (capture.fallback_eager=true) is refused too: {exc}") from None
    return lanes_of(False, 0.0, eager, message)


def _capture_lanes(spec: RunSpec, lanes: Sequence[Lane]) -> None:
    """Each lane's graphs (a function of its own: after a failed capture no loop variable
    of the caller's holds the failed lane, its graphs or its pools)."""
    for lane in lanes:
        capture_lane(lane, buckets(spec.model), spec.warmup_iters, spec.copies_in_graph)


def _refuse_shared_eager_outputs(spec: RunSpec, workload: Workload, lanes: Sequence[Lane]) -> None:
    """Eager over several CUDA streams: one request of the largest size through each lane,
    all in flight at once, untimed; each port holds its lane's response, so two lanes' outputs
    at one address, both alive, are one buffer of the model's own. Their forwards would write it
    over each other's responses while the copies out read it: a race the check, which serves
    requests on every stream at once too, catches only when the timing falls that way."""
    if len(lanes) < 2 or lanes[0].stream is None:
        return
    ports = [lane.slots[0].port(workload.largest) for lane in lanes]
    try:
        with torch.no_grad():  # as every forward of the job (a compiled model's guards include grad mode)
            for port in ports:
                port.select()
                port.enqueue()
                port.record()
    finally:
        torch.cuda.set_stream(torch.cuda.default_stream(lanes[0].dev_in.device))
    torch.cuda.synchronize(lanes[0].dev_in.device)
    _refuse_shared_outputs(spec, workload, [[port.dev_out] for port in ports], lanes, "every stream's forward",
                           "run at once")


def _refuse_shared_outputs(spec: RunSpec, workload: Workload, outputs: Sequence[Any], lanes: Sequence[Lane], where: str,
                           when: str) -> None:
    """A forward that returns a buffer of the model's own (written in place, not a new tensor)
    is captured into every lane's graph at that one address (`outputs`: per lane, its output
    tuples): the lanes' graphs, replaying at once on their streams, would write it over each
    other's responses. Refused by name. Not an empty leaf (no memory: address 0 in every lane)
    nor a parameter of the model (read, never written: nothing to race on)."""
    parameters = {storage_address(p) for p in workload.model.parameters()} - {None}  # None: a wrapper subclass's
    owner: dict[int, int] = {}
    for lane, tuples in zip(lanes, outputs, strict=True):
        for outs in tuples:
            for path, out in zip(lane.out_paths, outs, strict=False):
                if out.numel() == 0 or storage_address(out) in parameters:
                    continue
                first = owner.setdefault(out.data_ptr(), lane.index)
                if first != lane.index:
                    raise ConfigError(
                        f"model {spec.model_name}: output '{path}' is one buffer of the model's own, the same in {where} "
                        f"(streams {first} and {lane.index}): {when} they would write each other's responses; return a "
                        "new tensor from forward (e.g. out.clone()), or use streams=1")


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
