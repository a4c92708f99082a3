"""The request protocol: the only code that touches staging slots, events and streams at run
time. Every pass (check, throughput, enqueue, latency, profile) serves requests through it, so
the check validates exactly the loop that is timed.

Request j goes to slot `ring[j % len(ring)]` (lane j % streams, then the lane's next slot),
seen through the port of its launch shape (`keys[j % len(keys)]`: its bucket, or in eager
its size):
  acquire(j)   wait until the slot's previous request has finished its copies (its `done`
               event), so its host buffers may be rewritten and its last response read; in
               `copy` staging, write request j into the slot's pinned input; returns the port;
  launch(port) make the lane's stream current; H2D copy, graph replay (or eager forward), D2H
               copies; record the slot's `done` on the lane's stream.

Staging modes:
  direct   requests are materialized in the slots (as by a server that deserializes straight
           into pinned memory): acquire only waits.
  copy     acquire copies the request from host memory into the slot: the submitting thread
           pays for the copy, one memmove of the request's bytes (see `byte_copy`).
  copy with copy_thread
           a second host thread runs ahead around the ring: it waits for a slot's event and
           copies the next request into it, while the submitting thread launches. The
           memmove releases the GIL, so the two overlap. Two locks per slot hand it over:
           `ready` (copied: the submitter may launch it) and `free` (launched and its event
           recorded: the copy thread may wait on that event and rewrite the slot).
"""

from __future__ import annotations

import contextlib
import math
import threading
from _thread import allocate_lock
from collections.abc import Callable, Iterator, Sequence
from typing import Optional

import torch

from runner.inputs import Size
from runner.lanes import Lanes, Port, byte_copy
from runner.load import Server


def copy_plan(ports: Sequence[Port], sources: Sequence[torch.Tensor]) -> tuple[Callable[[], None], ...]:
    """Request j's copy into its port is plan[j % len(plan)]: ports and sources cycle
    together with period lcm(len(ports), len(sources))."""
    period = math.lcm(len(ports), len(sources))
    return tuple(byte_copy(ports[j % len(ports)].host_in, sources[j % len(sources)]) for j in range(period))


class Session:
    """Requests from `sources` (request j is sources[j % len(sources)], launched in shape
    keys[j % len(keys)]) through `lanes`."""

    def __init__(self, lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size]) -> None:
        self.lanes = lanes
        self.ring = lanes.ring
        self.size = len(self.ring)
        self.sources = tuple(sources)  # held: the copies below point into them
        self.keys = tuple(keys)
        self.n_keys = len(self.keys)
        # Every port the session will use exists before the first request (eager ports are
        # set up on first use; the timed loops must not), in one table: request j uses
        # ports[j % period], the ring and the shapes cycling together.
        shapes = tuple(dict.fromkeys(self.keys))
        for slot in self.ring:
            for key in shapes:
                slot.port(key)
        self.period = self.size if len(shapes) == 1 else math.lcm(self.size, self.n_keys)
        self.ports = tuple(self.ring[j % self.size].ports[self.keys[j % self.n_keys]] for j in range(self.period))
        self.direct = lanes.staging == "direct"
        # Request j's copy into its slot, bound at setup (the timed loops only call it).
        self.copies = () if self.direct else copy_plan(self.ports, self.sources)
        self.n_copies = len(self.copies)
        self.threaded = lanes.staging == "copy" and lanes.copy_thread
        self.error: Optional[BaseException] = None
        self._stop = False
        self._thread: Optional[threading.Thread] = None
        if self.direct:
            self.acquire, self.wait, self.stage = self._wait, self._wait, _no_stage
        elif self.threaded:
            self.acquire = self.wait = self._acquire_staged
            self.stage, self.launch = _no_stage, self._launch_staged
        else:
            self.acquire, self.wait, self.stage = self._acquire_copy, self._wait, self._stage

    # --- the protocol ---------------------------------------------------------------------
    # `acquire` is `wait` then `stage`, fused: the throughput loop pays for one call.
    def _wait(self, j: int) -> Port:
        port = self.ports[j % self.period]
        port.wait()
        return port

    def _acquire_copy(self, j: int) -> Port:
        port = self.ports[j % self.period]
        port.wait()
        self.copies[j % self.n_copies]()
        return port

    def _stage(self, j: int, port: Port) -> None:
        self.copies[j % self.n_copies]()

    def _acquire_staged(self, j: int) -> Port:
        port = self.ports[j % self.period]
        port.slot.ready.acquire()  # the copy thread has written request j into it
        if self.error is not None:
            raise RuntimeError(f"the copy thread failed: {self.error}") from self.error
        return port

    @staticmethod
    def launch(port: Port) -> None:
        port.select()
        port.enqueue()
        port.record()

    @staticmethod
    def _launch_staged(port: Port) -> None:
        port.select()
        port.enqueue()
        port.record()
        port.slot.free.release()  # the copy thread may now wait on this record and rewrite the slot

    def launch_marked(self, port: Port, marks: Sequence[Callable[[], None]]) -> None:
        """`launch` with `marks[stage]()` between its stages (0: before H2D, 1: after it, 2:
        after compute, 3: after D2H); with the copies inside the graph only 0 and 3."""
        port.select()
        marks[0]()
        if port.h2d is None:
            port.enqueue()
        else:
            port.h2d()
            marks[1]()
            port.compute()
            marks[2]()
            port.d2h()
        marks[3]()
        port.record()
        if self.threaded:
            port.slot.free.release()

    # --- the copy thread ------------------------------------------------------------------
    def _copy_ahead(self, free: list, ready: list) -> None:
        """The copy thread. It holds its session's locks itself: a later session replaces the
        slots' locks, and a thread that has not yet noticed its stop must not take those."""
        size, copies, n, ports, period = self.size, self.copies, self.n_copies, self.ports, self.period
        j = 0
        i = -1
        try:
            while True:
                i = j % size
                while not free[i].acquire(timeout=0.05):  # the timeout only notices a stop
                    if self._stop:
                        return
                if self._stop:
                    return
                port = ports[j % period]
                port.wait()  # the slot's last request has finished its copies
                copies[j % n]()
                ready[i].release()
                j += 1
        except BaseException as exc:  # hand the failure to the submitting thread
            self.error = exc
            if i >= 0 and ready[i].locked():
                ready[i].release()

    def open(self) -> None:
        self.lanes.synchronize()
        if not self.threaded:
            return
        for slot in self.ring:
            slot.free, slot.ready = allocate_lock(), allocate_lock()
            slot.ready.acquire()  # nothing copied yet
        locks = ([slot.free for slot in self.ring], [slot.ready for slot in self.ring])
        self._thread = threading.Thread(target=self._copy_ahead, args=locks, name="runner-copy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the copy thread (requests it copied ahead are dropped), drain the device,
        make the default stream current again."""
        try:
            thread = self._thread
            if thread is not None:
                self._stop = True  # the thread also notices this within 50 ms on its own
                while thread.is_alive():
                    for slot in self.ring:  # hand back every copied, unlaunched slot: it wakes
                        if slot.ready.acquire(blocking=False):
                            slot.free.release()
                    thread.join(0.001)
                self._thread = None
            self.lanes.synchronize()
        finally:
            self.lanes.restore_default_stream()

    def raise_late_error(self) -> None:
        """A copy the thread made ahead, after the submitter's last request, failed."""
        if self.error is not None:
            raise RuntimeError(f"the copy thread failed: {self.error}") from self.error


def _no_stage(j: int, port: Port) -> None:
    pass


@contextlib.contextmanager
def serve(lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size]) -> Iterator[Session]:
    """A session over `lanes`: the device is idle when it starts and when it ends."""
    session = Session(lanes, sources, keys)
    session.open()
    try:
        yield session
    except BaseException:
        session.close()
        raise
    session.close()
    session.raise_late_error()


# --- open loop: requests go to the first free slot, not around the ring ---------------------

class SlotServer(Server):
    """One slot as a server of `runner.load.open_loop`: free when its `done` event has completed
    (on the CPU every launch has finished when it returns: synchronous)."""

    def __init__(self, slot, sources: Sequence[torch.Tensor], keys: Sequence[Size], copy: bool) -> None:
        self.ports = slot.ports
        self.sources, self.keys = tuple(sources), tuple(keys)  # held: the copies point into the sources
        # Request j's port, looked up once: a dict keyed by a frozen dataclass costs ~0.2 us a
        # request in the timed loop, a tuple's index a tenth of that.
        self.port_of = tuple(slot.ports[key] for key in self.keys)
        # Request j's copy into this slot (seen in its launch shape), bound once; none in direct staging.
        self.copies: tuple[Callable[[], None], ...] = ()
        if copy:
            self.copies = copy_plan(list(self.port_of), self.sources)
        self.sync = slot.done is None
        self.query = slot.done.query if slot.done is not None else None

    def start(self, j: int) -> None:
        port = self.port_of[j % len(self.port_of)]
        if self.copies:
            self.copies[j % len(self.copies)]()
        port.select()
        port.enqueue()
        port.record()

    def done(self) -> bool:
        return self.query()


@contextlib.contextmanager
def open_servers(lanes: Lanes, sources: Sequence[torch.Tensor], keys: Sequence[Size]) -> Iterator[list[SlotServer]]:
    """Every slot as a server, in ring order (the first free one is on the least used lane)."""
    with serve(lanes, sources, keys) as session:  # sets up every port; idle device at both ends
        yield [SlotServer(slot, sources, keys, not session.direct) for slot in session.ring]
