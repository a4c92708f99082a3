"""Every config option composes and validates; bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from runner.errors import ConfigError, condense
from runner.spec import resolve, validate

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


MODEL_NAMES = {"bert": "BertModel", "encoder": "TransformerEncoder", "gpt2": "GPT2LMHeadModel", "linear": "Linear",
               "mlp": "MLP", "mlp_wide": "MLP", "tiny_llm": "TinyLLM"}


def test_every_bundled_model_is_named_here():
    assert sorted(MODEL_NAMES) == _options("model")


@pytest.mark.parametrize("model", _options("model"))
@pytest.mark.parametrize("measure", _options("measure"))
def test_every_model_and_measure_option_composes(make_cfg, model, measure):
    cfg = make_cfg(f"model={model}", f"measure={measure}")
    spec = resolve(cfg, cuda_count=lambda: 0)
    # The name defaults to the class that model.module._target_ names.
    assert spec.model_name == str(spec.model.module["_target_"]).rpartition(".")[2] == MODEL_NAMES[model]
    assert "_target_" in spec.model.module
    assert spec.model.batch >= 1
    assert spec.model.inputs and all(inp.name and inp.shape for inp in spec.model.inputs)


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(make_cfg, experiment):
    cfg = make_cfg(f"experiment={experiment}")
    validate(cfg)


def test_default_config_is_the_recipe(make_cfg):
    cfg = make_cfg()
    assert (cfg.model.module._target_, cfg.streams, cfg.graph, cfg.pinned, cfg.baseline) == (
        "runner.models.mlp.MLP", 4, True, True, True)
    assert list(cfg.model.inputs) == ["x"] and cfg.model.batch == 32
    recipe = make_cfg("experiment=recipe")
    keys = ("streams", "graph", "pinned", "baseline", "dtype", "tf32", "capture", "staging", "model")
    assert {k: recipe[k] for k in keys} == {k: cfg[k] for k in keys}


@pytest.mark.parametrize(
    "override",
    [
        "streams=8", "graph=false", "pinned=false", "device=cpu", "device=cuda:1", "dtype=bf16",
        "dtype=fp16", "tf32=false", "seed=7", "baseline=false", "check=false", "resume=true",
        "profile=true", "timestamps=csv", "timestamps=json", "capture.warmup_iters=5",
        "capture.copies_in_graph=true", "capture.fallback_eager=true", "measure.repeats=3",
        "measure.min_requests=10", "measure.min_duration_ms=5", "measure.warmup_ms=0",
        "measure.latency_requests=0", "measure.check_requests=16", "measure.input_pool=4",
        "measure.ceiling=false", "measure.cv_warn=0.1", "model.batch=1",
        "model.inputs.x.shape=[128]", "model.module.depth=2",
    ],
)
def test_each_key_overrides(make_cfg, override):
    key, _, value = override.partition("=")
    cfg = make_cfg(override)
    as_plain = OmegaConf.create(OmegaConf.to_container(cfg, enum_to_str=True))
    assert OmegaConf.select(as_plain, key) == yaml.safe_load(value)
    validate(cfg)


def test_a_float_is_echoed_as_short_as_it_reads():
    """model.batch=1e12 was echoed as 1000000000000.0 in its error."""
    from runner.spec import _show

    assert [_show(v) for v in (1e12, 2.5, 0.123456789, 1.5e-7, True, 3)] == ["1e+12", "2.5", "0.123456789", "1.5e-07",
                                                                              "true", "3"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("streams=0", "streams"),
        ("streams=-2", "streams"),
        ("model.batch=-1", "model.batch"),
        ("model.batch=0", "model.batch"),
        ("model.batch=x", "model.batch"),  # a number or a list of buckets: typed by the check, not the schema
        ("model.inputs.x.shape=[0]", "model.inputs.x.shape"),
        ("measure.repeats=0", "measure.repeats"),
        ("measure.min_requests=0", "measure.min_requests"),
        ("measure.min_duration_ms=-1", "measure.min_duration_ms"),
        ("measure.warmup_ms=-5", "measure.warmup_ms"),
        ("measure.latency_requests=-1", "measure.latency_requests"),
        ("measure.check_requests=0", "measure.check_requests"),
        ("measure.input_pool=0", "measure.input_pool"),
        ("measure.cv_warn=0", "measure.cv_warn"),
        ("measure.stdrel=2", "measure.stdrel"),
        ("measure.stdrel=1.5", "measure.stdrel"),
        ("capture.warmup_iters=-1", "capture.warmup_iters"),
        ("seed=-1", "seed"),
        ("seed=100000000000000000000000", "seed"),
        ("measure.min_duration_ms=inf", "measure.min_duration_ms"),
        ("measure.warmup_ms=nan", "measure.warmup_ms"),
        ("measure.cv_warn=inf", "measure.cv_warn"),
        ("streams=${oops}", "streams"),
        ("device=gpu", "device"),
        ("device=cuda:x", "device"),
        ("+foo=1", "foo"),
        ("+model.inputs.x.extra=1", "model.inputs.x.extra"),
    ],
)
def test_out_of_range_values_name_the_key(make_cfg, override, key):
    cfg = make_cfg(override)
    with pytest.raises(ConfigError) as info:
        resolve(cfg, cuda_count=lambda: 1)
    message = str(info.value)
    assert message.startswith(key), message
    assert "\n" not in message


def test_tokens_need_a_vocab(make_cfg):
    cfg = make_cfg("model=tiny_llm", "model.inputs.tokens.vocab=0")
    with pytest.raises(ConfigError, match=r"^model\.inputs\.tokens\.vocab"):
        resolve(cfg, cuda_count=lambda: 0)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("streams=abc", "streams: Value 'abc'"),
        ("graph=maybe", "graph: Value 'maybe' is not a valid bool"),
        ("dtype=fp64", "dtype: Invalid value 'fp64', expected one of [fp32, bf16, fp16]"),
        # A list for it named no value at all (walk).
        ("dtype=[fp32]", "dtype: Value ['fp32'] (list) is not a valid input for <enum 'DType'>; use one of: fp32, bf16, "
                         "fp16"),
        ("timestamps=xml", "timestamps: Invalid value 'xml'"),
        ("model.inputs.x.vocab=x", "model.inputs.x.vocab: Value 'x'"),
        ("foo=1", "foo: unknown key; valid keys in the top level: baseline, capture"),
        ("model.foo=1", "model.foo: unknown key; valid keys in 'model': batch, inputs, module, name, outputs, seq, sizes"),
        ("model.inputs.x.foo=1",
         "model.inputs.x.foo: unknown key; valid keys in 'model.inputs.x': dtype, high, kind, low, random_lengths, shape, vocab"),
        ("model=nope", "model=nope: no such model option; choose one of: bert, encoder, gpt2, linear, mlp, "
                       "mlp_wide, tiny_llm"),
        ("measure=nope", "measure=nope: no such measure option; choose one of: default, quick"),
        ("model=llama", "model=llama: no such model option; choose one of: bert, encoder, gpt2, linear, mlp, mlp_wide, "
                        "tiny_llm, or add your own as DIR/model/llama.yaml with hydra.searchpath=[file://DIR]"),
        ("streams=[", "could not parse the command line"),
        # A nested group keeps its whole name (it read "hydra=launcher/nope: no such hydra option").
        ("hydra/launcher=nope", "hydra/launcher=nope: no such hydra/launcher option; choose one of: basic, gpus, "),
        ("model=foo/bar", "model=foo/bar: no such model option; choose one of: bert, "),  # an option's own slash
    ],
)
def test_composition_errors_condense_to_one_line(make_cfg, override, expected):
    with pytest.raises(Exception) as info:
        make_cfg(override)
    message = condense(info.value)
    assert message.startswith(expected), message
    assert "\n" not in message


@pytest.mark.parametrize("launcher", ["runner", "gpus", "basic", "slurm", "submitit_local", "joblib"])
def test_launcher_presets_compose(launcher):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if launcher in ("slurm", "submitit_local"):
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    if launcher == "joblib":
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    GlobalHydra.instance().clear()
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    target = cfg.hydra.launcher._target_
    expected = {"runner": "RunnerLauncher", "gpus": "RunnerLauncher", "basic": "BasicLauncher",
                "slurm": "SlurmLauncher", "submitit_local": "LocalLauncher", "joblib": "JoblibLauncher"}
    assert target.endswith(expected[launcher])
    if launcher == "gpus":
        assert cfg.hydra.launcher.devices == "all"
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.tasks_per_node == 1


def test_the_default_sweep_launcher_is_the_runner_launcher():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_module(version_base="1.3", config_module="runner.configs"):
        cfg = compose("config", return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.hydra.launcher._target_.endswith("RunnerLauncher") and cfg.hydra.launcher.devices is None
    assert cfg.hydra.callbacks.sweep_report._target_ == "runner.callbacks.SweepReport"

