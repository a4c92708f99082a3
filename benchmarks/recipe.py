"""The recipe on a GPU: the runner's speedup over the eager baseline, and the runner's tax.

For each model it
  1. runs the runner's own job (the recipe: graphs, 4 streams, pinned) and reads its figures:
     requests/s, baseline requests/s, speedup (the ratio the product reports);
  2. times a minimal hand-written loop of the same schedule, written here without any runner
     code, against the runner's own throughput pass on the same model: many short passes in
     pairs, in ABBA order so that drift cancels, and reports the median of hand / runner over
     the pairs with its interquartile range (above 1.05 means the runner costs more than 5%).

Run on a GPU host from the checkout root:
    python benchmarks/recipe.py                       # mlp and tiny_llm
    python benchmarks/recipe.py --models mlp --repeats 7 --out results.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_module  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402

from runner import schedule  # noqa: E402
from runner.build import build  # noqa: E402
from runner.job import JobInfo, run_job  # noqa: E402
from runner.lanes import build_lanes  # noqa: E402
from runner.schema import register  # noqa: E402
from runner.spec import resolve  # noqa: E402

NOTE_SPEEDUP = 3.27  # the starting note's figure for the lightweight network
MAX_TAX = 1.05  # a hand-written loop may beat the runner by at most 5%


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module(version_base="1.3", config_module="configs"):
        return compose("config", overrides=overrides)


class HandLoop:
    """The recipe as one would write it by hand: nothing shared between the streams."""

    def __init__(self, model, sources, streams: int, warmup: int = 3) -> None:
        self.sources = sources
        self.lanes = []
        for _ in range(streams):
            stream = torch.cuda.Stream()
            h_in = torch.empty_like(sources[0]).pin_memory()
            d_in = sources[0].cuda()
            with torch.cuda.stream(stream):
                for _ in range(warmup):
                    model(d_in)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=torch.cuda.graph_pool_handle(), stream=stream):
                d_out = model(d_in)
            h_out = torch.empty(d_out.shape, dtype=d_out.dtype, pin_memory=True)
            self.lanes.append((stream, torch.cuda.Event(), h_in, d_in, graph, d_out, h_out))
        torch.cuda.synchronize()

    def run(self, min_requests: int, min_seconds: float) -> float:
        """requests/s with all streams in flight."""
        sources, n = self.sources, len(self.sources)
        k = r = 0
        torch.cuda.synchronize()
        start = time.perf_counter()
        while r < min_requests or time.perf_counter() - start < min_seconds:
            for stream, done, h_in, d_in, graph, d_out, h_out in self.lanes:
                done.synchronize()
                h_in.copy_(sources[k])
                torch.cuda.set_stream(stream)
                d_in.copy_(h_in, non_blocking=True)
                graph.replay()
                h_out.copy_(d_out, non_blocking=True)
                done.record()
                k = (k + 1) % n
            r += len(self.lanes)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        torch.cuda.set_stream(torch.cuda.default_stream())
        return r / elapsed


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def bench_model(model: str, repeats: int, min_seconds: float, pairs: int, pass_seconds: float, out_dir: Path) -> dict:
    overrides = [f"model={model}", "experiment=recipe", f"measure.repeats={repeats}",
                 f"measure.min_duration_ms={min_seconds * 1e3:.0f}"]
    if model != "mlp":
        overrides = [o for o in overrides if o != "experiment=recipe"] + ["streams=4", "graph=true", "pinned=true"]
    job_dir = out_dir / f"job_{model}"
    result = run_job(compose_cfg(overrides), JobInfo(output_dir=job_dir, overrides=overrides))
    f = result["figures"]

    # Tax: the runner's throughput pass against the hand loop, interleaved on one model.
    spec = resolve(compose_cfg(overrides))
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    workload = build(spec)
    with torch.no_grad():
        lanes = build_lanes(spec, workload)
        hand = HandLoop(workload.model, workload.sources, spec.streams)

        def runner_pass() -> float:
            n, s = schedule.throughput_pass(lanes, workload.sources, 200, pass_seconds)
            return n / s

        def hand_pass() -> float:
            return hand.run(200, pass_seconds)

        hand_pass(), runner_pass()  # warm-up
        hand_rps, runner_rps = [], []
        for i in range(pairs):  # ABBA: hand first in even pairs, runner first in odd ones
            if i % 2 == 0:
                hand_rps.append(hand_pass())
                runner_rps.append(runner_pass())
            else:
                runner_rps.append(runner_pass())
                hand_rps.append(hand_pass())
    ratios = [h / r for h, r in zip(hand_rps, runner_rps, strict=True)]
    q1, tax, q3 = quartiles(ratios)
    return {
        "model": model,
        "status": result["status"],
        "check_mismatches": f.get("check_mismatches"),
        "baseline_requests_per_s": f.get("baseline_requests_per_s"),
        "runner_requests_per_s": f.get("throughput_requests_per_s"),
        "speedup_vs_baseline": f.get("speedup_vs_baseline"),
        "throughput_cv": f.get("throughput_cv"),
        "efficiency_vs_ceiling": f.get("efficiency_vs_ceiling"),
        "latency_e2e_p50_us": (f.get("latency_e2e_us") or {}).get("p50"),
        "host_enqueue_p50_us": (f.get("host_enqueue_us") or {}).get("p50"),
        "hand_requests_per_s": statistics.median(hand_rps),
        "runner_pass_requests_per_s": statistics.median(runner_rps),
        "hand_over_runner": tax,
        "hand_over_runner_iqr": [q1, q3],
        "hand_over_runner_pairs": ratios,
        "gpu": (result["env"].get("gpu") or {}).get("name"),
        "git": result["env"].get("git"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "tiny_llm"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0, help="per pass of the runner's own job")
    parser.add_argument("--pairs", type=int, default=40, help="hand/runner pass pairs for the overhead")
    parser.add_argument("--pass-seconds", type=float, default=0.25, help="per pass in those pairs")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/recipe.py needs a CUDA GPU", file=sys.stderr)
        return 2
    register()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            rows.append(bench_model(model, args.repeats, args.min_seconds, args.pairs, args.pass_seconds, Path(tmp)))
    print()
    print(f"device: {rows[0]['gpu']}  torch {torch.__version__}  commit {(rows[0]['git'] or {}).get('commit')}")
    header = (f"{'model':10}{'baseline r/s':>14}{'runner r/s':>12}{'speedup':>9}{'hand r/s':>11}"
              f"{'hand/runner (IQR)':>24}  verdict")
    print(header)
    ok = True
    for row in rows:
        verdicts = []
        if row["model"] == "mlp":
            verdicts.append(f"speedup {'>=' if row['speedup_vs_baseline'] >= NOTE_SPEEDUP else '<'} {NOTE_SPEEDUP}x")
            ok &= row["speedup_vs_baseline"] >= NOTE_SPEEDUP
        verdicts.append(f"tax {'ok' if row['hand_over_runner'] <= MAX_TAX else 'TOO HIGH'}")
        ok &= row["hand_over_runner"] <= MAX_TAX and row["status"] == "ok"
        print(f"{row['model']:10}{row['baseline_requests_per_s']:>14,.0f}{row['runner_requests_per_s']:>12,.0f}"
              f"{row['speedup_vs_baseline']:>8.2f}x{row['hand_requests_per_s']:>11,.0f}"
              f"{row['hand_over_runner']:>10.3f} ({row['hand_over_runner_iqr'][0]:.3f}-{row['hand_over_runner_iqr'][1]:.3f})"
              f"  {', '.join(verdicts)} [{row['status']}]")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
