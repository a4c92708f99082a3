"""Composed config -> validated, frozen RunSpec: the only place that reads a DictConfig.

`validate` checks what the config alone can tell (ranges, cross-key rules, unknown keys);
`resolve` adds what the machine tells (which devices exist, what they support) and settles the
settings that will actually run, each change from the request explained in a notice.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    import torch

from runner.errors import ConfigError, condense, condense_deleted
from runner.schema import Config, bool_keys, keys_under

COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
OWN_GRAPHS = ("reduce-overhead", "max-autotune")  # modes in which torch records CUDA graphs itself
CPU_COMPILE = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}  # each, without its graphs
MAPS = ("model.inputs",)  # schema maps whose keys the user names
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:(\d+))$")
TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # torch's names; torch is imported
# where a job runs, not here: a sweep's launcher validates every job's config without it


SEQ = "seq"  # the shape entry that stands for the sequence size


@dataclass(frozen=True)
class InputSpec:
    """One keyword argument of forward."""

    name: str
    shape: tuple[Any, ...]  # one sample's shape: ints, and SEQ for the sequence size
    kind: str  # float, tokens, mask, int or bool
    vocab: int = 0
    low: int = 0
    high: int = 0
    random_lengths: bool = False
    dtype: Optional[str] = None  # a float input's own dtype ("fp32", "bf16", "fp16"); None: the run's

    def sample_shape(self, seq: int) -> tuple[int, ...]:
        return tuple(seq if d == SEQ else d for d in self.shape)

    @property
    def has_seq(self) -> bool:
        return SEQ in self.shape


@dataclass(frozen=True)
class SizeDist:
    """Request sizes: `values` drawn with `weights`, or uniform integers in [low, high]."""

    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    low: int = 0
    high: int = 0


@dataclass(frozen=True)
class ModelSpec:
    name: str
    module: Mapping[str, Any]  # `_target_` and arguments, for hydra.utils.instantiate
    inputs: tuple[InputSpec, ...]
    batches: tuple[int, ...]  # bucket sizes, ascending; one entry: a fixed batch
    seqs: tuple[int, ...]  # likewise for `seq`; () when no input uses it
    outputs: tuple[str, ...]  # leaves kept, by path; (): every tensor leaf
    batch_sizes: SizeDist = SizeDist()  # how bucketed runs draw request sizes
    seq_sizes: SizeDist = SizeDist()

    @property
    def bucketed(self) -> bool:
        return len(self.batches) > 1 or len(self.seqs) > 1

    @property
    def largest(self) -> tuple[int, int]:
        """(batch, seq) of the largest bucket; seq 0 when no input has one."""
        return self.batches[-1], (self.seqs[-1] if self.seqs else 0)

    @property
    def batch(self) -> int:
        return self.batches[-1]


@dataclass(frozen=True)
class MeasureSpec:
    budget_s: float
    warmup_ms: float
    min_requests: int
    min_duration_ms: float
    max_pass_ms: float
    repeats: int
    min_repeats: int
    stdrel: float
    latency_requests: int
    check_requests: int
    input_pool: int
    ceiling: bool
    interleave: bool
    cv_warn: float


@dataclass(frozen=True)
class LoadSpec:
    scenario: str  # offline, single_stream or server
    rate: Optional[float] = None  # server at a fixed rate (requests/s); None with search
    search: bool = False  # server with rate=max: find the highest rate under p99_ms
    p99_ms: Optional[float] = None
    duration_s: float = 1.0
    resolution: float = 0.05
    requests: int = 1000


@dataclass(frozen=True)
class RunSpec:
    """What runs: the request after device resolution. Plain values only."""

    model: ModelSpec
    device: str  # "cpu" or "cuda:N"
    dtype: str  # "fp32", "bf16" or "fp16"
    tf32: bool
    streams: int
    graph: bool
    pinned: bool
    copies_in_graph: bool
    staging: str  # "direct" or "copy"
    slots: int  # ring depth per lane
    copy_thread: bool  # copy staging: the host copy runs on a second thread
    warmup_iters: int
    fallback_eager: bool
    compile: str  # torch.compile mode, or "none"
    compile_cache: Optional[str]
    measure: MeasureSpec
    load: LoadSpec
    seed: int
    baseline: bool
    check: bool
    profile: bool
    timestamps: str
    resume: bool
    notices: tuple[str, ...] = ()  # each setting changed from the request, and why

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, TORCH_DTYPES[self.dtype])

    @property
    def mode(self) -> str:
        return mode_name(self.effective())

    def effective(self) -> dict[str, Any]:
        """The settings that ran, for the record."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "tf32": self.tf32,
            "streams": self.streams,
            "graph": self.graph,
            "pinned": self.pinned,
            "copies_in_graph": self.copies_in_graph,
            "staging": self.staging,
            "slots": self.slots,
            "copy_thread": self.copy_thread,
            "compile": self.compile,
        }



def mode_name(settings: Mapping[str, Any]) -> str:
    """Short name of an execution mode, e.g. 'graph x4 pinned', from effective settings."""
    kind = "graph" if settings["graph"] else "eager"
    copies = " copies-in-graph" if settings["copies_in_graph"] else ""
    memory = "pinned" if settings["pinned"] else "pageable"
    staging = settings.get("staging")  # absent in results written before staging modes existed
    ring = ""
    if staging:
        thread = "+thread" if staging == "copy" and settings.get("copy_thread") else ""
        ring = f" {staging}{thread}/{settings.get('slots', 1)}"
    compiled = settings.get("compile")
    compiled = f" compile:{compiled}" if compiled and compiled != "none" else ""
    return f"{kind}{copies} x{settings['streams']} {memory}{ring}{compiled}"


def _show(value: Any) -> str:
    """A value as the user would write it: true/false, and a float as short as it reads
    (model.batch=1e12 had been echoed as 1000000000000.0)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and "e" in format(value, "g"):
        return format(value, "g")  # exact digits otherwise: repr
    return str(value)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _unknown_keys(node: DictConfig, path: str) -> None:
    """`+key=value` bypasses the schema; catch what it added outside model.module."""
    if path in MAPS:  # the user's names (model.inputs.x): each value has the map's schema
        for key in node.keys():
            if isinstance(node[key], DictConfig):
                _unknown_keys(node[key], f"{path}.{key}")
        return
    allowed = keys_under(path)
    if not allowed:
        return
    for key in node.keys():
        full = f"{path}.{key}" if path else str(key)
        if key not in allowed:
            raise ConfigError(f"{full}: unknown key; valid keys here: {', '.join(allowed)}")
        child = node[key]
        if isinstance(child, DictConfig) and full != "model.module":
            _unknown_keys(child, full)


def _deleted_keys(cfg: DictConfig) -> None:
    """`~streams` deletes a top-level key (OmegaConf refuses it for nested ones): the job
    would run the schema's default while its record's config lacked the key."""
    for key in keys_under(""):
        if key not in cfg:
            raise ConfigError(condense_deleted(key))


def check_overrides(overrides: list[str]) -> None:
    """What the composed config can no longer tell: a boolean given as a number, an output's
    path given as a number that reads as another (1.10 as 1.1)."""
    booleans = bool_keys()
    check_output_overrides(overrides)
    for override in overrides:
        group = override.partition("=")[0]
        if group in ("~model", "~measure"):
            # The choice dropped: the schema's bare defaults ran instead (a 20 s budget after
            # measure=quick, with no word).
            raise ConfigError(f"{group}: the runner needs a {group[1:]} option; choose one ({group[1:]}=NAME) "
                              "instead of dropping it")
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep or not any(fnmatch.fnmatchcase(key, pattern) for pattern in booleans):
            continue
        if value.strip().lower() not in ("true", "false"):
            raise ConfigError(f"{key}={value}: not a boolean; use {key}=true or {key}=false")


def repeated_overrides(overrides: list[str]) -> list[str]:
    """A notice per key given more than once (graph=true graph=false): Hydra takes the last one
    without a word, and the run looked like what was typed first (walk). Deletions aside."""
    given: dict[str, list[str]] = {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and not key.startswith("~"):
            given.setdefault(key.lstrip("+"), []).append(value)
    return [f"{key}: given {len(values)} times ({', '.join(f'{key}={v}' for v in values)}): the last one, "
            f"{key}={values[-1]}, is used" for key, values in given.items() if len(values) > 1]


_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|[^\[\],\s]+")


@functools.lru_cache(maxsize=1)
def _override_parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def check_output_overrides(overrides: list[str]) -> None:
    """An output path written unquoted on the command line is read as Hydra reads any value:
    1.10 (output 1's eleventh leaf) became 1.1 and then "1.1", output 1's second, which was
    measured instead. (A sweep's launcher checks the overrides as typed: its jobs' are written
    back from what Hydra read.)"""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.lstrip("+~") != "model.outputs":
            continue
        for token in _TOKEN.findall(value):
            if token[0] in "'\"":
                continue
            try:
                read = _override_parser().parse_override(f"k={token}").value()
            except Exception:  # noqa: BLE001 - not a value of its own: Hydra says what is wrong
                continue
            if not isinstance(read, str) and str(read) != token:
                fixed = re.sub(rf"(?<![\w.']){re.escape(token)}(?![\w.'])", f"'{token}'", value)
                raise ConfigError(f"{key}={value}: the output path {token} reads as {read!r}; quote it: "
                                  f"\"{key}={fixed}\"")


def _check_file_outputs(text: str, prefix: str, where: str) -> None:
    """The same for model.outputs in a config file (whose keys sit under `prefix`): a plain
    (unquoted) item that YAML reads as a number or a boolean other than as written."""
    import yaml
    from omegaconf._utils import get_yaml_loader

    key = "model.outputs"
    if prefix and not key.startswith(prefix + "."):
        return
    try:
        node: Any = yaml.compose(text, Loader=get_yaml_loader())
    except yaml.YAMLError:
        return  # its own error comes from Hydra
    for part in (key[len(prefix) + 1:] if prefix else key).split("."):
        if not isinstance(node, yaml.MappingNode):
            return
        node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
    if not isinstance(node, yaml.SequenceNode):
        return
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode) or item.style is not None:  # quoted: a string as written
            continue
        read = yaml.load(item.value, Loader=get_yaml_loader())
        if not isinstance(read, str) and str(read) != item.value:
            raise ConfigError(f"{key} (in the config file {where}.yaml): the output path {item.value} reads as "
                              f"{read!r}; quote it: '{item.value}'")


_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.MULTILINE)


def _option_text(sources: Any, group: str, option: str) -> Optional[str]:
    """The text of config group `group`'s option `option`, from the first search path that has
    it (file:// folders and pkg:// packages); None where none does."""
    import importlib.resources

    for source in sources:
        schema, path = str(source.schema), str(source.path)
        try:
            if schema == "file":
                target = os.path.join(path, group, f"{option}.yaml")
                if os.path.isfile(target):
                    with open(target, encoding="utf-8") as f:
                        return f.read()
            elif schema == "pkg":
                found = importlib.resources.files(path.replace("/", ".")).joinpath(group, f"{option}.yaml")
                if found.is_file():
                    return found.read_text(encoding="utf-8")
        except (OSError, ModuleNotFoundError, TypeError, ValueError):
            continue
    return None


def check_file_booleans(choices: Mapping[str, Any], sources: Any, primary: Optional[str] = None) -> None:
    """What the composed config can no longer tell, in config files: OmegaConf took `graph: 2`
    in a preset for true (the command line's graph=2 is refused by check_overrides). The
    files of the chosen options, and the primary config `primary` (--config-name), are read
    as written."""
    import yaml

    booleans = bool_keys()
    files = [(str(group), str(option)) for group, option in choices.items()
             if option is not None and not str(group).startswith("hydra")]
    if primary:
        files.insert(0, ("", primary))
    for group, option in files:
        text = _option_text(sources, group, option)
        if text is None:
            continue
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # its own error comes from Hydra
        header = _PACKAGE.search(text)
        package = header.group(1) if header else ("_group_" if group else "_global_")
        prefix = "" if package == "_global_" else (group if package == "_group_" else package).replace("/", ".")
        where = f"{group}/{option}" if group else option

        _check_file_outputs(text, prefix, where)
        for path, value in _leaves(raw, prefix):
            if not isinstance(value, bool) and value is not None and any(
                    fnmatch.fnmatchcase(path, pattern) for pattern in booleans):
                raise ConfigError(f"{path}: {value!r} is not a boolean (in the config file {where}.yaml); "
                                  "write true or false")


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every leaf of a YAML document's mapping."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, f"{path}.{k}" if path else str(k))
    else:
        yield path, node


def validate(cfg: DictConfig) -> Config:
    """Check the composed config on its own: ranges, cross-key rules, unknown keys."""
    try:
        _unknown_keys(cfg, "")
        _deleted_keys(cfg)
        config = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # missing values, unresolvable interpolations
        raise ConfigError(condense(exc)) from exc
    assert isinstance(config, Config)
    model, m, cap = config.model, config.measure, config.capture

    _check(config.streams >= 1, f"streams={config.streams}: out of range; use streams >= 1, e.g. streams=4")
    _check(
        _DEVICE.match(config.device) is not None,
        f"device={config.device!r}: not a device; use auto, cpu, cuda or cuda:N",
    )
    _check(0 <= config.seed < 2**63, f"seed={config.seed}: out of range; use 0 <= seed < 2**63")
    _check(
        "_target_" in model.module,
        "model.module: no _target_; name the nn.Module to build, e.g. model.module._target_=torch.nn.Linear",
    )
    model_spec(config)  # the model's keys, checked here; resolve builds the same spec
    _check(
        config.compile in COMPILE_MODES,
        f"compile={config.compile}: not a torch.compile mode; use one of: {', '.join(COMPILE_MODES)}",
    )
    load_spec(config)
    _check(
        1 <= config.staging.slots <= 64,
        f"staging.slots={config.staging.slots}: out of range; use 1 to 64 slots per stream, e.g. staging.slots=2",
    )
    # Lazy init (cuBLAS workspaces, autotuning) must run before a capture, on its stream, not in it.
    _check(cap.warmup_iters >= 1, f"capture.warmup_iters={cap.warmup_iters}: out of range; use 1 or more (default 3): "
           "eager forwards on each capture stream keep lazy init (cuBLAS workspaces, autotuning) out of the capture")
    for name, minimum, example in (
        ("budget_s", None, 20),  # None: more than 0 (no time at all measures nothing)
        ("warmup_ms", 0, 300),
        ("min_requests", 1, 200),
        ("min_duration_ms", 0, 500),
        ("max_pass_ms", 1, 2000),
        ("repeats", 1, 10),
        ("min_repeats", 1, 3),
        ("stdrel", 0, 0.005),
        ("latency_requests", 0, 2000),
        ("check_requests", 1, 2048),
        ("input_pool", 1, 16),
    ):
        value = getattr(m, name)
        whole = isinstance(value, int)
        kind = "a whole number" if whole else "a finite number"
        bound = "> 0" if minimum is None else f">= {minimum}"
        _check(
            math.isfinite(value) and (value > 0 if minimum is None else value >= minimum),
            f"measure.{name}={value if whole else format(value, 'g')}: out of range; use {kind} {bound}, "
            f"e.g. measure.{name}={example}",
        )
    _check(
        m.min_repeats <= m.repeats,
        f"measure.min_repeats={m.min_repeats}: more than measure.repeats={m.repeats}; use min_repeats <= repeats",
    )
    _check(
        math.isfinite(m.cv_warn) and m.cv_warn > 0,
        f"measure.cv_warn={m.cv_warn}: out of range; use a fraction > 0, e.g. 0.05",
    )
    # The mean's relative standard error to stop at, a fraction: 1 already stops as soon as that
    # error is known (min_repeats passes, two at least) whatever the spread; more reads as a
    # percentage given as a number (measure.stdrel=2 had been taken as 200%).
    _check(
        m.stdrel <= 1,
        f"measure.stdrel={m.stdrel:g}: out of range; use a fraction, at most 1 (the mean's relative standard error "
        "at which the repeats stop; 0: never before measure.repeats), e.g. measure.stdrel=0.005 for 0.5%",
    )
    return config


def _sizes(value: Any, key: str, example: str) -> tuple[int, ...]:
    """A size or a list of bucket sizes -> ascending distinct sizes."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    quoted = [v for v in values if isinstance(v, str) and v.strip().isdigit()]
    _check(not quoted, f"{key}: {quoted[0]!r} is a string (quoted in a config file, or on the command line); "
                       f"write the number without quotes, e.g. {key}={quoted[0].strip()}" if quoted else "")
    _check(
        len(values) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values),
        f"{key}={_show(value)}: use a whole number >= 1, or a list of bucket sizes, e.g. {key}={example}",
    )
    twice = sorted({v for v in values if values.count(v) > 1})
    # [1,1] had become the one bucket [1] without a word: a typo for [1,16]?
    _check(not twice, f"{key}={_show(value)}: {', '.join(map(str, twice))} given more than once; give each bucket size "
                      f"once, e.g. {key}=[{','.join(map(str, sorted(set(values))))}]")
    return tuple(sorted(set(values)))


def _size_dist(dist: Any, key: str, buckets: tuple[int, ...]) -> SizeDist:
    values, weights = tuple(dist.values), tuple(float(w) for w in dist.weights)
    low, high = dist.low, dist.high
    given = bool(values or weights or low or high)
    if not given:
        return SizeDist()
    dim = key.rpartition(".")[2]
    _check(
        len(buckets) > 1,
        f"{key}: request sizes apply to buckets; make model.{dim} a list, e.g. model.{dim}=[1,8,32]",
    )
    largest = buckets[-1]
    if values:
        _check(not (low or high), f"{key}: give values (with weights) or low and high, not both")
        _check(
            all(1 <= v <= largest for v in values),
            f"{key}.values={list(values)}: every size must lie in 1..{largest} (the largest bucket)",
        )
        _check(
            not weights or (len(weights) == len(values) and all(0 <= w < math.inf for w in weights)
                            and sum(weights) > 0),
            f"{key}.weights: give one finite weight >= 0 per value ({len(values)}), not all zero",
        )
        return SizeDist(values=values, weights=weights)
    _check(not weights, f"{key}.weights: weights go with values; add {key}.values")
    # One of the two alone: the other as the default (uniform 1..largest) has it; high=2 alone
    # had been refused as "low=0 high=2", a low the user never wrote.
    low, high = low or 1, high or largest
    _check(
        1 <= low <= high <= largest,
        f"{key}: low={low} high={high}; use 1 <= low <= high <= {largest} (the largest bucket)",
    )
    return SizeDist(low=low, high=high)


def target_name(target: str) -> str:
    """A model's name from its `_target_`: the class, or a class's factory by its class too
    (transformers.AutoModel.from_config: "from_config" alone named no model in the tables; walk)."""
    *_, owner, last = ["", *target.split(".")]
    return f"{owner}.{last}" if owner[:1].isupper() and last[:1].islower() else last


def model_spec(config: Config, module: Mapping[str, Any] | None = None) -> ModelSpec:
    """The model's keys, checked: inputs, buckets, request sizes, outputs."""
    model = config.model
    target = str(model.module["_target_"])
    name = model.name or target_name(target)
    _check(
        isinstance(model.inputs, Mapping) and len(model.inputs) > 0,
        "model.inputs: empty; name forward's arguments, e.g. model.inputs={x: {shape: [256]}}",
    )
    batches = _sizes(model.batch, "model.batch", "[1,8,32]")
    seqs = _sizes(model.seq, "model.seq", "[32,64,128]") if model.seq is not None else ()
    inputs = []
    for arg, inp in model.inputs.items():
        key = f"model.inputs.{arg}"
        _check(inp.shape is not None, f"{key}.shape: missing; give one sample's shape (the batch goes in front), "
                                      "e.g. [seq], [256] or [3,224,224], or [] for one value per sample")
        shape = tuple(inp.shape)
        _check(
            all(d == SEQ or (isinstance(d, int) and not isinstance(d, bool) and d >= 1) for d in shape),
            f"{key}.shape={list(shape)}: every dimension must be a whole number >= 1 or seq",
        )
        kind = inp.kind.value
        if SEQ in shape:
            _check(bool(seqs), f"{key}.shape={list(shape)} uses seq, but model.seq is not set; set it, e.g. model.seq=128")
        if kind == "tokens":
            # Unset, it reads 0 (the schema's default): not said as a value the user gave.
            _check(inp.vocab != 0, f"{key}.vocab=0 (or not set): kind tokens needs the vocabulary's size, in "
                                   f"1..2**63-1, e.g. {key}.vocab=50257 (token ids are drawn below it)")
            _check(1 <= inp.vocab <= INT64_MAX, f"{key}.vocab={inp.vocab}: token inputs need a vocab in 1..2**63-1")
        if kind == "int":
            _check(inp.high > inp.low, f"{key}: low={inp.low} high={inp.high}; int inputs need low < high")
            _check(-INT64_MAX <= inp.low and inp.high <= INT64_MAX,
                   f"{key}: low={inp.low} high={inp.high}; int inputs are int64: keep both within +-(2**63-1)")
        if kind == "mask" and inp.random_lengths:
            _check(
                len(shape) >= 1,
                f"{key}.random_lengths: a mask needs a length dimension; give it a shape, e.g. [seq]",
            )
        own = inp.dtype.value if inp.dtype is not None and kind == "float" else None
        inputs.append(InputSpec(str(arg), shape, kind, inp.vocab, inp.low, inp.high, inp.random_lengths, own))
    if seqs:
        _check(
            any(i.has_seq for i in inputs),
            f"model.seq={_show(model.seq)}: no input shape uses seq (the shapes: "
            + ", ".join(f"model.inputs.{i.name}.shape={_show(list(i.shape))}" for i in inputs)
            + "); put seq in a shape or set model.seq=null",
        )
    outputs = tuple(str(o) for o in model.outputs)
    _check(all(outputs), "model.outputs: an empty name; list output paths, e.g. model.outputs=[logits]")
    return ModelSpec(
        name=name,
        module=module if module is not None else {},
        inputs=tuple(inputs),
        batches=batches,
        seqs=seqs,
        outputs=outputs,
        batch_sizes=_size_dist(model.sizes.batch, "model.sizes.batch", batches),
        seq_sizes=_size_dist(model.sizes.seq, "model.sizes.seq", seqs),
    )


def unused_input_settings(config: Config) -> list[str]:
    """Notices for input settings that the input's kind never reads: random_lengths on a float
    input ran without a word. (Not refused: a preset's int input turned into tokens keeps the
    high it had.)"""
    said = []
    for arg, inp in config.model.inputs.items():
        kind = inp.kind.value
        for setting, used_by, unset in (("random_lengths", "mask", False), ("vocab", "tokens", 0),
                                        ("low", "int", 0), ("high", "int", 0), ("dtype", "float", None)):
            value = getattr(inp, setting)
            value = value.value if isinstance(value, Enum) else value
            if kind != used_by and value != unset:
                said.append(f"model.inputs.{arg}.{setting}={_show(value)}: only inputs of kind {used_by} use it "
                            f"(this one is {kind}): not used")
    return said


INT64_MAX = 2**63 - 1  # integer inputs are int64 tensors
CUDA_STREAM_POOL = 32  # streams per device (and priority) torch.cuda.Stream() takes from: c10's kStreamsPerPool

# A job whose least work takes over this many times its budget and this many seconds is
# refused before it runs (measure.py applies it to the least work a first forward foretells;
# GPT-2 in fp16 on a 2-core CPU: 382 s for a 2 s budget).
REFUSE_FACTOR = 20.0
REFUSE_MIN_S = 60.0


def refused_past_s(budget_s: float) -> float:
    return max(REFUSE_FACTOR * budget_s, REFUSE_MIN_S)


def _check_load_length(load: Any, rate: Optional[float], budget_s: float) -> None:
    """A server point runs at least load.duration_s, and at least MIN_REQUESTS arrivals at
    its rate: refuse one whose least length is far past the budget (load.rate=0.01 would run
    5.5 hours), or whose arrivals would not fit in memory."""
    from runner.load import MAX_ARRIVALS, MIN_REQUESTS, least_length_s

    limit_s = refused_past_s(budget_s)
    _check(load.duration_s <= limit_s,
           f"load.duration_s={load.duration_s:g}: each server point runs that long at least, over "
           f"{REFUSE_FACTOR:g} times measure.budget_s={budget_s:g}; lower load.duration_s, or raise measure.budget_s "
           f"to {math.ceil(load.duration_s / REFUSE_FACTOR)} or more")
    if rate is None:
        return
    least_s = least_length_s(rate, load.duration_s)
    _check(least_s <= limit_s,
           f"load.rate={rate:g}: a point needs {MIN_REQUESTS} arrivals at least, {least_s:,.0f} s at that rate, over "
           f"{REFUSE_FACTOR:g} times measure.budget_s={budget_s:g}; raise load.rate to "
           f"{math.ceil(MIN_REQUESTS / limit_s)} or more, or measure.budget_s")
    _check(rate * least_s <= MAX_ARRIVALS,
           f"load.rate={rate:g} x load.duration_s={load.duration_s:g}: {rate * least_s:,.0f} arrivals to draw, over "
           f"{MAX_ARRIVALS:,}; lower load.rate or load.duration_s")


def _compile_cache(folder: Optional[str], compile_mode: str) -> Optional[str]:
    """The compile cache folder, made now: one that cannot be made is bad input, said before
    the model is built (it failed the job in the build with a bare FileNotFoundError)."""
    if folder is None or compile_mode == "none":
        return folder
    try:
        os.makedirs(folder, exist_ok=True)
        usable = os.access(folder, os.W_OK)
        why = "it is not writable"
    except OSError as exc:
        usable, why = False, exc.strerror or type(exc).__name__
    _check(usable, f"compile_cache={folder}: cannot use it as a folder ({why}); name a folder that can be written")
    return folder


def _unused_load_keys(load: Any) -> list[str]:
    """A load key set away from its default where this job's scenario does not read it
    (load.duration_s=3 with the offline scenario ran without a word, where load.rate is refused)."""
    from runner.schema import LoadConfig

    scenario, search = load.scenario.value, str(load.rate).lower() == "max"
    used = {"duration_s": scenario == "server", "resolution": scenario == "server" and search,
            "requests": scenario == "single_stream"}
    users = {"duration_s": "load.scenario=server", "resolution": "load.scenario=server with load.rate=max",
             "requests": "load.scenario=single_stream"}
    default = LoadConfig()

    def shown(value: Any) -> str:
        return format(value, "g") if isinstance(value, float) else _show(value)

    return [f"load.{key}={shown(getattr(load, key))}: only {users[key]} uses it (this job: load.scenario={scenario}"
            f"{' load.rate=' + shown(load.rate) if scenario == 'server' else ''}): not used"
            for key in used if not used[key] and getattr(load, key) != getattr(default, key)]


def load_spec(config: Config) -> LoadSpec:
    load = config.load
    scenario = load.scenario.value
    rate = load.rate
    if scenario != "server":
        _check(rate is None, f"load.rate={rate}: a rate applies to load.scenario=server; add load.scenario=server")
        _check(load.p99_ms is None, "load.p99_ms: a latency bound applies to load.scenario=server; add load.scenario=server")
    _check(
        load.p99_ms is None or (math.isfinite(load.p99_ms) and load.p99_ms > 0),
        f"load.p99_ms={load.p99_ms}: use a bound in milliseconds > 0, e.g. load.p99_ms=2",
    )
    _check(
        math.isfinite(load.duration_s) and load.duration_s > 0,
        f"load.duration_s={load.duration_s}: use seconds > 0, e.g. load.duration_s=1",
    )
    _check(0 < load.resolution < 1, f"load.resolution={load.resolution}: use a fraction in (0, 1), e.g. 0.05")
    _check(load.requests >= 1, f"load.requests={load.requests}: use load.requests >= 1")
    if scenario != "server":
        return LoadSpec(scenario, duration_s=load.duration_s, resolution=load.resolution, requests=load.requests)
    search = str(rate).lower() == "max"
    _check(
        rate is not None,
        "load.rate: the server scenario needs a rate; use load.rate=5000 (requests/s) or load.rate=max with load.p99_ms",
    )
    if search:
        _check(load.p99_ms is not None, "load.rate=max: the search needs a latency bound; add load.p99_ms=2 (milliseconds)")
        value = None
    else:
        try:
            value = float(rate)
        except (TypeError, ValueError):
            value = math.nan
        _check(
            math.isfinite(value) and value > 0 and not isinstance(rate, bool),
            f"load.rate={rate}: use requests per second > 0, or max (with load.p99_ms)",
        )
    _check_load_length(load, value, config.measure.budget_s)
    return LoadSpec("server", value, search, load.p99_ms, load.duration_s, load.resolution, load.requests)


def _cuda_device(requested: str, count: int) -> str:
    import torch

    _check(
        count > 0,
        f"device={requested}: CUDA is not available here (torch {torch.__version__}, "
        f"CUDA build {torch.version.cuda}); use device=cpu or device=auto",
    )
    index = int(requested.partition(":")[2] or 0)
    _check(
        index < count,
        f"device={requested}: this machine has {count} CUDA device(s) "
        f"(cuda:0..cuda:{count - 1}); use one of those",
    )
    return f"cuda:{index}"


# What each setting the CPU overrules asks for, as its notice names it.
CUDA_ONLY = {"graph": "graphs", "streams": "streams", "pinned": "pinned memory", "staging.slots": "a ring of staging slots",
             "staging.copy_thread": "a copy thread", "capture.copies_in_graph": "copies in graphs", "tf32": "TF32"}


def resolve(
    cfg: DictConfig,
    cuda_count: Callable[[], int] | None = None,
    bf16_supported: Callable[[str], bool] | None = None,
) -> RunSpec:
    """Validate `cfg` and settle what will run on this machine."""
    import torch

    config = validate(cfg)
    model = model_spec(config, OmegaConf.to_container(cfg.model.module, resolve=True))  # type: ignore[arg-type]
    count = (cuda_count or torch.cuda.device_count)()
    notices: list[str] = unused_input_settings(config)

    if config.device == "auto":
        device = "cuda:0" if count > 0 else "cpu"
    elif config.device == "cpu":
        device = "cpu"
    else:
        device = _cuda_device(config.device, count)

    dtype = config.dtype.value
    if device.startswith("cuda"):
        supported = bf16_supported or (lambda d: torch.cuda.is_bf16_supported())
        _check(dtype != "bf16" or supported(device), f"dtype=bf16: {device} cannot run bf16; use dtype=fp16 or fp32")
        for inp in model.inputs:  # a float input's own dtype (InputSpec.dtype is None for the other kinds)
            _check(inp.dtype != "bf16" or supported(device),
                   f"model.inputs.{inp.name}.dtype=bf16: {device} cannot run bf16; use fp16 or fp32")

    streams, graph, pinned = config.streams, config.graph, config.pinned
    # torch.cuda.Stream() hands out streams from a pool of 32 per device: lanes past it would
    # share a stream with another, serialized, while the job reported them as concurrent. On
    # every device: a config the CPU took would fail later on a GPU.
    _check(streams <= CUDA_STREAM_POOL,
           f"streams={streams}: torch hands out {CUDA_STREAM_POOL} distinct CUDA streams per device (its stream pool), "
           f"and lanes past them would share one with another; use streams <= {CUDA_STREAM_POOL}")
    copies_in_graph = config.capture.copies_in_graph
    staging, slots = config.staging.mode.value, config.staging.slots
    copy_thread = config.staging.copy_thread
    tf32 = config.tf32
    baseline, ceiling = config.baseline, config.measure.ceiling
    if device == "cpu":
        # On the CPU each request completes on the submitting thread before the next starts:
        # no graphs, streams or pinned memory; a deeper ring or a copy thread has nothing to
        # overlap with; TF32 is a GPU matmul mode.
        cpu = {"graph": False, "streams": 1, "pinned": False, "staging.slots": 1,
               "staging.copy_thread": False, "capture.copies_in_graph": False, "tf32": False}
        asked = {"graph": graph, "streams": streams, "pinned": pinned, "staging.slots": slots,
                 "staging.copy_thread": copy_thread, "capture.copies_in_graph": copies_in_graph, "tf32": tf32}
        changed = [k for k, v in asked.items() if v != cpu[k]]
        if changed:
            # What was asked, by name (the default asks all of it; staging.slots=4 alone had read
            # as graphs, streams, pinned memory and TF32).
            words = [CUDA_ONLY[k] for k in changed]
            lead = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
            notices.append(
                f"{lead} need{'s' if len(words) == 1 else ''} CUDA: running eager with 1 stream, 1 staging slot, "
                f"pageable memory and host copies on the CPU (asked: {' '.join(f'{k}={_show(asked[k])}' for k in changed)})"
            )
        streams, graph, pinned, slots, copy_thread, copies_in_graph, tf32 = 1, False, False, 1, False, False, False
        if baseline or ceiling:
            notices.append(
                "on the CPU the eager baseline and the device-only ceiling would run the same code as the schedule "
                "(eager forwards and host copies): not measured, so no speedup or efficiency"
            )
            baseline = ceiling = False
    interleave = config.measure.interleave
    if interleave and not (baseline or ceiling) and config.load.scenario.value == "offline":
        # Nothing to alternate with: left on, it still shared the baseline's and the ceiling's
        # time among the throughput's passes as if they ran (passes of half the length).
        notices.append("measure.interleave=true alternates the throughput's passes with the baseline's and the "
                       "ceiling's, and neither runs here: the throughput's passes run back to back")
        interleave = False
    if copy_thread and config.load.scenario.value != "offline":
        notices.append("staging.copy_thread runs ahead around the ring; open-loop and single-stream requests go to the "
                       "first free slot: no copy thread")
        copy_thread = False
    if copy_thread and staging != "copy":
        notices.append("staging.copy_thread applies to staging.mode=copy: no copy thread in direct staging")
        copy_thread = False
    if copies_in_graph and not (graph and pinned):
        need = "graph=true" if not graph else "pinned=true (pageable copies cannot be captured)"
        notices.append(f"capture.copies_in_graph needs {need}: copies are issued around the compute")
        copies_in_graph = False

    compile_mode = config.compile
    if compile_mode in OWN_GRAPHS and device == "cpu":
        # The same Inductor kernels as the mode without torch's graphs: run (and record) as that
        # mode, so a sweep over both says the two jobs ran the same settings.
        compile_mode = CPU_COMPILE[compile_mode]
        notices.append(f"compile={config.compile}: no CUDA graphs on the CPU: running compile={compile_mode} "
                       "(Inductor's kernels only)")
    elif compile_mode in OWN_GRAPHS:
        _check(
            not graph,
            f"compile={compile_mode}: torch records its own CUDA graphs in this mode and cannot run inside the "
            "runner's; use graph=false with it, or compile=default for Inductor's kernels inside the runner's graphs",
        )
        _check(
            streams == 1,
            f"compile={compile_mode}: torch's CUDA graphs are recorded and replayed for one stream; use streams=1 "
            "with it, or compile=default with graph=true for graphs over several streams",
        )

    if config.compile_cache is not None and compile_mode == "none":
        # Said, not checked: a folder for nothing (the README lists an unusable one as bad input,
        # and compile=none took /proc/x without a word).
        notices.append(f"compile_cache={config.compile_cache} applies to compile=default and the other compile "
                       "modes: with compile=none nothing is compiled, and the folder is not used")

    notices += _unused_load_keys(config.load)
    m = config.measure
    if config.timestamps.value != "none" and (m.latency_requests == 0 or config.load.scenario.value != "offline"):
        # The timestamps are the latency pass's marks: without that pass there are none to write.
        why = ("measure.latency_requests=0" if m.latency_requests == 0
               else f"load.scenario={config.load.scenario.value}")
        notices.append(f"timestamps={config.timestamps.value}: written from the latency pass, which {why} does not "
                       "run: no timestamps file")
    return RunSpec(
        model=model,
        device=device,
        dtype=dtype,
        tf32=tf32,
        streams=streams,
        graph=graph,
        pinned=pinned,
        copies_in_graph=copies_in_graph,
        staging=staging,
        slots=slots,
        copy_thread=copy_thread,
        warmup_iters=config.capture.warmup_iters,
        fallback_eager=config.capture.fallback_eager,
        compile=compile_mode,
        compile_cache=_compile_cache(config.compile_cache, compile_mode),
        load=load_spec(config),
        measure=MeasureSpec(**{**{f.name: getattr(m, f.name) for f in fields(MeasureSpec)}, "ceiling": ceiling,
                                 "interleave": interleave}),
        seed=config.seed,
        baseline=baseline,
        check=config.check,
        profile=config.profile,
        timestamps=config.timestamps.value,
        resume=config.resume,
        notices=tuple(notices),
    )
