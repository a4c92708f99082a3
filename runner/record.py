"""The result of one job as a JSON document, written atomically (temporary file, then rename)."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.schema import recorded_default, type_of

RESULT_FILE = "result.json"
TRACEBACK_FILE = "traceback.txt"  # a failed job's traceback, beside its result
CONFLICT_FILE = "resume_conflict.txt"  # a sweep job refused to write into another job's folder
SCHEMA = "runner.result/1"
STATUSES = ("ok", "invalid", "failed", "interrupted", "skipped")

# How every figure is measured; stored with each result so the method travels with the numbers.
# The load method's words that hold on every device (how a request is served differs).
_LOAD_SCENARIOS = (
    "load.scenario=offline: the closed-loop passes above. single_stream: one request at a time, "
    "issue to completion on the host clock. server: Poisson arrivals at the offered rate, drawn "
    "from the seed before the pass (one draw for every point, the runner's and the baseline's, its gaps scaled "
    "to each point's rate, stretched to offer it exactly); "
)
_LOAD_VALIDITY = (
    "latency = completion - arrival (queueing included); valid when the achieved issue rate (offered / "
    "(1 + the least-squares growth of the requests' wait over the run)) is "
    "within 1% of the offered rate ((arrivals - 1) / the last one's time), no request was still queued when "
    "the point's time ran out, and p99 <= load.p99_ms (the load's percentiles by nearest rank, as "
    "LoadGen's: a latency some request had; the other figures' interpolate). rate=max doubles the rate until a run is "
    "invalid, then bisects to load.resolution; every point is kept in figures.load"
)


# The check's requests and its rule, the same on every device.
_CHECK_REQUESTS = ("distinct random requests (sizes drawn as for the timed passes, every bucket covered in every "
                   "slot first: at the most padded size drawn in it, and in every other slot of a ring of several "
                   "at its own size; padded only where graphs launch buckets)")
_CHECK_RULE = ("leaf by leaf on its real rows and positions: max ||out-ref||/||ref|| <= tolerance, and each sample's "
               "(row's; small rows a few at a time) ||out-ref|| over the leaf's rms row norm <= 4 x tolerance; "
               "integer and boolean leaves exactly")
METHOD = {
    "schedule": (
        "requests go round-robin over the streams, and on each stream around a ring of "
        "staging.slots {slot_memory} slots; per request: wait for the slot's previous request (its "
        "'done' event); in copy staging, copy the request from host memory into the slot (on a "
        "second host thread with staging.copy_thread); make the stream current; one async H2D copy "
        "of the request's inputs (packed in one buffer) into a static device buffer, graph replay "
        "(or eager forward), an async D2H copy of each kept output leaf into the slot; record 'done' "
        "on the stream. With buckets, each request is padded to the smallest bucket that fits and "
        "replays that bucket's graph (eager runs the real size). In direct staging the requests are materialized in "
        "the slots, as by a server that deserializes into pinned memory: each slot serves the bytes it holds (one "
        "request per slot, read in each request's shape; each input at the same offset in every shape, so a smaller "
        "shape's single copy spans the gaps; inside a graph each input is copied alone), while copy "
        "staging rotates over the request plan (measure.input_pool requests; with buckets, a longer "
        "plan of drawn sizes, model_io.plan_requests of them). The check, the throughput, host-time, latency "
        "and load passes and the profile serve requests through this one protocol (runner/protocol.py); "
        "the ceiling replays the compute alone"
    ),
    "baseline": (
        "eager model (uncompiled, whatever compile asks) on the default stream with pageable "
        "memory, each request at its real size: model(**{name: x.to(device)}), then .cpu() of each "
        "kept output leaf; its requests cycle over the request plan"
    ),
    "throughput": (
        "all slots in flight until measure.min_requests and measure.min_duration_ms are both "
        "reached (at most measure.max_pass_ms); host clock from a synchronized start to a "
        "synchronized end, garbage collector off; the median of the passes, run back to back: at "
        "least measure.min_repeats and at most measure.repeats, until the relative standard error "
        "of their mean is under measure.stdrel or the budget ends (then the ceiling's and the "
        "baseline's passes, each block after a short warm-up; measure.interleave=true alternates "
        "them per repeat); cv = stdev / mean of the passes; samples/s counts real samples (padding "
        "rows excluded; the median of the passes' own samples/s). After a step in the host's speed "
        "(every pass before it more than 5% and 4 cv off the mean of the passes after it, which are at least max(3, measure.min_repeats) "
        "and half of all; and the host canary's speed moved the same way, by at least 5% and half "
        "as much), the throughput's median, cv and stopping rule use the passes after the step: "
        "throughput_steady_from_repeat names the first, throughput_cv_all_repeats is the cv of "
        "all, throughput_requests_per_s_repeats keeps every pass. The baseline's and the "
        "ceiling's figures use all their passes"
    ),
    "speedup_vs_baseline": (
        "median runner requests/s / median baseline requests/s (with measure.interleave=true: "
        "the median over repeats of the ratio of the two passes run back to back, its interval "
        "from the spread of those ratios); with buckets in samples/s, each side's the median of its "
        "passes' own samples/s (the sizes each pass served over its time)"
    ),
    "ceiling": (
        "the compute alone (the lanes' compute graphs, checked against eager: by the requests' check, "
        "or with the copies in the graph each replayed once against eager after it; or eager forwards) "
        "replayed back to back across the streams, no copies; the host waits only to keep at most three "
        "strides of replays queued"
    ),
    "efficiency_vs_ceiling": ("throughput_requests_per_s / ceiling_requests_per_s (with buckets, samples/s, each "
                              "side's the median of its passes' own; with measure.interleave=true the median over "
                              "repeats of the ratio of the two passes run back to back, as the speedup's)"),
    "latency": (
        "a separate pass of measure.latency_requests with CUDA events before the H2D copy, after it, "
        "after compute and after the D2H copy of every request, all slots in flight"
    ),
    "host_time": (
        "a separate pass of the throughput loop with the host clock between the protocol's steps: "
        "host_wait_us (waiting for the slot: its event, or the copy thread), host_copy_us ({host_copy}), "
        "host_launch_us (stream, copies, replay, event record); host_enqueue_us = copy + launch"
    ),
    "check": (
        f"{_CHECK_REQUESTS} through the request protocol, all slots in flight, each compared with an eager "
        f"forward of the real request, {_CHECK_RULE}"
    ),
    "warmup": ("untimed schedule for measure.warmup_ms, or its share of measure.budget_s where shorter "
               "(warmup_time_ms: what it ran), before the first timed pass"),
    "host_canary": (
        "before each throughput pass, untimed, a fixed pure-Python loop on the submitting thread, the "
        "fastest of 5 tries of about 0.1 ms (host_canary_us_repeats): how fast the core ran a small "
        "in-cache loop then (its clock, its share of a physical core; not cache or memory contention, "
        "nor preemptions). host_canary_cv is the spread of its speed over the passes, "
        "host_canary_correlation (Pearson's r, 3 passes or more) how closely the passes' rates "
        "followed it; a low r does not show the host was quiet"
    ),
    "host_others": (
        "around each throughput pass, untimed: the busy time of the CPUs any thread of this process "
        "may run on (/proc/stat, 10 ms ticks, the hypervisor's steal left out) less this process's own "
        "CPU time (all its threads), over the pass's time: the cores other processes kept busy there "
        "(host_others_cores_repeats, signed: about a tick per busy CPU at each end of a pass; "
        "host_others_cores over the passes the throughput's figures rest on, summed, then clamped at "
        "0; host_others_tick_cores that grain per busy CPU, a root sum of squares over the passes). "
        "Warned about above the CPUs this job leaves free + 0.25 + the grain of its busy threads, unless "
        "the sweep's launcher ran several jobs at a time. {sides}A load's passes (each point of a server's, a "
        "single stream's one) alike, whose figures they are: host_others_cores_load, host_others_tick_cores_load{load_sides}"
    ),
    "load": (
        f"{_LOAD_SCENARIOS}each request issued at its arrival to the first free slot (queued while all "
        "are busy); completion seen on the host (the slot's event polled between issues; a synchronous "
        f"call's return on the CPU and for the baseline); {_LOAD_VALIDITY}"
    ),
}


# Where a baseline and a ceiling run (a GPU), their passes are watched too.
_OTHERS_SIDES = ("The same around the baseline's and the ceiling's passes (host_others_cores_baseline, _ceiling, "
                 "with their grains; their passes keep the submitting thread alone busy), warned about so where the "
                 "throughput's is not: a busy baseline reads as a larger speedup. ")
_OTHERS_TEMPLATE = METHOD["host_others"]
METHOD["host_others"] = _OTHERS_TEMPLATE.format(
    sides=_OTHERS_SIDES, load_sides="; its baseline's as a ratio's side (host_others_cores_load_baseline)")

# What changes on the CPU, where the same words would claim what did not run.
HOST_METHOD = {
    "schedule": (
        "on the CPU: one request at a time on the submitting thread: the request is copied (host "
        "memory to host memory, one memmove on that thread) into the model's input, the eager forward runs, the output is "
        "copied out; no streams, graphs, pinned memory or events"
    ),
    "baseline": "not measured on the CPU: it would run the same code as the schedule",
    "ceiling": "not measured on the CPU: it would run the same code as the schedule",
    "host_others": _OTHERS_TEMPLATE.format(sides="", load_sides=""),
    "efficiency_vs_ceiling": "not measured on the CPU",
    "speedup_vs_baseline": "not measured on the CPU",
    "latency": (
        "a separate pass of measure.latency_requests with host-clock marks before the copy in, after "
        "it, after the forward and after the copy out (figures latency_copy_in_us, _compute_us, "
        "_copy_out_us, _e2e_us)"
    ),
    "host_time": (
        "a separate pass of the throughput loop with the host clock between its steps: host_wait_us "
        "(nothing to wait for on the CPU), host_copy_us (no copy, the request is already in "
        "place: about 0.1 us, the host clock's own cost), "
        "host_launch_us (copy in, forward, copy out); host_enqueue_us = copy + launch"
    ),
    "throughput": (
        "requests one after another until measure.min_requests and measure.min_duration_ms are both "
        "reached (at most measure.max_pass_ms); host clock; the median of the passes; cv = stdev / mean; "
        "after a step in the host's speed, of the passes after it (throughput_steady_from_repeat)"
    ),
    "load": (
        f"{_LOAD_SCENARIOS}on the CPU each request runs on the submitting thread when issued (an arrival "
        f"during a forward waits for it: queueing), completion is the call's return; {_LOAD_VALIDITY}"
    ),
    "check": (
        f"{_CHECK_REQUESTS} through the request protocol, one at a time, each compared with an eager "
        f"forward of the real request, {_CHECK_RULE}"
    ),
}


def as_written(override: str) -> str:
    """An override as the user wrote it, from what Hydra's sweepers hand a job: graph=False ->
    graph=false (a swept boolean as Python prints it; Hydra reads both alike), and
    ~model.module.bias=null -> ~model.module.bias (a deletion given no value, as the sweeper
    writes it; Hydra reads both alike, but the first reads as "delete it if it is null"). Tables,
    labels and records show what the user wrote, whichever launcher ran the job."""
    key, sep, value = override.partition("=")
    if key.startswith("~") and sep and value == "null":
        return key
    return f"{key}={value.lower()}" if sep and value in ("True", "False") else override


# How the warnings that other work shared a job's host begin (job._busy_host_warning,
# job._busy_during_warning (throughput's or load's), job._busy_sides_warning, summary._loops_disagree), for the sweep
# table to name those jobs (report.shared_host_notes, report.sides_shared_notes).
BUSY_AT_START_SAID = "the host was busy as the job began"
BUSY_DURING_SAID = "other processes ran during the throughput passes"
BUSY_LOAD_SAID = "other processes ran during the load's passes"
BUSY_SIDES_SAID = "other processes ran during the passes a ratio compares with"
LOOPS_APART_SAID = "the throughput passes ("
CONCURRENT_SAID = "this job ran beside other jobs of its sweep"
# What the warning on throughput passes the budget cut short says (after their count), for the
# sweep table to name jobs whose figure rests on less than was asked (report.thin_notes).
PASSES_CUT_SAID = " passes were cut to "


def latency_short(served: int, asked: int) -> bool:
    """Whether a latency pass that served `served` of `asked` requests rests on too few for its
    p99 to read as asked: under nine tenths of them, or under 100 (188 of 200 is as good)."""
    return served < asked and (served < 100 or served < 0.9 * asked)


# A check cut short by the budget after this many requests (measure=quick's whole check), or
# after this share of those asked, is a note, not a warning (124 of quick's 128 had warned on
# nearly every quick CPU job).
CHECK_ENOUGH = 128
CHECK_ENOUGH_SHARE = 0.75


def check_short(compared: int, asked: int) -> bool:
    """Whether a check the budget cut to `compared` of `asked` requests rests on too few to
    pass without a warning."""
    return compared < asked and compared < min(CHECK_ENOUGH, CHECK_ENOUGH_SHARE * asked)


# The job's own warnings that other work shared its host: the table's rates and cv do not show it.
SHARED_HOST = {BUSY_AT_START_SAID: "busy as it began", BUSY_DURING_SAID: "other processes ran during its passes",
               BUSY_LOAD_SAID: "other processes ran during its load's passes",
               LOOPS_APART_SAID: "its load changed during the job",
               # Under a launcher of several jobs at a time the "other processes" checks stand
               # aside (the others are its own sweep's): this one says it instead.
               CONCURRENT_SAID: "ran beside other jobs of its sweep"}
# Other work during the baseline's or the ceiling's passes alone: the rate stands, a ratio over
# them reads higher than it is.
SIDES_SHARED = "other processes ran during its baseline's or ceiling's passes"


def sides_shared(warnings: list[str]) -> str:
    """SIDES_SHARED where a job's `warnings` say so ("" otherwise)."""
    return SIDES_SHARED if any(str(w).startswith(BUSY_SIDES_SAID) for w in warnings) else ""


def host_shared(warnings: list[str]) -> str:
    """What a job's `warnings` say of other work on its host, in a few words ("" when nothing)."""
    return "; ".join(said for start, said in SHARED_HOST.items() if any(str(w).startswith(start) for w in warnings))


# On the CPU in copy staging: the request's copy from the pool into the slot, before the rest.
HOST_COPY_STAGING = {
    "schedule": (
        "on the CPU, copy staging: one request at a time on the submitting thread: the request is "
        "copied from the input pool (measure.input_pool requests, rotated) into the slot's host "
        "buffer (one memmove), then from the slot into the model's input (a second memmove), the "
        "eager forward runs, the output is copied out; no streams, graphs, pinned memory, events or "
        "copy thread"
    ),
    "host_time": (
        "a separate pass of the throughput loop with the host clock between its steps: host_wait_us "
        "(nothing to wait for on the CPU), host_copy_us (the request's copy from the pool into the "
        "slot: one memmove of its bytes), host_launch_us (copy into the model's input, forward, copy "
        "out); host_enqueue_us = copy + launch"
    ),
}


# The latency pass's words where the copies are inside the graph: no marks between them.
LATENCY_COPIES_IN_GRAPH = (
    "a separate pass of measure.latency_requests with CUDA events before and after each request's "
    "graph, which holds its copies (capture.copies_in_graph): latency_e2e_us only, the stages' "
    "figures null; all slots in flight"
)
# What host_copy_us times on a GPU, by the staging that ran.
_HOST_COPY = {
    "copy": "the request's copy into the slot on the submitting thread: one memmove of its bytes",
    "direct": "no copy in direct staging: the request is in its slot; about 0.1 us, the host clock's own cost",
    "copy_thread": "none on the submitting thread: the copy thread copies the request into its slot; about "
                   "0.1 us, the host clock's own cost",
}


def method_for(device: str | None, ran: dict[str, Any] | None = None) -> dict[str, str]:
    """How the figures were measured, in the words that fit the device and the settings that
    ran them (`ran`: the result's `effective`): on the CPU, copy staging adds a copy the direct
    words said was not there; on a GPU, the copies inside the graph leave the latency pass no
    marks between them, and direct staging or the copy thread leave the submitting thread no copy."""
    ran = ran or {}
    staging = ran.get("staging", "direct")
    if device is not None and not device.startswith("cuda"):
        return {**METHOD, **HOST_METHOD, **(HOST_COPY_STAGING if staging == "copy" else {})}
    method = dict(METHOD)
    method["schedule"] = METHOD["schedule"].format(slot_memory="pinned" if ran.get("pinned", True) else "pageable")
    method["host_time"] = METHOD["host_time"].format(
        host_copy=_HOST_COPY["copy_thread" if staging == "copy" and ran.get("copy_thread") else staging])
    if ran.get("copies_in_graph"):
        method["latency"] = LATENCY_COPIES_IN_GRAPH
    return method


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(_clean(obj), indent=indent, sort_keys=False, default=str, allow_nan=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp alone gives 0600


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_result(output_dir: Path, result: dict[str, Any]) -> Path:
    assert result["status"] in STATUSES, result["status"]
    path = output_dir / RESULT_FILE
    write_atomic(path, to_json(result) + "\n")
    return path


def write_own_result(output_dir: Path, result: dict[str, Any]) -> Path | None:
    """Write a job's result, unless the folder holds another job's (the job ended, failed or
    was stopped before its own check of the folder): then why it ended goes beside that result,
    in CONFLICT_FILE, which the sweep table reads as this job's, and None is returned."""
    differ = other_overrides(output_dir, result["overrides"], (result.get("job") or {}).get("config_origin") or ())
    if differ is None:
        return write_result(output_dir, result)
    write_atomic(output_dir / CONFLICT_FILE,
                 f"{result['reason']}; {output_dir} holds a result for other overrides ({differ}), kept\n")
    return None


def read_result(path: Path) -> dict[str, Any] | None:
    """A result file's content, or None if it is missing or not a runner result."""
    return _read(path)[0]


def result_problem(path: Path) -> str | None:
    """Why an existing file is not a readable result (None when it is one, or is missing)."""
    return _read(path)[1] if path.exists() else None


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    except ValueError as exc:
        return None, f"not valid JSON ({exc})"
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, str) and schema.startswith("runner.result/") and schema != SCHEMA:
        return None, f"written by another runner version (schema {schema}; this one reads {SCHEMA})"
    if not isinstance(data, dict) or schema != SCHEMA:
        return None, f"not a runner result (no \"schema\": \"{SCHEMA}\")"
    return data, None


def without_resume(overrides: list[str]) -> list[str]:
    """The overrides but `resume`: how a job was run, not what it measured."""
    return [o for o in overrides if not o.lstrip("+~").startswith("resume=")]


def _settings(overrides: list[str]) -> dict[str, Any] | None:
    """What overrides set, as Hydra reads them: key -> value, the last one of a key winning,
    `resume` aside (graph=false and graph=False, or the same overrides in another order, are
    the same settings). None where Hydra's parser refuses one."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - not Hydra's syntax: compared as written
        return None
    settings: dict[str, Any] = {}
    for override in parsed:
        key = override.key_or_group + (f"@{override.package}" if override.package else "")
        if key != "resume":
            settings[key] = ("deleted",) if override.is_delete() else ("set", override.value())
    return settings


def _typed(value: Any) -> str:
    """A value as JSON, where a boolean is not a number (Python's == says True == 1) and a
    number is its value (2 and 2.0 are the same budget)."""
    def plain(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            try:
                return {"number": repr(float(v)) if float(v) == v else repr(v)}  # exact: 2**63-1 is not 2**63
            except OverflowError:  # an int past float's range is its own value
                return {"number": repr(v)}
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return repr(v)

    return json.dumps(plain(value), sort_keys=True)


def same_job(before: list[str], now: list[str]) -> bool:
    """Whether an earlier result answers this job: the same settings overridden, `resume` aside."""
    there, here = _settings(before), _settings(now)
    if there is None or here is None:
        return without_resume(before) == without_resume(now)
    return _typed(there) == _typed(here)


def config_changes(before: Any, now: Any, limit: int = 3) -> list[str]:
    """Where two resolved configs differ (`resume` aside), as "key: there -> now", at most
    `limit` of them: the same overrides can resolve to other settings when a preset changed."""
    changes: list[str] = []

    def at(node: dict, k: Any, path: str) -> Any:
        # A schema key one config lacks (written before the key existed) ran as its default.
        # Not a model's own argument (under model.module: absent there is the constructor's
        # default), an entry of a map (an input of one config only), nor a key with none.
        if k in node:
            return node[k]
        parent = type_of(path.rpartition(".")[0])
        default = recorded_default(path)
        known = type_of(path) is not None and not isinstance(parent, tuple) and default != "???"
        return default if known and not path.startswith("model.module") else "<absent>"

    def walk(a: Any, b: Any, key: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                path = f"{key}.{k}" if key else str(k)
                if not (key == "" and k == "resume"):
                    walk(at(a, k, path), at(b, k, path), path)
        elif _typed(a) != _typed(b):
            changes.append(f"{key}: {json.dumps(a, default=repr)} there, {json.dumps(b, default=repr)} now")

    walk(before, now, "")
    return changes[:limit] + ([f"{len(changes) - limit} more"] if len(changes) > limit else [])


def config_origin(hydra: Any) -> list[str]:
    """What chose the config besides the task's overrides, as command-line words: a primary
    config of the user's (--config-dir, --config-name) and hydra.searchpath. With the overrides
    they reproduce the run; without them the same overrides named another job (a --config-name
    run and a default one both recorded no override, and the second overwrote the first)."""
    try:
        dirs = [f"--config-dir={s.path}" for s in hydra.runtime.config_sources if s.provider == "command-line"]
        name = str(hydra.job.config_name)
        paths = [str(p) for p in (hydra.searchpath or [])]
    except Exception:  # noqa: BLE001 - no Hydra config to read (a job run from code): nothing chose it
        return []
    return dirs + ([f"--config-name={name}"] if name != "config" else []) + \
        ([f"hydra.searchpath=[{','.join(paths)}]"] if paths else [])


def other_overrides(folder: Path, overrides: list[str], origin: Sequence[str] = ()) -> str | None:
    """How the overrides of the result `folder` holds differ from these, or None when it holds
    none or this job's (`resume` aside); `origin` (config_origin) counts as overrides."""
    previous = read_result(folder / RESULT_FILE)
    if previous is None:
        return None
    origin_there = list((previous.get("job") or {}).get("config_origin") or [])
    if origin_there != list(origin):
        def said(words: Sequence[str]) -> str:
            return " ".join(words) or "the runner's own"

        return f"config there: {said(origin_there)}; this job: {said(list(origin))}"
    if same_job(previous.get("overrides") or [], overrides):
        return None
    there, here = without_resume(previous.get("overrides") or []), without_resume(overrides)
    only_there, only_here = [o for o in there if o not in here], [o for o in here if o not in there]
    # "none" had read as a value ("this job: none" beside timestamps=csv): said as no override.
    return (f"there: {' '.join(only_there) or 'no other override'}; this job: {' '.join(only_here) or 'no other override'}"
            if only_there or only_here else "the same ones in another order")


def folder_conflict(folder: Path, overrides: list[str], resume: bool, origin: Sequence[str] = ()) -> str | None:
    """Why a job must not write into `folder`, or None: it holds another job's result (other
    overrides or config origin, `resume` aside). Whether resuming or not, a measured result is
    never overwritten; the same overrides without resume=true measure again, in place."""
    differ = other_overrides(folder, overrides, origin)
    if differ is None:
        return None
    if resume:
        return (f"resume=true: {folder} holds a result for other overrides ({differ}); resume with the same "
                "overrides, or use another folder")
    return (f"{folder} holds a result for other overrides ({differ}), which this job would overwrite; use "
            "another folder (hydra.run.dir, or hydra.sweep.dir in a sweep), or remove it")


def resume_changes(folder: Path, previous: dict[str, Any] | None, config: Any) -> str | None:
    """Why resume=true must not keep `previous`, the ok result in `folder`, for a job of this
    resolved `config` (its overrides match): the settings they resolve to have changed since
    (an edited preset, another default). None when it may be kept, or is no ok result."""
    if not previous or previous.get("status") != "ok":
        return None
    changed = config_changes(previous.get("config"), json.loads(to_json(config)))  # as the record holds it
    if not changed:
        return None
    return (f"resume=true: {folder} holds a result for these overrides measured with other settings "
            f"({'; '.join(changed)}): a preset or a default changed since; run without resume=true to measure "
            "again in place, or use another folder")


def _holds_cwd(folder: Path) -> bool:
    """Whether `folder` is the working directory or above it: never removed."""
    here, target = Path.cwd().resolve(), folder.resolve()
    return target == here or target in here.parents


def remove_if_only(folder: Path, names: set[str]) -> None:
    """Remove `folder` when the entries it holds all have these names (what Hydra wrote for a
    run that recorded nothing), and it is neither the working directory nor above it."""
    try:
        if _holds_cwd(folder):
            return
        if folder.is_dir() and all(p.name in names for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        pass


# A single run's folder as the run found it, before Hydra wrote into it: (the folder, resolved;
# the names it held; the first of it and its parents that did not exist).
_run_folder_before: tuple[Path, set[str], Path | None] | None = None


def _first_missing(folder: Path) -> Path | None:
    """The first of `folder` and its parents that does not exist (the top of what making
    `folder` creates), absolute; None when `folder` exists."""
    created = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        created = path
    return None if created is None else Path(os.path.abspath(created))


def _remove_created(folder: Path, created: Path | None) -> None:
    """Remove `folder` (absolute) and its parents up to `created`, the first one made for it,
    while each is empty and is not the working directory: OSError at the first one not empty."""
    if created is None:
        return
    for path in (folder, *folder.parents):
        if _holds_cwd(path):
            return
        path.rmdir()
        if path == created:
            return


def note_run_folder(folder: Path) -> None:
    """Before Hydra writes a single run's .hydra/ and log: what its folder held."""
    global _run_folder_before
    try:
        held = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    except OSError:
        held = set()
    _run_folder_before = (Path(os.path.abspath(folder)), held, _first_missing(folder))


def undo_run_folder(folder: Path, names: set[str]) -> None:
    """A single run that recorded nothing: what Hydra wrote (`names`, where the folder did not
    hold them before) is removed, then the folders the run created, while empty. Without a note
    of the folder, it goes only when it holds nothing but `names`."""
    global _run_folder_before
    noted, _run_folder_before = _run_folder_before, None
    folder = Path(os.path.abspath(folder))  # as noted: Hydra's output_dir is absolute, hydra.run.dir may not be
    if noted is None or noted[0] != folder:
        remove_if_only(folder, names)
        return
    _, held, created = noted
    try:
        if _holds_cwd(folder):
            return
        for name in names - held:
            path = folder / name
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        _remove_created(folder, created)
    except OSError:
        pass


# A sweep folder as its launch found it, until the launch starts a job: Hydra's sweeper writes
# multirun.yaml first and checks every job's overrides after, so a bad one fails in between.
# (folder, its multirun.yaml then, the first of it and its parents that did not exist, what
# else it held then)
_pending_sweep: tuple[Path, bytes | None, Path | None, frozenset] | None = None


def _sweep_contents(folder: Path) -> frozenset:
    """What a sweep folder holds besides multirun.yaml, two levels down (the jobs' folders and
    their files), with the times they were written: a job that ran changes it."""
    found = set()
    try:
        for entry in os.scandir(folder):
            if entry.name == "multirun.yaml":
                continue
            found.add((entry.name, entry.stat(follow_symlinks=False).st_mtime_ns))
            if entry.is_dir(follow_symlinks=False):
                found.update((f"{entry.name}/{sub.name}", sub.stat(follow_symlinks=False).st_mtime_ns)
                             for sub in os.scandir(entry.path))
    except OSError:
        pass
    return frozenset(found)


def sweep_pending(folder: Path) -> None:
    """Before a sweep's launch: note its folder, the multirun.yaml an earlier sweep left there,
    which folders the launch will create, and what else the folder holds."""
    global _pending_sweep
    try:
        before: bytes | None = (folder / "multirun.yaml").read_bytes()
    except OSError:
        before = None
    _pending_sweep = (Path(os.path.abspath(folder)), before, _first_missing(folder), _sweep_contents(folder))


def sweep_started() -> None:
    global _pending_sweep
    _pending_sweep = None


def undo_pending_sweep() -> None:
    """A sweep refused before any job ran: its folder goes back to how the launch found it: the
    folders the launch created are removed while they hold nothing else, an earlier sweep's
    multirun.yaml is put back, and one that was not there is removed. A launcher that does not
    say when its jobs start (Hydra's, joblib's, submitit's) may fail after some ran: then what
    the folder holds has changed, and it is left as it is (multirun.yaml describes those jobs)."""
    global _pending_sweep
    if _pending_sweep is None:
        return
    folder, before, created, contents = _pending_sweep
    _pending_sweep = None
    try:
        if _sweep_contents(folder) != contents:
            return
        if before is not None:
            (folder / "multirun.yaml").write_bytes(before)
            return
        (folder / "multirun.yaml").unlink(missing_ok=True)
        _remove_created(folder, created)
    except OSError:
        pass
