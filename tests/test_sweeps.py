"""Whole sweeps through the CLI: tables, failures, crashes, Ctrl-C, resume, launchers, devices."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import pytest

from hydra_plugins.runner_launcher.runner_launcher import SlotScheduler, cpu_shares, resolve_devices
from runner.errors import ConfigError
from tests.conftest import cli_env

TINY = ["device=cpu", "model.batch=2", "measure.warmup_ms=0", "measure.min_requests=20",
        "measure.min_duration_ms=10", "measure.repeats=2", "measure.min_repeats=2", "measure.latency_requests=20",
        "measure.check_requests=16"]
# Long enough to be interrupted: neither the budget nor the pass cap ends it.
LONG = ["measure.budget_s=600", "measure.max_pass_ms=600000"]
FAULTY = ["model=linear", "~model.module.in_features", "~model.module.out_features",
          "+model.module.features=8", "model.inputs.input.shape=[8]"]


def sweep(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", "-m", *args], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def table(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "sweep.csv") as f:
        return list(csv.DictReader(f))


def results(sweep_dir: Path) -> dict[int, dict]:
    out = {}
    for path in sweep_dir.glob("*/result.json"):
        out[int(path.parent.name)] = json.loads(path.read_text())
    return out


# --- the scheduling logic, without processes -------------------------------------------------

def test_slot_scheduler_never_gives_a_slot_two_jobs():
    """Simulate n jobs of varied lengths over k fake devices, event by event."""
    for n, k in ((1, 1), (5, 1), (16, 2), (16, 3), (7, 8)):
        durations = [1 + (i * 7) % 5 for i in range(n)]
        scheduler = SlotScheduler([f"gpu{i}" for i in range(k)])
        pending = deque(range(n))
        now, running, spans = 0, [], []
        while pending or running:
            for job, slot in scheduler.assign(pending):
                running.append((now + durations[job], job, slot))
                spans.append((slot, now, now + durations[job], job))
            running.sort()
            end, job, slot = running.pop(0)
            now = end
            scheduler.release(slot)
        assert sorted(j for *_, j in spans) == list(range(n))
        for slot in {s for s, *_ in spans}:
            mine = sorted((a, b) for s, a, b, _ in spans if s == slot)
            assert all(b1 <= a2 for (_, b1), (a2, _) in zip(mine, mine[1:], strict=False)), (n, k, mine)
        assert len({s for s, *_ in spans}) == min(n, k)
        assert now <= sum(durations)  # parallel never takes longer than one after another


def test_scheduler_rejects_double_release_and_duplicate_slots():
    scheduler = SlotScheduler(["0"])
    [(job, slot)] = scheduler.assign(deque(["a"]))
    scheduler.release(slot)
    with pytest.raises(ValueError):
        scheduler.release(slot)
    with pytest.raises(ValueError):
        SlotScheduler(["0", "0"])


def test_device_lists_and_cpu_shares(monkeypatch):
    assert resolve_devices(None) == [None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert resolve_devices(["0", 1]) == ["0", "1"]
    assert resolve_devices("GPU-8a1b") == ["GPU-8a1b"]  # a UUID, as CUDA_VISIBLE_DEVICES takes it
    # Each job's CUDA_VISIBLE_DEVICES is its id: a typo hid every GPU, and the sweep measured the
    # CPU without a word (exit 0); 1.5 failed with "'float' object is not iterable".
    for typo, said in (("cuda:0", "'cuda:0' is no device id"), (True, "'true' is no device id"),
                       (1.5, "'1.5' is no device id"), ("abc", "'abc' is no device id"), (-1, "'-1' is no device id"),
                       ("[0,7]", "'[0' is no device id"), ([0, 7], "no GPU 7 (visible: 0, 1, 2, 3)")):
        with pytest.raises(ConfigError, match=re.escape(f"hydra.launcher.devices: {said}; give GPU ids as")):
            resolve_devices(typo)
    # A quoted "0,1" was one slot seeing both GPUs: jobs one at a time, with no word said.
    assert resolve_devices("0,1") == ["0", "1"] and resolve_devices("3") == ["3"] and resolve_devices(2) == ["2"]
    with pytest.raises(ConfigError, match="distinct device ids"):
        resolve_devices("0,0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert resolve_devices("all") == ["2", "3"]
    with pytest.raises(ConfigError, match="distinct device ids"):
        resolve_devices(["1", "1"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="no CUDA devices are visible here; run without hydra/launcher=gpus"):
        resolve_devices("all")
    with pytest.raises(ConfigError, match=re.escape("hydra.launcher.devices: no GPU 0 (no CUDA devices are visible here)")):
        resolve_devices(0)
    alone = lambda cpu: frozenset({cpu})  # noqa: E731 - one thread per physical core
    assert cpu_shares(3, cpus=range(12), siblings=alone)[0] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert cpu_shares(3, cpus=range(8), siblings=alone)[0] == [[0, 1, 2], [3, 4, 5], [6, 7]]  # every core used once
    assert cpu_shares(4, cpus=[0, 1], siblings=alone)[0] is None  # fewer cores than slots: no pinning


def test_cpu_shares_keep_the_hyperthreads_of_a_core_together():
    """Linux numbers a node's second hyperthreads after its first ones (0-7, then 8-15 as their
    siblings): a plain contiguous split gave one job every core's first half and the other job
    every second half, so the two jobs shared all their physical cores."""
    twins = lambda cpu: frozenset({cpu % 8, cpu % 8 + 8})  # noqa: E731
    shares, how = cpu_shares(2, cpus=range(16), siblings=twins)
    assert shares == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]] and how == "split evenly"
    # The same within a GPU's node.
    shares, _ = cpu_shares(2, cpus=range(16), near=[set(range(16))] * 2, siblings=twins)
    assert shares == [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]]
    # Fewer physical cores than jobs: CPU by CPU, so every job still has one.
    shares, _ = cpu_shares(3, cpus=[0, 8, 1, 9], siblings=twins)
    assert shares == [[0, 1], [8], [9]]
    # A core whose sibling this process may not use is a unit of one.
    shares, _ = cpu_shares(2, cpus=[0, 8, 1, 2], siblings=twins)
    assert shares == [[0, 8], [1, 2]]
    # Every shape: each core used once, no share empty, twins together, shares within one core of even.
    for n in range(2, 33):
        for parts in range(1, n + 1):
            twins_of = lambda cpu, n=n: frozenset({cpu, cpu ^ 1}) & set(range(n))  # noqa: E731
            shares, _ = cpu_shares(parts, cpus=range(n), siblings=twins_of)
            assert sorted(c for share in shares for c in share) == list(range(n)) and all(shares)
            if (n + 1) // 2 >= parts:
                assert all(twins_of(c) <= set(share) for share in shares for c in share)
                assert max(map(len, shares)) - min(map(len, shares)) <= 2
            shares, _ = cpu_shares(parts, cpus=range(n), siblings=lambda cpu: frozenset({cpu}))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1 and sum(map(len, shares)) == n
    # Read from the kernel: every CPU is among its own siblings.
    from hydra_plugins.runner_launcher.topology import core_siblings

    assert all(cpu in core_siblings(cpu) for cpu in os.sched_getaffinity(0))
    assert core_siblings(1 << 20) == frozenset({1 << 20})  # no such CPU: itself alone


def test_cpu_shares_follow_each_gpus_numa_node():
    from functools import partial

    cpu_shares_ = partial(cpu_shares, siblings=lambda cpu: frozenset({cpu}))
    node0, node1 = set(range(0, 8)), set(range(8, 16))
    # Two GPUs per node: each pair splits its own node's cores, never the other node's.
    shares, how = cpu_shares_(4, cpus=range(16), near=[node0, node0, node1, node1])
    assert shares == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]] and "nearest" in how
    # Interleaved order of devices: shares still come from each one's own node.
    shares, _ = cpu_shares_(4, cpus=range(16), near=[node1, node0, node1, node0])
    assert shares == [[8, 9, 10, 11], [0, 1, 2, 3], [12, 13, 14, 15], [4, 5, 6, 7]]
    # Both GPUs on node 1: they share node 1 and leave node 0 alone.
    shares, how = cpu_shares_(2, cpus=range(16), near=[node1, node1])
    assert shares == [[8, 9, 10, 11], [12, 13, 14, 15]] and "nearest" in how
    # Only the cores this process may use count (a container's share).
    shares, _ = cpu_shares_(2, cpus=[0, 1, 8, 9], near=[node0, node1])
    assert shares == [[0, 1], [8, 9]]
    # Every core local to every GPU (one node, as on a VM): the even split, said as such.
    shares, how = cpu_shares_(2, cpus=range(16), near=[node0 | node1, node0 | node1])
    assert shares == [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]] and how == "split evenly"
    # Unknown for one device, overlapping sets, or a node with fewer cores than its GPUs: even split.
    for near, cpus in (([node0, None], range(16)), ([node0, node0 | {8}], range(16)), ([{0}, {0}], range(16))):
        shares, how = cpu_shares_(2, cpus=cpus, near=near)
        assert shares == [list(range(8)), list(range(8, 16))] and how == "split evenly"


class FakeNvml:
    """Just the NVML calls the launcher makes: GPUs in PCI bus order, with names and masks."""

    def __init__(self, gpus):
        self.gpus = gpus  # (uuid, name, mask words)

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return next(g for g in self.gpus if g[0] == uuid)

    def nvmlDeviceGetName(self, handle):
        return handle[1]

    def nvmlDeviceGetCpuAffinity(self, handle, words):
        return handle[2][:words]


def test_devices_and_their_cores_come_from_nvml_without_torch(monkeypatch):
    from hydra_plugins.runner_launcher import topology

    low, high = (0xFF, 0), (0xFF00, 0)  # cores 0-7, cores 8-15
    nvml = FakeNvml([("GPU-a", "H200", low), ("GPU-b", "H200", high), ("GPU-c", "H200", high)])
    monkeypatch.setattr(topology, "_nvml", lambda: nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)  # importing torch here would fail the test
    assert resolve_devices("all") == ["0", "1", "2"]
    assert topology.nearest_cpus(["0", "2"]) == [set(range(8)), set(range(8, 16))]
    assert topology.nearest_cpus(["GPU-b"]) == [set(range(8, 16))]
    assert topology.nearest_cpus(["0", "MIG-x"]) is None  # a MIG instance: not told apart
    assert topology.nearest_cpus(["0", "7"]) is None  # no such GPU
    # GPUs of different models: CUDA's default order (fastest first) may not be NVML's.
    nvml.gpus[2] = ("GPU-c", "L4", high)
    assert topology.nearest_cpus(["0", "1"]) is None
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # unless CUDA numbers them by bus too
    assert topology.nearest_cpus(["0", "1"]) == [set(range(8)), set(range(8, 16))]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")  # what this process may use is what it says
    assert resolve_devices("all") == ["1", "2"]


# --- real sweeps --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_whose_table_cannot_be_written_still_prints_it_and_fails(tmp_path):
    """Hydra turns a callback's exception into a warning: a folder that could not take sweep.md
    lost the table, the failures and the exit code (0 for a sweep with a failed job; review)."""
    (tmp_path / "sw" / "sweep.md").mkdir(parents=True)
    done = sweep([*TINY, *FAULTY, "model.module._target_=tests.faulty_models.FailAfter", "+model.module.calls=5,1000000",
                  "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "sweep: 2 jobs in sw" in done.stdout and "sweep: 1 of 2 jobs did not end ok: #0 failed" in done.stdout
    assert re.search(r"^error: the sweep's table could not be written into sw \(IsADirectoryError: .*\); the results "
                     r"are kept: write it elsewhere with python -m runner\.report sw --out DIR$", done.stderr, re.M), \
        done.stderr[-2000:]
    assert len(results(tmp_path / "sw")) == 2


@pytest.mark.slow
def test_three_job_sweep_with_one_failure_has_three_rows_and_exits_nonzero(tmp_path):
    done = sweep([*TINY, *FAULTY, "model.module._target_=tests.faulty_models.FailAfter",
                  "+model.module.calls=5,1000000,2000000", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    rows = table(tmp_path / "sw")
    assert [r["status"] for r in rows] == ["failed", "ok", "ok"]
    assert "planted failure after 5 forwards" in rows[0]["reason"]
    assert [r["overrides"] for r in rows] == [f"+model.module.calls={c}" for c in (5, 1000000, 2000000)]
    assert "sweep: 1 of 3 jobs did not end ok: #0 failed" in done.stdout
    assert (tmp_path / "sw" / "sweep.md").exists() and (tmp_path / "sw" / "throughput_latency.png").exists()
    # Each job in a process of its own, forked from the preloaded server; the record keeps the
    # sweep's command, not the worker's.
    by_num = results(tmp_path / "sw")
    assert {r["job"]["launcher_start"] for r in by_num.values()} == {"forked"}
    assert len({r["job"]["pid"] for r in by_num.values()}) == 3
    assert all("hydra.sweep.dir=sw" in r["env"]["argv"] and "-m" in r["env"]["argv"] for r in by_num.values())
    assert "forked from a preloaded server" in done.stdout
    # Deletions as written: Hydra's sweeper hands a job ~key=null (which Hydra reads as ~key, but
    # a reader as "delete it if it is null"), in the record and .hydra/overrides.yaml.
    for r in by_num.values():
        assert "~model.module.in_features" in r["overrides"] and not any(o.endswith("=null") for o in r["overrides"])
    assert "=null" not in (tmp_path / "sw" / "0" / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.parametrize("bad, said", [("model.batch=2,x", "error: model.batch=x: use a whole number >= 1"),
                                       ("graph=false,2", "error: graph=2: not a boolean"),
                                       ("model.module._target_=runner.models.mlp.MLP,runner.models.mlp.MPL",
                                        "error: model.module._target_=runner.models.mlp.MPL: cannot be imported "
                                        "(runner.models.mlp has no MPL); did you mean runner.models.mlp.MLP?")])
def test_a_bad_value_anywhere_in_a_sweep_stops_it_before_any_job_runs(tmp_path, bad, said):
    """A typo in the last value of a long sweep is found in a second, not after the other jobs."""
    done = sweep([*TINY, bad, "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(said) and line.endswith("; no job was started)") and "(sweep job #1: " in line
    assert "job 1/2 started" not in done.stdout and not (tmp_path / "sw").exists()


def test_a_boolean_written_as_a_number_in_one_jobs_preset_stops_the_sweep_before_any_job_runs(tmp_path):
    """OmegaConf takes `graph: 2` in a file for true: the launcher reads the chosen presets as
    written before the first job starts, as each job does."""
    presets = tmp_path / "conf" / "experiment"
    presets.mkdir(parents=True)
    (presets / "good.yaml").write_text("# @package _global_\ngraph: false\n")
    (presets / "boolnum.yaml").write_text("# @package _global_\ngraph: 2\n")
    done = sweep([*TINY, "hydra.searchpath=[file://conf]", "experiment=good,boolnum", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: graph: 2 is not a boolean (in the config file experiment/boolnum.yaml); write "
                           "true or false (sweep job #1: ") and line.endswith("; no job was started)"), line
    assert "job 1/2 started" not in done.stdout and not (tmp_path / "sw").exists()


def test_an_output_path_that_reads_as_another_number_stops_a_sweep(tmp_path):
    """The jobs' overrides are written back from what Hydra read (model.outputs=[1.1]): each
    job measured output 1's second leaf for the eleventh. The launcher reads them as typed."""
    done = sweep([*TINY, "model.outputs=[1.10]", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line == ("error: model.outputs=[1.10]: the output path 1.10 reads as 1.1; quote it: "
                    "\"model.outputs=['1.10']\" (no job was started)"), line
    assert not (tmp_path / "sw").exists()


def test_a_sweep_over_presets_that_sweep_is_refused(tmp_path):
    """`-m experiment=sweep_modes,sweep_batch` ran one default job per preset, labelled with its
    name, and dropped both presets' sweeps (exit 0)."""
    done = sweep([*TINY, "experiment=sweep_modes,sweep_batch", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stdout[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: its config defines a sweep of its own (streams=1,2,4,8 graph=false,true "
                           "pinned=false,true), which a sweep over presets does not run: run that preset alone")
    assert "(sweep job #0: " in line and "no job was started" in line
    assert not (tmp_path / "sw").exists()


def test_a_device_index_other_than_0_is_refused_when_each_job_gets_its_own_gpu(tmp_path):
    """Under hydra.launcher.devices a job's process sees its GPU alone, as cuda:0: cuda:1 would
    fail in every job, or land on another job's GPU."""
    args = [*TINY[1:], "seed=1,2", "hydra.launcher.devices=[GPU-fake0,GPU-fake1]", "hydra.sweep.dir=sw"]
    done = sweep([*args, "device=cuda:1"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: device=cuda:1: with hydra.launcher.devices each job sees only its own GPU, "
                                  "as cuda:0; use device=cuda (or auto)")
    assert not (tmp_path / "sw").exists()
    assert sweep([*args, "device=cpu"], tmp_path).returncode == 0  # what does not name a GPU index runs
    # cuda:00 is cuda:0, each job's own GPU: not refused by the launcher (review).
    done = sweep([*args, "device=cuda:00", "hydra.sweep.dir=sw2"], tmp_path)
    assert "with hydra.launcher.devices each job sees only its own GPU" not in done.stderr


@pytest.mark.parametrize("bad, said", [("streamz=1,2", "error: streamz: unknown key"),
                                       ("model.inputs.x.shape=[8],16", "error: model.inputs.x.shape=16: this key takes a list"),
                                       # -1 had been taken: after Ctrl-C no job had time to record itself.
                                       ("hydra.launcher.grace_s=-1", "error: hydra.launcher.grace_s=-1: give the seconds")])
def test_a_sweep_hydra_refuses_leaves_its_folder_as_it_found_it(tmp_path, bad, said):
    """Hydra's sweeper writes multirun.yaml, then checks every job's overrides: a refused sweep
    left a folder holding only that file, or overwrote the multirun.yaml of the sweep before."""
    done = sweep([*TINY, bad, "hydra.sweep.dir=out/day/sw"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith(said), done.stderr[-2000:]
    assert not (tmp_path / "out").exists()  # every folder the launch made, not only the last
    (tmp_path / "mine").mkdir()
    assert sweep([*TINY, bad, "hydra.sweep.dir=mine"], tmp_path).returncode == 2
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())  # the user's: kept
    assert sweep([*TINY, "seed=1", "hydra.sweep.dir=sw"], tmp_path).returncode == 0
    before = (tmp_path / "sw" / "multirun.yaml").read_bytes()
    again = sweep([*TINY, bad, "hydra.sweep.dir=sw"], tmp_path)
    assert again.returncode == 2 and again.stderr.startswith(said)
    assert (tmp_path / "sw" / "multirun.yaml").read_bytes() == before


def test_a_job_hydras_sweeper_refuses_is_named(tmp_path):
    """Hydra's sweeper composes every job before the launcher sees them: its refusal named no
    job (the launcher's own checks do), and only the second of these two is wrong."""
    done = sweep([*TINY, "model=mlp,linear", "model.inputs.x.shape=[8]", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 2, done.stdout[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: model.inputs.x: the model's config has no input named x"), line
    assert line.endswith(" model=linear model.inputs.x.shape=[8]; no job was started)") and "(sweep job #1: " in line
    # In batches, the batch is named as the sweeper's ("its batch" had read as model.batch; walk).
    done = sweep([*TINY, "model=mlp,linear", "model.inputs.x.shape=[8]", "hydra.sweeper.max_batch_size=1",
                  "hydra.sweep.dir=sw2"], tmp_path)
    assert done.returncode == 2 and done.stderr.strip().endswith(
        "; no job of its batch (hydra.sweeper.max_batch_size=1) was started)"), done.stderr[-2000:]


def test_a_sweep_refused_under_another_launcher_leaves_its_folder_as_it_found_it(tmp_path):
    """Only the runner's launcher had put the folder back: under Hydra's basic launcher (and
    joblib's, submitit's) a refused sweep left a folder holding only multirun.yaml, or
    overwrote the multirun.yaml of the sweep before."""
    basic = [*TINY, "hydra/launcher=basic"]
    done = sweep([*basic, "streamz=1,2", "hydra.sweep.dir=out/sw"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: streamz: unknown key"), done.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    assert sweep([*basic, "seed=1", "hydra.sweep.dir=sw"], tmp_path).returncode == 0
    before = (tmp_path / "sw" / "multirun.yaml").read_bytes()
    again = sweep([*basic, "streamz=1,2", "resume=true", "hydra.sweep.dir=sw"], tmp_path)
    assert again.returncode == 2 and (tmp_path / "sw" / "multirun.yaml").read_bytes() == before
    # A new sweep into that folder: each job would find Hydra had rewritten its .hydra/ (and the
    # sweep its multirun.yaml and table) before refusing itself (review): refused before any job.
    kept = {name: (tmp_path / "sw" / name).read_bytes() for name in ("0/result.json", "0/.hydra/overrides.yaml")}
    other = sweep([*basic, "seed=3,4", "hydra.sweep.dir=sw"], tmp_path)
    assert other.returncode == 2, other.stderr[-2000:]
    assert other.stderr.startswith("error: hydra.sweep.dir=sw holds an earlier sweep (multirun.yaml): with "
                                   "hydra/launcher=basic its jobs' folders would be rewritten"), other.stderr[-2000:]
    assert (tmp_path / "sw" / "multirun.yaml").read_bytes() == before
    assert {name: (tmp_path / "sw" / name).read_bytes() for name in kept} == kept


def test_a_launch_that_fails_after_a_job_ran_keeps_the_sweeps_multirun_yaml(tmp_path):
    """A launcher that does not say when its jobs start may fail after some ran (a Ctrl-C in
    Hydra's basic launcher): the multirun.yaml describing them stays."""
    from runner.record import sweep_pending, undo_pending_sweep

    folder = tmp_path / "sw"
    sweep_pending(folder)
    folder.mkdir()
    (folder / "multirun.yaml").write_text("this sweep\n")
    (folder / "0").mkdir()
    (folder / "0" / "result.json").write_text("{}")
    undo_pending_sweep()
    assert (folder / "multirun.yaml").read_text() == "this sweep\n"
    sweep_pending(folder)  # a resumed sweep whose job rewrote its result
    (folder / "multirun.yaml").write_text("the resumed sweep\n")
    time.sleep(0.01)
    (folder / "0" / "result.json").write_text('{"again": 1}')
    undo_pending_sweep()
    assert (folder / "multirun.yaml").read_text() == "the resumed sweep\n"
    sweep_pending(folder)  # refused before any job: put back
    (folder / "multirun.yaml").write_text("refused\n")
    undo_pending_sweep()
    assert (folder / "multirun.yaml").read_text() == "the resumed sweep\n"


def test_the_check_before_the_sweep_resolves_hydra_interpolations_as_the_jobs_do(tmp_path):
    """${hydra:job.num} is valid in a job; checked in the launcher without the job's Hydra
    config, it was refused ("HydraConfig was not set")."""
    done = sweep([*TINY, "model.name=mlp_${hydra:job.num}", "seed=1,2", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [results(tmp_path / "sw")[i]["model"] for i in (0, 1)] == ["mlp_0", "mlp_1"]


def test_the_sweeps_own_process_does_not_import_torch():
    """The launcher's process runs no job: importing torch there (seconds) would only delay the
    sweep, and in parallel sweeps run beside jobs that measure."""
    code = ("import sys, runner.app, runner.callbacks, runner.report, runner.record, "
            "hydra_plugins.runner_launcher.runner_launcher; print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_without_the_fork_server_each_job_starts_a_fresh_interpreter(tmp_path):
    done = sweep([*TINY, "seed=1,2", "hydra.launcher.fork_server=false", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    by_num = results(tmp_path / "sw")
    assert [by_num[i]["status"] for i in (0, 1)] == ["ok", "ok"]
    assert {r["job"]["launcher_start"] for r in by_num.values()} == {"fresh interpreter"}
    assert all("hydra.sweep.dir=sw" in r["env"]["argv"] for r in by_num.values())
    # Started afresh, each job paid the imports the server would have saved it.
    assert all(r["job"]["phases_s"]["startup"] > 0 for r in by_num.values())


@pytest.mark.slow
def test_a_killed_job_costs_only_itself_and_resume_reruns_only_it(tmp_path):
    # A search path of the user's (how a model of their own is plugged in): the launcher's record
    # of the dead job had lacked it, and resume then refused the folder as another job's.
    (tmp_path / "conf").mkdir()
    args = [*TINY, *FAULTY, "model.module._target_=tests.faulty_models.DieAfter",
            "+model.module.calls=1000000,60,2000000", "hydra.sweep.dir=sw", f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    done = sweep(args, tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    by_num = results(tmp_path / "sw")
    assert [by_num[i]["status"] for i in range(3)] == ["ok", "failed", "ok"]
    assert by_num[1]["reason"].startswith("the job's process died: killed by SIGKILL")
    # Its log says so too (it ended where the process died), and the others' how they ended.
    assert (tmp_path / "sw" / "1" / "runner.log").read_text().splitlines()[-1].endswith(
        "[runner] status: FAILED: the job's process died: killed by SIGKILL (exit -9); nothing else in the sweep was affected")
    assert "status: ok" in (tmp_path / "sw" / "0" / "runner.log").read_text()
    assert by_num[1]["mode"] == "eager x1 pageable direct/1" and by_num[1]["model"] == "DieAfter"  # what it was running
    # Its method is the CPU's (it had kept the CUDA wording), and its start the launcher's (it had
    # been the record's own time, equal to its end; review).
    assert by_num[1]["method"] == by_num[0]["method"]
    dead = by_num[1]["job"]
    assert dead["started_unix"] < dead["finished_unix"] and dead["wall_time_s"] > 0
    assert by_num[0]["job"]["finished_unix"] <= dead["started_unix"] + 1.0  # it began after job 0 ended
    assert by_num[1]["job"]["config_origin"] == by_num[0]["job"]["config_origin"] == [
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]"]
    assert by_num[2]["figures"]["throughput_requests_per_s"] > 0  # the job after the crash ran fully
    assert [r["status"] for r in table(tmp_path / "sw")] == ["ok", "failed", "ok"]

    mtimes = {i: (tmp_path / "sw" / str(i) / "result.json").stat().st_mtime_ns for i in range(3)}
    again = sweep([*args, "resume=true"], tmp_path)
    assert again.returncode == 1
    after = {i: (tmp_path / "sw" / str(i) / "result.json").stat().st_mtime_ns for i in range(3)}
    assert after[0] == mtimes[0] and after[2] == mtimes[2]  # ok results: skipped
    assert after[1] != mtimes[1]  # the crashed job ran again (and died again)
    # The launcher's line for a kept job says it was kept, not "ok in 0.2s" as if measured.
    assert "#0: kept (ok, resume=true) in" in again.stdout and "#1: failed in" in again.stdout, again.stdout
    # No time left is guessed from kept jobs alone (their 0.2 s is not the pace of the others);
    # once a job has run, its pace is.
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^\[runner\] job \d/3 #(\d): .*$", again.stdout, re.M)}
    assert "left" not in lines["0"] and "left" in lines["1"], again.stdout
    # Its label is what sets it apart from the others, not that it was resumed.
    assert [r["overrides"] for r in table(tmp_path / "sw")] == [f"+model.module.calls={c}" for c in (1000000, 60, 2000000)]


@pytest.mark.slow
def test_a_second_ctrl_c_stops_the_jobs_now_and_still_says_where_everything_is(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=60000", "seed=1,2", *LONG,
         "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "sw" / "0").glob("*.log")):  # job 0 is running
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.2)  # the launcher is waiting for the job to record itself
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert "Ctrl-C again: stop now" in err and "stopping the running job(s) now" in err, err[-2000:]
    # What the second Ctrl-C used to cut off:
    assert "sweep interrupted; finished results are kept in sw" in err and "resume: the same command" in err
    by_num = results(tmp_path / "sw")
    assert by_num[0]["status"] == "interrupted" and 1 not in by_num


@pytest.mark.slow
def test_a_sweep_started_with_sigint_ignored_runs_its_jobs_so_too(tmp_path):
    """A shell starts background commands (`runner -m ... &`) with SIGINT ignored: a SIGINT to
    the group then ends neither the sweep nor any of its jobs (the jobs used to record
    themselves as interrupted while the launcher went on)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=1500", "measure.max_pass_ms=600000",
         "seed=1,2", "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "sw" / "0").glob("*.log")):  # job 0 is running
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-2000:]
    assert [r["status"] for r in results(tmp_path / "sw").values()] == ["ok", "ok"]


def _sweep_measuring_its_second_job(tmp_path) -> subprocess.Popen:
    """A two-job sweep in its own session, once job 0 is done and job 1 has measured a while."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=10,60000", *LONG, "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until job 0 is done and job 1 is measuring
        if (tmp_path / "sw" / "0" / "result.json").exists() and list((tmp_path / "sw" / "1").glob("*.log")):
            break
        time.sleep(0.2)
    time.sleep(3)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("to", ["launcher", "group"])
def test_sigterm_to_the_launcher_stops_the_sweep_as_ctrl_c_does(tmp_path, to):
    """`kill <launcher>` killed the launcher at once and left its job measuring, orphaned, for
    seconds after. SIGTERM is a Ctrl-C now: the running job records what it measured and stops,
    finished results are kept. `timeout` and schedulers send SIGTERM to every process of the
    sweep: the job's process then died at once, and the launcher recorded it with nothing
    measured ("before the job wrote its result"). The job records itself, and says SIGTERM."""
    proc = _sweep_measuring_its_second_job(tmp_path)
    if to == "launcher":
        os.kill(proc.pid, signal.SIGTERM)  # the launcher alone, as `kill` sends it
    else:
        os.killpg(proc.pid, signal.SIGTERM)  # every process of the sweep, as `timeout` sends it
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    by_num = results(tmp_path / "sw")
    assert by_num[0]["status"] == "ok" and by_num[1]["status"] == "interrupted"
    assert by_num[1]["reason"].startswith("interrupted (SIGTERM) before the job finished"), by_num[1]["reason"]
    assert "[runner] interrupted (SIGTERM): waiting" in err
    assert "Traceback" not in err and "resume: the same command with resume=true" in err
    assert _ended(by_num[1]["job"]["pid"])  # the job is gone with its sweep, not left measuring


def _ended(pid: int) -> bool:
    """Whether the process has ended: gone, or a zombie not yet reaped (a job whose fork server
    the same SIGTERM ended is reaped by init, a moment later)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_timeout_s_int_is_one_interrupt_not_a_second_ctrl_c(tmp_path):
    """`timeout -s INT` signals the launcher, then its whole group: the launcher again. Taken for
    a second Ctrl-C, it stopped the running job at once ("stopping the running job(s) now"),
    which then lost what it had measured. Here the launcher's echo comes 30 ms after."""
    proc = _sweep_measuring_its_second_job(tmp_path)
    os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.03)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "stopping the running job(s) now" not in err and "[runner] interrupted (Ctrl-C): waiting" in err, err[-2000:]
    by_num = results(tmp_path / "sw")
    assert by_num[0]["status"] == "ok" and by_num[1]["status"] == "interrupted"
    assert "before the job wrote its result" not in by_num[1]["reason"]  # the job recorded itself


@pytest.mark.slow
def test_ctrl_c_keeps_finished_results_and_marks_the_running_job(tmp_path):
    proc = _sweep_measuring_its_second_job(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err  # neither the job's process nor the launcher prints one
    by_num = results(tmp_path / "sw")
    assert by_num[0]["status"] == "ok" and by_num[0]["figures"]["throughput_requests_per_s"] > 0
    assert by_num[1]["status"] == "interrupted"
    assert "resume: the same command with resume=true" in err
    assert not list((tmp_path / "sw").rglob("*.tmp"))  # no half-written file

    # Resume, and interrupt again while job 0 (already ok) is being skipped: it stays ok.
    ok_mtime = (tmp_path / "sw" / "0" / "result.json").stat().st_mtime_ns
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=10,60000", *LONG, "hydra.sweep.dir=sw",
         "resume=true"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    for line in proc.stdout:  # Ctrl-C as soon as job 0's process has started
        if "started: #0" in line:
            break
    time.sleep(0.3)  # the launcher waits on the job; the job is still starting up
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert (tmp_path / "sw" / "0" / "result.json").stat().st_mtime_ns == ok_mtime
    assert results(tmp_path / "sw")[0]["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("delay_s", [0.5, 1.5, 2.5])
def test_ctrl_c_while_the_sweep_starts_prints_no_traceback(tmp_path, delay_s):
    """Early Ctrl-C: while the fork server imports, or while a job is being sent to it (a job
    half sent would die in the server with a traceback, or run on unseen)."""
    # Passes of 3 s: the sweep outlasts every delay (a Ctrl-C after it has ended, while the
    # interpreter shuts down, meets the default disposition and tests nothing of ours).
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=3000", "measure.budget_s=60",
         "measure.max_pass_ms=60000", "seed=1,2", "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    time.sleep(delay_s)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "Traceback" not in out
    assert not list(tmp_path.rglob("*.tmp"))
    for result in results(tmp_path / "sw").values():  # a job that started is on record
        assert result["status"] in ("interrupted", "ok")


@pytest.mark.slow
def test_jobs_spread_over_fake_devices_one_job_per_device_at_a_time(tmp_path):
    done = sweep([*TINY, "measure.min_duration_ms=300", "seed=1,2,3,4",
                  "hydra.launcher.devices=[GPU-fake0,GPU-fake1]", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    by_num = results(tmp_path / "sw")
    assert len(by_num) == 4 and all(r["status"] == "ok" for r in by_num.values())
    spans = [(r["job"]["launcher_device"], r["job"]["started_unix"], r["job"]["finished_unix"]) for r in by_num.values()]
    assert {d for d, _, _ in spans} == {"GPU-fake0", "GPU-fake1"}
    for r in by_num.values():
        assert r["env"]["cuda_visible_devices"] == r["job"]["launcher_device"]
        # Its share of the cores, and as many torch threads (set in the forked job: the server
        # imported torch before the job's share was known).
        cpus = r["job"]["launcher_cpus"].split(",")
        assert r["env"]["torch_threads"] == len(cpus)
        assert r["job"]["parallel_devices"] == 2  # on record: the other device's jobs ran beside it
    for device in ("GPU-fake0", "GPU-fake1"):
        mine = sorted((a, b) for d, a, b in spans if d == device)
        assert all(b1 <= a2 for (_, b1), (a2, _) in zip(mine, mine[1:], strict=False))
    # The two devices worked at the same time.
    first = sorted(spans, key=lambda s: s[1])
    assert first[1][1] < first[0][2]
    assert (tmp_path / "sw" / "0" / "console.log").exists()
    # The launcher says how it cut the cores; the table says which device ran each job.
    assert "each job pinned to its device's share of the cores (split evenly)" in done.stdout
    rows = table(tmp_path / "sw")
    assert [r["gpu"] for r in rows] == [by_num[int(r["job"])]["job"]["launcher_device"] for r in rows]
    md = (tmp_path / "sw" / "sweep.md").read_text()
    assert md.splitlines()[0].startswith("| job | overrides | gpu |")
    # They ran on the CPU: the note does not call the device ids GPUs.
    assert "its jobs ran side by side on the CPU, one per entry of hydra.launcher.devices (GPU-fake0 (2 jobs); " \
           "GPU-fake1 (2 jobs)), each on its own share of the host's cores" in md


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "submitit_local", "joblib"])
def test_other_launchers_end_in_the_same_table(tmp_path, launcher):
    plugin = {"submitit_local": "hydra_submitit_launcher", "joblib": "hydra_joblib_launcher"}.get(launcher)
    if plugin:
        pytest.importorskip(f"hydra_plugins.{plugin}")
    extra = {"submitit_local": ["hydra.launcher.timeout_min=10"], "joblib": ["hydra.launcher.n_jobs=1"]}.get(launcher, [])
    done = sweep([*TINY, "graph=false,true", f"hydra/launcher={launcher}", *extra, "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = table(tmp_path / "sw")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    # As the user wrote them, whichever launcher: Hydra's sweepers hand a job graph=False.
    assert [r["overrides"] for r in rows] == ["graph=false", "graph=true"]
    # What each job ran beside: submitit's local launcher starts both jobs at once.
    expected = {"basic": 1, "submitit_local": 2, "joblib": 1}[launcher]
    warned = [line for line in done.stderr.splitlines() if "timings interfere" in line]
    assert warned == (["warning: hydra/launcher=submitit_local runs all 2 jobs at once: their timings interfere with "
                       "each other; for figures you compare, use the default runner launcher (one job at a time)"]
                      if expected > 1 else [])
    assert [json.loads((tmp_path / "sw" / str(i) / "result.json").read_text())["job"]["concurrent_jobs"]
            for i in (0, 1)] == [expected, expected]
    # The table names them as jobs whose host other work shared (sweep.csv's host_shared had
    # been empty for one of the two: only its start found the host busy).
    from runner.record import host_shared

    said = [host_shared(json.loads((tmp_path / "sw" / str(i) / "result.json").read_text())["warnings"]) for i in (0, 1)]
    assert ["ran beside other jobs of its sweep" in s for s in said] == [expected > 1] * 2


@pytest.mark.slow
def test_resuming_a_sweep_into_the_folders_of_another_is_refused_and_reported(tmp_path):
    first = sweep([*TINY, "seed=1,2", "hydra.sweep.dir=sw"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    files = ["0/result.json", "1/result.json", "sweep.md", "sweep.csv", "multirun.yaml"]
    before = {name: (tmp_path / "sw" / name).read_bytes() for name in files}
    # The runner's launcher refuses before any job starts: one line, exit 2, nothing rewritten
    # (the table went on listing the earlier, ok results as failed).
    again = sweep([*TINY, "seed=3,4", "resume=true", "hydra.sweep.dir=sw"], tmp_path)
    assert again.returncode == 2, again.stdout[-2000:]
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("error: resume=true:") and "holds a result for other overrides (there: seed=1; this job: seed=3)" in line
    assert "(sweep job #0: " in line and "no job was started" in line
    assert {name: (tmp_path / "sw" / name).read_bytes() for name in files} == before
    assert "job 1/2 started" not in again.stdout
    # A launcher without that check (Hydra's basic one): each job refuses, and says why.
    basic = sweep([*TINY, "seed=3,4", "resume=true", "hydra/launcher=basic", "hydra.sweep.dir=sw"], tmp_path)
    assert basic.returncode == 1, basic.stdout[-2000:]
    rows = table(tmp_path / "sw")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all("resume=true" in r["reason"] and "other overrides" in r["reason"] for r in rows)
    assert {name: (tmp_path / "sw" / name).read_bytes() for name in files[:2]} == {n: before[n] for n in files[:2]}


@pytest.mark.slow
def test_resuming_a_sweep_whose_settings_changed_is_refused_before_any_job(tmp_path):
    """The same overrides, other settings (the user's model file edited): each job refused
    itself, after Hydra had rewritten its .hydra/ and the sweep its multirun.yaml and table,
    so runner.report read the kept results as failed and .hydra/ described settings they were
    not measured with. Refused before any job now, the folder as it was."""
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    text = ("module: {_target_: torch.nn.Linear, in_features: 8, out_features: 8}\nbatch: 2\n"
            "inputs: {input: {shape: [8]}}\n")
    (conf / "mine.yaml").write_text(text)
    args = [*TINY, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=mine", "seed=1,2", "hydra.sweep.dir=sw"]
    assert sweep(args, tmp_path).returncode == 0
    files = ["0/result.json", "0/.hydra/config.yaml", "1/.hydra/overrides.yaml", "sweep.md", "sweep.csv", "multirun.yaml"]
    before = {name: (tmp_path / "sw" / name).read_bytes() for name in files}
    (conf / "mine.yaml").write_text(text.replace("out_features: 8", "out_features: 4"))
    again = sweep([*args, "resume=true"], tmp_path)
    assert again.returncode == 2, again.stdout[-2000:]
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("error: resume=true: ") and "measured with other settings (model.module.out_features: 8 there, 4 now" in line
    assert "no job was started" in line
    assert {name: (tmp_path / "sw" / name).read_bytes() for name in files} == before
    assert not list((tmp_path / "sw").glob("*/resume_conflict.txt"))


def test_two_jobs_that_would_share_a_folder_are_refused_before_any_starts(tmp_path):
    done = sweep([*TINY, "seed=1,2", "hydra.sweep.dir=sw", "hydra.sweep.subdir=same"], tmp_path)
    assert done.returncode == 2, done.stdout[-2000:]
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: sweep jobs #0 and #1 would both write into sw/same: make hydra.sweep.subdir "
                           "tell the jobs apart"), line
    assert "started:" not in done.stdout and not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_swept_booleans_read_as_the_user_wrote_them(tmp_path):
    done = sweep([*TINY, "graph=false,true", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["overrides"] for r in table(tmp_path / "sw")] == ["graph=false", "graph=true"]  # not graph=False
    by_num = results(tmp_path / "sw")
    assert [by_num[n]["overrides"][-1] for n in sorted(by_num)] == ["graph=false", "graph=true"]
    assert "started: #0 " in done.stdout and "graph=false" in done.stdout and "graph=False" not in done.stdout


@pytest.mark.slow
def test_a_sweep_never_writes_over_nor_lists_an_earlier_sweeps_results(tmp_path):
    first = sweep([*TINY, "seed=1,2,3", "hydra.sweep.dir=sw"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    files = ["0/result.json", "1/result.json", "2/result.json", "0/.hydra/overrides.yaml", "sweep.csv", "multirun.yaml"]
    before = {name: (tmp_path / "sw" / name).read_bytes() for name in files}
    # Other overrides in the same folders, without resume=true: refused, nothing rewritten.
    other = sweep([*TINY, "seed=4,5,6", "hydra.sweep.dir=sw"], tmp_path)
    assert other.returncode == 2, other.stdout[-2000:]
    [line] = other.stderr.strip().splitlines()
    assert "sw/0 holds a result for other overrides (there: seed=1; this job: seed=4)" in line, line
    assert "no job was started" in line
    # A shorter sweep whose jobs match: the earlier sweep's job #2 would join its table.
    shorter = sweep([*TINY, "seed=1,2", "hydra.sweep.dir=sw"], tmp_path)
    assert shorter.returncode == 2, shorter.stdout[-2000:]
    [line] = shorter.stderr.strip().splitlines()
    assert "holds results of job(s) #2 from an earlier sweep, beyond this sweep's 2" in line, line
    assert {name: (tmp_path / "sw" / name).read_bytes() for name in files} == before
    assert "started:" not in other.stdout + shorter.stdout


def test_the_targets_check_imports_no_package_the_server_has_not(tmp_path, monkeypatch):
    """A target in a package the server has not imported (transformers: seconds) is only looked
    for; one in a loaded package, or in a package that does not exist, is located in full."""
    import multiprocessing

    from hydra_plugins.runner_launcher.worker import check_targets

    package = tmp_path / "heavy_models_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').close()\nclass Net: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    receiver, sender = multiprocessing.Pipe(duplex=False)
    check_targets(["heavy_models_pkg.Nett", "torch.nn.Linearr", "torch.nn.Linear", "heavy_modls_pkg.Net"], sender)
    heavy, torch_typo, fine, missing = receiver.recv()
    assert heavy is None and not (tmp_path / "imported").exists()  # its own job will import it
    assert torch_typo.startswith("model.module._target_=torch.nn.Linearr: cannot be imported (torch.nn has no Linearr)")
    assert fine is None
    assert missing.startswith("model.module._target_=heavy_modls_pkg.Net: cannot be imported (No module named")


def test_the_targets_check_steps_aside_when_the_fork_server_cannot_start_it():
    """Then each job imports its own target, as without the server (it raised AssertionError
    from joining a process that never started)."""
    import multiprocessing

    from omegaconf import OmegaConf

    from hydra_plugins.runner_launcher.runner_launcher import RunnerLauncher, _Job

    class Broken:
        pid = None

        def start(self) -> None:
            raise OSError("the server is gone")

    class Context:
        Pipe = staticmethod(multiprocessing.Pipe)

        @staticmethod
        def Process(**kwargs):  # noqa: N802 - multiprocessing's name
            return Broken()

    launcher = RunnerLauncher()
    launcher.context = Context()
    config = OmegaConf.create({"model": {"module": {"_target_": "torch.nn.Linearr"}}})
    launcher._refuse_bad_targets([_Job(0, ["x=1"], config, Path("sw/0"))])  # no error: the job will check


def test_a_ctrl_c_while_the_fork_server_starts_is_held_not_lost(monkeypatch):
    """While the fork server starts, the launcher holds SIGINT blocked (so that the server
    starts with it blocked and prints no traceback from its imports): a Ctrl-C meanwhile still
    reaches the launcher as KeyboardInterrupt. Ignored instead, it was lost and the sweep ran
    on to its end."""
    from multiprocessing import forkserver

    from hydra_plugins.runner_launcher import runner_launcher

    def ensure_running() -> None:  # the Ctrl-C lands while the server starts
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)

    monkeypatch.setattr(forkserver, "ensure_running", ensure_running)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        runner_launcher.fork_context()
    assert signal.getsignal(signal.SIGINT) is handler  # the launcher is as it was
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    # ...and holds nothing back any more: the Ctrl-C had come before the section's count went
    # down, and a SIGTERM after it (SIGINT ignored) was held back for good.
    assert runner_launcher._deferred == [0, False]


@pytest.mark.slow
def test_ctrl_c_reaches_a_job_in_a_fresh_interpreter_which_keeps_its_repeats(tmp_path):
    """Jobs are started while the launcher holds SIGINT back, and a new process inherits that
    mask: a job that kept it ignored Ctrl-C, was killed after the grace period and lost every
    repeat it had finished. It must record itself as interrupted, with its repeats, at once."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, "measure.min_duration_ms=300", "measure.repeats=1000",
         "measure.stdrel=0", *LONG, "seed=1", "hydra.launcher.fork_server=false", "hydra.sweep.dir=sw"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # Ctrl-C once the job has finished two repeats
        if line.startswith("repeat 2 "):
            break
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 10  # not the launcher's 15 s grace, then a kill
    [result] = results(tmp_path / "sw").values()
    assert result["status"] == "interrupted" and result["job"]["launcher_start"] == "fresh interpreter"
    assert len(result["figures"]["throughput_requests_per_s_repeats"]) >= 2


def test_a_job_that_died_before_the_ctrl_c_is_recorded_as_died_not_interrupted(monkeypatch, capsys):
    """A job killed (SIGKILL) just before a Ctrl-C was recorded as "interrupted", its signal
    lost; one still running is interrupted as before."""
    from types import SimpleNamespace

    from hydra_plugins.runner_launcher.runner_launcher import RunnerLauncher, _Job

    sent = []

    def job(idx: int, code):
        process = SimpleNamespace(returncode=code, pid=1000 + idx, send_signal=lambda sig: sent.append((idx, sig)),
                                  wait=lambda timeout=None: code, kill=lambda: None)
        return _Job(idx=idx, overrides=[], config=None, output_dir=None, process=process)  # type: ignore[arg-type]

    launcher = RunnerLauncher(grace_s=0.1)
    finished = {}
    monkeypatch.setattr(launcher, "_finish", lambda j, code, interrupted=False, how="Ctrl-C":
                        finished.setdefault(j.idx, (interrupted, how)))
    monkeypatch.setattr(launcher, "_stop", lambda running: None)
    monkeypatch.setattr("time.sleep", lambda s: None)
    launcher._interrupt({1: job(0, -9), 2: job(1, None), 3: job(2, 130)})
    assert finished == {0: (False, "Ctrl-C"), 1: (True, "Ctrl-C"), 2: (True, "Ctrl-C")}
    assert sent == [(1, signal.SIGINT)]  # to the one still running
    # A sweep stopped by SIGTERM sends its running jobs SIGTERM, and their records say so.
    finished.clear()
    sent.clear()
    launcher._interrupt({2: job(1, None), 3: job(2, -signal.SIGTERM)}, how="SIGTERM")
    # A job the sweep's own SIGTERM ended during its imports (Python's default then) was stopped
    # with the sweep, not a crash; after a Ctrl-C, a SIGTERM that ended a job came from elsewhere.
    assert finished == {1: (True, "SIGTERM"), 2: (True, "SIGTERM")} and sent == [(1, signal.SIGTERM)]
    finished.clear()
    launcher._interrupt({3: job(2, -signal.SIGTERM)})
    assert finished == {2: (False, "Ctrl-C")}


def test_a_sweep_started_in_the_background_stops_on_sigterm(monkeypatch):
    """Started with `&` in a script, the launcher ignores SIGINT: the SIGTERM it sent on to
    itself as SIGINT was dropped, and the sweep ran on past `kill` and `timeout` (only SIGKILL
    ended it). Raised at once, or where a held-back Ctrl-C would arrive."""
    from hydra_plugins.runner_launcher.runner_launcher import _ctrl_c_deferred, _sigterm_as_ctrl_c

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _sigterm_as_ctrl_c() as stopped_by:
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
            assert stopped_by == ["SIGTERM"]
        with _sigterm_as_ctrl_c():
            reached_the_end = False
            with pytest.raises(KeyboardInterrupt):
                with _ctrl_c_deferred():  # a job being started: held back until it is
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.2)
                    reached_the_end = True
            assert reached_the_end
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_repeated_sigterm_does_not_stop_the_jobs_at_once():
    """`timeout` sends SIGTERM twice, to the launcher and then to its group: the second was taken
    for "Ctrl-C again: stop now", and the jobs were killed before they recorded their repeats.
    The first SIGTERM is the launcher's Ctrl-C; a repeated one is ignored; a Ctrl-C still counts."""
    from hydra_plugins.runner_launcher.runner_launcher import _sigterm_as_ctrl_c

    with _sigterm_as_ctrl_c() as stopped_by:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
        assert stopped_by == ["SIGTERM"]
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: no KeyboardInterrupt
        time.sleep(0.2)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)


def test_a_second_sweep_into_a_folder_in_use_is_refused(tmp_path):
    """Two sweeps started into one folder at once overwrote each other's results and table. The
    folder holds its sweep's pid while it runs: another sweep is refused, a stale pid (its sweep
    was killed) is taken over, and a later batch of the same sweep goes on."""
    from hydra_plugins.runner_launcher.runner_launcher import SWEEP_LOCK, _hold_sweep_folder
    from runner.errors import ConfigError

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / SWEEP_LOCK).write_text(f"{other.pid}\n")
        with pytest.raises(ConfigError, match=rf"another sweep \(pid {other.pid}\) is running into this folder"):
            _hold_sweep_folder(tmp_path)
    finally:
        other.kill()
        other.wait()
    _hold_sweep_folder(tmp_path)  # its process is gone: stale
    assert (tmp_path / SWEEP_LOCK).read_text().strip() == str(os.getpid())
    _hold_sweep_folder(tmp_path)  # this sweep's own next batch


def test_a_later_job_in_the_launchers_own_process_does_not_count_the_ones_before_as_its_startup(tmp_path):
    """Under Hydra's basic launcher every job runs in one process: job 2's startup had read 11.8 s,
    the jobs before it included (review). A later job's startup is the time since the last ended."""
    done = sweep([*TINY, "hydra/launcher=basic", "measure.min_duration_ms=1500,10", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    by_num = results(tmp_path / "sw")
    first, second = (by_num[i]["job"] for i in (0, 1))
    assert first["phases_s"]["startup"] > 0 and 0 < second["phases_s"]["startup"] < 1.0, (first, second)
    assert first["pid"] == second["pid"] and first["wall_time_s"] > 1.0  # one process, and a long job before


@pytest.mark.slow
def test_a_job_that_dies_under_joblib_says_the_launcher_ended_the_sweep(tmp_path):
    """Under joblib one job's death ends the sweep (loky's error, cut mid-sentence, named neither
    the death nor where the finished jobs are; review): the line says both."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    done = sweep([*TINY, *FAULTY, "hydra/launcher=joblib",
                  "model.module._target_=tests.faulty_models.DieAfter,tests.faulty_models.Healthy",
                  "+model.module.calls=60", "hydra.sweep.dir=sw"], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert "; a job's process died, and under hydra/launcher=joblib that ends the sweep (joblib's also ends the jobs " \
           "running beside it); the jobs that finished are kept: python -m runner.report sw for their table" in line, line
