"""Does device memory come back between jobs? N jobs in one process (the worst case: what the
basic launcher does), memory read after each. The runner launcher runs every job in a fresh
process, where the driver reclaims everything anyway.

    python benchmarks/memory_sweep.py --jobs 50
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from runner.job import JobInfo, run_job  # noqa: E402
from runner.schema import register  # noqa: E402

TINY = ["measure.warmup_ms=0", "measure.min_requests=50", "measure.min_duration_ms=10", "measure.repeats=1",
        "measure.latency_requests=50", "measure.check_requests=64"]
# Vary what allocates: models, stream counts, graphs on and off, copies in the graph.
CYCLE = [
    ["model=mlp", "streams=4"],
    ["model=tiny_llm", "streams=2", "dtype=bf16"],
    ["model=mlp", "streams=8", "capture.copies_in_graph=true"],
    ["model=mlp", "graph=false", "streams=2"],
    ["model=tiny_llm", "streams=4"],
]


def smi_used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10).stdout
        return int(out.split()[0])
    except Exception:
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    register()
    torch.cuda.init()
    before = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), smi_used_mib())
    print(f"before: allocated {before[0]} B, reserved {before[1]} B, nvidia-smi used {before[2]} MiB")
    samples = []
    statuses = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.jobs):
            overrides = [*TINY, *CYCLE[i % len(CYCLE)], f"seed={i}"]
            GlobalHydra.instance().clear()
            with initialize_config_module(version_base="1.3", config_module="runner.configs"):
                cfg = compose("config", overrides=overrides)
            with contextlib.redirect_stdout(io.StringIO()):
                result = run_job(cfg, JobInfo(output_dir=Path(tmp) / str(i), overrides=overrides, multirun=True, num=i))
            statuses.append(result["status"])
            samples.append((torch.cuda.memory_allocated(), torch.cuda.memory_reserved(), smi_used_mib()))
            if i < 5 or (i + 1) % 10 == 0:
                print(f"after job {i + 1:3d}: allocated {samples[-1][0]} B, reserved {samples[-1][1]} B, "
                      f"nvidia-smi used {samples[-1][2]} MiB  [{result['status']}]")
    first, last = samples[len(CYCLE) - 1], samples[-1]
    print(f"statuses: {statuses.count('ok')} ok of {len(statuses)}")
    print(f"after the first cycle of {len(CYCLE)} jobs: reserved {first[1]} B, nvidia-smi {first[2]} MiB")
    print(f"after all {args.jobs} jobs:  reserved {last[1]} B, nvidia-smi {last[2]} MiB")
    growth = None if last[2] is None or first[2] is None else last[2] - first[2]
    print(f"growth from job {len(CYCLE)} to job {args.jobs}: allocated {last[0] - first[0]} B, "
          f"reserved {last[1] - first[1]} B, nvidia-smi {growth} MiB")
    return 0 if last[0] == before[0] and statuses.count("ok") == len(statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
