"""The request protocol on the CPU: ring order, staging modes, the copy thread's handshake and
its failures. (Its races against the GPU's events are in test_cuda.py.)"""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from runner import protocol, schedule
from runner.build import build
from runner.check import check_schedule
from runner.lanes import build_lanes
from runner.protocol import serve
from runner.spec import resolve

QUICK = ("measure=quick", "device=cpu", "model.batch=2")


def _lanes(make_cfg, **changes):
    """CPU lanes with settings the resolver would reduce on a CPU (several streams and slots,
    the copy thread): the protocol itself does not depend on the device."""
    spec = resolve(make_cfg(*QUICK), cuda_count=lambda: 0)
    spec = dataclasses.replace(spec, **changes)
    workload = build(spec)
    return spec, workload, build_lanes(spec, workload)


MODES = {
    "direct": dict(staging="direct", copy_thread=False),
    "copy": dict(staging="copy", copy_thread=False),
    "copy-thread": dict(staging="copy", copy_thread=True),
}


def test_the_ring_visits_every_lane_then_each_lanes_next_slot(make_cfg):
    _, _, lanes = _lanes(make_cfg, streams=3, slots=2)
    ring = lanes.ring
    assert [(slot.lane.index, slot.index) for slot in ring] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    # Every slot has buffers of its own.
    assert len({slot.host_in.data_ptr() for slot in ring}) == 6
    assert all(len(slot.host_out) == 1 for slot in ring)  # the mlp has one output leaf
    assert len({out.data_ptr() for slot in ring for out in slot.host_out}) == 6


@pytest.mark.parametrize("mode", MODES)
def test_the_check_passes_in_every_staging_mode_and_ring_depth(make_cfg, mode):
    for streams, slots in ((1, 1), (2, 3), (3, 2)):
        spec, workload, lanes = _lanes(make_cfg, streams=streams, slots=slots, **MODES[mode])
        with torch.no_grad():
            result = check_schedule(spec, workload, lanes, requests=101)
        assert result.passed and result.requests == 101, (mode, streams, slots, result)


@pytest.mark.parametrize("mode", ["copy", "copy-thread"])
def test_copy_staging_serves_each_source_in_turn(make_cfg, mode):
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES[mode])
    sources = [torch.full_like(workload.sources[0], k) for k in range(5)]  # each request's bytes all k
    keys = workload.keys[:1]  # one launch shape
    seen = []
    with torch.no_grad(), serve(lanes, sources, keys) as session:
        for j in range(12):
            port = session.acquire(j)
            seen.append(int(port.host_in[0]))
            assert bool((port.host_in == port.host_in[0]).all())  # the whole request, not a part of it
            session.launch(port)
    assert seen == [j % 5 for j in range(12)]


def test_direct_staging_serves_what_the_slots_hold(make_cfg):
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES["direct"])
    held = [slot.host_in.clone() for slot in lanes.ring]
    assert not torch.equal(held[0], held[1])  # distinct requests, one per slot
    with torch.no_grad():
        requests, _ = schedule.throughput_pass(lanes, workload.sources, workload.keys, 40, 0.0)
    assert requests >= 40
    assert all(torch.equal(slot.host_in, h) for slot, h in zip(lanes.ring, held, strict=True))


def test_the_copy_thread_stops_with_its_pass(make_cfg):
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES["copy-thread"])
    with torch.no_grad():
        for _ in range(3):
            requests, seconds = schedule.throughput_pass(lanes, workload.sources, workload.keys, 50, 0.01)
            assert requests >= 50 and seconds > 0
    assert not [t for t in threading.enumerate() if t.name == "runner-copy"]


def test_a_failure_on_the_copy_thread_reaches_the_submitter(make_cfg, monkeypatch):
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES["copy-thread"])
    plan = protocol.copy_plan

    def failing_plan(ports, sources):
        copies = plan(ports, sources)
        calls = iter(range(10**9))

        def copy_or_fail(copy):
            def run():
                if next(calls) == 5:  # the copy thread's sixth copy
                    raise OSError("planted copy failure")
                copy()
            return run

        return tuple(copy_or_fail(c) for c in copies)

    monkeypatch.setattr(protocol, "copy_plan", failing_plan)
    with pytest.raises(RuntimeError, match="the copy thread failed: planted copy failure"), torch.no_grad():
        schedule.throughput_pass(lanes, workload.sources, workload.keys, 50, 0.0)
    assert not [t for t in threading.enumerate() if t.name == "runner-copy"]


def test_a_request_of_the_wrong_size_is_refused_before_any_copy(make_cfg):
    for mode in ("copy", "copy-thread"):
        spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES[mode])
        wrong = [torch.ones(3)]  # 12 bytes: not a request of this model
        with pytest.raises(ValueError, match="a request of 12 bytes into a slot input of"), torch.no_grad():
            schedule.throughput_pass(lanes, wrong, workload.keys[:1], 50, 0.0)
        assert not [t for t in threading.enumerate() if t.name == "runner-copy"]


def test_requests_of_mixed_sizes_are_copied_into_their_buckets_ports(make_cfg):
    spec = resolve(make_cfg(*QUICK, "model.batch=[1,2]"), cuda_count=lambda: 0)
    spec = dataclasses.replace(spec, streams=2, slots=2, **MODES["copy"])
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    sources, keys = workload.sources, workload.keys
    assert len({s.numel() for s in sources}) == 2  # both buckets among the timed requests
    with torch.no_grad(), serve(lanes, sources, keys) as session:
        for j in range(3 * len(sources)):
            port = session.acquire(j)
            assert port.key == keys[j % len(keys)] and torch.equal(port.host_in, sources[j % len(sources)]), j
            session.launch(port)


def test_requests_are_copied_byte_for_byte_into_their_slots(make_cfg):
    """Each request's bytes, whatever their dtype, land in its slot: request j in slot j % ring,
    sources cycling with their own period."""
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES["copy"])
    nbytes = workload.sources[0].numel() * workload.sources[0].element_size()
    sources = [torch.randint(0, 256, (nbytes,), dtype=torch.uint8) for _ in range(3)]  # 3 against a ring of 4
    with torch.no_grad(), serve(lanes, sources, workload.keys[:1]) as session:
        for j in range(12):
            port = session.acquire(j)
            assert torch.equal(port.host_in.view(torch.uint8), sources[j % 3]), j
            session.launch(port)
    with pytest.raises(ValueError, match="contiguous host tensor"):
        protocol.byte_copy(lanes.ring[0].host_in, torch.zeros(2 * nbytes, dtype=torch.uint8)[::2])


def test_the_host_time_is_split_into_wait_copy_and_launch(make_cfg):
    for mode, copies in (("direct", False), ("copy", True), ("copy-thread", False)):
        spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES[mode])
        staged = []
        with torch.no_grad():
            host = schedule.enqueue_pass(lanes, workload.sources, workload.keys, 30)
        assert set(host) == {"wait", "copy", "launch"}
        assert all(len(v) == 30 for v in host.values())
        assert all(t >= 0 for v in host.values() for t in v)
        # Only copy staging on the submitting thread copies there: elsewhere the step is empty.
        with torch.no_grad(), serve(lanes, workload.sources, workload.keys) as session:
            port = session.wait(0)
            port.host_in.fill_(123)
            session.stage(0, port)
            staged.append(not bool((port.host_in == 123).all()))
            session.launch(port)
        assert staged == [copies], mode


def ports(lanes):
    """Every port of every slot, in ring order."""
    return [port for slot in lanes.ring for port in slot.ports.values()]


class DeferredDevice:
    """Makes CPU lanes asynchronous, as a GPU is: a launched request runs only when its slot's
    event is waited on (or the device is synchronized). A host buffer rewritten before that
    wait is then read by the request: the race the slots' events exist to prevent.

    Each slot is set up in the launch shapes `keys` and launched once for real first: an eager
    port binds its host outputs on its first launch, which a GPU's host side does at once."""

    def __init__(self, lanes, keys) -> None:
        self.queues = {id(slot): [] for slot in lanes.ring}
        with torch.no_grad():
            for slot in lanes.ring:
                for key in dict.fromkeys(keys):
                    slot.port(key).enqueue()
        for slot in lanes.ring:
            queue = self.queues[id(slot)]
            for port in slot.ports.values():
                run = port.enqueue
                port.enqueue = lambda run=run, queue=queue: queue.append(run)
                port.wait = lambda queue=queue: self._drain(queue)
        lanes.synchronize = self.synchronize

    @staticmethod
    def _drain(queue) -> None:
        # Whichever thread waits runs the work (the copy thread too, whose grad mode is its own):
        # a device runs it the same whatever the host's grad mode.
        with torch.no_grad():
            while queue:
                queue.pop(0)()

    def synchronize(self) -> None:
        for queue in self.queues.values():
            self._drain(queue)


@pytest.mark.parametrize("mode", MODES)
def test_on_an_asynchronous_device_the_check_passes_and_catches_a_slot_rewritten_too_early(make_cfg, mode):
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES[mode])
    DeferredDevice(lanes, workload.keys)
    with torch.no_grad():
        assert check_schedule(spec, workload, lanes, requests=64).passed
    # The broken variant: nothing waits for a slot's event before its buffers are reused.
    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES[mode])
    device = DeferredDevice(lanes, workload.keys)
    for port in ports(lanes):
        port.wait = lambda: None
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=64)
    assert not result.passed and result.mismatches > 0
    assert not any(device.queues.values())  # every launched request did run, late


def test_the_copy_thread_waits_for_a_slot_before_rewriting_it(make_cfg):
    """The copy thread's own guard: without its wait, it rewrites slots whose requests have not
    run yet on an asynchronous device, and the check sees it."""
    from runner import protocol

    spec, workload, lanes = _lanes(make_cfg, streams=2, slots=2, **MODES["copy-thread"])
    DeferredDevice(lanes, workload.keys)
    real = protocol.Session._copy_ahead

    def careless(self, free, ready):  # waits on nothing: the submitter's waits are those of the staged lock
        for port in ports(self.lanes):
            port.wait = lambda: None
        return real(self, free, ready)

    protocol.Session._copy_ahead = careless
    try:
        with torch.no_grad():
            result = check_schedule(spec, workload, lanes, requests=64)
    finally:
        protocol.Session._copy_ahead = real
    assert not result.passed


def test_on_the_cpu_a_request_is_copied_in_and_out_by_this_thread(make_cfg, monkeypatch):
    """On the CPU the copies in and out went through Tensor.copy_, which spreads a copy of over
    32K elements across torch's threads: on a busy 2-core host a 128 KB request's copy in took
    7.9 ms. They are one memmove each on the submitting thread, and still exact."""
    spec, workload, lanes = _lanes(make_cfg, streams=1, slots=1)
    port = lanes.ring[0].port(workload.keys[0])
    request = workload.sources[1].clone()  # not the one the slot was made with
    port.host_in.copy_(request)
    calls = []
    real = torch.Tensor.copy_

    def counted(self, *args, **kwargs):
        calls.append(self.shape)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "copy_", counted)
    with torch.no_grad():
        port.enqueue()
        assert calls == []
        assert torch.equal(port.dev_in, request)  # the request's bytes, copied in
        want = workload.forward(port.args)
    monkeypatch.setattr(torch.Tensor, "copy_", real)
    for got, expected in zip(port.host_out, want, strict=True):
        assert torch.equal(got, expected)  # the response, copied out
    # A leaf that is not contiguous still comes out right.
    out = torch.arange(12.0).view(3, 4).t()
    host = torch.empty(4, 3)
    from runner.lanes import _host_copy
    _host_copy(host, out)
    assert torch.equal(host, out)
    # Nor is one of another shape or type read as bytes: converted, or refused as copy_ does.
    half = torch.arange(12.0, dtype=torch.float16).view(4, 3)
    _host_copy(host := torch.empty(4, 3), half)
    assert torch.equal(host, half.float())
    with pytest.raises(RuntimeError):
        _host_copy(torch.zeros(4, 3), torch.ones(2, 3))
