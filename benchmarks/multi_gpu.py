"""One sweep on one GPU against the same sweep spread over every GPU of the host
(`hydra/launcher=gpus`): wall time, device use, and per-config throughput. Prints figures;
asserts nothing (the machines are noisy).

    python benchmarks/multi_gpu.py [--out DIR] [--order one,all,all,one] [--] [sweep overrides...]

Default sweep (16 jobs): `model=mlp,tiny_llm streams=1,2,4,8 graph=false,true measure=short`.
The runs alternate (one GPU, all GPUs, all GPUs, one GPU by default) so that a drift of the
host over the call weighs on both sides alike. The one-GPU runs use the default launcher, as a
user would; the two one-GPU runs give the run-to-run noise that the parallel runs are judged
against. Target (issue 5): the parallel sweep takes about 1/k of the one-GPU wall time, and its
per-config throughput stays within that noise.

Read from the jobs' own records, not from the launcher: which GPU (UUID) ran each job, and the
job's start and end, so that "no GPU ever held two jobs at once" is checked on what happened.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["model=mlp,tiny_llm", "streams=1,2,4,8", "graph=false,true", "measure=short"]
LAUNCHERS = {"one": [], "all": ["hydra/launcher=gpus"]}
# The subprocesses import the runner of this checkout.
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def run_sweep(overrides: list[str], launcher: list[str], sweep_dir: Path) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", "-m", *launcher, *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    sweep_dir.mkdir(parents=True, exist_ok=True)  # a sweep refused before its first job has none
    (sweep_dir / "launcher_console.log").write_text(done.stdout + "\n--- stderr\n" + done.stderr)
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    return wall, done.returncode


def read_jobs(sweep_dir: Path) -> list[dict]:
    jobs = []
    for folder in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        if not (folder / "result.json").exists():
            continue  # a job that left no result: the sweep's table lists it as missing
        result = json.loads((folder / "result.json").read_text())
        job, fig = result.get("job") or {}, result.get("figures") or {}
        gpu = (result.get("env") or {}).get("gpu") or {}
        jobs.append({
            "config": " ".join(sorted(result.get("overrides") or [])),
            "status": result.get("status"), "rps": fig.get("throughput_requests_per_s"),
            "cv": fig.get("throughput_cv"),
            # The host canary's median (us, a fixed piece of Python timed beside each pass): the
            # host's own speed while the job ran.
            "canary_us": statistics.median(fig["host_canary_us_repeats"]) if fig.get("host_canary_us_repeats") else None,
            "device": job.get("launcher_device"),
            # The GPU by its UUID; without one (CPU, fake device ids) the launcher's device id.
            "uuid": gpu.get("uuid") or job.get("launcher_device"), "gpu": bool(gpu.get("uuid")),
            "cpus": job.get("launcher_cpus"), "start": job.get("started_unix"), "end": job.get("finished_unix"),
        })
    # A job that died before it read its GPU: the GPU its device id names in the other jobs.
    uuid_of = {j["device"]: j["uuid"] for j in jobs if j["gpu"]}
    for j in jobs:
        if not j["gpu"] and j["device"] in uuid_of:
            j["uuid"] = uuid_of[j["device"]]
    return jobs


def overlaps(jobs: list[dict]) -> int:
    """Pairs of jobs that ran on one GPU (by UUID) at overlapping times: must be 0."""
    bad = 0
    by_gpu: dict[str, list[tuple[float, float]]] = {}
    for j in jobs:
        if j["uuid"] and j["start"] and j["end"]:
            by_gpu.setdefault(j["uuid"], []).append((j["start"], j["end"]))
    for spans in by_gpu.values():
        spans.sort()
        bad += sum(later[0] < earlier[1] for i, earlier in enumerate(spans) for later in spans[i + 1:])
    return bad


def most_at_once(jobs: list[dict]) -> int:
    """The largest number of jobs that were running at the same moment."""
    events = sorted([(j["start"], 1) for j in jobs if j["start"] and j["end"]]
                    + [(j["end"], -1) for j in jobs if j["start"] and j["end"]], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def jobs_span_s(jobs: list[dict]) -> float:
    """From the first job's start to the last one's end: the sweep without the launcher's own
    fixed costs (imports, composing the jobs, the table and plots at the end)."""
    spans = [(j["start"], j["end"]) for j in jobs if j["start"] and j["end"]]
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else float("nan")


def geo_mean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for the sweeps (default: a temporary one)")
    parser.add_argument("--order", default="one,all,all,one", help="runs in order: 'one' (one GPU) or 'all'")
    parser.add_argument("--devices", default="all",
                        help="the parallel runs' hydra.launcher.devices (a list such as [0,1]; default all)")
    parser.add_argument("--read", type=Path, help="only read the runs an earlier call left in this folder")
    parser.add_argument("overrides", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    if args.devices != "all":
        LAUNCHERS["all"] = [*LAUNCHERS["all"], f"hydra.launcher.devices={args.devices}"]
    order = args.order.split(",")
    if not set(order) <= set(LAUNCHERS) or order.count("one") < 1 or order.count("all") < 1:
        parser.error("--order: a comma list of 'one' and 'all', each at least once")
    base = args.read or args.out or Path(tempfile.mkdtemp(prefix="multi_gpu_"))
    print(f"sweeps in {base}", flush=True)
    runs: list[tuple[str, float, int, list[dict]]] = []
    if args.read:  # the folders of an earlier call, in their order; walls where it saved them
        saved = json.loads((base / "runs.json").read_text()) if (base / "runs.json").exists() else {}
        order = [p.name.split("_", 1)[1] for p in sorted(base.glob("[0-9]*_*"), key=lambda p: int(p.name.split("_")[0]))]
    for i, kind in enumerate(order):
        sweep_dir = base / f"{i}_{kind}"
        if args.read:
            wall, code = saved.get(sweep_dir.name, (float("nan"), 0))
        else:
            wall, code = run_sweep(args.overrides, LAUNCHERS[kind], sweep_dir)
            walls_so_far = {f"{j}_{k}": (w, c) for j, (k, w, c, _) in enumerate(runs)}
            (base / "runs.json").write_text(json.dumps({**walls_so_far, sweep_dir.name: (wall, code)}))
        jobs = read_jobs(sweep_dir)
        if not jobs:
            print(f"run {i} ({kind}): exit {code}, no job ran; see {sweep_dir / 'launcher_console.log'}")
            return code or 1
        runs.append((kind, wall, code, jobs))
        gpus = sorted({j["uuid"] for j in jobs if j["uuid"]})
        ok = sum(j["status"] == "ok" for j in jobs)
        print(f"run {i} ({kind}): exit {code}, {ok}/{len(jobs)} ok, wall {wall:.1f} s (jobs {jobs_span_s(jobs):.1f} s), "
              f"GPUs used {len(gpus)}, "
              f"at most {most_at_once(jobs)} jobs at once, same-GPU overlaps {overlaps(jobs)}", flush=True)
        for uuid in gpus:
            mine = [j for j in jobs if j["uuid"] == uuid]
            print(f"    {uuid}: {len(mine)} jobs, launcher device {sorted({str(j['device']) for j in mine})}, "
                  f"cores {sorted({str(j['cpus']) for j in mine})}")

    walls = {k: [w for kind, w, _, _ in runs if kind == k] for k in LAUNCHERS}
    spans = {k: [jobs_span_s(jobs) for kind, _, _, jobs in runs if kind == k] for k in LAUNCHERS}
    k_gpus = max(len({j["uuid"] for j in jobs if j["uuid"]}) for kind, _, _, jobs in runs if kind == "all")
    one_s, all_s = statistics.fmean(walls["one"]), statistics.fmean(walls["all"])
    print(f"\nwall: one GPU {' '.join(f'{w:.1f}' for w in walls['one'])} s; {k_gpus} GPUs "
          f"{' '.join(f'{w:.1f}' for w in walls['all'])} s; ratio {all_s / one_s:.3f} (ideal {1 / k_gpus:.3f}), "
          f"speedup {one_s / all_s:.2f}x")
    one_j, all_j = statistics.fmean(spans["one"]), statistics.fmean(spans["all"])
    print(f"jobs alone (first start to last end): one GPU {' '.join(f'{w:.1f}' for w in spans['one'])} s; "
          f"{k_gpus} GPUs {' '.join(f'{w:.1f}' for w in spans['all'])} s; ratio {all_j / one_j:.3f}; "
          f"the launcher's fixed cost (wall - jobs) {one_s - one_j:.1f} s and {all_s - all_j:.1f} s")

    # Per config: the rate in each run, in order.
    configs = sorted({j["config"] for _, _, _, jobs in runs for j in jobs})
    rate = {(i, j["config"]): j["rps"] for i, (_, _, _, jobs) in enumerate(runs) for j in jobs if j["rps"]}
    # Requests per unit of host speed: the rate times the canary's time. For a host-bound job
    # (eager) this takes out a change of the host's own speed between runs, which on a VM can
    # be 2x; for a device-bound job it adds the canary's noise.
    work = {(i, j["config"]): j["rps"] * j["canary_us"] for i, (_, _, _, jobs) in enumerate(runs) for j in jobs
            if j["rps"] and j["canary_us"]}
    ones = [i for i, (kind, *_rest) in enumerate(runs) if kind == "one"]
    alls = [i for i, (kind, *_rest) in enumerate(runs) if kind == "all"]
    print(f"\n{'config':60} " + " ".join(f"{f'{i}:{runs[i][0]}':>9}" for i in range(len(runs)))
          + f" {'all/one':>8} {'one/one':>8} {'per host':>8}")
    pairs, ratios, normalized = [], [], []  # per config: (|log all/one|, log max/min of the one-GPU runs)
    for c in configs:
        row = [rate.get((i, c)) for i in range(len(runs))]
        one_rates = [rate[(i, c)] for i in ones if (i, c) in rate]
        all_rates = [rate[(i, c)] for i in alls if (i, c) in rate]
        all_one = geo_mean(all_rates) / geo_mean(one_rates) if one_rates and all_rates else None
        one_one = max(one_rates) / min(one_rates) if len(one_rates) > 1 else None
        if all_one is not None:
            ratios.append(all_one)
            if one_one is not None:
                pairs.append((abs(math.log(all_one)), math.log(one_one)))
        one_work = [work[(i, c)] for i in ones if (i, c) in work]
        all_work = [work[(i, c)] for i in alls if (i, c) in work]
        per_host = geo_mean(all_work) / geo_mean(one_work) if one_work and all_work else None
        if per_host is not None:
            normalized.append((c, per_host))
        print(f"{c[:60]:60} " + " ".join(f"{v:9,.0f}" if v else f"{'-':>9}" for v in row)
              + "".join(f" {v:8.3f}" if v else f" {'-':>8}" for v in (all_one, one_one, per_host)))
    if ratios:
        print(f"\nthroughput, all GPUs / one GPU: geometric mean {geo_mean(ratios):.3f}, "
              f"range {min(ratios):.3f}-{max(ratios):.3f}")
    if normalized:
        # Only where the host bounds the rate: eager jobs (graph jobs would get the canary's noise).
        some = [r for c, r in normalized if "graph=False" in c.split()]
        if some:
            print(f"eager jobs, all / one per unit of host speed (rate x canary time): geometric mean "
                  f"{geo_mean(some):.3f}, range {min(some):.3f}-{max(some):.3f}")
    canaries = [statistics.median([j["canary_us"] for j in jobs if j["canary_us"]] or [float("nan")])
                for _, _, _, jobs in runs]
    print("host canary, median over each run's jobs (us, lower is a faster host): "
          + ", ".join(f"run {i} {v:.0f}" for i, v in enumerate(canaries)))
    if pairs:
        # The spread between the one-GPU runs of a config against the change between the means
        # of the parallel runs and of the one-GPU runs (as factors, 1.000 = no change).
        moved_all, moved_one = [a for a, _ in pairs], [o for _, o in pairs]
        print(f"one GPU run-to-run (max/min): median {math.exp(statistics.median(moved_one)):.3f}, "
              f"largest {math.exp(max(moved_one)):.3f}")
        print(f"all vs one (|change| as a factor): median {math.exp(statistics.median(moved_all)):.3f}, "
              f"largest {math.exp(max(moved_all)):.3f}")
        within = sum(a <= o for a, o in pairs)
        print(f"configs whose all-vs-one change is within their one-GPU run-to-run spread: {within} of {len(pairs)}")
    # The project's own verdict, noise-aware: the two one-GPU runs, then one GPU against all.
    for old, new in ((ones[0], ones[-1]), (ones[0], alls[0])):
        if old == new:
            continue
        done = subprocess.run([sys.executable, "-m", "runner.compare", str(base / f"{old}_{runs[old][0]}"),
                               str(base / f"{new}_{runs[new][0]}")], cwd=ROOT, env=ENV, capture_output=True, text=True)
        print(f"\nrunner.compare run {old} ({runs[old][0]}) -> run {new} ({runs[new][0]}): exit {done.returncode}")
        print("\n".join(done.stdout.strip().splitlines()[-4:]))
    return max(code for _, _, code, _ in runs)


if __name__ == "__main__":
    sys.exit(main())
