"""Sweep tables from the files jobs wrote: works for any launcher, and after a crash.

    python -m runner.report DIR [DIR ...] [--out OUT] [--no-plots]

DIR is a sweep folder (its job folders are read), a single run folder, or any folder holding
run folders. Writes sweep.csv, sweep.md and the plots into OUT (default: the DIR, when one is
given and it is not one run's own folder) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from runner.load import CUT_SHORT
from runner.printer import rate_text, search_ratio_known
from runner.record import (
    CONFLICT_FILE,
    PASSES_CUT_SAID,
    RESULT_FILE,
    check_short,
    host_shared,
    latency_short,
    read_result,
    result_problem,
    sides_shared,
    without_resume,
)


@dataclass
class Row:
    job: str  # job number in its sweep, or the folder name
    overrides: str  # the overrides that tell this job from the others in the table
    model: str
    mode: str
    status: str
    reason: str
    requests_per_s: Optional[float]
    samples_per_s: Optional[float]
    latency_p50_us: Optional[float]
    latency_p99_us: Optional[float]
    speedup_vs_baseline: Optional[float]
    efficiency_vs_ceiling: Optional[float]
    throughput_cv: Optional[float]
    streams: Optional[int]
    device: str
    path: str
    samples_cv: Optional[float] = None  # the cv of its passes' samples/s (with buckets, not requests/s's)
    ran: str = ""  # the effective settings, as JSON: jobs with the same ran the same code
    asked: tuple[str, ...] = ()  # all of the job's overrides
    max_rate: Optional[float] = None  # load.rate=max: the highest rate whose p99 held the bound
    baseline_max_rate: Optional[float] = None  # the same search for the job's eager baseline
    p99_bound_ms: Optional[float] = None
    best: str = ""  # "best": the highest max_rate of its sweep
    load: str = ""  # a fixed-rate server or single-stream job: what its rate and latency columns hold
    steady_from: int = 1  # the first throughput pass its figures use (after a step in the host's speed)
    passes: int = 0  # throughput passes it ran
    cv_all: Optional[float] = None  # the cv over all of them
    gpu: str = ""  # the device id the launcher gave the job (hydra.launcher.devices), else the GPU's UUID, cut
    gpu_uuid: str = ""  # the GPU that ran it
    host_us: Optional[float] = None  # the host canary's median over the passes its figures use (the host's speed)
    machine: str = ""  # the host's name and CPU model: canaries of two machines are not one host's speed
    samples_per_request: Optional[float] = None  # with buckets: the mean real batch of the job's request plan
    speedup_within_noise: Optional[bool] = None  # its 95% interval from the repeats covers 1.0 (None: no ratio)
    efficiency_within_noise: Optional[bool] = None
    max_rate_cut: bool = False  # the budget ended its rate search: max_rate is a floor, or a wide bracket
    baseline_max_rate_cut: bool = False  # the same for its eager baseline's search
    lowest_invalid_rate: Optional[float] = None  # that search's lowest rate found invalid
    host_shared: str = ""  # what the job's warnings say of other work on its host ("" when nothing)
    sides_shared: str = ""  # the same of its baseline's or ceiling's passes alone: its ratios, not its rate
    thin: str = ""  # what its closed-loop rate rests on, when less than measure asked ("" otherwise)
    p99_thin: str = ""  # "16 of 200": the requests its p99 rests on, where fewer than measure asked
    check_thin: str = ""  # "2 of 128": the requests its check compared, where the budget cut it to few
    rate_search: bool = False  # a load.rate=max search


def job_dirs(paths: list[Path]) -> list[Path]:
    """Folders that are (or were meant to be) one job: they hold result.json or .hydra/."""
    found: list[Path] = []
    for path in (p.resolve() for p in paths):  # one folder spelt two ways is one folder
        if (path / RESULT_FILE).exists() or (path / ".hydra" / "overrides.yaml").exists():
            found.append(path)
            continue
        for candidate in sorted(path.rglob("*")):
            if candidate.is_dir() and (
                (candidate / RESULT_FILE).exists() or (candidate / ".hydra" / "overrides.yaml").exists()
            ):
                found.append(candidate)
    unique = sorted(set(found), key=_job_sort_key)
    return unique


def _job_sort_key(path: Path) -> tuple:
    return (str(path.parent), int(path.name) if path.name.isdigit() else 1 << 30, path.name)


def _overrides_from_hydra(job_dir: Path) -> list[str]:
    try:
        data = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in data or []]


def _load(job_dir: Path) -> dict[str, Any]:
    conflict = job_dir / CONFLICT_FILE
    if conflict.exists():  # the folder's result belongs to other overrides: not this job's
        return {"status": "failed", "reason": conflict.read_text().strip(),
                "overrides": _overrides_from_hydra(job_dir), "figures": {}}
    result = read_result(job_dir / RESULT_FILE)
    if result is not None:
        return result
    problem = result_problem(job_dir / RESULT_FILE)
    return {
        "status": "missing",
        "reason": f"its result.json is {problem}" if problem else
                  "no result.json: the job's process died, or it is still running",
        "overrides": _overrides_from_hydra(job_dir),
        "figures": {},
    }


def distinguishing(all_overrides: list[list[str]]) -> list[str]:
    """Per job, the overrides not shared by every job in the table."""
    if len(all_overrides) <= 1:
        return [" ".join(o) for o in all_overrides]
    common = set(all_overrides[0]).intersection(*map(set, all_overrides[1:]))
    return [" ".join(o for o in overrides if o not in common) for overrides in all_overrides]


def collect(paths: list[Path]) -> list[Row]:
    dirs = job_dirs(paths)
    results = [_load(d) for d in dirs]
    # resume=true is how a job was run, not what it measured: a resumed sweep's rerun jobs
    # carry it and its kept ones do not, which would set them apart in every label.
    labels = distinguishing([without_resume(r.get("overrides") or []) for r in results])
    # Jobs of several sweeps in one table: each named by its folder under theirs (a/0, b/0),
    # since their numbers repeat; so are jobs of several sweeps copied into one folder (two
    # had both been "#0").
    nums = [(r.get("job") or {}).get("num") for r in results]
    numbers = [d.name if num is None else str(num) for d, num in zip(dirs, nums, strict=True)]
    sweeps = {d.parent for d in dirs}
    root = Path(os.path.commonpath([str(d) for d in dirs])) \
        if len(sweeps) > 1 or len(set(numbers)) < len(numbers) else None
    rows = []
    for job_dir, result, label, number in zip(dirs, results, labels, numbers, strict=True):
        f = result.get("figures") or {}
        e2e, rate, load = f.get("latency_e2e_us") or {}, f.get("throughput_requests_per_s"), ""
        scenario = (f.get("load") or {}).get("scenario")
        if scenario == "single_stream":  # one request at a time: its latency is the figure
            e2e, load = f.get("single_stream_latency_us") or {}, "single stream"
        elif scenario == "server" and (f.get("load") or {}).get("rate") != "max":
            # A fixed offered rate: the rate achieved, latency from arrival (queueing included).
            e2e, rate = f.get("server_latency_us") or {}, f.get("server_achieved_rate")
            # The rate asked for; the arrivals drawn from it offered a little more or less.
            asked = (f.get("load") or {}).get("rate")
            points = ((f.get("load") or {}).get("runner") or {}).get("points") or [{}]
            offered = f" ({rate_text(points[0]['offered'])}/s offered)" if points[0].get("offered") else ""
            valid = f.get("server_valid")  # None: its point did not finish (a Ctrl-C), not a failed one
            verdict = "valid" if valid else "INVALID" if valid is False else "not measured"
            load = f"server: {verdict} at load.rate={rate_text(asked)}/s{offered}" if asked else f"server: {verdict}"
        elif scenario == "server" and f.get("server_max_rate") is None and result.get("status") == "ok":
            # A search in which no rate held the bound: say so, not a row of blanks.
            load = _no_rate_held((f.get("load") or {}).get("runner") or {}, (f.get("load") or {}).get("p99_ms"))
        env = result.get("env") or {}
        gpu = env.get("gpu") or {}
        job = result.get("job") or {}
        effective = result.get("effective") or {}
        rows.append(
            Row(
                job=str(job_dir.relative_to(root)) if root is not None else number,
                overrides=label,
                model=str(result.get("model") or "?"),
                mode=str(result.get("mode") or "?"),
                status=str(result.get("status")),
                reason=str(result.get("reason") or ""),
                requests_per_s=rate,
                samples_per_s=f.get("throughput_samples_per_s"),
                latency_p50_us=e2e.get("p50"),
                latency_p99_us=e2e.get("p99"),
                speedup_vs_baseline=f.get("speedup_vs_baseline"),
                efficiency_vs_ceiling=f.get("efficiency_vs_ceiling"),
                throughput_cv=f.get("throughput_cv"),
                samples_cv=f.get("throughput_samples_cv"),
                streams=effective.get("streams"),
                device=str(gpu.get("name") or effective.get("device") or ""),
                path=str(job_dir),
                ran=json.dumps(effective, sort_keys=True) if effective else "",
                asked=tuple(result.get("overrides") or ()),
                max_rate=f.get("server_max_rate"),
                baseline_max_rate=f.get("baseline_server_max_rate"),
                p99_bound_ms=(f.get("load") or {}).get("p99_ms"),
                load=load,
                steady_from=int(f.get("throughput_steady_from_repeat") or 1),
                passes=len(f.get("throughput_requests_per_s_repeats") or []),
                cv_all=f.get("throughput_cv_all_repeats"),
                # With buckets the plan's mean; else the batch itself (a rate search's row has no
                # throughput to divide: its samples per request came from nowhere).
                samples_per_request=f.get("samples_per_request") or _fixed_batch(result),
                # The launcher's device id; without one (Slurm, a plain run) the GPU's UUID, cut.
                gpu=str(job.get("launcher_device") or str(gpu.get("uuid") or "")[:8]),
                gpu_uuid=str(gpu.get("uuid") or ""),
                host_us=host_us(f),
                machine=f"{env.get('host') or ''} {env.get('cpu_model') or ''}".strip(),
                max_rate_cut=((f.get("load") or {}).get("runner") or {}).get("stopped_by") in CUT_SHORT,
                baseline_max_rate_cut=((f.get("load") or {}).get("baseline") or {}).get("stopped_by") in CUT_SHORT,
                lowest_invalid_rate=((f.get("load") or {}).get("runner") or {}).get("lowest_invalid_rate"),
                host_shared=host_shared(result.get("warnings") or []),
                sides_shared=sides_shared(result.get("warnings") or []),
                thin=thin(result) if scenario is None or scenario == "offline" else "",
                p99_thin=_p99_thin(result, e2e) if scenario is None or scenario == "offline" else "",
                check_thin=_check_thin(result),
                rate_search=scenario == "server" and (f.get("load") or {}).get("rate") == "max",
                speedup_within_noise=f.get("speedup_vs_baseline_within_noise"),
                efficiency_within_noise=f.get("efficiency_vs_ceiling_within_noise"),
            )
        )
    mark_best(rows)
    return rows


def host_us(figures: dict[str, Any]) -> Optional[float]:
    """The canary (a fixed piece of Python timed before every throughput pass) over the passes
    the job's figures use: after a step in the host's speed, those after it."""
    canary = figures.get("host_canary_us_repeats") or []
    steady = canary[int(figures.get("throughput_steady_from_repeat") or 1) - 1:]
    return statistics.median(steady) if steady else None


def _fixed_batch(result: dict[str, Any]) -> Optional[float]:
    batch = (((result.get("config") or {}).get("model") or {}).get("batch"))
    return float(batch) if isinstance(batch, (int, float)) and not isinstance(batch, bool) else None


def mark_best(rows: list[Row]) -> Optional[Row]:
    """Mark the job that held the highest rate under its latency bound: none where the jobs'
    bounds differ (a rate under 50 ms had been ranked above one under 5 ms), and by samples/s
    where their requests carry different batch sizes (batch 1's 25k requests/s had ranked
    above batch 256's 658, which carry 168k samples/s)."""
    held = _held(rows)
    # The bounds of every search, not only of those that held a rate: one under 5 ms that held
    # none beside one under 50 ms that held one had made the latter "best under 50 ms".
    if not held or len(_bounds(_searches(rows))) > 1:
        return None
    found = None
    searched = _networks(_searches(rows))  # a rival may have held no rate yet
    for key, network in _networks(held).items():  # two models' requests are not one work: a best each
        rivalry = searched.get(key, network)
        # Samples/s where any search of the network (a rival that held no rate included) carries
        # another batch size: a batch-256 rival had been weighed in requests/s.
        per = _per_request if _mixed_search_batches(rivalry) else (lambda r: 1.0)
        best = max(network, key=lambda r: r.max_rate * per(r))
        if _rivals(best, rivalry, per):
            continue  # a rival's true rate may lie above it: undecided (rival_notes says so)
        best.best = "best"
        found = found or best
    return found


def _top(row: Row) -> float:
    """The most a search's true rate may be: the lowest rate it found invalid, or no limit
    where the budget ended it before any failed (its figure a floor)."""
    if row.max_rate_cut:
        return row.lowest_invalid_rate or math.inf
    return row.lowest_invalid_rate or row.max_rate


def _rivals(best: Row, network: list[Row], per: Any) -> list[Row]:
    """The other searches whose true rate may lie above `best`'s figure: a floor, or a bracket
    reaching past it from a search the budget cut (one that held no rate yet included: its true
    rate lies anywhere below its lowest failed). Two floors had been ranked by their figures,
    the higher called best "or more", the other's "or more" unsaid. Searches that finished
    within load.resolution of each other are ranked as before."""
    return [r for r in network if r is not best and r.max_rate_cut and _top(r) * per(r) > best.max_rate * per(best)]


def _known_rate(row: Row, per: float) -> str:
    """What a search's figure is known to be, in its unit (`per`: samples a request, or 1)."""
    if row.max_rate is None:
        below = f" (below {rate_text(row.lowest_invalid_rate * per)})" if row.lowest_invalid_rate else ""
        return f"no rate held yet{below}"
    rate = rate_text(row.max_rate * per)
    if not row.max_rate_cut:
        return rate
    return f"{rate} or more" + (f", below {rate_text(row.lowest_invalid_rate * per)}" if row.lowest_invalid_rate else "")


def rival_notes(rows: list[Row]) -> list[str]:
    """Networks whose highest rate is not decided: searches the budget cut whose true rates may
    lie above the highest figure."""
    held = _held(rows)
    if not held or len(_bounds(_searches(rows))) > 1:
        return []
    notes = []
    searched = _networks(_searches(rows))
    for key, network in _networks(held).items():
        rivalry = searched.get(key, network)
        mixed = _mixed_search_batches(rivalry)
        per = _per_request if mixed else (lambda r: 1.0)
        unit = "samples/s" if mixed else "requests/s"
        top = max(network, key=lambda r: r.max_rate * per(r))
        rivals = _rivals(top, rivalry, per)
        if not rivals:
            continue

        said = "; ".join(f"job {r.job} ({r.overrides or r.mode}) {_known_rate(r, per(r))}" for r in [top, *rivals])
        notes.append(f"sweep: no best: the budget cut the rate searches short, and their {unit} overlap ({said}); "
                     "raise measure.budget_s to tell them apart")
    return notes


def preset_of(row: Row) -> str:
    """The model preset a job asked for ("model=mlp"; "" for the default)."""
    return " ".join(o for o in row.asked if o.startswith("model="))


def _networks(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    """Rows by the network they ran: the model class and its preset (model=...)."""
    out: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        out.setdefault((row.model, preset_of(row)), []).append(row)
    return out


def _held(rows: list[Row]) -> list[Row]:
    """The rate searches that held a rate under their bound."""
    return [r for r in rows if r.status == "ok" and r.max_rate]


def _searches(rows: list[Row]) -> list[Row]:
    return [r for r in rows if r.status == "ok" and r.rate_search]


def _bounds(rows: list[Row]) -> list[float]:
    return sorted({r.p99_bound_ms for r in rows if r.p99_bound_ms is not None})


def _per_request(row: Row) -> float:
    return row.samples_per_request or 1.0


def _mixed_search_batches(rows: list[Row]) -> bool:
    return len({round(_per_request(r), 3) for r in rows}) > 1


def bound_notes(rows: list[Row]) -> list[str]:
    """Rate searches under different p99 bounds: no best among them."""
    bounds = _bounds(_searches(rows))
    if len(bounds) < 2:
        return []
    return [f"sweep: no best: its rate searches ran under different p99 bounds ({', '.join(f'{b:g}' for b in bounds)} "
            "ms), and a rate under one says nothing of another"]


def best_line(rows: list[Row]) -> Optional[str]:
    """The sweep's answer to "which configuration holds the highest rate under the bound": one
    per network where the sweep ran several (a request of one model is not one of another)."""
    networks = _networks(_held(rows))
    # Named by its model wherever the searches ran several, whether or not each held a rate.
    several = len(_networks(_searches(rows))) > 1
    said = []
    for (model, preset), group in networks.items():
        best = next((r for r in group if r.best), None)
        if best is not None:
            of = f" of {model}" + (f" ({preset})" if preset else "") if several else ""
            said.append(_best_of(best, rows, group, of))
    return "; ".join(said) or None


def _best_of(best: Row, rows: list[Row], group: list[Row], of: str) -> str:
    ahead = (f", {best.max_rate / best.baseline_max_rate:.2f}x its eager baseline's {rate_text(best.baseline_max_rate)}/s"
             f"{search_ratio_known(best.max_rate_cut, best.baseline_max_rate_cut)}" if best.baseline_max_rate else "")
    bound = f"p99 <= {best.p99_bound_ms:g} ms" if best.p99_bound_ms else "its bound"
    twins = next((g for g in collapsed(rows) if best in g), None)
    noise = (f" (jobs {', '.join('#' + r.job for r in twins)} ran the same settings: which of them is best is noise)"
             if twins else "")
    known = ""
    if best.max_rate_cut:  # the budget ended its search: what the figure is known to be
        known = (f" or more, below {rate_text(best.lowest_invalid_rate)} (its search was cut short by the budget)"
                 if best.lowest_invalid_rate else " or more (its search was cut short by the budget)")
    samples = (f" ({rate_text(best.max_rate * _per_request(best))} samples/s, the most of the jobs' differing batch "
               "sizes)" if _mixed_search_batches(group) else "")
    return (f"best{of} under {bound}: job {best.job} ({best.overrides or best.mode}) at {rate_text(best.max_rate)} "
            f"requests/s{samples}{known}{ahead}{noise}")


def shared_host_notes(rows: list[Row]) -> list[str]:
    """Jobs whose host other work shared, by their own warnings: a job slowed many times over
    by another process reads a steady rate (a cv near 0), which the table alone presents as a
    result."""
    shared = [r for r in rows if r.host_shared and r.requests_per_s is not None]  # a job with no rate: nothing to doubt
    if not shared:
        return []
    which = ", ".join(f"#{r.job} ({r.host_shared})" for r in shared)
    if len(shared) == 1:
        return [f"sweep: other work shared the host of job {which}: its rate can be many times too low whatever its "
                "cv; rerun it on a quiet host before comparing it"]
    return [f"sweep: other work shared the host of jobs {which}: their rates can be many times too low whatever their "
            "cv; rerun them on a quiet host before comparing them"]


def sides_shared_notes(rows: list[Row]) -> list[str]:
    """Jobs whose baseline's or ceiling's passes alone other work shared: their rates stand, the
    speedup and the efficiency over those passes read higher than they are."""
    sides = [r for r in rows if r.sides_shared and not r.host_shared]
    if not sides:
        return []
    which = ", ".join(f"#{r.job}" for r in sides)
    return [f"sweep: other processes ran during the baseline's or the ceiling's passes of job{'s' * (len(sides) > 1)} "
            f"{which}: {'its' if len(sides) == 1 else 'their'} speedup and efficiency read higher than they are (the "
            "rates stand); rerun on a quiet host before comparing them"]


_CUT = re.compile(rf"^(\d+) of (\d+){re.escape(PASSES_CUT_SAID)}")


def thin(result: dict[str, Any]) -> str:
    """What an ok closed-loop job's rate rests on where the budget gave it less than measure
    asked: fewer passes than measure.min_repeats, or every pass cut short of its minimums."""
    f = result.get("figures") or {}
    if result.get("status") != "ok" or f.get("throughput_requests_per_s") is None:
        return ""
    passes = len(f.get("throughput_requests_per_s_repeats") or [])
    least = ((result.get("config") or {}).get("measure") or {}).get("min_repeats") or 1
    said = [f"{passes} pass{'es' * (passes != 1)} of measure.min_repeats={least}"] if passes < least else []
    cut = [m for m in map(_CUT.match, map(str, result.get("warnings") or [])) if m]
    if cut and cut[0].group(1) == cut[0].group(2):
        by_cap = "measure.max_pass_ms=" in cut[0].string
        said.append("every pass cut short by measure.max_pass_ms" if by_cap else "every pass cut short")
    return " and ".join(said)


def _p99_thin(result: dict[str, Any], e2e: dict[str, Any]) -> str:
    """"16 of 200" where the p99 in the table (the latency pass's) rests on fewer requests than
    measure.latency_requests, as the job's own warning says; "" otherwise."""
    asked = ((result.get("config") or {}).get("measure") or {}).get("latency_requests")
    served = e2e.get("n")
    if e2e.get("p99") is None or not isinstance(asked, int) or not isinstance(served, int):
        return ""
    return f"{served} of {asked}" if latency_short(served, asked) else ""


def _check_thin(result: dict[str, Any]) -> str:
    """"2 of 128" where the budget cut the job's check to fewer requests than pass without a
    warning, as the job's own warning says; "" otherwise (no check, or enough of it)."""
    asked = ((result.get("config") or {}).get("measure") or {}).get("check_requests")
    compared = (result.get("figures") or {}).get("check_requests")
    if not isinstance(asked, int) or not isinstance(compared, int):
        return ""
    return f"{compared} of {asked}" if check_short(compared, asked) else ""


def check_notes(rows: list[Row]) -> list[str]:
    """Jobs whose check the budget cut to few requests: their outputs were compared with eager
    on those alone (a check of 2 of 128 stood in the table as any other ok; walk)."""
    short = [r for r in rows if r.check_thin]
    if not short:
        return []
    which = ", ".join(f"#{r.job} ({r.check_thin})" for r in short)
    return [f"sweep: the check of job{'s' * (len(short) > 1)} {which} compared fewer requests with eager than "
            "measure.check_requests before the budget's share ran out: their correctness rests on those; raise "
            "measure.budget_s for more"]


def p99_notes(rows: list[Row]) -> list[str]:
    """Jobs whose p99 column rests on fewer requests than measure asked: the job said so, the
    table did not (a p99 of 16 requests stood beside others of 200; walk)."""
    short = [r for r in rows if r.p99_thin]
    if not short:
        return []
    which = ", ".join(f"#{r.job} ({r.p99_thin} requests)" for r in short)
    return [f"sweep: the p99 of job{'s' * (len(short) > 1)} {which} rests on fewer requests than "
            f"measure.latency_requests (see {'their' if len(short) > 1 else 'its'} warnings): a rough tail; raise "
            "measure.budget_s for more"]


def thin_notes(rows: list[Row]) -> list[str]:
    """Jobs whose rate rests on fewer passes than measure.min_repeats (one pass: no cv, the
    table's "-"), or on passes the budget all cut short: rougher than their neighbours'."""
    thin_rows = [r for r in rows if r.thin]
    if not thin_rows:
        return []
    which = ", ".join(f"#{r.job} ({r.thin})" for r in thin_rows)
    one = "; with one pass, a rate's noise is unknown (cv -)" if any(r.passes < 2 for r in thin_rows) else ""
    # A pass cut by measure.max_pass_ms is as long as a budget would give it: raising that cap
    # (or lowering measure.min_requests) helps, raising the budget does not.
    by_budget = any("measure.min_repeats" in r.thin or r.thin.endswith("every pass cut short") for r in thin_rows)
    by_cap = any(r.thin.endswith("by measure.max_pass_ms") for r in thin_rows)
    keys = ["measure.budget_s"] * by_budget + ["measure.max_pass_ms"] * by_cap
    return [f"sweep: the rate of job{'s' * (len(thin_rows) > 1)} {which} rests on less than measure asked (see "
            f"{'their' if len(thin_rows) > 1 else 'its'} warnings): rougher than the others{one}; raise "
            f"{' or '.join(keys)} for {'them' if len(thin_rows) > 1 else 'it'}"]


# A ratio whose interval covers 1.0 is marked in the tables, as the job's console says it.
NOISE_MARK = "~"
NOISE_NOTE = f"{NOISE_MARK}: within noise (the ratio's 95% interval from the repeats covers 1.0)"


# A ratio with no interval (one pass of a side: no spread to judge by) looks like any other
# without a mark.
UNKNOWN_MARK = "?"
UNKNOWN_NOTE = f"{UNKNOWN_MARK}: noise unknown (one pass of a side: no interval)"


def _ratio_noise(row: Row) -> dict[str, Optional[bool]]:
    return {"speedup_vs_baseline": row.speedup_within_noise, "efficiency_vs_ceiling": row.efficiency_within_noise}


def _cell(row: Row, attr: str, kind: str) -> str:
    text = _fmt(getattr(row, attr), kind)
    noise = _ratio_noise(row)
    if attr not in noise or text == "-":
        return text
    return NOISE_MARK + text if noise[attr] else UNKNOWN_MARK + text if noise[attr] is None else text


def _noisy(rows: list[Row]) -> bool:
    return any(r.speedup_within_noise or r.efficiency_within_noise for r in rows)


def _noise_notes(rows: list[Row]) -> list[str]:
    unknown = any(getattr(r, attr) is not None and within is None for r in rows
                  for attr, within in _ratio_noise(r).items())
    return [NOISE_NOTE] * _noisy(rows) + [UNKNOWN_NOTE] * unknown


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return rate_text(value)
    if kind == "us":
        return f"{value:,.1f}"
    if kind == "x":
        return f"{value:.2f}x"
    if kind == "pct":
        return f"{value:.1%}"
    return str(value)


COLUMNS = (
    ("job", "job", "str"),
    ("overrides", "overrides", "str"),
    ("mode", "mode", "str"),
    ("status", "status", "str"),
    ("requests/s", "requests_per_s", "rate"),
    ("p50 us", "latency_p50_us", "us"),
    ("p99 us", "latency_p99_us", "us"),
    ("speedup", "speedup_vs_baseline", "x"),
    ("efficiency", "efficiency_vs_ceiling", "pct"),
    ("cv", "throughput_cv", "pct"),
)


LOAD_COLUMNS = (
    ("max rate/s", "max_rate", "rate"),
    ("eager max rate/s", "baseline_max_rate", "rate"),
    ("best", "best", "str"),
)


def _no_rate_held(search: dict[str, Any], p99_ms: Optional[float]) -> str:
    if not search.get("points"):
        return "server: not measured (the budget ran out before its first point)"
    bound = f"p99 <= {p99_ms:g} ms" if p99_ms else "its bound"
    lowest = search.get("lowest_invalid_rate")
    tried = f"lowest tried {rate_text(lowest)}/s" if lowest else ""
    if search.get("stopped_by") == "bound":  # one request's own latency is past it
        return f"server: no rate can hold {bound} (one request's latency is past it{'; ' + tried if tried else ''})"
    if search.get("stopped_by") in CUT_SHORT:  # a lower rate may hold: the search did not get there
        return f"server: no rate held {bound} before the budget cut its search ({tried + '; ' if tried else ''}a lower " \
               "rate may hold: raise measure.budget_s)"
    return f"server: no rate held {bound}" + (f" ({tried})" if tried else "")


def _columns(rows: list[Row]) -> tuple:
    """The load search's columns join the table when a job ran it; a `load` column when a job
    ran a fixed-rate server or a single stream (the rate and latency columns then hold those)."""
    # Every search's: a sweep in which no rate held any bound had shown no max rate column at all.
    columns = COLUMNS + (LOAD_COLUMNS if any(r.rate_search or r.max_rate is not None or r.baseline_max_rate is not None
                                             for r in rows) else ())
    # Jobs of different batch sizes: requests/s alone ranks batch 1 first (5,149 against batch
    # 512's 75 requests/s, which carry 38k samples/s); samples/s joins the table after it.
    if mixed_batches(rows):
        columns = _after(columns, "requests_per_s", ("samples/s", "samples_per_s", "rate"))
    if len({r.model for r in rows if r.model != "?"}) > 1:  # the overrides alone may not show it (a _target_ cut to fit)
        columns = _after(columns, "overrides", ("model", "model", "str"))
    if len(gpus_used(rows)) > 1:  # a sweep spread over several GPUs: which one ran each job
        columns = _after(columns, "overrides", ("gpu", "gpu", "str"))
    elif len({r.device for r in rows if r.device}) > 1:
        # Results of several devices in one table (a CPU run beside a GPU run): their rows had
        # read alike, the same mode and overrides.
        columns = _after(columns, "overrides", ("device", "device", "str"))
    return columns + ((("load", "load", "str"),) if any(r.load for r in rows) else ())


def mixed_batches(rows: list[Row]) -> bool:
    """Whether the jobs' requests carry different numbers of samples (batch sizes). With buckets
    the plan's mean, not what the passes served (which differs between jobs of the same plan)."""
    return len({round(r.samples_per_request or r.samples_per_s / r.requests_per_s, 3)
                for r in rows if r.samples_per_s and r.requests_per_s}) > 1


def _after(columns: tuple, attr: str, column: tuple) -> tuple:
    """`columns` with `column` right after the one showing `attr`."""
    at = [a for _, a, _ in columns].index(attr) + 1
    return columns[:at] + (column,) + columns[at:]


def gpus_used(rows: list[Row]) -> dict[str, list[Row]]:
    """The jobs of each GPU, by UUID. A job that recorded no UUID (its process died before it
    read its GPU, or it ran on the CPU) counts with the GPU its device id names in other rows,
    or under its device id alone."""
    uuid_of = {r.gpu: r.gpu_uuid for r in rows if r.gpu and r.gpu_uuid and rows_agree(rows, r.gpu)}
    used: dict[str, list[Row]] = {}
    for row in rows:
        key = row.gpu_uuid or uuid_of.get(row.gpu) or row.gpu
        if key:
            used.setdefault(key, []).append(row)
    return used


def rows_agree(rows: list[Row], gpu: str) -> bool:
    """Whether every job given device id `gpu` that recorded a UUID recorded the same one (a
    resumed sweep may have given one id to different GPUs)."""
    return len({r.gpu_uuid for r in rows if r.gpu == gpu and r.gpu_uuid}) == 1


def _status_cell(row: Row) -> str:
    return row.status if row.status == "ok" or not row.reason else f"{row.status}: {row.reason}"


def markdown(rows: list[Row], more_notes: Sequence[str] = ()) -> str:
    columns = _columns(rows)
    header = "| " + " | ".join(title for title, _, _ in columns) + " |"
    rule = "| " + " | ".join("---:" if kind not in ("str",) else "---" for _, _, kind in columns) + " |"
    lines = [header, rule]
    for row in rows:
        cells = []
        for _, attr, kind in columns:
            text = _status_cell(row) if attr == "status" else _cell(row, attr, kind)
            cells.append(text.replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    best = best_line(rows)
    notes = [f"\n{note}" for note in [*sweep_notes(rows), *more_notes]]  # as the console says them
    noise = [f"\n{note}" for note in _noise_notes(rows)]
    return "\n".join(lines + noise + ([f"\n**{best}**"] if best else []) + notes)


OVERRIDES_CHARS = 60  # the terminal table's overrides column; sweep.md and sweep.csv keep them whole


def short_label(text: str, width: int) -> str:
    """A job's overrides within `width`: each by its last key (model.module.config.n_layer=2 ->
    n_layer=2), then, if still long, its end: the values are what tell the jobs apart."""
    return short_labels([text], width)[0]


def short_labels(texts: list[str], width: int) -> list[str]:
    """A column of overrides within `width`, shortened alike (row by row, one key was shown two
    ways): where any is too long, every one by its keys' last parts, as many as tell the keys of
    the column apart (text_config.num_hidden_layers beside vision_config.num_hidden_layers had
    both read num_hidden_layers); then overrides every row has are left out of those still too
    long (they tell no row apart, and the cut had dropped the one that did); then the end of
    what is left."""
    if all(len(t) <= width for t in texts):
        return list(texts)
    keys = {o.partition("=")[0].lstrip("+~") for t in texts for o in t.split()}

    def tail(key: str, parts: int) -> str:
        return ".".join(key.split(".")[-parts:])

    def shortest(key: str) -> str:
        for parts in range(1, key.count(".") + 1):
            if not any(other != key and tail(other, parts) == tail(key, parts) for other in keys):
                return tail(key, parts)
        return key

    def last_key(o: str) -> str:
        key, sep, value = o.partition("=")
        deleted = "~" if key.startswith("~") else ""  # a deletion stays one: ~in_features, not in_features=null
        last = deleted + shortest(key.lstrip("+~"))
        return f"{last}={value}" if sep and not (deleted and value == "null") else last

    short = [[last_key(o) for o in t.split()] for t in texts]
    common = set.intersection(*(set(s) for s in short)) if len(short) > 1 else set()
    out = []
    for parts in short:
        text = " ".join(parts)
        if len(text) > width and common:
            text = " ".join(p for p in parts if p not in common) or text
        out.append(text if len(text) <= width else "..." + text[-(width - 3):])
    return out


def text_table(rows: list[Row]) -> str:
    """Aligned columns for the terminal; long failure reasons go below the table."""
    columns = _columns(rows)
    cells = [[title for title, _, _ in columns]]
    overrides = short_labels([_fmt(row.overrides, "str") for row in rows], OVERRIDES_CHARS)
    for row, label in zip(rows, overrides, strict=True):
        cells.append([label if attr == "overrides" else _cell(row, attr, kind) for _, attr, kind in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    numeric = [kind != "str" for _, _, kind in columns]
    lines = []
    for r in cells:
        lines.append("  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric, strict=True)).rstrip())
    reasons = [f"  job {row.job}: {row.status}: {row.reason}" for row in rows if row.status != "ok" and row.reason]
    best = best_line(rows)
    return "\n".join(lines + _noise_notes(rows) + reasons + ([best] if best else []))


def csv_text(rows: list[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0]).keys()) if rows else ["job"])
    writer.writeheader()
    for row in rows:
        fields = {**asdict(row), "asked": json.dumps(list(row.asked))}  # the overrides, as a JSON list
        if not row.rate_search:
            fields["max_rate_cut"] = ""  # no rate search: the flag says nothing (False read as "not cut")
        if not row.rate_search or (row.baseline_max_rate is None and not row.baseline_max_rate_cut):
            fields["baseline_max_rate_cut"] = ""  # nor where no baseline search held a rate (none ran on the CPU)
        writer.writerow(fields)
    return buffer.getvalue()


def write_report(rows: list[Row], out_dir: Path, plots: bool = True, more_notes: Sequence[str] = ()) -> list[Path]:
    """sweep.csv, sweep.md (with `more_notes` under its table: jobs that never started) and the plots."""
    from runner.record import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("sweep.csv", csv_text(rows)), ("sweep.md", markdown(rows, more_notes) + "\n")):
        write_atomic(out_dir / name, text)
        written.append(out_dir / name)
    if plots and rows:
        written += _plots(rows, out_dir)
    else:
        from runner.plots import remove_stale_plots

        remove_stale_plots(out_dir, written)
    return written


def _plots(rows: list[Row], out_dir: Path) -> list[Path]:
    """The plots, or one line that says why there are none (matplotlib missing or broken):
    never an error. The table is printed after them, and a sweep's callback that raised left
    no table and exit 0 (Hydra turns a callback's exception into a warning)."""
    from runner.plots import not_drawn, plot_sweep, remove_stale_plots

    try:
        return plot_sweep(rows, out_dir)
    except Exception as exc:  # noqa: BLE001 - each figure's own errors are caught in plot_sweep
        not_drawn("plots", exc)
        remove_stale_plots(out_dir, [])
        return []


# Overrides that only choose how a job runs; when the machine overrules them all (no GPU), the
# jobs that differ only in these ran the same code.
_RUN_KEYS = ("streams", "graph", "pinned", "tf32", "device", "capture.copies_in_graph",
             "staging.slots", "staging.copy_thread", "staging.mode", "compile",
             "peer")  # a peer is a set of the keys before it (experiment=peers)


def _not_run_keys(row: Row) -> tuple[str, ...]:
    """A job's overrides of what it measures (not of how it runs: `_RUN_KEYS`)."""
    # resume=true says how a job was run, not what it measured (a resumed sweep's rerun jobs carry it).
    return tuple(sorted(o for o in without_resume(list(row.asked)) if o.lstrip("+~").partition("=")[0] not in _RUN_KEYS))


def collapsed(rows: list[Row]) -> list[list[Row]]:
    """Groups of two or more jobs that asked for different run settings but ran the same:
    the same model, the same effective settings, and overrides that differ only in `_RUN_KEYS`."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.ran:
            groups.setdefault((row.model, row.ran, _not_run_keys(row)), []).append(row)
    # Asked differently: as sets (the same overrides in another order, or with resume=true, asked
    # the same; two such runs had been said to have had their settings overruled).
    return [g for g in groups.values() if len(g) > 1 and len({frozenset(without_resume(list(r.asked))) for r in g}) > 1]


def collapse_notes(rows: list[Row]) -> list[str]:
    # Per group: (model, its ok jobs, the others, what ran). Only jobs with figures have
    # differences to call noise; jobs that all failed (say, a _target_ that does not import) may
    # never have run the settings at all, and one interrupted before measuring is named apart.
    groups = []
    found = collapsed(rows)
    # What tells the groups apart (model.batch=8 from model.batch=16): their overrides of what
    # they measure that not every group shares (five groups had all read "eager x1 ... on cpu").
    shared = set.intersection(*(set(_not_run_keys(g[0])) for g in found)) if found else set()
    for group in found:
        ok = [f"#{r.job}" for r in group if r.status == "ok"]
        if ok:
            others = [f"#{r.job}" for r in group if r.status != "ok"]
            also = f" (and {', '.join(others)}, which did not end ok)" if others else ""
            apart = " ".join(o for o in _not_run_keys(group[0]) if o not in shared)
            groups.append((group[0].model, ", ".join(ok) + also, len(ok),
                           (f"{apart}, " if apart and len(found) > 1 else "")
                           + f"{group[0].mode} on {group[0].device or 'the same device'}"))
    if len(groups) > 1:  # said once, not once per group (a CPU sweep over batch x graph had said it five times)
        listed = "; ".join(f"{model} {jobs}: {ran}" for model, jobs, _, ran in groups)
        return [f"sweep: jobs ran the same settings in {len(groups)} groups ({listed}): the machine overruled what "
                "they asked for, so the differences within each group are noise"]
    return [f"sweep: {model} jobs {jobs} ran the same settings ({ran}): the machine overruled what they asked for"
            + (", so their differences are noise" if n_ok > 1 else "") for model, jobs, n_ok, ran in groups]


def step_notes(rows: list[Row]) -> list[str]:
    """Jobs whose throughput figures start after a step in the host's speed: their cv column
    is that of the passes after it."""
    return [f"sweep: job #{r.job}'s throughput is from passes {r.steady_from}-{r.passes} of {r.passes}: the host's "
            f"speed stepped before them (cv over all passes {_fmt(r.cv_all, 'pct')})"
            for r in rows if r.status == "ok" and r.steady_from > 1]


def gpu_notes(rows: list[Row]) -> list[str]:
    """A sweep spread over several GPUs: which GPU each device id was, and what that means for
    comparing its rows."""
    used = gpus_used(rows)
    if len(used) < 2:
        return []
    parts = []
    for mine in used.values():
        name = next((r.device for r in mine if r.device and r.gpu_uuid), "")  # a GPU's name, not "cpu"
        ids = sorted({r.gpu for r in mine if r.gpu})
        uuid = next((r.gpu_uuid for r in mine if r.gpu_uuid), "")
        short = uuid.removeprefix("GPU-")[:8]
        what = " ".join(filter(None, [name, f"({short}...)" if uuid and ids != [short] else ""]))
        parts.append(f"gpu {'/'.join(ids) or '?'}{f' = {what}' if what else ''} ({len(mine)} job{'s' * (len(mine) > 1)})")
    if not any(r.gpu_uuid for r in rows):  # device ids given to jobs that ran on the CPU
        return [f"sweep: its jobs ran side by side on the CPU, one per entry of hydra.launcher.devices "
                f"({'; '.join(p.removeprefix('gpu ') for p in parts)}), each on its own share of the host's cores: "
                "they measured the CPU with fewer cores than a job alone gets"]
    return [f"sweep: its jobs ran on {len(used)} GPUs: {'; '.join(parts)}. Rows of different GPUs "
            "also differ by their GPU and their share of the host's cores: compare them within their noise"]


# A job whose host canary read this many times the sweep's fastest ran on a slower host. On the
# H200 VM the canary sits near 111 us or near 170-200 us, a job at a time: a host-bound config
# (streams=8 graphs of the mlp) read 74k requests/s in the slow state and 117k in the fast one.
HOST_SLOWER = 1.25


def host_notes(rows: list[Row]) -> list[str]:
    """Jobs that ran while the host's Python was clearly slower than in the sweep's fastest
    job: a config bound by the host reads lower there whatever its settings, with no step
    inside the job (and so no cv) to show it. A sweep spread over several devices is judged
    per device: each device's jobs ran on their own share of the cores; jobs of several
    machines (a table of results gathered from two hosts) per machine: one host's canary says
    nothing of another's speed (a job from another host had been "2.0x slower")."""
    spread = len(gpus_used(rows)) > 1
    machines = len({row.machine for row in rows if row.status == "ok" and row.host_us}) > 1
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.status == "ok" and row.host_us:
            groups.setdefault((row.machine if machines else "", row.gpu if spread else ""), []).append(row)
    notes = []
    for (machine, gpu), timed in groups.items():
        if len(timed) < 2:
            continue
        fastest = min(r.host_us for r in timed)  # type: ignore[type-var]
        slow = [r for r in timed if r.host_us > HOST_SLOWER * fastest]  # type: ignore[operator]
        if not slow:
            continue
        ratios = [r.host_us / fastest for r in slow]  # type: ignore[operator]
        by = f"{min(ratios):.1f}x" if round(min(ratios), 1) == round(max(ratios), 1) else f"{min(ratios):.1f}-{max(ratios):.1f}x"
        canaries = ", ".join(f"#{r.job} {r.host_us:.0f}" for r in slow)
        among = f"of gpu {gpu}'s jobs" if gpu else "job"
        if machine:
            among += f" on {machine}"
        notes.append(f"sweep: job{'s' * (len(slow) > 1)} {', '.join('#' + r.job for r in slow)} ran while the host's "
                     f"Python was {by} slower than in its fastest {among} (the canary timed before every pass, in us: "
                     f"{canaries}; fastest {fastest:.0f}). A config bound by the host (eager, or a small model in graphs "
                     "at many streams) reads that much lower there whatever its settings: rerun such a job before "
                     "ranking it against the others")
    return notes


def sweep_notes(rows: list[Row]) -> list[str]:
    """What the table's reader must know beside it: jobs that ran the same settings, jobs
    whose figures left passes out, jobs that ran on a slower host, and the GPUs of a sweep
    spread over several."""
    return (collapse_notes(rows) + step_notes(rows) + thin_notes(rows) + p99_notes(rows) + check_notes(rows)
            + host_notes(rows)
            + shared_host_notes(rows)
            + sides_shared_notes(rows) + gpu_notes(rows) + bound_notes(rows) + rival_notes(rows))


def failures(rows: list[Row]) -> list[Row]:
    """Rows that did not end ok: any status but ok (a record with no status, or one this runner
    does not know, had counted as ok, exit 0; review)."""
    return [row for row in rows if row.status not in ("ok", "skipped")]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.report", description="Rebuild a sweep's table and plots.")
    parser.add_argument("dirs", nargs="+", type=Path, help="sweep folders, run folders, or folders holding them")
    parser.add_argument("--out", type=Path, default=None, help="where to write sweep.csv, sweep.md and plots")
    parser.add_argument("--no-plots", action="store_true", help="write the tables (sweep.csv, sweep.md) only")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        files = any(Path(m).is_file() for m in missing)
        print(f"error: not a folder: {', '.join(missing)}" + ("; give the folder that holds a result.json" if files else ""),
              file=sys.stderr)
        return 2
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        print(f"error: --out {args.out}: a file; give a folder for sweep.csv, sweep.md and the plots", file=sys.stderr)
        return 2
    if args.out is not None:
        # A sweep's or a run's own folder as --out for other folders' results: the sweep's own
        # table and plots were replaced by the combined ones without a word (walk), and a run's
        # folder would look like a sweep's.
        out_at = args.out.resolve()
        foreign = [str(d) for d in args.dirs if not d.resolve().is_relative_to(out_at)]
        owner = "a sweep's" if (args.out / "multirun.yaml").is_file() else (
            "one run's" if _is_run_folder(args.out) else "")
        if owner and foreign:
            print(f"error: --out {args.out} is {owner} own folder, and {', '.join(foreign)} "
                  f"{'is' if len(foreign) == 1 else 'are'} not inside it: its own files would be replaced by "
                  "another table; give --out a folder of its own", file=sys.stderr)
            return 2
    rows = collect(args.dirs)
    # Every sweep folder given or found under them: a folder of several sweeps checked its own
    # multirun.yaml only (none), and an interrupted sweep's unstarted jobs went unsaid, exit 0.
    unstarted = [note for d in sweep_folders(args.dirs) if (note := never_started(d))]
    if not rows and not unstarted:
        print(f"error: no job folders (with result.json or .hydra/) under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    if not rows:  # a sweep stopped before its first job: what to run, not an error about folders
        for note in unstarted:
            print(note)
        return 1
    out = args.out or args.dirs[0]
    # A run's own folder holds its result, log and .hydra/: sweep files written there made it
    # look like a sweep's folder (and a later report over its parent listed them as one).
    own_run = args.out is None and _is_run_folder(out)
    # Several folders: the first one's own table and plots (a sweep's) had been replaced by the
    # combined ones, beside plots of its own that were not redrawn.
    several = args.out is None and len({d.resolve() for d in args.dirs}) > 1
    # One folder that gathers sweeps' or runs' folders (results below its children), not a sweep's
    # own: `report /tmp` wrote a table of 1,500 results and a 7 MB plot into /tmp (walk), and
    # `report outputs/runs` into outputs/runs (review).
    gathered = (args.out is None and not own_run and not several and not (out / "multirun.yaml").is_file()
                and any(Path(r.path).resolve().parent != out.resolve() for r in rows))  # results further down
    written, unwritable = [], ""
    if not own_run and not several and not gathered:
        try:
            written = write_report(rows, out, plots=not args.no_plots, more_notes=unstarted)
        except OSError as exc:  # a read-only sweep folder: the table still comes out
            unwritable = f"{exc.strerror or exc}"
    print(text_table(rows))
    for note in [*sweep_notes(rows), *unstarted]:
        print(note)
    if unwritable:
        print(f"error: could not write the table files into {out} ({unwritable}); give another folder with --out DIR",
              file=sys.stderr)
        return 2
    if own_run:
        print(f"not written: {out} is one run's folder; give --out DIR to write sweep.csv, sweep.md and the plots")
    elif several:
        print(f"not written: {len(args.dirs)} folders given, and {out}'s own table stays its own; give --out DIR to "
              "write the combined sweep.csv, sweep.md and plots")
    elif gathered:
        print(f"not written: {out} is not a sweep's folder (no multirun.yaml) but holds results in folders below it; "
              "give --out DIR to write their sweep.csv, sweep.md and plots")
    else:
        print(f"written: {', '.join(str(p) for p in written)}")
    bad = failures(rows)
    return 1 if bad or unstarted else 0


def _is_run_folder(folder: Path) -> bool:
    """One job's own folder (its result or its .hydra/), not a sweep's nor a folder of runs."""
    return not (folder / "multirun.yaml").is_file() and ((folder / RESULT_FILE).is_file() or (folder / ".hydra").is_dir())


def sweep_folders(dirs: list[Path], depth: int = 3) -> list[Path]:
    """The sweep folders (those holding multirun.yaml) among `dirs` and below them, `depth`
    levels down at most."""
    found: list[Path] = []

    def walk(folder: Path, left: int) -> None:
        if (folder / "multirun.yaml").is_file():
            found.append(folder)
            return
        if left <= 0:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            walk(child, left - 1)

    for d in dirs:
        walk(d, depth)
    return list(dict.fromkeys(found))


def never_started(sweep_dir: Path) -> Optional[str]:
    """A sweep stopped before all its jobs began (Ctrl-C, a killed launcher) has no folder for
    the rest: the jobs its multirun.yaml plans that left nothing behind, and how to run them."""
    from omegaconf import OmegaConf

    from runner.callbacks import planned_jobs

    try:
        config = OmegaConf.load(sweep_dir / "multirun.yaml")
        # Job folders are named by job number only with Hydra's default subdir.
        sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False) if "sweep" in config.hydra else {}
        subdir = sweep.get("subdir")  # type: ignore[union-attr]
        planned = planned_jobs(config) if subdir in (None, "${hydra.job.num}") else None
    except Exception:  # noqa: BLE001 - not a sweep folder, or one Hydra did not write: nothing to say
        return None
    if not planned:
        return None
    begun = {p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()}
    missing = [n for n in range(planned) if str(n) not in begun]
    if not missing:
        return None
    listed = ", ".join(f"#{n}" for n in missing[:10]) + (", ..." if len(missing) > 10 else "")
    return (f"sweep: {len(missing)} of its {planned} jobs never started ({listed}; the sweep stopped early): the "
            f"sweep's command again with resume=true hydra.sweep.dir={sweep_dir} runs "
            f"{'it' if len(missing) == 1 else 'them'} and any job that did not end ok, keeping the ok results")


if __name__ == "__main__":
    sys.exit(main())
