"""One job, start to end: resolve -> build -> capture -> measure -> summarize -> record -> print.

`run_job` is a plain function of a composed config, so tests call it without Hydra's CLI.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from runner import environment, printer
from runner.build import build, locate_target
from runner.cli import hold_interrupts, interrupts_restored
from runner.errors import CaptureError, CompileError, ConfigError, ModelFault
from runner.inputs import input_dtype
from runner.lanes import Lanes, build_lanes, graph_pool_bytes
from runner.measure import Measurement, measure, probe_limit
from runner.plots import plot_load_curve
from runner.progress import failing_in
from runner.record import (
    BUSY_AT_START_SAID,
    BUSY_DURING_SAID,
    BUSY_LOAD_SAID,
    BUSY_SIDES_SAID,
    CONCURRENT_SAID,
    CONFLICT_FILE,
    RESULT_FILE,
    SCHEMA,
    TRACEBACK_FILE,
    folder_conflict,
    host_shared,
    method_for,
    read_result,
    resume_changes,
    sides_shared,
    to_json,
    write_atomic,
    write_own_result,
)
from runner.spec import (
    RunSpec,
    check_file_booleans,
    check_overrides,
    mode_name,
    repeated_overrides,
    resolve,
    target_name,
)
from runner.summary import THROUGHPUT_KEYS, summarize_measurement
from runner.trace import profile_schedule, write_timestamps

log = logging.getLogger(__name__)

PROFILE_REQUESTS = 64  # requests in the profiled pass: enough to see every stream overlap
EXIT_CODES = {"ok": 0, "skipped": 0, "failed": 1, "invalid": 3, "interrupted": 130}


@dataclass
class JobInfo:
    output_dir: Path
    overrides: list[str] = field(default_factory=list)
    multirun: bool = False
    num: Optional[int] = None
    sweep_dir: Optional[str] = None
    origin: list[str] = field(default_factory=list)  # record.config_origin: what chose the config besides overrides


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _requested(cfg: DictConfig) -> Any:
    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception:  # an unresolvable value is itself the error being reported
        return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=None)
    except Exception:  # a broken interpolation: the error being reported
        return None


def _base_result(cfg: DictConfig, info: JobInfo, started: Optional[str]) -> dict[str, Any]:
    # The name resolve() would give: model.name, else the class named by _target_.
    model = _select(cfg, "model.name") or target_name(str(_select(cfg, "model.module._target_") or "?"))
    return {
        "schema": SCHEMA,
        "status": "failed",
        "reason": None,
        "model": model,
        "mode": None,
        "config": _requested(cfg),
        "overrides": list(info.overrides),
        "effective": None,
        "load": None,
        "notices": [],
        "warnings": [],
        "figures": {},
        "files": {},  # extra outputs in the job's folder: trace, timestamps
        "env": None,
        "seed": _select(cfg, "seed"),
        "method": method_for(None),
        "job": {
            "output_dir": str(info.output_dir),
            "num": info.num,
            "sweep_dir": info.sweep_dir,
            "config_origin": list(info.origin),
            "started_at": started,
            "finished_at": None,
            "wall_time_s": None,
            "started_unix": time.time(),
            "finished_unix": None,
            "pid": os.getpid(),
            # Set by the runner launcher: how the job's process began (forked from its preloaded
            # server, or a fresh interpreter), the device id it was given, its cores.
            "launcher_start": os.environ.get("RUNNER_LAUNCHER_START"),
            "launcher_device": os.environ.get("RUNNER_LAUNCHER_DEVICE"),
            "launcher_cpus": os.environ.get("RUNNER_LAUNCHER_CPUS"),
            # Set when the sweep's launcher runs several jobs at a time: timings interfere.
            "concurrent_jobs": _env_count("RUNNER_CONCURRENT_JOBS"),
            # Set by the runner launcher: the devices its sweep ran jobs on at once (with
            # hydra.launcher.devices; one job per device, each with its own share of the cores,
            # the host's memory and PCIe shared). At most that many of its jobs ran at a time.
            "parallel_devices": _env_count("RUNNER_PARALLEL_DEVICES"),
            # Where the job's wall time went: startup (the process until the job began), env,
            # build, capture, measure, finish (summary, files); see figures.measure_phases_s.
            "phases_s": {},
        },
    }


def _env_count(name: str) -> int:
    """A job count a launcher left in the environment; 1 when unset or not a positive number."""
    try:
        return max(1, int(os.environ.get(name, "1")))
    except ValueError:
        return 1


def _memory_figures(lanes: Lanes) -> dict[str, Any]:
    if not lanes.is_cuda:
        return {"peak_device_memory_bytes": None, "peak_device_reserved_bytes": None}
    return {
        "peak_device_memory_bytes": torch.cuda.max_memory_allocated(lanes.device),
        "peak_device_reserved_bytes": torch.cuda.max_memory_reserved(lanes.device),
    }


def model_io(spec: RunSpec, workload: Any) -> dict[str, Any]:
    """What a request holds and what comes back, for the record."""
    model = spec.model
    return {
        "inputs": {i.name: {"kind": i.kind, "shape": ["batch", *i.shape],
                            "dtype": str(input_dtype(i, spec.torch_dtype)).removeprefix("torch.")}
                   for i in model.inputs},
        "outputs": list(workload.out_paths),  # the leaves copied back and checked
        "outputs_selected": bool(model.outputs),  # by model.outputs (else every tensor leaf)
        "batch_buckets": list(model.batches),
        "seq_buckets": list(model.seqs) or None,
        "plan_requests": len(workload.plan) if model.bucketed else None,  # requests of drawn sizes the timed passes cycle through
        # What was built, as a check on the config: a misspelt key of a model's config can
        # leave the default size in place (12 layers where 1 was meant), without an error.
        "parameters": sum(p.numel() for p in workload.model.parameters()),
        "parameter_bytes": sum(p.numel() * p.element_size() for p in workload.model.parameters()),
    }


SLOW_DTYPE_RATIO = 4.0  # a dtype whose matrix multiplies run this many times slower than fp32's


def _threads_needed(spec: RunSpec, env: dict[str, Any]) -> tuple[int, str]:
    """The threads this job keeps busy, and whose they are, as its warnings say it."""
    if spec.is_cuda:
        return (2, "its submitting and copy threads") if spec.copy_thread else (1, "its submitting thread")
    return env["torch_threads"], "torch's threads"


# Other processes' CPU over the throughput passes, in cores beyond those this job leaves free,
# that is said (beside the ticks' grain): quiet hosts read 0.004-0.008 cores (a 2-core VM) and
# 0-0.1 (a 16-core GPU host, its driver's kernel threads among the others).
OTHERS_MARGIN_CORES = 0.25


def _busy_during_warning(spec: RunSpec, result: dict[str, Any]) -> Optional[str]:
    """Other processes that kept more of this job's CPUs busy during the throughput passes its
    figures rest on than it leaves free. The check at start sees only what runs then: a job
    another process slowed 300x from its middle on read "ok" at a steady rate, with no warning.
    Not when the sweep's launcher ran several jobs at a time (joblib, submitit): its other jobs
    are the other processes, and a warning of its own says so."""
    env, figures = result["env"], result.get("figures") or {}
    # A load's figures rest on its own passes (no throughput pass runs then).
    key, tick_key, said = (("host_others_cores", "host_others_tick_cores", BUSY_DURING_SAID)
                           if spec.load.scenario == "offline" else
                           ("host_others_cores_load", "host_others_tick_cores_load", BUSY_LOAD_SAID))
    others, cpus = figures.get(key), figures.get("host_others_cpus")
    if not _too_busy(spec, result, others, figures.get(tick_key)):
        return None
    mine, whose = _threads_needed(spec, env)
    return (f"{said}: they kept {others:.1f} of this job's {cpus} CPUs busy on average "
            f"({key}), beside its {mine} ({whose}); sharing cores can slow a job many times over, "
            "and steadily, so a low cv does not rule it out: measure on a quiet host")


def _too_busy(spec: RunSpec, result: dict[str, Any], others: Optional[float], tick_cores: Optional[float],
              mine: Optional[int] = None) -> bool:
    """Whether other processes' `others` cores over some passes are more than this job leaves
    free (it keeps `mine` threads busy then: by default the throughput's), beside the ticks'
    grain; never when the sweep's launcher ran jobs side by side."""
    env, figures = result["env"], result.get("figures") or {}
    cpus = figures.get("host_others_cpus")
    if others is None or not cpus or (result.get("job") or {}).get("concurrent_jobs", 1) > 1:
        return False
    if mine is None:
        mine, _ = _threads_needed(spec, env)
    # Each busy CPU's count may be a tick off at each end of a pass, independently: the job's
    # threads and the reader's, at most as many as the CPUs watched.
    grain = math.sqrt(min(mine + 1, cpus)) * (tick_cores or 0.0)
    return others > max(0, cpus - mine) + OTHERS_MARGIN_CORES + grain


def _busy_sides_warning(spec: RunSpec, result: dict[str, Any]) -> Optional[str]:
    """Other processes busy during the baseline's or the ceiling's passes (not the
    throughput's: that warning says so for every figure): the ratio over them reads higher than
    it is (a slowed baseline, a larger speedup)."""
    figures = result.get("figures") or {}
    said = []
    for side, whose, ratio in (("baseline", "the baseline's", "the speedup over it"),
                               ("ceiling", "the ceiling's", "the efficiency against it"),
                               ("load_baseline", "the load's baseline's", "the load's ratio over it")):
        others = figures.get(f"host_others_cores_{side}")
        # Their passes run on the submitting thread alone (the copy thread stages the schedule's).
        if _too_busy(spec, result, others, figures.get(f"host_others_tick_cores_{side}"), mine=1):
            said.append(f"{whose} ({others:.1f} of {figures['host_others_cpus']} CPUs, "
                        f"host_others_cores_{side}: {ratio} reads higher than it is)")
    if not said:
        return None
    return f"{BUSY_SIDES_SAID}: {'; '.join(said)}; measure on a quiet host"


def _say_busy_during(spec: RunSpec, result: dict[str, Any]) -> None:
    warning = _busy_during_warning(spec, result)
    if warning:
        result["warnings"].append(warning)
    elif (sides := _busy_sides_warning(spec, result)):
        result["warnings"].append(sides)


def _busy_host_warning(spec: RunSpec, result: dict[str, Any]) -> Optional[str]:
    """Other work ready to run as the job begins, more than the cores this job does not need:
    its threads then share cores. On a 2-core host with one other busy process, torch's two
    threads wait for each other at every operation: a default CPU job read 35-108 requests/s
    against 542 with one thread, and a DistilBERT job 6 against 1,717 at a steady cv of 0.8%,
    which no noise figure shows."""
    env = result["env"]
    others, cores = env.get("host_runnable_others_at_start"), env.get("cpu_count")
    if others is None or not cores:
        return None
    mine, whose = _threads_needed(spec, env)
    if others + mine <= cores:
        return None
    warning = (f"{BUSY_AT_START_SAID}: {others} other thread{'s' if others != 1 else ''} ready to run "
               f"on its {cores} cores, beside this job's {mine} ({whose}); sharing cores can slow a job many times "
               f"over, and steadily, so a low cv does not rule it out: measure on a quiet host"
               + ("" if spec.is_cuda else ", or with fewer threads (OMP_NUM_THREADS)"))
    result["warnings"].append(warning)
    return warning


def _tell_if_dtype_is_slow_here(spec: RunSpec, result: dict[str, Any]) -> None:
    """Off CUDA, before the first forward: a half-precision dtype that this CPU computes far
    slower than fp32 (no native arithmetic for it) makes every forward slower by as much. Said
    now, with the figures, rather than after minutes of a first forward (GPT-2 in fp16 on a
    2-core CPU: 100 s and more)."""
    asked = environment.cpu_matmul_gflops(spec.torch_dtype)
    fp32 = environment.cpu_matmul_gflops(torch.float32)
    result["env"]["cpu_matmul_gflops"] = {spec.dtype: _rounded(asked), "fp32": _rounded(fp32)}
    path = max(asked, key=lambda name: fp32[name] / asked[name])  # the path this dtype slows most
    slower = fp32[path] / asked[path]
    if slower >= SLOW_DTYPE_RATIO:
        size = environment.MATMUL_SIZE
        warning = (f"dtype={spec.dtype} on this CPU: torch.{path} of {size}x{size} matrices ran {slower:.0f}x slower "
                   f"than in fp32 ({asked[path]:,.1f} against {fp32[path]:,.1f} GFLOP/s): the model's forwards may be "
                   f"as slow; dtype=fp32 measures it at this CPU's own speed")
        log.warning("%s", warning)
        result["warnings"].append(warning)


def _rounded(rates: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in rates.items()}


def _execute(spec: RunSpec, result: dict[str, Any], measurement: Measurement) -> None:
    """The pipeline proper; fills `result` and `measurement` in place so a failure or an
    interrupt keeps what was learned."""
    phases = result["job"]["phases_s"]
    mark = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = now - mark
        mark = now

    result["env"] = environment.collect(spec.device)
    if spec.is_cuda:
        torch.cuda.set_device(torch.device(spec.device))
        torch.cuda.reset_peak_memory_stats(spec.device)
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    torch.backends.cudnn.allow_tf32 = spec.tf32
    lap("env")

    # The model's module is imported first (in the build phase's time): a _target_ that does
    # not import is then one line, with no "job:" line naming a model that does not exist.
    locate_target(spec)
    log.info("job: %s | %s | %s on %s", spec.model_name, spec.mode, spec.dtype, spec.device)
    # Recorded now (a build that fails on a busy host keeps it), said once the model is built:
    # a bad input the build finds is then the one line printed (the warning had preceded it).
    busy = _busy_host_warning(spec, result)
    if not spec.is_cuda and spec.dtype != "fp32":
        _tell_if_dtype_is_slow_here(spec, result)
    with failing_in("build"):
        workload = build(spec, probe_limit(spec))
    lap("build")
    if busy:
        log.warning("%s", busy)
    result["model_io"] = model_io(spec, workload)
    result["warnings"] += workload.warnings
    if workload.compile_fallback:
        result["notices"].append(f"{workload.compile_fallback}: ran uncompiled instead (capture.fallback_eager=true)")
        result["effective"].update(compile="none")
        result["mode"] = mode_name(result["effective"])
        result["method"] = method_for(spec.device, result["effective"])
    with failing_in("capture" if spec.graph else "lanes"):
        lanes = build_lanes(spec, workload)
    lap("capture")
    try:
        if lanes.fallback_reason:
            result["notices"].append(f"{lanes.fallback_reason}: ran eager instead (capture.fallback_eager=true)")
            result["effective"].update(graph=False, copies_in_graph=False)
            result["mode"] = mode_name(result["effective"])
            result["method"] = method_for(spec.device, result["effective"])  # it had described the graphs
            if spec.model.bucketed:
                # The plan was packed in the graphs' launch shapes before the capture failed: the
                # eager forwards serve each request padded to its bucket, unlike an eager job's.
                padded = ("the eager forwards run each request padded to its bucket, as the graphs would have "
                          "(padding_waste), not at its real size as an eager job does")
                result["notices"][-1] += f"; {padded}"
                result["method"]["schedule"] += f". After the capture fell back to eager, {padded}"
        figures = {
            "capture_time_ms": lanes.capture_time_s * 1e3 if lanes.graph else None,
            "graph_pool_bytes": graph_pool_bytes(lanes.device) if lanes.graph else None,
        }
        measure(spec, workload, lanes, measurement)
        lap("measure")
        if measurement.interrupted is None:  # else no profile or timestamps: record and stop
            try:
                _extras(spec, measurement, workload, lanes, result)
            except KeyboardInterrupt as exc:  # what was measured is recorded all the same
                measurement.interrupted = exc
        # From here until the result is written, an interrupt would only lose it (a Ctrl-C in the
        # last milliseconds of a finished job): ignored (run_job puts the handlers back after).
        hold_interrupts()
        summary = summarize_measurement(spec, measurement)
        figures.update(summary.figures)
        figures.update(workload.compile_figures)
        figures.update(_memory_figures(lanes))
        result["figures"] = figures
        result["warnings"] += summary.warnings
        result["notices"] += summary.notes
        _say_busy_during(spec, result)
        result["env"]["load_average_at_end"] = environment.load_average()
        if result["job"]["concurrent_jobs"] > 1:
            result["warnings"].append(
                f"{CONCURRENT_SAID} (hydra/launcher runs several at a time): "
                "their timings interfere with each other"
            )
        if spec.is_cuda and result["env"].get("gpu"):
            result["env"]["gpu"]["clocks_at_end"] = environment.gpu_clocks(lanes.device.index or 0)
        check = measurement.check
        lap("finish")
        if measurement.interrupted is not None:
            raise measurement.interrupted  # recorded by run_job, with the figures of what finished
        if check is not None and not check.passed:
            result["status"] = "invalid"
            result["reason"] = (
                f"{check.mismatches} of {check.requests} requests differ from eager "
                f"(max rel err {check.max_rel_err:.3g} > {check.tolerance_rel:.0e}); figures are not trustworthy"
            )
            if check.eager_finite is False:  # NaN or inf in eager's own output: no comparison can hold
                result["reason"] += "; eager's own output is not finite (NaN or inf) for the first of them"
            elif check.eager_spread is not None and check.eager_spread > check.tolerance_rel:
                result["reason"] += (
                    f"; the model itself is not deterministic: two eager forwards of the same request differ by "
                    f"{check.eager_spread:.3g} (randomness in its forward, e.g. torch.randn or dropout in training mode, "
                    f"or state kept from call to call, e.g. a cache)"
                )
            elif not spec.is_cuda and result["effective"].get("compile", "none") == "none":
                # RareRow (one row wrong every other call) read "126 of 128 differ" and no more.
                result["reason"] += (
                    "; on the CPU each request is served by this same eager forward, on a copy of it in the model's "
                    "input buffer: the difference lies in those copies, or in state the model keeps between calls "
                    "(an answer that changes with the calls before it)"
                )
        else:
            result["status"] = "ok"
    finally:
        if lanes.is_cuda:
            _quietly(torch.cuda.synchronize, lanes.device)  # no graph or buffer dies while in use
        del lanes, workload


def _extras(spec: RunSpec, measurement: Measurement, workload: Any, lanes: Lanes, result: dict[str, Any]) -> None:
    """What a finished measurement leaves besides its figures: timestamps, a profile (a separate
    pass after the timed ones, never timed itself), the server's load curve."""
    out_dir = Path(result["job"]["output_dir"])
    if spec.timestamps != "none" and measurement.latency is not None:
        result["files"]["timestamps"] = write_timestamps(measurement.latency, spec.timestamps, out_dir,
                                                          spec.is_cuda).name
    if spec.profile:
        with torch.no_grad():
            trace = profile_schedule(lanes, workload.sources, workload.keys, PROFILE_REQUESTS, out_dir / "trace.json")
        result["files"]["trace"] = trace.name
    if measurement.load and measurement.load.get("scenario") == "server":
        curve = plot_load_curve(measurement.load, out_dir / "load_curve.png", f"{spec.model_name} | {spec.mode}")
        result["files"]["load_curve"] = curve.name


def _quietly(fn: Any, *args: Any) -> None:
    """Cleanup that must not hide the job's own error: after a sticky CUDA error (an illegal
    address, a device-side assert) every CUDA call fails again, and the result must still be
    written."""
    try:
        fn(*args)
    except Exception as exc:
        log.warning("cleanup after the job failed too: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)


def _release_memory(device: Optional[str]) -> None:
    gc.collect()
    if device and device.startswith("cuda") and torch.cuda.is_available():
        _quietly(torch.cuda.synchronize)
        # cuBLAS keeps a workspace per (handle, stream) it has seen; each job brings new
        # streams, so without this a long in-process sweep would hold more memory per job.
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            _quietly(clear_workspaces)
        _quietly(torch.cuda.empty_cache)


class Terminated(KeyboardInterrupt):
    """SIGTERM to a run or a sweep's job, raised where Ctrl-C's interrupt would be: it ends the same way."""


class FolderTaken(ConfigError):
    """A job whose folder holds another job's result (resume=true or not)."""


# A phase's name (job.py's and measure.py's) as a failed job's reason names it: "(in the check)".
PHASE_WORDS = {
    "lanes": "setup of the streams and buffers", "warmup": "warm-up", "throughput": "throughput passes",
    "ceiling": "ceiling passes", "baseline": "baseline passes", "enqueue": "host-time pass",
    "latency": "latency pass", "baseline_latency": "baseline's latency pass", "load": "server load",
    "load_baseline": "baseline's server load", "single_stream": "single stream",
    "baseline_single_stream": "baseline's single stream",
}


BASELINE_PHASES = ("baseline", "baseline_latency", "load_baseline", "baseline_single_stream")


def _check_config_files() -> None:
    """The config files of this run (its chosen options, its primary config), as written (in a
    Hydra run only)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    check_file_booleans(hydra.runtime.choices, hydra.runtime.config_sources, hydra.job.config_name)


def _failure_reason(exc: BaseException) -> str:
    """What failed, and where (the phase, when known): "RuntimeError: ... (in the check)"."""
    phase = getattr(exc, "runner_phase", None)
    where = f" (in the {PHASE_WORDS.get(phase, phase)})" if phase else ""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        what = ". ".join(first.split(". ")[:3]).rstrip(".")  # what was asked, what the GPU has
        # The eager baseline runs one request at a time on one stream: streams do not matter there.
        fix = "a smaller model.batch" if phase in BASELINE_PHASES else "fewer streams or a smaller model.batch"
        return f"out of memory{where}: {what}; use {fix}"
    if isinstance(exc, (ConfigError, CaptureError, CompileError)):
        return first + where
    if isinstance(exc, SystemExit):
        return f"the model's code called sys.exit({exc.code!r}), which ended the job{where}"
    return f"{type(exc).__name__}: {first[:500]}{where}"


def _keep_measured(spec: Optional[RunSpec], measurement: Measurement, result: dict[str, Any]) -> None:
    """The figures of what a job that ended early had measured (a Ctrl-C, or a failure after the
    check or some repeats: a failed job had recorded `"figures": {}` after two repeats), the
    keys not measured null; nothing where the figures were made already or nothing was measured."""
    if spec is None or result.get("figures") or not (measurement.check or measurement.throughput or measurement.load):
        return
    try:
        summary = summarize_measurement(spec, measurement)
        result["figures"] = summary.figures
        result["warnings"] += summary.warnings
        _say_busy_during(spec, result)
    except Exception:  # noqa: BLE001 - a partial measurement the summary cannot read: the keys, null
        log.debug("the partial measurement could not be summarized", exc_info=True)


def _finished_parts(result: dict[str, Any]) -> tuple[int, str]:
    """What the figures of a job that ended early hold: (3, "throughput repeat(s)"), (4, "load
    point(s)"), ... or (0, "") for none."""
    figures = result.get("figures") or {}
    kept = len(figures.get("throughput_requests_per_s_repeats") or [])
    load = figures.get("load") or {}
    points = sum(len((load.get(who) or {}).get("points") or []) for who in ("runner", "baseline"))
    streams = sum(1 for who in ("runner", "baseline") if load.get(who)) if load.get("scenario") == "single_stream" else 0
    return ((kept, "throughput repeat(s)") if kept else (points, "load point(s)") if points
            else (streams, "single stream(s)") if streams else (0, ""))


_last_job_end: list[Optional[float]] = [None]  # when this process's last job ended (perf_counter)


def run_job(cfg: DictConfig, info: JobInfo) -> dict[str, Any]:
    """Run one job and write its result.json. Raises ConfigError for bad input in a single run
    (then nothing is written); in a sweep, bad input is recorded as a failed result."""
    try:
        with interrupts_restored():  # an interrupted job ignores further ones until it has recorded
            return _run_job(cfg, info)
    finally:
        _last_job_end[0] = time.perf_counter()


def _run_job(cfg: DictConfig, info: JobInfo) -> dict[str, Any]:
    started = _now()
    t0 = time.perf_counter()
    result = _base_result(cfg, info, started)
    # The process's age for its first job; a later one in the same process (Hydra's basic
    # launcher, joblib's reused workers) had counted every job before it as its startup.
    result["job"]["phases_s"]["startup"] = (environment.process_age_s() if _last_job_end[0] is None
                                            else time.perf_counter() - _last_job_end[0])
    spec: Optional[RunSpec] = None
    measurement = Measurement()  # filled phase by phase: an interrupt keeps what finished
    try:
        check_overrides(info.overrides)
        _check_config_files()
        spec = resolve(cfg)
        result.update(model=spec.model_name, mode=spec.mode, effective=spec.effective(),
                      notices=[*repeated_overrides(info.overrides), *spec.notices],
                      method=method_for(spec.device, spec.effective()), load=dict(spec.load.__dict__))
        conflict = folder_conflict(info.output_dir, result["overrides"], spec.resume, info.origin)
        if conflict:
            raise FolderTaken(conflict)
        if spec.resume:
            previous = read_result(info.output_dir / RESULT_FILE)
            if previous is None and not info.multirun:
                raise ConfigError(
                    f"resume=true: {info.output_dir} holds no result to resume; name the run's folder with "
                    "hydra.run.dir=..., or drop resume=true"
                )
            changed = resume_changes(info.output_dir, previous, result["config"])
            if changed:  # the same overrides, other settings: a preset or a default changed since
                raise FolderTaken(changed)
            (info.output_dir / CONFLICT_FILE).unlink(missing_ok=True)  # the result is this job's
            if previous and previous.get("status") == "ok":
                log.info("resume: %s already holds an ok result; skipped", info.output_dir)
                warned = previous.get("warnings") or []
                shared = "; ".join(filter(None, (host_shared(warned), sides_shared(warned))))
                if shared:  # kept as asked, but not silently: its own warnings doubt its figures
                    log.warning("resume kept a result measured while the host was shared (%s): run without "
                                "resume=true to measure it again", shared)
                _show(previous, f"result (kept, resume=true{'; measured while the host was shared: ' + shared if shared else ''})"
                                f": {info.output_dir / RESULT_FILE}")
                previous["status"] = "skipped"
                return previous
        _execute(spec, result, measurement)
    except FolderTaken as exc:  # never overwrite the other job's result
        if not info.multirun:
            raise
        log.error("%s", exc)
        result.update(status="failed", reason=str(exc))
        # The sweep table reads this next to the kept result, so the job shows as failed.
        write_atomic(info.output_dir / CONFLICT_FILE, str(exc) + "\n")
        return result
    except ConfigError as exc:
        if not info.multirun:
            raise
        # A fault in the model's own code is not a setting to fix: not called a bad config.
        result["reason"] = str(exc) if isinstance(exc, ModelFault) else f"bad config: {exc}"
        _keep_measured(spec, measurement, result)  # a model fault in a later phase
    except KeyboardInterrupt as exc:
        hold_interrupts()  # until the result is written (run_job's caller restores the handlers)
        result["status"] = "interrupted"
        _keep_measured(spec, measurement, result)
        if spec is not None and spec.load.scenario == "offline":  # stopped before measuring: the keys, null
            result["figures"] = {**dict.fromkeys(THROUGHPUT_KEYS), **(result.get("figures") or {})}
        count, finished = _finished_parts(result)
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        result["reason"] = f"interrupted ({how}) before the job finished" + (
            f"; the figures hold the {count} {finished} that finished" if count else "")
        written = _finish(result, info, t0)
        if not info.multirun and written:  # a sweep's launcher says this for all its jobs
            nothing = "no throughput repeat" if spec is None or spec.load.scenario == "offline" else "no load point"
            what = f"its {count} finished {finished}" if count else f"what it had measured ({nothing})"
            print(f"interrupted: {what} kept in {info.output_dir / RESULT_FILE} (status interrupted); to measure "
                  f"it again, the same command (with hydra.run.dir={info.output_dir} to replace that result)",
                  file=sys.stderr, flush=True)
        raise
    except (Exception, SystemExit) as exc:  # sys.exit() in a model's code: a failure, not a silent end
        result["status"] = "failed"
        result["reason"] = _failure_reason(exc)
        _keep_measured(spec, measurement, result)  # a failure in a later phase (out of memory in the baseline's)
        count, finished = _finished_parts(result)
        if count:
            result["reason"] += f"; the figures hold the {count} {finished} that finished before it"
        info.output_dir.mkdir(parents=True, exist_ok=True)
        (info.output_dir / TRACEBACK_FILE).write_text(traceback.format_exc())
        result["files"]["traceback"] = TRACEBACK_FILE
        log.error("job failed: %s; the traceback is in %s", result["reason"], info.output_dir / TRACEBACK_FILE)
    finally:
        hold_interrupts()  # the job has ended: an interrupt now would only lose its result
        _release_memory(spec.device if spec else None)
    _finish(result, info, t0)
    return result


def _to_log_files(text: str) -> None:
    """`text` into the log files the root logger writes (the job's runner.log), not the console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(logging.LogRecord("runner.job", logging.INFO, __file__, 0, text, None, None))


def append_to_log(folder: Path, text: str) -> None:
    """A line at the end of a job's runner.log, written from outside the job (its process died)."""
    log_file = next(iter(sorted(folder.glob("*.log"))), folder / "runner.log")  # Hydra's ${hydra.job.name}.log
    try:
        with open(log_file, "a") as f:
            f.write(f"[{_now()}][runner] {text}\n")
    except OSError:
        pass


def record_outside(
    cfg: DictConfig, info: JobInfo, status: str, reason: str, device_slot: Optional[str] = None,
    ran_s: Optional[float] = None,
) -> dict[str, Any]:
    """Write the result of a job that could not write its own (its process died or was
    stopped), so the sweep table shows it and `resume` reruns it. `ran_s`: how long before now
    the launcher started it (its start time; unknown otherwise, not this record's time)."""
    now = time.time()
    began = None if ran_s is None else now - ran_s
    started = None if began is None else dt.datetime.fromtimestamp(began, dt.timezone.utc).isoformat(timespec="seconds")
    result = _base_result(cfg, info, started)
    result.update(status=status, reason=reason)
    try:  # what the job would have run, as far as the config alone tells
        spec = resolve(cfg)
        result.update(model=spec.model_name, mode=spec.mode, effective=spec.effective(), notices=list(spec.notices),
                      method=method_for(spec.device, spec.effective()))  # not the CUDA wording for a CPU job
    except Exception:
        pass
    result["job"].update(finished_at=_now(), finished_unix=now, started_unix=began, pid=None,
                         launcher_device=device_slot, wall_time_s=ran_s)
    write_own_result(info.output_dir, result)
    append_to_log(info.output_dir, f"status: {status.upper()}: {reason}")
    return result


def _finish(result: dict[str, Any], info: JobInfo, t0: float) -> Optional[Path]:
    (info.output_dir / CONFLICT_FILE).unlink(missing_ok=True)  # this job's own result is written now
    result["job"]["finished_at"] = _now()
    result["job"]["wall_time_s"] = time.perf_counter() - t0
    result["job"]["finished_unix"] = time.time()
    path = write_own_result(info.output_dir, result)
    _show(result, f"result: {path}" if path else f"result: not written, {info.output_dir} holds another job's")
    return path


def _show(result: dict[str, Any], where: str) -> None:
    """The human table, where the result lies, and last, for a single run's pipe or file, the
    result as one JSON line (on a terminal it was 10 KB of JSON after every job's table; in a
    sweep's log, one in the middle of every job's lines, and the sweep's own last line is its
    table's; result.json holds it). The log file gets the table and where too: it had stopped
    at the last repeat, saying neither how the job ended nor its warnings."""
    table = printer.render(result)
    print(table)
    print(where)
    _to_log_files(f"{table}\n{where}")
    in_sweep = (result.get("job") or {}).get("num") is not None
    if not in_sweep and not _is_terminal(sys.stdout):
        print(to_json(result, indent=None), flush=True)


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream: not a terminal
        return False
