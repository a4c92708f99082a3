"""Real models as they come: several inputs, structured outputs, HuggingFace models, buckets."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from runner.build import build, launch_key, unused_keys
from runner.check import check_schedule, serve_and_collect
from runner.errors import ConfigError
from runner.inputs import (
    Layout,
    Size,
    bucket_of,
    buckets,
    draw_sizes,
    largest,
    make_request,
    packed,
    padding_waste,
)
from runner.job import JobInfo, run_job
from runner.lanes import build_lanes
from runner.outputs import leaves
from runner.printer import render
from runner.record import RESULT_FILE
from runner.spec import resolve

QUICK = ("measure=quick", "device=cpu", "measure.budget_s=30")
TINY_GPT2 = ("model=gpt2", "model.module.config.n_layer=2", "model.module.config.n_head=2",
             "model.module.config.n_embd=32", "model.module.config.vocab_size=97",
             "model.module.config.n_positions=64", "+model.module.config.bos_token_id=0",
             "+model.module.config.eos_token_id=0", "model.batch=2", "model.seq=16")
TINY_BERT = ("model=bert", "model.module.config.num_hidden_layers=2", "model.module.config.num_attention_heads=2",
             "model.module.config.hidden_size=32", "model.module.config.intermediate_size=64",
             "model.module.config.vocab_size=97", "model.batch=2", "model.seq=16")


@pytest.fixture
def model_dir(tmp_path):
    """A user's own config folder with model configs, found through hydra.searchpath."""
    folder = tmp_path / "conf"
    (folder / "model").mkdir(parents=True)

    def add(name: str, text: str) -> str:
        (folder / "model" / f"{name}.yaml").write_text(text)
        return f"hydra.searchpath=[file://{folder}]"

    return add


def _job(make_cfg, tmp_path, *overrides):
    cfg = make_cfg(*QUICK, *overrides)
    out = tmp_path / "job"
    result = run_job(cfg, JobInfo(output_dir=out, overrides=list(overrides)))
    assert json.loads((out / RESULT_FILE).read_text())["status"] == result["status"]
    return result


MHA = """
module: {_target_: torch.nn.MultiheadAttention, embed_dim: 16, num_heads: 2, batch_first: true}
batch: 3
inputs:
  query: {shape: [5, 16]}
  key: {shape: [7, 16]}
  value: {shape: [7, 16]}
"""


def test_multihead_attention_takes_three_inputs_and_answers_a_tuple(make_cfg, model_dir, tmp_path):
    result = _job(make_cfg, tmp_path, model_dir("mha", MHA), "model=mha")
    assert result["status"] == "ok", result["reason"]
    assert result["model"] == "MultiheadAttention"  # from _target_, not the file's name
    io = result["model_io"]
    assert list(io["inputs"]) == ["query", "key", "value"]
    assert io["inputs"]["key"]["shape"] == ["batch", 7, 16]
    assert io["outputs"] == ["0", "1"]  # (attn_output, attn_weights)
    # in_proj (3 x 16 x 16 + 48) and out_proj (16 x 16 + 16), as built: a check on the config.
    assert io["parameters"] == 3 * 16 * 16 + 48 + 16 * 16 + 16 and io["parameter_bytes"] == 4 * io["parameters"]
    f = result["figures"]
    assert f["check_requests"] >= 8 and f["check_mismatches"] == 0


def test_the_check_compares_every_leaf_of_every_input(make_cfg, model_dir):
    """A response built from another request's key (not its query) is caught: every input
    reaches the model."""
    cfg = make_cfg(*QUICK, model_dir("mha", MHA), "model=mha", "staging.mode=copy")
    spec = resolve(cfg)
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    assert check_schedule(spec, workload, lanes, 16).passed
    # The served model now reads the first request's key for every request (query and value
    # still its own); the eager reference reads each request's own.
    first = workload.layout(workload.largest).views(workload.plan[0].flat)["key"].clone()
    original = workload.forward

    def stale_key(args):
        return original({**args, "key": first})

    for lane in lanes:
        lane.forward = stale_key
        for slot in lane.slots:
            slot.ports.clear()  # rebuilt on first use with the lane's new forward
    result = check_schedule(spec, workload, lanes, 16)
    assert not result.passed and result.mismatches >= 15


DICT = """
module: {_target_: tests.io_models.DictOut, features: 8}
batch: 4
inputs: {x: {shape: [8]}}
"""


def test_a_dict_output_keeps_its_leaves_and_skips_none(make_cfg, model_dir, tmp_path):
    result = _job(make_cfg, tmp_path, model_dir("dict", DICT), "model=dict")
    assert result["status"] == "ok", result["reason"]
    assert result["model_io"]["outputs"] == ["scores", "extra.sum"]
    assert result["figures"]["check_mismatches"] == 0


def test_model_outputs_selects_the_leaves_that_travel_back(make_cfg, model_dir, tmp_path):
    result = _job(make_cfg, tmp_path, model_dir("dict", DICT), "model=dict", "model.outputs=[extra]")
    assert result["status"] == "ok", result["reason"]
    assert result["model_io"]["outputs"] == ["extra.sum"] and result["model_io"]["outputs_selected"]
    spec = resolve(make_cfg(*QUICK, model_dir("dict", DICT), "model=dict", "model.outputs=[scores]"))
    workload = build(spec)
    lanes = build_lanes(spec, workload)
    # Only the kept leaf has a host buffer: fewer bytes travel back.
    assert [tuple(o.shape) for o in lanes.lanes[0].slots[0].host_out] == [(4 * 8,)]


def test_an_unknown_output_name_lists_the_outputs(make_cfg, model_dir):
    spec = resolve(make_cfg(*QUICK, model_dir("dict", DICT), "model=dict", "model.outputs=[logits]"))
    with pytest.raises(ConfigError, match=r"model.outputs: no output 'logits'; the model's outputs are: scores, extra.sum"):
        build(spec)


def test_a_namedtuples_leaves_are_named_by_their_fields():
    """model.outputs=[nt.a] was "no output 'nt.a'; the model's outputs are: y, nt.0, ..." (walk)."""
    from collections import namedtuple

    from runner.outputs import plan_outputs

    pair = namedtuple("Pair", ["a", "b"])
    out = {"y": torch.zeros(2, 3), "nt": pair(torch.ones(2, 1), (torch.zeros(2, 2), torch.ones(2, 2)))}
    plan = plan_outputs(out, [], "M")
    assert plan.paths == ("y", "nt.a", "nt.b.0", "nt.b.1")
    kept = plan_outputs(out, ["nt.a"], "M")
    assert kept.paths == ("nt.a",) and torch.equal(kept.extract(out)[0], torch.ones(2, 1))


def test_a_none_field_a_huggingface_output_leaves_out_of_its_keys_is_said_to_be_none():
    """A ModelOutput omits its None fields from its keys: `model.outputs=[attentions]` without
    asking the model for them read "no output 'attentions'", as if the name were wrong."""
    transformers = pytest.importorskip("transformers")
    from runner.outputs import plan_outputs

    out = transformers.modeling_outputs.BaseModelOutput(last_hidden_state=torch.zeros(2, 3, 4))
    with pytest.raises(ConfigError, match=r"^model.outputs: output 'attentions' is None \(the model returned no "
                                          r"tensor there; None leaves are skipped\); a HuggingFace model returns "
                                          r"them when asked: \+model.module.config.output_attentions=true"):
        plan_outputs(out, ["attentions"], "Bert")
    with pytest.raises(ConfigError, match=r"output 'hidden_states' is None .*output_hidden_states=true$"):
        plan_outputs(out, ["hidden_states"], "Bert")
    with pytest.raises(ConfigError, match=r"^model.outputs: no output 'nope'; the model's outputs are: last_hidden_state$"):
        plan_outputs(out, ["nope"], "Bert")
    assert plan_outputs(out, ["last_hidden_state"], "Bert").paths == ("last_hidden_state",)
    # An encoder-decoder's prefixed names get the same hints (T5's encoder_hidden_states had
    # been told to "keep another output").
    seq2seq = transformers.modeling_outputs.Seq2SeqModelOutput(last_hidden_state=torch.zeros(2, 3, 4))
    with pytest.raises(ConfigError, match=r"output 'encoder_hidden_states' is None .*output_hidden_states=true$"):
        plan_outputs(seq2seq, ["encoder_hidden_states"], "T5")
    with pytest.raises(ConfigError, match=r"output 'decoder_attentions' is None .*output_attentions=true "):
        plan_outputs(seq2seq, ["decoder_attentions"], "T5")
    from runner.outputs import why_empty

    assert why_empty("encoder_attentions").endswith("+model.module.config.attn_implementation=eager returns them")
    # A nest of Nones asked for by its prefix: None too, not "no output".
    with pytest.raises(ConfigError, match=r"^model.outputs: output 'past' is None"):
        plan_outputs({"y": torch.zeros(2), "past": [None, None]}, ["past"], "M")


def test_a_dataclass_output_with_none_and_two_kinds_of_input(make_cfg, model_dir, tmp_path):
    text = """
module: {_target_: tests.io_models.DataclassOut, features: 8}
batch: 2
inputs:
  x: {shape: [8]}
  scale: {kind: int, shape: [1], low: 1, high: 4}
"""
    result = _job(make_cfg, tmp_path, model_dir("dc", text), "model=dc")
    assert result["status"] == "ok", result["reason"]
    assert result["model_io"]["outputs"] == ["first"]
    assert result["model_io"]["inputs"]["scale"]["kind"] == "int"
    # The None field asked for by name: said to be None, not missing from a list without it.
    spec = resolve(make_cfg(*QUICK, model_dir("dc", text), "model=dc", "model.outputs=[second]"))
    with pytest.raises(ConfigError, match=r"^model.outputs: output 'second' is None \(the model returned no tensor "
                                          r"there; None leaves are skipped\); keep another output"):
        build(spec)


def test_an_lstm_answers_a_tuple_holding_a_tuple(make_cfg, model_dir, tmp_path):
    text = """
module: {_target_: torch.nn.LSTM, input_size: 8, hidden_size: 16, batch_first: true}
batch: 3
inputs: {input: {shape: [5, 8]}}
"""
    result = _job(make_cfg, tmp_path, model_dir("lstm", text), "model=lstm")
    assert result["status"] == "ok", result["reason"]
    assert result["model_io"]["outputs"] == ["0", "1.0", "1.1"]  # output, (h_n, c_n)
    assert result["figures"]["check_mismatches"] == 0


def test_a_leaf_that_is_not_a_tensor_is_one_line_naming_its_path(make_cfg, model_dir):
    text = """
module: {_target_: tests.io_models.NotATensor}
batch: 2
inputs: {x: {shape: [4]}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("nat", text), "model=nat"))
    with pytest.raises(ConfigError) as err:
        build(spec)
    message = str(err.value)
    assert "\n" not in message and "output '1' is a str, not a tensor" in message and "model.outputs" in message
    # Keeping only the tensor makes it runnable.
    spec = resolve(make_cfg(*QUICK, model_dir("nat", text), "model=nat", "model.outputs=[0]"))
    assert build(spec).out_paths == ("0",)
    # No tensor at all, and no config to turn it off in: the fix is a wrapper (it had offered a
    # config to turn it off in and model.outputs=[...]).
    spec = resolve(make_cfg(*QUICK, model_dir("np", text.replace("NotATensor", "NumpyOut")), "model=np"))
    with pytest.raises(ConfigError) as err:
        build(spec)
    assert str(err.value) == ("model NumpyOut: output 'output' is a ndarray, not a tensor, and it returns no tensor beside "
                              "it; the runner times tensors: wrap the model in a module whose forward returns them "
                              "(torch.as_tensor)")


def test_an_input_forward_does_not_take_is_named(make_cfg, model_dir):
    text = """
module: {_target_: torch.nn.Linear, in_features: 4, out_features: 4}
batch: 2
inputs: {x: {shape: [4]}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("lin", text), "model=lin"))
    with pytest.raises(ConfigError, match=r"^model.inputs.x: Linear.forward has no argument 'x' \(it takes: input\)"):
        build(spec)


def test_a_failing_forward_names_the_data_arguments_left_out(make_cfg, model_dir):
    """T5 without decoder_input_ids raised "specify exactly one of input_ids or inputs_embeds",
    though input_ids was given: the error names forward's data arguments that were not."""
    text = """
module: {_target_: tests.io_models.EncoderDecoder}
batch: 2
inputs: {input_ids: {kind: tokens, shape: [3], vocab: 16}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("ed", text), "model=ed"))
    with pytest.raises(ConfigError) as err:
        build(spec)
    message = str(err.value)
    assert message.startswith("model EncoderDecoder: its forward raised ValueError: You must specify exactly one of")
    assert message.endswith("; forward also takes decoder_input_ids, not given: add it as "
                            "model.inputs.decoder_input_ids if the model needs it"), message
    given = resolve(make_cfg(*QUICK, model_dir("ed", text), "model=ed",
                             "++model.inputs={decoder_input_ids: {kind: tokens, shape: [3], vocab: 16}}"))
    assert build(given).out_paths == ("output",)


def test_the_name_comes_from_target_not_from_the_config_file(make_cfg):
    spec = resolve(make_cfg("device=cpu", "model=linear", "model.module._target_=torch.nn.Tanh",
                            "~model.module.in_features", "~model.module.out_features"))
    assert spec.model_name == "Tanh"
    spec = resolve(make_cfg("device=cpu", "model=linear", "model.name=my-linear"))
    assert spec.model_name == "my-linear"


def test_without_transformers_the_error_names_the_extra(make_cfg, monkeypatch):
    spec = resolve(make_cfg(*QUICK, *TINY_GPT2))
    for name in [m for m in sys.modules if m == "transformers" or m.startswith("transformers.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now fails
    with pytest.raises(ConfigError, match=r"transformers is not installed; pip install 'transformers>=4\.44' \(or, in the runner's checkout, "
                       r"pip install -e '\.\[hf\]'\)$"):
        build(spec)


def test_an_input_that_only_kwargs_would_take_is_run_and_said(make_cfg, tmp_path):
    """HuggingFace forwards take **kwargs: a misspelt attention mask is accepted there and
    ignored (the job ran without its mask). The job runs, and says so with forward's names."""
    pytest.importorskip("transformers")  # the [dev] extra alone has no transformers
    result = _job(make_cfg, tmp_path, *TINY_BERT, "~model.inputs.attention_mask",
                  "++model.inputs={attn_mask: {kind: mask, shape: [seq], random_lengths: true}}")
    assert result["status"] == "ok"
    [said] = [w for w in result["warnings"] if w.startswith("model.inputs.attn_mask")]
    assert said.startswith("model.inputs.attn_mask: BertModel.forward has no argument 'attn_mask': it goes to "
                           "**kwargs, which may ignore it (forward's named arguments: input_ids, attention_mask, ")


def test_a_constructor_key_no_argument_takes_is_said_with_the_closest_name(make_cfg, tmp_path):
    """HuggingFace configs keep any keyword as an attribute: num_hidden_layer (for
    num_hidden_layers) built the default depth without a word. Every _target_'s keys are
    checked against its arguments (its base classes' too); the bundled configs raise nothing."""
    pytest.importorskip("transformers")  # the [dev] extra alone has no transformers
    result = _job(make_cfg, tmp_path, *TINY_BERT, "+model.module.config.num_hidden_layer=3")
    assert result["status"] == "ok"
    assert [w for w in result["warnings"] if "has no argument" in w] == [
        "model.module.config.num_hidden_layer: BertConfig has no argument 'num_hidden_layer' but has "
        "'num_hidden_layers': a misspelling? It was accepted, and may be ignored"]
    spec = resolve(make_cfg(*QUICK, *TINY_GPT2))
    assert build(spec).warnings == []
    assert unused_keys({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2, "bias": True}) == []
    # Keys a config reads without naming them, far from every argument it names: not flagged.
    assert unused_keys({"_target_": "transformers.BertConfig", "attn_implementation": "eager", "num_labels": 3,
                        "torch_dtype": "float32"}) == []
    assert unused_keys({"_target_": "torch.nn.RNN", "input_size": 2, "hidden_size": 2, "nonlinearity": "relu"}) == []


def test_a_package_that_fails_to_import_is_named_broken_not_the_name_wrong(make_cfg, tmp_path, monkeypatch):
    """A torchvision built for another torch raises as it is imported ("operator torchvision::nms
    does not exist"): the error had told the user to name an importable class, as if the name
    were wrong. A package that raises, or needs a module that is not installed, is said to be so;
    a wrong name is still one."""
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text('raise RuntimeError("operator brokenpkg::nms does not exist")\n')
    (tmp_path / "needy.py").write_text("import a_module_nobody_installed\n")
    (tmp_path / "fine.py").write_text("import torch\nNet = torch.nn.Identity\n")
    (tmp_path / "typo.py").write_text("def f(:\n")
    # A folder of models without __init__.py (a namespace package), and a package whose module
    # imports a module of its own that is not there.
    (tmp_path / "nsmods").mkdir()
    (tmp_path / "nsmods" / "net.py").write_text('raise RuntimeError("boom")\n')
    (tmp_path / "relpkg").mkdir()
    (tmp_path / "relpkg" / "__init__.py").write_text("")
    (tmp_path / "relpkg" / "relmiss.py").write_text("from .helpers_gone import f\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def error(target: str) -> str:
        with pytest.raises(ConfigError) as raised:
            build(resolve(make_cfg(*QUICK, f"model.module._target_={target}")))
        return str(raised.value)

    assert error("brokenpkg.Net") == (
        "model.module._target_=brokenpkg.Net: cannot be imported (operator brokenpkg::nms does not exist); brokenpkg is "
        f"found but raised that while importing: fix it, or reinstall it (a package built for another torch than this "
        f"{torch.__version__} fails so)")
    assert error("needy.Net").endswith("needy is found but needs a_module_nobody_installed, which is not installed: "
                                       "pip install it (its package may be named otherwise)")
    assert error("typo.Net").startswith("model.module._target_=typo.Net: cannot be imported (invalid syntax")
    assert "typo is found but raised that while importing" in error("typo.Net")
    assert error("nsmods.net.Net").endswith("(boom); nsmods is found but raised that while importing: fix it, or "
                                            f"reinstall it (a package built for another torch than this {torch.__version__} "
                                            "fails so)")
    assert error("relpkg.relmiss.Net").endswith("relpkg is found but its code imports relpkg.helpers_gone, which it "
                                                "does not have: fix that import")
    # Hydra's own refusal of a malformed name, raised through this module's frames: not a broken runner.
    assert "is found but" not in error("runner.models.mlp.MLP.")
    assert error("fine.Nett").endswith("did you mean fine.Net?")
    assert error("fine.sub.Net").startswith("model.module._target_=fine.sub.Net: cannot be imported (No module named")
    assert "is found but" not in error("fine.sub.Net")


def test_a_misspelt_target_names_its_key_and_the_closest_name(make_cfg):
    """With transformers installed, a typo is a typo, not a missing package; a nested _target_
    (the model's config) is named by its own key."""
    pytest.importorskip("transformers")  # the [dev] extra alone has no transformers
    spec = resolve(make_cfg(*QUICK, *TINY_GPT2, "model.module._target_=transformers.GPT2LMHeadModl"))
    with pytest.raises(ConfigError) as raised:
        build(spec)
    assert str(raised.value) == ("model.module._target_=transformers.GPT2LMHeadModl: cannot be imported "
                                 "(transformers has no GPT2LMHeadModl); did you mean transformers.GPT2LMHeadModel?")
    spec = resolve(make_cfg(*QUICK, *TINY_GPT2, "model.module.config._target_=transformers.GPT2Confg"))
    with pytest.raises(ConfigError) as raised:
        build(spec)
    assert str(raised.value).startswith("model.module.config._target_=transformers.GPT2Confg: cannot be imported (")
    assert str(raised.value).endswith("did you mean transformers.GPT2Config?")


@pytest.mark.parametrize("overrides", [TINY_GPT2, TINY_BERT], ids=["gpt2", "bert"])
def test_huggingface_models_from_config_run_with_the_check_passing(make_cfg, tmp_path, overrides):
    pytest.importorskip("transformers")
    result = _job(make_cfg, tmp_path, *overrides)
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert f["check_mismatches"] == 0 and f["check_requests"] >= 8
    if overrides is TINY_GPT2:
        assert result["model"] == "GPT2LMHeadModel"
        assert result["model_io"]["outputs"] == ["logits"]
        assert list(result["model_io"]["inputs"]) == ["input_ids"]
    else:
        assert result["model"] == "BertModel"
        assert list(result["model_io"]["inputs"]) == ["input_ids", "attention_mask", "token_type_ids"]
        assert result["model_io"]["outputs"] == ["last_hidden_state", "pooler_output"]


# --- request sizes and buckets ------------------------------------------------------------

def _bucketed(make_cfg, *overrides):
    return resolve(make_cfg("device=cpu", "model=mlp", "model.batch=[1,2,4,8]", *overrides))


def test_request_sizes_follow_the_distribution_and_the_seed(make_cfg):
    spec = _bucketed(make_cfg, "model.sizes.batch.values=[1,3,8]", "model.sizes.batch.weights=[0.6,0.3,0.1]")
    sizes = draw_sizes(spec.model, 20000, torch.Generator().manual_seed(1))
    counts = Counter(z.batch for z in sizes)
    assert set(counts) == {1, 3, 8}
    assert counts[1] / 20000 == pytest.approx(0.6, abs=0.02) and counts[8] / 20000 == pytest.approx(0.1, abs=0.02)
    again = draw_sizes(spec.model, 20000, torch.Generator().manual_seed(1))
    assert again == sizes
    uniform = draw_sizes(_bucketed(make_cfg).model, 8000, torch.Generator().manual_seed(2))
    assert set(Counter(z.batch for z in uniform)) == set(range(1, 9))  # default: 1..largest bucket
    ranged = _bucketed(make_cfg, "model.sizes.batch.low=3", "model.sizes.batch.high=5").model
    assert {z.batch for z in draw_sizes(ranged, 2000, torch.Generator().manual_seed(3))} == {3, 4, 5}
    # One bound alone: the other as by default (high=2 alone was refused as "low=0 high=2").
    for bound, drawn in (("high=2", {1, 2}), ("low=7", {7, 8})):
        alone = _bucketed(make_cfg, f"model.sizes.batch.{bound}").model
        assert {z.batch for z in draw_sizes(alone, 2000, torch.Generator().manual_seed(3))} == drawn


def test_each_size_pads_to_the_smallest_bucket_that_fits(make_cfg):
    model = _bucketed(make_cfg).model
    assert [bucket_of(model, Size(b, 0)).batch for b in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert [z.batch for z in buckets(model)] == [8, 4, 2, 1]  # captured largest first
    # 3 -> 4 and 5 -> 8: 1 + 3 padded rows for 8 real ones.
    assert padding_waste(model, [Size(3, 0), Size(5, 0)]) == pytest.approx(4 / 8)


MASKED = """
module: {_target_: tests.io_models.Masked, vocab: 50, dim: 4}
batch: [2, 4]
seq: [4, 8]
inputs:
  input_ids: {kind: tokens, shape: [seq], vocab: 50}
  attention_mask: {kind: mask, shape: [seq], random_lengths: true}
  flags: {kind: bool, shape: [seq]}
"""


def test_padding_puts_real_rows_first_and_zeros_masks_on_the_padding(make_cfg, model_dir):
    spec = resolve(make_cfg(*QUICK, model_dir("masked", MASKED), "model=masked"))
    request = make_request(spec.model, Size(3, 5), torch.float32, torch.Generator().manual_seed(0))
    mask = request["attention_mask"]
    assert mask.shape == (3, 5) and (mask[:, 0] == 1).all()
    # Ones up to each sample's length, zeros after.
    assert all(row.tolist() == sorted(row.tolist(), reverse=True) for row in mask)
    layout = Layout(spec.model, Size(4, 8), torch.float32)
    views = layout.views(packed(request, layout))
    assert torch.equal(views["input_ids"][:3, :5], request["input_ids"])
    assert views["input_ids"][3].eq(0).all() and views["input_ids"][:, 5:].eq(0).all()
    assert views["attention_mask"][:, 5:].eq(0).all() and views["attention_mask"][3].eq(0).all()
    assert views["flags"].dtype == torch.bool


def _padded_lanes(spec):
    """Lanes that launch every request in its bucket, as graphs do, on the CPU: the workload
    is planned for graphs and the lanes run those shapes eagerly (the eager fallback's path)."""
    as_graph = dataclasses.replace(spec, graph=True)
    workload = build(as_graph)
    return as_graph, workload, build_lanes(spec, workload)


def test_mixed_sizes_over_buckets_are_all_answered_and_padded_rows_stay_out_of_the_check(make_cfg, model_dir):
    text = """
module: {_target_: tests.io_models.AffineRows}
batch: [1, 2, 4, 8]
inputs: {x: {shape: [3]}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("affine", text), "model=affine"))
    as_graph, workload, lanes = _padded_lanes(spec)
    sizes = [Size(b, 0) for b in (3, 1, 8, 5, 2, 7, 4, 6, 1, 3)]
    requests = [make_request(spec.model, z, torch.float32, torch.Generator().manual_seed(i)) for i, z in enumerate(sizes)]
    keys = [launch_key(as_graph, z) for z in sizes]
    assert [k.batch for k in keys] == [4, 1, 8, 8, 2, 8, 4, 8, 1, 4]
    responses = serve_and_collect(lanes, [packed(r, workload.layout(k)) for r, k in zip(requests, keys, strict=False)], keys)
    for z, k, r, (out,) in zip(sizes, keys, requests, responses, strict=True):
        assert out.shape == (k.batch, 3)  # the bucket's rows came back...
        assert torch.equal(out[: z.batch], 2 * r["x"] + 1)  # ...the real ones right...
        assert out[z.batch :].eq(1).all()  # ...and the padded rows (zeros in) are not the request's
    # The check draws its own mixed sizes, covers every bucket, and compares real rows only.
    result = check_schedule(as_graph, workload, lanes, 64)
    assert result.passed and result.requests == 64


def test_the_checks_first_chunk_uses_every_bucket_in_every_slot(make_cfg):
    """With the copies in the graph each slot has a graph per bucket: the first chunk (all a
    tight budget may allow) used each bucket once, in one slot, leaving most of those graphs
    unchecked."""
    from runner.check import first_chunk

    spec = resolve(make_cfg("measure=quick", "model.batch=[1,8,32]", "streams=4", "staging.slots=2"),
                   cuda_count=lambda: 1)
    ring = spec.streams * spec.slots
    assert first_chunk(spec, ring, 128) == 3 * ring
    sizes = draw_sizes(spec.model, first_chunk(spec, ring, 128), torch.Generator().manual_seed(0), cover=True, ring=ring)
    pairs = {(j % ring, bucket_of(spec.model, z)) for j, z in enumerate(sizes)}
    assert len(pairs) == ring * 3  # every (slot, bucket)
    assert first_chunk(spec, ring, 10) == 10  # never more than asked


def test_a_model_that_mixes_rows_fails_the_check_under_padding(make_cfg, model_dir):
    """Padding is only sound for models whose rows do not see each other: one that centres its
    batch answers differently once padded, and the check says so."""
    text = """
module: {_target_: torch.nn.BatchNorm1d, num_features: 3, track_running_stats: false}
batch: [2, 8]
sizes: {batch: {values: [3, 5]}}
inputs: {input: {shape: [3]}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("bn", text), "model=bn"))
    as_graph, workload, lanes = _padded_lanes(spec)
    result = check_schedule(as_graph, workload, lanes, 32)
    assert not result.passed
    # Held to its first chunk (what a tight budget leaves), the check still compares padded
    # requests: it had covered each bucket at its own size alone, and passed this model.
    cut = check_schedule(as_graph, workload, lanes, 32, max_duration_s=0.0)
    assert cut.requests < 32 and cut.padded_requests > 0 and not cut.passed


def test_padding_keeps_an_int_input_within_its_range(make_cfg, model_dir):
    """Padded rows held zeros whatever the input's range: 1-based ids (kind int, low 1) then
    read 0 in them, an index of -1 for a model that shifts them down (on a GPU, a device assert)."""
    text = """
module: {_target_: tests.io_models.OneBased, vocab: 10}
batch: [2, 8]
sizes: {batch: {values: [3, 5]}}
inputs: {ids: {shape: [6], kind: int, low: 1, high: 11}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("onebased", text), "model=onebased"))
    as_graph, workload, lanes = _padded_lanes(spec)
    result = check_schedule(as_graph, workload, lanes, 16)
    assert result.passed and result.padded_requests > 0
    # A slot's bytes, read in the largest bucket's shape (the capture's warm-up, direct staging
    # before the check): a small request's own bucket left zeros past it, now the largest
    # request's values.
    small = spec.model.__class__(**{**spec.model.__dict__, "batch_sizes": dataclasses.replace(
        spec.model.batch_sizes, values=(1,), weights=())})
    as_small = dataclasses.replace(as_graph, model=small)
    small_lanes = build_lanes(dataclasses.replace(spec, model=small), build(as_small))
    top = build(as_small).layout(Size(8, 0))
    for slot in small_lanes.lanes[0].slots:
        assert (top.views(slot.host_in)["ids"] >= 1).all()
    # A request packed at a small bucket (as the check and copy staging write it into a slot),
    # read in the largest bucket's shape: its alignment gap had held zeros.
    flat = packed(make_request(small, Size(1, 0), torch.float32, torch.Generator()), build(as_small).layout(Size(2, 0)))
    wide = torch.zeros(top.nbytes, dtype=torch.uint8)
    wide[: flat.numel()].copy_(flat)
    read = top.views(wide)["ids"]
    assert (read[: flat.numel() // 48] >= 1).all()  # every row the small flat's bytes reach


def test_the_checks_first_chunk_pads_each_bucket_as_far_as_the_sizes_go(make_cfg):
    from runner.check import first_chunk

    spec = resolve(make_cfg("measure=quick", "model.batch=[2,8,32]", "model.sizes.batch.values=[3,5,20,32]",
                            "streams=2", "staging.slots=2"), cuda_count=lambda: 1)
    ring = spec.streams * spec.slots
    sizes = draw_sizes(spec.model, first_chunk(spec, ring, 128), torch.Generator().manual_seed(0), cover=True, ring=ring)
    # Buckets largest first, each in every slot: the smallest size drawn in it in the even
    # slots, its own size in the odd ones; bucket 2, which no size drawn pads to, at its own.
    assert [z.batch for z in sizes[: 3 * ring]] == [20, 32, 20, 32, 3, 8, 3, 8, 2, 2, 2, 2]
    ranged = resolve(make_cfg("measure=quick", "model.batch=[4,16]", "model.sizes.batch.low=2",
                              "model.sizes.batch.high=16", "staging.slots=1", "streams=1"), cuda_count=lambda: 1)
    assert [z.batch for z in draw_sizes(ranged.model, 2, torch.Generator(), cover=True)] == [5, 2]


def test_sequence_buckets_check_real_positions_of_a_mask_aware_model(make_cfg, model_dir):
    spec = resolve(make_cfg(*QUICK, model_dir("masked", MASKED), "model=masked"))
    as_graph, workload, lanes = _padded_lanes(spec)
    assert {r.key for r in workload.plan} <= set(buckets(spec.model))
    result = check_schedule(as_graph, workload, lanes, 48)
    assert result.passed and result.max_rel_err < 1e-6


STRICT = """
module: {_target_: tests.io_models.Strict, vocab: 50, dim: 4}
batch: [1, 2, 4]
seq: [32, 64, 128]
sizes: {batch: {values: [1, 2, 3, 4]}, seq: {values: [20, 32, 50, 64, 100, 128]}}
inputs:
  input_ids: {kind: tokens, shape: [seq], vocab: 50}
  token_type_ids: {kind: int, shape: [seq], low: 0, high: 2}
  attention_mask: {kind: mask, shape: [seq], random_lengths: true}
"""


@pytest.mark.parametrize("staging", ["direct", "copy"])
def test_every_request_of_a_bucketed_job_with_several_inputs_holds_real_values(make_cfg, model_dir, tmp_path, staging):
    """Direct staging serves the bytes a slot holds, written there in another request's shape:
    read in this request's shape, the token ids of the last one became this one's mask and
    token-type ids, and the model failed (an index out of range) after the check had passed.
    Every input now sits where it does in the largest shape, so the bytes are the same input's."""
    result = run_job(make_cfg(*QUICK, model_dir("strict", STRICT), "model=strict", f"staging.mode={staging}"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    assert result["figures"]["throughput_requests_per_s"] > 0 and result["figures"]["check_mismatches"] == 0
    # Every shape's inputs start where the largest's do.
    spec = resolve(make_cfg(*QUICK, model_dir("strict", STRICT), "model=strict"))
    top = Layout(spec.model, largest(spec.model), torch.float32)
    for size in (Size(1, 20), Size(3, 64), Size(4, 128)):
        layout = Layout(spec.model, size, torch.float32)
        assert [f[1] for f in layout.fields] == [f[1] for f in top.fields]
        assert layout.nbytes <= top.nbytes


def test_list_and_dict_arguments_reach_the_constructor_as_plain_lists_and_dicts(make_cfg, model_dir, tmp_path):
    """transformers' strict configs refused a ListConfig (Wav2Vec2Config's conv_dim=[32, 32]),
    and the one-line error ended at "Validation error for field 'conv_dim':"."""
    text = """
module: {_target_: tests.io_models.ListArgs, dims: [3, 5], options: {bias: false}}
batch: 2
inputs: {x: {shape: [3]}}
"""
    result = run_job(make_cfg(*QUICK, model_dir("lists", text), "model=lists"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    # A config that asks for OmegaConf's containers gets them, and the error says why in one line.
    with pytest.raises(ConfigError, match=r"model.module: .*dims must be a list and options a dict, not ListConfig"):
        run_job(make_cfg(*QUICK, model_dir("lists", text), "model=lists", "+model.module._convert_=none"),
                JobInfo(output_dir=tmp_path / "none"))


@pytest.mark.parametrize("key, value", [("input_ids.vocab", 51), ("token_type_ids.high", 3)])
def test_an_integer_range_one_past_the_models_fails_at_the_first_forward(make_cfg, model_dir, tmp_path, key, value):
    """Ids drawn at random up to 51 for a table of 50 missed the last one in the first forward,
    and the job failed later, in the check, with a bare IndexError."""
    one = """
module: {_target_: tests.io_models.Strict, vocab: 50, dim: 4}
batch: 1
seq: 2
inputs:
  input_ids: {kind: tokens, shape: [seq], vocab: 50}
  token_type_ids: {kind: int, shape: [seq], low: 0, high: 2}
  attention_mask: {kind: mask, shape: [seq]}
"""
    with pytest.raises(ConfigError, match=r"^model\.inputs ") as raised:
        run_job(make_cfg(*QUICK, model_dir("one", one), "model=one", f"model.inputs.{key}={value}"),
                JobInfo(output_dir=tmp_path))
    # The input the failing statement indexes with is named, with the key that bounds it (the
    # hint had blamed token ids and the vocabulary for token_type_ids' high=3 past two types).
    said = str(raised.value)
    named = {"input_ids.vocab": "model.inputs.input_ids (ids below vocab 51): lower model.inputs.input_ids.vocab",
             "token_type_ids.high": "model.inputs.token_type_ids (values in [0, 3)): lower model.inputs.token_type_ids.high"}
    assert named[key] in said and not any(other in said for k, other in named.items() if k != key), said
    assert "token_type_ids int [1, 2], values in [0, " in said, said


def test_an_output_the_model_returns_empty_is_named_not_dropped_without_a_word(make_cfg, model_dir, tmp_path):
    text = """
module: {_target_: tests.io_models.EmptyAttentions}
batch: 2
inputs: {x: {shape: [3]}}
"""
    result = run_job(make_cfg(*QUICK, model_dir("empty", text), "model=empty"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok" and result["model_io"]["outputs"] == ["last_hidden_state"]
    assert ("output 'attentions' is empty (the model returned no tensor there); transformers' default attention "
            "(sdpa) returns none: +model.module.config.attn_implementation=eager returns them: not measured"
            ) in result["warnings"]
    with pytest.raises(ConfigError, match=r"^model.outputs: output 'attentions' is empty \(the model returned no "):
        run_job(make_cfg(*QUICK, model_dir("empty", text), "model=empty", "model.outputs=[attentions]"),
                JobInfo(output_dir=tmp_path / "named"))


def test_an_empty_cross_attentions_beside_given_attentions_is_not_warned_about():
    """BERT (no cross-attention) asked for its attentions returns cross_attentions=(): the warning
    "output cross_attentions is empty ... not measured" had nothing to act on."""
    from runner.outputs import plan_outputs

    t = torch.ones(2, 3)
    assert plan_outputs({"last_hidden_state": t, "attentions": (t,), "cross_attentions": ()}, [], "M").warnings == ()
    # Both empty (sdpa): the attentions' warning alone, with its fix; with them given, an encoder's
    # empty cross_attentions is not warned about either (BERT had been told of both; walk).
    both = plan_outputs({"last_hidden_state": t, "attentions": (), "cross_attentions": ()}, [], "M").warnings
    assert [w.split(" is empty")[0] for w in both] == ["output 'attentions'"]
    alone = plan_outputs({"last_hidden_state": t, "cross_attentions": ()}, [], "M").warnings
    assert [w.split(" is empty")[0] for w in alone] == ["output 'cross_attentions'"]


def test_an_output_whose_size_follows_the_values_is_named_with_the_fix(make_cfg, model_dir, tmp_path):
    text = """
module: {_target_: tests.io_models.ValueSized}
batch: 4
inputs: {x: {shape: [16]}}
"""
    result = run_job(make_cfg(*QUICK, model_dir("valued", text), "model=valued"),
                     JobInfo(output_dir=tmp_path, multirun=True))
    assert result["status"] == "failed"
    # The output's name quoted: a model's output named "output" had read "output output of".
    assert result["reason"].startswith("bad config: output 'positive' of requests of size 4 came back as ")
    assert ("an output whose size follows the input's values, or grows as requests shrink, does not fit the "
            "response buffers; leave it out with model.outputs=[y]") in result["reason"]
    kept = run_job(make_cfg(*QUICK, model_dir("valued", text), "model=valued", "model.outputs=[y]"),
                   JobInfo(output_dir=tmp_path / "kept"))
    assert kept["status"] == "ok", kept["reason"]


def _refusal(make_cfg, model_dir, tmp_path, name: str, text: str) -> str:
    """The one line a job of the model config `text` (as model=`name`) is refused with."""
    with pytest.raises(ConfigError) as refused:
        run_job(make_cfg(*QUICK, model_dir(name, text), f"model={name}"), JobInfo(output_dir=tmp_path))
    return str(refused.value)


def test_two_outputs_sized_by_the_values_are_both_left_out_by_the_fix(make_cfg, model_dir, tmp_path):
    """Boxes and their scores both follow a threshold: the fix had offered the scores."""
    text = """
module: {_target_: tests.io_models.TwoValueSized}
batch: 8
inputs: {x: {shape: [4]}}
"""
    said = _refusal(make_cfg, model_dir, tmp_path, "two", text)
    assert said.endswith("does not fit the response buffers; so did scores; leave them out with model.outputs=[all]")
    kept = run_job(make_cfg(*QUICK, model_dir("two", text), "model=two", "model.outputs=[all]"),
                   JobInfo(output_dir=tmp_path / "kept"))
    assert kept["status"] == "ok", kept["reason"]


def test_an_output_with_one_entry_per_sample_is_one_line_with_the_fix(make_cfg, model_dir, tmp_path):
    """A detection-style list of per-sample dicts has fewer leaves at a smaller batch: the
    check failed with a bare IndexError and a traceback file."""
    text = """
module: {_target_: tests.io_models.PerSample}
batch: [2, 8]
inputs: {x: {shape: [4]}}
"""
    said = _refusal(make_cfg, model_dir, tmp_path, "persample", text)
    # The check's first request: the largest bucket's most padded size drawn, a batch of 3.
    assert said.startswith("model PerSample: its output lost 10 of the 16 leaves the first forward (the largest "
                           "request) had (3.boxes, 3.score, 4.boxes, ...): its structure follows the request"), said
    assert said.endswith("return tensors whose leading dimension is the batch (stack the entries), or leave such "
                         "outputs out with model.outputs=[...]")
    assert not (tmp_path / "result.json").exists()


def test_a_fault_in_the_models_code_is_not_blamed_on_the_inputs(make_cfg, model_dir, tmp_path):
    """self.lni for self.lin was said as 'model.inputs do not fit model Typo'."""
    text = """
module: {_target_: tests.io_models.Typo}
batch: 4
inputs: {x: {shape: [8]}}
"""
    said = _refusal(make_cfg, model_dir, tmp_path, "typo", text)
    assert said.startswith("model Typo: its forward raised AttributeError: 'Typo' object has no attribute 'lni' "
                           "(at io_models.py:"), said
    assert "on model.inputs x float [4, 8]): a fault in the model's code or in its settings (model.module)" in said
    assert "do not fit" not in said
    # In a sweep the job's reason is the fault, not "bad config: ..." (it had been, for a model
    # whose own code raised); a bad setting is still called one.
    swept = run_job(make_cfg(*QUICK, model_dir("typo", text), "model=typo"),
                    JobInfo(output_dir=tmp_path / "swept", multirun=True))
    assert swept["status"] == "failed" and swept["reason"] == said
    bad = run_job(make_cfg(*QUICK, "streams=-1"), JobInfo(output_dir=tmp_path / "bad", multirun=True))
    assert bad["reason"].startswith("bad config: streams=-1")


def test_layers_that_do_not_fit_each_other_are_named_beside_the_inputs(make_cfg, model_dir, tmp_path):
    """A torch op on what the model computed (`return self.second(h)`) had been said as the
    inputs' fault alone; an op on an input itself still is."""
    text = """
module: {_target_: tests.io_models.Misfit}
batch: 4
inputs: {x: {shape: [8]}}
"""
    said = _refusal(make_cfg, model_dir, tmp_path, "misfit", text)
    assert said.startswith("model.inputs (x float [4, 8]) do not fit model Misfit, or its layers do not fit each other "
                           "(mat1 and mat2 shapes cannot be multiplied (4x16 and 32x8); at io_models.py:"), said
    assert said.endswith("a statement that reads none of the inputs itself: `return self.second(h)`); fix model.inputs "
                         "and model.batch to what forward takes, or the model's settings (model.module) where the inputs "
                         "are right"), said
    wide = _refusal(make_cfg, model_dir, tmp_path / "wide", "misfit", text.replace("[8]", "[9]"))
    assert wide.startswith("model.inputs (x float [4, 9]) do not fit model Misfit (mat1 and mat2 shapes cannot be "
                           "multiplied (4x9 and 8x16); at io_models.py:"), wide
    assert "layers" not in wide and wide.endswith("in forward); fix model.inputs and model.batch to what forward takes")
    # An input read on a statement's second line, or by an inner module under its own name (h
    # for x), is read: the inputs' message alone.
    # So is one read out of **kwargs; and a local with no storage to ask for (a sparse tensor)
    # leaves the message as it was (asking had raised in its place).
    for name in ("SplitCall", "Wrapper", "Kwargs", "SparseLocal"):
        other = _refusal(make_cfg, model_dir, tmp_path / name, name.lower(),
                         text.replace("Misfit", name).replace("[8]", "[9]"))
        assert other.startswith(f"model.inputs (x float [4, 9]) do not fit model {name} (mat1 and mat2 shapes"), other
        assert "layers" not in other, other


def test_an_input_forward_needs_and_the_config_lacks_is_named(make_cfg, model_dir, tmp_path):
    """forward(input_ids, attention_mask, flags) given input_ids alone: "missing 2 required
    positional arguments" drew the token ids hint ("positional" read as a position)."""
    text = """
module: {_target_: tests.io_models.Masked, vocab: 50, dim: 4}
batch: 2
seq: 4
inputs:
  input_ids: {kind: tokens, shape: [seq], vocab: 50}
"""
    said = _refusal(make_cfg, model_dir, tmp_path, "lacks", text)
    assert "forward needs attention_mask, flags, which model.inputs do not give: add them " \
           "(model.inputs.attention_mask: {shape: [...]})" in said, said
    assert "token ids must stay below" not in said
    # A helper of the model's own called without an argument: no input to add (review).
    inner = _refusal(make_cfg, model_dir, tmp_path, "inner", """
module: {_target_: tests.io_models.InnerMissing}
batch: 2
inputs: {x: {shape: [8]}}
""")
    assert "forward needs" not in inner and "scale() missing 1 required positional argument: 'factor'" in inner, inner

def test_a_forward_that_takes_its_inputs_by_position_only_is_told_so(make_cfg, model_dir, tmp_path):
    """forward(self, x, /) was said to have no argument 'x' (it takes: no named arguments)."""
    text = """
module: {_target_: tests.io_models.PositionalOnly}
batch: 2
inputs: {x: {shape: [4]}}
"""
    with pytest.raises(ConfigError, match=r"^model.inputs.x: PositionalOnly.forward takes x by position only, and "
                                          r"the runner passes every input by name; wrap the model"):
        run_job(make_cfg(*QUICK, model_dir("posonly", text), "model=posonly"), JobInfo(output_dir=tmp_path))
    # A forward that names its arguments and also takes *args: the name is what is wrong.
    star = text.replace("PositionalOnly", "StarArgs").replace("{x:", "{y:")
    with pytest.raises(ConfigError, match=r"^model.inputs.y: StarArgs.forward has no argument 'y' \(it takes: x\)"):
        run_job(make_cfg(*QUICK, model_dir("star", star), "model=star"), JobInfo(output_dir=tmp_path / "star"))


def test_nan_where_eager_has_nan_matches_and_is_told(make_cfg, model_dir, tmp_path):
    """A row masked out entirely gives NaN in eager too: the outputs were bit-identical and the
    check called them different (max rel err inf)."""
    text = """
module: {_target_: tests.io_models.MaskedRows}
batch: 8
inputs: {x: {shape: [4]}, mask: {kind: bool, shape: [1]}}
"""
    result = run_job(make_cfg(*QUICK, model_dir("nanrows", text), "model=nanrows"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert f["check_mismatches"] == 0 and f["check_max_rel_err"] == 0.0
    assert 0 < f["check_nonfinite_requests"] <= f["check_requests"]
    assert any(w.startswith(f"eager's own output held NaN or inf in {f['check_nonfinite_requests']} of the ")
               for w in result["warnings"])


def test_the_comparison_holds_nan_and_inf_only_where_eager_has_them():
    from runner.check import compare

    want = torch.tensor([[1.0, 2.0], [float("nan"), float("inf")]])
    assert compare((want.clone(),), (want,)) == (0.0, True)
    off = want.clone()
    off[0, 0] = 1.5
    err, nonfinite = compare((off,), (want,))
    assert nonfinite and err == pytest.approx(0.5 / math.sqrt(5.0))  # on the finite values only
    moved = torch.tensor([[float("nan"), 2.0], [1.0, float("inf")]])
    assert compare((moved,), (want,))[0] == math.inf  # NaN elsewhere: not the same output
    sign = torch.tensor([[1.0, 2.0], [float("nan"), -float("inf")]])
    assert compare((sign,), (want,))[0] == math.inf  # -inf for inf
    # A response whose shape the request cannot have had: inf, as a pair (the check unpacks it;
    # a bare inf crashed it with a TypeError).
    assert compare((torch.zeros(2),), (torch.zeros(3),)) == (math.inf, False)
    from runner.check import relative_error
    assert relative_error((torch.zeros(2, 2),), (torch.zeros(3),)) == math.inf
    nothing = torch.full((2, 2), float("nan"))
    assert compare((nothing.clone(),), (nothing,))[0] == math.inf  # nothing finite to compare
    assert compare((torch.ones(3),), (torch.ones(3),)) == (0.0, False)


def test_resume_keeps_a_result_whose_config_json_cannot_hold_as_it_is(make_cfg, model_dir, tmp_path):
    """Integer keys (HF's id2label) come back from result.json as strings: compared as they
    were, the same config read as changed, and resume refused it."""
    text = """
module: {_target_: tests.io_models.ListArgs, dims: [3, 5], options: {bias: false, 0: NEG, 1: POS}}
batch: 2
inputs: {x: {shape: [3]}}
"""
    info = JobInfo(output_dir=tmp_path, overrides=["model=labels"])
    first = run_job(make_cfg(*QUICK, model_dir("labels", text), "model=labels"), info)
    assert first["status"] == "ok", first["reason"]
    again = run_job(make_cfg(*QUICK, model_dir("labels", text), "model=labels", "resume=true"), info)
    assert again["status"] == "skipped"


def test_a_bucketed_job_reports_buckets_waste_and_real_samples(make_cfg, tmp_path):
    result = _job(make_cfg, tmp_path, "model.batch=[4,8,16]", "model.sizes.batch.values=[3,8,12]")
    assert result["status"] == "ok", result["reason"]
    f = result["figures"]
    assert result["model_io"]["batch_buckets"] == [4, 8, 16]
    # The plan the timed passes cycle through: a count of requests (it was called request_sizes).
    assert result["model_io"]["plan_requests"] >= 16 and "request_sizes" not in result["model_io"]
    # Real samples per request: the mean of 3, 8 and 12 as drawn, never the bucket's 16.
    assert 3 < f["samples_per_request"] < 12 and 3 <= f["throughput_samples_per_request"] <= 12
    # samples/s counts the real samples the passes served (3 to 12 a request, never the bucket's
    # 16; the median of the passes' own: tests/test_job_cpu.py has it exactly).
    rates = f["throughput_requests_per_s_repeats"]
    assert 3 * min(rates) <= f["throughput_samples_per_s"] <= 12 * max(rates)
    assert f["padding_waste"] == 0.0  # the CPU runs eager: every request at its real size
    # What graphs would pad is said beside it (a bare "padding waste 0.0%" was unexplained).
    assert 0 < f["padding_waste_in_graphs"] < 16 / 3 - 1
    assert (f"padding waste 0.0% (eager ran each request at its real size; graphs would pad "
            f"{f['padding_waste_in_graphs']:.1%} on this plan)") in render(result)
    assert set(f["buckets"]) <= {"4", "8", "16"} and sum(b["requests"] for b in f["buckets"].values()) == f["latency_e2e_us"]["n"]
    assert f["check_mismatches"] == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.batch=[0,4]", r"model.batch=\[0, 4\]: use a whole number >= 1, or a list of bucket sizes"),
        # A quoted number (batch: "8" in a file) was said as model.batch=8: use a whole number.
        ("model.batch='8'", r"model.batch: '8' is a string \(quoted .*\); write the number without quotes, "
                            r"e.g. model.batch=8$"),
        ("model.batch=[1,'8']", r"model.batch: '8' is a string"),
        # measure=quick ~measure ran the schema's bare defaults (a 20 s budget) without a word.
        ("~measure", r"^~measure: the runner needs a measure option; choose one \(measure=NAME\) instead of dropping it$"),
        # [1,1] had become the one bucket [1] without a word.
        ("model.batch=[8,1,8]", r"^model.batch=\[8, 1, 8\]: 8 given more than once; give each bucket size once, "
                                r"e.g. model.batch=\[1,8\]$"),
        ("model.sizes.batch.values=[3]", r"model.sizes.batch: request sizes apply to buckets; make model.batch a list"),
        ("model.seq=16", r"^model.seq=16: no input shape uses seq \(the shapes: model.inputs.x.shape=\[256\]\); put seq "
                         r"in a shape or set model.seq=null$"),
        ("model.inputs.x.shape=[seq]", r"model.inputs.x.shape=\['seq'\] uses seq, but model.seq is not set"),
        ("model.inputs.x.kind=int", r"model.inputs.x: low=0 high=0; int inputs need low < high"),
        ("model.inputs.x.random_lengths=2", r"model.inputs.x.random_lengths=2: not a boolean"),
        ("model.outputs=['']", r"model.outputs: an empty name"),
        # An unquoted path that reads as another number: 1.10 (output 1's leaf 10) became "1.1".
        ("model.outputs=[x,1.10]", r"model.outputs=\[x,1.10\]: the output path 1.10 reads as 1.1; "
                                   r"quote it: \"model.outputs=\[x,'1.10'\]\"$"),
        ("model.outputs=[1e5]", r"the output path 1e5 reads as 100000.0"),
    ],
)
def test_bad_model_keys_are_one_line_naming_the_key(make_cfg, override, message):
    from runner.spec import check_overrides

    with pytest.raises(ConfigError, match=message):
        check_overrides([override])
        resolve(make_cfg("device=cpu", override))


def test_output_paths_in_a_file_are_read_as_written():
    """Unquoted, YAML reads 1.10 as 1.1 and 010 as 8; quoted, they are the paths as written.
    (Hydra's command line reads 01 as the string '01': not refused there.)"""
    from runner.spec import _check_file_outputs, check_output_overrides

    for plain, read in (("1.10", "1.1"), ("010", "8"), ("0x10", "16"), ("true", "True")):
        with pytest.raises(ConfigError, match=rf"^model.outputs \(in the config file model/m.yaml\): the output "
                                              rf"path {plain} reads as {read}; quote it: '{plain}'$"):
            _check_file_outputs(f"batch: 2\noutputs: [logits, {plain}]\n", "model", "model/m")
    for fine in ("['1.10']", '["1.10"]', "[logits, 0, 1.0, hidden_states.11]"):
        _check_file_outputs(f"outputs: {fine}\n", "model", "model/m")
    _check_file_outputs("model:\n  outputs: ['1.10']\n", "", "experiment/e")  # a global package
    with pytest.raises(ConfigError, match="1.10 reads as 1.1"):
        _check_file_outputs("model:\n  outputs: [1.10]\n", "", "experiment/e")
    check_output_overrides(["model.outputs=[01,'1.10',logits,0]"])


def test_an_input_setting_its_kind_never_reads_is_a_notice(make_cfg):
    """random_lengths on a float input was accepted without a word. Not refused: a preset's int
    input turned into tokens keeps its high."""
    spec = resolve(make_cfg("device=cpu", "model.inputs.x.random_lengths=true"))
    assert "model.inputs.x.random_lengths=true: only inputs of kind mask use it (this one is float): not used" \
        in spec.notices
    pytest.importorskip("transformers")
    spec = resolve(make_cfg("device=cpu", "model=bert", "model.inputs.token_type_ids.kind=tokens",
                            "model.inputs.token_type_ids.vocab=2"))
    assert [n for n in spec.notices if n.startswith("model.inputs.")] == [
        "model.inputs.token_type_ids.high=2: only inputs of kind int use it (this one is tokens): not used"]


def test_bucket_sizes_outside_the_buckets_are_refused(make_cfg):
    with pytest.raises(ConfigError, match=r"model.sizes.batch.values=\[3, 40\]: every size must lie in 1..8"):
        _bucketed(make_cfg, "model.sizes.batch.values=[3,40]")
    with pytest.raises(ConfigError, match=r"model.sizes.batch.weights: give one finite weight >= 0 per value"):
        _bucketed(make_cfg, "model.sizes.batch.values=[3,4]", "model.sizes.batch.weights=[1]")
    # An infinite weight failed in the build ("invalid multinomial distribution").
    with pytest.raises(ConfigError, match=r"model.sizes.batch.weights: give one finite weight >= 0 per value"):
        _bucketed(make_cfg, "model.sizes.batch.values=[3,4]", "model.sizes.batch.weights=[inf,1]")


@pytest.mark.parametrize(("override", "message"), [
    ("model.inputs.input_ids.vocab=99999999999999999999", r"^model.inputs.input_ids.vocab=99999999999999999999: "
                                                          r"token inputs need a vocab in 1..2\*\*63-1$"),
    ("model.inputs.token_type_ids.high=99999999999999999999",
     r"^model.inputs.token_type_ids: low=0 high=99999999999999999999; int inputs are int64"),
])
def test_integers_past_int64_are_refused_with_their_key(make_cfg, model_dir, override, message):
    """They failed the job in the build: "Overflow when unpacking long long"."""
    with pytest.raises(ConfigError, match=message):
        resolve(make_cfg("device=cpu", model_dir("strict", STRICT), "model=strict", override))


def test_output_paths_of_nests():
    out = {"a": (torch.zeros(1), None, [torch.ones(2)]), "b": None}
    assert [p for p, _, _ in leaves(out)] == ["a.0", "a.2.0"]
    assert [p for p, _, _ in leaves(torch.zeros(1))] == ["output"]


def test_the_bundled_hf_configs_are_readable_yaml():
    root = Path(__file__).resolve().parent.parent / "configs" / "model"
    for name in ("gpt2", "bert"):
        text = (root / f"{name}.yaml").read_text()
        assert "_target_: transformers." in text and "inputs:" in text


SPECTRUM = """
module: {_target_: tests.io_models.Spectrum, features: 8}
batch: 4
inputs: {x: {shape: [8]}}
"""


def test_a_complex_output_is_checked_on_both_parts(make_cfg, model_dir, tmp_path):
    """A complex leaf travels back whole and its check sees the imaginary part: a response
    wrong only there is a mismatch (the real part alone once hid it)."""
    from runner.check import relative_error

    result = _job(make_cfg, tmp_path, model_dir("spectrum", SPECTRUM), "model=spectrum")
    assert result["status"] == "ok", result["reason"]
    assert result["figures"]["check_mismatches"] == 0
    want = torch.complex(torch.ones(4, 5), torch.ones(4, 5))
    assert relative_error((want.conj(),), (want,)) == pytest.approx(math.sqrt(2))  # |-2j| / |1+1j|: only the imaginary part differs
    assert relative_error((want.clone(),), (want,)) == 0.0
    assert relative_error((want[:, :3],), (want[:, :3],)) == 0.0  # a view, not contiguous in memory


def test_a_misspelt_target_is_corrected_part_by_part_in_any_letter_case(tmp_path, monkeypatch):
    """runner.models.mlp.Mlp and runner.model.mlp.MLP had no suggestion (and Python's
    "'runner.models.mlp' is not a package" for a reason). A guess is never imported: a
    project's script next to its models would run (and exit) from an error message."""
    import importlib

    import runner.models.mlp  # noqa: F401 - loaded, as a job's failed import of runner.models.mlp.Mlp leaves it

    from runner.build import _closest_target, _import_error

    package = tmp_path / "project"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("raise SystemExit('the training script ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("project")
    assert _closest_target("project.trian.Net") == "project.train.Net"
    assert "project.train" not in sys.modules
    assert _closest_target("torch.Tensr") == "torch.Tensor" and _closest_target("torch.tensr") == "torch.tensor"

    assert _closest_target("runner.models.mlp.Mlp") == "runner.models.mlp.MLP"
    assert _closest_target("runner.model.mlp.MLP") == "runner.models.mlp.MLP"
    assert _closest_target("runner.models.mlp.MLQ") == "runner.models.mlp.MLP"
    assert _closest_target("torch.nn.Linear") is None  # nothing to correct
    assert _closest_target("torch.nn.Zzzzzz") is None and _closest_target("nope.Nope") is None
    error = str(_import_error("model.module", "runner.models.mlp.Mlp", ImportError("No module named ...")))
    assert error == ("model.module._target_=runner.models.mlp.Mlp: cannot be imported (runner.models.mlp has no Mlp); "
                     "did you mean runner.models.mlp.MLP?")


def test_a_huggingface_cache_in_the_outputs_is_refused_with_the_override_that_turns_it_off(make_cfg):
    """GPT-2 with its cache on returns a cache object beside the logits: the error named no
    override; it now gives the one that turns the cache off, and the tensors to keep instead."""
    pytest.importorskip("transformers")  # the [dev] extra alone has no transformers
    spec = resolve(make_cfg(*QUICK, *TINY_GPT2, "model.module.config.use_cache=true", "model.outputs=[]"))
    with pytest.raises(ConfigError) as refused:
        build(spec)
    message = str(refused.value)
    assert "Cache, not a tensor" in message and "+model.module.config.use_cache=false" in message
    assert message.endswith("or keep only tensors with model.outputs=[logits]")


def test_an_integer_input_where_the_model_wants_floats_is_told_to_be_a_float(make_cfg, tmp_path):
    """The hint was about token ids and vocabularies."""
    with pytest.raises(ConfigError, match=r"an input of kind int, bool, mask or tokens where the model wants floating "
                                          r"point takes kind: float; fix model.inputs"):
        run_job(make_cfg(*QUICK, "model.inputs.x.kind=bool"), JobInfo(output_dir=tmp_path))


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_floats_or_booleans_where_the_model_wants_ids_are_sent_to_an_integer_kind(make_cfg, tmp_path, kind):
    """nn.Embedding fed kind=bool was told to take kind: float, which fails too, with no hint (walk)."""
    embedding = ("model=linear", "model.module._target_=torch.nn.Embedding", "~model.module.in_features",
                 "~model.module.out_features", "+model.module.num_embeddings=10", "+model.module.embedding_dim=4",
                 "model.inputs.input.shape=[3]", f"model.inputs.input.kind={kind}")
    with pytest.raises(ConfigError) as raised:
        run_job(make_cfg(*QUICK, *embedding), JobInfo(output_dir=tmp_path))
    said = str(raised.value)
    assert (f"the model wants integer ids (Long or Int) where model.inputs.input (kind {kind}) gives {kind}s: an input "
            "of ids takes kind: tokens (with vocab) or kind: int (with low and high)") in said, said
    assert "takes kind: float" not in said


def test_a_key_a_huggingface_config_has_no_setting_for_is_named():
    """RoBERTa's num_layers (for num_hidden_layers) built the default 12 layers without a word:
    HuggingFace keeps any keyword as an attribute. Settings it consumes or has are not named."""
    pytest.importorskip("transformers")
    module = {"_target_": "transformers.BertModel",
              "config": {"_target_": "transformers.BertConfig", "num_layers": 1, "num_hidden_layers": 1,
                         "attn_implementation": "eager", "num_labels": 3, "output_attentions": True,
                         "_attn_implementation": "eager"}}  # the private name works as well
    [warning] = unused_keys(module)
    assert warning.startswith("model.module.config.num_layers: BertConfig has no setting 'num_layers'")
    assert warning.endswith(": kept as an attribute that the model may never read")
    assert unused_keys({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}) == []
    # The common names a config's attribute_map aliases are settings (DistilBERT's hidden_size
    # sets its dim); the warning had called them unread and pointed at another setting.
    # The hint names a setting: a name of several words, the one with all of them (n_layers had
    # pointed at num_labels); never a method (json had been offered to_json_file).
    [n_layers] = unused_keys({"_target_": "transformers.BertConfig", "n_layers": 1})
    assert "(it has 'num_hidden_layers')" in n_layers, n_layers
    [json_key] = unused_keys({"_target_": "transformers.BertConfig", "json": 1})
    assert "it has" not in json_key, json_key
    # A composite config's parts are plain mappings that it makes configs of: checked as those
    # (CLIP's text_config.hidden_sz built the default width without a word).
    clip = {"_target_": "transformers.CLIPModel",
            "config": {"_target_": "transformers.CLIPConfig", "projection_dim": 16,
                       "text_config": {"hidden_sz": 32, "num_hidden_layers": 1},
                       "vision_config": {"hidden_size": 32, "num_layers": 1, "image_size": 32}}}
    text, vision = unused_keys(clip)
    assert text == ("model.module.config.text_config.hidden_sz: CLIPTextConfig has no argument 'hidden_sz' but has "
                    "'hidden_size': a misspelling? It was accepted, and may be ignored")
    assert vision.startswith("model.module.config.vision_config.num_layers: CLIPVisionConfig has no setting "
                             "'num_layers' (it has 'num_hidden_layers')"), vision
    distil = {"_target_": "transformers.DistilBertModel",
              "config": {"_target_": "transformers.DistilBertConfig", "hidden_size": 128, "num_hidden_layers": 2,
                         "depth": 2}}
    [warning] = unused_keys(distil)
    assert warning.startswith("model.module.config.depth: DistilBertConfig has no setting 'depth'")
    # A key the config reads into another setting is no attribute of it, and was read: transformers 5
    # folds Llama's rope_theta into rope_parameters (it had been called unread, 'it has default_theta').
    llama = {"_target_": "transformers.LlamaConfig", "rope_theta": 500000.0, "rope_thetaa": 1.0}
    [warning] = unused_keys(llama)
    assert warning.startswith("model.module.rope_thetaa: LlamaConfig has no "), warning


PLANTED = ("model=linear", "~model.module.in_features", "~model.module.out_features", "+model.module.features=8",
           "model.inputs.input.shape=[8]", "model.batch=2")


def _planted(make_cfg, name: str, *more: str):
    return make_cfg("measure=quick", "device=cpu", *PLANTED, f"model.module._target_=tests.faulty_models.{name}", *more)


def test_the_check_is_not_blind_to_faults_only_the_served_path_has(make_cfg, tmp_path):
    """From a review of the check, each fault planted in the served path only (the reference is
    right): it had passed the check."""
    # An output whose size follows the values: copy_ broadcast its one row over the buffer's two.
    for seed in (0, 1, 2):
        with pytest.raises(ConfigError, match=r"^output 'output' of requests of size .* came back as"):
            run_job(_planted(make_cfg, "OneOrAll", f"seed={seed}"), JobInfo(output_dir=tmp_path / f"size{seed}"))
    # An integer leaf one off, beside 50,000 logits: 5e-6 by the norm, now compared exactly.
    ids = run_job(_planted(make_cfg, "IdsOffByOne"), JobInfo(output_dir=tmp_path / "ids"))
    assert ids["status"] == "invalid" and ids["figures"]["check_mismatches"] == ids["figures"]["check_requests"]
    # One wrong row of 4,096 in bf16: diluted by the whole leaf's norm (121 of 128 had passed).
    row = run_job(_planted(make_cfg, "OneRowWrong", "dtype=bf16", "model.batch=4096"), JobInfo(output_dir=tmp_path / "row"))
    assert row["status"] == "invalid" and row["figures"]["check_mismatches"] == row["figures"]["check_requests"]
    # A model answering with its previous call's answer (eager too): references computed in the
    # requests' order inherited the lag and matched (2 of 128 differed); now all but one do (the
    # first response is the answer to the build's probe, which the check reuses as a request).
    lag = run_job(_planted(make_cfg, "Lagging"), JobInfo(output_dir=tmp_path / "lag"))
    assert lag["status"] == "invalid" and lag["figures"]["check_mismatches"] >= lag["figures"]["check_requests"] - 1 > 2
    assert lag["figures"]["check_bad_requests"] == sorted(lag["figures"]["check_bad_requests"])[:10]
    assert "the model itself is not deterministic" in lag["reason"]
    # Eager repeats itself and the served answer differs, on the CPU: the reason says where a
    # difference can come from there ("126 of 128 differ" had said no more).
    assert row["reason"].endswith(
        "on the CPU each request is served by this same eager forward, on a copy of it in the model's input buffer: "
        "the difference lies in those copies, or in state the model keeps between calls (an answer that changes with "
        "the calls before it)"), row["reason"]
    # A model answering every request with its first answer: eager does too, so it matches; said.
    first = run_job(_planted(make_cfg, "FirstAnswer"), JobInfo(output_dir=tmp_path / "first"))
    assert first["status"] == "ok" and first["figures"]["check_same_responses"] >= 3
    assert any(w.startswith(f"each of the check's {first['figures']['check_same_responses']} requests that differ from "
                            "the first of their size got the same response as it") for w in first["warnings"])
    # The right answers pass: the same models, unplanted, and a leaf with torch's lazy conjugate
    # flag (the CPU's copy out had moved its raw, unconjugated values: 128 of 128 "differed").
    conj = run_job(_planted(make_cfg, "ConjSpectrum"), JobInfo(output_dir=tmp_path / "conj"))
    assert conj["status"] == "ok" and conj["figures"]["check_max_rel_err"] == 0.0
    fine = run_job(_planted(make_cfg, "Healthy", "dtype=bf16", "model.batch=4096", "+model.module.calls=1000000000"),
                   JobInfo(output_dir=tmp_path / "fine"))
    assert fine["status"] == "ok", fine["reason"]
    assert fine["figures"]["check_same_responses"] == 0 and not any("same response" in w for w in fine["warnings"])
    # Ids that follow the input beside a constant float: an answer that follows it (review).
    scaled = run_job(_planted(make_cfg, "IdsAndScale"), JobInfo(output_dir=tmp_path / "scaled"))
    assert scaled["status"] == "ok" and not any("same response" in w for w in scaled["warnings"])
    # A model that alternates call by call repeats itself two calls apart: the diagnosis also
    # forwards the request twice in a row, and calls it not deterministic (review).
    pong = run_job(_planted(make_cfg, "PingPong"), JobInfo(output_dir=tmp_path / "pong"))
    assert pong["status"] == "invalid" and "the model itself is not deterministic" in pong["reason"], pong["reason"]


def test_a_model_returning_its_own_buffer_is_judged_on_what_each_forward_returned(make_cfg, tmp_path, monkeypatch):
    """A reference that is the model's own buffer: the second eager forward of the diagnosis
    overwrote it, and a noisy model read as repeating itself (spread 0.0); the build's probe
    kept what the compile's later forwards wrote there."""
    noisy = run_job(_planted(make_cfg, "OwnBuffer"), JobInfo(output_dir=tmp_path / "noisy"))
    assert noisy["status"] == "invalid" and "the model itself is not deterministic" in noisy["reason"]
    assert noisy["figures"]["check_eager_spread"] > noisy["figures"]["check_tolerance_rel"]
    monkeypatch.setattr(torch, "compile", lambda model, mode=None: model)  # its forwards, not Inductor's
    spec = resolve(_planted(make_cfg, "CountsInOwnBuffer", "compile=default"))
    workload = build(spec)
    request, (leaf,) = workload.probe
    with torch.no_grad():
        first = workload.model.linear(request["input"]) + 1  # what the first forward returned
    assert torch.equal(leaf, first)


def test_a_misspelt_constructor_argument_gets_the_nearest_one(make_cfg):
    """+model.module.dept=3 said "the arguments do not fit ... fix the keys under model.module"."""
    from runner.build import instantiate_model

    with pytest.raises(ConfigError) as refused:
        instantiate_model(resolve(make_cfg(*QUICK, "model=mlp", "+model.module.dept=3")))
    assert str(refused.value) == "model.module.dept: MLP takes no argument 'dept'; did you mean model.module.depth?"
    with pytest.raises(ConfigError, match=r"^model.module: the arguments do not fit runner.models.mlp.MLP .*'zzz'"):
        instantiate_model(resolve(make_cfg(*QUICK, "model=mlp", "+model.module.zzz=3")))  # nothing near: as before
    # A typo in the model's own constructor (nn.Linear(..., bais=...)) names no key of the config:
    # its TypeError, not "did you mean model.module.bias" (review).
    with pytest.raises(ConfigError) as refused:
        instantiate_model(resolve(make_cfg(*QUICK, "model=linear", "model.module._target_=tests.io_models.InnerTypo",
                                           "~model.module.in_features", "~model.module.out_features",
                                           "+model.module.bias=true", "model.inputs.input.shape=[8]")))
    assert "did you mean" not in str(refused.value) and "got an unexpected keyword argument 'bais'" in str(refused.value)


def test_a_compiled_job_that_differs_is_not_told_to_look_at_the_copies(make_cfg, tmp_path, monkeypatch):
    """The CPU's reason for a mismatch said "each request is served by this same eager forward"
    under compile=default too, where the served forward is the compiled one (review)."""

    class PlusOne(torch.nn.Module):  # a "compiled" model whose answers differ from eager's
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            return self.model(*args, **kwargs) + 1.0

    monkeypatch.setattr(torch, "compile", lambda model, mode=None, **_: PlusOne(model))
    result = run_job(_planted(make_cfg, "Healthy", "compile=default", "+model.module.calls=1000000000"),
                     JobInfo(output_dir=tmp_path))
    assert result["status"] == "invalid" and result["effective"]["compile"] == "default", result["reason"]
    assert "same eager forward" not in result["reason"]


TIMESTEPPED = """
module: {_target_: tests.io_models.Timestepped, width: 8}
batch: 4
inputs:
  x: {shape: [8]}
  t: {shape: [], dtype: fp32}
"""


def test_a_float_input_of_its_own_dtype_is_made_laid_out_and_recorded_in_it(make_cfg, model_dir, tmp_path):
    spec = resolve(make_cfg(*QUICK, model_dir("stepped", TIMESTEPPED), "model=stepped", "dtype=bf16"))
    request = make_request(spec.model, Size(4, 0), spec.torch_dtype, torch.Generator().manual_seed(0))
    assert request["x"].dtype == torch.bfloat16 and request["t"].dtype == torch.float32
    layout = Layout(spec.model, Size(4, 0), spec.torch_dtype)
    views = layout.views(packed(request, layout))
    assert views["t"].dtype == torch.float32 and torch.equal(views["t"], request["t"])  # 4 bytes a value
    assert views["x"].dtype == torch.bfloat16 and torch.equal(views["x"], request["x"])
    result = run_job(make_cfg(*QUICK, model_dir("stepped", TIMESTEPPED), "model=stepped", "dtype=bf16"),
                     JobInfo(output_dir=tmp_path / "own"))
    assert result["status"] == "ok" and result["figures"]["check_requests"] >= 2
    assert result["model_io"]["inputs"]["t"]["dtype"] == "float32"
    assert result["model_io"]["inputs"]["x"]["dtype"] == "bfloat16"
    # Without its own dtype the forward fails in bf16: the input and the key that fixes it are named.
    with pytest.raises(ConfigError, match=r"^model\.inputs\.t: model Timestepped takes it in fp32, not bf16 \(t must be "
                                          r"float32, got torch\.bfloat16\); set model\.inputs\.t\.dtype=fp32 "):
        run_job(make_cfg(*QUICK, model_dir("stepped", TIMESTEPPED), "model=stepped", "dtype=bf16", "model.inputs.t.dtype=null"),
                JobInfo(output_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / RESULT_FILE).exists()


def test_an_input_dtype_at_fault_is_named_only_where_the_run_keeps_its_dtype(make_cfg, model_dir, tmp_path):
    """An input given its own dtype that the model does not take is named by that key (the run's
    dtype had been blamed: "cannot run in fp16 ... use dtype=fp32"); an fp32 input that lets a
    forward run only by promoting it all to fp32 is not offered as the fix (the run would be
    fp32 under a bf16 label): the run's dtype is."""
    with pytest.raises(ConfigError, match=r"^model\.inputs\.x\.dtype=fp16: model MLP takes it in bf16, the run's dtype "
                                          r"\(.*\); drop its own dtype \(model\.inputs\.x\.dtype=null\)$"):
        run_job(make_cfg(*QUICK, "dtype=bf16", "model.inputs.x.dtype=fp16"), JobInfo(output_dir=tmp_path / "own"))
    text = """
module: {_target_: tests.io_models.Promoting}
batch: 4
inputs: {x: {shape: [8]}}
"""
    with pytest.raises(ConfigError, match=r"^dtype=bf16: model Promoting cannot run in bf16 on cpu \(needs float32 "
                                          r"precision, got torch\.bfloat16\); use dtype=fp32"):
        run_job(make_cfg(*QUICK, model_dir("promoting", text), "model=promoting", "dtype=bf16"),
                JobInfo(output_dir=tmp_path / "bf16"))


def test_a_time_limit_that_runs_out_in_a_dtype_retry_leaves_the_error_as_it_was(make_cfg, model_dir):
    """The first forward failed at once on its dtype; a retry of it in another dtype outran the
    first forward's time limit, whose refusal ("ran without ending") had replaced the error."""
    from runner.build import ProbeLimit, build

    text = """
module: {_target_: tests.io_models.SlowInFp32}
batch: 4
inputs: {x: {shape: [8]}}
"""
    spec = resolve(make_cfg(*QUICK, model_dir("slow32", text), "model=slow32", "dtype=bf16"))
    with pytest.raises(ConfigError, match=r"^dtype=bf16: model SlowInFp32 cannot run in bf16 on cpu \(needs float32"):
        build(spec, ProbeLimit(0.1, lambda ran_s: "the limit's refusal"))


def test_an_own_dtype_on_an_input_that_is_not_float_is_a_notice_and_bf16_needs_the_gpu_to_have_it(make_cfg, model_dir):
    spec = resolve(make_cfg("device=cpu", "model.inputs.x.kind=int", "model.inputs.x.high=4", "model.inputs.x.dtype=fp16"))
    assert "model.inputs.x.dtype=fp16: only inputs of kind float use it (this one is int): not used" in spec.notices
    assert spec.model.inputs[0].dtype is None  # an int input stays int64
    with pytest.raises(ConfigError, match=r"^model\.inputs\.t\.dtype=bf16: cuda:0 cannot run bf16; use fp16 or fp32$"):
        resolve(make_cfg(model_dir("stepped", TIMESTEPPED), "model=stepped", "model.inputs.t.dtype=bf16"),
                cuda_count=lambda: 1, bf16_supported=lambda d: False)


def test_only_a_written_buffer_shared_by_two_lanes_is_refused():
    """Two lanes' outputs at one address race when both write it. An empty leaf (address 0 in
    every lane: a detector's boxes of a request with none) and a parameter returned as it is
    (read, never written) do not, and had been refused as 'one buffer of the model's own'."""
    from types import SimpleNamespace

    from runner.lanes import _refuse_shared_outputs

    model = torch.nn.Linear(2, 2)
    buffer = torch.zeros(3)
    lanes = [SimpleNamespace(index=i, out_paths=("boxes", "weight", "y")) for i in range(2)]
    spec = SimpleNamespace(model_name="Detector")
    fine = [[(torch.empty(0, 4), model.weight, torch.ones(3))] for _ in lanes]
    assert fine[0][0][0].data_ptr() == fine[1][0][0].data_ptr() == 0
    _refuse_shared_outputs(spec, SimpleNamespace(model=model), fine, lanes, "every stream's graph", "replayed at once")
    shared = [[(torch.empty(0, 4), model.weight, buffer)] for _ in lanes]
    with pytest.raises(ConfigError, match=r"^model Detector: output 'y' is one buffer of the model's own, the same in "
                                          r"every stream's graph \(streams 0 and 1\)"):
        _refuse_shared_outputs(spec, SimpleNamespace(model=model), shared, lanes, "every stream's graph", "replayed at once")


def test_a_forward_that_prints_is_warned_about_and_still_seen(make_cfg, model_dir, tmp_path, capsys):
    """Its prints flood the console and are timed with every request: said once, in a warning."""
    text = """
module: {_target_: tests.io_models.Printing}
batch: 4
inputs: {x: {shape: [8]}}
"""
    result = run_job(make_cfg(*QUICK, model_dir("printing", text), "model=printing"), JobInfo(output_dir=tmp_path))
    assert result["status"] == "ok"
    said = [w for w in result["warnings"] if w.startswith("model Printing: its")]
    assert said == ['model Printing: its first forward printed 18 characters ("forward on (4, 8)"): a forward that '
                    "prints on every request does so inside the timed passes, and the figures include the writes; "
                    "remove the prints from forward to measure the model alone"]
    assert capsys.readouterr().out.startswith("forward on (4, 8)\n")  # written through as it was printed
    quiet = run_job(make_cfg(*QUICK, "model.batch=2"), JobInfo(output_dir=tmp_path / "quiet"))
    assert not [w for w in quiet["warnings"] if "printed" in w]
    # The stream is the real one meanwhile: a forward that reads its buffer runs (a StringIO in
    # its place had failed it).
    user = run_job(make_cfg(*QUICK, model_dir("user", text.replace("Printing", "StreamUser")), "model=user"),
                   JobInfo(output_dir=tmp_path / "user"))
    assert user["status"] == "ok", user["reason"]


def test_a_class_factory_target_is_named_by_its_class_too(make_cfg):
    """transformers.AutoModel.from_config was labelled "from_config" in every table (walk)."""
    spec = resolve(make_cfg(*QUICK, "model=bert", "model.module._target_=transformers.AutoModel.from_config"))
    assert spec.model_name == "AutoModel.from_config"
    assert resolve(make_cfg(*QUICK, "model=linear")).model_name == "Linear"
