"""The real command line, started as subprocesses: runs, sweeps and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import cli_env

pytestmark = pytest.mark.slow

QUICK = ["measure=quick", "device=cpu", "model.batch=2"]


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd, env=env or cli_env(), capture_output=True, text=True, timeout=timeout,
    )


def import_hook_env(tmp_path: Path, module: str, action: str) -> dict:
    """The CLI's environment with a sitecustomize that runs `action` (one statement) when the
    CLI's process is about to import `module`: what happens at that moment, made certain."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import importlib.abc, logging, sys\n"
        "class Hook(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        f"            {action}\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
    )
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(hook), env["PYTHONPATH"]])
    return env


def results_under(path: Path) -> list[Path]:
    return sorted(path.rglob("result.json"))


def test_single_run_prints_a_table_and_ends_with_the_json_result(tmp_path):
    done = run_cli(QUICK, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result["status"] == "ok" and result["effective"]["device"] == "cpu"
    assert any(line.startswith("  runner ") for line in lines)
    [path] = results_under(tmp_path / "outputs" / "runs")
    assert json.loads(path.read_text())["figures"] == result["figures"]
    hydra_dir = path.parent / ".hydra"
    assert (hydra_dir / "config.yaml").exists() and (hydra_dir / "overrides.yaml").exists()


def test_default_run_on_a_machine_without_gpu_says_so_in_one_line(tmp_path):
    done = run_cli(["measure=quick", "model.batch=2"], tmp_path)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: graphs, streams")]
    assert notes and "need CUDA" in notes[0]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["effective"]["graph"] is False and result["effective"]["streams"] == 1
    assert result["config"]["graph"] is True and result["config"]["streams"] == 4


FAULTY = ["model=linear", "~model.module.in_features", "~model.module.out_features",
          "+model.module.features=8", "model.inputs.input.shape=[8]"]

# (arguments, what the one line must start with after "error: ")
BAD_INPUTS = {
    "streams-type": (["streams=abc"], "streams: Value 'abc'"),
    "streams-zero": (["streams=0"], "streams=0: out of range"),
    "graph-type": (["graph=maybe"], "graph: Value 'maybe' is not a valid bool"),
    "pinned-type": (["pinned=perhaps"], "pinned: Value 'perhaps' is not a valid bool"),
    "tf32-type": (["tf32=yes please"], "tf32: Value 'yes please' is not a valid bool"),
    "baseline-type": (["baseline=sometimes"], "baseline: Value 'sometimes'"),
    "check-type": (["check=x"], "check: Value 'x'"),
    "resume-type": (["resume=x"], "resume: Value 'x'"),
    "profile-type": (["profile=x"], "profile: Value 'x'"),
    "dtype-value": (["dtype=fp64"], "dtype: Invalid value 'fp64', expected one of [fp32, bf16, fp16]"),
    "timestamps-value": (["timestamps=xml"], "timestamps: Invalid value 'xml'"),
    "seed-type": (["seed=1.5"], "seed: Value '1.5'"),
    "seed-range": (["seed=-1"], "seed=-1: out of range"),
    "device-value": (["device=gpu"], "device='gpu': not a device; use auto, cpu, cuda or cuda:N"),
    "device-missing": (["device=cuda:3"], "device=cuda:3:"),
    "unknown-key": (["foo=1"], "foo: unknown key"),
    "unknown-key-plus": (["+foo=1"], "foo: unknown key"),
    "unknown-model": (["model=nope"], "model=nope: no such model option; choose one of: bert, encoder, gpt2, "
                      "linear, mlp, mlp_wide, tiny_llm"),
    "unknown-measure": (["measure=nope"], "measure=nope: no such measure option"),
    # Hydra's words for command lines it cannot take, several as plain ValueErrors (exit 1 and the
    # traceback hint): each is one line with the runner's fix.
    "group-null": (["experiment=null"], "a config group (model, measure, experiment, peer) set to null: name one of "
                                        "its options, or drop the choice with ~GROUP"),
    "group-plus": (["+experiment=recipe"], "+experiment=recipe: a config group is chosen without +: experiment=recipe"),
    "group-empty": (["experiment="], "experiment=: no option named; choose one of: buckets, peers, recipe"),
    "multirun-cfg": (["-m", "--cfg", "job"], "-m (--multirun) and --cfg or --info do not go together"),
    # A sweep into its default, timestamped folder had run afresh without a word.
    "resume-new-sweep": (["-m", "seed=1,2", "resume=true"], "resume=true: this sweep's folder outputs/sweeps/"),
    # Hydra's "Unexpected type for root: NoneType", exit 1: no config sets the params to change.
    "sweeper-params-add": (["-m", "+hydra.sweeper.params.streams='1,2'"], "+hydra.sweeper.params.streams='1,2': no "
                           "config here defines hydra.sweeper.params to change; sweep on the command line as -m KEY=a,b"),
    "sweeper-params-set": (["-m", "hydra.sweeper.params={streams:'1,2'}"], "hydra.sweeper.params={streams:'1,2'}: no "
                           "config here defines hydra.sweeper.params"),
    "config-dir-shadowed": (["--config-dir", "conf"], "--config-dir conf: its config.yaml has the name of the "
                                                      "runner's own config, which Hydra reads first; rename yours"),
    "config-path": (["--config-path", "conf"], "--config-path names a folder inside the runner's package; for a "
                                               "folder of your own use --config-dir DIR"),
    "unknown-experiment": (["experiment=nope"], "experiment=nope: no such experiment option"),
    "batch-negative": (["model.batch=-4"], "model.batch=-4: use a whole number >= 1"),
    "batch-type": (["model.batch=x"], "model.batch=x: use a whole number >= 1"),
    "shape-zero": (["model.inputs.x.shape=[0]"], "model.inputs.x.shape=[0]: every dimension must be a whole number >= 1"),
    "repeats-zero": (["measure.repeats=0"], "measure.repeats=0: out of range; use a whole number >= 1"),
    "budget-zero": (["measure.budget_s=0"], "measure.budget_s=0: out of range; use a finite number > 0, e.g. measure.budget_s=20"),
    "budget-negative": (["measure.budget_s=-1"], "measure.budget_s=-1: out of range; use a finite number > 0"),
    "min-requests-type": (["measure.min_requests=many"], "measure.min_requests: Value 'many'"),
    "warmup-iters-range": (["capture.warmup_iters=-1"], "capture.warmup_iters=-1: out of range"),
    # 0 had been taken: the capture itself then ran the lazy init the notes keep out of it.
    "warmup-iters-zero": (["capture.warmup_iters=0"], "capture.warmup_iters=0: out of range; use 1 or more"),
    "capture-key": (["capture.nope=1"], "capture.nope: unknown key; valid keys in 'capture'"),
    "input-unknown": (["model.inputs.y.shape=[3]"], "model.inputs.y: the model's config has no input named y; fix the "
                      "name, or add it: '++model.inputs={y: {shape: [3]}}'"),
    "input-added-by-key": (["+model.inputs.y.shape=[3]"], "model.inputs.y.shape: a new input cannot be added by its own "
                           "key; add it to the map: '++model.inputs={y: {shape: [3]}}'"),
    "inputs-assigned": (["model=linear", "model.inputs={src: {shape: [16, 64]}}"],
                        "model.inputs={src: {shape: [16, 64]}}: the model's config has no input named src, and = does "
                        "not add one; add it with '++model.inputs={src: {shape: [16, 64]}}', and drop an input the "
                        "model does not take with '~model.inputs.NAME'"),
    "model-key-nested": (["model.inptus.y=1"], "model.inptus: unknown key; valid keys in 'model': batch, inputs,"),
    "input-not-a-map": (["model.inputs.y=1"], "model.inputs.y: the model's config has no input named y; fix the name, "
                        "or add it: '++model.inputs={y: {shape: [...]}}'"),
    "budget-infinite": (["measure.budget_s=inf"], "measure.budget_s=inf: out of range; use a finite number > 0"),
    "module-key": (["model.module.hiden_features=512"],
                   "model.module.hiden_features: unknown key; the model's config sets no such argument: fix its name, "
                   "or add it with +model.module.hiden_features="),
    "parse": (["streams=["], "could not parse the command line"),
    "interpolation": (["streams=${oops}"], "streams: Interpolation key 'oops' not found"),
    "infinite": (["measure.min_duration_ms=inf"], "measure.min_duration_ms=inf: out of range"),
    "target-import": (["model.module._target_=nope.Nope"], "model.module._target_=nope.Nope: cannot be imported"),
    "target-typo": (["model.module._target_=torch.nn.Linearr"],
                    "model.module._target_=torch.nn.Linearr: cannot be imported (torch.nn has no Linearr); "
                    "did you mean torch.nn.Linear?"),
    "target-not-module": (["model.module._target_=builtins.dict"], "model.module._target_=builtins.dict: builds a dict, not an nn.Module"),
    "target-arguments": (["model.module._target_=torch.nn.Linear"], "model.module: the arguments do not fit torch.nn.Linear"),
    "shape-mismatch": (["model.inputs.x.shape=[7]"], "model.inputs (x float [2, 7]) do not fit model MLP"),
    "input-name": (["model=linear", "~model.inputs.input", "++model.inputs={x:{shape:[512]}}"],
                   "model.inputs.x: Linear.forward has no argument 'x' (it takes: input)"),
    "tokens-vocab": (["model=tiny_llm", "model.inputs.tokens.vocab=0"],
                     "model.inputs.tokens.vocab=0 (or not set): kind tokens needs the vocabulary's size, in 1..2**63-1, "
                     "e.g. model.inputs.tokens.vocab=50257 (token ids are drawn below it)"),
    "input-add-by-key": (["++model.inputs.foo={shape: [256]}"],
                         "model.inputs.foo: a new input cannot be added by its own key; add it to the map: "
                         "'++model.inputs={foo: {shape: [256]}}'"),
    "list-bare": (["model.inputs.x.shape=256"],
                  "model.inputs.x.shape=256: this key takes a list; write model.inputs.x.shape=[256]"),
    "bool-number": (["graph=2"], "graph=2: not a boolean; use graph=true or graph=false"),
    "bool-number-nested": (["measure.ceiling=0"], "measure.ceiling=0: not a boolean"),
    "min-repeats": (["measure.min_repeats=5", "measure.repeats=3"], "measure.min_repeats=5: more than measure.repeats=3"),
    "resume-nothing": (["resume=true"], "resume=true:"),
    # Errors in the user's own config files (USER_FILES), found through hydra.searchpath:
    "file-key": (["hydra.searchpath=[file://conf]", "model=badkey"],
                 "model.input: unknown key; valid keys in 'model': batch, inputs, module, name, outputs, seq, sizes "
                 "(in the config file model/badkey.yaml)"),
    "file-type": (["hydra.searchpath=[file://conf]", "measure=mine"],
                  "measure.budget_s: Value 'abc' of type 'str' could not be converted to Float; use a number "
                  "(in the config file measure/mine.yaml)"),
    "file-list": (["hydra.searchpath=[file://conf]", "model=shape"],
                  "model.inputs.x.shape: this key takes a list; write its value in brackets, as [...] "
                  "(in the config file model/shape.yaml)"),
    "file-yaml": (["hydra.searchpath=[file://conf]", "model=syntax"], "{cwd}/conf/model/syntax.yaml, line 2: not valid YAML "
                  "(while parsing a flow mapping: expected ',' or '}', but got '<stream end>' at line 3); fix the file's syntax"),
    "file-searchpath": (["hydra.searchpath=[file://conf]", "model=badkey"],
                        "hydra.searchpath: file://conf: no such folder (seen from {cwd}); name the folder"),
    # A model whose own code raises is not told its inputs are wrong (it was), and where it raised.
    "forward-raises": (["hydra.searchpath=[file://conf]", "model=raises"],
                       "model Raises: its forward raised ValueError: always broken (at mine.py:7 in forward, on "
                       "model.inputs x float [2, 8]); fix model.inputs and model.batch to what forward takes, or the "
                       "model if they are right"),
    "module-arg-type": (["model=linear", "model.module.in_features=abc"],
                        "model.module.in_features='abc': torch.nn.Linear takes an int there; write a number"),
    # A section or a map given a list or a value: OmegaConf's words named types ("Cannot merge
    # DictConfig with ListConfig"), and in a config file no key ("object_type=Config: ...").
    "section-input": (["model.inputs.x=[16]"], "model.inputs.x: an input's settings, a map, not a list or a value; "
                      "write model.inputs.x.shape=[16]"),
    "section-load": (["load=server"], "load: a section of settings (duration_s, p99_ms, rate, requests, resolution, "
                     "scenario), not a list or a value; did you mean load.scenario=server?"),
    "section-sizes-list": (["model.sizes.batch=[1,2]"], "model.sizes.batch: a section of settings (high, low, values, "
                           "weights), not a list or a value; did you mean model.sizes.batch.values=[1,2]?"),
    "section-module": (["model.module=runner.models.mlp.MLP"], "model.module: the model's _target_ and its arguments, "
                       "a map, not a value; write model.module._target_=runner.models.mlp.MLP"),
    "file-section-input": (["hydra.searchpath=[file://conf]", "model=listinput"],
                           "model.inputs.x: an input's settings, a map, not a list or a value; write x: {shape: [...]} "
                           "(in the config file model/listinput.yaml)"),
    "file-section-inputs": (["hydra.searchpath=[file://conf]", "model=listinputs"],
                            "model.inputs: maps each input's name to its settings, not a list or a value; write inputs: "
                            "{x: {shape: [...]}} (one entry per forward argument) (in the config file model/listinputs.yaml)"),
    # autograd inside forward, under the runner's no_grad: the inputs had been blamed.
    "forward-autograd": (["hydra.searchpath=[file://conf]", "model=needsgrad"],
                         "model NeedsGrad: its forward needs autograd (element 0 of tensors does not require grad and "
                         "does not have a grad_fn; at mine.py:7 in forward); the runner runs every forward under "
                         "torch.no_grad(), as inference: wrap what needs gradients in `with torch.enable_grad():` "
                         "inside forward"),
    # A float given where the default is an int is no fault of its own (scale=1 takes 0.5): the
    # misspelt key beside it is named, not the float.
    "module-arg-misspelt-beside-float": (["model=linear", "model.module._target_=tests.io_models.Scaled",
                                          "~model.module.in_features", "~model.module.out_features",
                                          "+model.module.scale=0.5", "+model.module.feature=3"],
                                         "model.module.feature: Scaled takes no argument 'feature'; did you mean "
                                         "model.module.features?"),
    # A list for a config group merges its options into one config (two measure presets ran as
    # one job, exit 0); measure=[1] failed inside Hydra, exit 1.
    "group-list": (["model=[mlp,linear]"], "model=[mlp,linear]: a list selects several model options at once, merged "
                   "into one config; choose one (model=NAME), or sweep them with -m model=a,b"),
    "group-list-number": (["measure=[1]"], "measure=[1]: a list selects several measure options at once"),
    # A float where the constructor counts (range(3.5)): its TypeError named no key.
    "module-arg-float": (["model.module.depth=3.5"],
                         "model.module.depth=3.5: runner.models.mlp.MLP takes an int there; write a whole number"),
    "file-no-inputs": (["hydra.searchpath=[file://conf]", "model=noinputs"],
                       "model.inputs: not set; the model's config must name forward's inputs, e.g. "),
    # Left out, the shape had been [] without a word: model.seq was blamed (no shape uses seq).
    "file-no-shape": (["hydra.searchpath=[file://conf]", "model=noshape"],
                      "model.inputs.x.shape: missing; give one sample's shape (the batch goes in front)"),
    # A boolean written as a number in a config file: OmegaConf took graph: 2 for true.
    # A preset without its package line: its keys landed under experiment:, read as "unknown key".
    "preset-no-package": (["hydra.searchpath=[file://conf]", "experiment=nopkg"],
                          "experiment/nopkg.yaml: a preset sets top-level keys, and lacks `# @package _global_` as "
                          "its first line"),
    "file-bool": (["hydra.searchpath=[file://conf]", "experiment=boolnum"],
                  "graph: 2 is not a boolean (in the config file experiment/boolnum.yaml); write true or false"),
    "file-output-number": (["hydra.searchpath=[file://conf]", "model=numbered"],
                           "model.outputs (in the config file model/numbered.yaml): the output path 1.10 reads as "
                           "1.1; quote it: '1.10'"),
    "file-bool-primary": (["--config-dir", "conf", "--config-name", "mine"],
                          "pinned: 0 is not a boolean (in the config file mine.yaml); write true or false"),
    # A primary config of the user's that does not build on the runner's: Hydra had said
    # "measure is not in the defaults list" (or "~baseline: cannot be deleted" once composed).
    "primary-not-ours": (["--config-dir", "conf", "--config-name", "alone", "measure=quick"],
                         "--config-name alone: conf/alone.yaml does not build on the runner's config, so none of its "
                         "keys and groups (model, measure, ...) are there; start its defaults with it: "
                         "defaults: [config, _self_, ...] (README: a primary config of your own)"),
    "primary-not-ours-searchpath": (["hydra.searchpath=[file://conf]", "--config-name", "based"],
                                    "--config-name based: conf/based.yaml does not build on the runner's config"),
    "primary-self-first": (["--config-dir", "conf", "--config-name", "selffirst"],
                           "--config-name selffirst: conf/selffirst.yaml lists _self_ before config in its defaults, "
                           "so the runner's config overrides what it sets (streams); list config first: "
                           "defaults: [config, _self_, ...]"),
    "file-bool-nested": (["hydra.searchpath=[file://conf]", "model=lengths"],
                         "model.inputs.input.random_lengths: 1 is not a boolean (in the config file "
                         "model/lengths.yaml); write true or false"),
    # Hydra's own slips, with the fix Hydra gives on its later lines kept on the one line.
    "ambiguous": (["streams=1,2"], "streams=1,2: several values make a sweep; add -m (--multirun)"),
    "not-in-defaults": (["peer=eager"], "peer=eager: peer is not in the defaults list, so it cannot be overridden; "
                        "add it with +peer=eager"),
    "null": (["streams=null"], "streams: null is not allowed; give a value, e.g. streams=4"),
    "delete": (["~model.inputs"], "~model.inputs: model.inputs cannot be deleted; remove one input with "
               "~model.inputs.NAME"),
    "delete-top": (["~streams"], "~streams: streams cannot be deleted; set it instead, e.g. streams=4"),
    "delete-unset": (["~load.rate"], "~load.rate: load.rate is not set (null, or no such key), so there is nothing "
                     "to delete; drop ~load.rate"),
    # Folders that cannot be made ({cwd}/afile is a file, USER_FILES), named on the command line
    # (checked before Hydra starts) or not (the default's outputs/: Hydra's own error).
    "run-dir-file": (["hydra.run.dir=afile"], "hydra.run.dir=afile: a file, not a folder; name a folder that can be "
                     "created"),
    "run-dir-under-file": (["hydra.run.dir={cwd}/afile/run"], "hydra.run.dir={cwd}/afile/run: {cwd}/afile is a "
                           "file, not a folder; name a folder that can be created"),
    "run-dir-proc": (["hydra.run.dir=/proc/runner_test"], "hydra.run.dir=/proc/runner_test: cannot create the folder "
                     "/proc/runner_test ("),
    "sweep-dir-file": (["-m", "seed=1,2", "hydra.sweep.dir=afile"], "hydra.sweep.dir=afile: a file, not a folder; "
                       "name a folder that can be created"),
    "default-dir-file": ([], "hydra.run.dir=outputs/runs/"),
}
USER_FILES = {
    # A folder whose config.yaml Hydra never reads (the runner's own config has its name): a run's
    # .hydra/ given this way ran the bundled default job, exit 0.
    "config-dir-shadowed": {"conf/config.yaml": "streams: 2\n"},
    "file-bool": {"conf/experiment/boolnum.yaml": "# @package _global_\ngraph: 2\npinned: 0\n"},
    "preset-no-package": {"conf/experiment/nopkg.yaml": "streams: 2\n"},
    "file-output-number": {"conf/model/numbered.yaml": "module: {_target_: tests.io_models.DictOut}\nbatch: 2\n"
                           "inputs: {x: {shape: [8]}}\noutputs: [scores, 1.10]\n"},
    # A primary config of the user's (--config-name) that builds on the runner's.
    "file-bool-primary": {"conf/mine.yaml": "defaults:\n  - config\n  - _self_\n  - override model: linear\n  - "
                          "override measure: quick\npinned: 0\n"},
    "primary-not-ours": {"conf/alone.yaml": "defaults:\n  - _self_\n  - override model: linear\n"},
    # Through a base of the user's that does not start from the runner's config either.
    "primary-not-ours-searchpath": {"conf/based.yaml": "defaults:\n  - base\n  - _self_\n", "conf/base.yaml": "streams: 1\n"},
    "primary-self-first": {"conf/selffirst.yaml": "defaults:\n  - _self_\n  - config\nstreams: 1\n"},
    "file-bool-nested": {"conf/model/lengths.yaml": "module: {_target_: torch.nn.Linear, in_features: 8, "
                         "out_features: 4}\nbatch: 2\ninputs: {input: {shape: [8], random_lengths: 1}}\n"},
    **{name: {"afile": ""} for name in ("run-dir-file", "run-dir-under-file", "sweep-dir-file")},
    "default-dir-file": {"outputs": ""},
    "file-key": {"conf/model/badkey.yaml": "module: {_target_: runner.models.mlp.MLP}\nbatch: 2\ninput: {x: {shape: [256]}}\n"},
    "file-type": {"conf/measure/mine.yaml": "budget_s: abc\n"},
    "file-list": {"conf/model/shape.yaml": "module: {_target_: runner.models.mlp.MLP}\ninputs: {x: {shape: 256}}\n"},
    "file-yaml": {"conf/model/syntax.yaml": "batch: 2\ninputs: {x: {shape: [256]}\n"},
    "forward-raises": {"conf/model/raises.yaml": "module: {_target_: mine.Raises}\nbatch: 2\ninputs: {x: {shape: [8]}}\n",
                       "mine.py": "from torch import nn\n\n\nclass Raises(nn.Module):\n"
                                  "    def forward(self, x):\n        y = x + 1\n"
                                  "        raise ValueError('always broken')\n"},
    "file-section-input": {"conf/model/listinput.yaml": "module: {_target_: runner.models.mlp.MLP}\ninputs: {x: [256]}\n"},
    "file-section-inputs": {"conf/model/listinputs.yaml": "module: {_target_: runner.models.mlp.MLP}\ninputs: [x]\n"},
    "forward-autograd": {"conf/model/needsgrad.yaml": "module: {_target_: mine.NeedsGrad}\nbatch: 2\n"
                                                       "inputs: {x: {shape: [8]}}\n",
                         "mine.py": "import torch\nfrom torch import nn\n\n\nclass NeedsGrad(nn.Module):\n"
                                    "    def forward(self, x):\n        return torch.autograd.grad((x * x).sum(), x)[0]\n"},
    "file-no-inputs": {"conf/model/noinputs.yaml": "module: {_target_: runner.models.mlp.MLP}\nbatch: 2\n"},
    "file-no-shape": {"conf/model/noshape.yaml": "module: {_target_: runner.models.mlp.MLP}\nbatch: 2\nseq: 16\n"
                      "inputs: {x: {kind: float}}\n"},
}


@pytest.fixture(scope="module")
def bad_input_runs(tmp_path_factory):
    """Every bad input, run at once (each is a separate process)."""
    base = tmp_path_factory.mktemp("bad")

    def one(item):
        name, (args, _) = item
        cwd = base / name
        cwd.mkdir()
        for path, text in USER_FILES.get(name, {}).items():
            (cwd / path).parent.mkdir(parents=True, exist_ok=True)
            (cwd / path).write_text(text)
        return name, (run_cli([*QUICK, *(a.replace("{cwd}", str(cwd)) for a in args)], cwd), cwd)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, BAD_INPUTS.items()))


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_nonzero_and_leaves_no_result(bad_input_runs, name):
    done, cwd = bad_input_runs[name]
    expected = BAD_INPUTS[name][1].replace("{cwd}", str(cwd))
    if name == "device-missing" and "CUDA is not available" not in done.stderr:
        expected = "device=cuda:3: this machine has"
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {expected}"), lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert "Error getting object" not in done.stderr + done.stdout  # Hydra's own report of a bad _target_
    assert "HYDRA_FULL_ERROR" not in lines[0]
    assert results_under(cwd) == []
    # Nothing left behind: no run folder, no outputs/, only the files the case began with.
    assert {p.name for p in cwd.iterdir()} == {Path(p).parts[0] for p in USER_FILES.get(name, {})}
    assert all((cwd / p).read_text() == text for p, text in USER_FILES.get(name, {}).items())
    if name.startswith("target-import") or name == "target-typo":  # the error alone: no "job:" line before it
        assert "job:" not in done.stdout + done.stderr, done.stdout


def test_full_error_shows_the_traceback(tmp_path):
    env = cli_env()
    env["HYDRA_FULL_ERROR"] = "1"
    done = run_cli([*QUICK, "streams=0"], tmp_path, env=env)
    assert done.returncode == 2  # bad input, traceback or not
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_a_crash_in_the_models_native_code_says_where(tmp_path):
    """A segfault ends the process before anything is recorded: the shell's bare "Segmentation
    fault" had been all a single run left; Python's fatal-error report names the model's line."""
    done = run_cli([*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.Segfaults",
                    "+model.module.calls=0"], tmp_path)
    assert done.returncode == -11, done.stderr[-2000:]
    assert "Fatal Python error: Segmentation fault" in done.stderr
    assert re.search(r'faulty_models\.py", line \d+ in fail\n.*faulty_models\.py", line \d+ in forward', done.stderr), \
        done.stderr[-3000:]


def test_runtime_failure_exits_nonzero_with_a_failed_result(tmp_path):
    done = run_cli([*QUICK, *FAULTY, "model.module._target_=tests.faulty_models.FailAfter",
                    "+model.module.calls=30"], tmp_path)
    assert done.returncode == 1
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "failed" and "planted failure" in result["reason"]
    [path] = results_under(tmp_path)
    assert json.loads(path.read_text())["status"] == "failed"


def test_two_job_multirun_records_each_job(tmp_path):
    done = run_cli(["-m", *QUICK, "model.batch=1,2"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    paths = results_under(tmp_path / "outputs" / "sweeps")
    assert len(paths) == 2
    results = [json.loads(p.read_text()) for p in paths]
    assert sorted(r["config"]["model"]["batch"] for r in results) == [1, 2]
    assert all(r["status"] == "ok" for r in results)
    assert sorted(r["job"]["num"] for r in results) == [0, 1]
    # The sweep's folder as output_dir is: absolute (it was relative, "outputs/sweeps/..."), also
    # when each job runs in its own folder (hydra.job.chdir=true).
    assert all(r["job"]["sweep_dir"] == str(p.parent.parent) for r, p in zip(results, paths, strict=True))
    moved = run_cli(["-m", *QUICK, "model.batch=1", "hydra.job.chdir=true", "hydra.sweep.dir=relsw"], tmp_path)
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert json.loads((tmp_path / "relsw" / "0" / "result.json").read_text())["job"]["sweep_dir"] == str(tmp_path / "relsw")


def test_notes_are_printed_once_and_help_describes_the_main_keys(tmp_path):
    done = run_cli(QUICK, tmp_path)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert len(notes) == len(result["notices"]) == len(set(notes)) >= 1
    shown = run_cli(["--help"], tmp_path)
    assert shown.returncode == 0
    for words in ("streams [4]", "staging.mode", "measure.budget_s", "model.batch", "model.inputs.NAME.shape",
                  "model: bert, encoder, gpt2, linear, mlp", "compile [none]", "load.scenario [offline]",
                  "hydra.searchpath=[file://DIR]", "hydra/launcher=gpus"):
        assert words in shown.stdout, words
    [experiments] = [line for line in shown.stdout.splitlines() if line.startswith("experiment: ")]
    assert "recipe" in experiments.split(": ", 1)[1].split(", "), experiments


def test_resume_is_refused_into_a_folder_of_other_overrides(tmp_path):
    first = run_cli([*QUICK, "hydra.run.dir=run"], tmp_path)
    assert first.returncode == 0, first.stderr
    before = (tmp_path / "run" / "result.json").read_bytes()
    again = run_cli([*QUICK, "seed=3", "resume=true", "hydra.run.dir=run"], tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error: resume=true:")
    assert "holds a result for other overrides (there: no other override; this job: seed=3)" in again.stderr
    assert (tmp_path / "run" / "result.json").read_bytes() == before  # never overwritten
    kept = run_cli([*QUICK, "resume=true", "hydra.run.dir=run"], tmp_path)
    assert kept.returncode == 0 and "kept, resume=true" in kept.stdout


@pytest.mark.parametrize("folder, resolved", [("run", "run"), ("b/${hydra:runtime.choices.model}", "b/mlp")])
def test_a_run_into_a_folder_that_holds_another_runs_result_is_refused_before_anything_is_written(
        tmp_path, folder, resolved):
    first = run_cli([*QUICK, "graph=false", f"hydra.run.dir={folder}"], tmp_path)
    assert first.returncode == 0, first.stderr
    files = lambda: {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / resolved).rglob("*") if p.is_file()}  # noqa: E731
    kept = files()
    assert Path(resolved, ".hydra", "overrides.yaml") in kept
    other = run_cli([*QUICK, "graph=false", "seed=3", f"hydra.run.dir={folder}"], tmp_path)
    assert other.returncode == 2
    [line] = other.stderr.strip().splitlines()
    assert line.startswith(f"error: {resolved} holds a result for other overrides (there: no other override; this job: seed=3)"), line
    assert "use another folder (hydra.run.dir" in line
    # Nothing rewritten: not the result, nor the .hydra/ that reproduces it, nor the log.
    assert files() == kept
    # The same settings (in another order, another spelling) measure again, in place.
    again = run_cli(["graph=False", *reversed(QUICK), f"hydra.run.dir={folder}"], tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / resolved / "result.json").read_bytes() != kept[Path(resolved, "result.json")]


def test_a_job_asked_to_run_longer_than_its_budget_ends_with_what_it_has(tmp_path):
    done = run_cli([*QUICK, "measure.budget_s=1", "measure.min_duration_ms=60000", "measure.max_pass_ms=600000",
                    "measure.repeats=100", "measure.min_repeats=3", "measure.stdrel=0"], tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    f = result["figures"]
    assert f["repeats_stop_reason"] == "budget" and 1 <= len(f["throughput_requests_per_s_repeats"]) < 100
    assert f["pass_cap_ms"] < 60000
    assert any("passes were cut" in w and "measure.min_duration_ms=60000" in w for w in result["warnings"])
    assert any("the budget (measure.budget_s=1) ended the repeats" in w for w in result["warnings"])
    assert re.search(r"measuring: (about [\d.]+|[\d.]+ to [\d.]+) s more", done.stdout + done.stderr)  # before the timed phase


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_a_single_run_keeps_the_repeats_that_finished(tmp_path, how):
    """And SIGTERM (`kill`, a batch system's time limit) ends a single run the same way: it
    ended the process at once, with no result in its folder."""
    import os
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *QUICK, "measure.min_duration_ms=100", "measure.max_pass_ms=100",
         "measure.repeats=1000", "measure.min_repeats=1000", "measure.budget_s=600", "hydra.run.dir=run"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    log = tmp_path / "run" / "runner.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until a few repeats have finished
        if log.exists() and "repeat 3 (" in log.read_text(errors="ignore"):
            break
        time.sleep(0.2)
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # as `kill`: the process alone
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err + out
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["status"] == "interrupted"
    assert result["reason"].startswith(f"interrupted ({'Ctrl-C' if how == 'SIGINT' else 'SIGTERM'}) before ")
    kept = result["figures"]["throughput_requests_per_s_repeats"]
    assert len(kept) >= 3 and result["figures"]["throughput_requests_per_s"] > 0
    assert f"the {len(kept)} throughput repeat(s) that finished" in result["reason"]
    # What ran until the Ctrl-C, at least the repeats' 100 ms each (it read 0.0 s).
    assert result["figures"]["measure_time_s"] >= 0.1 * len(kept)
    # The log says how the job ended, as the console did (it stopped at the last repeat).
    assert "status: INTERRUPTED: interrupted (" in log.read_text() and f"result: {tmp_path / 'run'}" in log.read_text()
    # Where that is, and how to measure again, in the lines before the exit's own.
    said = err.strip().splitlines()
    assert said[-1] == "interrupted", err
    assert said[-2].startswith(f"interrupted: its {len(kept)} finished throughput repeat(s) kept in "), err
    assert f"hydra.run.dir={tmp_path / 'run'}" in said[-2]


def test_works_after_a_plain_pip_install_from_another_folder(tmp_path):
    """The configs ship with the package: no checkout on the path, no editable install. The
    install sits inside the user's own git repository (a `.venv` in a project): the record
    names the runner's version, never that repository's commit as the runner's."""
    site = tmp_path / "site"
    root = Path(__file__).resolve().parent.parent
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@x", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True, timeout=60)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "the user's project"], check=True, timeout=60)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(root)],
        check=True, capture_output=True, timeout=300,
    )
    assert (site / "runner" / "configs" / "model" / "mlp.yaml").exists()
    assert (site / "runner" / "configs" / "hydra" / "launcher" / "gpus.yaml").exists()  # every YAML ships
    assert (site / "runner" / "models" / "mlp.py").exists()
    assert not (site / "configs").exists() and not (site / "models").exists()  # nothing generic at top level
    env = {k: v for k, v in cli_env().items() if k not in ("PYTHONPATH", "RUNNER_GIT_COMMIT", "RUNNER_GIT_DIRTY")}
    env["PYTHONPATH"] = str(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-m", "runner", *QUICK], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == "ok" and result["job"]["output_dir"].startswith(str(elsewhere))
    version = re.search(r'^__version__ = "(.+)"', (root / "runner" / "__init__.py").read_text(), re.M).group(1)
    assert result["env"]["runner"] == version
    assert result["env"]["git"] == {"commit": None, "dirty": None, "source": None}
    assert result["env"]["cwd"] == str(elsewhere) and result["env"]["packages"]["hydra-core"]
    said = subprocess.run([sys.executable, "-m", "runner", "--version"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=60)
    assert said.returncode == 0 and said.stdout.startswith(f"runner {version} (torch "), said
    sweep = subprocess.run([sys.executable, "-m", "runner", "-m", *QUICK, "seed=1,2"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    assert len(list((elsewhere / "outputs" / "sweeps").rglob("result.json"))) == 2
    gpus = subprocess.run([sys.executable, "-m", "runner", *QUICK, "hydra/launcher=gpus", "--cfg", "hydra"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert gpus.returncode == 0 and "RunnerLauncher" in gpus.stdout, gpus.stderr[-2000:]


def test_inside_a_project_with_its_own_models_package_its_models_are_meant(tmp_path):
    """Installed, the runner puts nothing generic at top level: `models.my_net.Net` is the
    project's, found by the console script and by `python -m runner` alike, in a sweep too."""
    import shutil

    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("")
    (project / "models" / "my_net.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Module):\n"
        "    def __init__(self, width: int = 8):\n        super().__init__()\n"
        "        self.layer = torch.nn.Linear(width, width)\n\n"
        "    def forward(self, x):\n        return torch.tanh(self.layer(x))\n"
    )
    (project / "configs").mkdir()
    (project / "configs" / "__init__.py").write_text("")  # a project's own configs package, too
    env = {k: v for k, v in cli_env().items() if k != "PYTHONPATH"}  # the installed runner only
    args = [*QUICK, "model=linear", "model.module._target_=models.my_net.Net", "~model.module.in_features",
            "~model.module.out_features", "~model.inputs.input", "++model.inputs={x:{shape:[8]}}"]  # Net.forward(x)
    script = shutil.which("runner")
    commands = [[sys.executable, "-m", "runner", *args]] + ([[script, *args]] if script else [])
    for command in commands:
        done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command[0], done.stderr[-2000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["status"] == "ok" and result["config"]["model"]["module"]["_target_"] == "models.my_net.Net"
    sweep = subprocess.run([sys.executable, "-m", "runner", "-m", *args, "seed=1,2"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr[-2000:]


def test_ctrl_c_inside_hydra_that_surfaces_as_another_error_is_an_interrupt(monkeypatch, capsys):
    """Ctrl-C while Hydra composes the config can come out as an error of OmegaConf's own
    clean-up (seen: "hydra.runtime.config_sources: 'NoneType' object has no attribute ..."): still
    an interrupt, exit 130, not a one-line error blaming the input. An error of our own code
    raised while handling a Ctrl-C stays an error."""
    from hydra.errors import ConfigCompositionException

    import runner.app as app

    def ctrl_c_in(module: str) -> None:  # a KeyboardInterrupt raised in a frame of `module`
        exec(compile("raise KeyboardInterrupt", f"<{module}>", "exec"), {"__name__": module})

    def composing() -> None:
        try:
            try:
                ctrl_c_in("omegaconf.dictconfig")
            except KeyboardInterrupt:  # OmegaConf's clean-up of the half-built node fails
                raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'") from None
        except AttributeError as exc:
            raise ConfigCompositionException("hydra.runtime.config_sources: ...") from exc

    def failing() -> None:  # the Ctrl-C landed in our code, whose handling then failed: a bug
        try:
            ctrl_c_in("runner.job")
        except KeyboardInterrupt:
            raise AttributeError("a real bug") from None

    for entry, code, said in ((composing, 130, "interrupted"), (failing, 1, "error: a real bug")):
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it to 1 for Hydra
        monkeypatch.setattr(app, "hydra_entry", entry)
        with pytest.raises(SystemExit) as stopped:
            app.main()
        assert stopped.value.code == code and capsys.readouterr().err.startswith(said)


def test_ctrl_c_while_the_cli_imports_hydra_is_one_line_and_exit_130(monkeypatch, capsys):
    """The console entry imports Hydra and the runner inside main(): a Ctrl-C during those
    imports (the first half second of every run) ends as "interrupted", exit 130, not as a
    traceback with the interpreter's own exit."""
    import importlib.abc

    from runner import cli

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "runner.app":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "runner.app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)  # main() installs its own
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130 and capsys.readouterr().err.strip() == "interrupted"
    # And it is light: importing the entry point imports neither Hydra nor torch.
    done = subprocess.run([sys.executable, "-c", "import sys, runner.cli; print(sorted(m for m in ('hydra', 'torch', "
                           "'omegaconf') if m in sys.modules))"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


LOST_IN_A_CALLBACK = """
import os, signal, sys, time, weakref
from runner.cli import keep_lost_interrupts
if sys.argv[1] == "kept":
    keep_lost_interrupts()

class Lock:
    pass

def callback(ref):  # a Ctrl-C that lands while a weakref callback runs (importlib's module locks have them)
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        pass

lock = Lock()
ref = weakref.ref(lock, callback)
try:
    del lock
    time.sleep(float(sys.argv[2]))  # one blocking call: the interrupt must end it, not wait for it
    print("ran on")
except KeyboardInterrupt:
    print("interrupted")
"""


@pytest.mark.parametrize("mode", ["kept", "python's default"])
def test_a_ctrl_c_raised_inside_a_callback_is_delivered_again_not_printed_and_lost(mode):
    """Python cannot raise a KeyboardInterrupt out of a weakref callback or a finalizer: it
    prints "Exception ignored" with a traceback and runs on. The CLI and every sweep job deliver
    it again instead (seen in CI: a job's Ctrl-C landed in importlib's module-lock callback)."""
    sleep_s = "60" if mode == "kept" else "0.5"
    done = subprocess.run([sys.executable, "-c", LOST_IN_A_CALLBACK, mode, sleep_s], capture_output=True, text=True,
                          env=cli_env(), timeout=45)  # the kept interrupt ends the 60 s sleep, or this times out
    if mode == "kept":
        assert done.stdout.strip() == "interrupted" and done.stderr == ""
    else:  # what the test stands on: without the hook, the interrupt is printed and lost
        assert done.stdout.strip() == "ran on" and "Exception ignored" in done.stderr


def test_a_ctrl_c_before_the_job_began_leaves_no_run_folder(tmp_path):
    """A Ctrl-C while the job's imports run (the first second or so) came after Hydra had made
    the run's folder: no result would ever fill it, and `runner.report` listed it as missing."""
    env = import_hook_env(tmp_path, "runner.job", "raise KeyboardInterrupt  # as a Ctrl-C during that import would")
    done = run_cli(QUICK, tmp_path, env=env)
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", done.stderr
    assert list((tmp_path / "outputs" / "runs").glob("*/*")) == []


@pytest.mark.parametrize("how", ["swallowed SIGINT", "SIGTERM"])
def test_an_interrupt_during_the_jobs_imports_ends_the_run_with_nothing_left(tmp_path, how):
    """A Ctrl-C that torch's import swallowed (its numpy set-up clears the error) let the job run
    to the end, exit 0; a SIGTERM in the first second and a half killed the process (exit 143),
    leaving Hydra's .hydra/ and log without a result. Both end as a Ctrl-C does."""
    if how == "SIGTERM":
        action = 'exec("import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(0.5)")'
    else:
        action = ('exec("import os, signal, time\\ntry:\\n    os.kill(os.getpid(), signal.SIGINT)\\n'
                  '    time.sleep(0.5)\\nexcept KeyboardInterrupt:\\n    pass")')
    done = run_cli(QUICK, tmp_path, env=import_hook_env(tmp_path, "runner.job", action))
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", (done.returncode, done.stderr)
    assert list((tmp_path / "outputs" / "runs").glob("*/*")) == []


def test_a_sigterm_to_a_sweep_before_its_jobs_run_is_a_ctrl_c(tmp_path):
    """The launcher made SIGTERM a Ctrl-C only while its jobs ran: before, Python's default
    killed it (exit 143), leaving its sweep folder (with resume=true, a rewritten multirun.yaml)."""
    action = 'exec("import os, signal, time\\nos.kill(os.getpid(), signal.SIGTERM)\\ntime.sleep(0.5)")'
    done = run_cli(["-m", *QUICK, "seed=1,2", "hydra.sweep.dir=sw"], tmp_path,
                   env=import_hook_env(tmp_path, "runner.callbacks", action))
    assert done.returncode == 130 and done.stderr.strip() == "interrupted", (done.returncode, done.stderr)
    assert not (tmp_path / "sw").exists()


def test_torchs_loggers_are_held_at_warning_until_torch_sets_them(tmp_path):
    """torch sets its loggers' levels when its import completes: a Ctrl-C before that left them
    at the root's INFO, and torch's exit hook printed "FakeTensor cache stats" (7 of 16 Ctrl-Cs
    at 0.6-1.4 s). A single run holds the torch logger at WARNING before importing torch."""
    seen = tmp_path / "level.txt"
    env = import_hook_env(tmp_path, "torch",
                          f"open({str(seen)!r}, 'a').write(str(logging.getLogger('torch').level) + '\\n')")
    done = run_cli(QUICK, tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert seen.read_text().split()[0] == "30"  # logging.WARNING, when torch's import began


def test_bad_input_never_removes_a_folder_holding_a_file_of_the_users(tmp_path):
    """Bad input removes the run folder Hydra made: only when Hydra's files are all it holds
    (a user's notes.log counted as Hydra's, and the folder went with it)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.log").write_text("keep me")
    done = run_cli([*QUICK, "streams=0", "hydra.run.dir=mine"], tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: streams=0"), done.stderr
    assert (mine / "notes.log").read_text() == "keep me"


def test_a_sweep_preset_run_without_m_says_so(tmp_path):
    """experiment=sweep_dtype without -m ran the single default job, silently."""
    done = run_cli([*QUICK, "experiment=sweep_dtype"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("note: this config defines a sweep (dtype=fp32,bf16,fp16 graph=false,true); add -m "
                                  "to run it. Running one job instead, with the preset's settings and the overrides "
                                  "given.")  # it had said "with the defaults", of a job that ran the overrides given
    assert len(results_under(tmp_path / "outputs" / "runs")) == 1
    # A launcher chosen for a single run was ignored without a word.
    done = run_cli([*QUICK, "hydra/launcher=gpus"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("note: hydra/launcher=gpus runs sweeps (-m); this single run ignores it")


def test_an_interrupt_while_the_exit_unwinds_does_not_turn_130_into_minus_2():
    """Once a run has said "interrupted", a second SIGINT (a second Ctrl-C, or one that
    keep_lost_interrupts delivers again) raised while the exit unwinds escaped uncaught, and
    Python then ended the process by SIGINT itself: exit -2 (3 of 80 Ctrl-Cs, and once in CI)."""
    code = (
        "import os, signal, time\n"
        "from runner.cli import exit_interrupted\n"
        "try:\n"
        "    exit_interrupted()\n"
        "finally:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.2)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=cli_env())
    assert done.returncode == 130, (done.returncode, done.stderr[-1000:])
    assert done.stderr.strip() == "interrupted"


def test_a_refused_run_takes_back_what_it_wrote_and_only_that(tmp_path):
    """A bad value refused after Hydra had written .hydra/ and runner.log into a folder that held
    other files left them there; refused into a new dated folder, it left the empty date folder."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own\n")
    bad = run_cli([*QUICK, "streams=0", f"hydra.run.dir={mine}"], tmp_path)
    assert bad.returncode == 2, bad.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    fresh = run_cli([*QUICK, "streams=0"], tmp_path)  # outputs/runs/<date>/<time>, none of which existed
    assert fresh.returncode == 2 and not (tmp_path / "outputs").exists()
    # An empty folder of the user's, named relative to the working directory, stays.
    (tmp_path / "empty").mkdir()
    relative = run_cli([*QUICK, "streams=0", "hydra.run.dir=empty/new"], tmp_path)
    assert relative.returncode == 2 and (tmp_path / "empty").is_dir() and not (tmp_path / "empty" / "new").exists()


def test_a_single_run_into_a_sweeps_folder_and_a_sweep_into_a_runs_are_refused(tmp_path):
    """Its result there stood for the whole sweep: `runner.report` showed one row and wrote it
    over the sweep's table."""
    sweep = tmp_path / "sw"
    done = run_cli(["-m", *QUICK, "seed=1,2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    before = {p.relative_to(sweep): p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    single = run_cli([*QUICK, f"hydra.run.dir={sweep}"], tmp_path)
    assert single.returncode == 2
    [line] = single.stderr.strip().splitlines()
    assert line == (f"error: hydra.run.dir={sweep} is a sweep's folder (it holds multirun.yaml); to resume the sweep, "
                    "add -m and hydra.sweep.dir=...; for a single run, name another folder")
    assert {p.relative_to(sweep): p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before
    # The other way round: a sweep into a single run's folder put its jobs beside that result,
    # and `runner.report` then showed the single run alone, over the sweep's table.
    one = tmp_path / "sw" / "0"
    before = {p.relative_to(one): p.read_bytes() for p in one.rglob("*") if p.is_file()}
    into = run_cli(["-m", *QUICK, "seed=1,2", f"hydra.sweep.dir={one}"], tmp_path)
    assert into.returncode == 2
    assert into.stderr.strip().splitlines()[-1] == (f"error: hydra.sweep.dir={one} is a single run's folder (it holds "
                                                    "result.json); name another folder for the sweep")
    assert {p.relative_to(one): p.read_bytes() for p in one.rglob("*") if p.is_file()} == before


def test_a_run_records_the_config_it_came_from_and_another_config_may_not_overwrite_it(tmp_path):
    """A --config-name run and a default one both recorded no override: the second silently
    replaced the first's result, and the overrides alone could not reproduce either."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\n  - override model: linear\n")
    mine = run_cli(["--config-dir", "conf", "--config-name", "mine", *QUICK, "hydra.run.dir=r"], tmp_path)
    assert mine.returncode == 0, mine.stderr[-2000:]
    kept = (tmp_path / "r" / "result.json").read_text()
    assert json.loads(kept)["job"]["config_origin"] == [f"--config-dir={conf}", "--config-name=mine"]
    other = run_cli([*QUICK, "hydra.run.dir=r"], tmp_path)
    assert other.returncode == 2
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: r holds a result for other overrides (config there: --config-dir={conf} --config-name=mine; this "
        "job: the runner's own), which this job would overwrite; use another folder (hydra.run.dir, or "
        "hydra.sweep.dir in a sweep), or remove it")
    assert (tmp_path / "r" / "result.json").read_text() == kept


def test_resume_into_a_result_of_other_settings_is_refused_before_hydra_writes(tmp_path):
    """An edited preset: the overrides match, the settings do not. Refused before Hydra rewrote
    the .hydra/ that describes the kept result."""
    conf = tmp_path / "conf" / "model"
    conf.mkdir(parents=True)
    preset = "module: {_target_: torch.nn.Linear, in_features: 8, out_features: %d}\nbatch: 2\ninputs: {input: {shape: [8]}}\n"
    (conf / "mine.yaml").write_text(preset % 4)
    args = [*QUICK, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "model=mine", "hydra.run.dir=run"]
    assert run_cli(args, tmp_path).returncode == 0
    kept = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    (conf / "mine.yaml").write_text(preset % 5)
    again = run_cli([*args, "resume=true"], tmp_path)
    assert again.returncode == 2
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("error: resume=true: run holds a result for these overrides measured with other settings "
                           "(model.module.out_features: 4 there, 5 now): a preset or a default changed since"), line
    assert {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == kept


def test_a_multirun_flag_after_the_overrides_still_makes_a_sweep():
    """Hydra's argparse ended `runner a=1 -m b=1,2` with "unrecognized arguments: b=1,2"."""
    from runner.cli import multirun_first

    assert multirun_first(["model=linear", "-m", "seed=1,2"]) == ["-m", "model=linear", "seed=1,2"]
    assert multirun_first(["a=1", "--multirun", "b=2", "--cfg", "job"]) == ["--multirun", "a=1", "b=2", "--cfg", "job"]
    assert multirun_first(["-m", "a=1,2"]) == ["-m", "a=1,2"]
    assert multirun_first(["a=1", "b=2"]) == ["a=1", "b=2"]


def test_a_sigterm_handler_someone_else_set_is_left_to_them():
    """submitit's jobs ignore SIGTERM on purpose (a preemption's warning, SIGUSR2 to requeue):
    a job does not take it over. Python's default, or the runner's own, it replaces."""
    import signal

    from runner.app import _sigterm_as_interrupt

    def theirs(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, theirs)
    try:
        with _sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is theirs
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        with _sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_list_of_experiment_presets_composes_where_a_list_of_models_is_refused():
    """Experiment presets are overlays (buckets beside a sweep preset): a list of them composes,
    as Hydra reads it. A list of models or measure presets merges two of a kind into one job."""
    from runner.app import _check_config_sources
    from runner.errors import ConfigError

    _check_config_sources(["experiment=[recipe,buckets]"])
    for given in ("model=[mlp,linear]", "measure=[quick,short]", "+peer=[eager,graphs]"):
        with pytest.raises(ConfigError, match="a list selects several"):
            _check_config_sources([given])


def test_a_primary_config_that_builds_on_ours_is_not_refused(tmp_path, monkeypatch):
    """The check that a user's primary config builds on the runner's follows what Hydra
    accepts (review): a copy of the runner's config (defaults from its schema), config@_here_,
    config.yaml, a base in another searchpath folder, a base it cannot follow (left to Hydra)."""
    from runner.app import _check_config_sources
    from runner.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    files = {
        "conf/copied.yaml": "defaults:\n  - runner_schema\n  - _self_\n  - model: mlp\nstreams: 1\n",
        "conf/here.yaml": "defaults:\n  - config@_here_\n  - _self_\n",
        "conf/dotted.yaml": "defaults:\n  - /config.yaml\n  - _self_\n",
        "conf/usesb.yaml": "defaults:\n  - baseb\n  - _self_\n",
        "other/baseb.yaml": "defaults:\n  - config\n  - _self_\n",
        "conf/elsewhere.yaml": "defaults:\n  - some_package_config\n  - _self_\n",
        "conf/alone.yaml": "defaults:\n  - _self_\nstreams: 1\n",
        "conf/empty.yaml": "",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    for name in ("copied", "here", "dotted", "elsewhere"):
        _check_config_sources(["--config-dir", "conf", "--config-name", name])
    _check_config_sources(["--config-dir", "conf", "--config-name", "usesb", "hydra.searchpath=[file://other]"])
    for name in ("alone", "empty"):
        with pytest.raises(ConfigError, match=f"--config-name {name}: conf/{name}.yaml does not build on the runner's"):
            _check_config_sources(["--config-dir", "conf", "--config-name", name])
    _check_config_sources(["--config-dir", "conf", "--config-name", "usesb"])  # its base not found: Hydra's to say
