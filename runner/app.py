"""Command line: `python -m runner [overrides]`, `python -m runner -m [sweep overrides]`.

Hydra composes and validates the config; the job itself is `runner.job.run_job`. Every error a
user can cause ends here as one line on stderr and a non-zero exit (HYDRA_FULL_ERROR=1 shows
the full traceback instead).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner.cli import exit_interrupted, interrupts
from runner.errors import ConfigError, condense, is_folder_error, usage_error
from runner.record import as_written, config_origin, sweep_started, undo_pending_sweep, undo_run_folder
from runner.schema import register

register()


def _expose_launcher() -> None:
    """Hydra finds launchers by scanning the `hydra_plugins` namespace package's folders. An
    editable install maps our `hydra_plugins.runner_launcher` through an import hook that this
    scan does not see (from outside the checkout, `hydra/launcher=runner` would not exist): add
    the folder that holds it."""
    import hydra_plugins
    import hydra_plugins.runner_launcher as ours

    folder = str(Path(ours.__file__).resolve().parent.parent)
    if folder not in [str(Path(p).resolve()) for p in hydra_plugins.__path__]:
        hydra_plugins.__path__.append(folder)  # kept until sys.path changes: then call again


_expose_launcher()

_exit_code = 0  # the worst status of the jobs run in this process
_show_traceback = False  # the user set HYDRA_FULL_ERROR=1


@hydra.main(version_base="1.3", config_path="pkg://runner.configs", config_name="config")
def hydra_entry(cfg: DictConfig) -> dict:
    global _exit_code
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    params = OmegaConf.select(hc, "sweeper.params")
    launcher = OmegaConf.select(hc, "runtime.choices", default={}).get("hydra/launcher")
    if not multirun and launcher not in (None, "runner"):  # hydra/launcher=gpus without -m: silently ignored
        print(f"note: hydra/launcher={launcher} runs sweeps (-m); this single run ignores it", file=sys.stderr,
              flush=True)
    if not multirun and params:  # an experiment preset that defines a sweep, run without -m
        swept = " ".join(f"{k}={v}" for k, v in params.items())
        print(f"note: this config defines a sweep ({swept}); add -m to run it. Running one job instead, with "
              "the preset's settings and the overrides given.", file=sys.stderr, flush=True)
    if "torch" not in sys.modules:
        # torch sets its loggers' levels when its import completes: a Ctrl-C before that left
        # them at the root's INFO, and torch's exit hook printed "FakeTensor cache stats". Not
        # where torch is imported already (a forked sweep job): TORCH_LOGS has set them there.
        logging.getLogger("torch").setLevel(logging.WARNING)
    seen = interrupts()
    try:
        # Imported here, not at the top: a sweep's launcher process never runs a job itself,
        # and torch's import (seconds) is then paid only where jobs run.
        from runner.job import EXIT_CODES, JobInfo, run_job

        if interrupts() != seen:  # a Ctrl-C that torch's import swallowed: the job would run on
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        # Ctrl-C before the job began: no result would ever fill this run's folder, which
        # `runner.report` would then list as missing. (A sweep's launcher records its jobs.)
        if not multirun:
            undo_run_folder(Path(hc.runtime.output_dir), {".hydra", f"{hc.job.name}.log"})
        raise
    info = JobInfo(
        output_dir=Path(hc.runtime.output_dir),
        overrides=[as_written(str(o)) for o in OmegaConf.to_container(hc.overrides.task, resolve=False)],
        multirun=multirun,
        num=hc.job.num if multirun else None,
        # Absolute, as output_dir is: against where the command ran (hydra.job.chdir=true has
        # moved into the job's folder by now).
        sweep_dir=os.path.join(hc.runtime.cwd, str(hc.sweep.dir)) if multirun else None,
        origin=config_origin(hc),
    )
    try:
        with _sigterm_as_interrupt():
            result = run_job(cfg, info)
    except ConfigError as exc:  # single run: say it in one line, leave nothing behind
        undo_run_folder(info.output_dir, {".hydra", f"{hc.job.name}.log"})  # what Hydra wrote
        if _show_traceback:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)  # SystemExit passes Hydra's job wrapper, which would log the error again
    _exit_code = max(_exit_code, EXIT_CODES.get(result["status"], 1))
    return result


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """A run stopped by SIGTERM (`kill`, `timeout`, a batch system's time limit) ends as Ctrl-C
    does: its finished repeats recorded as `interrupted`. Python's default for SIGTERM ends
    the process at once and left a folder with no result. A sweep's job too: `timeout` and
    schedulers send SIGTERM to every process of the sweep, and its jobs died without a word
    (the launcher, which forwards the signal, then recorded them with nothing measured). A
    handler someone else set is left alone: submitit's jobs ignore SIGTERM on purpose (a
    preemption warning, with SIGUSR2 to requeue)."""
    current = signal.getsignal(signal.SIGTERM)
    ours = current is signal.SIG_DFL or getattr(current, "runner_own", False)
    if threading.current_thread() is not threading.main_thread() or not ours:
        yield
        return

    from runner.job import Terminated

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether `exc` was raised while handling a Ctrl-C that landed in Hydra's or OmegaConf's
    code: a Ctrl-C during config composition leaves a half-built node, whose clean-up then
    fails (seen: "hydra.runtime.config_sources: 'NoneType' object has no attribute
    '_invalidate_flags_cache'"). An error raised while handling a Ctrl-C that landed in our own
    code is not one: it is a bug, to be seen."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return _passed_through(current, ("hydra", "omegaconf"))
        current = current.__cause__ or current.__context__
    return False


def _passed_through(exc: BaseException, packages: tuple[str, ...]) -> bool:
    """Whether any frame of `exc`'s traceback (from where it was raised to where it was
    handled) belongs to one of `packages`."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0] in packages:
            return True
        tb = tb.tb_next
    return False


def _run() -> None:
    """Hydra's entry, with the sweep folder put back when it ends before any job ran (a bad
    override, a Ctrl-C, an error with or without HYDRA_FULL_ERROR)."""
    sweep_started()  # nothing pending from an earlier call in this process
    try:
        hydra_entry()
    except BaseException:
        undo_pending_sweep()  # a sweep that ended before any job ran leaves its folder as it was
        raise
    finally:
        sweep_started()


def _option(argv: list[str], *names: str) -> Optional[str]:
    """The value of a Hydra command-line option (--config-dir X, --config-dir=X, -cd X)."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(f"{name}="):
                return arg[len(name) + 1:]
    return None


# Config groups a job takes one option of (experiment presets are overlays: a list of them
# composes, experiment=[buckets,sweep_modes]).
LIST_REFUSED_GROUPS = ("model", "measure", "peer")


def _check_config_sources(argv: list[str]) -> None:
    """A `hydra.searchpath` folder that does not exist: Hydra warns and then reports the
    user's config option as missing from the bundled configs. A --config-dir whose config.yaml
    has the name of the runner's own config: Hydra reads the runner's (a run's .hydra/ given
    this way ran the bundled default job, exit 0)."""
    folder = _option(argv, "--config-dir", "-cd")
    name = _option(argv, "--config-name", "-cn") or "config"
    if folder and name in ("config", "config.yaml") and (Path(folder) / "config.yaml").is_file():
        rerun = (" (to rerun a run, give the overrides its result.json records)"
                 if Path(folder).name == ".hydra" else "")
        raise ConfigError(f"--config-dir {folder}: its config.yaml has the name of the runner's own config, which "
                          f"Hydra reads first; rename yours (DIR/NAME.yaml) and pass --config-name NAME{rerun}")
    if name not in ("config", "config.yaml"):
        _check_primary_builds_on_ours(argv, folder, name)
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in LIST_REFUSED_GROUPS and value.strip().startswith("["):
            # Hydra selects every option of the list and merges them into one config: two
            # measure presets ran as one job, and model=[a,b] blamed a's arguments on b's class.
            group = key.lstrip("+")
            raise ConfigError(f"{arg}: a list selects several {group} options at once, merged into one config; "
                              f"choose one ({group}=NAME), or sweep them with -m {group}=a,b")
        if not sep or key.lstrip("+") != "hydra.searchpath":
            continue
        for item in _file_items(value):
            if not Path(item[len("file://"):]).is_dir():
                raise ConfigError(f"hydra.searchpath: {item}: no such folder (seen from {os.getcwd()}); name the "
                                  "folder that holds your config groups (model/, measure/, ...)")


def _file_items(searchpath: str) -> list[str]:
    """The `file://` entries of a hydra.searchpath value, as written."""
    items = (item.strip().strip("'\"") for item in searchpath.strip().strip("[]").split(","))
    return [item for item in items if item.startswith("file://")]


def _searchpath_folders(argv: list[str]) -> list[Path]:
    """The folders hydra.searchpath names on the command line."""
    folders = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") == "hydra.searchpath":
            folders += [Path(item[len("file://"):]) for item in _file_items(value)]
    return folders


OURS = ("config", "runner_schema")  # the runner's primary config, and the schema it starts from


def _check_primary_builds_on_ours(argv: list[str], folder: Optional[str], name: str) -> None:
    """A primary config of the user's (--config-name) whose defaults do not include the runner's
    `config` has none of its keys or groups: Hydra then said "measure is not in the defaults
    list" (measure=quick) or "model is not in the defaults list" (the file's own override), and
    one that composed failed on a key it lacks ("~baseline: cannot be deleted"). Its defaults
    are followed through the user's own configs (--config-dir, hydra.searchpath folders); where
    one names something else (a package's config), or the file sets its own search path, it is
    left to Hydra. Also refused: `_self_` listed before `config` in a file that sets keys, which
    the runner's config then overrides without a word."""
    import yaml

    stem = name[:-5] if name.endswith(".yaml") else name
    folders = ([Path(folder)] if folder else []) + _searchpath_folders(argv)

    def find(config: str) -> Optional[Path]:
        return next((f / f"{config}.yaml" for f in folders if (f / f"{config}.yaml").is_file()), None)

    def load(path: Path) -> Any:  # the file's mapping ({} when empty); None where it is not one
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            return None
        return {} if data is None else data if isinstance(data, dict) else None

    def entry_name(entry: str) -> str:  # "/config@_here_" -> "config", "base.yaml" -> "base"
        entry = entry.strip().lstrip("/").partition("@")[0].strip()
        return entry[:-5] if entry.endswith(".yaml") else entry

    primary = find(stem)
    if primary is None:
        return
    seen: set[Path] = set()

    def reaches_ours(path: Path) -> Optional[bool]:  # None: cannot tell
        if path in seen:
            return False
        seen.add(path)
        data = load(path)
        if data is None:
            return None  # Hydra will say what is wrong with it
        if isinstance(data.get("hydra"), dict) and "searchpath" in data["hydra"]:
            return None  # bases found where Hydra looks then
        defaults = data.get("defaults")
        if defaults is None:
            return False
        if not isinstance(defaults, list):
            return None
        unknown = False
        for entry in defaults:
            if not isinstance(entry, str):
                continue  # a group's option (model: mha) or an override
            config = entry_name(entry)
            if config in OURS:
                return True
            if config in ("_self_", ""):
                continue
            base = find(config)
            if base is None:
                unknown = True  # not a file of the user's folders: cannot tell
                continue
            below = reaches_ours(base)
            if below is None:
                unknown = True
            elif below:
                return True
        return None if unknown else False

    where = f"--config-name {stem}: {primary}"
    if reaches_ours(primary) is False:
        raise ConfigError(f"{where} does not build on the runner's config, so none of its keys and groups (model, "
                          "measure, ...) are there; start its defaults with it: defaults: [config, _self_, ...] "
                          "(README: a primary config of your own)")
    data = load(primary) or {}
    defaults = data.get("defaults")
    if isinstance(defaults, list):
        names = [entry_name(e) if isinstance(e, str) else None for e in defaults]
        own_keys = sorted(k for k in data if k not in ("defaults", "hydra"))
        if "_self_" in names and "config" in names and names.index("_self_") < names.index("config") and own_keys:
            raise ConfigError(f"{where} lists _self_ before config in its defaults, so the runner's config overrides "
                              f"what it sets ({', '.join(own_keys[:3])}{', ...' if len(own_keys) > 3 else ''}); "
                              "list config first: defaults: [config, _self_, ...]")


def _sweep_job(exc: BaseException) -> str:
    """Which job of a sweep Hydra's sweeper refused while it checked a batch before launching
    it (its composition errors named no job, where the launcher's own checks do)."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "validate_batch_is_legal" and "overrides" in frame.f_locals:
            overrides, batch = list(frame.f_locals["overrides"]), frame.f_locals.get("batch") or []
            index = next((i for i, o in enumerate(batch) if list(o) == overrides), None)
            number = f" #{index}" if index is not None and len(batch) > 1 else ""
            # "its batch" read as model.batch (walk): the sweeper's batches are named only where set.
            size = getattr(frame.f_locals.get("self"), "max_batch_size", None)
            started = (f"no job of its batch (hydra.sweeper.max_batch_size={size}) was started" if size
                       else "no job was started")
            return f" (sweep job{number}: {' '.join(map(str, overrides))}; {started})"
        tb = tb.tb_next
    return ""


def _sweeper_params_error(argv: list[str], exc: BaseException) -> str:
    """`hydra.sweeper.params` set on the command line where no config defines it (it is null
    until a preset sets it): Hydra failed with "Unexpected type for root: NoneType", exit 1."""
    given = [a for a in argv if a.partition("=")[0].lstrip("+~").startswith("hydra.sweeper.params")]
    if not given or "NoneType" not in str(exc):
        return ""
    return (f"{given[0]}: no config here defines hydra.sweeper.params to change; sweep on the command line as "
            "-m KEY=a,b (e.g. -m streams=1,2), or write the sweep in a preset's `hydra: sweeper: params:`")


def _launcher_crash(argv: list[str], exc: BaseException) -> str:
    """What a crash under joblib's or submitit's launcher means: one job's process died, and the
    launcher ended the sweep with it (joblib also the jobs beside it); the line had been the
    launcher's own, cut mid-sentence, naming neither."""
    if type(exc).__module__.split(".")[0] not in ("submitit", "joblib", "loky"):
        return ""
    given = dict(a.partition("=")[::2] for a in argv if "=" in a)
    folder = given.get("hydra.sweep.dir")
    launcher = given.get("hydra/launcher", "this launcher")
    return (f"; a job's process died, and under hydra/launcher={launcher} that ends the sweep (joblib's also ends the "
            f"jobs running beside it); the jobs that finished are kept: python -m runner.report "
            f"{folder or 'SWEEP_DIR'} for their table; the default launcher runs each job in a process of its own and "
            "goes on")


def main() -> None:
    # A model whose code crashes the interpreter (a segfault in an extension) ends the process
    # before anything can be recorded: Python's own fatal-error report then says where, in the
    # model's code, instead of the shell's bare "Segmentation fault".
    with contextlib.suppress(OSError, ValueError, AttributeError):  # a stderr with no file (captured) reports nothing
        faulthandler.enable()
    # `_target_` may name a module of the project the user runs from, as under `python -m`:
    # the console script's own folder comes first on the path otherwise.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
        _expose_launcher()  # a namespace package recomputes its folders when sys.path changes
    global _show_traceback
    _show_traceback = show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra's errors reach us, to print them in one line
    try:
        _check_config_sources(sys.argv[1:])
        _run()
    except KeyboardInterrupt:
        exit_interrupted()
    except Exception as exc:
        if (_caused_by_interrupt(exc) or interrupts()) and not show_traceback:
            # A Ctrl-C during config composition, or one that left an import half done (torch's
            # "cannot load module more than once per process" then)
            exit_interrupted()
        params = _sweeper_params_error(sys.argv[1:], exc)
        user_error = (isinstance(exc, ConfigError) or type(exc).__module__.split(".")[0] in ("hydra", "omegaconf", "yaml")
                      or is_folder_error(exc)  # a default or a config file's folder that cannot be made
                      or bool(usage_error(exc)) or bool(params))  # a command line Hydra cannot take
        if show_traceback:  # the traceback instead of the one line; the exit code stays what it says
            traceback.print_exc()
        else:
            hint = "" if user_error else " (set HYDRA_FULL_ERROR=1 for the traceback)"
            print(f"error: {params or condense(exc)}{_sweep_job(exc)}{_launcher_crash(sys.argv[1:], exc)}{hint}",
                  file=sys.stderr)
        sys.exit(2 if user_error else 1)
    sys.exit(_exit_code)
