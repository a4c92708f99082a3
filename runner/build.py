"""RunSpec -> Workload: the network on its device, how to call it, and the requests the timed
passes are made of."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import linecache
import logging
import math
import os
import pkgutil
import random
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from torch import nn

from runner.errors import CompileError, ConfigError, ModelFault, first_line
from runner.inputs import (
    Layout,
    Size,
    bucket_of,
    draw_sizes,
    largest,
    make_request,
    packed,
    padding_waste,
    spread_order,
)
from runner.outputs import OutputPlan, plan_outputs
from runner.outputs import leaves as output_leaves
from runner.spec import ModelSpec, RunSpec

BUCKETED_PLAN = 256  # request sizes a bucketed run cycles through (when the host memory allows)
PLAN_BYTES = 256 * 2**20  # at most this much host memory for the timed requests' bytes


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One request of the timed passes."""

    size: Size  # its real size
    key: Size  # its launch shape: its bucket with graphs, its real size in eager
    flat: torch.Tensor  # its bytes in the launch shape's layout, pageable


@dataclass
class Workload:
    model: nn.Module  # on the run's device and dtype, in eval mode
    forward: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]  # kwargs -> kept output leaves
    out_paths: tuple[str, ...]  # the kept leaves' paths, e.g. ('logits',)
    out_numel_dtypes: tuple[tuple[int, torch.dtype], ...]  # per leaf, at the largest bucket
    layout: Callable[[Size], Layout]  # launch shape -> where its inputs sit in a flat buffer
    largest: Size
    largest_request: torch.Tensor  # one real request in the largest layout (the capture's warm-up data)
    plan: list[Request]  # the timed passes cycle through these
    baseline_sources: list[dict[str, torch.Tensor]]  # the same requests at their real sizes, pageable
    padding_waste: Optional[float]  # padded elements per real element over the plan (buckets only)
    # The uncompiled model, for the check's references and the eager baseline (= forward uncompiled).
    reference: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]] = None  # type: ignore[assignment]
    compile_figures: dict[str, Any] = field(default_factory=dict)  # compile times, cache folder
    compile_fallback: Optional[str] = None  # why compile failed, when the job ran uncompiled instead
    # Seconds of one forward at the largest size: the probe's (on CUDA a second forward's, the
    # first paying one-time costs)
    forward_s: float = 0.0
    # Off CUDA, where a forward can take seconds: the probe's request (real size, host tensors)
    # and its eager output leaves, the check's reference for a request of that size.
    probe: Optional[tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]] = None
    warnings: list[str] = field(default_factory=list)  # said while building, for the record

    @property
    def sources(self) -> list[torch.Tensor]:
        return [r.flat for r in self.plan]

    @property
    def keys(self) -> list[Size]:
        return [r.key for r in self.plan]

    @property
    def mean_batch(self) -> float:
        """Real samples per request over the plan."""
        return sum(r.size.batch for r in self.plan) / len(self.plan)


def launch_key(spec: RunSpec, size: Size) -> Size:
    """Graphs run the bucket that holds `size`; eager runs `size` itself."""
    return bucket_of(spec.model, size) if spec.graph else size


def plan_length(spec: RunSpec) -> int:
    if not spec.model.bucketed:
        return spec.measure.input_pool
    nbytes = max(1, Layout(spec.model, largest(spec.model), spec.torch_dtype).nbytes)
    return max(spec.measure.input_pool, min(BUCKETED_PLAN, PLAN_BYTES // nbytes))


def _import_error(key: str, target: str, cause: BaseException) -> ConfigError:
    """One line for a `_target_` that cannot be imported: a missing package named as such, a
    misspelt name with the closest one its module has."""
    if target.partition(".")[0] == "transformers" and importlib.util.find_spec("transformers") is None:
        return ConfigError(
            f"{key}._target_={target}: HuggingFace transformers is not installed; "
            "pip install 'transformers>=4.44' (or, in the runner's checkout, pip install -e '.[hf]')"
        )
    inner = cause.__cause__ or cause.__context__ or cause  # Hydra's ImportError wraps the real one
    reason = (str(inner).strip().splitlines() or [type(inner).__name__])[0]
    module_path, _, name = target.rpartition(".")
    broken = _broken_import(target, inner)
    if broken:
        return ConfigError(f"{key}._target_={target}: cannot be imported ({reason}); {broken}")
    try:
        if module_path and name and module_path in sys.modules and not hasattr(sys.modules[module_path], name):
            reason = f"{module_path} has no {name}"  # Python's own words: "'...' is not a package"
    except Exception:  # noqa: BLE001 - a lazy attribute that fails to load: Python's reason stands
        pass
    close = _closest_target(target)
    hint = f"did you mean {close}?" if close else \
        "name an importable class or function, e.g. torch.nn.Linear or runner.models.mlp.MLP"
    return ConfigError(f"{key}._target_={target}: cannot be imported ({reason}); {hint}")


def _broken_import(target: str, inner: BaseException) -> Optional[str]:
    """What to do when the name may be right and its package is not: the package is found but
    raised while importing (a torchvision built for another torch: "operator torchvision::nms
    does not exist"; a user's module with an error), or it needs a module that is not installed.
    None for a name that is wrong (the closest one is looked for then)."""
    package = target.partition(".")[0]
    try:
        spec = importlib.util.find_spec(package) if package else None
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return None
    if isinstance(inner, ModuleNotFoundError):
        needed = inner.name or ""
        if not needed or target == needed or target.startswith(needed + "."):
            return None  # the target's own path stops there: a name misspelt
        top = needed.partition(".")[0]
        if top != package:
            return f"{package} is found but needs {top}, which is not installed: pip install it (its package may be named otherwise)"
        return f"{package} is found but its code imports {needed}, which it does not have: fix that import"
    # Raised by the package's own code as it was imported (a frame in its files, or a syntax
    # error in one), not by the import machinery about the name (whose frames are Hydra's and
    # this module's: runner.models.mlp.MLP. had read as a broken runner).
    homes = list(spec.submodule_search_locations or []) or ([spec.origin] if spec.origin else [])
    files = [frame.filename for frame in traceback.extract_tb(inner.__traceback__)
             if os.path.abspath(frame.filename) != os.path.abspath(__file__)]
    if isinstance(inner, SyntaxError) and inner.filename:
        files.append(inner.filename)
    if not any(os.path.abspath(f) == os.path.abspath(home) or os.path.abspath(f).startswith(os.path.abspath(home) + os.sep)
               for f in files for home in homes):
        return None
    return (f"{package} is found but raised that while importing: fix it, or reinstall it (a package "
            f"built for another torch than this {torch.__version__} fails so)")


def _closest_target(target: str) -> Optional[str]:
    """The dotted name closest to `target`, part by part (a misspelt package, module or class,
    in any letter case: runner.model.mlp.Mlp -> runner.models.mlp.MLP), or None. It imports
    nothing the target did not: a guessed module that is not loaded yet (a project's script,
    say) is named from its package's listing, and the parts after it are kept as written."""
    parts = target.split(".")
    found: Any = sys.modules.get(parts[0])  # the failed import of the target loaded what it could
    if found is None or not all(parts):
        return None
    path = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        submodules: set[str] = set()
        if hasattr(found, "__path__"):  # a package: its submodules, loaded or not
            with contextlib.suppress(Exception):
                submodules = {m.name for m in pkgutil.iter_modules(found.__path__)}
        names = sorted({n for n in dir(found) if not n.startswith("_")} | submodules)
        if part not in names:
            part = _closest_name(part, names)
            if part is None:
                return None
        dotted = ".".join([*path, part])
        path.append(part)
        if dotted in sys.modules:
            found = sys.modules[dotted]
        elif part in submodules and part not in vars(found):  # a module not loaded yet: not imported here
            # The rest as written; a last part that matched such a module names its class, as a
            # module named for its class often holds it (runner.models.MLP -> runner.models.mlp.MLP).
            rest = parts[i + 1:] or ([parts[i]] if parts[i] != part else [])
            return ".".join([*path, *rest])
        else:
            try:
                found = getattr(found, part)
            except Exception:  # noqa: BLE001 - a lazy attribute that fails to load is no answer
                return None
    if inspect.ismodule(found) and parts[-1] != path[-1]:
        # The last part matched a module (runner.models.MLP -> runner.models.mlp): its class of that name.
        inner = _closest_name(parts[-1], sorted(n for n in dir(found) if not n.startswith("_")), cutoff=0.9)
        if inner is not None:
            path.append(inner)
    return ".".join(path) if ".".join(path) != target else None


def _closest_name(part: str, names: list[str], cutoff: float = 0.6) -> Optional[str]:
    """The name in `names` closest to `part` in any letter case; of names equal but for case
    (Tensor, tensor), the one that starts in the case `part` does. The same answer every run."""
    lower: dict[str, list[str]] = {}
    for name in names:
        lower.setdefault(name.lower(), []).append(name)
    close = difflib.get_close_matches(part.lower(), sorted(lower), n=1, cutoff=cutoff)
    if not close:
        return None
    candidates = lower[close[0]]
    return next((c for c in candidates if c[:1].isupper() == part[:1].isupper()), candidates[0])


def _locate(target: str) -> Any:
    # Hydra's get_object logs its own three-line error before raising: the user gets ours alone.
    logger = logging.getLogger("hydra.utils")
    disabled, logger.disabled = logger.disabled, True
    try:
        return get_object(target)
    finally:
        logger.disabled = disabled


def _locate_model(target: str) -> None:
    try:
        _locate(target)
    except Exception as exc:
        raise _import_error("model.module", target, exc) from exc


def locate_target(spec: RunSpec) -> None:
    """Import what model.module._target_ names (a typo ends here, in one line, before the job
    says what it runs)."""
    _locate_model(str(spec.model.module["_target_"]))


def target_error(target: str) -> Optional[str]:
    """The one line a job would end with for model.module._target_=`target`, or None when it
    imports (a sweep's launcher asks this of every target before any job starts)."""
    try:
        _locate_model(target)
    except ConfigError as exc:
        return str(exc)
    return None


def instantiate_model(spec: RunSpec) -> nn.Module:
    """Build the module named by model.module; every failure becomes a one-line ConfigError."""
    target = str(spec.model.module["_target_"])
    locate_target(spec)
    arguments, convert = _instantiate_arguments(spec)
    try:
        module = instantiate(arguments, **convert)
    except InstantiationException as exc:
        cause = exc.__cause__
        reason = first_line(str(cause or exc), announced=True) or type(cause).__name__
        nested = re.match(r"Error locating target '([^']+)'", str(exc))
        if nested and isinstance(cause, ImportError):  # a nested _target_, e.g. a HuggingFace config's
            where = re.search(r"full_key: (\S+)", str(exc))
            raise _import_error(f"model.module.{where.group(1)}" if where else "model.module", nested.group(1),
                                cause) from exc
        if isinstance(cause, TypeError):
            # A misspelt argument (+model.module.dept=3 for depth), named by the target's own
            # TypeError: the same error from a nested _target_ or from the model's own code
            # names no key of model.module. First: a mistyped guess must not hide it.
            name = target.rpartition(".")[2]
            unexpected = re.match(rf"{re.escape(name)}(?:\.__init__)?\(\) got an unexpected keyword argument '(\w+)'",
                                  reason)
            key = unexpected.group(1) if unexpected else ""
            near = _nearest_argument(target, key, spec.model.module) if key else None
            if near:
                raise ConfigError(f"model.module.{key}: {name} takes no argument {key!r}; "
                                  f"did you mean model.module.{near}?") from exc
            mistyped = _mistyped_argument(target, dict(spec.model.module), floats="float" in reason)
            if mistyped:
                raise ConfigError(f"{mistyped} ({reason})") from exc
            raise ConfigError(
                f"model.module: the arguments do not fit {target} ({reason}); "
                "fix the keys under model.module"
            ) from exc
        raise ConfigError(f"model.module: building {target} failed ({reason})") from exc
    if not isinstance(module, nn.Module):
        raise ConfigError(
            f"model.module._target_={target}: builds a {type(module).__name__}, not an "
            "nn.Module; name an nn.Module class or a function that returns one"
        )
    return module


def _instantiate_arguments(spec: RunSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """model.module as instantiate takes it, and how to convert: plain lists and dicts, not
    OmegaConf's containers, unless the config says otherwise (strict constructors, transformers'
    configs, refuse a ListConfig where a list belongs)."""
    arguments = dict(spec.model.module)
    return arguments, ({} if "_convert_" in arguments else {"_convert_": "all"})


HYDRA_KEYS = ("_target_", "_args_", "_partial_", "_convert_", "_recursive_")
_SCALARS = {"int": int, "float": float, "bool": bool}


def _mistyped_argument(target: str, given: dict[str, Any], floats: bool = False) -> Optional[str]:
    """The first argument given as text where the constructor takes a number or a boolean (by
    its annotation, else its default's type), or, with `floats` (the TypeError spoke of a
    float), as a float where it is annotated int: "model.module.ch='abc': ..." names the key
    that a TypeError deep in the constructor does not. (An int default alone does not make a
    float wrong: scale=1 takes 0.5.)"""
    try:
        parameters = inspect.signature(_locate(target)).parameters
    except Exception:  # noqa: BLE001 - no signature to read: no hint
        return None
    for name, value in given.items():
        param = parameters.get(name)
        if param is None or not isinstance(value, (str, float)):
            continue
        if isinstance(value, float):
            if floats and param.annotation in ("int", int):  # depth=3.5 (or 3.0): range() and nn.Linear take no float
                return f"model.module.{name}={value!r}: {target} takes an int there; write a whole number"
            continue
        wanted = _SCALARS.get(param.annotation) if isinstance(param.annotation, str) else \
            (param.annotation if param.annotation in _SCALARS.values() else None)
        if wanted is None and type(param.default) in _SCALARS.values():
            wanted = type(param.default)
        if wanted is not None:
            return (f"model.module.{name}={value!r}: {target} takes {'a' if wanted is not int else 'an'} "
                    f"{wanted.__name__} there; write a {'number' if wanted is not bool else 'true or false'}")
    return None


def unused_keys(node: Any, key: str = "model.module") -> list[str]:
    """Keys under a `_target_` that its callable names no argument for, yet are close to one
    that it does: a misspelling that was accepted all the same (HuggingFace configs keep any
    keyword as an attribute: num_hidden_layer for num_hidden_layers built the default depth
    without a word). A key far from every argument is not flagged: callables pass keys on
    (**kwargs to a base class or a factory), and HuggingFace configs read several that their
    signatures do not name (attn_implementation, num_labels)."""
    warnings: list[str] = []
    if isinstance(node, dict):
        target = node.get("_target_")
        named = _argument_names(target) if isinstance(target, str) else None
        settings = _hf_settings(target) if isinstance(target, str) else None
        parts = _hf_sub_configs(target) if settings is not None else {}
        for name, value in node.items():
            if isinstance(value, dict) and "_target_" not in value and name in parts:
                # A composite config (CLIP's text_config) builds its part from a plain mapping,
                # which keeps any keyword as silently as the config itself: checked as that part.
                warnings += unused_keys({**value, "_target_": parts[name]}, f"{key}.{name}")
                continue
            if named and name not in HYDRA_KEYS and name not in named:
                close = difflib.get_close_matches(str(name), sorted(named), n=1, cutoff=0.8)
                if close:
                    warnings.append(f"{key}.{name}: {target.rpartition('.')[2]} has no argument {name!r} but has "
                                    f"{close[0]!r}: a misspelling? It was accepted, and may be ignored")
                elif settings is not None and name not in settings and name not in HF_CONSUMED \
                        and _kept_unread(target, name, value):
                    # A HuggingFace config keeps any keyword as an attribute that no layer reads:
                    # num_layers for RoBERTa's num_hidden_layers built its default 12 layers.
                    near = _nearest_setting(str(name), settings)
                    warnings.append(f"{key}.{name}: {target.rpartition('.')[2]} has no setting {name!r}"
                                    + (f" (it has {near!r})" if near else "")
                                    + ": kept as an attribute that the model may never read")
            warnings += unused_keys(value, f"{key}.{name}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            warnings += unused_keys(value, f"{key}.{i}")
    return warnings


def _nearest_argument(target: str, name: str, given: Any) -> Optional[str]:
    """The argument of `target`'s constructor (or function) a wrong name most likely meant;
    None unless it is the only key given that the target does not take (several such keys are
    another model's arguments: model.module._target_=torch.nn.Linear under the MLP's keys had
    offered in_features for hidden_features)."""
    try:
        params = inspect.signature(_locate(target)).parameters
    except Exception:  # noqa: BLE001 - no signature to read: no guess
        return None
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [k for k in given if not str(k).startswith("_") and k not in named]
    return _nearest_setting(name, named) if unknown == [name] else None


def _nearest_setting(name: str, settings: set[str]) -> Optional[str]:
    """The setting a wrong name most likely meant: for a name of two words or more, the
    shortest whose words begin with each of them in turn (num_layers and n_layers:
    num_hidden_layers), else the closest spelling (both had pointed at num_labels)."""
    words = name.split("_")

    def has_words(setting: str) -> bool:
        theirs = iter(setting.split("_"))
        return all(any(w.startswith(word) for w in theirs) for word in words)

    having = sorted((s for s in settings if len(words) > 1 and has_words(s)), key=lambda s: (len(s), s))
    if having:
        return having[0]
    close = difflib.get_close_matches(name, sorted(settings), n=1, cutoff=0.6)
    return close[0] if close else None


# Read by transformers when a config is made, then kept under another name (the private name
# works as well, and is what a config prints).
HF_CONSUMED = {"attn_implementation", "_attn_implementation"}


def _hf_settings(target: str) -> Optional[set[str]]:
    """The settings a default instance of a HuggingFace config class has (attributes, and
    properties such as num_labels, and the common names its `attribute_map` aliases:
    DistilBERT's hidden_size sets its dim); None for any other target."""
    try:
        cls = _locate(target)
        if not inspect.isclass(cls) or not any(c.__name__.lower() == "pretrainedconfig" for c in cls.__mro__):
            return None
        default = cls()
        aliases = getattr(default, "attribute_map", None) or {}
        # Its values, not its methods (a method is no setting: `to_json_file` had been offered
        # for a misspelt `json`).
        return {n for n in dir(default) if not n.startswith("_") and not _is_method(default, n)} \
            | {str(n) for n in aliases}
    except Exception:  # noqa: BLE001 - a config that needs arguments, or not importable: not ours to judge
        return None


def _kept_unread(target: str, name: str, value: Any) -> bool:
    """Whether a HuggingFace config made with `name` keeps it as a plain attribute (what it does
    with a keyword no code of its reads), rather than consuming it: transformers 5 folds
    LlamaConfig's rope_theta into rope_parameters, and the warning had told users to drop it.
    A config that cannot be made with the key alone is judged by its default's settings."""
    try:
        return hasattr(_locate(target)(**{name: value}), name)
    except Exception:  # noqa: BLE001 - not ours to judge: as before
        return True


def _is_method(obj: Any, name: str) -> bool:
    """Whether `name` is a method of `obj`, read without calling a property (HuggingFace's
    deprecated ones print a warning when read)."""
    try:
        found = inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return isinstance(found, (staticmethod, classmethod)) or inspect.isfunction(found) or inspect.ismethoddescriptor(found)


def _hf_sub_configs(target: str) -> dict[str, str]:
    """The parts of a composite HuggingFace config that are configs of their own classes
    (CLIPConfig's text_config and vision_config), by name, as import paths; none for a part
    whose class is chosen from its contents (AutoConfig: an encoder-decoder's encoder)."""
    try:
        parts = getattr(_locate(target), "sub_configs", None) or {}
        return {str(name): f"{cls.__module__}.{cls.__qualname__}" for name, cls in parts.items()
                if inspect.isclass(cls) and any(c.__name__.lower() == "pretrainedconfig" for c in cls.__mro__)}
    except Exception:  # noqa: BLE001 - not ours to judge
        return {}


def _argument_names(target: str) -> Optional[set[str]]:
    """The named arguments of the callable `target` names, with every base class's __init__ for
    a class (their **kwargs pass keys up the chain); None where they cannot be read."""
    try:
        obj = _locate(target)
        if inspect.isclass(obj):
            inits = [c.__dict__["__init__"] for c in obj.__mro__ if "__init__" in c.__dict__ and c is not object]
        else:
            inits = [obj]
        names: set[str] = set()
        for init in inits:
            names.update(n for n, p in inspect.signature(init).parameters.items()
                         if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self")
    except Exception:  # noqa: BLE001 - a builtin without a signature, or not importable: not ours to judge
        return None
    return names


def check_arguments(spec: RunSpec, model: nn.Module) -> list[str]:
    """Each input is a keyword argument of forward: refuse a name forward does not take. Where
    forward also takes **kwargs, such a name is accepted there, and may be ignored (a misspelt
    attention mask on a HuggingFace model ran without its mask): returned as warnings."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):  # a builtin without a signature: let the probe tell
        return []
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    catch_all = next((n for n, p in params.items() if p.kind is inspect.Parameter.VAR_KEYWORD), None)
    takes = ", ".join(named) or "no named arguments"
    warnings = []
    for inp in spec.model.inputs:
        if inp.name in named:
            continue
        positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL)]
        if catch_all is None and positional and not named:
            # forward(self, x, /) or forward(self, *inputs): nothing can be given by name.
            raise ConfigError(
                f"model.inputs.{inp.name}: {spec.model_name}.forward takes {', '.join(positional)} by position "
                f"only, and the runner passes every input by name; wrap the model in a module whose forward names "
                f"its arguments (def forward(self, {inp.name}): ...)"
            )
        if catch_all is None:
            raise ConfigError(
                f"model.inputs.{inp.name}: {spec.model_name}.forward has no argument {inp.name!r} "
                f"(it takes: {takes}); name model.inputs after forward's arguments"
            )
        warnings.append(f"model.inputs.{inp.name}: {spec.model_name}.forward has no argument {inp.name!r}: it goes "
                        f"to **{catch_all}, which may ignore it (forward's named arguments: {takes})")
        log.warning("%s", warnings[-1])
    return warnings


def _probe(model: nn.Module, args: dict[str, torch.Tensor]) -> Any:
    with torch.no_grad():
        out = model(**args)
        device = next(iter(args.values())).device
        if device.type == "cuda":  # kernels fail asynchronously (an index out of range): surface it here
            torch.cuda.synchronize(device)
    return out


def _describe_inputs(spec: RunSpec, size: Size) -> str:
    parts = []
    for inp in spec.model.inputs:
        extra = (f", vocab {inp.vocab}" if inp.kind == "tokens" else f", values in [{inp.low}, {inp.high})"
                 if inp.kind == "int" else f", {inp.dtype}" if inp.dtype else "")
        parts.append(f"{inp.name} {inp.kind} {list((size.batch, *inp.sample_shape(size.seq)))}{extra}")
    return "; ".join(parts)


# forward's arguments that carry a request's data by HuggingFace's names: one left out is named
# when the forward fails (T5 without decoder_input_ids said "specify exactly one of input_ids or
# inputs_embeds", though input_ids was given).
DATA_ARGUMENTS = ("input_ids", "pixel_values", "input_values", "input_features")


def _not_given(spec: RunSpec, model: nn.Module) -> str:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return ""
    given = {inp.name for inp in spec.model.inputs}
    missing = [n for n in params if n not in given and n.endswith(DATA_ARGUMENTS)]
    if not missing:
        return ""
    return (f"; forward also takes {', '.join(missing)}, not given: add {'it' if len(missing) == 1 else 'one'} as "
            f"model.inputs.{missing[0]} if the model needs it")


# A failed forward's words that may be about a tensor's dtype: only then are inputs retried in
# another dtype (each retry a whole forward, which a shape error should not pay for).
DTYPE_WORDS = re.compile(r"dtype|scalar type|precision|\b(?:b?float(?:16|32|64)?|half|double)\b", re.IGNORECASE)


def _input_dtype_fault(spec: RunSpec, model: nn.Module, args: dict[str, torch.Tensor], reason: str,
                       exc: Exception) -> None:
    """After a forward failed on what may be a dtype: the one float input whose dtype is at
    fault, named with the key that fixes it. An input given its own dtype is tried in the run's
    (the model may not take it); in bf16 or fp16, an input of the run's dtype is tried in fp32
    alone, the model as it is (a timestep some models take in fp32), and named only where the
    outputs stay in the run's dtype (an fp32 input that promotes the whole forward would turn
    the run into fp32 under a bf16 label: the dtype= message then says so)."""
    if not DTYPE_WORDS.search(reason):
        return
    try:
        _name_input_dtype_fault(spec, model, args, reason, exc)
    except _ProbeStopped:
        # The first forward's time limit ran out in a retry (a slow model): no diagnosis, and
        # the error is said as it was, not as the limit's "ran without ending".
        return


def _name_input_dtype_fault(spec: RunSpec, model: nn.Module, args: dict[str, torch.Tensor], reason: str,
                            exc: Exception) -> None:
    run = spec.torch_dtype
    for inp in spec.model.inputs:
        if inp.kind != "float" or inp.dtype is None or args[inp.name].dtype == run:
            continue
        if _runs(model, {**args, inp.name: args[inp.name].to(run)}, run):
            raise ConfigError(
                f"model.inputs.{inp.name}.dtype={inp.dtype}: model {spec.model_name} takes it in {spec.dtype}, the run's "
                f"dtype ({reason}); drop its own dtype (model.inputs.{inp.name}.dtype=null)"
            ) from exc
    if spec.dtype == "fp32":
        return
    for inp in spec.model.inputs:
        if inp.kind != "float" or inp.dtype is not None:
            continue
        if _runs(model, {**args, inp.name: args[inp.name].float()}, run):
            raise ConfigError(
                f"model.inputs.{inp.name}: model {spec.model_name} takes it in fp32, not {spec.dtype} ({reason}); "
                f"set model.inputs.{inp.name}.dtype=fp32 (its own dtype; the model stays {spec.dtype})"
            ) from exc


def _runs(model: nn.Module, args: dict[str, torch.Tensor], dtype: torch.dtype) -> bool:
    """Whether a forward of `args` runs and answers in `dtype` (every floating output leaf)."""
    try:
        out = _probe(model, args)
    except Exception:
        return False
    return all(leaf.dtype == dtype for _, _, leaf in output_leaves(out)
               if isinstance(leaf, torch.Tensor) and leaf.is_floating_point())


def check_forward(spec: RunSpec, model: nn.Module, args: dict[str, torch.Tensor], size: Size) -> Any:
    """One eager forward before anything else: tells a bad shape from an unsupported dtype."""
    try:
        return _probe(model, args)
    except Exception as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        floats = any(i.kind == "float" for i in spec.model.inputs)
        _input_dtype_fault(spec, model, args, reason, exc)
        if spec.dtype != "fp32":
            try:  # does it run in fp32? then the dtype, not the inputs, is the problem
                _probe(model.float(), {k: v.float() if v.is_floating_point() else v for k, v in args.items()})
                raise ConfigError(
                    f"dtype={spec.dtype}: model {spec.model_name} cannot run in {spec.dtype} on "
                    f"{spec.device} ({reason}); use dtype=fp32"
                ) from exc
            except ConfigError:
                raise
            except Exception:
                pass
            finally:
                model.to(spec.torch_dtype)
        # Token ids past the vocabulary, or sequences past the positions, fail as an index out of range.
        # ("positional", as in "missing 1 required positional argument", is no position.)
        indexing = isinstance(exc, IndexError) or re.search(
            r"index|out of range|out of bounds|length|position(?!al)|seq|device-side assert", reason, re.IGNORECASE)
        at = _raised_at(exc, args)
        hint = (_indexed_by(spec, at) or "token ids must stay below the model's vocabulary and sequences within its "
                "length; ") if not floats and indexing else ""
        not_ids = [i for i in spec.model.inputs if i.kind in ("float", "bool")]
        wrong_type = re.search(r"dtype|scalar type", reason, re.IGNORECASE)
        if wrong_type and not_ids and re.search(r"\b(Long|Int)\b|indices", reason):
            # Floats or booleans where the model indexes (an embedding's ids as kind=bool): the
            # float hint below had sent them to kind: float, which fails too, with no hint.
            named = ", ".join(f"model.inputs.{i.name} (kind {i.kind})" for i in not_ids)
            hint = (f"the model wants integer ids (Long or Int) where {named} gives "
                    f"{'floats or booleans' if len({i.kind for i in not_ids}) > 1 else not_ids[0].kind + 's'}: an input "
                    "of ids takes kind: tokens (with vocab) or kind: int (with low and high); ")
        elif wrong_type and not floats:
            # An integer or bool tensor where the model computes in floats (a float MLP's x as kind=int).
            hint = "an input of kind int, bool, mask or tokens where the model wants floating point takes kind: float; "
        missing = re.search(r"\bforward\(\) missing \d+ required (?:positional |keyword-only )?arguments?: (.+)", reason)
        if isinstance(exc, TypeError) and missing:
            # forward's own signature names what it lacks: that, not the inputs' shapes.
            names = re.findall(r"'(\w+)'", missing.group(1))
            hint = (f"forward needs {', '.join(names)}, which model.inputs do not give: add "
                    f"{'it' if len(names) == 1 else 'them'} (model.inputs.{names[0]}: {{shape: [...]}}); ") if names else hint
        keys = "model.inputs, model.batch and model.seq" if spec.model.seqs else "model.inputs and model.batch"
        also = _not_given(spec, model)
        where = f" at {at.where}" if at else ""
        if re.search(r"does not require grad and does not have a grad_fn|doesn't require grad", reason):
            # torch.autograd.grad in forward, under the runner's no_grad: not the inputs' fault.
            raise ModelFault(
                f"model {spec.model_name}: its forward needs autograd ({reason}{';' if where else ''}{where}); the runner "
                "runs every forward under torch.no_grad(), as inference: wrap what needs gradients in "
                "`with torch.enable_grad():` inside forward"
            ) from exc
        if at is not None and isinstance(exc, CODE_FAULTS):
            # A name, attribute or key the code does not have (self.lni for self.lin): a fault
            # in the model or in the settings it was built with, whatever the inputs' shapes.
            raise ModelFault(
                f"model {spec.model_name}: its forward raised {type(exc).__name__}: {reason} ({where.strip()}, on "
                f"model.inputs {_describe_inputs(spec, size)}): a fault in the model's code or in its settings "
                f"(model.module); fix it there, or {keys} if forward reads an input they do not give{also}"
            ) from exc
        if at is not None and at.raised:
            # The model's own code raised (a `raise` line), not a torch op it called with these
            # inputs: say so, and where, rather than blame the inputs alone.
            raise ModelFault(
                f"model {spec.model_name}: its forward raised {type(exc).__name__}: {reason} ({where.strip()}, on "
                f"model.inputs {_describe_inputs(spec, size)}); {hint}fix {keys} to what forward takes, or the model "
                f"if they are right{also}"
            ) from exc
        if isinstance(exc, RuntimeError) and not hint and at is not None and _reads_no_input(at):
            # A torch op refused what the model computed (`return self.second(h)`): the inputs
            # may be right and the model's layers not fit each other (a width under
            # model.module); or the inputs' shapes led there. (Python's own errors, an unpacking
            # of a shape, and out-of-range ids keep the inputs' message and hint.)
            raise ConfigError(
                f"model.inputs ({_describe_inputs(spec, size)}) do not fit model {spec.model_name}, or its layers do not "
                f"fit each other ({_named(exc, reason)};{where}, a statement that reads none of the inputs itself: "
                f"`{at.statement[:80]}`); {hint}fix {keys} to what forward takes, or the model's settings (model.module) "
                f"where the inputs are right{also}"
            ) from exc
        raise ConfigError(
            f"model.inputs ({_describe_inputs(spec, size)}) do not fit model {spec.model_name} "
            f"({_named(exc, reason)}{';' if where else ''}{where}); {hint}fix {keys} to what forward takes{also}"
        ) from exc


def _indexed_by(spec: RunSpec, at: Optional[RaisedAt]) -> str:
    """The hint for an index out of range where the failing statement reads integer inputs by
    their own names (BERT's `self.token_type_embeddings(token_type_ids)`): those inputs and the
    keys that bound their values; "" where none is named there (the generic hint had blamed token
    ids and the vocabulary for token_type_ids' high=3 past BERT's two types)."""
    if at is None:
        return ""
    fixes = []
    for inp in spec.model.inputs:
        if inp.name in at.names and re.search(rf"\b{re.escape(inp.name)}\b", at.statement):
            if inp.kind == "int":
                fixes.append(f"model.inputs.{inp.name} (values in [{inp.low}, {inp.high})): lower "
                             f"model.inputs.{inp.name}.high to what the model indexes with it")
            elif inp.kind == "tokens":
                fixes.append(f"model.inputs.{inp.name} (ids below vocab {inp.vocab}): lower model.inputs.{inp.name}.vocab "
                             f"to the model's vocabulary, or model.seq to its length")
    return "".join(f"{fix}; " for fix in fixes)


# Exceptions that a model's code raises by its own fault, not a torch op refusing its inputs.
CODE_FAULTS = (AttributeError, NameError, KeyError, ImportError, NotImplementedError, ZeroDivisionError)


def _named(exc: BaseException, reason: str) -> str:
    """The reason, led by the exception's type where the text alone does not say what it is
    (torch's RuntimeError messages do; IndexError's "index out of range in self" less so)."""
    return reason if type(exc) is RuntimeError else f"{type(exc).__name__}: {reason}"


@dataclass(frozen=True)
class RaisedAt:
    """Where an exception came from, outside torch (see `_raised_at`)."""

    where: str  # "file.py:line in function"
    raised: bool  # that line is a `raise` of the model's own
    statement: str  # the statement there, its lines joined
    names: frozenset[str]  # the frame's local names that hold one of forward's inputs, and the inputs' own names


def storage_address(t: Any) -> Optional[int]:
    """Where a tensor's memory starts (a view's, its base's), or None where it has none to give
    (an empty tensor; sparse ones, nested ones and wrapper subclasses raise when asked)."""
    try:
        return t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) and t.numel() else None
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return None


def _raised_at(exc: BaseException, args: Optional[dict[str, torch.Tensor]] = None) -> Optional[RaisedAt]:
    """The last frame of an exception that is not torch's own: where it is, whether its line is
    a `raise` of the model's own (not an op that refused its arguments, in torch's Python or in
    C, where a CUDA error surfaces too), its statement, and which of its locals hold one of
    `args`, as a tensor or in a dict, list or tuple (an inner module's `h` may be the request's
    `x`). None when every frame is torch's, or when reading them fails: this only words the
    error, and must never stand in for it."""
    try:
        torch_dir = os.path.dirname(torch.__file__) + os.sep
        frames = list(traceback.walk_tb(exc.__traceback__))
        inputs = {storage_address(t) for t in (args or {}).values()} - {None}
        for depth in range(len(frames) - 1, -1, -1):
            frame, line = frames[depth]
            path = frame.f_code.co_filename
            if not path.startswith(torch_dir) and path != __file__:  # this module's probe is no model code
                innermost = depth == len(frames) - 1
                text = linecache.getline(path, line).strip()
                names = frozenset(name for name, value in frame.f_locals.items() if _holds(value, inputs))
                return RaisedAt(f"{os.path.basename(path)}:{line} in {frame.f_code.co_name}",
                                innermost and text.startswith("raise"), _statement(path, line),
                                names | {name for name in (args or {}) if name in frame.f_locals})
    except Exception:  # noqa: BLE001 - a diagnosis that fails is no diagnosis
        return None
    return None


def _holds(value: Any, inputs: set[int]) -> bool:
    """Whether a local is one of the inputs (or a view of one), or a dict, list or tuple that
    holds one (forward(**kw) reads kw["x"])."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return any(storage_address(v) in inputs for v in value[:64])
    return storage_address(value) in inputs


# A string literal or a comment: their brackets are not the statement's.
_LITERAL_OR_COMMENT = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|#.*$")


def _statement(path: str, line: int, most: int = 8) -> str:
    """The statement that starts at `line`: its lines until the brackets opened there close (a
    call split over lines read as its first line alone)."""
    text, depth = "", 0
    for n in range(line, line + most):
        part = linecache.getline(path, n).strip()
        text = f"{text} {part}".strip()
        code = _LITERAL_OR_COMMENT.sub("", part)
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth <= 0 or not part:
            break
    return text


def _reads_no_input(at: RaisedAt) -> bool:
    """Whether the statement that failed names none of the frame's locals that hold an input
    (nor an input by its own name): an op there took what the model computed, and a model
    whose layers do not fit each other fails there whatever its inputs."""
    return bool(at.statement) and not any(re.search(rf"\b{re.escape(name)}\b", at.statement) for name in at.names)


def request_bytes(spec: RunSpec) -> int:
    """Bytes of one request of the largest size."""
    return Layout(spec.model, largest(spec.model), spec.torch_dtype).nbytes


CHECK_CHUNK_REQUESTS = 512  # requests the check generates and compares at once...
CHECK_CHUNK_BYTES = 256 * 2**20  # ...unless their inputs would take more host memory than this


def check_chunk(one_request_bytes: int, ring: int) -> int:
    """Requests in the check's largest chunk: a turn of the ring at least."""
    return max(ring, min(CHECK_CHUNK_REQUESTS, CHECK_CHUNK_BYTES // max(1, one_request_bytes)))


def available_host_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


HOST_SHARE = 0.8  # of the host's available memory, the most a job's buffers may take (the model needs some too)


def check_host_memory(spec: RunSpec, available: Optional[int] = None) -> None:
    """Refuse, before allocating, a request size whose host buffers cannot fit: a host that
    runs out of memory kills the process instead of raising."""
    available = available_host_bytes() if available is None else available
    if available is None:
        return
    one = request_bytes(spec)
    ring = spec.streams * spec.slots
    share = HOST_SHARE * available

    def need(request: float, pool_requests: int) -> float:
        # The request pool twice (packed in launch layouts, and at real sizes for the baseline),
        # the staging slots (in and out), and the check's largest chunk of requests.
        return 2 * pool_requests * request + 2 * ring * request + check_chunk(int(request), ring) * request

    pool = 2 * plan_length(spec) * one
    needed = need(one, plan_length(spec))
    if needed <= share:
        return
    batch = max(spec.model.batches)
    if need(one / batch, 1) > share:  # not even requests of one sample, in a pool of one: not the batch
        top = Layout(spec.model, largest(spec.model), spec.torch_dtype)
        name, _, nbytes, _, shape = max(top.fields, key=lambda f: f[2])
        raise ConfigError(
            f"model.inputs.{name}.shape={list(shape[1:])}: one sample is {nbytes / batch / 2**20:,.1f} MiB, and the "
            f"host buffers would need {need(one / batch, 1) / 2**30:,.1f} GiB even for requests of one sample, more "
            f"than {HOST_SHARE:.0%} of the {available / 2**30:,.1f} GiB available; use a smaller shape"
        )
    if need(one, 1) > share:  # the pool does not matter
        pool_hint = ""
    else:
        pool_hint = f" or measure.input_pool (its requests take {pool / 2**30:,.1f} GiB)" if pool > needed / 3 else ""
    raise ConfigError(
        f"model.batch={spec.model.batch}: one request is {one / 2**20:,.1f} MiB and the "
        f"host buffers need {needed / 2**30:,.1f} GiB, more than {HOST_SHARE:.0%} of the "
        f"{available / 2**30:,.1f} GiB available; use a smaller model.batch{pool_hint}"
    )


@dataclass(frozen=True)
class ProbeLimit:
    """How long the first forward may run before the job is refused, and the refusal's words
    (given the seconds it ran)."""

    seconds: float
    refusal: Callable[[float], str]


class _ProbeStopped(BaseException):
    """Raised into the first forward when it runs past its limit. A BaseException, as Ctrl-C's
    is: model code that catches Exception does not swallow it."""


@contextlib.contextmanager
def _stopped_after(limit: Optional[ProbeLimit]) -> Iterator[None]:
    """Stop the code within after `limit.seconds` (a timer signal: Python code between torch
    ops notices it; one long op runs to its end) and raise ConfigError with the refusal. Only
    in the main thread, and when no other timer is set."""
    usable = (limit is not None and math.isfinite(limit.seconds) and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread()
              and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    if not usable:
        yield
        return
    began = time.perf_counter()

    def stop(signum: int, frame: Any) -> None:
        raise _ProbeStopped

    before = signal.signal(signal.SIGALRM, stop)
    try:
        signal.setitimer(signal.ITIMER_REAL, limit.seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
    except _ProbeStopped:
        raise ConfigError(limit.refusal(time.perf_counter() - began)) from None
    finally:
        signal.signal(signal.SIGALRM, before)


def _with_extremes(model: ModelSpec, request: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first forward's request, with the largest value each integer input may take in its
    first element and the smallest in its last: a vocabulary one past the model's (ids up to
    1000 for a table of 1000) fails there, in one line naming the inputs, not at random later."""
    for inp in model.inputs:
        flat = request[inp.name].view(-1)
        # One element holds the largest alone (the one a vocabulary too small fails on).
        if inp.kind == "tokens" and flat.numel():
            flat[-1], flat[0] = 0, inp.vocab - 1
        elif inp.kind == "int" and flat.numel():
            flat[-1], flat[0] = inp.low, inp.high - 1
    return request


class _CountedStdout:
    """sys.stdout as it is (every write goes through at once; fileno, buffer, isatty and the
    rest are the stream's own), counting what is written meanwhile, its first line kept."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.chars = 0
        self.head = ""

    def write(self, text: str) -> Any:
        self.chars += len(text)
        if len(self.head) < 120:
            self.head += text[:120]
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _counting_stdout() -> Iterator[_CountedStdout]:
    counted = _CountedStdout(sys.stdout)
    if sys.stdout is None:  # no stream to write through (pythonw): nothing counted
        yield counted
        return
    with contextlib.redirect_stdout(counted):  # type: ignore[type-var]
        yield counted


def _printing(spec: RunSpec, first: _CountedStdout, second: Optional[_CountedStdout]) -> list[str]:
    """A forward that prints (its first, and on CUDA its second too: a notice printed once,
    at a lazy initialisation, is no cost per request) prints on every request, on the
    submitting thread, inside the timed passes, and floods the console."""
    if not first.chars or (second is not None and not second.chars):
        return []
    line = first.head.strip().splitlines()[0][:60] if first.head.strip() else repr(first.head[:20])
    warning = (f"model {spec.model_name}: its {'forwards print' if second else 'first forward printed'} "
               f"{first.chars:,} characters (\"{line}\"): a forward that prints on every request does so inside the "
               "timed passes, and the figures include the writes; remove the prints from forward to measure the "
               "model alone")
    log.warning("%s", warning)
    return [warning]


def _forward(model: nn.Module, out: OutputPlan) -> Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]:
    extract = out.extract

    def forward(args: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return extract(model(**args))

    return forward


def model_bytes(spec: RunSpec) -> Optional[int]:
    """The bytes of the model's parameters and buffers as built, from a build on the meta device
    (no memory, no init); None where that build fails (a constructor that computes on its
    tensors) or would load weights twice (from_pretrained). Quiet: the real build speaks."""
    target = str(spec.model.module["_target_"])
    arguments, convert = _instantiate_arguments(spec)
    if "pretrained" in target or any(key in ("pretrained", "weights") and value not in (None, False, "")
                                     for key, value in arguments.items()):
        return None  # weights to load (timm's pretrained=True, torchvision's weights=...): not twice
    quiet = logging.getLogger().manager.disable
    # The real build must not find the constructor's side effects on shared state: Python's and
    # NumPy's random streams, and transformers' warn-once cache (its warnings were said in the
    # quiet build, then never; review).
    python_random = random.getstate()
    numpy = sys.modules.get("numpy")
    numpy_random = numpy.random.get_state() if numpy is not None else None
    try:
        logging.disable(logging.CRITICAL)
        with torch.device("meta"), contextlib.redirect_stdout(None), contextlib.redirect_stderr(None), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = instantiate(arguments, **convert)
        if not isinstance(module, nn.Module):
            return None
        tensors = [*module.parameters(), *module.buffers()]
        # Placed on a device of its own (device=cuda): not host bytes, not ours to judge. A tensor
        # the constructor made on the CPU (torch.from_numpy, .cpu()) is host memory: counted (one
        # such buffer had switched the check off for the whole model; review).
        if any(t.device.type not in ("meta", "cpu") for t in tensors):
            return None
        return sum(t.numel() * t.element_size() for t in tensors)
    except Exception:  # noqa: BLE001 - the real build says what is wrong, if anything
        return None
    finally:
        logging.disable(quiet)
        random.setstate(python_random)
        if numpy is not None and numpy_random is not None:
            numpy.random.set_state(numpy_random)
        for once in ("warning_once", "info_once"):
            cache_clear = getattr(getattr(logging.Logger, once, None), "cache_clear", None)
            if cache_clear is not None:
                cache_clear()


def check_model_memory(spec: RunSpec, available: Optional[int] = None) -> None:
    """Refuse, before building it, a model whose parameters cannot fit in the host's memory (it
    is built there, then moved): model.module.depth=100000 grew to 24 GB and the kernel's OOM
    killer ended the job, with no word and other processes at risk (walk)."""
    available = available_host_bytes() if available is None else available
    if available is None:
        return
    needed = model_bytes(spec)
    if needed is not None and needed > HOST_SHARE * available:
        raise ConfigError(
            f"model.module: {spec.model_name}'s parameters and buffers take {needed / 2**30:,.1f} GiB as built (on the "
            f"host, before moving to the device), more than {HOST_SHARE:.0%} of the {available / 2**30:,.1f} GiB "
            "available; use smaller sizes under model.module"
        )


def build(spec: RunSpec, probe_limit: Optional[ProbeLimit] = None) -> Workload:
    check_host_memory(spec)
    check_model_memory(spec)
    torch.manual_seed(spec.seed)
    model = instantiate_model(spec)
    unused = unused_keys(dict(spec.model.module))
    for warning in unused:
        log.warning("%s", warning)
    input_warnings = unused + check_arguments(spec, model)
    device = torch.device(spec.device)
    model = model.to(device=device, dtype=spec.torch_dtype).eval().requires_grad_(False)  # inference only
    layout = functools.lru_cache(maxsize=None)(lambda key: Layout(spec.model, key, spec.torch_dtype))

    generator = torch.Generator().manual_seed(spec.seed)
    top = largest(spec.model)
    first = _with_extremes(spec.model, make_request(spec.model, top, spec.torch_dtype, generator))
    args = {k: v.to(device) for k, v in first.items()}
    # Off CUDA `args` are `first` itself, and a model may change its input in place: the check's
    # copy of the probe's request is taken before the forward.
    probe_request = {k: v.clone() for k, v in first.items()} if device.type != "cuda" else None
    began = time.perf_counter()
    with _stopped_after(probe_limit if device.type != "cuda" else None), _counting_stdout() as printed:
        out = check_forward(spec, model, args, top)
    forward_s = time.perf_counter() - began
    again = None
    if device.type == "cuda":
        # On CUDA the first forward pays one-time costs (libraries, kernels loading): a second
        # one tells how long a forward takes (milliseconds for most models).
        began = time.perf_counter()
        with _counting_stdout() as again:
            _probe(model, args)
        forward_s = time.perf_counter() - began
    input_warnings += _printing(spec, printed, again)
    outputs = plan_outputs(out, spec.model.outputs, spec.model_name)
    leaves = outputs.extract(out)
    # Cloned now: a model may return a buffer of its own that its next forward overwrites (the
    # compile below runs forwards, at other sizes too).
    probe_leaves = tuple(leaf.clone() for leaf in leaves) if probe_request is not None else ()

    sizes = draw_sizes(spec.model, plan_length(spec), generator)
    requests = [make_request(spec.model, z, spec.torch_dtype, generator) for z in sizes]
    if spec.model.bucketed:
        # Drawn sizes, spread over the plan: each pass serves its own stretch of it (the next
        # goes on where it ended), and a short pass's mix of sizes had been its stretch's
        # chance one (a slow model's passes of 5-40 requests read 22% apart for that alone).
        # The costs: the launch shape's (a graph's follows its bucket), then the real size's;
        # each turn of the ring, and each slot over a few turns, also holds the mix.
        order = spread_order([(launch_key(spec, z).elements(), z.elements()) for z in sizes], spec.streams * spec.slots)
        sizes, requests = [sizes[i] for i in order], [requests[i] for i in order]
    plan = []
    for size, request in zip(sizes, requests, strict=True):
        key = launch_key(spec, size)
        flat = packed(request, layout(key))
        # Pageable: in copy staging the request is copied from the process's own memory into a
        # pinned slot, as a server's receive buffer would be (pinned=true pins the slots).
        plan.append(Request(size, key, flat))
    reference = _forward(model, outputs)
    forward, compile_figures, fallback = reference, {}, None
    if spec.compile != "none":
        # Eager runs each request at its own size: torch.compile would recompile for the
        # second size (then dynamic) and for sizes of 1 (specialized) inside the check and
        # the timed passes. Those compiles happen here instead, one request of each kind.
        grid = [Size(b, q) for b in spec.model.batches for q in (spec.model.seqs or (top.seq,))]  # the buckets' own sizes
        shapes = [] if spec.graph else _recompiling_sizes(top, [r.key for r in plan] + grid)
        others = torch.Generator().manual_seed(spec.seed + 2)  # not the plan's draws
        more = [{k: v.to(device) for k, v in make_request(spec.model, z, spec.torch_dtype, others).items()}
                for z in shapes]
        forward, compile_figures, fallback = compile_model(spec, model, outputs, {k: v.to(device) for k, v in first.items()},
                                                           more)
    return Workload(
        model=model,
        reference=reference,
        compile_figures=compile_figures,
        compile_fallback=fallback,
        forward_s=forward_s,
        probe=None if probe_request is None else (probe_request, probe_leaves),
        warnings=input_warnings + list(outputs.warnings),
        forward=forward,
        out_paths=outputs.paths,
        out_numel_dtypes=tuple((leaf.numel(), leaf.dtype) for leaf in leaves),
        layout=layout,
        largest=top,
        largest_request=packed(first, layout(top)),
        plan=plan,
        baseline_sources=requests,
        padding_waste=padding_waste(spec.model, sizes) if spec.model.bucketed else None,
    )


def _recompiling_sizes(top: Size, keys: list[Size]) -> list[Size]:
    """Of the sizes eager will run, those that make torch.compile compile again after the
    largest: sizes that change each dimension that varies (which then turns dynamic; one size
    that changes both where there is one), then one of each set of dimensions of 1 (which
    dynamo specializes). In that order: each later graph has the dynamic dimensions."""
    others = [k for k in dict.fromkeys(keys) if k != top]
    plain = [k for k in others if k.batch != 1 and k.seq != 1]

    def changes(key: Size, dim: str) -> bool:
        return getattr(key, dim) != getattr(top, dim)

    both = next((k for k in plain if changes(k, "batch") and changes(k, "seq")), None)
    chosen = [both] if both is not None else \
        [k for k in (next((k for k in plain if changes(k, dim)), None) for dim in ("batch", "seq")) if k is not None]
    for ones in ((True, False), (False, True), (True, True)):
        key = next((k for k in others if (k.batch == 1, k.seq == 1) == ones), None)
        if key is not None:
            chosen.append(key)
    return chosen


def compile_model(spec: RunSpec, model: nn.Module, outputs: OutputPlan, args: dict[str, torch.Tensor],
                  more: Sequence[dict[str, torch.Tensor]] = ()) -> tuple:
    """torch.compile the model; time its first call cold (as the cache stands) and again warm
    (after dynamo's reset, from Inductor's cache); then call it on `more` requests of other
    sizes (their compiles before the check). Returns (forward, figures, fallback reason)."""
    if spec.compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = spec.compile_cache  # read when Inductor first caches
    mode = None if spec.compile == "default" else spec.compile
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        folder = cache_dir()
    except ImportError:  # an older torch: its documented default
        folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "")
    fresh = not os.path.isdir(folder) or not os.listdir(folder)
    figures: dict[str, Any] = {"compile_cache_dir": folder, "compile_cache_was_empty": fresh}
    try:
        times = []
        for _ in range(2):  # cold, then warm
            torch._dynamo.reset()
            compiled = torch.compile(model, mode=mode)
            start = time.perf_counter()
            _probe(compiled, args)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for other in more:
            _probe(compiled, other)
        shapes_s = time.perf_counter() - start
    except Exception as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        message = f"compile={spec.compile}: torch.compile failed for {spec.model_name} ({reason[:300]})"
        if spec.fallback_eager:
            torch._dynamo.reset()
            return _forward(model, outputs), {}, message
        raise CompileError(f"{message}; use compile=none, or capture.fallback_eager=true to run it uncompiled") from exc
    figures.update(compile_time_cold_ms=times[0] * 1e3, compile_time_warm_ms=times[1] * 1e3)
    if more:
        figures.update(compile_other_sizes=len(more), compile_time_other_sizes_ms=shapes_s * 1e3)
    return _forward(compiled, outputs), figures, None
