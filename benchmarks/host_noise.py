"""Where a GPU job's pass-to-pass noise comes from, on the host side. For each config, builds
the runner's lanes once, then runs blocks of short throughput passes, alternating between the
submitting thread free to move over the job's cores and the thread held on one core. Per pass
it prints the rate (relative to the block's first), the core the thread ended on and the
migrations and involuntary switches the kernel counted for it, and the speed of a fixed
pure-Python loop timed just before the pass (the "canary"): if the host's speed is what moves
the rates, the two go together. Asserts nothing.

    python benchmarks/host_noise.py [--pass-ms 100] [--passes 12] [--blocks 4] [--] [config...]

A config is a comma-separated override list, e.g. streams=4,graph=false.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_module  # noqa: E402

from runner import schedule  # noqa: E402
from runner.build import build  # noqa: E402
from runner.environment import canary_s  # noqa: E402
from runner.lanes import build_lanes  # noqa: E402
from runner.schema import register  # noqa: E402
from runner.spec import resolve  # noqa: E402
from runner.stats import correlation  # noqa: E402

DEFAULT = ["streams=1,graph=false", "streams=4,graph=false", "streams=8,graph=true", "streams=2,graph=true"]


def thread_sched() -> dict[str, int]:
    """This thread's counters from /proc: the core it last ran on, migrations, switches."""
    tid = threading.get_native_id()
    stat = Path(f"/proc/self/task/{tid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    found = {"cpu": int(fields[36])}  # field 39 of stat; fields here start at field 3
    for line in Path(f"/proc/self/task/{tid}/sched").read_text().splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name in ("se.nr_migrations", "nr_involuntary_switches", "nr_voluntary_switches"):
            found[name.split(".")[-1]] = int(float(value))
    return found


def _r(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pass-ms", type=float, default=100)
    parser.add_argument("--passes", type=int, default=12)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("configs", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    register()
    allowed = sorted(os.sched_getaffinity(0))
    print(f"cores allowed: {allowed}; torch threads {torch.get_num_threads()}")
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        for config in args.configs:
            spec = resolve(compose("config", overrides=config.split(",")))
            torch.backends.cuda.matmul.allow_tf32 = spec.tf32  # as a job sets them
            torch.backends.cudnn.allow_tf32 = spec.tf32
            workload = build(spec)
            lanes = build_lanes(spec, workload)
            sources, keys = workload.sources, workload.keys
            seconds = args.pass_ms / 1e3
            with torch.no_grad():
                schedule.throughput_pass(lanes, sources, keys, 1, 0.3, 0.3)  # warm-up
                summary = {"free": [], "held": []}
                all_rates, all_speeds = [], []
                for block in range(args.blocks):
                    mode = "free" if block % 2 == 0 else "held"
                    core = thread_sched()["cpu"]
                    os.sched_setaffinity(0, {core} if mode == "held" else set(allowed))
                    rates, cores, speeds, before = [], [], [], thread_sched()
                    for _ in range(args.passes):
                        speeds.append(1 / canary_s())  # the host's Python speed just before the pass
                        n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                        rates.append(n / s)
                        cores.append(thread_sched()["cpu"])
                    after = thread_sched()
                    os.sched_setaffinity(0, set(allowed))
                    cv = statistics.stdev(rates) / statistics.fmean(rates)
                    summary[mode].append(cv)
                    print(f"{config:24} block {block} {mode:4} mean {statistics.fmean(rates):>9,.0f}/s cv {cv:6.1%} "
                          f"migrations {after['nr_migrations'] - before['nr_migrations']:4d} involuntary "
                          f"{after['nr_involuntary_switches'] - before['nr_involuntary_switches']:5d}  cores "
                          f"{sorted(set(cores))}", flush=True)
                    print("      rate   " + " ".join(f"{r / rates[0]:.2f}" for r in rates))
                    print("      canary " + " ".join(f"{v / speeds[0]:.2f}" for v in speeds))
                    all_rates += rates
                    all_speeds += speeds
            print(f"{config:24} cv per block: free {' '.join(f'{c:.1%}' for c in summary['free'])}; "
                  f"held {' '.join(f'{c:.1%}' for c in summary['held'])}; pass rate vs canary speed: "
                  f"r = {_r(correlation(all_rates, all_speeds))} over {len(all_rates)} passes, canary cv "
                  f"{statistics.stdev(all_speeds) / statistics.fmean(all_speeds):.1%}", flush=True)
            lanes.synchronize()
            del lanes, workload
            if torch.cuda.is_available():
                torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
