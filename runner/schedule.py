"""The timed passes. Each serves requests through the one request protocol
(`runner.protocol`): wait for the slot, stage the request, launch it on the lane's stream.

The timed loops do nothing else: no allocation, logging or bookkeeping beyond a counter, and
the garbage collector is off while they run (a full collection of a heap holding torch and
Hydra would otherwise land in one pass and not in another).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import torch

from runner.inputs import Size
from runner.lanes import Lanes, _nothing
from runner.load import Server
from runner.protocol import serve

perf_counter = time.perf_counter
Forward = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The collector off for one pass. (A full collection here would cost tens of ms per pass;
    `runner.measure` collects and freezes the heap once before the passes instead.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def throughput_pass(
    lanes: Lanes,
    sources: Sequence[torch.Tensor],
    keys: Sequence[Size],
    min_requests: int,
    min_duration_s: float,
    max_duration_s: float = math.inf,
) -> tuple[int, float]:
    """All slots in flight until both minimums are met, or `max_duration_s` has passed (at
    least one turn of the ring). Returns (requests, seconds)."""
    with no_gc(), serve(lanes, sources, keys) as session:
        acquire, launch = session.acquire, session.launch
        turn = session.size  # the clock is read once per turn of the ring
        j = 0
        start = perf_counter()
        soft, hard = start + min_duration_s, start + max_duration_s
        while True:
            for k in range(j, j + turn):
                launch(acquire(k))
            j += turn
            now = perf_counter()
            if now >= hard or (j >= min_requests and now >= soft):
                break
        lanes.synchronize()
        return j, perf_counter() - start


def enqueue_pass(
    lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size], requests: int, max_duration_s: float = math.inf,
    min_requests: int = 1,
) -> dict[str, list[float]]:
    """The throughput loop with a host clock between the protocol's steps. Returns seconds per
    request spent waiting for the slot, copying the request into it (no copy in direct staging,
    nor with the copy thread, which copies off this thread: the clock's own cost), and launching it. Stops early after
    `max_duration_s` (at least one request)."""
    wait_s, copy_s, launch_s = [0.0] * requests, [0.0] * requests, [0.0] * requests
    done = requests
    with no_gc(), serve(lanes, sources, keys) as session:
        wait, stage, launch = session.wait, session.stage, session.launch
        deadline = perf_counter() + max_duration_s
        for j in range(requests):
            t0 = perf_counter()
            port = wait(j)
            t1 = perf_counter()
            stage(j, port)
            t2 = perf_counter()
            launch(port)
            t3 = perf_counter()
            wait_s[j], copy_s[j], launch_s[j] = t1 - t0, t2 - t1, t3 - t2
            if t3 > deadline and j + 1 >= min_requests:
                done = j + 1
                break
    return {"wait": wait_s[:done], "copy": copy_s[:done], "launch": launch_s[:done]}


def _stamp(stamps: list[float], stage: int) -> None:
    stamps[stage] = perf_counter()


class Timeline:
    """Stage marks per request: CUDA events on a GPU, the host clock on the CPU.

    Marks are 0: H2D start, 1: H2D end, 2: compute end, 3: D2H end; with the copies inside the
    graph only 0 and 3 exist. Times come back in microseconds since an origin taken just
    before the pass.
    """

    def __init__(self, requests: int, device: torch.device, stages: tuple[int, ...],
                 streams: Sequence[Optional[torch.cuda.Stream]] = (None,)) -> None:
        self.cuda = device.type == "cuda"
        self.streams = tuple(streams)  # request j's marks go on streams[j % len(streams)]: its lane's
        if self.cuda:
            self.origin = torch.cuda.Event(enable_timing=True)
            self.events = [
                [torch.cuda.Event(enable_timing=True) if k in stages else None for k in range(4)]
                for _ in range(requests)
            ]
            # An event comes into being at its first record: here, before the pass, not between
            # a request's stages (where the host's delay would widen a stage on an idle stream).
            for row in self.events:
                for event in row:
                    if event is not None:
                        event.record()
            torch.cuda.synchronize(device)
        self.stamps = [[float("nan")] * 4 for _ in range(requests)]
        self.host_origin_s = 0.0
        # Each request's four marks, bound before the pass: a mark is then one call (a lambda
        # per request and two calls per mark had run between a request's stages, where on an
        # idle stream the host's time widens the stage the device times).
        self.marks = [self._bind(j) for j in range(requests)]

    def _bind(self, request: int) -> tuple[Callable[[], None], ...]:
        if not self.cuda:
            return tuple(functools.partial(_stamp, self.stamps[request], k) for k in range(4))
        # On the lane's stream, named: without one, record() builds a Stream object per call.
        stream, record = self.streams[request % len(self.streams)], torch._C._CudaEventBase.record
        return tuple(_nothing if e is None else functools.partial(record, e, stream) for e in self.events[request])

    def start(self) -> None:
        if self.cuda:
            self.origin.record()
        self.host_origin_s = perf_counter()

    def times_us(self, requests: int) -> list[list[float]]:
        """For the first `requests` requests (the ones marked), the four marks in microseconds
        since the origin (NaN: not marked)."""
        if not self.cuda:
            return [[(t - self.host_origin_s) * 1e6 for t in row] for row in self.stamps[:requests]]
        nan = float("nan")
        origin = self.origin
        return [[nan if e is None else origin.elapsed_time(e) * 1e3 for e in row] for row in self.events[:requests]]


def latency_pass(
    lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size], requests: int, max_duration_s: float = math.inf,
    min_requests: int = 1,
) -> dict[str, list]:
    """The schedule with stage marks on every request, all slots in flight; stops early after
    `max_duration_s` (at least one request).

    Returns per-request device marks (us since the origin) and host enqueue start/end times
    (us since the same origin, host clock). Event records cost host time, so this pass is
    separate from the throughput passes.
    """
    host = [[0.0, 0.0] for _ in range(requests)]
    n_lanes = len(lanes)
    done = requests
    deadline = perf_counter() + max_duration_s  # the events' making (0.1 s for 2000 requests) counts too
    with no_gc(), serve(lanes, sources, keys) as session:
        staged = all(port.h2d is not None for port in session.ports)
        timeline = Timeline(requests, lanes.device, (0, 1, 2, 3) if staged else (0, 3),
                            [lane.stream for lane in lanes.lanes])
        acquire, launch_marked, marks = session.acquire, session.launch_marked, timeline.marks
        timeline.start()
        for j in range(requests):
            port = acquire(j)
            t0 = perf_counter()
            launch_marked(port, marks[j])
            host[j][0] = t0
            host[j][1] = t1 = perf_counter()
            if t1 > deadline and j + 1 >= min_requests:
                done = j + 1
                break
        lanes.synchronize()
    origin = timeline.host_origin_s
    return {
        "device_us": timeline.times_us(done),
        "host_us": [[(a - origin) * 1e6, (b - origin) * 1e6] for a, b in host[:done]],
        "lane": [j % n_lanes for j in range(done)],
    }


CEILING_STRIDE = 64  # requests between the ceiling's checks of how far the device has got


def ceiling_pass(
    lanes: Lanes, keys: Sequence[Size], min_requests: int, min_duration_s: float, max_duration_s: float = math.inf,
    stride: int = CEILING_STRIDE,
) -> tuple[int, float]:
    """The same compute replayed back to back across the lanes: no copies, no per-request host
    waits. Request j runs shape keys[j % len(keys)] on lane j % streams, as in the schedule.

    Replays return at once, so the host would run ahead of a slow model by seconds of queued
    work and the pass would end far past its time (the clock read on the host measures enqueues,
    not compute). After each stride of about CEILING_STRIDE requests the host waits until the
    device has finished the stride before the last one: two strides stay queued on every stream,
    so the device never starves, and the pass ends within two strides of its time (`stride`
    requests, rounded to whole turns of the lanes: the caller shortens it for a slow model).
    With many shapes (a bucketed plan of hundreds of requests) a stride is a piece of the
    (lane, shape) cycle, the next stride going on where it ended."""
    n = len(lanes)
    count = len(keys) if len(set(keys)) > 1 else 1
    turns = math.lcm(n, count)  # one cycle of (lane, shape) pairs
    cycle = tuple((lanes.lanes[j % n].slots[0].select, lanes.lanes[j % n].compute(keys[j % len(keys)]))
                  for j in range(turns))
    stride = max(n, stride // n * n)
    if stride >= turns:
        strides_in_order: tuple = (cycle * (stride // turns),)
    else:
        pieces = turns // math.gcd(turns, stride)
        strides_in_order = tuple(tuple(cycle[(p * stride + i) % turns] for i in range(stride)) for p in range(pieces))
    n_strides = len(strides_in_order)
    marks: tuple = ((), ())  # per stride parity: (record, wait) for every lane's stream
    if lanes.is_cuda:
        events = [[torch.cuda.Event() for _ in lanes.lanes] for _ in range(2)]
        marks = tuple(tuple((functools.partial(e.record, lane.stream), e.synchronize)
                            for e, lane in zip(row, lanes.lanes, strict=True)) for row in events)
        for row in marks:  # the events come into being at their first record: here, not in the loop
            for record, _ in row:
                record()
    requests, strides = 0, 0
    with no_gc():
        lanes.synchronize()
        start = perf_counter()
        soft, hard = start + min_duration_s, start + max_duration_s
        try:
            while True:
                order = strides_in_order[strides % n_strides]
                for select, compute in order:
                    select()
                    compute()
                requests += len(order)
                strides += 1
                for record, wait in marks[strides & 1]:
                    wait()  # the stride before the last one is done
                    record()
                now = perf_counter()
                if now >= hard or (requests >= min_requests and now >= soft):
                    break
            lanes.synchronize()
            return requests, perf_counter() - start
        finally:
            lanes.restore_default_stream()


def baseline_request(forward: Forward, request: dict[str, torch.Tensor], device: torch.device) -> None:
    """One baseline request: each input to the device, the forward, each kept leaf back."""
    for leaf in forward({name: x.to(device) for name, x in request.items()}):
        leaf.cpu()


def baseline_pass(
    forward: Forward,
    sources: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    min_requests: int,
    min_duration_s: float,
    max_duration_s: float = math.inf,
) -> tuple[int, float]:
    """What a naive user writes: pageable inputs, default stream, blocking copies (each input
    in, each kept output leaf out)."""
    n_sources = len(sources)
    k = 0
    requests = 0
    with no_gc():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = perf_counter()
        soft, hard = start + min_duration_s, start + max_duration_s
        while True:
            baseline_request(forward, sources[k], device)
            k += 1
            if k == n_sources:
                k = 0
            requests += 1
            now = perf_counter()
            if now >= hard or (requests >= min_requests and now >= soft):
                break
        return requests, perf_counter() - start


def baseline_latency_pass(
    forward: Forward, sources: Sequence[dict[str, torch.Tensor]], device: torch.device, requests: int,
    max_duration_s: float = math.inf, min_requests: int = 1,
) -> list[float]:
    """Seconds per baseline request; each request ends in a blocking D2H copy."""
    n_sources = len(sources)
    seconds = []
    with no_gc():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        deadline = perf_counter() + max_duration_s
        for j in range(requests):
            t0 = perf_counter()
            baseline_request(forward, sources[j % n_sources], device)
            t1 = perf_counter()
            seconds.append(t1 - t0)
            if t1 > deadline and j + 1 >= min_requests:
                break
    return seconds


def single_stream_pass(
    lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size], requests: int,
    max_duration_s: float = math.inf, min_requests: int = 1,
) -> list[float]:
    """One request at a time through the protocol, each waited for before the next: seconds
    from issue to completion, on the host clock."""
    seconds = []
    with no_gc(), serve(lanes, sources, keys) as session:
        acquire, launch = session.acquire, session.launch
        deadline = perf_counter() + max_duration_s
        for j in range(requests):
            t0 = perf_counter()
            port = acquire(j)
            launch(port)
            port.wait()
            t1 = perf_counter()
            seconds.append(t1 - t0)
            if t1 > deadline and j + 1 >= min_requests:
                break
    return seconds


class BaselineServer(Server):
    """The eager baseline as the one server of an open loop: synchronous, each request at its
    real size, blocking copies (see `baseline_pass`)."""

    sync = True

    def __init__(self, forward: Forward, sources: Sequence[dict[str, torch.Tensor]], device: torch.device) -> None:
        self.forward, self.sources, self.device = forward, tuple(sources), device

    def start(self, j: int) -> None:
        baseline_request(self.forward, self.sources[j % len(self.sources)], self.device)
