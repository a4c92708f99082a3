"""The engine at the limit, on a GPU: the runner against an independent loop, and efficiency.

`tax`: for each model and staging mode, in rounds whose order alternates (loop first, then
  runner first), the runner's job at its default budget (the median of its throughput
  repeats) against `benchmarks/reference.py` (an independent loop of the same schedule that
  imports nothing from the runner), with the same statistic: the median of 5 passes of at
  least 1 s. Both run in this process on the same built model. Prints runner / loop and the
  spread of each side's passes.
`streams`: jobs over stream counts (measure=short) for efficiency against the device-only
  ceiling and speedup over the eager baseline, per model and staging.

    python benchmarks/engine.py tax --models mlp_wide mlp tiny_llm --rounds 2
    python benchmarks/engine.py streams --models tiny_llm encoder mlp_wide
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from hydra import compose, initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from reference import ReferenceLoop  # noqa: E402

from runner.build import build  # noqa: E402  (building the model is all the loop takes from the runner)
from runner.job import JobInfo, run_job  # noqa: E402
from runner.schema import register  # noqa: E402
from runner.spec import resolve  # noqa: E402

MODELS = {
    # The mlp of the issue: 1024-2048-2048-2048-1024, batch 32, copies captured in the graph.
    "mlp_wide": ["model=mlp_wide", "capture.copies_in_graph=true"],
    "mlp": ["model=mlp"],
    "tiny_llm": ["model=tiny_llm"],
    "encoder": ["model=encoder"],
}
STAGING = {
    "direct": ["staging.mode=direct"],
    "copy_thread": ["staging.mode=copy", "staging.copy_thread=true"],
    "copy": ["staging.mode=copy", "staging.copy_thread=false"],
}


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        return compose("config", overrides=overrides)


def spread(values: list[float]) -> str:
    cv = statistics.stdev(values) / statistics.mean(values) if len(values) > 1 else 0.0
    return f"{min(values) / 1e3:.1f}k-{max(values) / 1e3:.1f}k (cv {cv:.1%})"


def run_runner(overrides: list[str], out_dir: Path, name: str) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):  # the job's own table and JSON line
        return run_job(compose_cfg(overrides), JobInfo(output_dir=out_dir / name, overrides=overrides))


def single_input_sources(spec, workload) -> list[torch.Tensor]:
    """The timed requests as the reference loop takes them: one tensor each, forward's one
    argument, passed positionally. They are views of the runner's own request bytes (pinned
    where those are), so both sides serve the same values."""
    names = [inp.name for inp in spec.model.inputs]
    if len(names) != 1 or spec.model.bucketed or workload.out_paths != ("output",):
        raise SystemExit(
            f"benchmarks/engine.py: the reference loop serves models of one input at one size that return "
            f"one tensor; {spec.model_name} takes {', '.join(names)} at batch {list(spec.model.batches)}"
            f"{' and seq ' + str(list(spec.model.seqs)) if spec.model.seqs else ''} and returns "
            f"{', '.join(workload.out_paths)}"
        )
    [name] = names
    return [workload.layout(key).views(flat)[name] for flat, key in zip(workload.sources, workload.keys, strict=True)]


def reference_passes(overrides: list[str], passes: int, seconds: float) -> list[float]:
    spec = resolve(compose_cfg(overrides))
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    torch.backends.cudnn.allow_tf32 = spec.tf32
    workload = build(spec)
    staging = "direct" if spec.staging == "direct" else ("copy_thread" if spec.copy_thread else "copy")
    loop = ReferenceLoop(workload.model, single_input_sources(spec, workload), spec.streams, spec.slots, staging,
                         spec.copies_in_graph)
    loop.run(200, seconds / 2)  # warm-up
    rates = [loop.run(spec.measure.min_requests, seconds) for _ in range(passes)]
    del loop, workload
    torch.cuda.synchronize()
    return rates


def tax(args, out_dir: Path) -> list[dict]:
    rows = []
    for model in args.models:
        for staging in args.staging:
            overrides = MODELS[model] + STAGING[staging] + [f"streams={args.streams}"] + args.extra
            for r in range(args.rounds):
                order = ("loop", "runner") if r % 2 == 0 else ("runner", "loop")
                row = {"model": model, "staging": staging, "round": r + 1, "overrides": overrides}
                for side in order:
                    if side == "loop":
                        row["loop_passes"] = reference_passes(overrides, args.passes, args.seconds)
                    else:
                        res = run_runner(overrides, out_dir, f"{model}_{staging}_{r}")
                        f = res["figures"]
                        row.update(
                            status=res["status"], runner_passes=f.get("throughput_requests_per_s_repeats"),
                            efficiency=f.get("efficiency_vs_ceiling"), speedup=f.get("speedup_vs_baseline"),
                            ceiling=f.get("ceiling_requests_per_s"), baseline=f.get("baseline_requests_per_s"),
                            host={k: (f.get(f"host_{k}_us") or {}).get("p50") for k in ("wait", "copy", "launch")},
                            gpu=(res["env"].get("gpu") or {}).get("name"),
                        )
                row["loop"] = statistics.median(row["loop_passes"])
                row["runner"] = statistics.median(row["runner_passes"])
                row["ratio"] = row["runner"] / row["loop"]
                rows.append(row)
                print(f"[tax] {model:9} {staging:12} round {r + 1}: loop {row['loop']:>9,.0f}  runner "
                      f"{row['runner']:>9,.0f}  runner/loop {row['ratio']:.3f}  runner {spread(row['runner_passes'])}"
                      f"  loop {spread(row['loop_passes'])}  eff {row['efficiency']:.0%}  speedup "
                      f"{row['speedup']:.1f}x  host p50 us {row['host']}", flush=True)
    print()
    print("| model | staging | round | loop r/s | runner r/s | runner / loop | runner's repeats | loop's passes | efficiency | speedup |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['model']} | {row['staging']} | {row['round']} | {row['loop']:,.0f} | {row['runner']:,.0f} | "
              f"{row['ratio']:.3f} | {spread(row['runner_passes'])} | {spread(row['loop_passes'])} | "
              f"{row['efficiency']:.0%} | {row['speedup']:.1f}x |")
    return rows


def streams(args, out_dir: Path) -> list[dict]:
    rows = []
    for model in args.models:
        for staging in args.staging:
            for n in args.stream_counts:
                overrides = MODELS[model] + STAGING[staging] + [f"streams={n}", "measure=short"] + args.extra
                res = run_runner(overrides, out_dir, f"s_{model}_{staging}_{n}")
                f = res["figures"]
                row = {"model": model, "staging": staging, "streams": n, "status": res["status"],
                       "runner": f.get("throughput_requests_per_s"), "cv": f.get("throughput_cv"),
                       "ceiling": f.get("ceiling_requests_per_s"), "efficiency": f.get("efficiency_vs_ceiling"),
                       "baseline": f.get("baseline_requests_per_s"), "speedup": f.get("speedup_vs_baseline"),
                       "wall_s": res["job"]["wall_time_s"]}
                rows.append(row)
                print(f"[streams] {model:9} {staging:12} x{n}: {row['status']} runner {row['runner']:,.0f} "
                      f"(cv {row['cv']:.1%}) ceiling {row['ceiling']:,.0f} eff {row['efficiency']:.0%} "
                      f"baseline {row['baseline']:,.0f} speedup {row['speedup']:.1f}x  {row['wall_s']:.0f}s", flush=True)
    print()
    print("| model | staging | streams | runner r/s | cv | ceiling r/s | efficiency | baseline r/s | speedup |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['staging']} | {r['streams']} | {r['runner']:,.0f} | {r['cv']:.1%} | "
              f"{r['ceiling']:,.0f} | {r['efficiency']:.0%} | {r['baseline']:,.0f} | {r['speedup']:.1f}x |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["tax", "streams"])
    parser.add_argument("--models", nargs="+", default=["mlp_wide", "mlp", "tiny_llm"], choices=list(MODELS))
    parser.add_argument("--staging", nargs="+", default=["copy_thread", "direct"], choices=list(STAGING))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4, help="tax: streams of every job")
    parser.add_argument("--stream-counts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--passes", type=int, default=5, help="tax: the loop's passes (the runner's repeats: 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="tax: seconds per loop pass")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every job")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/engine.py needs a CUDA GPU", file=sys.stderr)
        return 2
    register()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = (tax if args.part == "tax" else streams)(args, Path(tmp))
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}  {time.perf_counter() - start:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
