"""Compare two sets of results, config by config, with each run's own noise taken into account.

    python -m runner.compare OLD NEW [--threshold 0.05] [--sigma 3]

OLD and NEW are result.json files, run folders or sweep folders. Results are matched by what
was asked for (model and its arguments, input, dtype, TF32, streams, graph, pinned, copies in
graph); a match whose settings actually ran differently (another device type, an eager fallback)
or on other hardware (another GPU model; on the CPU another CPU model or thread count) is
flagged, not compared. Per match: ratio = NEW / OLD requests/s. A change counts only when it is larger than both
`--threshold` (|ratio - 1|) and `--sigma` times the combined noise of the two runs (their
coefficients of variation across repeats, added in quadrature, against |ln ratio|: a halving
and a doubling are as far from 1); otherwise the verdict is "same".
Several runs of one config on a side (OLD or NEW a folder holding several sweeps of it) are
pooled: that side's rate is the median of its runs. OLD's runs say how much one run varies
between runs, which a run's own passes cannot show; that spread (stdev / mean, or from the
median absolute deviation for 5 runs or more) joins the noise of both sides (as the median's
error, 1.25 spread / sqrt(runs), for a pooled side). NEW's own spread never widens the gate,
and each NEW run is also judged alone: one slower run is a regression, never averaged away;
so is one NEW run that failed, measured nothing, or ran other settings than the rest.
A load.rate=max search is compared on its highest rate under the bound, which lies below the
lowest rate found invalid: a change counts only when it shows at both ends of those brackets,
and a search the budget ended before any rate failed (a floor) is "undecided" unless the other
side's bracket lies clear of it (undecided fails the gate: it cannot tell); so is a change past
`--threshold` where a run's rate rests on one pass (its noise unknown). Single-stream and
fixed-rate jobs are not compared, and say why. Rows are labelled by the overrides that tell
their runs apart (as in the sweep table). Exits 1 when any config got slower by such a change,
stopped ending ok (or is new and did not end ok), ran differently, is missing from NEW or
undecided, or when nothing was compared: usable as a CI gate.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from runner.printer import rate_text
from runner.record import RESULT_FILE, host_shared, read_result, result_problem, without_resume
from runner.report import distinguishing, host_us
from runner.schema import keys_under, recorded_default


@dataclass
class Match:
    label: str
    old: Optional[dict[str, Any]]
    new: Optional[dict[str, Any]]
    ratio: Optional[float] = None
    noise: Optional[float] = None
    verdict: str = ""
    runs: tuple[int, int] = (1, 1)  # results pooled on each side (old, new)


def load_results(path: Path, side: str = "") -> list[dict[str, Any]]:
    """The results under `path`. A file that is not a readable result, or a copy of a result
    already read (the same job: pid and start), is left out with a warning: a copy would count
    twice in a pool."""
    files = [path] if path.is_file() else sorted(path.rglob(RESULT_FILE))
    results, seen = [], {}
    for f in files:
        result = read_result(f)
        if result is None:
            print(f"warning: {side or 'results'}: {f} left out: {result_problem(f) or 'not found'}", file=sys.stderr)
            continue
        key = run_key(result)
        if key is not None and key in seen:
            print(f"warning: {side or 'results'}: {f} left out: a copy of {seen[key]}", file=sys.stderr)
            continue
        if key is not None:
            seen[key] = f
        results.append(result)
    return results


def run_key(result: dict[str, Any]) -> Optional[tuple]:
    """What tells one run from another: the process and the moment it started."""
    job = result.get("job") or {}
    return (job.get("pid"), job.get("started_unix")) if job.get("started_unix") is not None else None


_ASKED = ("streams", "graph", "pinned", "dtype", "tf32", "compile")


def _recorded(config: dict[str, Any], path: str) -> Any:
    """A setting as the run recorded it; the schema's default where it recorded none (an older
    result, from before the key existed: it ran as the default does). A key added to the
    runner had set every older result apart from its new self."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return recorded_default(path)
        node = node[part]
    return node


def _with_defaults(inputs: Any) -> Any:
    """Each input with every key the schema gives it: one recorded before a key existed (an
    input's own dtype) ran as its default does. Anything but a map of maps, as it is."""
    if not isinstance(inputs, dict):
        return inputs
    return {name: {**{k: recorded_default(f"model.inputs.{name}.{k}") for k in keys_under(f"model.inputs.{name}")}, **inp}
            if isinstance(inp, dict) else inp for name, inp in inputs.items()}


def identity(result: dict[str, Any]) -> str:
    """What was asked for, as a stable key: the model with its arguments and input, and the
    settings that define the experiment (not the measurement budget, seed or outputs)."""
    config = result.get("config") or {}
    model = config.get("model") or {}
    load = _recorded(config, "load") or {}
    key = {
        "model": model.get("name", result.get("model")),
        "module": model.get("module"),
        "batch": model.get("batch"),
        "seq": model.get("seq"),
        "inputs": _with_defaults(model.get("inputs")),
        "outputs": _recorded(config, "model.outputs"),
        "sizes": _recorded(config, "model.sizes"),
        "copies_in_graph": _recorded(config, "capture.copies_in_graph"),
        "staging": _recorded(config, "staging"),
        # device=cpu against a GPU is another experiment, not a rerun; auto is what it chose.
        "device": _device_type(result),
        **{k: _recorded(config, k) for k in _ASKED},
        # The scenario, and for a server its offered rate and bound: the rest (how long a point
        # runs, how many single-stream requests) is the measurement's budget, as measure.* is.
        "load": {k: load.get(k) for k in (("scenario", "rate", "p99_ms") if load.get("scenario") == "server"
                                          else ("scenario",))},
    }
    return json.dumps(key, sort_keys=True, default=str)


def _what_ran(result: dict[str, Any]) -> Optional[dict[str, Any]]:
    effective = result.get("effective")
    if not effective:
        return None
    ran = dict(effective)
    ran["device"] = str(ran.get("device", "")).split(":")[0]  # cuda:0 and cuda:1 are alike
    return ran


def _device_type(result: dict[str, Any]) -> str:
    """The device type asked for (cpu, cuda); for device=auto the one it chose."""
    asked = str((result.get("config") or {}).get("device") or "auto")
    if asked == "auto":
        asked = str((result.get("effective") or {}).get("device") or (result.get("env") or {}).get("device") or "auto")
    return asked.split(":")[0]


def _on_cpu(result: dict[str, Any]) -> bool:
    env = result.get("env") or {}
    return str((result.get("effective") or {}).get("device") or env.get("device") or "").startswith("cpu")


def _hardware(result: dict[str, Any]) -> dict[str, Any]:
    """What a run's figures ran on, where it recorded it: the GPU's model; on the CPU, its model
    and torch's threads. Runs on another GPU were judged as a change of the code. (A GPU run's
    host CPU is said beside a verdict, not ruled on: `_beside`.)"""
    env = result.get("env") or {}
    found = {"host cpu": env.get("cpu_model"), "torch threads": env.get("torch_threads")} if _on_cpu(result) else \
        {"gpu": (env.get("gpu") or {}).get("name")}
    return {k: v for k, v in found.items() if v is not None}


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings two runs ran differently, among those both recorded (an older result may
    lack a later key), then the hardware they ran on, each with its two values; "what ran"
    when one of them recorded no settings."""
    before, after = _what_ran(a), _what_ran(b)
    if before is None or after is None:
        return [] if before is after else ["what ran: not recorded"]
    settings = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    was, now = _hardware(a), _hardware(b)
    return settings + [f"{k}: {was[k]} -> {now[k]}" for k in was if k in now and was[k] != now[k]]


def label(result: dict[str, Any]) -> str:
    effective = result.get("effective") or {}
    dtype = (effective.get("dtype") or "?") + ("+tf32" if effective.get("tf32") and effective.get("dtype") == "fp32" else "")
    batch = ((result.get("config") or {}).get("model") or {}).get("batch")
    return f"{result.get('model')} | {result.get('mode')} | {dtype} | batch {batch}"


def _flat(key: str) -> dict[str, Any]:
    """An identity as dotted settings: {'streams': 1, 'staging.mode': 'copy', ...}."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix.rstrip(".")] = node

    walk(json.loads(key), "")
    return out


def _typed_text(value: Any) -> str:
    """A setting as the command line writes it: graph=false, not graph=False."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def labels(keys: list[str], results: dict[str, dict[str, Any]],
           overrides: Optional[dict[str, list[str]]] = None) -> dict[str, str]:
    """A label per identity: the overrides that tell its run from the others' (as the sweep
    table shows them) where they tell every identity apart; else the short label, plus the
    asked settings that tell apart identities whose short labels are the same (two configs
    that ran alike on a CPU, say). `overrides`: an identity's overrides, where its runs are
    several (those all its runs share), else its result's."""
    asked = distinguishing([without_resume((overrides or {}).get(k, results[k].get("overrides") or []))
                            for k in keys])
    if len(keys) > 1 and all(asked) and len(set(asked)) == len(keys):
        return dict(zip(keys, asked, strict=True))
    short = {k: label(results[k]) for k in keys}
    out = {}
    for k in keys:
        twins = [t for t in keys if short[t] == short[k]]
        if len(twins) == 1:
            out[k] = short[k]
            continue
        flats = {t: _flat(t) for t in twins}
        differing = sorted({name for t in twins for name, v in flats[t].items() if v != flats[k].get(name)}
                           | {name for t in twins for name in flats[k] if flats[k][name] != flats[t].get(name)})
        # A setting this config left unset says so, after those it set (the label had ended in
        # "asked " with nothing after it).
        said = [f"{n}={_typed_text(flats[k][n])}" for n in differing if flats[k].get(n) is not None]
        said += [f"{n} unset" for n in differing if flats[k].get(n) is None]
        out[k] = short[k] + " | asked " + " ".join(said)
    return out


def shared_overrides(runs: list[dict[str, Any]]) -> list[str]:
    """The overrides every one of these runs asked for, in the first's order: a pool of six
    runs, one of them with timestamps=csv, was labelled "timestamps=csv"."""
    asked = [list(r.get("overrides") or []) for r in runs]
    return [o for o in asked[0] if all(o in other for other in asked[1:])] if asked else []


def _count(result: dict[str, Any], key: str) -> Optional[int]:
    """A job count the result recorded (job.concurrent_jobs, job.parallel_devices); None when
    it did not (an older result)."""
    value = (result.get("job") or {}).get(key)
    return int(value) if isinstance(value, (int, float)) else None


def _concurrent(result: dict[str, Any]) -> bool:
    return (_count(result, "concurrent_jobs") or 1) > 1


def _short(verdict: str) -> str:
    """A slower or faster verdict without its parenthesized caveat (what ran beside it); an
    undecided one to its first clause (the table holds what to do)."""
    if verdict.startswith("undecided"):
        depth = 0  # the first clause: up to a "; " outside parentheses (a caveat holds its own)
        for i, char in enumerate(verdict):
            depth += (char == "(") - (char == ")")
            if depth == 0 and verdict.startswith("; ", i):
                return verdict[:i]
        return verdict
    head, sep, _caveat = verdict.partition(" (")
    return f"{head} (see above)" if sep and head in ("slower", "faster") else verdict


def _beside(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What ran beside either run, or under it, for a faster, slower or too noisy verdict."""
    hosts = [(r.get("env") or {}).get("cpu_model") for r in (old, new)]
    if None not in hosts and hosts[0] != hosts[1] and not _on_cpu(new):
        # The same GPU under another host CPU: a config bound by the host's Python moves with it.
        return f" (on another host CPU: {hosts[0]} -> {hosts[1]}; a config bound by the host moves with it)"
    if _concurrent(old) or _concurrent(new):
        return " (ran beside other jobs of its sweep: their timings interfere)"
    # Other work on the host, by the run's own warnings (runner.report names such jobs; compare
    # had called a run slowed by it "slower" without a word).
    shared = [(side, said) for side, r in (("old", old), ("new", new)) if (said := host_shared(r.get("warnings") or []))]
    if shared:
        return " (" + "; ".join(f"{side}'s host was shared with other work: {said}" for side, said in shared) + \
            ": a rate can be many times too low; rerun on a quiet host)"
    spread_over = [_count(r, "parallel_devices") for r in (old, new)]
    if None not in spread_over and (spread_over[0] > 1) != (spread_over[1] > 1):  # type: ignore[operator]
        side = "old" if spread_over[0] > 1 else "new"  # type: ignore[operator]
        return (f" ({side}'s sweep ran jobs on several GPUs of its host at once (hydra.launcher.devices): they share "
                "its memory and PCIe; the other's did not)")
    return ""


def _rps(result: dict[str, Any]) -> Optional[float]:
    """The rate compared: closed-loop throughput, or for a load.rate=max search the highest
    rate that held the latency bound."""
    figures = result.get("figures") or {}
    return figures.get("throughput_requests_per_s") or figures.get("server_max_rate")


def _searched(result: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The runner's load.rate=max search, or None."""
    load = (result.get("figures") or {}).get("load") or {}
    return (load.get("runner") or {}) if load.get("scenario") == "server" and load.get("rate") == "max" else None


def _no_point(result: dict[str, Any]) -> bool:
    """A load.rate=max search the budget ended before its first point: nothing measured."""
    search = _searched(result)
    return search is not None and search.get("points") == [] and \
        (result.get("figures") or {}).get("server_max_rate") is None


def _none_held(result: dict[str, Any]) -> bool:
    """A load.rate=max search that found no rate to hold the latency bound."""
    return _searched(result) is not None and (result.get("figures") or {}).get("server_max_rate") is None \
        and not _no_point(result)


def _finished(result: dict[str, Any]) -> bool:
    """A rate search that ran to its resolution (pooled: every run did)."""
    part = _searched(result) or {}
    return part.get("stopped_by") == "resolution" or bool(part.get("finished_all"))


def _resolution(result: dict[str, Any]) -> float:
    """The load.resolution its search ran to (0 where not recorded)."""
    load = result.get("load") or ((result.get("config") or {}).get("load")) or {}
    value = load.get("resolution")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _width(result: dict[str, Any]) -> Optional[float]:
    """How far above its figure a load.rate=max search's highest valid rate may lie, relative:
    the search ends with the highest rate found valid and the lowest found invalid, so the
    true rate lies between them (within load.resolution when the search finished); math.inf
    when the budget ended it before any rate failed (the figure is a floor). None: not a
    search, or a result that did not record its bracket."""
    part = ((result.get("figures") or {}).get("load") or {}).get("runner") or {}
    if _searched(result) is None or not part.get("stopped_by"):
        return None
    best, failed = part.get("max_rate"), part.get("lowest_invalid_rate")
    if not best:
        return None
    return failed / best - 1.0 if failed else math.inf


def _bound(result: dict[str, Any]) -> str:
    p99_ms = (((result.get("figures") or {}).get("load") or {}).get("p99_ms"))
    return f"p99 <= {p99_ms:g} ms" if p99_ms else "the bound"


def _not_comparable(result: dict[str, Any], side: str) -> Optional[str]:
    """Why a result has no rate to compare: a fixed offered rate (the achieved one follows it)
    or one request at a time (latency only)."""
    load = (result.get("figures") or {}).get("load") or {}
    if load.get("scenario") == "single_stream":
        return "not compared: load.scenario=single_stream measures latency, not a rate"
    if load.get("scenario") == "server" and load.get("rate") != "max":
        return "not compared: a fixed load.rate (compare load.rate=max searches)"
    if _none_held(result):
        return f"not compared: no rate held {_bound(result)} in the {side} run"
    return None


def _cv(result: dict[str, Any]) -> Optional[float]:
    """The run's spread over all its passes: a step in speed inside one run (left out of its
    figures) is as likely between two runs. None when its throughput rests on one pass, or
    for a rate search: its noise is unknown, not nothing. A search's bracket bounds where its
    figure lies for the points it ran, not how a rerun's would fall: whether a point near the
    bound holds is chance (identical simulated searches called 12-29% of identical pairs
    slower or faster on their brackets alone)."""
    figures = result.get("figures") or {}
    cvs = [figures.get(k) for k in ("throughput_cv", "throughput_cv_all_repeats")]
    if all(cv is None for cv in cvs):
        return None
    return float(max(cv or 0.0 for cv in cvs))


# Noise that would hide a change of this factor or more (at --sigma) leaves a ratio past the
# threshold undecided, not "same".
BLIND_FACTOR = 2.0


def _within_threshold(ratio: float, threshold: float) -> bool:
    """A change too small to count, alike both ways (100 to 95.2 and 95.2 to 100: |ratio - 1|
    had let the first pass as "same" and called the second "faster")."""
    return abs(math.log(ratio)) <= math.log1p(threshold)


def _reason(result: dict[str, Any], chars: int = 100) -> str:
    reason = " ".join(str(result.get("reason") or "").split())
    return f": {reason[:chars - 3]}..." if len(reason) > chars else (f": {reason}" if reason else "")


def judge(old: dict[str, Any], new: dict[str, Any], threshold: float, sigma: float,
          floor: tuple[float, float] = (0.0, 0.0)) -> tuple[Optional[float], Optional[float], str]:
    """The verdict on one config; `floor` is each side's least noise from the spread between
    runs (0: unknown), which its own passes' cv may not show."""
    if new.get("status") != "ok" and old.get("status") != "ok":
        return None, None, f"both not ok ({old.get('status')}, {new.get('status')})"
    if new.get("status") != "ok":
        return None, None, f"new {new.get('status')}" + _reason(new)
    if old.get("status") != "ok":
        return None, None, f"old {old.get('status')}" + _reason(old)
    changed = differences(old, new)
    if changed:
        return None, None, f"ran differently ({', '.join(changed)})"
    a, b = _rps(old), _rps(new)
    if _no_point(new):  # a gate must not pass on a search that measured nothing
        return None, None, "new not measured: its rate search ran out of budget before its first point"
    if _no_point(old):
        return None, None, "not compared: the old run's rate search ran out of budget before its first point"
    # A search the budget cut before any rate held found no rate yet, not that none holds: a
    # lower rate may (a quick job's one point had read "slower: no rate held").
    cut = [side for side, r in (("old", old), ("new", new)) if _none_held(r) and _searched(r).get("stopped_by") == "budget"]
    if cut:
        return None, None, (f"undecided: {' and '.join(cut)}'s rate search{'es were' if len(cut) > 1 else ' was'} cut by "
                            "the budget before any rate held the bound; raise measure.budget_s")
    none_held = [side for side, r in (("old", old), ("new", new)) if _none_held(r)]
    if none_held == ["old", "new"]:
        return None, None, f"not compared: no rate held {_bound(old)} in either run"
    if none_held == ["new"] and a and a > 0:  # a search that held a rate before, and none now
        return None, None, f"slower: no rate held {_bound(new)} in the new run (old held {rate_text(a)}/s)"
    if none_held == ["old"] and b and b > 0:
        return None, None, f"faster: no rate held {_bound(old)} in the old run (new holds {rate_text(b)}/s)"
    if not a or not b or a <= 0 or b <= 0:
        return None, None, _not_comparable(new, "new") or _not_comparable(old, "old") or "no throughput"
    ratio = b / a
    sides = [(side, _cv(r), least) for side, r, least in (("old", old, floor[0]), ("new", new, floor[1]))]
    unknown = [side for side, cv, least in sides if cv is None and least <= 0]
    wa, wb = _width(old), _width(new)
    searched = wa is not None or wb is not None
    # Rate searches: each true rate lies in [figure, figure x (1 + width)). A change counts
    # only when even the reading most in the other direction shows it.
    wa, wb = wa or 0.0, wb or 0.0
    most, least = ratio * (1.0 + wb), ratio / (1.0 + wa)
    open_ended = [f"{side}'s search ended before any rate failed (its rate is {rate_text(r)}/s or more)"
                  for side, w, r in (("old", wa, a), ("new", wb, b)) if math.isinf(w)]
    # The true ratio lies in [least, most]. Brackets no wider than the searches' resolution (or
    # the threshold) are a search's own grain: a ratio they allow within the threshold is no
    # change. Wider ones (a search the budget cut: 50-100%) allow a change as large as
    # themselves: no "same" then, unless even their lowest ratio rules a regression out.
    resolution = max(_resolution(old), _resolution(new))
    # A search that finished (or pooled runs that all did: their median top reads a little wider)
    # holds a bracket of its resolution; one the budget cut, its width.
    narrow = all(_finished(r) or w <= max(threshold, resolution) + 1e-9 for r, w in ((old, wa), (new, wb)))
    low, high = 1 / (1 + threshold) - 1e-9, 1 + threshold + 1e-9
    allowed = least <= high and most >= low  # some true ratio within the threshold
    brackets = f"each true rate lies up to {wa:.0%} (old) and {wb:.0%} (new) above its figure"
    too_wide = (f"undecided: the searches' brackets are wider than their resolution ({brackets}), and a change past "
                "the threshold may lie inside them; raise measure.budget_s for narrower ones")
    no_drop = f"same or faster (no drop past the threshold inside the searches' brackets: {brackets})"
    if unknown and searched:
        if not open_ended and narrow and allowed:
            return ratio, None, "same"
        if not open_ended and not narrow and least >= low:  # a wide bracket above: no regression, whatever the noise
            return ratio, None, no_drop
        # Its floor is old's spread between runs (new's own never widens the gate): one run of
        # old, or runs that agreed exactly, leave the noise unknown.
        return ratio, None, ("undecided: " + "".join(f"{said}; " for said in open_ended)
                             + "old's runs give no spread between runs (one run, or runs that agreed exactly), so "
                             "the noise is unknown (whether a rate near the bound holds is chance: a rerun's "
                             "figure can stray past its bracket); put several runs of old in its folder (several "
                             "sweeps): compare pools them, and their spread is the noise")
    if unknown:
        if _within_threshold(ratio, threshold):
            return ratio, None, "same"
        one = len(unknown) == 1
        return ratio, None, (f"undecided: {' and '.join(unknown)} rest{'s' * one} on one throughput "
                             "pass a run, so the noise is unknown; raise measure.budget_s or measure.min_repeats")
    noise = math.hypot(*(max(cv or 0.0, least) for _, cv, least in sides))

    def beyond(r: float) -> bool:
        # The noise is relative, so it bounds the ratio's logarithm: a 40x slowdown (ratio 0.025)
        # is 3.7 in log terms, far past 3 x 38% of noise, where |ratio - 1| (0.975) was not.
        return not _within_threshold(r, threshold) and abs(math.log(r)) > sigma * noise

    def blind() -> Optional[str]:
        """Noise that hides a 2x change is no evidence of none: a 9.3x was called "same"
        beside 76% of noise (a run on a shared host)."""
        if _within_threshold(ratio, threshold) or sigma * noise <= math.log(BLIND_FACTOR):
            return None
        return (f"undecided: {noise:.0%} of noise hides any change under {math.exp(sigma * noise):.1f}x"
                f"{_beside(old, new)}; rerun the noisy side on a quiet host")

    if searched:
        # The noise shown is the one weighed: the brackets move the ratio instead (their sum
        # in quadrature had been shown, 6.9% beside a 0.85 called slower).
        if most < 1.0 and beyond(most):
            return ratio, noise, "slower" + _beside(old, new)
        if least > 1.0 and beyond(least):
            return ratio, noise, "faster" + _beside(old, new)
        if open_ended:
            return ratio, None, "undecided: " + "; ".join(open_ended) + "; raise measure.budget_s"
        if not narrow:  # a change past the threshold may lie inside the brackets
            return ratio, noise, (blind() or no_drop) if least >= low else too_wide
        if not allowed:  # narrow brackets that rule "same" out, within the noise
            return ratio, noise, blind() or f"same (within the noise; the searches' brackets: {brackets})"
        if beyond(ratio):  # past the noise, and brackets of the resolution allow no change
            return ratio, noise, f"same (within the searches' brackets: {brackets})"
        return ratio, noise, blind() or "same"
    if not beyond(ratio):
        return ratio, noise, blind() or "same"
    return ratio, noise, ("faster" if ratio > 1 else "slower") + _beside(old, new)


def _by_identity(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[dict[str, list], dict[str, list]]:
    """Each side's runs by what they asked for. A device=auto run that failed before it chose
    a device joins the one config it differs from only by that (else it stays apart): its
    failure belongs to that config's row."""
    def without_device(key: str) -> str:
        return json.dumps({k: v for k, v in json.loads(key).items() if k != "device"}, sort_keys=True)

    keyed = [(side, r, identity(r), _device_type(r) == "auto") for side, results in (("old", old), ("new", new))
             for r in results]
    chosen: dict[str, set[str]] = {}
    for _, _, key, unresolved in keyed:
        if not unresolved:
            chosen.setdefault(without_device(key), set()).add(key)
    by: dict[str, dict[str, list]] = {"old": {}, "new": {}}
    for side, r, key, unresolved in keyed:
        if unresolved and len(twins := chosen.get(without_device(key), set())) == 1:
            key = next(iter(twins))
        by[side].setdefault(key, []).append(r)
    return by["old"], by["new"]


@dataclass
class Pooled:
    result: dict[str, Any]  # what the verdict reads: pooled, the runs' median rate, canary and cv
    runs: int  # the runs behind it
    spread: Optional[float] = None  # one run's relative spread between the runs; None: one run
    members: list[dict[str, Any]] = field(default_factory=list)  # the runs pooled (new: each judged alone too)
    mixed: str = ""  # new's runs ran different settings among themselves: which


# From this many runs, their spread is read robustly (below it the median absolute deviation
# reads low: at 5 runs its mean was 0.041 of a true 0.05, and identical configs failed the
# gate in 6.1% of simulated comparisons against 2.3% with the stdev).
ROBUST_RUNS = 10


def between_runs(rates: list[float]) -> float:
    """How far one run's rate strays between runs, relative: stdev / mean; from ROBUST_RUNS
    runs on, the median absolute deviation (scaled to a normal's sigma) / median, so that one
    stray run does not widen the gate for every other."""
    if len(rates) >= ROBUST_RUNS:
        middle = statistics.median(rates)
        return 1.4826 * statistics.median(abs(r - middle) for r in rates) / middle
    return statistics.stdev(rates) / statistics.fmean(rates)


def _unmeasured(result: dict[str, Any]) -> bool:
    """A run with no rate to pool: not ok, a search that measured nothing or held no rate, or
    no throughput at all."""
    rate = _rps(result)
    return result.get("status") != "ok" or _no_point(result) or _none_held(result) or not rate or rate <= 0


def _as_one(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The last run, carrying the runs' median rate, canary and cv, and whether any of them ran
    beside other jobs."""
    last = runs[-1]
    figures = dict(last.get("figures") or {})
    key = "throughput_requests_per_s" if figures.get("throughput_requests_per_s") else "server_max_rate"
    figures[key] = statistics.median(_rps(r) for r in runs)  # type: ignore[type-var]
    if _searched(last) is not None:
        # The pooled rate's bracket: the median of the runs' upper ends (open where a run's was:
        # the widest finite width alone had put the top of (100, open, 200 +5%) at 105).
        uppers = [rate * (1 + w) for r in runs if (w := _width(r)) is not None and (rate := _rps(r))]
        if uppers:
            width = max(0.0, statistics.median(uppers) / figures[key] - 1)
            load = dict(figures.get("load") or {})
            load["runner"] = {**(load.get("runner") or {}), "max_rate": figures[key], "stopped_by": "pooled",
                              "lowest_invalid_rate": figures[key] * (1 + width) if math.isfinite(width) else None,
                              "finished_all": all(_finished(r) for r in runs)}
            figures["load"] = load
    canaries = [_canary_us(r) for r in runs]
    figures["host_canary_us_repeats"] = [statistics.median(canaries)] if None not in canaries else []  # type: ignore[type-var]
    figures["throughput_steady_from_repeat"] = 1
    # The runs' typical own noise: one noisy run must not set it for all (their spread between
    # runs, which holds each run's own noise too, is the floor under it).
    known = [cv for cv in map(_cv, runs) if cv is not None]
    figures["throughput_cv"] = figures["throughput_cv_all_repeats"] = statistics.median_low(known) if known else None
    job = dict(last.get("job") or {})
    for name in ("concurrent_jobs", "parallel_devices"):
        counts = [_count(r, name) for r in runs]
        job[name] = None if None in counts else max(counts)  # type: ignore[type-var]
    return {**last, "figures": figures, "job": job}


def pool(results: list[dict[str, Any]], side: str, prefer: Optional[dict[str, Any]] = None) -> Pooled:
    """One side's runs of one config as one. In new, a run that failed, measured nothing or
    ran other settings than the rest decides the row (a gate must not average it away). In
    old, the measured runs that ran like `prefer` (new's run), else like old's last, are
    pooled, and the others are left out with a warning. Single-stream and fixed-rate runs are
    never compared: the last is read."""
    last = results[-1]
    if len(results) == 1 or any(_not_comparable(r, side) and not _none_held(r) for r in results):
        return Pooled(last, len(results))
    if side == "new":
        bad = next((r for r in results if _unmeasured(r)), None)
        if bad is not None:
            return Pooled(bad, len(results))
        apart = next((r for r in results if differences(r, last)), None)
        if apart is not None:
            return Pooled(last, len(results), mixed=", ".join(differences(apart, last)))
        measured = results
    else:
        good = [r for r in results if not _unmeasured(r)]
        if not good:
            return Pooled(last, len(results))
        like = prefer if prefer is not None and any(not differences(r, prefer) for r in good) else good[-1]
        measured = [r for r in good if not differences(r, like)]
        if len(measured) < len(results):
            print(f"warning: old: {len(results) - len(measured)} of {len(results)} runs of {label(last)} left out "
                  "(not ok, nothing measured, or other settings ran)", file=sys.stderr)
    if len(measured) == 1:
        return Pooled(measured[0], 1, members=measured)
    rates = [_rps(r) for r in measured]
    return Pooled(_as_one(measured), len(measured), between_runs(rates), members=measured)  # type: ignore[arg-type]


def _floors(old: Pooled, new: Pooled) -> tuple[float, float]:
    """Each side's least noise from old's spread between runs: the error of a median of n runs
    (1.25 spread / sqrt(n)), or the whole spread for one run. Zero without several old runs:
    new's own spread never widens the gate."""
    if old.spread is None:
        return 0.0, 0.0

    def of(p: Pooled) -> float:
        return old.spread * (1.25 / math.sqrt(p.runs) if p.runs > 1 else 1.0)  # type: ignore[operator]

    return of(old), of(new)


def _at_the_plans_mix(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With buckets a run's passes serve their own part of the request plan (two runs of one
    config served 16.4 and 8.3 samples a request, and a 2x in requests/s was the same work):
    each run's requests/s put at the plan's mix, its samples/s over the plan's mean samples per
    request, the same divisor for every run of the config. Unchanged unless every run with a
    throughput recorded what its passes served."""
    rated = [r for r in runs if (r.get("figures") or {}).get("throughput_requests_per_s")]
    if not rated or not all((r["figures"].get("throughput_samples_per_request") and r["figures"].get("samples_per_request")
                             and r["figures"].get("throughput_samples_per_s")) for r in rated):
        return runs
    plan = rated[0]["figures"]["samples_per_request"]

    def at_mix(r: dict[str, Any]) -> dict[str, Any]:
        f = r.get("figures") or {}
        if not f.get("throughput_requests_per_s"):
            return r
        # Its noise in the same unit: the passes' samples/s spread apart from their requests/s
        # (3.9% vs 10.0% in one job), and the requests/s cv had called a 0.85 within 14% "slower".
        spread = {"throughput_cv": f["throughput_samples_cv"]} if f.get("throughput_samples_cv") is not None else {}
        return {**r, "figures": {**f, "throughput_requests_per_s": f["throughput_samples_per_s"] / plan,
                                 "at_the_plans_mix": plan, **spread}}

    return [at_mix(r) for r in runs]


def compare(old: list[dict[str, Any]], new: list[dict[str, Any]], threshold: float, sigma: float) -> list[Match]:
    old_runs, new_runs = _by_identity(old, new)
    for key in {*old_runs, *new_runs}:
        both = _at_the_plans_mix([*old_runs.get(key, []), *new_runs.get(key, [])])
        if key in old_runs:
            old_runs[key] = both[:len(old_runs[key])]
        if key in new_runs:
            new_runs[key] = both[len(old_runs.get(key, [])):]
    new_by = {k: pool(v, "new") for k, v in new_runs.items()}
    old_by = {k: pool(v, "old", prefer=new_by[k].result if k in new_by else None) for k, v in old_runs.items()}
    matches = []
    keys = list(dict.fromkeys([*old_by, *new_by]))
    # A label from a run that knows what it ran (a run that failed early may not).
    names = labels(keys, {k: next((p.result for p in (new_by.get(k), old_by.get(k)) if p and p.result.get("mode")),
                                  (new_by.get(k) or old_by[k]).result) for k in keys},
                   {k: shared_overrides([*old_runs.get(k, []), *new_runs.get(k, [])]) for k in keys})
    for key in keys:
        a, b = old_by.get(key), new_by.get(key)
        m = Match(names[key], a and a.result, b and b.result, runs=(a.runs if a else 0, b.runs if b else 0))
        if a is None:
            # A config new brought that does not end ok is news a gate must stop on.
            status = b.result.get("status")
            m.verdict = "only in new" if status == "ok" else f"new {status or 'unknown'} (only in new)" + _reason(b.result)
        elif b is None:
            # A config no old run measured (none ended ok: an invalid or interrupted run's rate
            # is shown nowhere) is no coverage lost: said, not a regression.
            measured = any(r.get("status") == "ok" for r in old_runs[key])
            m.verdict = "missing in new" if measured else \
                f"missing in new (was {a.result.get('status') or 'unknown'} in old)"
        elif b.mixed:
            m.verdict = f"new runs ran differently among themselves ({b.mixed})"
        else:
            floor = _floors(a, b)
            m.ratio, m.noise, m.verdict = judge(a.result, b.result, threshold, sigma, floor)
            if b.runs > 1 and m.ratio is not None and not m.verdict.startswith(("slower", "undecided")):
                # Each new run alone, against old as pooled: one run that got slower is not averaged away,
                # nor one that may have (its noise unknown: one pass) beside runs that did not.
                alone = (floor[0], a.spread or 0.0)  # a single run strays by old's whole spread
                alone_verdicts = [judge(a.result, r, threshold, sigma, alone) for r in b.members]
                slower = [ratio for ratio, _, verdict in alone_verdicts if verdict.startswith("slower")]
                undecided = sorted((ratio, verdict) for ratio, _, verdict in alone_verdicts
                                   if verdict.startswith("undecided") and ratio is not None and ratio < 1.0)
                unsure = [ratio for ratio, _ in undecided]
                # Why the slowest could not be told: its own verdict's first clause (one pass's
                # unknown noise, a wide bracket, noise that hides 2x), not one reason for all.
                reason = f": {_short(undecided[0][1]).removeprefix('undecided: ')}" if undecided else ""
                for said, ratios, why in (("slower", slower, ""), ("undecided: maybe slower", unsure, reason)):
                    if ratios:
                        m.verdict = (f"{said} in {len(ratios)} of {b.runs} new runs (the slowest at {min(ratios):.3f}, "  # type: ignore[type-var]
                                     f"the median at {m.ratio:.3f}){why}")
                        break
        matches.append(m)
    return matches


def pooled_note(matches: list[Match]) -> Optional[str]:
    """Says how the rows with several runs on a side were read."""
    pooled = [m for m in matches if max(m.runs) > 1]
    if not pooled:
        return None
    spread = ("old's spread between runs joins the noise of both sides (where old has several), new's never widens "
              "it" if any(m.runs[0] > 1 for m in pooled) else "new's spread between runs never widens the noise")
    return (f"note: {len(pooled)} config(s) have several runs on a side (the runs column, old+new): a side's rate is "
            f"the median of its runs; {spread}; each new run is also judged alone, and one that failed, measured "
            "nothing or ran other settings decides its row")


def mix_note(matches: list[Match]) -> Optional[str]:
    """Says which rows were put at their plan's mix of request sizes."""
    mixed = [m for m in matches if any(((r or {}).get("figures") or {}).get("at_the_plans_mix") for r in (m.old, m.new))]
    if not mixed:
        return None
    return (f"note: {len(mixed)} config(s) serve a mix of request sizes (buckets), and a run's passes serve their own "
            "part of it: their r/s are at the plan's mix (a run's samples/s over the plan's mean samples per request), "
            "so that runs compare the work done per second")


def single_runs_note(matches: list[Match]) -> Optional[str]:
    """A faster or slower verdict between single runs weighs each run's own noise only: how far
    a run strays between runs is unknown, and on a VM it can stray further (two identical CPU
    sweeps seconds apart read 0.73-0.77x, each run within 1-3%)."""
    # Verdicts weighed against noise (a search that held no rate is a fact, not a ratio).
    called = [m for m in matches if m.runs[0] == 1 and m.ratio is not None and m.verdict.startswith(("slower", "faster"))]
    if not called:
        return None
    return (f"note: {len(called)} verdict(s) above rest on one old run: their noise is each run's own, and how far "
            "a run strays between runs is not known from one. Put several runs of old (and new) in each folder "
            "(several sweeps): compare pools them, and old's spread joins the noise")


# Configs whose ratios all lie within this factor of each other moved together.
TOGETHER = 1.15


def common_shift(matches: list[Match], threshold: float) -> Optional[str]:
    """Three or more configs that all moved by about the same ratio: the machine's speed
    between the two runs moves every config alike, as a change in the code may. On a 2-core
    VM two identical CPU sweeps a minute apart read 0.75-0.81x, every config, same canary."""
    ratios = sorted(m.ratio for m in matches if m.ratio is not None)
    if len(ratios) < 3 or ratios[-1] / ratios[0] > TOGETHER:
        return None
    middle = ratios[len(ratios) // 2]
    if abs(middle - 1.0) <= threshold:
        return None
    return (f"note: all {len(ratios)} compared configs moved together ({ratios[0]:.2f}-{ratios[-1]:.2f}x): a change in "
            "the machine's speed between the runs does that as well as a change in the code; run old and new in "
            "one session on a quiet machine, several runs a side, before trusting these verdicts")


HOST_MOVED = 1.10  # the host canary's median moved by more than this factor between the runs


def _canary_us(result: Optional[dict[str, Any]]) -> Optional[float]:
    """The canary over the passes the rate comes from (report.host_us)."""
    return host_us((result or {}).get("figures") or {})


def host_speed_ratio(m: Match) -> Optional[float]:
    """The host's speed in new against old while this config ran (>1: faster in new), from the
    canary timed beside every throughput pass."""
    old_us, new_us = _canary_us(m.old), _canary_us(m.new)
    return old_us / new_us if old_us and new_us else None


def host_shift(matches: list[Match]) -> Optional[str]:
    """Configs whose host ran at another speed in new than in old. A config bound by the host's
    Python moves with it whatever the code did: on one GPU VM the canary read about 112 or
    about 200 us from one run to the next, and eager rates followed it 1:1
    (benchmarks/multi_gpu.py)."""
    speeds = [(m, h) for m in matches if (h := host_speed_ratio(m))]
    moved = [m for m, h in speeds if max(h, 1 / h) > HOST_MOVED]
    if not moved:
        return None
    flagged = [m for m in moved if m.verdict.startswith(("slower", "faster"))]  # changes of speed, not of status
    return (f"note: the host's own speed moved by more than {HOST_MOVED - 1:.0%} between the runs for {len(moved)} of "
            f"the {len(speeds)} configs timed with it (the host column: its canary, a fixed piece of Python timed beside every pass, "
            "new speed against old). Configs bound by the host's Python (eager, or small models in graphs at many "
            "streams) move with it, whatever the code did"
            + (f"; {len(flagged)} of the changes called above ran on such a moved host" if flagged else ""))


def is_regression(m: Match) -> bool:
    """Slower, no longer ok, run differently, gone, or undecided (a search the budget ended
    before it could tell): anything a CI gate must stop on."""
    return m.verdict in ("missing in new",) or m.verdict.startswith(("slower", "new ", "ran differently", "undecided"))


def _rate_cell(result: Optional[dict[str, Any]]) -> str:
    """A side's rate; none for a run that did not end ok (an invalid run's rate comes from
    outputs that differ from eager, an interrupted one's from part of its passes)."""
    rate = _rps(result) if result is not None and result.get("status") == "ok" else None
    return "-" if rate is None else rate_text(rate)


def render(matches: list[Match]) -> str:
    host = any(host_speed_ratio(m) for m in matches)  # results of older versions carry no canary
    runs = any(max(m.runs) > 1 for m in matches)
    rows = [("config", *(("runs",) if runs else ()), "old r/s", "new r/s", "ratio", "noise",
             *(("host",) if host else ()), "verdict")]
    for m in matches:
        speed = host_speed_ratio(m)
        rows.append((
            m.label,
            *((f"{m.runs[0]}+{m.runs[1]}",) if runs else ()),
            _rate_cell(m.old),
            _rate_cell(m.new),
            "-" if m.ratio is None else f"{m.ratio:.3f}",
            "-" if m.noise is None else f"{m.noise:.1%}",
            *(("-" if speed is None else f"{speed:.2f}",) if host else ()),
            m.verdict,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i in (0, len(r) - 1) else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in rows
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runner.compare", description="Compare two sets of results, config by config, each run's noise "
        "taken into account; exits 1 on a regression (usable as a CI gate).")
    where = ("a result.json, a run folder or a sweep folder; a folder holding several runs of a config (several sweeps) "
             "pools them: their median, with the spread between them as noise")
    parser.add_argument("old", type=Path, help=where)
    parser.add_argument("new", type=Path, help="the same, for the runs to judge")
    parser.add_argument("--threshold", type=float, default=0.05, help="smallest relative change that counts (default 0.05)")
    parser.add_argument("--sigma", type=float, default=3.0, help="a change must also exceed this many times the runs' combined noise (default 3)")
    args = parser.parse_args(argv)
    if not 0 <= args.threshold < 1:
        print(f"error: --threshold {args.threshold:g}: a fraction of the ratio in [0, 1), e.g. --threshold 0.05 for 5%",
              file=sys.stderr)
        return 2
    if not (math.isfinite(args.sigma) and args.sigma >= 0):
        print(f"error: --sigma {args.sigma:g}: a finite number >= 0, e.g. --sigma 3", file=sys.stderr)
        return 2
    for name in ("old", "new"):
        if not getattr(args, name).exists():
            print(f"error: {name}: {getattr(args, name)} does not exist", file=sys.stderr)
            return 2
    old, new = load_results(args.old, "old"), load_results(args.new, "new")
    for name, results in (("old", old), ("new", new)):
        if not results:
            print(f"error: {name}: no runner result.json under {getattr(args, name)}", file=sys.stderr)
            return 2
    both = {run_key(r) for r in old} & {run_key(r) for r in new} - {None}
    if both:
        one = len(both) == 1
        print(f"warning: {len(both)} of the runs {'is' if one else 'are'} on both sides (the same result files): "
              f"{'it is compared with itself' if one else 'they are compared with themselves'}", file=sys.stderr)
    matches = compare(old, new, args.threshold, args.sigma)
    print(render(matches))
    if not any(m.old is not None and m.new is not None for m in matches):
        print("note: old and new share no config (matched by what was asked: the model, its arguments and input, "
              "dtype, TF32, streams, graph, pinned, copies in graph, staging, compile, load, device): nothing to compare; "
              "each config of old is then missing in new, and counts as a regression")
    for note in (mix_note(matches), pooled_note(matches), single_runs_note(matches), common_shift(matches, args.threshold),
                 host_shift(matches)):
        if note:
            print(note)
    regressions = [m for m in matches if is_regression(m)]
    if regressions:
        # The verdicts' caveats are in the table above: here the verdict's first words.
        # What got worse, apart from what could not be told (a self-compare of noisy searches
        # had read "4 regression(s)"): the gate stops on both.
        unsure = [m for m in regressions if m.verdict.startswith("undecided")]
        worse = [m for m in regressions if m not in unsure]
        if worse:
            print(f"{len(worse)} regression(s): " + "; ".join(f"{m.label}: {_short(m.verdict)}" for m in worse))
        if unsure:
            print(f"{len(unsure)} undecided (the gate stops on what it cannot tell): "
                  + "; ".join(f"{m.label}: {_short(m.verdict)}" for m in unsure))
        return 1
    if not any(m.ratio is not None or m.verdict.startswith("faster") for m in matches):  # a gate that compared nothing must not pass
        print("nothing was compared: no config has a rate in both runs (see the verdicts above)")
        return 1
    print(f"no regression beyond {args.threshold:.0%} and {args.sigma:g} x noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
