"""Wall time and repeatability of a whole sweep, and where each job's time went. Prints a table
and the issue's targets; asserts nothing (the machines are noisy).

    python benchmarks/sweep_time.py [--out DIR] [--] [sweep overrides...]

Default sweep: `streams=1,2,4,8 graph=false,true measure=short` (target on the H100: all 8 jobs
in <= 60 s wall, throughput cv <= 3% on at least 6 of them). With `measure=default` instead,
the target is cv <= 2% on the graph jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.report import collect, host_notes, host_us  # noqa: E402

DEFAULT = ["streams=1,2,4,8", "graph=false,true", "measure=short"]
JOB_LINE = re.compile(r"^\[runner\] job \d+/\d+ #(\d+): \S+ in ([\d.]+)s")


def run_sweep(overrides: list[str], sweep_dir: Path) -> tuple[float, dict[int, float], int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    per_job = {int(m.group(1)): float(m.group(2)) for m in map(JOB_LINE.match, done.stdout.splitlines()) if m}
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    return wall, per_job, done.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="sweep folder (default: a temporary one)")
    parser.add_argument("--repeats", action="store_true", help="print each job's repeats, relative to its first")
    parser.add_argument("overrides", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = args.out or Path(tmp) / "sweep"
        wall, per_job, code = run_sweep(args.overrides, sweep_dir)
        rows = []
        for folder in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
            result = json.loads((folder / "result.json").read_text())
            job, fig = result["job"], result.get("figures") or {}
            phases = job.get("phases_s") or {}
            launcher_s = per_job.get(int(folder.name))
            inside = (phases.get("startup") or 0) + (job.get("wall_time_s") or 0)
            rows.append({
                "job": folder.name, "overrides": " ".join(result.get("overrides") or []),
                "status": result["status"], "launcher_s": launcher_s,
                "startup_s": phases.get("startup"), "setup_s": sum(phases.get(k) or 0 for k in ("env", "build", "capture")),
                "measure_s": phases.get("measure"), "finish_s": phases.get("finish"),
                "exit_s": None if launcher_s is None else launcher_s - inside,
                "rps": fig.get("throughput_requests_per_s"), "cv": fig.get("throughput_cv"),
                "cv_all": fig.get("throughput_cv_all_repeats", fig.get("throughput_cv")),
                "from": fig.get("throughput_steady_from_repeat") or 1,
                "repeats": len(fig.get("throughput_requests_per_s_repeats") or []),
                "stop": fig.get("repeats_stop_reason"), "graph": (result.get("effective") or {}).get("graph"),
                "each": fig.get("throughput_requests_per_s_repeats") or [],
                "warmup_ms": fig.get("warmup_time_ms"),
                "stolen": fig.get("host_stolen_max"),
                "canary_us": fig.get("host_canary_us_repeats") or [], "canary_r": fig.get("host_canary_correlation"),
                "host_us": host_us(fig),
            })
        slow_host = host_notes(collect([sweep_dir]))  # the sweep table's own rule

    def num(value: object, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    print(f"sweep: {' '.join(args.overrides)} (exit {code})")
    print(f"{'job':>3} {'overrides':34} {'status':7} {'total s':>7} {'start':>6} {'setup':>6} {'measure':>7} "
          f"{'finish':>6} {'exit':>5} {'req/s':>10} {'cv':>6} {'cv all':>6} {'reps':>4} stop")
    for r in rows:
        print(f"{r['job']:>3} {r['overrides'][:34]:34} {r['status']:7} {num(r['launcher_s'], '7.1f')} "
              f"{num(r['startup_s'], '6.2f')} {num(r['setup_s'], '6.2f')} {num(r['measure_s'], '7.2f')} "
              f"{num(r['finish_s'], '6.2f')} {num(r['exit_s'], '5.2f')} {num(r['rps'], '10,.0f')} "
              f"{num(None if r['cv'] is None else 100 * r['cv'], '5.1f')}% "
              f"{num(None if r['cv_all'] is None else 100 * r['cv_all'], '5.1f')}% {r['repeats']:>4} {r['stop']}"
              + (f", from {r['from']}" if r["from"] > 1 else ""))
        if args.repeats and r["each"]:
            first = r["each"][0]
            print(f"      repeats / first: {' '.join(f'{x / first:.3f}' for x in r['each'])}  "
                  f"stolen max {num(None if r['stolen'] is None else 100 * r['stolen'], '.0f')}%")
        if args.repeats and r["canary_us"]:
            first = r["canary_us"][0]
            print(f"      host speed / first: {' '.join(f'{first / x:.3f}' for x in r['canary_us'])}  "
                  f"r {num(r['canary_r'], '.2f')}")
    print(f"\nwall for {len(rows)} jobs: {wall:.1f} s ({wall / max(1, len(rows)):.1f} s per job)")
    # The cv of the figures (the passes after a step in speed, if any), then over every pass.
    for key, what in (("cv", "cv of the figures"), ("cv_all", "cv over all passes")):
        cvs = [r[key] for r in rows if r[key] is not None]
        graph_cvs = [r[key] for r in rows if r[key] is not None and r["graph"]]
        print(f"{what}: jobs at most 3%: {sum(c <= 0.03 for c in cvs)} of {len(rows)}; "
              f"graph jobs at most 2%: {sum(c <= 0.02 for c in graph_cvs)} of {len(graph_cvs)}; "
              f"median {100 * sorted(cvs)[len(cvs) // 2]:.1f}%" if cvs else f"{what}: none")
    # The host's state per job: a whole job in a slow state shows in its rate, not in its cv.
    timed = [r for r in rows if r["host_us"]]
    if timed:
        print("host canary per job (us): " + ", ".join(f"#{r['job']} {r['host_us']:.0f}" for r in timed))
        print("\n".join(slow_host) or "no job ran on a host clearly slower than in the sweep's fastest job")
    return code


if __name__ == "__main__":
    sys.exit(main())
