"""A whole job on the CPU through run_job: its result.json, failures, and the check itself."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import statistics
import time
from typing import Optional

import pytest
import torch

from runner.build import build
from runner.check import check_schedule
from runner.errors import ConfigError
from runner.job import FolderTaken, JobInfo, run_job
from runner.lanes import build_lanes
from runner.printer import render
from runner.record import CONFLICT_FILE, RESULT_FILE, SCHEMA
from runner.spec import resolve

QUICK = ("measure=quick", "device=cpu")


def test_cpu_job_writes_a_complete_result(make_cfg, tmp_path, capsys):
    cfg = make_cfg(*QUICK, "model.batch=4", "measure.budget_s=30")  # room for the whole check
    result = run_job(cfg, JobInfo(output_dir=tmp_path, overrides=list(QUICK)))
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert on_disk == json.loads(json.dumps(on_disk))  # strict JSON, no NaN
    assert on_disk["schema"] == SCHEMA and on_disk["status"] == "ok"
    assert on_disk["effective"] == {
        "device": "cpu", "dtype": "fp32", "tf32": False, "streams": 1, "graph": False,
        "pinned": False, "copies_in_graph": False, "staging": "direct", "slots": 1, "copy_thread": False,
        "compile": "none",
    }
    assert on_disk["config"]["streams"] == 4  # the request is kept next to what ran
    assert on_disk["overrides"] == list(QUICK)
    f = on_disk["figures"]
    assert f["check_requests"] == 128 and f["check_mismatches"] == 0
    assert f["throughput_requests_per_s"] > 0 and 2 <= len(f["throughput_requests_per_s_repeats"]) <= 3
    assert f["repeats_stop_reason"] in ("stdrel", "repeats", "budget")
    assert f["throughput_samples_per_s"] == pytest.approx(4 * f["throughput_requests_per_s"])
    # On the CPU the baseline and the ceiling would run the schedule's own code: not measured,
    # and the record says what ran: host copies timed by the host clock.
    # Not measured on the CPU: null, never missing (reading a skipped figure had raised KeyError).
    assert f["baseline_requests_per_s"] is None and f["ceiling_requests_per_s"] is None
    assert f["speedup_vs_baseline"] is None and f["efficiency_vs_ceiling"] is None
    assert any("baseline and the device-only ceiling" in n for n in on_disk["notices"])
    assert f["latency_clock"] == "host" and f["latency_h2d_us"] is None  # the GPU's name for the copy in: null here
    assert f["server_max_rate"] is None and f["single_stream_latency_us"] is None  # other scenarios' figures too
    for stage in ("e2e", "copy_in", "compute", "copy_out"):
        s = f[f"latency_{stage}_us"]
        assert 0 < s["n"] <= 200 and 0 <= s["min"] <= s["p50"] <= s["p99"] <= s["max"]
    assert f["latency_e2e_us"]["p50"] >= f["latency_compute_us"]["p50"]
    # The console names the clock: the host's around each request here; on a GPU the events time
    # a request from its stream's start on its copy, which "end to end" beside the baseline's
    # host-clock request had overstated.
    lat = {"p50": 10.0, "p90": 11.0, "p99": 12.0, "max": 13.0}
    on_gpu = render({"status": "ok", "figures": {"latency_e2e_us": lat, "baseline_latency_us": lat,
                                                 "latency_clock": "cuda events", "measure_time_s": 1.0}})
    assert "device: H2D to D2H" in on_gpu and "baseline, host clock" in on_gpu and "end to end" not in on_gpu
    assert "  end to end" in render(on_disk)
    # The host-time rows name the CPU's own steps: no slot to wait for, no copy in direct
    # staging, and the "launch" is the whole request (they had named a GPU's).
    shown = render(on_disk)
    assert "host: whole request" in shown and "host: wait for slot" not in shown and "host: copy request" not in shown
    assert "host: copy request" in render(dict(on_disk, effective=dict(on_disk["effective"], staging="copy")))
    whole = next(line for line in shown.splitlines() if "host: whole request" in line)
    assert f"{f['host_enqueue_us']['p50']:,.1f}" in whole  # the copy and the launch: the request
    on_cuda = render({"status": "ok", "effective": {"device": "cuda:0", "staging": "direct"},
                      "figures": {"host_wait_us": lat, "host_copy_us": lat, "host_launch_us": lat, "measure_time_s": 1.0}})
    assert all(row in on_cuda for row in ("host: wait for slot", "host: copy request", "host: launch"))
    method = json.dumps(on_disk["method"])
    assert "CUDA" not in method and "H2D" not in method and "host-clock" in on_disk["method"]["latency"]
    assert "polled" not in method  # the load method spoke of "the slot's event polled between issues"
    assert "slots" not in method  # one request at a time: no slots in flight
    for step in ("wait", "copy", "launch"):
        assert 0 < f[f"host_{step}_us"]["n"] <= 200
    # Direct staging copies nothing on the host: the launch is the forward itself.
    assert f["host_copy_us"]["p50"] < f["host_launch_us"]["p50"]
    env = on_disk["env"]
    for key in ("python", "torch", "host", "git", "platform", "cpu_model"):
        assert key in env
    assert env["torch_threads"] >= 1
    assert len(env["load_average_at_start"]) == 3 and len(env["load_average_at_end"]) == 3
    assert on_disk["seed"] == 0 and on_disk["method"]["throughput"]
    # The console ends with the result as one JSON object.
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["figures"]["throughput_requests_per_s"] == f["throughput_requests_per_s"]
    assert result["status"] == "ok"


@pytest.mark.parametrize("fp16_addmm_gflops, warned", [(2.7, True), (150.0, False)])
def test_a_half_precision_dtype_this_cpu_computes_slowly_is_said_before_the_first_forward(
        make_cfg, tmp_path, monkeypatch, fp16_addmm_gflops, warned):
    """On a CPU without half-precision arithmetic, fp16 matrix multiplies ran 75x slower than
    fp32's (GPT-2's first forward: minutes). The job times small multiplies in both dtypes
    first, records the rates, and warns, with the path and its rates, when the asked dtype is
    4x slower or more on any path."""
    from runner import environment

    rates = {torch.float16: {"mm": 60.0, "addmm": fp16_addmm_gflops, "linear": 100.0},
             torch.float32: {"mm": 200.0, "addmm": 205.0, "linear": 190.0}}
    monkeypatch.setattr(environment, "cpu_matmul_gflops", lambda dtype: rates[dtype])
    result = run_job(make_cfg(*QUICK, "dtype=fp16", "model.batch=2"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok"
    assert result["env"]["cpu_matmul_gflops"] == {"fp16": rates[torch.float16], "fp32": rates[torch.float32]}
    said = [w for w in result["warnings"] if w.startswith("dtype=fp16 on this CPU")]
    if warned:
        assert said == ["dtype=fp16 on this CPU: torch.addmm of 256x256 matrices ran 76x slower than in fp32 (2.7 "
                        "against 205.0 GFLOP/s): the model's forwards may be as slow; dtype=fp32 measures it at this "
                        "CPU's own speed"]
    else:
        assert said == []  # mm at 3.3x slower is under the 4x threshold
    # fp32 itself is not timed against itself.
    fp32 = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path / "fp32"))
    assert "cpu_matmul_gflops" not in fp32["env"]


@pytest.mark.parametrize("others", [0, 64])
def test_other_work_ready_to_run_as_the_job_begins_is_said(make_cfg, tmp_path, monkeypatch, others):
    """Threads of other programs ready to run, more than the cores torch's threads leave free:
    the job's threads share cores, which slowed jobs 5-280x at a steady cv. Recorded, and said."""
    from runner import environment

    monkeypatch.setattr(environment, "runnable_others", lambda: others)
    result = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok" and result["env"]["host_runnable_others_at_start"] == others
    said = [w for w in result["warnings"] if w.startswith("the host was busy as the job began")]
    threads, cores = result["env"]["torch_threads"], result["env"]["cpu_count"]
    if others + threads > cores:
        assert said == [f"the host was busy as the job began: {others} other threads ready to run on its {cores} "
                        f"cores, beside this job's {threads} (torch's threads); sharing cores can slow a job many "
                        "times over, and steadily, so a low cv does not rule it out: measure on a quiet host, or "
                        "with fewer threads (OMP_NUM_THREADS)"]
    else:
        assert said == []


def test_a_bad_input_the_build_finds_is_not_preceded_by_the_busy_hosts_warning(make_cfg, tmp_path, monkeypatch,
                                                                               caplog):
    """The error is the one line: `model.outputs=[nope]` on a busy host had printed the host's
    warning first."""
    from runner import environment

    monkeypatch.setattr(environment, "runnable_others", lambda: 64)
    with pytest.raises(ConfigError, match="model.outputs"):
        run_job(make_cfg(*QUICK, "model.batch=2", "model.outputs=[nope]"), JobInfo(output_dir=tmp_path))
    assert not [r for r in caplog.records if "busy" in r.getMessage()]
    # A build that fails on a busy host keeps the warning in its record (the sweep table names it).
    from runner import job

    def build_fails(*args, **kwargs):
        raise RuntimeError("out of host memory")

    monkeypatch.setattr(job, "build", build_fails)
    failed = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path / "failed"))
    assert failed["status"] == "failed" and "(in the build)" in failed["reason"]
    assert [w for w in failed["warnings"] if w.startswith("the host was busy as the job began")]


def test_other_processes_busy_during_the_passes_are_measured_and_said(make_cfg, tmp_path):
    """The check at start sees only what runs then: a job another process slowed 300x from its
    middle on read "ok" at a steady rate. Spinning processes beside the timed passes (on the
    CPUs this process may use, as they inherit its affinity): the CPU they took there is
    measured from /proc/stat, less this process's own CPU time, and said."""
    import subprocess
    import sys

    from runner import environment

    if environment.cpu_ticks() is None:
        pytest.skip("no /proc/stat")
    if _cpu_quota():
        pytest.skip("a CPU quota (cgroup cpu.max): the spinners' share is the quota's, not the CPUs'")
    cpus = len(environment.process_cpus())
    spinners = min(cpus, 4)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(spinners)]
    try:
        time.sleep(0.3)  # spinning
        result = run_job(make_cfg(*QUICK, "model.batch=2", "measure.min_repeats=3"), JobInfo(output_dir=tmp_path))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert f["host_others_cpus"] == cpus
    # Each spinner wants a whole CPU: over the passes they had a good part of one each (they
    # share the CPUs with this job's threads), never more than there are.
    assert 0.25 * spinners <= f["host_others_cores"] <= cpus + 0.2
    assert len(f["host_others_cores_repeats"]) == len(f["throughput_requests_per_s_repeats"])
    threads = result["env"]["torch_threads"]
    grain = math.sqrt(min(threads + 1, cpus)) * f["host_others_tick_cores"]
    said = [w for w in result["warnings"] if w.startswith("other processes ran during the throughput passes")]
    if threads >= cpus:  # the job needs every CPU it may use, and another process took some: said
        assert f["host_others_cores"] > 0.25 + grain and said
    if f["host_others_cores"] > max(0, cpus - threads) + 0.25 + grain:
        assert said == [f"other processes ran during the throughput passes: they kept {f['host_others_cores']:.1f} of "
                        f"this job's {cpus} CPUs busy on average (host_others_cores), beside its {threads} (torch's "
                        "threads); sharing cores can slow a job many times over, and steadily, so a low cv does not "
                        "rule it out: measure on a quiet host"]
    else:
        assert said == []


def test_other_processes_during_the_baseline_or_ceiling_passes_are_measured_and_said(make_cfg):
    """Only the throughput passes were watched: another process busy during the baseline's
    passes alone slows the baseline and reads as a larger speedup, with no warning. The
    baseline's and the ceiling's passes are watched alike (a GPU job's: here from recorded
    readings), and said where the throughput's are not."""
    from runner.environment import tick_seconds
    from runner.job import _busy_sides_warning, _say_busy_during
    from runner.measure import Measurement
    from runner.record import BUSY_SIDES_SAID, host_shared, sides_shared
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg("measure=quick"), cuda_count=lambda: 1)  # a GPU job: ceiling and baseline run
    quiet = [(0.001, 0.3, 16)] * 3  # (others' CPU seconds, the pass's seconds, CPUs watched)
    busy = [(4.8, 0.3, 16), (4.78, 0.3, 16), (4.77, 0.3, 16)]  # every core but this job's thread's, and more
    m = Measurement(throughput=[(300, 0.3)] * 3, baseline=[(30, 0.3)] * 3, ceiling=[(400, 0.3)] * 3,
                    host_others=list(quiet), side_others={"baseline": list(busy), "ceiling": list(quiet)})
    f = summarize_measurement(spec, m).figures
    assert f["host_others_cores_baseline"] == pytest.approx((4.8 + 4.78 + 4.77) / 0.9)
    assert f["host_others_cores_ceiling"] == pytest.approx(0.001 / 0.3)
    assert f["host_others_tick_cores_baseline"] == pytest.approx(2 * math.sqrt(3) * tick_seconds() / 0.9)
    result = {"env": {"torch_threads": 8}, "figures": f, "job": {"concurrent_jobs": 1}, "warnings": []}
    said = _busy_sides_warning(spec, result)
    assert said is not None and said.startswith(BUSY_SIDES_SAID) and "the baseline's (15.9 of 16 CPUs" in said
    assert "the speedup over it reads higher than it is" in said and "ceiling" not in said
    _say_busy_during(spec, result)
    # Its rate stands: not said as the host shared during its passes (the sweep table and
    # compare doubt the rate then), but as its ratios over those passes.
    assert result["warnings"] == [said] and not host_shared(result["warnings"]) and sides_shared(result["warnings"])
    # Those passes keep the submitting thread alone busy: the copy thread is not counted.
    copying = resolve(make_cfg("measure=quick", "staging.mode=copy", "staging.copy_thread=true"), cuda_count=lambda: 1)
    m.side_others["baseline"] = [(4.4, 0.3, 16)] * 3  # 14.7 of 16: a core left beside the submitting thread
    f14 = summarize_measurement(copying, m).figures
    assert _busy_sides_warning(copying, dict(result, figures=f14)) is None
    # Quiet sides (a pass below 0 from the ticks' rounding, summed before the clamp): nothing
    # said; side by side in a sweep: the launcher's own warning says it.
    m.side_others["baseline"] = [(0.002, 0.3, 16), (-0.004, 0.3, 16), (0.001, 0.3, 16)]
    assert summarize_measurement(spec, m).figures["host_others_cores_baseline"] == 0.0
    assert _busy_sides_warning(spec, dict(result, figures=summarize_measurement(spec, m).figures)) is None
    assert _busy_sides_warning(spec, dict(result, job={"concurrent_jobs": 2})) is None
    # The method says so where they run: not on the CPU, which measures neither.
    from runner.record import method_for

    assert "the ceiling's passes" in method_for("cuda:0")["host_others"]
    assert "baseline" not in method_for("cpu")["host_others"] and "ceiling" not in method_for("cpu")["host_others"]


def test_other_processes_during_a_loads_passes_are_measured_and_said(make_cfg):
    """A load job runs no throughput pass: its figures rest on the load's passes, which went
    unwatched (a server's max rate halved by another process read "ok" without a word). They
    are watched alike, and said as the throughput's are; its baseline's as a ratio's side."""
    from runner.job import _busy_during_warning, _busy_sides_warning
    from runner.measure import Measurement
    from runner.record import BUSY_LOAD_SAID, host_shared, sides_shared
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg("measure=quick", "load.scenario=server", "load.rate=max", "load.p99_ms=5"),
                   cuda_count=lambda: 1)
    points = {"runner": {"points": [], "max_rate": 900.0}, "baseline": {"points": [], "max_rate": 300.0}}
    load = {"scenario": "server", "rate": "max", "p99_ms": 5.0, **points}
    busy = [(1.55, 0.1, 16), (3.1, 0.2, 16)]  # 15.5 of 16 CPUs busy over both points: more than it leaves
    quiet = [(0.0005, 0.1, 16), (-0.001, 0.2, 16)]
    m = Measurement(load=load, side_others={"load": list(busy), "load_baseline": list(quiet)})
    f = summarize_measurement(spec, m).figures
    assert f["host_others_cores_load"] == pytest.approx(4.65 / 0.3) and f["host_others_cpus"] == 16
    assert f["host_others_cores_load_baseline"] == 0.0 and f["host_others_cores"] is None
    result = {"env": {"torch_threads": 8}, "figures": f, "job": {"concurrent_jobs": 1}, "warnings": []}
    said = _busy_during_warning(spec, result)
    assert said is not None and said.startswith(BUSY_LOAD_SAID) and "(host_others_cores_load)" in said
    assert host_shared([said]) == "other processes ran during its load's passes"
    assert _busy_sides_warning(spec, result) is None
    # Busy during its baseline's points alone: the ratio over it reads higher, the rate stands.
    m.side_others = {"load": list(quiet), "load_baseline": list(busy)}
    result["figures"] = summarize_measurement(spec, m).figures
    assert _busy_during_warning(spec, result) is None
    sides = _busy_sides_warning(spec, result)
    assert sides is not None and "the load's baseline's (15.5 of 16 CPUs, host_others_cores_load_baseline" in sides
    assert sides_shared([sides]) and not host_shared([sides])


def _cpu_quota() -> bool:
    """Whether a CFS quota applies to this process: cgroup v2's cpu.max or v1's
    cpu.cfs_quota_us, in its own cgroup or any above it (the root's alone missed v1 hosts and
    nested cgroups)."""
    try:
        with open("/proc/self/cgroup") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f]
    except OSError:
        return False
    files = []
    for _, controllers, path in (e for e in entries if len(e) == 3):
        parts = [x for x in path.split("/") if x]
        if controllers == "":  # v2: one hierarchy
            files += [("/sys/fs/cgroup/" + "/".join(parts[:k])).rstrip("/") + "/cpu.max" for k in range(len(parts) + 1)]
        elif "cpu" in controllers.split(","):
            for mount in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"):
                files += [("/".join([mount, *parts[:k]])) + "/cpu.cfs_quota_us" for k in range(len(parts) + 1)]
    for name in files:
        try:
            with open(name) as f:
                value = f.read().split()[0]
        except (OSError, IndexError):
            continue
        if value not in ("max", "-1"):
            return True
    return False


def test_this_process_own_threads_are_not_other_processes():
    """Threads of this process busy outside the GIL (as torch's are) are its own CPU time, all of
    them: read as another process's, every multi-threaded CPU job would be warned about. Against
    an idle second just before (what else ran on the host then), so that another process busy
    beside the test does not fail it."""
    import hashlib
    import threading

    from runner import environment

    if environment.cpu_ticks() is None:
        pytest.skip("no /proc/stat")
    data = b"x" * (1 << 20)
    threads = min(2, len(environment.process_cpus()))

    def window(busy_threads: int) -> tuple[float, float, float]:
        stop = time.monotonic() + 1.0

        def hash_until_stop() -> None:
            while time.monotonic() < stop:
                hashlib.sha256(data).digest()  # releases the GIL: the threads run at once

        before = environment.cpu_ticks()
        workers = [threading.Thread(target=hash_until_stop) for _ in range(busy_threads)]
        for w in workers:
            w.start()
        if not workers:
            time.sleep(1.0)
        for w in workers:
            w.join()
        after = environment.cpu_ticks(before.job_busy.keys())
        others_s, wall_s, _ = environment.others_cores(before, after)
        return others_s / wall_s, (after.own_s - before.own_s) / wall_s, wall_s

    idle_others, _, _ = window(0)
    busy_others, own_cores, _ = window(threads)
    assert own_cores >= 0.4 * threads  # its threads ran, and are counted as its own
    # Counted twice, the threads' cores would be added to what else ran (at most what ran idle).
    assert busy_others - idle_others < 0.3


def test_the_cpus_watched_are_every_thread_s_and_a_containers_own_numbering():
    """An OpenMP runtime told to bind pins the main thread to one CPU and torch's workers to the
    others: the main thread's mask alone had watched one CPU, and read 0 on a busy host."""
    import threading

    from runner.environment import _cpu_list, process_cpus, watched_cpus

    assert _cpu_list("0-3,8") == {0, 1, 2, 3, 8} and _cpu_list("5") == {5}
    # A container's /proc/stat numbering its own CPUs from 0 (LXCFS) while the mask has the host's.
    listed = {"cpu0", "cpu1", "cpu2"}
    assert watched_cpus(listed, {4, 5, 6}) == listed
    assert watched_cpus({"cpu0", "cpu1", "cpu2", "cpu3"}, {1, 2}) == {"cpu1", "cpu2"}
    assert watched_cpus(listed, None) == listed
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        pytest.skip("needs 2 CPUs")
    bound, release = threading.Event(), threading.Event()

    def on_the_other_cpu() -> None:
        os.sched_setaffinity(0, {mine[1]})  # this thread only
        bound.set()
        release.wait(10)

    worker = threading.Thread(target=on_the_other_cpu)
    worker.start()
    try:
        bound.wait(10)
        os.sched_setaffinity(0, {mine[0]})  # the main thread, as a binding runtime leaves it
        assert process_cpus() >= {mine[0], mine[1]}
    finally:
        os.sched_setaffinity(0, set(mine))
        release.set()
        worker.join()


def test_other_processes_cpu_is_the_busy_time_of_this_jobs_cpus_less_steal_and_this_process(make_cfg):
    from runner.environment import CpuTicks, others_cores, tick_seconds

    tick_s = tick_seconds()
    before = CpuTicks(busy=5000, stolen=50, own_s=5.0, at_s=100.0, job_busy={"cpu0": 400, "cpu1": 600})
    # 3 s busy on this job's CPUs (their steal already left out), 1 s of it this process's own.
    after = before._replace(busy=9000, stolen=90, own_s=6.0, at_s=101.0,
                            job_busy={"cpu0": 400 + round(1.0 / tick_s), "cpu1": 600 + round(2.0 / tick_s)})
    assert others_cores(before, after) == pytest.approx((2.0, 1.0, 2))
    # Signed: a quiet pass's rounding can read below 0 (clamped, the passes' errors had added up).
    assert others_cores(before, after._replace(job_busy={"cpu0": 401, "cpu1": 600}, own_s=9.0))[0] < 0
    assert others_cores(None, after) is None and others_cores(after, before) is None
    # A CPU gone between the readings drops out: the other's alone.
    assert others_cores(before, after._replace(job_busy={"cpu0": 400 + round(1.0 / tick_s)})) == pytest.approx((0.0, 1.0, 1))
    # Over the passes the figures rest on: seconds over seconds, clamped once; per pass signed.
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    m = Measurement(throughput=[(100, 1.0), (100, 1.0), (300, 3.0)],
                    host_others=[(1.0, 1.0, 2), None, (-0.5, 3.0, 2)])
    f = summarize_measurement(resolve(make_cfg(*QUICK)), m).figures
    assert f["host_others_cores"] == pytest.approx(0.5 / 4.0) and f["host_others_cpus"] == 2
    assert f["host_others_cores_repeats"] == pytest.approx([1.0, None, -0.5 / 3])
    assert f["host_others_tick_cores"] == pytest.approx(2 * math.sqrt(2) * tick_s / 4.0)


def test_runnable_threads_are_read_from_the_host():
    """Two busy processes are ready to run at every sample (running or waiting for a core)."""
    import subprocess
    import sys
    import time

    from runner.environment import runnable_others

    if runnable_others(samples=1) is None:
        pytest.skip("no procs_running in /proc/stat")
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.3)  # both started and spinning
        assert runnable_others(samples=5, gap_s=0.01) >= 2
    finally:
        for p in busy:
            p.kill()
            p.wait()


def test_the_matmul_rate_is_measured_for_each_path():
    from runner.environment import cpu_matmul_gflops

    for dtype in (torch.float32, torch.bfloat16):
        rates = cpu_matmul_gflops(dtype, size=64)
        assert set(rates) == {"mm", "addmm", "linear"} and all(math.isfinite(r) and r > 0 for r in rates.values())


def test_bad_input_in_a_single_run_raises_and_writes_nothing(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, "model.inputs.x.shape=[7]")
    with pytest.raises(ConfigError, match=r"^model\.inputs \(x float \[32, 7\]\) do not fit model MLP \(mat1 and mat2"):
        run_job(cfg, JobInfo(output_dir=tmp_path))
    assert not (tmp_path / RESULT_FILE).exists()


def test_a_sequence_longer_than_the_model_takes_names_model_seq(make_cfg, tmp_path):
    """The error names every key that sets the inputs' shapes: with `seq` in them, model.seq too."""
    cfg = make_cfg(*QUICK, "model=tiny_llm", "+model.seq=256", "model.inputs.tokens.shape=[seq]")
    with pytest.raises(ConfigError, match=r"exceeds max_seq_len 128 \(at tiny_llm\.py:\d+ in forward, .*; .*fix "
                                          r"model\.inputs, model\.batch and model\.seq to"):
        run_job(cfg, JobInfo(output_dir=tmp_path))
    assert not (tmp_path / RESULT_FILE).exists()


def test_bad_input_in_a_sweep_is_a_failed_result(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, "streams=0")
    result = run_job(cfg, JobInfo(output_dir=tmp_path, multirun=True, num=3))
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert result["status"] == on_disk["status"] == "failed"
    assert on_disk["reason"].startswith("bad config: streams=0: out of range")


FAULTY = ("model=linear", "model.module._target_=tests.faulty_models.FailAfter",
          "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
          "model.inputs.input.shape=[8]", "model.batch=2")


def test_constructor_failure_is_bad_input(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, "model=linear", "model.module._target_=torch.nn.Dropout",
                   "~model.module.in_features", "~model.module.out_features", "+model.module.p=2.0")
    with pytest.raises(ConfigError, match=r"^model\.module: building torch\.nn\.Dropout failed \(dropout probability"):
        run_job(cfg, JobInfo(output_dir=tmp_path))


def test_runtime_failure_is_recorded_with_its_reason(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, *FAULTY, "+model.module.calls=40")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    assert result["status"] == "failed"
    assert result["reason"] == "RuntimeError: planted failure after 40 forwards (in the check)"  # what, and where
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert on_disk["status"] == "failed" and on_disk["reason"] == result["reason"]
    assert on_disk["files"]["traceback"] == "traceback.txt"
    assert "planted failure" in (tmp_path / "traceback.txt").read_text()


def test_a_failure_after_the_repeats_keeps_what_they_measured(make_cfg, tmp_path, monkeypatch):
    """A failure in the host-time pass, after the check and the throughput's repeats, recorded
    `"figures": {}` (review): as a Ctrl-C does, the job keeps the figures of what finished."""
    from runner import schedule

    def enqueue_pass(*args, **kwargs):
        raise RuntimeError("planted failure in the host-time pass")

    monkeypatch.setattr(schedule, "enqueue_pass", enqueue_pass)
    result = run_job(make_cfg(*QUICK, *FAULTY, "+model.module.calls=100000000"), JobInfo(output_dir=tmp_path))
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert on_disk["status"] == result["status"] == "failed"
    figures = on_disk["figures"]
    repeats = len(figures["throughput_requests_per_s_repeats"])
    assert repeats >= 2 and figures["throughput_requests_per_s"] > 0 and figures["check_requests"] > 0, figures
    assert figures["latency_e2e_us"] is None and figures["measure_time_s"] > 0
    assert on_disk["reason"] == (f"RuntimeError: planted failure in the host-time pass (in the host-time pass); the "
                                 f"figures hold the {repeats} throughput repeat(s) that finished before it")


def test_a_model_that_does_not_repeat_itself_is_invalid_and_told_so(make_cfg, tmp_path):
    """A forward with fresh noise failed the check with "128 of 128 requests differ from eager",
    which reads like the runner's fault. A second eager forward of the first mismatching request
    shows the model itself differs from run to run."""
    noisy = (*FAULTY[:1], "model.module._target_=tests.faulty_models.Noisy", *FAULTY[2:])
    result = run_job(make_cfg(*QUICK, *noisy), JobInfo(output_dir=tmp_path))
    assert result["status"] == "invalid"
    assert "; the model itself is not deterministic: two eager forwards of the same request differ by " in result["reason"]
    assert result["figures"]["check_eager_spread"] > result["figures"]["check_tolerance_rel"]
    # A model whose output is NaN repeats itself: not called random, its output named instead.
    nan = (*FAULTY[:1], "model.module._target_=tests.faulty_models.NotFinite", *FAULTY[2:])
    not_finite = run_job(make_cfg(*QUICK, *nan), JobInfo(output_dir=tmp_path / "nan"))
    assert not_finite["status"] == "invalid" and "not deterministic" not in not_finite["reason"]
    assert not_finite["reason"].endswith("; eager's own output is not finite (NaN or inf) for the first of them")
    # Its error is past every number: the console says inf, as the log did ("-" had read as unknown).
    assert "check: 128 of 128 requests DIFFER from eager (max rel err inf, tolerance 1e-05)" in render(not_finite)
    healthy = run_job(make_cfg(*QUICK, *FAULTY, "+model.module.calls=100000"), JobInfo(output_dir=tmp_path / "ok"))
    assert healthy["status"] == "ok" and "check_eager_spread" not in healthy["figures"]


def test_a_model_that_calls_sys_exit_fails_its_job_and_says_so(make_cfg, tmp_path):
    """sys.exit(0) in a model's forward ended a single run with exit 0, no result and no word."""
    exits = (*FAULTY[:1], "model.module._target_=tests.faulty_models.ExitAfter", *FAULTY[2:])
    result = run_job(make_cfg(*QUICK, *exits, "+model.module.calls=5"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "failed"
    assert result["reason"] == "the model's code called sys.exit(0), which ended the job (in the check)"
    assert json.loads((tmp_path / RESULT_FILE).read_text())["status"] == "failed"


def test_resume_skips_a_job_with_an_ok_result(make_cfg, tmp_path):
    info = JobInfo(output_dir=tmp_path, overrides=["measure=quick"])
    first = run_job(make_cfg(*QUICK, "model.batch=2"), info)
    mtime = (tmp_path / RESULT_FILE).stat().st_mtime_ns
    again = run_job(make_cfg(*QUICK, "model.batch=2", "resume=true"), info)
    assert again["status"] == "skipped"
    assert (tmp_path / RESULT_FILE).stat().st_mtime_ns == mtime
    assert first["figures"] == again["figures"]


def test_resume_says_when_the_result_it_keeps_was_measured_on_a_shared_host(make_cfg, tmp_path, capsys, caplog):
    """A result whose own warnings say other processes shared its host (116 requests/s against
    665 quiet) was kept by resume=true as "result (kept, resume=true)", nothing more."""
    from runner.record import BUSY_DURING_SAID, SHARED_HOST

    info = JobInfo(output_dir=tmp_path, overrides=["measure=quick"])
    run_job(make_cfg(*QUICK, "model.batch=2"), info)
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    # As if measured on a quiet host (this one may be busy: the test must not depend on it).
    on_disk["warnings"] = [w for w in on_disk["warnings"] if not w.startswith(tuple(SHARED_HOST))]
    (tmp_path / RESULT_FILE).write_text(json.dumps(on_disk))
    capsys.readouterr()
    run_job(make_cfg(*QUICK, "model.batch=2", "resume=true"), info)
    assert f"result (kept, resume=true): {tmp_path / RESULT_FILE}" in capsys.readouterr().out  # a quiet host's: as before
    on_disk["warnings"].append(f"{BUSY_DURING_SAID}: they kept 1.0 of this job's 2 CPUs busy on average")
    (tmp_path / RESULT_FILE).write_text(json.dumps(on_disk))
    with caplog.at_level(logging.WARNING):
        again = run_job(make_cfg(*QUICK, "model.batch=2", "resume=true"), info)
    assert again["status"] == "skipped"
    assert ("result (kept, resume=true; measured while the host was shared: other processes ran during its passes): "
            f"{tmp_path / RESULT_FILE}") in capsys.readouterr().out
    assert any("run without resume=true to measure it again" in r.getMessage() for r in caplog.records)


def test_resume_refuses_a_result_of_the_same_overrides_with_other_settings(make_cfg, tmp_path):
    """A preset edited between the runs: the overrides match, what they resolve to does not."""
    info = JobInfo(output_dir=tmp_path, overrides=["measure=quick"])
    run_job(make_cfg(*QUICK, "model.batch=2"), info)
    before = (tmp_path / RESULT_FILE).read_bytes()
    with pytest.raises(FolderTaken, match=r"resume=true: .* measured with other settings \(model\.batch: 2 there, 3 "
                                          r"now\): a preset or a default changed since; run without resume=true"):
        run_job(make_cfg(*QUICK, "model.batch=3", "resume=true"), info)
    assert (tmp_path / RESULT_FILE).read_bytes() == before  # never overwritten
    in_sweep = run_job(make_cfg(*QUICK, "model.batch=3", "resume=true"),
                       JobInfo(output_dir=tmp_path, overrides=["measure=quick"], multirun=True))
    assert in_sweep["status"] == "failed" and "model.batch: 2 there, 3 now" in in_sweep["reason"]
    assert (tmp_path / RESULT_FILE).read_bytes() == before


def test_every_forward_of_a_cpu_job_runs_without_autograd(make_cfg, tmp_path):
    result = run_job(make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.InferenceOnly"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]


def test_resume_keeps_a_result_written_before_a_key_existed(make_cfg, tmp_path):
    """A key added to the schema (an input's own dtype) is absent from older results: they ran
    as its default does, and resuming them had been refused as 'measured with other settings'."""
    info = JobInfo(output_dir=tmp_path, overrides=["measure=quick"])
    run_job(make_cfg(*QUICK, "model.batch=2"), info)
    older = json.loads((tmp_path / RESULT_FILE).read_text())
    del older["config"]["model"]["inputs"]["x"]["dtype"], older["config"]["capture"]["fallback_eager"]
    (tmp_path / RESULT_FILE).write_text(json.dumps(older))
    again = run_job(make_cfg(*QUICK, "model.batch=2", "resume=true"), info)
    assert again["status"] == "skipped"
    # A key set apart from its default is still a change, and a model's own argument absent there is too.
    with pytest.raises(FolderTaken, match=r"model\.inputs\.x\.dtype: null there, \"bf16\" now"):
        run_job(make_cfg(*QUICK, "model.batch=2", "model.inputs.x.dtype=bf16", "resume=true"), info)
    from runner.record import config_changes
    assert config_changes({"model": {"module": {"a": 1}}}, {"model": {"module": {"a": 1, "b": None}}}) == \
        ['model.module.b: "<absent>" there, null now']
    assert config_changes({"model": {"batch": 2}}, {"model": {"batch": 2, "seq": None}}) == []  # an Any-typed key too
    assert config_changes({"model": {"inputs": {}}}, {"model": {"inputs": {"t": {"shape": []}}}}) == \
        ['model.inputs.t: "<absent>" there, {"shape": []} now']  # an input of one config only


@pytest.mark.parametrize("how", ["bad config", "Ctrl-C"])
def test_a_job_that_ends_before_its_folder_check_keeps_another_jobs_result(make_cfg, tmp_path, monkeypatch, how):
    """A sweep into a folder of other results: a job that fails on its config, or is stopped,
    before it has looked at its folder, records why beside the result it found, not over it."""
    import runner.job as job

    run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path, overrides=["model.batch=2"]))
    before = (tmp_path / RESULT_FILE).read_bytes()
    info = JobInfo(output_dir=tmp_path, overrides=["model.batch=3"], multirun=True)
    if how == "bad config":
        result = run_job(make_cfg(*QUICK, "model.batch=3", "streams=-1"), info)
        assert result["status"] == "failed" and result["reason"].startswith("bad config: ")
    else:
        def stopped(cfg):
            raise KeyboardInterrupt

        monkeypatch.setattr(job, "resolve", stopped)
        with pytest.raises(KeyboardInterrupt):
            run_job(make_cfg(*QUICK, "model.batch=3"), info)
    assert (tmp_path / RESULT_FILE).read_bytes() == before
    why = (tmp_path / CONFLICT_FILE).read_text()
    assert ("bad config: " if how == "bad config" else "interrupted (Ctrl-C)") in why
    assert f"; {tmp_path} holds a result for other overrides (there: model.batch=2; this job: model.batch=3), kept" in why


def _cpu_lanes(make_cfg, *overrides):
    spec = resolve(make_cfg(*QUICK, *overrides), cuda_count=lambda: 0)
    workload = build(spec)
    return spec, workload, build_lanes(spec, workload)


def test_the_ceiling_checks_its_time_every_stride(make_cfg):
    """The ceiling reads the clock (and, on CUDA, waits for the stride before the last) once per
    stride: a pass past its time ends after one stride, whose size the caller picks."""
    from runner import schedule

    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    with torch.no_grad():
        assert schedule.ceiling_pass(lanes, workload.keys, 1, 0.0, 0.0)[0] == schedule.CEILING_STRIDE
        assert schedule.ceiling_pass(lanes, workload.keys, 1, 0.0, 0.0, stride=1)[0] == 1
        assert schedule.ceiling_pass(lanes, workload.keys, 5, 0.0, math.inf, stride=2)[0] == 6  # whole strides


def test_check_passes_for_the_real_schedule(make_cfg):
    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=600)
    assert result.passed and result.requests == 600 and result.max_rel_err == 0.0


def test_the_fp32_tolerance_tells_a_small_error_from_rounding(make_cfg):
    """On the CPU a healthy check's error is 0 and a planted fault's about 1: nothing had
    pinned the tolerance between them (100x looser passed every test). fp32 holds 1e-5."""
    from runner.check import compare, tolerance

    spec = resolve(make_cfg(*QUICK))
    want = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    assert compare((want * (1 + 1e-4),), (want,))[0] > tolerance(spec)
    assert compare((want * (1 + 1e-7),), (want,))[0] <= tolerance(spec)


def test_the_checks_log_line_reads_as_the_summary(make_cfg, caplog):
    """The log said "max rel err 0.00e+00" and the summary "0.0e+00, tolerance 1e-05"."""
    import logging

    from runner.measure import run_check

    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="runner.measure"):
        result = run_check(spec, workload, lanes)
    [logged] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("check:")]
    assert logged == f"check: {result.requests} requests match eager (max rel err 0.0e+00, tolerance 1e-05)"


def test_check_catches_responses_that_do_not_belong_to_their_request(make_cfg):
    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    port = lanes.ring[0].port(workload.keys[0])  # the CPU's one slot, in the requests' shape
    real = port.enqueue
    calls = {"n": 0}

    def stale_every_fifth():  # every fifth response is the previous request's
        calls["n"] += 1
        if calls["n"] % 5:
            real()

    port.enqueue = stale_every_fifth
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=100)
    assert not result.passed
    assert result.mismatches == 20 and result.bad_requests[:2] == [4, 9]


def test_off_cuda_the_probes_output_is_the_reference_of_one_checked_request(make_cfg):
    """The build's probe already ran an eager forward of one request at the largest size: on the
    CPU (a forward can take seconds) the check serves that request and compares it with the
    probe's output instead of forwarding it again. It is compared all the same: a response that
    does not belong to it is caught."""
    counting = (*SLOW[:-1], "model.module._target_=tests.faulty_models.Healthy", "+model.module.calls=1000")
    spec, workload, lanes = _cpu_lanes(make_cfg, *counting)  # Healthy counts its forwards
    model = workload.model
    assert workload.probe is not None and model.count == 1  # the probe
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=2)
    assert result.passed and result.requests == 2 and result.reused_references == 1
    assert model.count == 1 + 2 + 1  # the probe, two served requests, one reference
    # The reused reference is compared like the others: a wrong one is a mismatch.
    probe_inputs, probe_leaves = workload.probe
    workload.probe = (probe_inputs, tuple(leaf + 1.0 for leaf in probe_leaves))
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=2)
    assert result.mismatches == 1 and result.bad_requests == [1]


@pytest.mark.parametrize("stale", [0, 1])
def test_a_request_whose_input_never_reached_the_model_is_caught_reused_reference_or_not(make_cfg, stale):
    """The model's input buffer starts out holding the probe's request: were that request served
    first, a forward on a stale input would match its reference. It is served after another."""
    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    port = lanes.ring[0].port(workload.keys[0])
    real, calls = port.enqueue, []

    def enqueue():
        calls.append(1)
        if len(calls) == stale + 1:  # this request's bytes never reach the model's input: no copy in
            port.compute()
            port.d2h()
        else:
            real()

    port.enqueue = enqueue
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=2)
    assert result.reused_references == 1 and result.mismatches == 1 and result.bad_requests == [stale]


def test_a_model_that_changes_its_input_in_place_still_matches(make_cfg):
    """On the CPU the probe's arguments are the request's own tensors: the reused request is a
    copy taken before the probe's forward scaled it."""
    in_place = (*SLOW[:-1], "model.module._target_=tests.faulty_models.InPlace", "+model.module.calls=1000")
    spec, workload, lanes = _cpu_lanes(make_cfg, *in_place)
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=4)
    assert result.reused_references == 1 and result.passed, result


def test_check_catches_a_single_corrupted_element(make_cfg):
    spec, workload, lanes = _cpu_lanes(make_cfg, "model.batch=2")
    port = lanes.ring[0].port(workload.keys[0])
    real = port.enqueue

    def corrupt():
        real()
        port.host_out[0][0, 0] += 1.0  # the first output leaf's first element

    port.enqueue = corrupt
    with torch.no_grad():
        result = check_schedule(spec, workload, lanes, requests=8)
    assert result.mismatches == 8


def test_the_relative_error_is_exact_for_large_leaves_of_every_dtype():
    """The check's error figure over millions of values (GPT-2's logits: 51M): float32 leaves
    are compared in float32 but summed by blocks, and agree with a float64 reference; half
    precision leaves are compared exactly; integers exactly."""
    from runner.check import relative_error

    generator = torch.Generator().manual_seed(0)
    want = torch.randn(3_000_001, generator=generator)
    got = want + 1e-6 * torch.randn(3_000_001, generator=generator)
    exact = float((got.double() - want.double()).norm() / want.double().norm())
    assert relative_error((got,), (want,)) == pytest.approx(exact, rel=1e-6)  # one float32 sum drifts ~1e-4
    # Past float32's squares: 1e20 overflows them, 1e-25 underflows them; float64 then.
    assert relative_error((torch.full((9,), 1.1e20),), (torch.full((9,), 1e20),)) == pytest.approx(0.1, rel=1e-6)
    assert relative_error((torch.full((9,), 3e-25),), (torch.full((9,), 1e-25),)) == pytest.approx(2.0, rel=1e-6)
    half = want[:1000].bfloat16()
    assert relative_error((half,), (half.clone(),)) == 0.0
    assert relative_error((half,), (-half,)) == pytest.approx(2.0)
    # Integers are compared exactly (an id one off among large values read 1.3e-12 by the norm).
    big = torch.tensor([2**40, 3])
    assert relative_error((big + 1,), (big,)) == 1.0 and relative_error((big.clone(),), (big,)) == 0.0


def test_a_model_too_big_for_host_memory_is_refused_before_it_is_built(make_cfg, tmp_path, monkeypatch):
    """model.module.depth=100000 grew to 24 GB before the kernel's OOM killer ended it, without a
    word (walk): its size is read from a build on the meta device first."""
    from runner.build import check_model_memory, instantiate_model, model_bytes

    spec = resolve(make_cfg(*QUICK), cuda_count=lambda: 0)
    real = instantiate_model(spec)
    assert model_bytes(spec) == sum(p.numel() * p.element_size() for p in real.parameters()) > 0
    with pytest.raises(ConfigError, match=r"^model\.module: MLP's parameters and buffers take [\d.]+ GiB as built \(on "
                                          r"the host, before moving to the device\), more than 80% of the 0\.0 GiB "
                                          r"available; use smaller sizes under model\.module$"):
        check_model_memory(spec, available=2**20)
    check_model_memory(spec, available=2**40)  # fits
    # The whole job: refused as bad input, before anything is allocated or written (on any host:
    # it is told it has 8 GiB).
    from runner import build as build_module

    monkeypatch.setattr(build_module, "available_host_bytes", lambda: 8 * 2**30)
    with pytest.raises(ConfigError, match=r"^model\.module: MLP's parameters and buffers take 39\.1 GiB .* of the 8\.0 "):
        run_job(make_cfg(*QUICK, "model.module.depth=10000"), JobInfo(output_dir=tmp_path / "deep"))
    assert not (tmp_path / "deep" / RESULT_FILE).exists()


def test_the_size_check_leaves_no_trace_on_the_real_build(make_cfg):
    """The meta build ran the constructor once more: Python's random stream moved (and
    transformers' warn-once cache kept its warnings from the real build); tensors a constructor
    places on a device of its own are real, not meta, and were counted as host bytes (review)."""
    import random

    from runner.build import model_bytes

    drawn = ("model=linear", "model.module._target_=tests.io_models.Drawn", "~model.module.in_features",
             "~model.module.out_features", "model.inputs.input.shape=[4]")
    spec = resolve(make_cfg(*QUICK, *drawn), cuda_count=lambda: 0)
    random.seed(5)
    expected = random.random()
    random.seed(5)
    assert model_bytes(spec) == (4 * 4 + 4) * 4
    assert random.random() == expected
    # A weight made on the CPU by the constructor itself is host memory too: counted, not a reason
    # to skip the check (one numpy-built buffer had switched it off; review).
    placed = resolve(make_cfg(*QUICK, *drawn, "+model.module.device=cpu"), cuda_count=lambda: 0)
    assert model_bytes(placed) == (4 * 4 + 4) * 4
    pretrained = resolve(make_cfg(*QUICK, *drawn, "+model.module.pretrained=true"), cuda_count=lambda: 0)
    assert model_bytes(pretrained) is None  # weights to load are not loaded twice (nor built here)


def test_the_size_check_leaves_transformers_warn_once_warnings_to_the_real_build(make_cfg, caplog):
    pytest.importorskip("transformers")  # (its import adds warning_once to every logger)
    import logging

    from runner.build import instantiate_model, model_bytes

    drawn = ("model=linear", "model.module._target_=tests.io_models.Drawn", "~model.module.in_features",
             "~model.module.out_features", "model.inputs.input.shape=[4]")
    spec = resolve(make_cfg(*QUICK, *drawn), cuda_count=lambda: 0)
    model_bytes(spec)
    with caplog.at_level(logging.WARNING, logger="tests.io_models"):
        instantiate_model(spec)
    assert "Drawn was built" in caplog.text


def test_a_request_too_big_for_host_memory_is_refused_before_allocating(make_cfg):
    from runner.build import check_host_memory

    spec = resolve(make_cfg(*QUICK, "model.batch=100000"), cuda_count=lambda: 0)
    with pytest.raises(ConfigError, match=r"^model\.batch=100000: one request is 97\.7 MiB and the host buffers "
                       r"need [\d.]+ GiB, more than 80% of the 1\.0 GiB available; use a smaller model\.batch or "
                       r"measure\.input_pool \(its requests take [\d.]+ GiB\)$"):
        check_host_memory(spec, available=2**30)
    check_host_memory(spec, available=2**40)  # fits: no error
    # One request in the pool, one slot, a check chunk of 2 requests (256 MiB): 6 requests, 586 MiB.
    one = resolve(make_cfg(*QUICK, "model.batch=100000", "measure.input_pool=1"), cuda_count=lambda: 0)
    check_host_memory(one, available=int(1.2 * 2**30))
    with pytest.raises(ConfigError, match=r"more than 80% of the 0\.6 GiB available; use a smaller model\.batch$"):
        check_host_memory(one, available=int(0.6 * 2**30))
    # A shape no batch can fix is named as such (it was "use a smaller model.batch").
    huge = resolve(make_cfg(*QUICK, "model.batch=1", "model.inputs.x.shape=[99999999999]"), cuda_count=lambda: 0)
    with pytest.raises(ConfigError, match=r"^model\.inputs\.x\.shape=\[99999999999\]: one sample is [\d,.]+ MiB, and "
                       r"the host buffers would need [\d,.]+ GiB even for requests of one sample, more than 80% of the "
                       r"1\.0 GiB available; use a smaller shape$"):
        check_host_memory(huge, available=2**30)


def test_a_dtype_the_model_cannot_run_is_told_apart_from_a_bad_shape(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.Fp32Only", "dtype=fp16")
    with pytest.raises(ConfigError, match=r"^dtype=fp16: model Fp32Only cannot run in fp16 on cpu \(no kernel for torch\.float16\); use dtype=fp32"):
        run_job(cfg, JobInfo(output_dir=tmp_path))
    assert not (tmp_path / RESULT_FILE).exists()


def test_repeats_stop_once_the_mean_is_known_well_enough(make_cfg, tmp_path):
    loose = run_job(make_cfg(*QUICK, "measure.stdrel=1.0", "measure.repeats=8", "measure.min_repeats=2",
                             "measure.budget_s=60"), JobInfo(output_dir=tmp_path / "a"))
    assert loose["figures"]["repeats_stop_reason"] == "stdrel"
    assert len(loose["figures"]["throughput_requests_per_s_repeats"]) == 2
    strict = run_job(make_cfg(*QUICK, "measure.stdrel=0", "measure.repeats=4", "measure.min_repeats=2",
                              "measure.budget_s=60"), JobInfo(output_dir=tmp_path / "b"))
    assert strict["figures"]["repeats_stop_reason"] == "repeats"
    assert len(strict["figures"]["throughput_requests_per_s_repeats"]) == 4


def test_a_ratio_whose_uncertainty_covers_one_is_within_noise():
    from runner.summary import ratio_figures

    noisy = ratio_figures("speedup_vs_baseline", 0.90, [900.0, 1100.0, 700.0], [1000.0, 1010.0, 990.0])
    assert noisy["speedup_vs_baseline_within_noise"] is True
    low, high = noisy["speedup_vs_baseline_interval"]
    assert low < 1.0 < high
    clear = ratio_figures("speedup_vs_baseline", 5.0, [5000.0, 5010.0, 4990.0], [1000.0, 1002.0, 998.0])
    assert clear["speedup_vs_baseline_within_noise"] is False
    assert clear["speedup_vs_baseline_interval"][0] > 1.0
    # Three passes a side, 2% cv each: Student's t for the Welch-Satterthwaite degrees of freedom
    # of the two errors (4 here: 2.776), each the median's of three (1.160 sigma / sqrt(3)).
    # 1.04 is within noise, 1.06 beyond it (as a t-test of the means says: p = 0.02).
    err = math.hypot(1.160 * 0.02 / math.sqrt(3), 1.160 * 0.02 / math.sqrt(3))
    near = ratio_figures("speedup_vs_baseline", 1.04, [1040.0, 1060.8, 1019.2], [1000.0, 1020.0, 980.0])
    assert near["speedup_vs_baseline_within_noise"] is True
    assert near["speedup_vs_baseline_interval"][0] == pytest.approx(1.04 * math.exp(-2.776 * err), rel=1e-3)
    few = ratio_figures("speedup_vs_baseline", 1.06, [1060.0, 1081.2, 1038.8], [1000.0, 1020.0, 980.0])
    assert few["speedup_vs_baseline_within_noise"] is False
    # A side whose spread is all of the error leaves the degrees of freedom of that side alone.
    lopsided = ratio_figures("speedup_vs_baseline", 1.06, [1060.0, 1060.0, 1060.0], [1000.0, 1040.0, 960.0])
    assert lopsided["speedup_vs_baseline_interval"][0] == pytest.approx(
        1.06 * math.exp(-4.303 * 1.160 * 0.04 / math.sqrt(3)), rel=1e-3)


def test_the_ratios_interval_holds_95_percent_in_simulation():
    """Equal rates are read "beyond noise" in at most about 5% of runs, and a real difference
    in many more: the interval had used the fewer passes' degrees of freedom and 1.25 sigma /
    sqrt(n) per median, and called equal rates beyond noise in 0.7% of runs at three passes a
    side and 2.4% at ten, a real 1.10x at 3% cv in 32% of runs at three (51% now)."""
    import random

    from runner.stats import median
    from runner.summary import ratio_figures

    rnd = random.Random(3)

    def beyond(n: int, ratio: float, cv_num: float, cv_den: float, trials: int = 4000) -> float:
        said = 0
        for _ in range(trials):
            num = [rnd.gauss(ratio, cv_num * ratio) for _ in range(n)]
            den = [rnd.gauss(1.0, cv_den) for _ in range(n)]
            said += ratio_figures("r", median(num) / median(den), num, den)["r_within_noise"] is False
        return said / trials

    assert 0.03 <= beyond(10, 1.0, 0.03, 0.03) <= 0.06
    assert beyond(3, 1.0, 0.03, 0.03) <= 0.06 and beyond(3, 1.0, 0.01, 0.05) <= 0.06
    assert beyond(2, 1.0, 0.01, 0.05) <= 0.06
    assert beyond(3, 1.10, 0.03, 0.03) >= 0.45


def test_the_warnings_say_what_a_figure_rests_on(make_cfg):
    """Said by the summary, from what ran: a ratio within noise names its 95% interval (it had
    said 2-sigma, of a Student's t interval); a check cut short says how long it took against its
    share (18 s of a 5 s share had read as a plain cut); a latency pass cut short says what its
    p99 rests on (the default CPU job's served 40-142 of 2000, printed as if from 2000)."""
    from runner.check import CheckResult
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK, "measure.latency_requests=500"))
    m = Measurement()
    m.throughput = [(100, 1.0), (120, 1.0), (110, 1.0)]
    m.baseline = [(100, 1.0), (110, 1.0), (105, 1.0)]
    m.check = CheckResult(40, 0, 0.0, 1e-5, requested=64, seconds=18.1, allowance_s=5.3)
    m.latency = {"lane": [0] * 40, "device_us": [[0.0, 1.0, 2.0, 3.0]] * 40}
    m.baseline_latency_s = [1e-3] * 300
    said = summarize_measurement(spec, m).warnings
    noise = [w for w in said if "within noise" in w]
    assert noise and all("its 95% interval" in w and "2-sigma" not in w for w in noise), said
    # Cut, and far past its share: how many it compared, and a warning of the overrun.
    assert "the check compared 40 of measure.check_requests=64 requests before its share of the budget ran out" in said
    assert ("the check took 18.1 s, past its 5.3 s share of measure.budget_s=2: the host ran slower than its first "
            "requests promised") in said
    # Past a whole quick check (128), a note: the README's default CPU job warned of it every time.
    m.check = CheckResult(1373, 0, 0.0, 1e-5, requested=2048, seconds=5.0, allowance_s=5.0)
    summary = summarize_measurement(spec, m)
    assert not [w for w in summary.warnings if w.startswith("the check compared")]
    assert summary.notes == ["the check compared 1373 of measure.check_requests=2048 requests before its share of the "
                             "budget ran out (it took 5.0 s; its share: 5.0 s)"]
    # Most of a quick check (124 of its 128): a note too (a warning on nearly every quick CPU job).
    m.check = CheckResult(124, 0, 0.0, 1e-5, requested=128, seconds=0.5, allowance_s=0.5)
    summary = summarize_measurement(spec, m)
    assert not [w for w in summary.warnings if w.startswith("the check")]
    assert [n for n in summary.notes if n.startswith("the check compared 124 of measure.check_requests=128")]
    # But far past its share, the overrun is a warning whatever it compared (the note alone had
    # hidden a 0.3 s share run for 1.5 s).
    m.check = CheckResult(124, 0, 0.0, 1e-5, requested=128, seconds=1.5, allowance_s=0.3)
    summary = summarize_measurement(spec, m)
    assert [w for w in summary.warnings if w.startswith("the check took 1.5 s, past its 0.3 s share")]
    assert [n for n in summary.notes if n.startswith("the check compared 124 of measure.check_requests=128")]
    m.check = CheckResult(40, 0, 0.0, 1e-5, requested=64, seconds=18.1, allowance_s=5.3)
    assert ("the latency pass served 40 of measure.latency_requests=500 requests in its share of the budget "
            "(measure.budget_s=2): its p99 lies between its two largest latencies; raise measure.budget_s for more") in said
    assert ("the baseline's latency pass served 300 of measure.latency_requests=500 requests in its share of the "
            "budget (measure.budget_s=2): its p99 rests on 300 requests; raise measure.budget_s for more") in said
    m.baseline_latency_s = [1e-3] * 460  # nine tenths and more, 100 at least: its p99 is as good, nothing said
    assert not [w for w in summarize_measurement(spec, m).warnings if w.startswith("the baseline's latency pass")]
    # Every request compared, far past the share: chunks sized by a pace the host did not keep,
    # or only the first chunk, which always runs (a slow model, not a slower host).
    m.check = CheckResult(40, 0, 0.0, 1e-5, requested=40, seconds=2.0, allowance_s=0.3)
    assert ("the check took 2.0 s, past its 0.3 s share of measure.budget_s=2: the host ran slower than its first "
            "requests promised") in summarize_measurement(spec, m).warnings
    m.check = CheckResult(2, 0, 0.0, 1e-5, requested=2, seconds=3.0, allowance_s=0.4)
    assert ("the check took 3.0 s, past its 0.4 s share of measure.budget_s=2: its first 2 request(s) always run, "
            "each with its eager reference") in summarize_measurement(spec, m).warnings


def test_a_check_that_overran_leaves_the_timed_passes_their_share(make_cfg, tmp_path):
    """A host that slowed during the check (its first requests set the pace of its later
    chunks) had left the throughput one pass of one request (7 ms) behind an ok status: the
    timed passes keep their share past the budget's end, and the overrun is said."""
    # 50 ms a forward once slowed: the check overruns the budget however many requests the
    # host's pace before it sized its chunks for (on a busy host 15-17 of the 24, all of them on
    # a quiet one; with 15 ms and 40 requests the test had failed beside another process).
    cfg = make_cfg(*QUICK, *SLOW[:-1], "model.module._target_=tests.faulty_models.SlowAfter", "+model.module.calls=4",
                   "+model.module.delay_s=0.05", "measure.budget_s=1", "measure.check_requests=24",
                   "measure.warmup_ms=0")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    f, said = result["figures"], result["warnings"]
    assert result["status"] == "ok" and 10 <= f["check_requests"] <= 24
    nominal_s = 1.0 * 0.35 / (0.20 + 0.05 + 0.35 + 0.15)  # throughput's share of the CPU job's phases
    assert f["measure_phases_s"]["check"] > 1.0  # the check alone ran past the budget
    assert f["measure_phases_s"]["throughput"] > 0.8 * nominal_s  # its share, not what the check left
    assert f["throughput_requests"] >= 5, f["throughput_requests_per_s_repeats"]  # its share's worth (50 ms each), not one
    assert any(w.startswith("the check took ") and "past its 0.3 s share of measure.budget_s=1" in w for w in said), said
    assert ("the phases before the timed passes overran their shares of measure.budget_s=1: the timed passes kept "
            f"theirs ({nominal_s:.1f} s), past the budget's end") in said, said
    # Nothing ran past what the estimate allowed for: the kept shares are in the bound.
    assert not [w for w in said if w.startswith("the timed phases took")], said
    from runner.measure import kept_share_text
    assert kept_share_text((0.7, 1.2), 2) == ("the phases before the timed passes overran their shares of "
                                              "measure.budget_s=2: the timed passes kept theirs (1.2 s, the "
                                              "throughput's 0.7 s), past the budget's end")


def test_timed_phases_past_their_estimate_are_said(make_cfg, tmp_path):
    """The console said "measuring: 4.5 to 13.4 s more" and the timed phases took 14.8 s with no
    word; the record kept the least alone, and measure_time_s (which counts the check) read as
    its counterpart. The most and what they took are recorded; well past the most, a warning."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK))
    late = Measurement(throughput=[(100, 1.0)] * 3, estimate_s=1.0, estimate_most_s=2.0, after_estimate_s=5.0,
                       budget_left_s=2.5)
    said = summarize_measurement(spec, late).warnings
    assert ("the timed phases took 5.0 s, past the 2.0 s at most estimated before them from the warm-up's pace and the "
            "2.5 s the budget had left: the job ran slower than its start promised (the host's load or speed "
            "changed?)") in said
    on_time = Measurement(throughput=[(100, 1.0)] * 3, estimate_s=1.0, estimate_most_s=2.0, after_estimate_s=2.2,
                          budget_left_s=2.5)
    # Past the estimate but within what the budget had left (a slow baseline's passes may run longer): nothing.
    within = Measurement(throughput=[(100, 1.0)] * 3, estimate_s=1.0, estimate_most_s=2.0, after_estimate_s=5.0,
                         budget_left_s=18.0)
    for m in (on_time, within):
        assert not [w for w in summarize_measurement(spec, m).warnings if "timed phases took" in w]
    f = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path))["figures"]
    assert f["measure_estimate_s"] <= f["measure_estimate_most_s"]
    assert 0 < f["measure_after_estimate_s"] <= f["measure_time_s"]


def test_a_host_whose_load_changed_during_the_job_is_said(make_cfg):
    """On the CPU the throughput passes and the latency pass run one loop: a job beside another
    process read 22 requests/s in its passes and 846 from its latency pass (1,182 us), with
    every host check, taken as it began, quiet. Said; a job whose two agree says nothing."""
    from runner.summary import _loops_disagree

    spec = resolve(make_cfg(*QUICK))
    [said] = _loops_disagree(spec, {"throughput_requests_per_s": 22.0, "latency_e2e_us": {"mean": 1182.5}})
    assert said.startswith("the throughput passes (22 requests/s) and the latency pass (846 requests/s, from its "
                           "mean latency) ran the same one-at-a-time loop on the CPU, yet differ 38.4x")
    assert _loops_disagree(spec, {"throughput_requests_per_s": 850.0, "latency_e2e_us": {"mean": 1182.5}}) == []
    assert _loops_disagree(spec, {"throughput_requests_per_s": None, "latency_e2e_us": None}) == []


def test_the_cpu_method_names_copy_stagings_copy(make_cfg, tmp_path):
    """In copy staging on the CPU the record said host_copy_us was "no copy, the request is
    already in place" while the job measured a memmove of about 2-4 us."""
    result = run_job(make_cfg(*QUICK, "model.batch=2", "staging.mode=copy"), JobInfo(output_dir=tmp_path / "copy"))
    method = result["method"]
    assert method["schedule"].startswith("on the CPU, copy staging:") and "input pool" in method["schedule"]
    assert "already in place" not in method["host_time"] and "from the pool into the slot" in method["host_time"]
    assert result["figures"]["host_copy_us"]["p50"] > 0
    direct = run_job(make_cfg(*QUICK, "model.batch=2", "staging.mode=direct"), JobInfo(output_dir=tmp_path / "d"))
    assert "already in place" in direct["method"]["host_time"] and "input pool" not in direct["method"]["schedule"]


def test_the_gpu_method_says_what_ran():
    """On a GPU the method said CUDA events between the copies (the default puts them inside the
    graph: e2e only), a memmove on the submitting thread (none in direct staging or with the
    copy thread), pinned slots for pageable ones, and the median of measure.repeats passes."""
    from runner.record import method_for

    ran = {"staging": "direct", "copy_thread": False, "copies_in_graph": True, "pinned": True}
    default = method_for("cuda:0", ran)
    assert "latency_e2e_us only" in default["latency"] and "after the D2H copy" not in default["latency"]
    assert "no copy in direct staging" in default["host_time"] and "memmove" not in default["host_time"]
    assert "ring of staging.slots pinned slots" in default["schedule"] and "PINNED" not in json.dumps(default)
    assert "at most measure.repeats" in default["throughput"] and "measure.max_pass_ms" in default["throughput"]
    assert "the ceiling replays the compute alone" in default["schedule"] and "no host waits" not in default["ceiling"]
    copies = method_for("cuda:0", {**ran, "staging": "copy", "copies_in_graph": False, "pinned": False})
    assert "after the D2H copy" in copies["latency"] and "one memmove of its bytes" in copies["host_time"]
    assert "ring of staging.slots pageable slots" in copies["schedule"]
    threaded = method_for("cuda:0", {**ran, "staging": "copy", "copy_thread": True})
    assert "the copy thread copies the request" in threaded["host_time"]


def test_a_job_beside_others_says_its_timings_interfere(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNNER_CONCURRENT_JOBS", "2")
    result = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path))
    assert result["job"]["concurrent_jobs"] == 2
    assert any("timings interfere" in w for w in result["warnings"])


def test_launchers_that_run_jobs_at_once_are_recognized():
    from omegaconf import OmegaConf

    from runner.callbacks import concurrent_jobs, sweep_size

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert concurrent_jobs({"_target_": joblib, "n_jobs": 2}, 6) == 2
    assert concurrent_jobs({"_target_": joblib, "n_jobs": 8}, 3) == 3  # no more at once than the sweep has
    assert concurrent_jobs({"_target_": joblib, "n_jobs": 1}, 6) == 1
    assert concurrent_jobs({"_target_": "hydra_plugins.runner_launcher.runner_launcher.RunnerLauncher"}, 6) == 1
    # submitit's local launcher starts every job at once: the sweep's count (it recorded 2**30).
    assert concurrent_jobs({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}, 6) == 6
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["streams=1,2,4", "graph=false,true", "seed=3"]},
                                         "sweeper": {"params": {"model.batch": "range(1,3)"}}}})
    assert sweep_size(config) == 3 * 2 * 2


def test_a_phase_the_job_does_not_run_gets_no_time():
    from runner.measure import Budget

    budget = Budget(10.0, ["throughput", "latency"])
    assert budget.allowance("ceiling") == 0.0  # not a phase of this job
    first = budget.allowance("throughput")
    assert 0.0 < first < 10.0
    assert budget.allowance("throughput") == 0.0  # already given its share
    assert budget.allowance("latency") > 0.0


def test_one_pass_is_not_called_within_noise():
    from runner.summary import ratio_figures

    single = ratio_figures("speedup_vs_baseline", 5.0, [500.0], [100.0])
    assert single["speedup_vs_baseline_within_noise"] is None and single["speedup_vs_baseline_interval"] is None


SLOW = ("model=linear", "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
        "model.inputs.input.shape=[8]", "model.module._target_=tests.faulty_models.Slow")


def test_slow_requests_skip_the_latency_passes_their_budget_cannot_hold(make_cfg, tmp_path, caplog, capsys):
    """200 ms per request and 0.4 s of budget: the latency passes' floor (two turns of the
    ring) does not fit their share, so they are skipped and the result says so, instead of the job
    running far past its budget."""
    cfg = make_cfg(*QUICK, *SLOW, "+model.module.calls=200", "measure.budget_s=0.4", "measure.warmup_ms=0")
    with caplog.at_level(logging.INFO, logger="runner.measure"):
        result = run_job(cfg, JobInfo(output_dir=tmp_path))
    f = result["figures"]
    assert result["status"] == "ok" and f["throughput_requests_per_s"] < 6
    # The estimate counts the repeats the budget holds, not measure.repeats ("at most 3 repeats of
    # about 3.38 s per pass" had come with "3.4 to 4.3 s more"); no "warm-up 0 ms" for none.
    [estimate] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("measuring: ")]
    assert re.search(r"\(measure.budget_s=0.4: 1 repeat of about 0\.2\d s per pass, fewer than", estimate), estimate
    assert "no warm-up" in capsys.readouterr().out
    assert f["latency_e2e_us"] is None and f["latency_clock"] is None and f["host_launch_us"] is None
    assert "enqueue" not in f["measure_phases_s"] and "latency" not in f["measure_phases_s"]
    assert any(w.startswith("latency and host time per step not measured") and "measure.budget_s=0.4" in w
               for w in result["warnings"])
    # Said before measuring, from the first forward: the least this job can do overruns it.
    assert any(w.startswith("one forward at the largest size took 0.2 s: if the others are as slow, the least this job can do "
                            "(the check's 2 requests with 1 more eager reference, one timed pass of 1 request)")
               for w in result["warnings"])
    # The check ran the same code: no warm-up request on top of it.
    assert "warmup" not in f["measure_phases_s"]
    assert any(w.startswith("warm-up skipped: the check's 2 requests ran the same code") for w in result["warnings"])
    # The check used up the budget, yet a timed pass still runs one turn of the ring: the
    # estimate says so (not "0 s more"), and the warning tells the passes' real length.
    assert f["measure_estimate_s"] >= 0.15 and f["throughput_requests"] >= 1
    # Each pass ran one 200 ms request: it met measure.min_duration_ms=100, not min_requests.
    assert any("passes were cut to 1 request and at most " in w and "(asked: measure.min_requests=20)" in w
               for w in result["warnings"])
    # With room for them, the same model gets its latency figures.
    roomy = run_job(make_cfg(*QUICK, *SLOW, "+model.module.calls=5", "measure.budget_s=4", "measure.warmup_ms=0"),
                    JobInfo(output_dir=tmp_path / "roomy"))
    assert roomy["figures"]["latency_e2e_us"]["n"] >= 2 and roomy["figures"]["measure_phases_s"]["warmup"] > 0
    assert not any("not measured" in w or "skipped" in w or "one forward" in w for w in roomy["warnings"])


def test_a_job_whose_least_work_is_far_past_its_budget_is_refused_before_measuring(make_cfg, tmp_path, monkeypatch):
    """GPT-2 in fp16 on a 2-core CPU: a 96 s first forward, then 382 s of least work for a 2 s
    budget. Past REFUSE_FACTOR times the budget and REFUSE_MIN_S, the job stops with one line
    saying what budget would measure it (here scaled down: 200 ms forwards, 0.4 s budget)."""
    import runner.job as job
    from runner import spec as rules

    monkeypatch.setattr(rules, "REFUSE_FACTOR", 1.5)
    monkeypatch.setattr(rules, "REFUSE_MIN_S", 0.1)
    # The first forward is not stopped where its timer cannot be set (another thread): the
    # refusal then comes after it, with its time.
    monkeypatch.setattr(job, "probe_limit", lambda spec: None)
    cfg = make_cfg(*QUICK, *SLOW, "+model.module.calls=200", "measure.budget_s=0.4", "measure.warmup_ms=0")
    with pytest.raises(ConfigError) as refused:
        run_job(cfg, JobInfo(output_dir=tmp_path / "single"))
    # (The figures depend on how long the 0.2 s sleep took on a busy host.)
    assert re.match(r"measure\.budget_s=0\.4: one forward at the largest size took 0\.\d s, so the least this job can "
                    r"do \(the check's 2 requests with 1 more eager reference, one timed pass of 1 request\) takes about "
                    r"\d s, over 1\.5 times its budget: not measured; raise measure\.budget_s to \d+ or more",
                    str(refused.value)), str(refused.value)
    assert not (tmp_path / "single" / RESULT_FILE).exists()
    # In a sweep, the job fails with that reason and the sweep goes on.
    swept = run_job(cfg, JobInfo(output_dir=tmp_path / "swept", multirun=True, num=0, sweep_dir=str(tmp_path)))
    assert swept["status"] == "failed" and swept["reason"].startswith("bad config: measure.budget_s=0.4: one forward")
    # Within the factor, the same job runs and warns instead.
    monkeypatch.setattr(rules, "REFUSE_FACTOR", 20.0)
    assert run_job(cfg, JobInfo(output_dir=tmp_path / "ran"))["status"] == "ok"


def test_a_first_forward_that_runs_past_what_would_be_refused_is_stopped_there(make_cfg, tmp_path, monkeypatch):
    """GPT-2 in fp16 on 2 cores was refused after its whole 96 s first forward. The forward is
    now stopped once the least work (here 4 forwards) would be refused anyway: a 30 s forward
    with a 0.4 s budget, 1.5 times it refused, stops after 0.6 s / 4."""
    from runner import spec as rules

    monkeypatch.setattr(rules, "REFUSE_FACTOR", 1.5)
    monkeypatch.setattr(rules, "REFUSE_MIN_S", 0.1)
    cfg = make_cfg(*QUICK, *SLOW, "+model.module.calls=30000", "measure.budget_s=0.4", "measure.warmup_ms=0")
    began = time.perf_counter()
    with pytest.raises(ConfigError) as refused:
        run_job(cfg, JobInfo(output_dir=tmp_path / "single"))
    assert time.perf_counter() - began < 20  # not the 30 s forward
    message = str(refused.value)
    assert message.startswith("measure.budget_s=0.4: one forward at the largest size ran 0.")
    assert (" s without ending (stopped there), so the least this job can do (the check's 2 requests with 1 more "
            "eager reference, one timed pass of 1 request, 4 forwards) takes over 1 s, over 1.5 times its budget: "
            "not measured; raise measure.budget_s to ") in message
    assert not (tmp_path / "single" / RESULT_FILE).exists()
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    # A forward within the limit is not stopped, and the job runs.
    fast = make_cfg(*QUICK, *SLOW, "+model.module.calls=1", "measure.budget_s=0.4", "measure.warmup_ms=0")
    assert run_job(fast, JobInfo(output_dir=tmp_path / "fast"))["status"] == "ok"


def test_a_noisy_throughput_says_whether_the_host_speed_moved_with_it(make_cfg):
    """The canary (a fixed Python loop timed before each pass) tells a host that slowed down
    from a schedule that did: the cv warning says which, with the figures."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK))
    # The host ran Python at half speed during the last two passes, and the rates halved with it.
    followed = summarize_measurement(spec, Measurement(throughput=[(1000, 1.0), (1010, 1.0), (500, 1.0), (520, 1.0)],
                                                       host_canary_s=[1e-4, 1e-4, 2e-4, 2e-4]))
    f = followed.figures
    assert f["host_canary_us_repeats"] == pytest.approx([100, 100, 200, 200])
    assert f["host_canary_correlation"] > 0.95 and f["host_canary_cv"] > 0.3
    [warning] = [w for w in followed.warnings if w.startswith("throughput varied")]
    assert "the host's own speed varied by 38.5% over the same passes" in warning
    assert warning.endswith("the rates followed the host")
    # The host's speed moved, the rates moved otherwise: the figures, without the claim.
    unrelated = summarize_measurement(spec, Measurement(throughput=[(1000, 1.0), (500, 1.0), (1000, 1.0), (500, 1.0)],
                                                        host_canary_s=[1e-4, 1e-4, 2e-4, 2e-4]))
    [warning] = [w for w in unrelated.warnings if w.startswith("throughput varied")]
    assert "the host's own speed varied by" in warning and "followed" not in warning
    assert abs(unrelated.figures["host_canary_correlation"]) < 0.1
    # Over three passes a correlation says little: the figures, without the claim.
    three = summarize_measurement(spec, Measurement(throughput=[(1000, 1.0), (1010, 1.0), (500, 1.0)],
                                                    host_canary_s=[1e-4, 1e-4, 2e-4]))
    [warning] = [w for w in three.warnings if w.startswith("throughput varied")]
    assert three.figures["host_canary_correlation"] > 0.95 and "followed" not in warning
    # A steady host: nothing said about it.
    steady = summarize_measurement(spec, Measurement(throughput=[(1000, 1.0), (500, 1.0), (1000, 1.0)],
                                                     host_canary_s=[1.00e-4, 1.01e-4, 1.00e-4]))
    [warning] = [w for w in steady.warnings if w.startswith("throughput varied")]
    assert "host's own speed" not in warning and steady.figures["host_canary_cv"] < 0.01


def test_every_throughput_pass_has_its_canary(make_cfg, tmp_path):
    result = run_job(make_cfg(*QUICK), JobInfo(output_dir=tmp_path))
    f = result["figures"]
    assert len(f["host_canary_us_repeats"]) == len(f["throughput_requests_per_s_repeats"]) >= 2
    assert all(0 < us < 1e5 for us in f["host_canary_us_repeats"])
    assert "host_canary" in result["method"]


def test_a_step_in_speed_leaves_the_passes_before_it_out_of_the_figures(make_cfg):
    """The host's speed stepped after two passes (a VM on the H200: rates 1.0, 0.97, then 0.65
    +-2%, the host's own speed -38%): the median and cv are those of the passes after the
    step, the warning says which passes were left out and how far the host moved, and every
    pass stays in the record. The baseline's passes (no witness of the host) all count."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK))
    passes = [(1000, 1.0), (966, 1.0), (646, 1.0), (635, 1.0), (615, 1.0)]
    canary = [1e-4, 1e-4, 1.6e-4, 1.6e-4, 1.6e-4]
    baseline = [(200, 1.0), (100, 1.0), (100, 1.0), (100, 1.0), (100, 1.0)]
    summary = summarize_measurement(spec, Measurement(throughput=passes, baseline=baseline, host_canary_s=canary))
    f = summary.figures
    assert f["throughput_steady_from_repeat"] == 3 and "baseline_steady_from_repeat" not in f
    assert f["throughput_requests_per_s"] == 635.0  # the median of the last three, not of all five
    after = [646, 635, 615]
    assert f["throughput_cv"] == pytest.approx(statistics.stdev(after) / statistics.mean(after))
    assert f["throughput_cv_all_repeats"] > 0.2 and f["throughput_requests_per_s_repeats"] == [1000, 966, 646, 635, 615]
    assert f["throughput_stdrel"] == pytest.approx(f["throughput_cv"] / math.sqrt(3))
    assert f["baseline_cv"] == pytest.approx(statistics.stdev([200, 100, 100, 100, 100]) / 120)
    assert f["speedup_vs_baseline"] == pytest.approx(6.35)
    # The interval: the spread of the three steady passes and of all five baseline passes.
    # Each median's error for its n (1.160 and 1.198 sigma / sqrt(n) for 3 and 5); the baseline's
    # is most of it, so the Welch-Satterthwaite degrees of freedom are near its own 4: 4.06.
    ours, theirs = 1.160 * f["throughput_cv"] / math.sqrt(3), 1.198 * f["baseline_cv"] / math.sqrt(5)
    err = math.hypot(ours, theirs)
    assert (ours ** 2 + theirs ** 2) ** 2 / (ours ** 4 / 2 + theirs ** 4 / 4) == pytest.approx(4.055, abs=1e-3)
    t = 2.776  # Student's t at 97.5% for 4 degrees of freedom
    assert f["speedup_vs_baseline_interval"] == pytest.approx([6.35 * math.exp(-t * err), 6.35 * math.exp(t * err)])
    [step] = [w for w in summary.warnings if w.startswith("throughput: passes 1-2 of 5 left out")]
    assert "the host's own speed moved -38% after them and the rate -36%; passes 3-5 have cv 2.5%" in step
    assert not [w for w in summary.warnings if w.startswith("throughput varied")]  # 2.5% is under cv_warn
    # The same rates with a steady host: every pass counts.
    flat = summarize_measurement(spec, Measurement(throughput=passes, host_canary_s=[1e-4] * 5))
    assert flat.figures["throughput_steady_from_repeat"] == 1
    assert flat.figures["throughput_cv"] == flat.figures["throughput_cv_all_repeats"] > 0.2
    assert flat.figures["throughput_requests_per_s"] == 646.0
    assert not [w for w in flat.warnings if "left out" in w]
    assert "figures from repeat" not in render({"status": "ok", "figures": {**flat.figures, "measure_time_s": 2.0}})
    assert "figures from repeat 3" in render({"status": "ok", "figures": {**f, "measure_time_s": 2.0}})


def test_a_noisy_run_after_a_step_warns_of_the_passes_its_cv_is_of(make_cfg):
    """After a step the cv warning counts the passes after it, and judges the host over them."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK))
    passes = [(2000, 1.0), (1000, 1.0), (1100, 1.0), (900, 1.0), (1000, 1.0), (1150, 1.0)]
    canary = [0.5e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]  # the host halved its speed after pass 1, then held
    summary = summarize_measurement(spec, Measurement(throughput=passes, host_canary_s=canary))
    assert summary.figures["throughput_steady_from_repeat"] == 2
    [noisy] = [w for w in summary.warnings if w.startswith("throughput varied")]
    assert noisy.startswith("throughput varied by 9.5% across 5 passes")
    assert "host's own speed" not in noisy  # it held over those passes (over all six it moved 30%)


def test_interleaved_passes_judge_the_speedup_by_the_spread_of_their_pairs(make_cfg):
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    # A GPU job's spec (on the CPU there is no baseline to interleave with)
    spec = resolve(make_cfg("measure=quick", "measure.interleave=true"), cuda_count=lambda: 1)
    assert spec.measure.interleave and spec.baseline
    # The host's speed moved both passes of each pair: the ratios hold at 10x +-1%.
    runner_passes = [(1000, 1.0), (600, 1.0), (1010, 1.0), (590, 1.0)]
    baseline = [(100, 1.0), (60, 1.0), (100, 1.0), (60, 1.0)]
    f = summarize_measurement(spec, Measurement(throughput=runner_passes, baseline=baseline)).figures
    paired = [10.0, 10.0, 10.1, 590 / 60]
    assert f["speedup_vs_baseline_repeats"] == pytest.approx(paired)
    err = 1.092 * statistics.stdev(paired) / statistics.mean(paired) / 2  # the median of 4: 1.092 sigma / sqrt(4)
    low, high = f["speedup_vs_baseline_interval"]
    t = 3.182  # Student's t, 3 degrees of freedom
    assert (low, high) == pytest.approx((f["speedup_vs_baseline"] * math.exp(-t * err), f["speedup_vs_baseline"] * math.exp(t * err)))
    assert high - low < 0.5  # the rates' own spread (27% cv) would have made it 6 wide


def test_interleaved_passes_judge_the_efficiency_by_its_pairs_across_a_step(make_cfg):
    """Each ceiling pass ran beside its throughput pass: across a step in the host's speed the
    throughput's steady passes against every ceiling pass had read 0.60 where every pair is 0.50."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg("measure=quick", "measure.interleave=true", "measure.min_repeats=3"), cuda_count=lambda: 1)
    m = Measurement(throughput=[(r, 1.0) for r in (100, 101, 99, 150, 151, 149)],
                    ceiling=[(r, 1.0) for r in (200, 202, 198, 300, 302, 298)],
                    baseline=[(r, 1.0) for r in (50, 50.5, 49.5, 75, 75.5, 74.5)],
                    host_canary_s=[2e-4] * 3 + [1.33e-4] * 3)  # the host 1.5x faster from pass 4
    f = summarize_measurement(spec, m).figures
    assert f["throughput_steady_from_repeat"] == 4  # the step is found
    assert f["efficiency_vs_ceiling"] == pytest.approx(0.5)
    assert f["efficiency_vs_ceiling_repeats"] == pytest.approx([0.5] * 6)
    low, high = f["efficiency_vs_ceiling_interval"]
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)
    assert f["speedup_vs_baseline"] == pytest.approx(2.0)
    # In blocks the ceiling's passes ran apart: the ratio of the medians, as before.
    blocks = resolve(make_cfg("measure=quick", "measure.min_repeats=3"), cuda_count=lambda: 1)
    f = summarize_measurement(blocks, Measurement(throughput=[(150, 1.0)] * 3, ceiling=[(200, 1.0)] * 3)).figures
    assert f["efficiency_vs_ceiling"] == pytest.approx(0.75) and "efficiency_vs_ceiling_repeats" not in f


def test_after_a_step_the_repeats_go_on_until_the_passes_after_it_are_enough():
    """The stopping rule judges the steady passes: a step does not end the repeats early (five
    passes across a step are never "stable"), nor keep them going once the level after it is known."""
    from types import SimpleNamespace

    from runner.measure import Measurement, _stop

    m = SimpleNamespace(repeats=10, min_repeats=3, stdrel=0.01)
    far = time.perf_counter() + 60

    def stops(rates: list[float], host_step_at: int = 2) -> tuple[bool, Optional[str]]:
        canary = [1e-4 if i < host_step_at else 1.6e-4 for i in range(len(rates))]
        out = Measurement(throughput=[(r, 1.0) for r in rates], host_canary_s=canary)
        return _stop(out, m, far), out.stop_reason

    assert stops([1000, 1000, 650]) == (False, None)
    # measure.min_repeats holds even where the first passes agree exactly (the step cases
    # below are decided by the step, not by it).
    assert stops([1000, 1000], host_step_at=99) == (False, None)
    assert stops([1000, 1000, 650, 650]) == (False, None)  # two passes after the step: too few
    assert stops([1000, 1000, 650, 651, 649]) == (True, "stdrel")
    assert stops([1000, 1000, 650, 651, 649], host_step_at=99) == (False, None)  # the host held: all count
    assert stops([1000, 1002, 1001]) == (True, "stdrel")  # no step: all passes, as before
    assert stops([1000, 900, 1100, 950]) == (False, None)
    # The last repeat allowed met the target: "stdrel" (it read "repeats", the cap, in review).
    m.repeats = 3
    assert stops([1000, 1030, 1010], host_step_at=99) == (True, "stdrel")
    assert stops([1000, 1200, 1100], host_step_at=99) == (True, "repeats")


def test_the_hypervisors_share_is_said_beside_a_high_cv_where_it_shows(make_cfg):
    """A steal of 0.27% read "the hypervisor took up to 0% of the busy CPU time" (walk)."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg(*QUICK))
    for stolen, said in ((0.0027, None), (0.062, "the hypervisor took up to 6% of the busy CPU time in a pass")):
        m = Measurement(throughput=[(1000, 1.0), (1300, 1.0), (800, 1.0)], host_stolen=[stolen, 0.0, 0.0])
        [warning] = [w for w in summarize_measurement(spec, m).warnings if w.startswith("throughput varied")]
        assert (said in warning) if said else "hypervisor" not in warning, warning


def test_a_job_stopped_before_its_first_pass_has_its_throughput_keys_as_null(make_cfg):
    """An interrupt during the check left `figures` without the throughput's keys (a reader's
    KeyError) where a later interrupt had them: the keys are there, null."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    f = summarize_measurement(resolve(make_cfg(*QUICK)), Measurement()).figures
    for key in ("throughput_requests_per_s", "throughput_samples_per_s", "throughput_requests_per_s_repeats",
                "throughput_cv"):
        assert key in f and f[key] is None, key
    assert "requests/s" not in render({"status": "interrupted", "figures": {**f, "measure_time_s": 1.0}})


def test_a_job_interrupted_while_building_has_its_throughput_keys_as_null(make_cfg, tmp_path, monkeypatch):
    """A Ctrl-C during the build or capture left `figures: {}` where one during the check left
    the keys, null: a reader of interrupted results got a KeyError for the one and not the other."""
    from runner import job

    def interrupted(spec, *_):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg(*QUICK), JobInfo(output_dir=tmp_path))
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert on_disk["status"] == "interrupted"
    for key in ("throughput_requests_per_s", "throughput_samples_per_s", "throughput_requests_per_s_repeats",
                "throughput_cv"):
        assert key in on_disk["figures"] and on_disk["figures"][key] is None, key


@pytest.mark.parametrize("where", ["measuring", "building"])
def test_a_second_interrupt_while_the_job_records_does_not_lose_its_result(make_cfg, tmp_path, monkeypatch, where):
    """The launcher forwards a terminal's Ctrl-C (a scheduler's SIGTERM) to its jobs half a
    second after they got their own: one landing while the result was summarized or written
    raised a second KeyboardInterrupt there, and the job's result was lost. Ignored until the
    result is written; the handlers are as they were once the job has returned."""
    import os
    import signal

    from runner import job, measure

    if where == "building":
        monkeypatch.setattr(job, "build", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    else:
        passes = []

        def pass_then_ctrl_c(*args, **kwargs):
            if passes:
                raise KeyboardInterrupt
            passes.append(1)
            return real(*args, **kwargs)

        real = measure.schedule.throughput_pass
        monkeypatch.setattr(measure.schedule, "throughput_pass", pass_then_ctrl_c)
    write = job.write_own_result

    def interrupted_again(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the forwarded Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # a handler would run here
        return write(*args, **kwargs)

    monkeypatch.setattr(job, "write_own_result", interrupted_again)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg(*QUICK), JobInfo(output_dir=tmp_path))
    assert json.loads((tmp_path / RESULT_FILE).read_text())["status"] == "interrupted"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_interrupt_after_the_measurement_keeps_its_figures(make_cfg, tmp_path, monkeypatch):
    """A SIGTERM while the profile ran (after the timed passes) recorded "no throughput repeat",
    its finished repeats lost; one while the job released its memory, after an ok measurement,
    escaped with no result written at all."""
    import os
    import signal

    from runner import job

    def interrupted(*args, **kwargs):
        raise job.Terminated

    monkeypatch.setattr(job, "profile_schedule", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(make_cfg(*QUICK, "model.batch=2", "profile=true"), JobInfo(output_dir=tmp_path / "profile"))
    result = json.loads((tmp_path / "profile" / RESULT_FILE).read_text())
    kept = len(result["figures"]["throughput_requests_per_s_repeats"])
    assert result["status"] == "interrupted" and kept >= 1 and result["figures"]["throughput_requests_per_s"] > 0
    assert result["reason"] == f"interrupted (SIGTERM) before the job finished; the figures hold the {kept} " \
                               "throughput repeat(s) that finished"

    release = job._release_memory

    def interrupted_while_releasing(device):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # a handler would run here
        release(device)

    monkeypatch.setattr(job, "_release_memory", interrupted_while_releasing)
    result = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path / "release"))
    assert result["status"] == "ok"
    assert json.loads((tmp_path / "release" / RESULT_FILE).read_text())["status"] == "ok"


def test_measure_called_alone_leaves_the_interrupt_handlers_as_they_were(make_cfg, monkeypatch):
    """measure() ignores further interrupts once one came (its caller records what finished);
    called alone (a benchmark, a test), it left SIGINT and SIGTERM ignored for the process."""
    import signal

    from runner import measure as measure_module

    spec = resolve(make_cfg(*QUICK, "model.batch=2", "check=false"))
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    monkeypatch.setattr(measure_module.schedule, "throughput_pass",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    out = measure_module.measure(spec, workload, lanes)
    assert out.interrupted is not None
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_commit_the_caller_names_wins_over_a_copied_git_folder(monkeypatch):
    """A tree shipped to a GPU host carried the .git of an older commit, which the record then
    named (dirty) although the caller had set RUNNER_GIT_COMMIT."""
    from runner import environment

    monkeypatch.delenv("RUNNER_GIT_COMMIT", raising=False)
    monkeypatch.delenv("RUNNER_GIT_DIRTY", raising=False)
    here = environment.git_state()  # this checkout (CI clones it) or an unversioned copy
    monkeypatch.setenv("RUNNER_GIT_COMMIT", "abc123")
    monkeypatch.setenv("RUNNER_GIT_DIRTY", "false")
    said = environment.git_state()
    assert {k: said[k] for k in ("commit", "dirty", "source")} == {"commit": "abc123", "dirty": False, "source": "environment"}
    # Where a checkout is found too, its commit is kept beside: a stale export shows as such.
    assert said.get("checkout_commit") == here["commit"]


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_timestamps_are_written_per_request_and_say_which_clock(make_cfg, tmp_path, fmt):
    """timestamps=json|csv: one row per request of the latency pass, its marks in order; on the
    CPU the JSON says every mark is the host clock's (it spoke of CUDA events)."""
    import csv as csv_module

    result = run_job(make_cfg(*QUICK, "model.batch=2", f"timestamps={fmt}"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok" and result["files"]["timestamps"] == f"timestamps.{fmt}"
    assert f"files: timestamps.{fmt} (in the job's folder)" in render(result)  # the console names it (walk)
    path = tmp_path / f"timestamps.{fmt}"
    if fmt == "json":
        doc = json.loads(path.read_text())
        assert "CUDA" not in doc["clocks"] and doc["clocks"].startswith("all from the host clock")
        columns, rows = doc["columns"], doc["rows"]
    else:
        with path.open() as f:
            table = list(csv_module.reader(f))
        columns, rows = table[0], [[float(v) for v in r] for r in table[1:]]
    assert len(rows) >= 2 and columns[:2] == ["request", "lane"]
    for row in rows:
        marks = dict(zip(columns, row, strict=True))
        # On the CPU the columns name the host copies, as the latency figures do (not h2d, d2h).
        assert marks["enqueue_start_us"] <= marks["copy_in_start_us"] <= marks["copy_in_end_us"] \
            <= marks["compute_end_us"] <= marks["copy_out_end_us"], marks


def test_timestamps_of_a_bucketed_job_name_each_requests_bucket(make_cfg, tmp_path):
    """The figures had latency per bucket; the timestamps' rows could not be grouped so."""
    import csv as csv_module

    result = run_job(make_cfg(*QUICK, "model.batch=[2,4]", "model.sizes.batch.values=[1,4]", "timestamps=csv"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    with (tmp_path / "timestamps.csv").open() as f:
        rows = list(csv_module.DictReader(f))
    assert list(rows[0])[-1] == "bucket"
    counted = {b: sum(r["bucket"] == b for r in rows) for b in {r["bucket"] for r in rows}}
    assert counted == {b: v["requests"] for b, v in result["figures"]["buckets"].items()} and len(counted) == 2


def test_a_failure_says_what_and_where_and_fits_its_advice_to_the_phase():
    """The phase a failure happened in is part of its reason; out of memory in the eager
    baseline (one request at a time, one stream) is not told to use fewer streams."""
    from runner.job import _failure_reason

    def raised(exc, phase=None):
        if phase:
            exc.runner_phase = phase
        return _failure_reason(exc)

    oom = "CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has 1.00 GiB free. Of the allocated memory 3 GiB"
    assert raised(torch.cuda.OutOfMemoryError(oom), "baseline") == (
        "out of memory (in the baseline passes): CUDA out of memory. Tried to allocate 4.00 GiB. GPU 0 has 1.00 GiB "
        "free; use a smaller model.batch")
    runner_side = raised(torch.cuda.OutOfMemoryError(oom), "throughput")
    assert runner_side.startswith("out of memory (in the throughput passes): ")
    assert runner_side.endswith("; use fewer streams or a smaller model.batch")
    assert raised(RuntimeError("boom\nmore"), "warmup") == "RuntimeError: boom (in the warm-up)"
    assert raised(ValueError("bad")) == "ValueError: bad"  # raised outside any phase: no place named


def test_phases_that_run_in_turn_share_the_time_left_once():
    """Interleaved, throughput, ceiling and baseline took their shares one after another from
    the same time left: 1.22 times the time left in all (1.98 without check and latency), and a
    job ran 7.9 s on a 4 s budget. Taken in one call, the shares add up to the time left."""
    from runner.measure import Budget

    budget = Budget(10.0, ["throughput", "ceiling", "baseline", "latency"])
    window = budget.allowance("throughput", "ceiling", "baseline")
    assert window == pytest.approx(10.0 * 0.60 / 0.75, rel=1e-3)
    assert budget.pending == {"latency": 0.15}  # the last phase gets what is left then
    alone = Budget(4.0, ["throughput", "ceiling", "baseline"])
    assert alone.allowance("throughput", "ceiling", "baseline") <= 4.0


def test_a_phase_dropped_after_the_budget_is_split_hands_its_share_on():
    """The ceiling dropped after the check (its compute graph differed from eager) kept its 0.10:
    the baseline's block got 3.75 s of 10 s left where it should get 5 (review)."""
    from runner.measure import Budget

    budget = Budget(10.0, ["ceiling", "baseline", "latency"])
    budget.drop("ceiling")
    assert budget.nominal("baseline") == pytest.approx(5.0)  # its nominal share too: half, not 0.15 / 0.40
    assert budget.allowance("baseline") == pytest.approx(10.0 * 0.15 / 0.30, rel=1e-3)
    assert budget.allowance("ceiling") == 0.0  # not a phase any more
    assert budget.allowance("latency") == pytest.approx(budget.end - time.perf_counter(), abs=0.01)


def test_an_interleaved_repeat_starts_only_when_its_passes_fit():
    """An interleaved repeat is three passes: one started with half a pass of time left ran
    truncated passes (8 requests in 12 ms against 96 in 0.1 s), which still counted."""
    from types import SimpleNamespace

    from runner.measure import Measurement, _stop

    m = SimpleNamespace(repeats=10, min_repeats=3, stdrel=0.0)

    def stops(left_s: float, passes_per_repeat: int) -> bool:
        out = Measurement(throughput=[(100, 1.0), (200, 1.0)])
        return _stop(out, m, time.perf_counter() + left_s, passes_per_repeat)

    assert not stops(1.0, 1) and stops(1.0, 3)  # one pass fits in 1 s, three do not
    assert not stops(2.7, 3)


def test_the_ceiling_keeps_its_stride_over_a_plan_of_many_shapes():
    """With 256 planned sizes a stride was a whole (lane, shape) cycle, at least 256 replays
    whatever the stride asked (a slow model's 0.1 s pass ran 1.3 s). A stride is now a piece of
    the cycle, and the next stride goes on where it ended."""
    from types import SimpleNamespace

    from runner.schedule import ceiling_pass

    served: list = []

    def lane(i: int) -> SimpleNamespace:
        return SimpleNamespace(slots=[SimpleNamespace(select=lambda: None)],
                               compute=lambda key, i=i: (lambda: served.append((i, key))))

    parts = SimpleNamespace(lanes=[lane(0), lane(1)], is_cuda=False, synchronize=lambda: None,
                            restore_default_stream=lambda: None)
    fake = type("Lanes", (), {"__len__": lambda self: 2, "__getattr__": lambda self, name: getattr(parts, name)})()
    keys = list(range(256))
    assert ceiling_pass(fake, keys, 1, 0.0, 0.0, stride=8) == (8, pytest.approx(0.0, abs=1.0))
    assert served == [(j % 2, j) for j in range(8)]
    served.clear()
    requests, _ = ceiling_pass(fake, keys, 24, 0.0, math.inf, stride=8)
    assert requests == 24 and served == [(j % 2, j) for j in range(24)]  # three strides, in the plan's order


def test_each_pass_goes_on_in_the_plan_where_the_one_before_ended(make_cfg, monkeypatch):
    """Every bucketed pass started at the plan's first request: short passes served only its
    first sizes (mean batch 10.3 in 20 requests, against the plan's 7.6), while samples/s was
    counted with the plan's mean. Passes now go on round the plan, and the samples are the
    ones served."""
    from runner import schedule
    from runner.measure import _served

    assert _served([1, 2, 3, 4], 3, 6) == 10 + 4 + 1
    spec = resolve(make_cfg(*QUICK, "experiment=buckets", "measure.min_requests=5", "measure.min_duration_ms=0",
                            "check=false", "measure.latency_requests=0", "measure.stdrel=0", "measure.repeats=3",
                            "measure.min_repeats=3"))
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    starts, real = [], schedule.throughput_pass

    def recording(lanes_, sources, keys, *args):
        starts.append(sources[0].data_ptr())
        return real(lanes_, sources, keys, *args)

    monkeypatch.setattr(schedule, "throughput_pass", recording)
    from runner.measure import measure
    from runner.summary import summarize_measurement

    out = measure(spec, workload, lanes)
    plan = [r.flat.data_ptr() for r in workload.plan]
    done = [n for n, _ in out.throughput]
    assert len(done) == 3  # (the first call is the warm-up's)
    assert starts[-3:] == [plan[0], plan[done[0] % len(plan)], plan[(done[0] + done[1]) % len(plan)]]
    batches = [r.size.batch for r in workload.plan]
    assert out.throughput_samples[1] == sum(batches[(done[0] + i) % len(plan)] for i in range(done[1]))
    f = summarize_measurement(spec, out).figures
    assert f["throughput_samples_per_request"] == pytest.approx(sum(out.throughput_samples) / sum(done))
    # samples/s: the median of the passes' own (each served its own part of the plan).
    own = [k / sec for (_, sec), k in zip(out.throughput, out.throughput_samples, strict=True)]
    assert f["throughput_samples_per_s"] == pytest.approx(statistics.median(own))
    assert f["throughput_samples_cv"] == pytest.approx(statistics.stdev(own) / statistics.fmean(own))  # its own cv
    assert f["samples_per_request"] == pytest.approx(sum(batches) / len(batches))  # the plan's: alike across jobs
    assert "check_requests" in f and f["check_requests"] is None  # check=false: null, never missing


def test_a_bucketed_plan_spreads_its_sizes_so_every_stretch_holds_its_mix(make_cfg):
    """Each pass serves its own stretch of the plan: drawn in order, 20 requests in a row had
    a mean batch up to 30% off the plan's, and a slow model's passes (5-40 requests) read 22%
    apart for their mix alone. Spread, any stretch holds about the plan's mix; the sizes and
    their requests (the plan's and the baseline's) move together."""
    from runner.inputs import spread_order

    order = spread_order([5, 1, 4, 1, 3])
    assert sorted(order) == list(range(5))
    ranks = sorted(range(5), key=lambda p: ((p + 1) * 0.6180339887) % 1.0)
    assert [[5, 1, 4, 1, 3][i] for i in order] == [sorted([5, 1, 4, 1, 3])[ranks.index(p)] for p in range(5)]
    # A ring of 8 slots: every turn holds one request of each eighth of the costs, and each
    # slot's requests go round the eighths (a golden step alone had given slot 0 costs 20, 18,
    # 16, ... in a row).
    costs = list(range(64))
    ring = [costs[i] for i in spread_order(costs, 8)]
    assert all(sorted(c // 8 for c in ring[t:t + 8]) == list(range(8)) for t in range(0, 64, 8))
    assert all(len({ring[s + 8 * t] // 8 for t in range(8)}) == 8 for s in range(8))

    spec = resolve(make_cfg(*QUICK, "experiment=buckets"))
    workload = build(spec)
    batches = [r.size.batch for r in workload.plan]
    mean, n = statistics.fmean(batches), 20
    stretches = [statistics.fmean(batches[(s + i) % len(batches)] for i in range(n)) / mean for s in range(len(batches))]
    # In drawn order their spread was 0.20 (a pass of 20 requests read the mix of its stretch); spread, 0.075.
    assert len(batches) >= 128 and len(set(batches)) >= 6 and statistics.pstdev(stretches) < 0.12
    assert [x["x"].shape[0] for x in workload.baseline_sources] == batches
    for r in workload.plan:  # each request's bytes are its own size's
        assert workload.layout(r.key).views(r.flat)["x"].shape[0] == r.key.batch


def test_a_cpu_trace_names_requests_without_streams(make_cfg, tmp_path):
    """The CPU's method says "no streams"; its trace labelled every request "(stream 0)"."""
    result = run_job(make_cfg(*QUICK, "model.batch=2", "profile=true"), JobInfo(output_dir=tmp_path))
    trace = json.loads((tmp_path / result["files"]["trace"]).read_text())
    names = {e["name"] for e in trace["traceEvents"] if str(e.get("name", "")).startswith("request ")}
    assert names and "request 0" in names and not any("stream" in n for n in names)


def test_review_of_the_summary_cut_passes_ceiling_and_intervals_say_what_the_data_holds(make_cfg):
    """From a review of the summary: (1) passes cut by measure.max_pass_ms were blamed on the
    budget; (2) an efficiency over 1.0 from one ceiling pass read "beyond noise" (its noise is
    unknown); (3) a ratio's interval from two passes went below 0 (-3.45-6.04)."""
    from runner.measure import Measurement
    from runner.summary import ratio_figures, summarize_measurement

    spec = resolve(make_cfg("measure=quick"), cuda_count=lambda: 1)  # a GPU job's spec: ceiling and baseline
    passes = [(15, 0.3), (16, 0.3), (15, 0.3)]
    capped = summarize_measurement(spec, Measurement(throughput=passes, pass_cap_s=0.3)).warnings
    [cut] = [w for w in capped if " passes were cut to " in w]
    assert cut.endswith("to fit in measure.max_pass_ms=300, the longest a pass may run"), cut
    # One request longer than the cap (a GPT-2 on a CPU): not cut "to fit" in it.
    overran = summarize_measurement(spec, Measurement(throughput=[(1, 4.4)] * 3, pass_cap_s=0.3)).warnings
    [cut] = [w for w in overran if " passes were cut to " in w]
    assert cut.endswith("at most 4,400 ms each (asked: measure.min_requests=20) under "
                        "measure.max_pass_ms=300, the longest a pass may run: the least a pass runs (a turn of the "
                        "ring, each slot once) took longer than that"), cut
    # Passes of more than a turn (8 requests here) that overshot the cap by their last request
    # (the default CPU job's 4 requests of 333 ms had read as one turn outrunning it; then as
    # "at most 333 ms each ... to fit in measure.max_pass_ms=300").
    overshot = summarize_measurement(spec, Measurement(throughput=[(12, 0.333)] * 3, pass_cap_s=0.3)).warnings
    [cut] = [w for w in overshot if " passes were cut to " in w]
    assert cut.endswith("at most 333 ms each (asked: measure.min_requests=20) under measure.max_pass_ms=300, the "
                        "longest a pass may run: a pass ends with the request that crosses it"), cut
    squeezed = summarize_measurement(spec, Measurement(throughput=[(15, 0.1)] * 3, pass_cap_s=0.1)).warnings
    [cut] = [w for w in squeezed if " passes were cut to " in w]
    assert cut.endswith("to fit in the budget (measure.budget_s=2)"), cut
    # A last pass started with less than a pass of time left: the budget's end cut it, not the
    # cap (it had read "to fit in measure.max_pass_ms=300", a 120 ms pass under a 300 ms cap).
    ended = Measurement(throughput=[(60, 0.3), (61, 0.3), (15, 0.12)], pass_cap_s=0.3, throughput_caps_s=[0.3, 0.3, 0.12])
    [cut] = [w for w in summarize_measurement(spec, ended).warnings if " passes were cut to " in w]
    assert cut == ("1 of 3 passes were cut to 15 requests and at most 120 ms each (asked: measure.min_requests=20) at "
                   "the budget's end (measure.budget_s=2): it started with less than a pass of time left"), cut
    both = Measurement(throughput=[(15, 0.3), (16, 0.3), (10, 0.2)], pass_cap_s=0.3, throughput_caps_s=[0.3, 0.3, 0.2])
    [cut] = [w for w in summarize_measurement(spec, both).warnings if " passes were cut to " in w]
    assert cut.endswith("to fit in measure.max_pass_ms=300, the longest a pass may run; 1 of them at the budget's end "
                        "(measure.budget_s=2): it started with less than a pass of time left"), cut

    # The baseline's block ran while the host ran Python 1.8x slower: the speedup's interval sees
    # each block's spread, not that (an mlp's eager read 8k or 4.7k requests/s by the host's state).
    def blocks(baseline_canary_s: float, interleave: bool = False) -> list[str]:
        timed = dataclasses.replace(spec, measure=dataclasses.replace(spec.measure, interleave=interleave))
        return summarize_measurement(timed, Measurement(
            throughput=passes, baseline=[(20, 0.2)] * 3, host_canary_s=[1e-4] * 3,
            side_canary_s={"baseline": [baseline_canary_s] * 3})).warnings
    assert ("the host ran Python 1.80x slower during the baseline's passes than during the throughput's (host canary "
            "180 us against 100 us): the speedup compares two host states, whatever its interval; "
            "measure.interleave=true runs the passes in turn") in blocks(1.8e-4)
    assert not any("host states" in w for w in blocks(1.1e-4) + blocks(1.8e-4, interleave=True))

    # Interleaved, a baseline pass started near the window's end is cut by it, not by the cap.
    late = Measurement(throughput=[(60, 0.3)] * 3, pass_cap_s=0.3, baseline=[(60, 0.3), (61, 0.3), (5, 0.1)],
                       side_cap_s={"baseline": 0.3}, side_caps_s={"baseline": [0.3, 0.3, 0.1]})
    [cut] = [w for w in summarize_measurement(spec, late).warnings if " baseline passes were cut to " in w]
    assert cut == ("1 of 3 baseline passes were cut to 5 requests and at most 100 ms each (asked: "
                   "measure.min_requests=20) at the budget's end (measure.budget_s=2): it started with less than a "
                   "pass of time left"), cut

    # Device allocations in the timed passes are a graph job's fault, not an eager fallback's.
    replayed = Measurement(throughput=passes, steady_state_allocations=5, graphs_ran=True)
    assert "5 device allocations during the timed graph passes" in summarize_measurement(spec, replayed).warnings
    fell_back = Measurement(throughput=passes, steady_state_allocations=5, graphs_ran=False)
    assert not any("allocations" in w for w in summarize_measurement(spec, fell_back).warnings)

    # A slow baseline's passes cut to a few requests: the speedup rests on them, and nothing said so.
    slow_base = Measurement(throughput=[(200, 0.2)] * 3, pass_cap_s=0.3, baseline=[(3, 0.1), (2, 0.1), (2, 0.1)],
                            side_cap_s={"baseline": 0.1})
    warnings = summarize_measurement(spec, slow_base).warnings
    assert "3 of 3 baseline passes were cut to 2-3 requests and at most 100 ms each (asked: measure.min_requests=20) " \
           "to fit in the budget (measure.budget_s=2)" in warnings
    assert not any(w.startswith("3 of 3 passes were cut") for w in warnings)  # the throughput's were whole

    one_ceiling = Measurement(throughput=[(120, 1.0), (121, 1.0), (119, 1.0)], ceiling=[(100, 1.0)])
    summary = summarize_measurement(spec, one_ceiling)
    assert summary.figures["efficiency_vs_ceiling_within_noise"] is None
    assert not any("beyond noise" in w for w in summary.warnings)
    assert any(w.startswith("the schedule measured 1.20 of its device-only ceiling, on one pass of a side: its noise "
                            "is unknown") for w in summary.warnings)
    beaten = Measurement(throughput=[(120, 1.0), (121, 1.0), (119, 1.0)], ceiling=[(100, 1.0), (101, 1.0), (99, 1.0)])
    assert "the schedule beat its device-only ceiling beyond noise: the ceiling does not bound it" in \
        summarize_measurement(spec, beaten).warnings

    wide = ratio_figures("speedup_vs_baseline", 1.3, [100.0, 160.0], [100.0, 101.0])
    low, high = wide["speedup_vs_baseline_interval"]
    assert 0 < low < 1.0 < high and wide["speedup_vs_baseline_within_noise"] is True
    assert low * high == pytest.approx(1.3 ** 2)  # symmetric on the log scale


def test_with_buckets_the_speedup_and_efficiency_compare_samples_each_kind_served(make_cfg):
    """Each kind of pass serves its own part of the plan: the schedule's passes 16 samples a
    request, the baseline's 8 (a slow baseline's short passes), and the speedup had divided
    requests/s of the two mixes: 2x, where the work done per second was 4x."""
    from runner.measure import Measurement
    from runner.summary import summarize_measurement

    spec = resolve(make_cfg("experiment=buckets", "measure=quick"), cuda_count=lambda: 1)
    assert spec.model.bucketed
    m = Measurement(throughput=[(100, 1.0), (102, 1.0), (98, 1.0)], throughput_samples=[1600, 1632, 1568],
                    baseline=[(50, 1.0), (51, 1.0), (49, 1.0)], baseline_samples=[400, 408, 392],
                    ceiling=[(200, 1.0), (204, 1.0), (196, 1.0)], ceiling_samples=[3200, 3264, 3136],
                    samples_per_request=7.5)
    f = summarize_measurement(spec, m).figures
    assert f["baseline_samples_per_s"] == pytest.approx(400) and f["ceiling_samples_per_s"] == pytest.approx(3200)
    assert f["speedup_vs_baseline"] == pytest.approx(4.0) and f["efficiency_vs_ceiling"] == pytest.approx(0.5)
    low, high = f["speedup_vs_baseline_interval"]
    assert low < 4.0 < high and not f["speedup_vs_baseline_within_noise"]
    # Passes of different mixes at one speed in samples (800/s, 400/s): the ratio is the one its
    # interval is drawn from. The median of requests/s times the pooled mean batch had read 600
    # samples/s and a speedup of 1.5, "beyond noise", outside its own interval.
    mixes = Measurement(throughput=[(100, 1.0), (200, 1.0), (100, 1.0)], throughput_samples=[800] * 3,
                        baseline=[(50, 1.0)] * 3, baseline_samples=[400] * 3, samples_per_request=7.5)
    f = summarize_measurement(spec, mixes).figures
    assert f["throughput_samples_per_s"] == pytest.approx(800) and f["speedup_vs_baseline"] == pytest.approx(2.0)
    low, high = f["speedup_vs_baseline_interval"]
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    # Passes that did not record what they served: requests/s, as before.
    m.baseline_samples = []
    f = summarize_measurement(spec, m).figures
    assert f["speedup_vs_baseline"] == pytest.approx(2.0) and f["baseline_samples_per_s"] == pytest.approx(50 * 7.5)


def test_a_key_given_twice_on_the_command_line_is_said(make_cfg, tmp_path):
    """graph=true graph=false ran graph=false, and model=linear model=mlp the MLP, without a word
    (walk): Hydra takes the last one."""
    overrides = [*QUICK, "model.batch=2", "model.batch=3"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok" and result["config"]["model"]["batch"] == 3
    assert result["notices"][0] == "model.batch: given 2 times (model.batch=2, model.batch=3): the last one, model.batch=3, is used"
    from runner.spec import repeated_overrides

    assert repeated_overrides(["model=linear", "+x=1", "model=mlp", "~y", "y=2"]) == [
        "model: given 2 times (model=linear, model=mlp): the last one, model=mlp, is used"]


def test_a_folder_conflict_says_no_override_rather_than_none(make_cfg, tmp_path):
    """"(there: timestamps=csv; this job: none)" read as if this job had set timestamps=none (walk)."""
    from runner.record import other_overrides

    overrides = [*QUICK, "model.batch=2"]
    run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert other_overrides(tmp_path, list(QUICK)) == "there: model.batch=2; this job: no other override"


def test_an_untracked_file_makes_the_checkout_dirty(monkeypatch, tmp_path):
    """A job importing a model module not yet committed recorded a clean tree: untracked files
    were left out of the dirtiness. Ignored ones (outputs/) still are."""
    import subprocess

    from runner import environment

    monkeypatch.delenv("RUNNER_GIT_COMMIT", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/outputs/\n")
    subprocess.run([*git, "add", ".gitignore"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    monkeypatch.setattr(environment, "PROJECT_ROOT", tmp_path.resolve())
    assert environment.git_state()["dirty"] is False
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "result.json").write_text("{}")
    assert environment.git_state()["dirty"] is False
    (tmp_path / "my_model.py").write_text("import torch\n")
    assert environment.git_state() == {"commit": environment.git_state()["commit"], "dirty": True, "source": "git"}


@pytest.mark.parametrize("terminal", [False, True])
def test_the_result_as_json_ends_the_output_of_a_pipe_not_of_a_terminal(monkeypatch, capsys, terminal):
    """10 KB of JSON followed every job's table on a terminal; a pipe still gets it, last."""
    import sys

    from runner import job as job_module

    result = {"status": "ok", "model": "M", "mode": "eager x1", "figures": {}}
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal)
    job_module._show(result, "result: /x/result.json")
    lines = capsys.readouterr().out.splitlines()
    assert "result: /x/result.json" in lines
    if terminal:
        assert lines[-1] == "result: /x/result.json"
    else:
        assert json.loads(lines[-1]) == result
    # A sweep's job: its JSON had come in the middle of the sweep's log, whatever the output.
    job_module._show({**result, "job": {"num": 3}}, "result: /x/3/result.json")
    assert capsys.readouterr().out.splitlines()[-1] == "result: /x/3/result.json"
