"""torch.compile as a peer (its own modes) and as a partner (inside the runner's graphs)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from runner.build import build
from runner.errors import CompileError, ConfigError
from runner.job import JobInfo, run_job
from runner.spec import resolve
from tests.conftest import ROOT, cli_env

QUICK = ("measure=quick", "device=cpu", "model.batch=4")


def test_compile_default_runs_on_the_cpu_with_the_check_and_its_compile_times(make_cfg, tmp_path):
    cache = tmp_path / "inductor"
    overrides = [*QUICK, "compile=default", f"compile_cache={cache}"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path / "job", overrides=overrides))
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert f["check_mismatches"] == 0 and f["check_requests"] > 0
    assert f["compile_cache_dir"] == str(cache) and f["compile_cache_was_empty"] is True
    assert f["compile_time_cold_ms"] > f["compile_time_warm_ms"] > 0  # the second compile reads the cache
    assert any(cache.iterdir())
    assert result["effective"]["compile"] == "default" and "compile:default" in result["mode"]
    assert f["check_tolerance_rel"] == pytest.approx(1e-4)  # compiled kernels get a compiled tolerance


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("compile=fast",), r"compile=fast: not a torch.compile mode; use one of: none, default"),
        (("compile=reduce-overhead",), r"compile=reduce-overhead: torch records its own CUDA graphs.*use graph=false"),
        (("compile=max-autotune", "graph=false", "streams=4"), r"compile=max-autotune: .*use streams=1"),
    ],
)
def test_combinations_that_cannot_work_are_refused_in_one_line(make_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        resolve(make_cfg(*overrides), cuda_count=lambda: 1, bf16_supported=lambda d: True)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("asked", "ran"), [("reduce-overhead", "default"),
                                             ("max-autotune", "max-autotune-no-cudagraphs")])
def test_on_the_cpu_a_mode_with_torchs_graphs_runs_and_records_as_the_mode_without(make_cfg, asked, ran):
    spec = resolve(make_cfg("device=cpu", f"compile={asked}"))
    assert spec.compile == ran and spec.effective()["compile"] == ran
    assert f"compile={asked}: no CUDA graphs on the CPU: running compile={ran} (Inductor's kernels only)" in spec.notices


def test_torchs_own_graphs_are_allowed_on_one_stream_and_graph_false(make_cfg):
    spec = resolve(make_cfg("compile=reduce-overhead", "graph=false", "streams=1"), cuda_count=lambda: 1,
                   bf16_supported=lambda d: True)
    assert spec.compile == "reduce-overhead" and not spec.graph


def test_a_compile_failure_is_one_line_or_a_marked_fallback(make_cfg, tmp_path, monkeypatch):
    def broken(model, mode=None):
        raise RuntimeError("backend exploded\nwith a long traceback")

    monkeypatch.setattr(torch, "compile", broken)
    spec = resolve(make_cfg(*QUICK, "compile=default"))
    with pytest.raises(CompileError, match=r"^compile=default: torch.compile failed for MLP \(backend exploded\); use compile=none"):
        build(spec)
    overrides = [*QUICK, "compile=default", "capture.fallback_eager=true"]
    result = run_job(make_cfg(*overrides), JobInfo(output_dir=tmp_path, overrides=overrides))
    assert result["status"] == "ok"
    assert result["effective"]["compile"] == "none"
    assert any("torch.compile failed" in n and "ran uncompiled" in n for n in result["notices"])


@pytest.mark.slow
def test_the_peers_preset_runs_as_one_sweep_with_one_table(tmp_path):
    out = tmp_path / "peers"
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "experiment=peers", *QUICK, f"compile_cache={tmp_path / 'cache'}",
         f"hydra.sweep.dir={out}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads((out / str(n) / "result.json").read_text()) for n in range(5)]
    assert [r["status"] for r in results] == ["ok"] * 5
    # On the CPU reduce-overhead is the default mode without torch's graphs: it runs as that, and
    # the sweep says the jobs that ran the same settings (eager and graphs, compile and reduce-overhead).
    assert [r["effective"]["compile"] for r in results] == ["none", "default", "default", "none", "default"]
    assert any("compile=reduce-overhead: no CUDA graphs on the CPU: running compile=default" in n
               for n in results[2]["notices"])
    table = (out / "sweep.md").read_text()
    assert table.count("| ok |") == 5 and "+peer=graphs_compiled" in table
    assert "ran the same settings in 2 groups" in proc.stdout + proc.stderr


@pytest.mark.parametrize("model, kinds", [
    (("model.batch=[1,4,16]",), 2),  # a second size, and a batch of 1
    # Buckets of batch and seq: a size that changes both, then batch 1, seq 1, and both 1. (A
    # size changing seq alone had left batch static: the next batch compiled in the check.)
    (("model=tiny_llm", "model.module.d_model=32", "model.module.n_layers=1", "model.module.vocab_size=64",
      "model.batch=[1,2,4]", "model.seq=[4,8,16]", "model.inputs.tokens.shape=[seq]"), 4),
])
def test_requests_of_other_sizes_compile_before_the_check_not_in_it(make_cfg, model, kinds):
    """Eager runs each request at its own size: torch.compile recompiled for the second size
    and for a batch of 1 inside the check (a 2 s budget's check took 9.7 s for DistilBERT)."""
    from torch._dynamo.utils import counters

    from runner.build import launch_key
    from runner.inputs import draw_sizes, make_request

    spec = resolve(make_cfg("measure=quick", "device=cpu", *model, "compile=default"))
    workload = build(spec)
    assert workload.compile_figures["compile_other_sizes"] == kinds
    compiled_frames = counters["frames"]["total"]
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():  # as the runner's passes run
        for size in draw_sizes(spec.model, 60, generator, cover=True):
            workload.forward(make_request(spec.model, launch_key(spec, size), spec.torch_dtype, generator))
    assert counters["frames"]["total"] == compiled_frames  # no compile after the build
