"""Where a GPU job's pass-to-pass noise comes from, on the host side. For each config, builds
the runner's lanes once, then runs blocks of short throughput passes, alternating between the
submitting thread free to move over the job's cores and the thread held on one core. Per pass
it prints the rate (relative to the block's first), the core the thread ended on and the
migrations and involuntary switches the kernel counted for it, and the speed of a fixed
pure-Python loop timed just before the pass (the "canary"): if the host's speed is what moves
the rates, the two go together. On a GPU, per pass also the SM clock, the power and NVML's
clock-event reasons just after it: if the device is what moves the rates, they go with the
clock. Asserts nothing.

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


class GpuState:
    """The GPU's SM clock, power, temperature and clock-event reasons through NVML, read between
    passes (outside the timed region): whether a pass's rate followed the device, not the host."""

    REASONS = {0x1: "idle", 0x2: "app-clocks", 0x4: "sw-power-cap", 0x8: "hw-slowdown", 0x20: "sw-thermal",
               0x40: "hw-thermal", 0x80: "hw-power-brake", 0x100: "display"}

    def __init__(self) -> None:
        self.handle = None
        if not torch.cuda.is_available():
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            uuid = str(torch.cuda.get_device_properties(torch.cuda.current_device()).uuid)
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByUUID(("GPU-" + uuid).encode())
        except Exception as exc:  # noqa: BLE001 - no NVML: the rows are left out
            print(f"no GPU state ({exc})")

    def read(self) -> dict[str, object] | None:
        if self.handle is None:
            return None
        nvml, handle = self.nvml, self.handle
        get_reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nvml.nvmlDeviceGetCurrentClocksThrottleReasons
        bits = get_reasons(handle)
        return {
            "sm_mhz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
            "temp_c": nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU),
            "reasons": [name for bit, name in self.REASONS.items() if bits & bit],
        }


def lanes_for(config: str):
    """The runner's workload and lanes for a comma-separated override list, with TF32 set as a
    job sets it (call inside initialize_config_module)."""
    spec = resolve(compose("config", overrides=config.split(",")))
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    torch.backends.cudnn.allow_tf32 = spec.tf32
    workload = build(spec)
    return workload, build_lanes(spec, workload)


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
    gpu = GpuState()
    allowed = sorted(os.sched_getaffinity(0))
    print(f"cores allowed: {allowed}; torch threads {torch.get_num_threads()}")
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        for config in args.configs:
            workload, lanes = lanes_for(config)
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
                    rates, cores, speeds, states, before = [], [], [], [], thread_sched()
                    for _ in range(args.passes):
                        speeds.append(1 / canary_s())  # the host's Python speed just before the pass
                        n, s = schedule.throughput_pass(lanes, sources, keys, 1, seconds, seconds)
                        states.append(gpu.read())  # just after it (the pass synchronizes at its end)
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
                    if states[0] is not None:
                        clocks = [float(st["sm_mhz"]) for st in states]  # type: ignore[index]
                        print("      sm MHz " + " ".join(f"{c:.0f}" for c in clocks)
                              + f"  r(rate, clock) {_r(correlation(rates, clocks))}")
                        print("      power W " + " ".join(f"{st['power_w']:.0f}" for st in states)  # type: ignore[index]
                              + f"  temp C {states[0]['temp_c']}-{states[-1]['temp_c']}"  # type: ignore[index]
                              + f"  reasons {sorted({r for st in states for r in st['reasons']}) or '-'}")  # type: ignore[index]
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
