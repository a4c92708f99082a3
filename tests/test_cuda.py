"""Capture, streams and copies on a real GPU. Skipped without CUDA; run them on the GPU host."""

from __future__ import annotations

import re

import pytest
import torch

from runner import schedule
from runner.build import build
from runner.check import check_schedule
from runner.errors import CaptureError, ConfigError
from runner.job import JobInfo, _release_memory, run_job
from runner.lanes import build_lanes
from runner.spec import resolve

pytestmark = pytest.mark.cuda

QUICK = ("measure=quick", "device=cuda")


@pytest.fixture(autouse=True)
def _tf32_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32 = before
    torch.cuda.synchronize()


def _setup(make_cfg, *overrides):
    spec = resolve(make_cfg(*QUICK, *overrides))
    torch.backends.cuda.matmul.allow_tf32 = spec.tf32
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    return spec, workload, lanes


def _check(spec, workload, lanes, requests):
    with torch.no_grad():
        return check_schedule(spec, workload, lanes, requests)


def _ports(lanes):
    """Every port of every slot (one per slot and launch shape), in ring order."""
    return [port for slot in lanes.ring for port in slot.ports.values()]


STAGING = {
    "direct-2": ("staging.mode=direct", "staging.slots=2", "capture.copies_in_graph=false"),
    "direct-3-in-graph": ("staging.mode=direct", "staging.slots=3", "capture.copies_in_graph=true"),
    "copy-1": ("staging.mode=copy", "staging.slots=1", "staging.copy_thread=false", "capture.copies_in_graph=false"),
    "copy-thread-2": ("staging.mode=copy", "staging.slots=2", "staging.copy_thread=true", "capture.copies_in_graph=false"),
    "copy-thread-2-in-graph": ("staging.mode=copy", "staging.slots=2", "staging.copy_thread=true",
                               "capture.copies_in_graph=true"),
}


@pytest.mark.parametrize("staging", STAGING)
@pytest.mark.parametrize(("dtype", "tf32"), [("fp32", "true"), ("bf16", "false")])
def test_concurrent_graph_replay_equals_eager_for_10000_requests(make_cfg, dtype, tf32, staging):
    spec, workload, lanes = _setup(make_cfg, "model=mlp", f"dtype={dtype}", f"tf32={tf32}", "streams=4", *STAGING[staging])
    assert lanes.graph and len(lanes) == 4
    result = _check(spec, workload, lanes, 10_000)
    assert result.requests == 10_000
    assert result.passed, result


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=tiny_llm", "dtype=bf16", "streams=4"),
        ("model=tiny_llm", "dtype=fp32", "tf32=true", "streams=8", "staging.mode=copy"),
        ("model=mlp", "capture.copies_in_graph=false", "streams=4"),
        ("model=mlp", "graph=false", "streams=4"),
        ("model=mlp", "graph=false", "streams=4", "staging.mode=copy", "staging.copy_thread=true"),
        ("model=mlp", "graph=false", "pinned=false", "streams=2"),
        ("model=mlp", "pinned=false", "streams=3", "staging.mode=copy", "staging.copy_thread=true"),
        ("model=encoder", "streams=4", "staging.slots=2"),
    ],
    ids=["tiny_llm-bf16", "tiny_llm-tf32-x8-copy", "copies-around-graph", "eager-x4", "eager-x4-copy-thread",
         "eager-pageable", "graph-pageable-copy-thread", "encoder"],
)
def test_every_mode_equals_eager(make_cfg, overrides):
    spec, workload, lanes = _setup(make_cfg, *overrides)
    result = _check(spec, workload, lanes, 2_000)
    assert result.passed, result


# A wide MLP: each request's compute (reading 0.5 GB of weights) outlasts the host's enqueue,
# so replays on different streams overlap. Float-only intermediates: a race corrupts values,
# never addresses (a corrupted index tensor, as in tiny_llm, would fault the whole context).
WIDE_MLP = ("model=mlp", "model.module.hidden_features=8192", "streams=4", "capture.copies_in_graph=false")


def _recapture_into_one_shared_pool(lanes):
    """The broken variant, built here and nowhere in the runner: every lane's graphs captured
    into one memory pool on one capture stream, so the graphs reuse each other's
    intermediates when they replay concurrently."""
    pool, stream = torch.cuda.graph_pool_handle(), torch.cuda.Stream()
    with torch.no_grad():
        for lane in lanes:
            for key in list(lane.compute_graphs):
                args = lane.layout(key).views(lane.dev_in)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    outs = tuple(lane.forward(args))
                lane.compute_graphs[key], lane.dev_out[key] = graph, outs
                for slot in lane.slots:
                    slot.ports[key].bind_graph(graph, outs)
    torch.cuda.synchronize()


def test_shared_pool_race_is_caught_by_the_same_check(make_cfg):
    spec, workload, lanes = _setup(make_cfg, *WIDE_MLP, "staging.slots=1")
    _recapture_into_one_shared_pool(lanes)
    result = _check(spec, workload, lanes, 2_000)
    assert not result.passed
    assert result.mismatches > 0
    assert result.eager_spread is not None and result.eager_spread <= result.tolerance_rel  # eager repeats itself: the race is the runner's
    # The same model, built correctly, passes the same check.
    spec, workload, lanes = _setup(make_cfg, *WIDE_MLP, "staging.slots=1")
    assert _check(spec, workload, lanes, 2_000).passed


@pytest.mark.parametrize("staging", ["direct-2", "copy-1", "copy-thread-2", "direct-3-in-graph", "copy-thread-2-in-graph"])
def test_a_slot_rewritten_before_its_event_completed_is_caught_by_the_same_check(make_cfg, staging):
    # In the graph too: its H2D reads the pinned slot when it replays, so a slot rewritten
    # before then serves another request's bytes (token ids of the same vocabulary: no fault).
    # tiny_llm: compute (~0.6 ms a request) outlasts the host's enqueue, so copies queue up.
    spec, workload, lanes = _setup(make_cfg, "model=tiny_llm", "streams=4", *STAGING[staging])
    ports = _ports(lanes)
    assert len(ports) == len(lanes.ring)  # one launch shape: one port per slot
    waits = [port.wait for port in ports]
    for port in ports:  # the broken variant: never wait for the slot's event
        port.wait = lambda: None
    result = _check(spec, workload, lanes, 2_000)
    assert not result.passed
    for port, wait in zip(ports, waits, strict=True):
        port.wait = wait
    assert _check(spec, workload, lanes, 2_000).passed  # the same lanes, used correctly


def test_every_graph_has_its_own_stream_and_lane_pools(make_cfg):
    spec, workload, lanes = _setup(make_cfg, "streams=4", "staging.slots=2", "capture.copies_in_graph=true")
    streams = [lane.stream for lane in lanes]
    assert len({s.cuda_stream for s in streams}) == 4
    assert torch.cuda.default_stream().cuda_stream not in {s.cuda_stream for s in streams}
    # Per lane: the compute graph's pool and one pool its slot graphs share (they replay one
    # after another on the lane's stream); no pool is shared between lanes.
    pools = [pool for lane in lanes for pool in lane.pools]
    assert len(pools) == 8 and len(set(pools)) == 8
    graphs = [g for lane in lanes
              for g in (*lane.compute_graphs.values(), *(port.graph for slot in lane.slots for port in slot.ports.values()))]
    assert len(graphs) == 12 and all(g is not None for g in graphs)
    assert len({id(g) for g in graphs}) == 12


def test_static_buffers_never_move_and_steady_state_allocates_nothing(make_cfg):
    for staging in ("direct-2", "copy-thread-2"):
        spec, workload, lanes = _setup(make_cfg, "streams=4", *STAGING[staging])
        pointers = [lane.buffer_pointers() for lane in lanes]
        with torch.no_grad():
            sources, keys = workload.sources, workload.keys
            schedule.throughput_pass(lanes, sources, keys, 100, 0.0)  # first replays upload graphs
            before = torch.cuda.memory_stats()["allocation.all.allocated"]
            schedule.throughput_pass(lanes, sources, keys, 2_000, 0.0)
            schedule.latency_pass(lanes, sources, keys, 200)
            schedule.enqueue_pass(lanes, sources, keys, 200)
            after = torch.cuda.memory_stats()["allocation.all.allocated"]
        assert after == before, staging
        assert pointers == [lane.buffer_pointers() for lane in lanes]
        assert all(slot.host_in.is_pinned() and all(out.is_pinned() for out in slot.host_out) for slot in lanes.ring)


def test_changing_the_pinned_input_changes_the_output(make_cfg):
    spec, workload, lanes = _setup(make_cfg, "streams=2", "capture.copies_in_graph=true")
    key = workload.keys[0]
    port = lanes.ring[1].ports[key]
    assert port.graph is not None  # the copies are inside the port's own graph
    outputs = []
    with torch.no_grad():
        for source in workload.sources[:2]:
            port.host_in.copy_(source)
            port.select()
            port.enqueue()
            port.record()
            lanes.restore_default_stream()
            port.wait()
            [out] = port.host_out  # the mlp's one output leaf
            outputs.append(out.clone())
            args = {name: x.cuda() for name, x in workload.layout(key).views(source).items()}
            expected = workload.model(**args).cpu()
            torch.testing.assert_close(outputs[-1], expected, rtol=5e-3, atol=1e-4)
    assert not torch.equal(outputs[0], outputs[1])


FAULTY = ("model=linear", "~model.module.in_features", "~model.module.out_features",
          "+model.module.features=8", "model.inputs.input.shape=[8]", "model.batch=2")


def test_uncapturable_model_says_capture_failed_and_why(make_cfg):
    with pytest.raises(CaptureError, match="capture of model HostSync into a CUDA graph failed"):
        _setup(make_cfg, *FAULTY, "model.module._target_=tests.faulty_models.HostSync")
    # The device is still usable afterwards, on the stream it was using before.
    assert torch.cuda.current_stream() == torch.cuda.default_stream()
    assert torch.ones(4, device="cuda").sum().item() == 4


def test_uncapturable_model_falls_back_to_eager_when_asked(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.HostSync",
                   "capture.fallback_eager=true")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok"
    assert result["effective"]["graph"] is False
    assert any("capture" in n and "ran eager instead" in n for n in result["notices"])
    # The method and the warnings say what ran: eager forwards with their marks between the
    # copies (they had described copies inside graphs), and no "allocations during the timed
    # graph passes" (an eager forward allocates).
    assert result["effective"]["copies_in_graph"] is False
    assert "latency_e2e_us only" not in result["method"]["latency"]
    assert not any("during the timed graph passes" in w for w in result["warnings"])
    assert result["figures"].get("padding_waste") is None  # one size: nothing padded


def test_a_bucketed_fallback_to_eager_says_it_kept_the_padding(make_cfg, tmp_path):
    """After a capture fell back, the plan stays packed in the buckets' shapes: the eager forwards
    run padded requests, where the method said an eager job's real sizes (review)."""
    cfg = make_cfg(*QUICK, *FAULTY, "model.batch=[2,8]", "model.module._target_=tests.faulty_models.HostSync",
                   "capture.fallback_eager=true")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    assert result["effective"]["graph"] is False and result["figures"]["padding_waste"] > 0
    said = "the eager forwards run each request padded to its bucket, as the graphs would have (padding_waste)"
    assert any("ran eager instead" in n and said in n for n in result["notices"]), result["notices"]
    assert said in result["method"]["schedule"]


@pytest.mark.parametrize("graph", ["true", "false"])
def test_every_forward_of_a_job_runs_without_autograd(make_cfg, tmp_path, graph):
    """The eager streams' setup forwards had run with autograd on."""
    result = run_job(make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.InferenceOnly",
                              f"graph={graph}", "streams=2"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]


def test_out_of_memory_is_a_clear_failed_result(make_cfg, tmp_path):
    cfg = make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.Hog")
    result = run_job(cfg, JobInfo(output_dir=tmp_path))
    assert result["status"] == "failed"
    assert re.match(r"out of memory \(in the [a-z' -]+\): CUDA out of memory\. Tried to allocate", result["reason"]), \
        result["reason"]
    assert torch.cuda.memory_allocated() < 2**30  # nothing left behind


def test_a_device_that_does_not_exist_is_refused(make_cfg):
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"^device=cuda:{count}: this machine has {count} CUDA device"):
        resolve(make_cfg(f"device=cuda:{count}"))


def test_graph_job_reports_setup_apart_from_steady_state(make_cfg, tmp_path):
    # Start from what the job leaves behind: lanes an earlier test built hold reference cycles
    # (slot <-> lane), and cuBLAS keeps a workspace for every stream an earlier test used; the
    # job collects the one and clears the other, which had read as memory it returned twice.
    _release_memory("cuda")
    allocated_before = torch.cuda.memory_allocated()
    result = run_job(make_cfg(*QUICK, "streams=4", "capture.copies_in_graph=false"), JobInfo(output_dir=tmp_path))
    f = result["figures"]
    assert result["status"] == "ok", result["reason"]
    assert f["check_mismatches"] == 0
    assert f["capture_time_ms"] > 0 and f["graph_pool_bytes"] > 0
    assert f["peak_device_memory_bytes"] > 0
    assert f["steady_state_allocations"] == 0 and f["static_buffers_moved"] is False
    assert f["speedup_vs_baseline"] > 1.0
    assert 0 < f["efficiency_vs_ceiling"] <= 1.5
    # Other processes' CPU is read around the baseline's and the ceiling's passes too (a quiet
    # test host: well under the CPUs this job leaves free).
    for side in ("", "_baseline", "_ceiling"):
        assert 0 <= f[f"host_others_cores{side}"] < f["host_others_cpus"] and f[f"host_others_tick_cores{side}"] > 0
    e2e, h2d, comp, d2h = (f[f"latency_{s}_us"]["p50"] for s in ("e2e", "h2d", "compute", "d2h"))
    assert h2d > 0 and comp > 0 and d2h > 0 and e2e >= comp
    assert result["env"]["gpu"]["name"]
    assert torch.cuda.memory_allocated() == allocated_before  # the job returned its memory


def test_profile_trace_shows_each_stream_on_its_own_row(make_cfg, tmp_path):
    import json

    from runner.trace import profile_schedule

    spec, workload, lanes = _setup(make_cfg, "streams=4", "capture.copies_in_graph=false")
    with torch.no_grad():
        schedule.throughput_pass(lanes, workload.sources, workload.keys, 100, 0.0)
        path = profile_schedule(lanes, workload.sources, workload.keys, 64, tmp_path / "trace.json")
    events = json.loads(path.read_text())["traceEvents"]
    gpu = [e for e in events if e.get("cat") in ("kernel", "gpu_memcpy") and "stream" in (e.get("args") or {})]
    copies = {e["args"]["stream"] for e in gpu if e["cat"] == "gpu_memcpy"}
    kernels = {e["args"]["stream"] for e in gpu if e["cat"] == "kernel"}
    assert len(copies) >= 4 and len(kernels & copies) >= 4, (copies, kernels)
    requests = {e["name"] for e in events if str(e.get("name", "")).startswith("request ")}
    assert len(requests) == 64


def test_a_device_side_fault_in_the_probe_is_one_line_of_bad_input(tmp_path):
    """Token ids beyond the model's vocabulary fault asynchronously on the GPU (and leave the
    context unusable, hence a separate process): the probe forward must still name the input."""
    import subprocess
    import sys

    from tests.conftest import cli_env

    done = subprocess.run(
        [sys.executable, "-m", "runner", "model=tiny_llm", "model.inputs.tokens.vocab=100000", *QUICK],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    # (The GPU's own assertion messages may precede it: the device prints those, not Python.)
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: model.inputs (tokens tokens [8, 128], vocab 100000) do not fit model TinyLLM")
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("result.json"))


def test_jobs_forked_from_the_preloaded_server_capture_and_check_on_the_gpu(tmp_path):
    """The sweep's server imported torch but never touched CUDA: each forked job starts CUDA
    itself, captures its graphs and passes its check."""
    import json
    import subprocess
    import sys

    from tests.conftest import cli_env

    done = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "streams=1,4", "graph=true", *QUICK, "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads((tmp_path / "sw" / str(i) / "result.json").read_text()) for i in (0, 1)]
    for result in results:
        assert result["status"] == "ok" and result["job"]["launcher_start"] == "forked"
        assert result["effective"]["graph"] and result["figures"]["capture_time_ms"] > 0
        assert result["figures"]["check_mismatches"] == 0 and result["figures"]["steady_state_allocations"] == 0
    assert [r["effective"]["streams"] for r in results] == [1, 4]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 or more GPUs")
def test_a_sweep_over_every_gpu_runs_one_job_per_gpu_at_a_time(tmp_path):
    """hydra/launcher=gpus: every GPU busy, each job on its own GPU (by UUID) and its own cores,
    never two jobs on one GPU at once, and the table says which GPU ran each job."""
    import csv
    import json
    import subprocess
    import sys

    from tests.conftest import cli_env

    gpus = torch.cuda.device_count()
    done = subprocess.run(
        [sys.executable, "-m", "runner", "-m", "hydra/launcher=gpus", f"seed=range(0,{2 * gpus})", "graph=true",
         *QUICK, "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(p.read_text()) for p in sorted((tmp_path / "sw").glob("*/result.json"))]
    assert len(results) == 2 * gpus and all(r["status"] == "ok" for r in results)
    assert all(r["figures"]["check_mismatches"] == 0 for r in results)
    uuid_of = {r["job"]["launcher_device"]: r["env"]["gpu"]["uuid"] for r in results}
    assert len(uuid_of) == gpus and len(set(uuid_of.values())) == gpus  # every GPU, each a different one
    for r in results:
        assert r["env"]["gpu"]["uuid"] == uuid_of[r["job"]["launcher_device"]]
        assert r["env"]["cuda_visible_devices"] == r["job"]["launcher_device"]
        assert r["job"]["parallel_devices"] == gpus  # on record: the other GPUs' jobs ran beside it
    cores = {r["job"]["launcher_device"]: set(r["job"]["launcher_cpus"].split(",")) for r in results}
    assert all(a.isdisjoint(b) for d, a in cores.items() for e, b in cores.items() if d != e)
    for device in uuid_of:
        spans = sorted((r["job"]["started_unix"], r["job"]["finished_unix"]) for r in results
                       if r["job"]["launcher_device"] == device)
        assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))
    with open(tmp_path / "sw" / "sweep.csv") as f:
        assert {row["gpu"] for row in csv.DictReader(f)} == set(uuid_of)
    assert f"its jobs ran on {gpus} GPUs" in (tmp_path / "sw" / "sweep.md").read_text()


# --- real models: several inputs, structured outputs, buckets ------------------------------

BUCKET_MODES = {
    "in-graph": ("capture.copies_in_graph=true",),
    "around": ("capture.copies_in_graph=false",),
    "copy-thread": ("capture.copies_in_graph=true", "staging.mode=copy", "staging.copy_thread=true"),
}


@pytest.mark.parametrize("mode", list(BUCKET_MODES))
def test_mixed_sizes_over_batch_buckets_match_eager_on_their_real_rows(make_cfg, mode):
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "model.batch=[1,2,4,8,16,32]", "streams=4",
                                   *BUCKET_MODES[mode])
    # One graph per (stream, bucket), captured largest first into the lane's own pools.
    for lane in lanes:
        assert [k.batch for k in lane.compute_graphs] == [32, 16, 8, 4, 2, 1]
        assert len(lane.pools) == (2 if spec.copies_in_graph else 1)
    pools = [pool for lane in lanes for pool in lane.pools]
    assert len(set(pools)) == len(pools)
    assert len({r.key for r in workload.plan}) == 6  # the timed requests use every bucket
    result = _check(spec, workload, lanes, 4_000)
    assert result.passed and result.requests == 4_000, result


def test_bucketed_passes_allocate_nothing_and_keep_their_buffers(make_cfg):
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "model.batch=[1,4,16]", "streams=2")
    pointers = [lane.buffer_pointers() for lane in lanes]
    with torch.no_grad():
        sources, keys = workload.sources, workload.keys
        schedule.throughput_pass(lanes, sources, keys, 200, 0.0)
        before = torch.cuda.memory_stats()["allocation.all.allocated"]
        schedule.throughput_pass(lanes, sources, keys, 2_000, 0.0)
        schedule.ceiling_pass(lanes, keys, 500, 0.0)
        schedule.latency_pass(lanes, sources, keys, 200)
        after = torch.cuda.memory_stats()["allocation.all.allocated"]
    assert after == before
    assert pointers == [lane.buffer_pointers() for lane in lanes]


def test_the_ceiling_pass_of_a_slow_model_ends_near_its_time(make_cfg):
    """Replays return at once: unbounded, the host would queue seconds of a slow model's work in
    a 0.1 s pass and wait for all of it at the end (BERT's ceiling once took 29 s of an 8 s
    budget). The strides keep the queue to two of them."""
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "model.batch=4096", "model.module.hidden_features=4096",
                                   "model.module.in_features=4096", "model.inputs.x.shape=[4096]", "streams=4")
    with torch.no_grad():
        n, s = schedule.ceiling_pass(lanes, workload.keys, 1, 0.0, 0.0)  # warm
        n, s = schedule.ceiling_pass(lanes, workload.keys, 1, 0.1, 0.1)
    per_request_s = s / n
    assert per_request_s > 2e-4, per_request_s  # slow enough for the host to run far ahead
    # Within two strides of 0.1 s (with a wide margin): never the seconds of an unbounded queue.
    assert s < 0.1 + 4 * schedule.CEILING_STRIDE * per_request_s + 0.5, (n, s)


def test_a_shared_pool_across_lanes_is_caught_with_buckets_too(make_cfg):
    spec, workload, lanes = _setup(make_cfg, *WIDE_MLP, "model.batch=[8,32]", "capture.copies_in_graph=false")
    assert _check(spec, workload, lanes, 2_000).passed
    _recapture_into_one_shared_pool(lanes)
    assert not _check(spec, workload, lanes, 2_000).passed


def test_three_inputs_and_a_tuple_output_are_captured_and_match_eager(make_cfg, tmp_path):
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True)
    (folder / "mha.yaml").write_text(
        "module: {_target_: torch.nn.MultiheadAttention, embed_dim: 64, num_heads: 4, batch_first: true}\n"
        "batch: 16\ninputs:\n  query: {shape: [10, 64]}\n  key: {shape: [12, 64]}\n  value: {shape: [12, 64]}\n"
    )
    spec, workload, lanes = _setup(make_cfg, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=mha", "streams=4")
    assert workload.out_paths == ("0", "1")
    assert lanes.graph and _check(spec, workload, lanes, 2_000).passed


def test_huggingface_gpt2_with_sequence_buckets_is_captured_and_matches_eager(make_cfg):
    pytest.importorskip("transformers")
    spec, workload, lanes = _setup(
        make_cfg, "model=gpt2", "model.module.config.n_layer=2", "model.module.config.n_embd=128",
        "model.module.config.n_head=2", "model.module.config.vocab_size=1000", "model.batch=[1,4]",
        "model.seq=[16,32]", "streams=2")
    assert lanes.graph and len(lanes.lanes[0].compute_graphs) == 4
    result = _check(spec, workload, lanes, 300)
    assert result.passed and result.requests == 300, result


@pytest.mark.parametrize("mode", ["in-graph", "around"])
def test_a_bucketed_bert_with_three_inputs_captures_times_and_checks(make_cfg, tmp_path, mode):
    """Each input sits where it does in the largest shape: a request read in another shape's
    layout (the capture's warm-up, the ceiling, direct staging's timed passes) reads token ids
    as ids, never as token-type ids (an index out of range: a device assert). Inside the graph
    each input is copied on its own."""
    pytest.importorskip("transformers")
    bert = ("model=bert", "model.module.config.num_hidden_layers=2", "model.module.config.hidden_size=128",
            "model.module.config.num_attention_heads=2", "model.module.config.intermediate_size=256",
            "model.batch=[1,2,4]", "model.seq=[16,32,64]", "model.sizes.seq.values=[10,16,30,64]",
            "model.sizes.batch.values=[1,3,4]", "streams=2", *BUCKET_MODES[mode])
    spec, workload, lanes = _setup(make_cfg, *bert)
    assert lanes.graph and len(lanes.lanes[0].compute_graphs) == 9
    result = _check(spec, workload, lanes, 400)
    assert result.passed and result.requests == 400, result
    job = run_job(make_cfg(*QUICK, *bert, "measure.budget_s=4"), JobInfo(output_dir=tmp_path))
    assert job["status"] == "ok", job["reason"]
    assert job["figures"]["ceiling_requests_per_s"] > 0 and job["figures"]["throughput_requests_per_s"] > 0


def test_open_loop_on_the_gpu_keeps_a_low_rate_near_single_request_latency(make_cfg):
    from runner.load import judge, open_loop, poisson_arrivals
    from runner.protocol import open_servers

    spec, workload, lanes = _setup(make_cfg, "model=mlp", "streams=4")
    with torch.no_grad():
        single = sorted(schedule.single_stream_pass(lanes, workload.sources, workload.keys, 500))
        with open_servers(lanes, workload.sources, workload.keys) as servers:
            assert not any(s.sync for s in servers)  # completion is the slot's event, polled
            served = open_loop(poisson_arrivals(1000.0, 0.5, seed=1, min_requests=300), servers)
    point = judge(1000.0, served, p99_ms=None)
    assert point.valid, point.why
    assert point.latency_us["p50"] < 3 * single[len(single) // 2] * 1e6


def test_the_runners_graphs_over_a_compiled_model_match_eager(make_cfg, tmp_path):
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "compile=default", "streams=2", f"compile_cache={tmp_path}")
    assert lanes.graph and workload.compile_figures["compile_time_cold_ms"] > 0
    assert _check(spec, workload, lanes, 1_000).passed


def test_torchs_own_graphs_run_on_one_stream_and_match_eager(make_cfg, tmp_path):
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "compile=reduce-overhead", "graph=false", "streams=1",
                                   f"compile_cache={tmp_path}")
    assert not lanes.graph
    assert _check(spec, workload, lanes, 1_000).passed


def test_server_load_on_the_gpu_finds_a_rate_and_ends_an_overloaded_one_within_its_budget(make_cfg, tmp_path):
    """The open loop with the runner's lanes as servers (events polled between issues): a rate
    search under a p99 bound finds a rate, and a rate far over capacity is invalid, its queue
    dropped at the end of its share instead of served for seconds past the budget."""
    search = run_job(make_cfg(*QUICK, "model=mlp", "load.scenario=server", "load.rate=max", "load.p99_ms=5"),
                     JobInfo(output_dir=tmp_path / "search"))
    assert search["status"] == "ok", search["reason"]
    f = search["figures"]
    assert f["server_max_rate"] and f["server_max_rate"] > 1000, f["load"]["runner"]
    valid = [p for p in f["load"]["runner"]["points"] if p["valid"]]
    assert valid and all(p["requests"] >= 200 and p["latency_us"]["p99"] <= 5000 for p in valid)
    over = run_job(make_cfg(*QUICK, "model=mlp", "load.scenario=server", "load.rate=3000000", "load.duration_s=0.1",
                            "baseline=false"), JobInfo(output_dir=tmp_path / "over"))
    assert over["status"] == "ok", over["reason"]
    [point] = over["figures"]["load"]["runner"]["points"]
    assert not point["valid"] and point["dropped"] > 0 and "still queued" in point["why"]
    assert over["figures"]["measure_time_s"] < 2 * 2.0, over["figures"]["measure_phases_s"]  # measure=quick: 2 s


def test_a_baseline_search_too_long_to_run_is_left_out_and_the_runners_kept(make_cfg, tmp_path, monkeypatch):
    """The baseline's search runs after the runner's: a refusal of its first point there threw
    the runner's whole search away (review). A model that sleeps in its forward: its graph
    replays without the sleep (fast), its eager baseline with it (30 ms a request, a first point
    of about 12 s), here past a refusal scaled down to 1.5 times the 2 s budget."""
    from runner import spec as rules

    monkeypatch.setattr(rules, "REFUSE_FACTOR", 1.5)
    monkeypatch.setattr(rules, "REFUSE_MIN_S", 0.1)
    result = run_job(make_cfg(*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.Slow", "+model.module.calls=30",
                              "load.scenario=server", "load.rate=max", "load.p99_ms=50", "load.duration_s=0.2"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert f["server_max_rate"] and f["load"]["runner"]["points"] and "baseline" not in f["load"]
    assert f["baseline_server_max_rate"] is None and f["server_max_rate_vs_baseline"] is None
    assert [w for w in result["warnings"] if w.startswith("the baseline's rate search was not run: it would start at "
                                                          "half its closed loop's rate")], result["warnings"]
    # The eager forward's 30 ms says nothing of the graphs' rate: no warning of the search's
    # first point before measuring (the CPU's estimate).
    assert not [w for w in result["warnings"] if "the rate search's first point: 200 arrivals" in w]


def test_the_latency_pass_marks_each_request_on_its_lane_with_events_made_before_it(make_cfg):
    """An event came into being at its first record, between a request's stages, and each
    record built a Stream object: host time that widened a stage on an idle stream. The events
    exist before the pass, and each stage is marked on the request's own lane."""
    spec, workload, lanes = _setup(make_cfg, "model=mlp", "streams=2", "capture.copies_in_graph=false")
    streams = [lane.stream for lane in lanes.lanes]
    timeline = schedule.Timeline(4, lanes.device, (0, 1, 2, 3), streams)
    assert all(e.cuda_event != 0 for row in timeline.events for e in row)
    with torch.no_grad():
        out = schedule.latency_pass(lanes, workload.sources, workload.keys, 64)
    assert out["lane"] == [j % 2 for j in range(64)]
    for row in out["device_us"]:
        assert row[0] <= row[1] <= row[2] <= row[3]  # H2D, compute, D2H in order on one stream
    # Request 0's mark goes on lane 0's stream, behind 50 ms of work queued there; request 1's
    # on lane 1's, which does not wait for it.
    timeline.start()
    with torch.cuda.stream(streams[0]):
        torch.cuda._sleep(100_000_000)  # about 50 ms at 2 GHz
    timeline.marks[0][0]()  # the marks are bound before the pass: one call each
    timeline.marks[1][0]()
    torch.cuda.synchronize()
    [lane0, lane1] = [row[0] for row in timeline.times_us(2)]
    assert lane1 < 0.2 * lane0 and lane0 > 20_000, (lane0, lane1)


def test_interleaved_ceiling_and_baseline_are_warmed_before_their_first_timed_pass(make_cfg, tmp_path, monkeypatch):
    """Interleaved, the ceiling's first timed pass was the first replay of its compute graphs
    (their upload inside the clock); the sequential blocks each had an untimed warm-up first."""
    calls = []
    for name in ("ceiling_pass", "baseline_pass"):
        real = getattr(schedule, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            result = _real(*args, **kwargs)
            calls.append(_name)
            return result

        monkeypatch.setattr(schedule, name, spy)
    result = run_job(make_cfg(*QUICK, "model=mlp", "measure.interleave=true"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    timed_ceiling, timed_baseline = len(f["ceiling_requests_per_s_repeats"]), len(f["baseline_requests_per_s_repeats"])
    assert timed_ceiling >= 2 and timed_baseline >= 2
    # One untimed pass of each kind, before every timed pass of either kind.
    assert calls[:2] == ["ceiling_pass", "baseline_pass"]
    assert calls.count("ceiling_pass") == timed_ceiling + 1 and calls.count("baseline_pass") == timed_baseline + 1


def test_a_model_returning_its_own_buffer_is_refused_before_its_graphs_race(make_cfg, tmp_path):
    """Its graphs, one per stream, would all write the one buffer it returns: replayed at once,
    each stream's response could be another's (a race the check catches only by timing)."""
    planted = ("model=linear", "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
               "model.inputs.input.shape=[8]", "model.module._target_=tests.faulty_models.OwnOutput",
               "+model.module.calls=1000000000")
    with pytest.raises(ConfigError, match=r"^model OwnOutput: output 'output' is one buffer of the model's own, the "
                                          r"same in every stream's graph \(streams 0 and 1\)"):
        run_job(make_cfg(*QUICK, *planted, "streams=2"), JobInfo(output_dir=tmp_path / "two"))
    # Eager over several streams: the same race, between forwards (their copies out read it).
    with pytest.raises(ConfigError, match=r"^model OwnOutput: output 'output' is one buffer of the model's own, the "
                                          r"same in every stream's forward \(streams 0 and 1\): run at once"):
        run_job(make_cfg(*QUICK, *planted, "streams=3", "graph=false"), JobInfo(output_dir=tmp_path / "eager"))
    assert not (tmp_path / "eager" / "result.json").exists()
    eager = run_job(make_cfg(*QUICK, "streams=3", "graph=false"), JobInfo(output_dir=tmp_path / "healthy"))
    assert eager["status"] == "ok", eager["reason"]  # a model of new tensors runs over several streams
    one = run_job(make_cfg(*QUICK, *planted, "streams=1"), JobInfo(output_dir=tmp_path / "one"))
    assert one["status"] == "ok", one["reason"]
    # A capture that failed first: the refusal of its eager fallback says why eager was tried.
    syncs = [o.replace("OwnOutput", "OwnOutputSyncs") for o in planted]
    with pytest.raises(ConfigError, match=r"^capture of model OwnOutputSyncs into a CUDA graph failed: .+; its eager "
                                          r"fallback \(capture.fallback_eager=true\) is refused too: model OwnOutputSyncs: "
                                          r"output 'output' is one buffer of the model's own, the same in every stream's forward"):
        run_job(make_cfg(*QUICK, *syncs, "streams=2", "capture.fallback_eager=true"), JobInfo(output_dir=tmp_path / "fb"))
    assert not (tmp_path / "fb" / "result.json").exists()


def test_every_lane_of_32_streams_gets_its_own_stream(make_cfg):
    spec, workload, lanes = _setup(make_cfg, "model=linear", "streams=32", "staging.slots=1")
    assert len({lane.stream.cuda_stream for lane in lanes.lanes}) == 32


def test_the_ceilings_compute_graphs_are_compared_with_eager_before_it_is_timed(make_cfg, tmp_path, monkeypatch):
    """With the copies in the graph the ceiling alone replays the lanes' compute graphs: a wrong
    one went into efficiency_vs_ceiling unseen. Each is replayed once against eager first."""
    planted = ("model=linear", "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
               "model.inputs.input.shape=[8]", "model.module._target_=tests.faulty_models.SkewedComputeGraph",
               "+model.module.calls=1000000000", "+model.module.period=3", "streams=2", "staging.slots=2",
               "capture.copies_in_graph=true")
    from runner import measure

    asked = []  # the phases still pending when each share is taken
    real = measure.Budget.allowance

    def allowance(self, *names):
        asked.append((names, set(self.pending)))
        return real(self, *names)

    monkeypatch.setattr(measure.Budget, "allowance", allowance)
    result = run_job(make_cfg(*QUICK, *planted), JobInfo(output_dir=tmp_path))
    f = result["figures"]
    assert result["status"] == "ok" and f["check_mismatches"] == 0  # the requests' own graphs are right
    # The ceiling not run keeps no share: the phases after the check split the time it would have had.
    after_check = [pending for names, pending in asked if names != ("check",)]
    assert after_check and not any("ceiling" in pending for pending in after_check), asked
    assert f["ceiling_requests_per_s"] is None and f["efficiency_vs_ceiling"] is None
    assert any(w.startswith("the ceiling's compute graph of stream 0 for requests of size ") and "differs from eager"
               in w and w.endswith("the ceiling was not measured") for w in result["warnings"]), result["warnings"]
    assert f["baseline_requests_per_s"] > 0 and f["speedup_vs_baseline"] is not None


@pytest.mark.parametrize("staging", ["direct-3-in-graph", "copy-thread-2"])
def test_an_fp32_input_beside_a_bf16_model_is_captured_and_matches_eager_over_buckets(make_cfg, tmp_path, staging):
    """Two dtypes in one request buffer: each input at its own offset in its own dtype, padded
    per bucket, through graphs on four streams."""
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True)
    (folder / "stepped.yaml").write_text(
        "module: {_target_: tests.io_models.Timestepped, width: 64}\n"
        "batch: [2, 8, 32]\ninputs:\n  x: {shape: [64]}\n  t: {shape: [], dtype: fp32}\n"
    )
    spec, workload, lanes = _setup(make_cfg, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=stepped",
                                   "dtype=bf16", "streams=4", *STAGING[staging])
    ports = _ports(lanes)
    assert len(ports) == 3 * len(lanes.ring)  # a port per slot and bucket
    assert all(p.args["t"].dtype == torch.float32 and p.args["x"].dtype == torch.bfloat16 for p in ports)
    result = _check(spec, workload, lanes, 2_000)
    assert lanes.graph and result.passed and result.padded_requests > 0


def test_a_forward_that_prints_on_every_request_is_told_from_one_that_printed_once(make_cfg, tmp_path):
    """On CUDA the second probe forward tells them apart: a lazy initialisation's notice is no
    cost per request."""
    said = {}
    for name in ("Printing", "PrintOnce"):
        result = run_job(make_cfg(*QUICK, *FAULTY, f"model.module._target_=tests.io_models.{name}",
                                  "~model.module.features", "+model.module.features=8",
                                  "~model.inputs.input", "++model.inputs={x: {shape: [8]}}"),
                         JobInfo(output_dir=tmp_path / name))
        assert result["status"] == "ok", result["reason"]
        said[name] = [w for w in result["warnings"] if " print" in w]
    assert said["Printing"] and said["Printing"][0].startswith("model Printing: its forwards print 18 characters")
    assert said["PrintOnce"] == []
