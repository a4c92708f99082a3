"""An independent, minimal loop of the runner's schedule, to check the runner against.

It imports nothing from `runner`: it takes a built model and request tensors, and writes the
schedule out by hand with torch alone. Per request on stream s, slot k (round-robin over the
streams, then around each stream's ring of slots):
  wait for the slot's event; [copy the request into the slot's pinned input]; make s current;
  H2D copy, replay, D2H copy (or one replay of the slot's graph when the copies are captured);
  record the slot's event on s.
`copy` puts the bracketed copy on the submitting thread; `copy_thread` puts it on a helper
thread that runs ahead around the ring (raw locks hand each slot over); `direct` leaves it out.
The copy is one `ctypes.memmove` of the request's bytes: `Tensor.copy_` would hand copies of
more than 32K elements to torch's intra-op threads, so its cost would depend on how the request's
bytes are typed (the runner's are bytes, these are the input's dtype) and on the thread count.
"""

from __future__ import annotations

import _thread
import ctypes
import functools
import threading
import time

import torch


class ReferenceLoop:
    def __init__(self, model, sources, streams: int, slots: int, staging: str, copies_in_graph: bool) -> None:
        assert staging in ("direct", "copy", "copy_thread")
        self.sources, self.staging = sources, staging  # held: the copies point into the sources
        self.entries = []  # request order: (event, stream, host_in, replay-or-None, h2d/d2h tensors)
        per_stream = []
        with torch.no_grad():
            for s in range(streams):
                stream = torch.cuda.Stream()
                d_in = sources[s % len(sources)].cuda()
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(d_in)
                stream.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=torch.cuda.graph_pool_handle(), stream=stream):
                    d_out = model(d_in)
                ring = []
                slot_pool = torch.cuda.graph_pool_handle()
                for k in range(slots):
                    h_in = sources[(k * streams + s) % len(sources)].clone().pin_memory()
                    h_out = torch.empty(d_out.shape, dtype=d_out.dtype, pin_memory=True)
                    slot_graph = None
                    if copies_in_graph:
                        slot_graph = torch.cuda.CUDAGraph()
                        with torch.cuda.stream(stream):
                            d_in.copy_(h_in, non_blocking=True)
                            model(d_in)
                        stream.synchronize()
                        with torch.cuda.graph(slot_graph, pool=slot_pool, stream=stream):
                            d_in.copy_(h_in, non_blocking=True)
                            h_out.copy_(model(d_in), non_blocking=True)
                    ring.append((torch.cuda.Event(), stream, h_in, h_out, d_in, g, d_out, slot_graph))
                per_stream.append(ring)
        self.entries = [per_stream[s][k] for k in range(slots) for s in range(streams)]
        # The C functions behind Event.synchronize, Event.record and torch.cuda.set_stream,
        # called directly: the Python wrappers cost several calls per request.
        event = torch._C._CudaEventBase
        self.calls = [
            (event.synchronize.__get__(done),
             functools.partial(torch._C._cuda_setStream, stream_id=stream.stream_id,
                               device_index=stream.device_index, device_type=stream.device_type),
             done, stream, h_in, h_out, d_in, g, d_out, slot_graph)
            for done, stream, h_in, h_out, d_in, g, d_out, slot_graph in self.entries
        ]
        self.record = event.record
        # Host copies by address: each slot's pinned input, each request's bytes.
        self.slot_ptrs = [entry[2].data_ptr() for entry in self.entries]
        self.source_ptrs = [src.data_ptr() for src in sources]
        self.nbytes = sources[0].numel() * sources[0].element_size()
        assert all(src.is_contiguous() and src.numel() * src.element_size() == self.nbytes for src in sources)
        assert all(entry[2].numel() * entry[2].element_size() == self.nbytes for entry in self.entries)
        torch.cuda.synchronize()

    def _copier(self, count_hint, state) -> None:
        entries, slot_ptrs, source_ptrs, nbytes, memmove = (self.entries, self.slot_ptrs, self.source_ptrs,
                                                           self.nbytes, ctypes.memmove)
        n, size = len(source_ptrs), len(entries)
        ready, free = state["ready"], state["free"]
        j = 0
        while True:
            i = j % size
            while not free[i].acquire(timeout=0.05):
                if state["stop"]:
                    return
            if state["stop"]:
                return
            entries[i][0].synchronize()
            memmove(slot_ptrs[i], source_ptrs[j % n], nbytes)
            ready[i].release()
            j += 1

    def run(self, min_requests: int, min_seconds: float) -> float:
        """One pass, all slots in flight; returns requests/s. A copy thread starts, and fills
        the ring, before the clock starts, as the runner's does."""
        loop = {"direct": self._direct, "copy": self._copy, "copy_thread": self._copy_thread}[self.staging]
        torch.cuda.synchronize()
        with torch.no_grad():
            requests, elapsed = loop(min_requests, min_seconds)
        torch.cuda.set_stream(torch.cuda.default_stream())
        return requests / elapsed

    # One minimal loop per staging mode, so none pays for another's branches.
    def _direct(self, min_requests: int, min_seconds: float) -> tuple[int, float]:
        record = self.record
        j = 0
        start = time.perf_counter()
        deadline = start + min_seconds
        while j < min_requests or time.perf_counter() < deadline:
            for wait, select, done, stream, h_in, h_out, d_in, g, d_out, slot_graph in self.calls:
                wait()
                select()
                if slot_graph is not None:
                    slot_graph.replay()
                else:
                    d_in.copy_(h_in, non_blocking=True)
                    g.replay()
                    h_out.copy_(d_out, non_blocking=True)
                record(done, stream)
            j += len(self.calls)
        torch.cuda.synchronize()
        return j, time.perf_counter() - start

    def _copy(self, min_requests: int, min_seconds: float) -> tuple[int, float]:
        source_ptrs, n, nbytes, memmove = self.source_ptrs, len(self.source_ptrs), self.nbytes, ctypes.memmove
        record = self.record
        calls = [(ptr, *call) for ptr, call in zip(self.slot_ptrs, self.calls, strict=True)]
        j = 0
        start = time.perf_counter()
        deadline = start + min_seconds
        while j < min_requests or time.perf_counter() < deadline:
            for slot_ptr, wait, select, done, stream, h_in, h_out, d_in, g, d_out, slot_graph in calls:
                wait()
                memmove(slot_ptr, source_ptrs[j % n], nbytes)
                select()
                if slot_graph is not None:
                    slot_graph.replay()
                else:
                    d_in.copy_(h_in, non_blocking=True)
                    g.replay()
                    h_out.copy_(d_out, non_blocking=True)
                record(done, stream)
                j += 1
        torch.cuda.synchronize()
        return j, time.perf_counter() - start

    def _copy_thread(self, min_requests: int, min_seconds: float) -> tuple[int, float]:
        state = {"ready": [_thread.allocate_lock() for _ in self.entries],
                 "free": [_thread.allocate_lock() for _ in self.entries], "stop": False}
        for lock in state["ready"]:
            lock.acquire()
        helper = threading.Thread(target=self._copier, args=(None, state), daemon=True)
        helper.start()
        ready, free, record = state["ready"], state["free"], self.record
        indexed = list(enumerate(self.calls))
        j = 0
        try:
            start = time.perf_counter()
            deadline = start + min_seconds
            while j < min_requests or time.perf_counter() < deadline:
                for i, (_, select, done, stream, h_in, h_out, d_in, g, d_out, slot_graph) in indexed:
                    ready[i].acquire()
                    select()
                    if slot_graph is not None:
                        slot_graph.replay()
                    else:
                        d_in.copy_(h_in, non_blocking=True)
                        g.replay()
                        h_out.copy_(d_out, non_blocking=True)
                    record(done, stream)
                    free[i].release()
                j += len(self.calls)
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        finally:
            state["stop"] = True
            while helper.is_alive():
                for r, f in zip(ready, free, strict=True):
                    if r.acquire(blocking=False):
                        f.release()
                helper.join(0.001)
        return j, elapsed
