"""Wall time of real CLI runs on this machine (meant for a CPU machine without a GPU): the
default job, and `measure=quick` for every bundled model in every dtype. Prints a table; the
targets (default job <= 30 s, quick <= 10 s on a 2-core machine) are read off it, never
asserted in tests.

    python benchmarks/cpu_budget.py [--models mlp tiny_llm ...] [--dtypes fp32 bf16 fp16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))


def run(args: list[str], cwd: Path) -> tuple[float, str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "runner", *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    try:
        result = json.loads(done.stdout.strip().splitlines()[-1])
        status = result["status"]
        figures = result.get("figures") or {}
        detail = (f"{figures.get('throughput_requests_per_s') or 0:,.1f} req/s, "
                  f"{len(figures.get('throughput_requests_per_s_repeats') or [])} repeats "
                  f"({figures.get('repeats_stop_reason')}), check {figures.get('check_requests')}")
    except (IndexError, ValueError, KeyError):
        status, detail = f"exit {done.returncode}", (done.stderr.strip().splitlines() or [""])[-1][:120]
    return wall, status, detail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--no-default", action="store_true", help="skip the default job")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_default:
            rows.append(("default job", *run([], Path(tmp))))
            print(f"{rows[-1][0]:28} {rows[-1][1]:6.1f} s  {rows[-1][2]}  {rows[-1][3]}", flush=True)
        for model in args.models:
            for dtype in args.dtypes:
                rows.append((f"{model} {dtype} quick", *run([f"model={model}", f"dtype={dtype}", "measure=quick"], Path(tmp))))
                print(f"{rows[-1][0]:28} {rows[-1][1]:6.1f} s  {rows[-1][2]}  {rows[-1][3]}", flush=True)
    print(f"\n{os.cpu_count()} cores; slowest quick run {max(r[1] for r in rows if 'quick' in r[0]):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
