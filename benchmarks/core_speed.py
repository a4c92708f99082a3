"""Is the host's slow state a property of the core or of the whole host? The runner's jobs read
a host-bound config at one of two levels, a process at a time, with the host canary in one of two
states (README, "Host state"). If some cores run Python slower than others at the same moment,
choosing the core would choose the level; if all cores switch together, nothing a job does
about its placement helps.

Phase 1 holds this thread on each allowed core in turn and times the canary there, round after
round: per core the median, and per round the ratio of the slowest core to the fastest.
Phase 2 (with configs, on a GPU) builds the runner's lanes once per config and, round after
round, holds the submitting thread on each of a few cores and runs one throughput pass there.
Phase 3 (`--pick`, instead of phase 2) runs passes in pairs: one with the thread free over all
cores, one held on the core whose canary was fastest just before it.
Prints figures; asserts nothing.

    python benchmarks/core_speed.py [--rounds 20] [--pass-ms 200] [--gap-ms 100] [--cores 0 4 8 12] [--pick] [--] [config...]

A config is a comma-separated override list, e.g. streams=8,graph=true.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from host_noise import lanes_for  # noqa: E402 - beside this script
from hydra import initialize_config_module  # noqa: E402

from runner import schedule  # noqa: E402
from runner.environment import canary_s  # noqa: E402
from runner.schema import register  # noqa: E402
from runner.stats import correlation  # noqa: E402


def on_core(core: int) -> None:
    os.sched_setaffinity(0, {core})  # this thread only (Linux: pid 0 is the calling thread)
    time.sleep(0.001)  # let the scheduler move it before anything is timed


def canary_matrix(cores: list[int], rounds: int, gap_s: float) -> None:
    rows: list[list[float]] = []  # per round, the canary in microseconds per core
    start = time.perf_counter()
    for _ in range(rounds):
        row = []
        for core in cores:
            on_core(core)
            row.append(canary_s() * 1e6)
        rows.append(row)
        time.sleep(gap_s)  # spread the rounds over time: the host's state moves over seconds
    print(f"phase 1: canary (us) on each of {len(cores)} cores, {rounds} rounds in "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    for r, row in enumerate(rows):
        print(f"  round {r:2d}  slowest/fastest {max(row) / min(row):5.2f}  " + " ".join(f"{v:4.0f}" for v in row))
    per_core = [statistics.median(row[i] for row in rows) for i in range(len(cores))]
    print("  median per core: " + " ".join(f"{c}:{v:.0f}" for c, v in zip(cores, per_core, strict=True)))
    spreads = [max(row) / min(row) for row in rows]
    print(f"  slowest/fastest core within a round: median {statistics.median(spreads):.2f}, "
          f"max {max(spreads):.2f}; round medians {min(statistics.median(r) for r in rows):.0f}-"
          f"{max(statistics.median(r) for r in rows):.0f} us", flush=True)


def rate_by_core(config: str, cores: list[int], rounds: int, seconds: float) -> None:
    workload, lanes = lanes_for(config)
    sources, keys = workload.sources, workload.keys
    rates: dict[int, list[float]] = {c: [] for c in cores}
    canaries: dict[int, list[float]] = {c: [] for c in cores}
    with torch.no_grad():
        schedule.throughput_pass(lanes, sources, keys, 1, 0.3, 0.3)  # warm-up
        for r in range(rounds):
            order = cores[r % len(cores):] + cores[: r % len(cores)]
            for core in order:
                on_core(core)
                canaries[core].append(canary_s() * 1e6)
                n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                rates[core].append(n / s)
    print(f"phase 2: {config}, {rounds} rounds of one {seconds * 1e3:.0f} ms pass per core "
          "(requests/s, then the canary in us just before)", flush=True)
    for core in cores:
        print(f"  core {core:3d}  median {statistics.median(rates[core]):>9,.0f}/s  "
              + " ".join(f"{x:,.0f}" for x in rates[core])
              + "   canary " + " ".join(f"{v:.0f}" for v in canaries[core]))
    flat_r = [x for c in cores for x in rates[c]]
    flat_c = [x for c in cores for x in canaries[c]]
    r = correlation(flat_r, [1 / v for v in flat_c])
    print(f"  all passes: rate cv {statistics.stdev(flat_r) / statistics.fmean(flat_r):.1%}, "
          f"r(rate, canary speed) = {'-' if r is None else f'{r:.2f}'}", flush=True)
    lanes.synchronize()


def fastest_core(cores: list[int]) -> tuple[int, float]:
    """The core whose canary is fastest right now, and its canary (us); leaves the thread there."""
    best = (cores[0], float("inf"))
    for core in cores:
        on_core(core)
        us = canary_s() * 1e6
        if us < best[1]:
            best = (core, us)
    on_core(best[0])
    return best


def pick_or_free(config: str, cores: list[int], rounds: int, seconds: float) -> None:
    """Passes in pairs, in alternating order: the thread free over all cores, and held on the
    core that was fastest just before the pass (its canary read again just after)."""
    workload, lanes = lanes_for(config)
    sources, keys = workload.sources, workload.keys
    free, picked, before_after, probe_ms = [], [], [], []
    with torch.no_grad():
        schedule.throughput_pass(lanes, sources, keys, 1, 0.3, 0.3)  # warm-up
        for r in range(rounds):
            for mode in (("free", "pick") if r % 2 == 0 else ("pick", "free")):
                if mode == "free":
                    os.sched_setaffinity(0, set(cores))
                    n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                    free.append(n / s)
                else:
                    t0 = time.perf_counter()
                    core, us = fastest_core(cores)
                    probe_ms.append((time.perf_counter() - t0) * 1e3)
                    n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                    picked.append(n / s)
                    before_after.append((core, us, canary_s() * 1e6))
    os.sched_setaffinity(0, set(cores))
    lanes.synchronize()

    def text(rates: list[float]) -> str:
        return (f"median {statistics.median(rates):>9,.0f}/s  cv {statistics.stdev(rates) / statistics.fmean(rates):5.1%}  "
                + " ".join(f"{x:,.0f}" for x in rates))

    print(f"phase 3: {config}, {rounds} pairs of {seconds * 1e3:.0f} ms passes: free, and held on the fastest core "
          f"(probe {statistics.median(probe_ms):.0f} ms)", flush=True)
    print(f"  free    {text(free)}")
    print(f"  picked  {text(picked)}")
    print("  picked core: canary before -> after the pass (us): "
          + " ".join(f"{c}:{a:.0f}->{b:.0f}" for c, a, b in before_after), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pass-ms", type=float, default=200)
    parser.add_argument("--gap-ms", type=float, default=100, help="phase 1's pause between rounds")
    parser.add_argument("--cores", type=int, nargs="+", help="phase 2's cores (default: four spread over the allowed)")
    parser.add_argument("--pick", action="store_true",
                        help="phase 3 instead of 2: passes free against passes held on the fastest core")
    parser.add_argument("configs", nargs="*")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    print(f"cores allowed: {allowed}; load average {os.getloadavg()}", flush=True)
    canary_matrix(allowed, args.rounds, args.gap_ms / 1e3)
    if args.configs:
        cores = args.cores or allowed[:: max(1, len(allowed) // 4)][:4]
        register()
        with initialize_config_module(version_base="1.3", config_module="runner.configs"):
            for config in args.configs:
                if args.pick:
                    pick_or_free(config, allowed, args.rounds, args.pass_ms / 1e3)
                else:
                    rate_by_core(config, cores, max(3, args.rounds // 4), args.pass_ms / 1e3)
    os.sched_setaffinity(0, set(allowed))
    canary_matrix(allowed, max(3, args.rounds // 4), args.gap_ms / 1e3)  # again: did the host's state move meanwhile?
    return 0


if __name__ == "__main__":
    sys.exit(main())
