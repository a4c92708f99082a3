"""A forward's output as the runner sees it: its tensor leaves, each named by its path.

Outputs may be any nest of tuples, lists, dicts, dataclasses and HuggingFace `ModelOutput`s;
`None` leaves are skipped. The paths are found once, from a probe forward, and compiled into
one `extract` function that the request loop calls: it returns the kept leaves as a tuple.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from runner.errors import ConfigError

Step = tuple[str, Any]  # ("item", key or index) or ("attr", name)


def _children(value: Any) -> list[tuple[str, Step, Any]] | None:
    """(name, step, child) for a container; None for a leaf."""
    if isinstance(value, torch.Tensor) or value is None:
        return None
    if isinstance(value, Mapping):  # dict, OrderedDict, HF ModelOutput (which omits None fields)
        return [(str(k), ("item", k), v) for k, v in value.items()]
    if isinstance(value, tuple) and isinstance(getattr(type(value), "_fields", None), tuple):
        # A namedtuple: its leaves by field name (model.outputs=[nt.a] had been "no output", its
        # outputs listed as nt.0), read by index.
        return [(str(name), ("item", i), v) for i, (name, v) in enumerate(zip(type(value)._fields, value, strict=True))]
    if isinstance(value, (tuple, list)):
        return [(str(i), ("item", i), v) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, ("attr", f.name), getattr(value, f.name)) for f in dataclasses.fields(value)]
    return None


def leaves(value: Any, path: str = "", steps: tuple[Step, ...] = ()) -> list[tuple[str, tuple[Step, ...], Any]]:
    """Every non-None leaf as (path, steps, value); a bare tensor's path is 'output'."""
    children = _children(value)
    if children is None:
        return [] if value is None else [(path or "output", steps, value)]
    found = []
    for name, step, child in children:
        found += leaves(child, f"{path}.{name}" if path else name, (*steps, step))
    return found


def empty_paths(value: Any, path: str = "") -> list[str]:
    """Paths of the empty containers in an output (transformers returns `attentions=()` when its
    attention implementation cannot give them): no leaf, so nothing of them is kept."""
    children = _children(value)
    if children is None:
        return []
    if not children:
        return [path or "output"]
    return [p for name, _, child in children for p in empty_paths(child, f"{path}.{name}" if path else name)]


def none_paths(value: Any, path: str = "") -> list[str]:
    """Paths of the None leaves in an output (skipped: nothing of them is kept), with the None
    fields a HuggingFace ModelOutput leaves out of its keys (`attentions` when not asked for)."""
    if value is None:
        return [path or "output"]
    children = _children(value) or []
    found = [p for name, _, child in children for p in none_paths(child, f"{path}.{name}" if path else name)]
    if isinstance(value, Mapping) and dataclasses.is_dataclass(value) and not isinstance(value, type):
        found += [f"{path}.{f.name}" if path else f.name for f in dataclasses.fields(value)
                  if f.name not in value and getattr(value, f.name, None) is None]
    return found


def _none_hint(path: str) -> str:
    """How to get a tensor where the model returned None: a HuggingFace model returns its hidden
    states and attentions only when its config asks for them."""
    name = path.rpartition(".")[2]
    # By suffix: an encoder-decoder's are encoder_hidden_states, decoder_attentions, ...
    if name.endswith("hidden_states"):
        return "a HuggingFace model returns them when asked: +model.module.config.output_hidden_states=true"
    if name.endswith("attentions"):
        return ("a HuggingFace model returns them when asked: +model.module.config.output_attentions=true "
                "+model.module.config.attn_implementation=eager")
    return "keep another output, or make forward return a tensor there"


def why_empty(path: str) -> str:
    hint = ""
    if path.rpartition(".")[2].endswith("attentions"):  # T5's encoder_ and decoder_attentions too
        hint = ("; transformers' default attention (sdpa) returns none: "
                "+model.module.config.attn_implementation=eager returns them")
    return f"output '{path}' is empty (the model returned no tensor there){hint}"


def select(found: list[tuple[str, tuple[Step, ...], Any]], keep: Sequence[str],
           empty: Sequence[str] = (), none: Sequence[str] = ()) -> list[tuple[str, tuple[Step, ...], Any]]:
    """The leaves named by `keep` (a path, or a prefix of paths: 'hidden_states' keeps them all)."""
    if not keep:
        return found

    def under(path: str, want: str) -> bool:  # the path itself, or one below it
        return path == want or path.startswith(want + ".")

    chosen = []
    for want in keep:
        match = [leaf for leaf in found if under(leaf[0], want)]
        if not match and any(under(p, want) for p in empty):
            raise ConfigError(f"model.outputs: {why_empty(want)}")
        if not match and any(under(p, want) for p in none):  # a None, or a nest of them
            raise ConfigError(f"model.outputs: output {want!r} is None (the model returned no tensor there; None "
                              f"leaves are skipped); {_none_hint(want)}")
        if not match:
            available = ", ".join(path for path, _, _ in found) or "none"
            raise ConfigError(f"model.outputs: no output {want!r}; the model's outputs are: {available}")
        chosen += [leaf for leaf in match if leaf not in chosen]
    return chosen


def _getter(steps: tuple[Step, ...]) -> Callable[[Any], Any]:
    getters = [operator.itemgetter(key) if how == "item" else operator.attrgetter(key) for how, key in steps]
    if not getters:
        return lambda out: out
    if len(getters) == 1:
        return getters[0]

    def get(out: Any) -> Any:
        for g in getters:
            out = g(out)
        return out

    return get


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    paths: tuple[str, ...]  # the kept leaves, in order
    extract: Callable[[Any], tuple[torch.Tensor, ...]]  # forward's output -> the kept leaves
    warnings: tuple[str, ...] = ()  # outputs the model returned empty, so none of them is kept


def plan_outputs(out: Any, keep: Sequence[str], model_name: str) -> OutputPlan:
    """Find the leaves of one forward's output; refuse a kept leaf that is not a tensor."""
    empty = empty_paths(out)
    found = select(leaves(out), keep, empty, none_paths(out))
    for path, _, value in found:
        if not isinstance(value, torch.Tensor):
            tensors = [p for p, _, v in found if isinstance(v, torch.Tensor)]
            what = f"model {model_name}: output '{path}' is {_article(type(value).__name__)} {type(value).__name__}, not a tensor"
            if "Cache" in type(value).__name__:  # a HuggingFace model's key/value cache
                off = ("turn the cache off (a HuggingFace model: +model.module.config.use_cache=false, without the + "
                       "where its config file sets use_cache)")
            elif tensors:
                off = "turn it off in the model's settings (model.module) if it has one"
            else:  # nothing to keep, nothing known to turn off (a forward that returns a numpy array)
                raise ConfigError(f"{what}, and it returns no tensor beside it; the runner times tensors: wrap the "
                                  "model in a module whose forward returns them (torch.as_tensor)")
            keep_only = f"model.outputs=[{','.join(tensors)}]" if tensors else ""
            raise ConfigError(f"{what}; {off}" + (f", or keep only tensors with {keep_only}" if tensors else ""))
    if not found:
        raise ConfigError(f"model {model_name}: forward returned no tensor; the runner needs at least one output tensor")
    paths = tuple(path for path, _, _ in found)
    getters = tuple(_getter(steps) for _, steps, _ in found)
    if len(getters) == 1 and not found[0][1]:
        extract: Callable[[Any], tuple[torch.Tensor, ...]] = lambda out: (out,)  # noqa: E731
    elif len(getters) == 1:
        only = getters[0]
        extract = lambda out: (only(out),)  # noqa: E731
    else:
        extract = lambda out: tuple(g(out) for g in getters)  # noqa: E731
    if any(found_steps for _, found_steps, _ in found):
        extract = _guarded(extract, paths, model_name)
    # When outputs are named, only those matter. An empty cross_attentions beside attentions the
    # model did give is what a model without cross-attention (BERT as an encoder) returns:
    # nothing to say, nothing to do.
    unkept = () if keep else [p for p in empty if not _no_cross_attention(p, paths) and not _beside_empty_attention(p, empty)]
    return OutputPlan(paths, extract, tuple(f"{why_empty(p)}: not measured" for p in unkept))


def _beside_empty_attention(path: str, empty: Sequence[str]) -> bool:
    """An empty `cross_attentions` beside an empty `attentions`: the attentions' warning says how
    to get them, and with them given, an encoder's cross_attentions is not warned about (BERT
    under sdpa had been told of both; walk)."""
    parent, _, name = path.rpartition(".")
    return name == "cross_attentions" and (f"{parent}.attentions" if parent else "attentions") in empty


def _no_cross_attention(path: str, paths: Sequence[str]) -> bool:
    """An empty `cross_attentions` whose sibling `attentions` holds leaves."""
    parent, _, name = path.rpartition(".")
    if name != "cross_attentions":
        return False
    attentions = f"{parent}.attentions" if parent else "attentions"
    return any(q == attentions or q.startswith(attentions + ".") for q in paths)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _guarded(extract: Callable[[Any], tuple[torch.Tensor, ...]], paths: tuple[str, ...],
             model_name: str) -> Callable[[Any], tuple[torch.Tensor, ...]]:
    """`extract`, saying in one line, naming the fix, when an output no longer has the leaves
    the first forward had (a list with one entry per sample, as detection models return, has
    fewer at a smaller batch: the paths then failed with a bare IndexError)."""

    def guarded(out: Any) -> tuple[torch.Tensor, ...]:
        try:
            return extract(out)
        except (LookupError, AttributeError, TypeError) as exc:
            now = {path for path, _, _ in leaves(out)}
            gone = [p for p in paths if p not in now]
            named = f" ({', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''})" if gone else ""
            raise ConfigError(
                f"model {model_name}: its output lost {len(gone) or 'some'} of the {len(paths)} leaves the first "
                f"forward (the largest request) had{named}: its structure follows the request (one entry per "
                "sample?), and the response buffers need the same leaves every time; return tensors whose leading "
                "dimension is the batch (stack the entries), or leave such outputs out with model.outputs=[...]"
            ) from exc

    return guarded
