"""Why does the reference loop's `copy` staging run slower than the runner's on some hosts?

In one process, on one built model (default `mlp`, 4 streams, copy staging), alternately:
  - passes of the runner's throughput loop and of the reference loop (`benchmarks/reference.py`);
  - the host time of each step per request (wait for the slot, copy the request, launch), on
    both sides, the loop's steps marked by hand here;
  - the bare memmove of one request into each side's slot memory, with the device idle.
Prints medians. A diagnostic, not a target: run it on the GPU host.

    python benchmarks/copy_probe.py [--model mlp] [--streams 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from engine import MODELS, STAGING, compose_cfg, single_input_sources  # noqa: E402
from reference import ReferenceLoop  # noqa: E402

from runner import schedule  # noqa: E402
from runner.build import build  # noqa: E402
from runner.lanes import build_lanes  # noqa: E402
from runner.schema import register  # noqa: E402
from runner.spec import resolve  # noqa: E402

perf_counter = time.perf_counter


def loop_steps(loop: ReferenceLoop, requests: int) -> dict[str, list[float]]:
    """The reference loop's copy staging, with the host clock between its steps."""
    n, nbytes, memmove, record = len(loop.source_ptrs), loop.nbytes, ctypes.memmove, loop.record
    calls = [(ptr, *call) for ptr, call in zip(loop.slot_ptrs, loop.calls, strict=True)]
    wait_s, copy_s, launch_s = [], [], []
    torch.cuda.synchronize()
    with torch.no_grad():
        for j in range(requests):
            slot_ptr, wait, select, done, stream, h_in, h_out, d_in, g, d_out, slot_graph = calls[j % len(calls)]
            t0 = perf_counter()
            wait()
            t1 = perf_counter()
            memmove(slot_ptr, loop.source_ptrs[j % n], nbytes)
            t2 = perf_counter()
            select()
            if slot_graph is not None:
                slot_graph.replay()
            else:
                d_in.copy_(h_in, non_blocking=True)
                g.replay()
                h_out.copy_(d_out, non_blocking=True)
            record(done, stream)
            t3 = perf_counter()
            wait_s.append(t1 - t0)
            copy_s.append(t2 - t1)
            launch_s.append(t3 - t2)
    torch.cuda.synchronize()
    torch.cuda.set_stream(torch.cuda.default_stream())
    return {"wait": wait_s, "copy": copy_s, "launch": launch_s}


def bare_memmove_us(dst_ptrs: list[int], src_ptrs: list[int], nbytes: int, count: int) -> float:
    memmove = ctypes.memmove
    times = []
    for j in range(count):
        t0 = perf_counter()
        memmove(dst_ptrs[j % len(dst_ptrs)], src_ptrs[j % len(src_ptrs)], nbytes)
        times.append(perf_counter() - t0)
    return statistics.median(times) * 1e6


def p50_us(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e6:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mlp", choices=list(MODELS))
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    register()
    overrides = MODELS[args.model] + STAGING["copy"] + [f"streams={args.streams}"]
    spec = resolve(compose_cfg(overrides))
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    sources, keys = workload.sources, workload.keys
    loop = ReferenceLoop(workload.model, single_input_sources(spec, workload), spec.streams, spec.slots, "copy",
                         spec.copies_in_graph)
    runner_slot_ptrs = [slot.host_in.data_ptr() for slot in lanes.ring]
    runner_src_ptrs = [s.data_ptr() for s in sources]
    print(f"{args.model} x{args.streams} copy staging, {loop.nbytes} bytes a request, "
          f"{len(sources)} sources, ring {len(lanes.ring)}; {torch.cuda.get_device_name()}", flush=True)
    print(f"source pointers same on both sides: {runner_src_ptrs == loop.source_ptrs}; "
          f"sources pinned: {sources[0].is_pinned()}", flush=True)
    loop.run(200, 0.3)
    schedule.throughput_pass(lanes, sources, keys, 200, 0.3)
    for r in range(args.rounds):
        rates = {"loop": [], "runner": []}
        for _ in range(3):
            rates["loop"].append(loop.run(spec.measure.min_requests, args.seconds))
            n, s = schedule.throughput_pass(lanes, sources, keys, spec.measure.min_requests, args.seconds)
            rates["runner"].append(n / s)
        ratio = statistics.median(rates["runner"]) / statistics.median(rates["loop"])
        print(f"round {r + 1} rates: loop {[f'{x:,.0f}' for x in rates['loop']]} runner "
              f"{[f'{x:,.0f}' for x in rates['runner']]} runner/loop {ratio:.3f}", flush=True)
        steps_loop = loop_steps(loop, 20000)
        steps_runner = schedule.enqueue_pass(lanes, sources, keys, 20000)
        print(f"round {r + 1} host p50 us (wait / copy / launch): loop {p50_us(steps_loop['wait'])} / "
              f"{p50_us(steps_loop['copy'])} / {p50_us(steps_loop['launch'])}; runner {p50_us(steps_runner['wait'])} / "
              f"{p50_us(steps_runner['copy'])} / {p50_us(steps_runner['launch'])}", flush=True)
        torch.cuda.synchronize()
        into_loop = bare_memmove_us(loop.slot_ptrs, loop.source_ptrs, loop.nbytes, 20000)
        into_runner = bare_memmove_us(runner_slot_ptrs, runner_src_ptrs, loop.nbytes, 20000)
        print(f"round {r + 1} bare memmove p50 us, device idle: into the loop's slots {into_loop:.2f}, into the "
              f"runner's {into_runner:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
