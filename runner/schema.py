"""Structured-config schema: what a user may type, with types Hydra checks on every override.

Hydra rejects wrong types, unknown keys and unknown group options against these dataclasses.
Ranges and cross-key rules are checked by `runner.spec.resolve`, which turns a composed config
into a frozen `RunSpec`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class DType(Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class TimestampFormat(Enum):
    none = "none"
    csv = "csv"
    json = "json"


class StagingMode(Enum):
    direct = "direct"  # requests are materialized in the lane's pinned slots (zero-copy)
    copy = "copy"  # each request is copied from host memory into a pinned slot


class InputKind(Enum):
    float = "float"  # dense tensor in the run's dtype, drawn from N(0, 1)
    tokens = "tokens"  # int64 ids drawn uniformly from [0, vocab)
    mask = "mask"  # int64 ones (an attention mask); with random_lengths, ones up to a random length
    int = "int"  # int64 drawn uniformly from [low, high)
    bool = "bool"  # random True/False


@dataclass
class InputConfig:
    # One sample's shape: the request adds the batch in front. An entry `seq` stands for the
    # sequence size (model.seq). Required ([] for one value per sample): left out, it had been
    # [] without a word, and the model then failed on 1-D ids, or model.seq was blamed.
    shape: Optional[list[Any]] = None
    kind: InputKind = InputKind.float
    vocab: int = 0  # tokens: ids lie in [0, vocab)
    low: int = 0  # int: values lie in [low, high)
    high: int = 0
    random_lengths: bool = False  # mask: each sample's ones end at a random length, zeros after
    # float: this input's own dtype (a timestep or a bias kept in fp32 beside a bf16 model);
    # null: the run's dtype
    dtype: Optional[DType] = None


@dataclass
class SizesConfig:
    """How request sizes are drawn when batch (or seq) is a list of buckets: `values` with
    `weights`, or uniformly from [low, high]. Left empty: uniformly from 1 to the largest bucket."""

    values: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)  # one per value; empty: equal weights
    low: int = 0
    high: int = 0


@dataclass
class RequestSizesConfig:
    batch: SizesConfig = field(default_factory=SizesConfig)
    seq: SizesConfig = field(default_factory=SizesConfig)


@dataclass
class ModelConfig:
    name: Optional[str] = None  # for the records; default: the class named by module._target_
    # `_target_` (an importable nn.Module class or factory) plus its keyword arguments.
    module: dict[str, Any] = MISSING
    # Samples per request, the leading dimension of every input: a number, or a list of bucket
    # sizes (one graph per stream and bucket; each request is padded to the smallest that fits).
    batch: Any = 32
    # The size `seq` stands for in input shapes: a number, a list of bucket sizes, or null.
    seq: Any = None
    # forward's keyword arguments, each with one sample's shape and its kind.
    inputs: dict[str, InputConfig] = MISSING
    # Output leaves to copy back and check, by path (e.g. [logits]); empty: every tensor leaf.
    outputs: list[str] = field(default_factory=list)
    sizes: RequestSizesConfig = field(default_factory=RequestSizesConfig)  # bucketed runs only


@dataclass
class CaptureConfig:
    warmup_iters: int = 3  # eager forwards on each capture stream before its capture
    copies_in_graph: bool = True  # capture the H2D and D2H copies inside each graph (half the host launch time)
    fallback_eager: bool = False  # if capture fails, run eager (marked in the result)


@dataclass
class StagingConfig:
    mode: StagingMode = StagingMode.direct
    slots: int = 2  # ring of pinned slots per lane, each with its own event: requests in flight per stream
    copy_thread: bool = False  # copy mode: a second host thread fills the next slots while the first launches


@dataclass
class MeasureConfig:
    budget_s: float = 20.0  # the whole measurement (check, warm-up, every pass) ends by then (but see README: a pass's least, kept shares)
    warmup_ms: float = 300.0  # untimed schedule before the first timed pass (clocks ramp)
    min_requests: int = 200  # each pass runs at least this many requests...
    min_duration_ms: float = 500.0  # ...and at least this long...
    max_pass_ms: float = 2000.0  # ...but never longer than this (the budget may cut it shorter)
    repeats: int = 10  # at most this many throughput passes...
    min_repeats: int = 3  # ...and at least this many, budget permitting...
    stdrel: float = 0.005  # ...stopping once the throughput's relative standard error is below this
    latency_requests: int = 2000  # requests timed one by one in the latency and host-time passes
    check_requests: int = 2048  # distinct requests compared with eager before timing (budget permitting)
    input_pool: int = 16  # distinct host inputs the timed passes rotate through (copy staging; direct serves what each slot holds)
    ceiling: bool = True  # also measure the device-only ceiling
    interleave: bool = False  # baseline, schedule and ceiling in turn per repeat (default: in blocks)
    cv_warn: float = 0.05  # warn when the repeats' coefficient of variation exceeds this


class Scenario(Enum):
    offline = "offline"  # closed loop: a new request as soon as a slot is free (saturated device)
    single_stream = "single_stream"  # one request at a time: pure latency
    server = "server"  # open loop: Poisson arrivals at load.rate, queued while every slot is busy


@dataclass
class LoadConfig:
    scenario: Scenario = Scenario.offline
    rate: Any = None  # server: requests/s offered, or `max` (the highest rate whose p99 <= load.p99_ms)
    p99_ms: Optional[float] = None  # server: the latency bound a valid run keeps at its 99th percentile
    duration_s: float = 1.0  # server: each rate runs arrivals over this long (longer for 200 requests)
    resolution: float = 0.05  # rate=max: the search stops when its bracket is this narrow (relative)
    requests: int = 1000  # single_stream: requests timed one by one (budget permitting)


@dataclass
class Config:
    model: ModelConfig = MISSING
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    staging: StagingConfig = field(default_factory=StagingConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    streams: int = 4
    graph: bool = True
    pinned: bool = True
    device: str = "auto"  # auto, cpu, cuda or cuda:N
    dtype: DType = DType.fp32
    tf32: bool = True  # allow TF32 for fp32 matmuls and convolutions
    seed: int = 0
    baseline: bool = True  # also measure the naive eager baseline in the same process
    check: bool = True  # compare the schedule's outputs with eager before timing
    resume: bool = False  # skip this job if its folder already holds an ok result
    profile: bool = False  # write a torch.profiler trace from a separate, untimed pass
    timestamps: TimestampFormat = TimestampFormat.none  # per-request timestamps of the latency pass
    # torch.compile mode: none, default, max-autotune-no-cudagraphs (Inductor's kernels, inside the
    # runner's graphs when graph=true), reduce-overhead, max-autotune (torch's own CUDA graphs: graph=false)
    compile: str = "none"
    compile_cache: Optional[str] = None  # Inductor's cache folder (TORCHINDUCTOR_CACHE_DIR); default: torch's


def register() -> None:
    """Store the schema where configs/config.yaml's defaults list finds it."""
    ConfigStore.instance().store(name="runner_schema", node=Config)


def _resolve_type(annotation: Any) -> Any:
    """A field's dataclass type; ("map", dataclass) for dict[str, <dataclass>]."""
    if not isinstance(annotation, str):
        return annotation
    if annotation.startswith("dict[str, ") and annotation[10:-1] in globals():
        return ("map", globals()[annotation[10:-1]])
    return globals().get(annotation, annotation)


def _node_at(path: str) -> tuple[Any, Any]:
    """(the schema's type at a dotted path ('' for the top level), its default); (None, None)
    where the schema has no such key. An entry of a map (model.inputs.x) has no default."""
    node: Any = Config
    default: Any = None
    for part in filter(None, path.split(".")):
        if isinstance(node, tuple):  # part is a key of a map: its value's config
            node, default = node[1], None
            continue
        fields = getattr(node, "__dataclass_fields__", {})
        if part not in fields:
            return None, None
        f = fields[part]
        node = _resolve_type(f.type)
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    return node, default


def keys_under(path: str) -> list[str]:
    """The keys the schema allows at a dotted path ('' for the top level), for error messages."""
    return sorted(getattr(_node_at(path)[0], "__dataclass_fields__", {}))


def type_of(path: str) -> Any:
    """The schema's type for a dotted path, as annotated ('int', 'list[str]', typing.Any; None
    where the schema has no such key)."""
    return _node_at(path)[0]


def default_of(path: str) -> Any:
    """The schema's default for a dotted path (None where it has none, or no such key)."""
    return _node_at(path)[1]


def recorded_default(path: str) -> Any:
    """The schema's default for a dotted path as a result records it (enums by value,
    dataclasses as dicts): what a result written before the key existed ran with."""
    return _plain(default_of(path))


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return [_plain(v) for v in value] if isinstance(value, list) else value


def bool_keys() -> list[str]:
    """Dotted paths of every boolean key: OmegaConf takes any integer for a bool (graph=2 would
    mean true), so the overrides of these keys are checked by `runner.spec.check_overrides`."""
    found: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for name, f in getattr(node, "__dataclass_fields__", {}).items():
            kind = _resolve_type(f.type)
            if kind in (bool, "bool"):
                found.append(prefix + name)
            elif isinstance(kind, tuple):  # a map: its keys are the user's (`*` in the path)
                walk(kind[1], f"{prefix}{name}.*.")
            elif hasattr(kind, "__dataclass_fields__"):
                walk(kind, f"{prefix}{name}.")

    walk(Config, "")
    return found
