"""Where a result came from: software versions, the GPU and its clocks, host, git commit."""

from __future__ import annotations

import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch

import runner
from runner.cli import package_version

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], cwd: Optional[Path] = None) -> Optional[str]:
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """Commit and dirtiness of the checkout the runner was started from.

    Only a checkout whose top is the folder holding the `runner` package counts: an installed
    runner sits in site-packages, which may lie inside the user's own repository (a `.venv`
    in a project), whose commit says nothing of the runner's code.
    RUNNER_GIT_COMMIT and RUNNER_GIT_DIRTY, when the caller sets them, come first: a tree
    shipped to a GPU host may carry a stale .git, or none.
    """
    found = (_run(["git", "rev-parse", "--show-toplevel", "HEAD"], PROJECT_ROOT) or "").splitlines()
    commit = found[1] if len(found) == 2 and Path(found[0]).resolve() == PROJECT_ROOT else None
    if os.environ.get("RUNNER_GIT_COMMIT"):  # said by the caller: it knows better than a copied .git
        dirty = os.environ.get("RUNNER_GIT_DIRTY")
        # The checkout's own commit beside it: a variable left exported from an older run shows.
        return {"commit": os.environ["RUNNER_GIT_COMMIT"],
                "dirty": None if dirty is None else dirty.lower() in ("1", "true", "yes"), "source": "environment",
                "checkout_commit": commit}
    if commit:
        # Untracked files count: a model module the job imports may not be committed yet. What
        # .gitignore names (outputs/, caches) does not.
        status = _run(["git", "status", "--porcelain", "--untracked-files=normal"], PROJECT_ROOT)
        return {"commit": commit, "dirty": bool(status) if status is not None else None, "source": "git"}
    return {"commit": None, "dirty": None, "source": None}


_SMI_FIELDS = ("clocks.sm", "clocks.mem", "clocks.max.sm", "pstate", "temperature.gpu", "power.draw")


def _nvml_clocks(uuid: Optional[str]) -> Optional[dict[str, str]]:
    """The same fields through NVML, in-process: spawning nvidia-smi costs a job seconds."""
    if not uuid:
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByUUID(uuid)
        return {
            "sm_mhz": str(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "mem_mhz": str(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            "max_sm_mhz": str(pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)),
            "pstate": f"P{pynvml.nvmlDeviceGetPerformanceState(h)}",
            "temperature_c": str(pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "power_w": f"{pynvml.nvmlDeviceGetPowerUsage(h) / 1000:.2f}",
        }
    except Exception:
        return None


def driver_version() -> Optional[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        return out.splitlines()[0] if out else None


def gpu_clocks(device_index: int) -> Optional[dict[str, str]]:
    """Current clocks and state of one GPU, from NVML or else nvidia-smi (None where neither
    is available)."""
    selector = str(device_index)
    try:
        uuid = getattr(torch.cuda.get_device_properties(device_index), "uuid", None)
        if uuid:
            selector = f"GPU-{uuid}"
    except Exception:
        pass
    fast = _nvml_clocks(selector if selector.startswith("GPU-") else None)
    if fast is not None:
        return fast
    out = _run(["nvidia-smi", f"--id={selector}", f"--query-gpu={','.join(_SMI_FIELDS)}",
                "--format=csv,noheader,nounits"])
    if not out:
        return None
    values = [v.strip() for v in out.splitlines()[0].split(",")]
    names = ("sm_mhz", "mem_mhz", "max_sm_mhz", "pstate", "temperature_c", "power_w")
    return dict(zip(names, values, strict=False))


def cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def process_age_s() -> Optional[float]:
    """Seconds since this process started (Linux; None elsewhere): what the interpreter, the
    imports and Hydra's composition cost before the job's own code ran."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rpartition(")")[2].split()  # after the command name, which may hold spaces
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        return max(0.0, uptime_s - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


class CpuTicks(NamedTuple):
    busy: int  # clock ticks all CPUs were busy since boot, the hypervisor's steal time included
    stolen: int  # of those, the steal time
    own_s: float  # CPU seconds this process has run (all its threads)
    at_s: float  # the monotonic clock when read
    # Per CPU this process may run on ("cpuN"): ticks it was busy, its steal time left out.
    job_busy: Optional[dict[str, int]] = None


def _cpu_list(text: str) -> set[int]:
    """'0-3,8' -> {0, 1, 2, 3, 8}."""
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def process_cpus() -> Optional[set[int]]:
    """The CPUs any thread of this process may run on: the union of its threads' affinities.
    An OpenMP runtime told to bind (OMP_PROC_BIND, KMP_AFFINITY) pins the main thread to one CPU
    and torch's workers to the others: the main thread's mask alone had watched one CPU."""
    cpus: set[int] = set()
    try:
        tasks = list(os.scandir("/proc/self/task"))
    except OSError:
        tasks = []
    for task in tasks:
        try:
            with open(os.path.join(task.path, "status")) as f:
                line = next((x for x in f if x.startswith("Cpus_allowed_list:")), None)
        except OSError:
            continue  # a thread that has ended
        if line:
            cpus |= _cpu_list(line.split(":", 1)[1].strip())
    if cpus:
        return cpus
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def watched_cpus(listed: set[str], cpus: Optional[set[int]]) -> set[str]:
    """The /proc/stat lines ("cpuN") of `cpus`. Where some of them are not listed, /proc/stat is
    a container's view that numbers its own CPUs from 0 (LXCFS): every line it lists is then one
    of this process's."""
    names = {f"cpu{i}" for i in cpus} if cpus else set(listed)
    return names if names <= listed else set(listed)


def cpu_ticks(watch: Optional[Collection[str]] = None) -> Optional[CpuTicks]:
    """Busy and stolen clock ticks of all CPUs since boot, from /proc/stat (Linux; None
    elsewhere), those of each CPU this process may run on (or of `watch`: the CPUs an earlier
    reading watched, so that a pass is read over one set), and its own CPU time beside them.
    Stolen: time a virtual machine's CPUs wanted to run and the hypervisor ran something else."""
    # The threads' affinities first: scanning them takes this process a millisecond of CPU, which
    # between the two readings below would count as another's.
    cpus = process_cpus() if watch is None else None
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu")]
    except OSError:
        return None
    own_s, at_s = time.process_time(), time.monotonic()
    if not lines or lines[0][0] != "cpu" or len(lines[0]) < 9:
        return None

    def busy(fields: list[str]) -> tuple[int, int]:
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
        return user + nice + system + irq + softirq + steal, steal

    total, stolen = busy(lines[0])
    per_cpu = {fields[0]: busy(fields) for fields in lines[1:] if len(fields) >= 9}
    names = set(watch) if watch is not None else watched_cpus(set(per_cpu), cpus)
    job = {name: per_cpu[name][0] - per_cpu[name][1] for name in names if name in per_cpu}
    return CpuTicks(total, stolen, own_s, at_s, job)


def runnable_others(samples: int = 5, gap_s: float = 0.005) -> Optional[int]:
    """Threads ready to run on the host besides the one reading (/proc/stat's procs_running
    counts it too), the least of a few samples: work that stays, not a passing blip. None where
    /proc/stat has no such line."""
    counts = []
    for i in range(samples):
        if i:
            time.sleep(gap_s)
        try:
            with open("/proc/stat") as f:
                line = next((x for x in f if x.startswith("procs_running")), None)
        except OSError:
            return None
        if line is None:
            return None
        counts.append(int(line.split()[1]) - 1)
    return max(0, min(counts))


def stolen_fraction(before: Optional[tuple[int, int]], after: Optional[tuple[int, int]]) -> Optional[float]:
    """The share of the busy CPU time between two `cpu_ticks` the hypervisor took."""
    if before is None or after is None or after[0] - before[0] < 10:  # too few ticks to tell
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def tick_seconds() -> float:
    """The clock tick /proc/stat counts in (USER_HZ: 10 ms nearly everywhere)."""
    try:
        return 1 / os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 0.01


def others_cores(before: Optional[CpuTicks], after: Optional[CpuTicks]) -> Optional[tuple[float, float, int]]:
    """(CPU seconds other processes ran between two `cpu_ticks` on the CPUs this process may
    run on, the seconds between them, how many CPUs those are): their busy time less the
    hypervisor's and this process's own. A job slowed many times over by another process reads a
    steady rate; this is what shows it. Signed: the ticks are 10 ms and sampled, this process's
    time exact, so a quiet pass can read below 0; summed over passes those errors cancel, clamped
    they would not. Over the CPUs both readings watched (a CPU taken offline between them drops out)."""
    if before is None or after is None or after.at_s <= before.at_s or not before.job_busy or not after.job_busy:
        return None
    common = before.job_busy.keys() & after.job_busy.keys()
    if not common:
        return None
    job_s = sum(after.job_busy[n] - before.job_busy[n] for n in common) * tick_seconds()
    return job_s - (after.own_s - before.own_s), after.at_s - before.at_s, len(common)


CANARY_ITERATIONS = 2000  # about 0.1 ms of Python on a current core
CANARY_TRIES = 5


def canary_s() -> float:
    """Seconds of a fixed pure-Python loop on the calling thread, the fastest of a few tries
    (an interrupt lands in one try, not in all): how fast this core runs a small loop that
    stays in its cache, right now. That follows the core's clock and its share of a physical
    core; it does not see cache or memory-bandwidth contention, nor preemptions between the
    tries. A host-bound schedule's rate often follows it: on a VM it stepped by up to 2x."""
    best = math.inf
    for _ in range(CANARY_TRIES):
        start = time.perf_counter()
        x = 0
        for i in range(CANARY_ITERATIONS):
            x = (x + i * 7) % 1000003
        best = min(best, time.perf_counter() - start)
    return best


MATMUL_SIZE = 256  # square matrix multiplies of this size: 33.5 MFLOP, 0.05-12 ms on a current CPU
MATMUL_MIN_CALLS, MATMUL_MIN_S = 5, 0.01  # per path: the fastest of at least these many calls and seconds


def cpu_matmul_gflops(dtype: torch.dtype, size: int = MATMUL_SIZE) -> dict[str, float]:
    """GFLOP/s of torch's matrix-multiply paths (mm, addmm, linear: they take different
    kernels) on one `size` x `size` problem in `dtype` on one CPU thread, each the fastest of several
    calls (a call the scheduler preempted is not the rate). On a CPU without half-precision
    arithmetic a dtype can be 70x slower than fp32 (fp16 mm and addmm at 2.9 GFLOP/s against
    210 on a 2-core EPYC VM, bf16 at 650)."""
    generator = torch.Generator().manual_seed(0)
    x, w = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
    b = torch.randn(size, generator=generator).to(dtype)
    paths = {"mm": lambda: torch.mm(x, w), "addmm": lambda: torch.addmm(b, x, w),
             "linear": lambda: torch.nn.functional.linear(x, w, b)}
    rates = {}
    threads = torch.get_num_threads()
    # On one thread: the dtype's cost per core, which other work on the host cannot turn into
    # waits between torch's threads (on a busy 2-core host fp32 read 1.4-2.3 GFLOP/s on two).
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for name, path in paths.items():
                path()  # the first call picks and loads its kernel
                best, calls, began = math.inf, 0, time.perf_counter()
                while calls < MATMUL_MIN_CALLS or time.perf_counter() - began < MATMUL_MIN_S:
                    start = time.perf_counter()
                    path()
                    best = min(best, time.perf_counter() - start)
                    calls += 1
                rates[name] = 2 * size**3 / max(best, 1e-9) / 1e9
    finally:
        torch.set_num_threads(threads)
    return rates


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages: other work on the host shows here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# Distributions whose version a record names when they are installed: the runner's own
# dependencies, and the libraries that models are commonly built from.
PACKAGES = ("hydra-core", "omegaconf", "numpy", "transformers", "torchvision", "timm")


def package_versions() -> dict[str, str]:
    """The installed versions of PACKAGES (those not installed are left out)."""
    return {name: v for name in PACKAGES if (v := package_version(name)) is not None}


def collect(device: str) -> dict[str, Any]:
    env: dict[str, Any] = {
        "runner": runner.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "packages": package_versions(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load_average(),
        "host_runnable_others_at_start": runnable_others(),
        "load_average_at_end": None,
        "argv": sys.argv,
        "cwd": os.getcwd(),  # where `_target_`s of the user's own modules were imported from
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "git": git_state(),
        "device": device,
        "gpu": None,
    }
    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        driver = driver_version()
        env["gpu"] = {
            "name": props.name,
            "capability": f"{props.major}.{props.minor}",
            "memory_bytes": props.total_memory,
            "multiprocessors": props.multi_processor_count,
            "uuid": str(getattr(props, "uuid", "")) or None,
            "driver": driver,
            "clocks_at_start": gpu_clocks(index),
        }
    return env
