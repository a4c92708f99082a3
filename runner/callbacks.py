"""Hydra callbacks: a single run's folder checked before Hydra writes into it, and the table at
the end of every sweep, built from the files the jobs wrote (so it is the same with the basic,
joblib, submitit or runner launcher)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def sweep_size(config: Any) -> int:
    """The jobs a sweep will run: the product of its swept values, from the command line and
    from a preset's hydra.sweeper.params (2 when they cannot be read: at least two)."""
    return planned_jobs(config) or 2


def planned_jobs(config: Any) -> int | None:
    """sweep_size, or None when the sweep's values cannot be read."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        params = config.hydra.sweeper.get("params") or {}
        # As Hydra's basic sweeper reads them: a preset's params first, then the command line's
        # overrides, one per key, a later one replacing an earlier (streams=4 over a swept streams).
        given = [f"{key}={value}" for key, value in params.items()] + [str(o) for o in config.hydra.overrides.task]
        by_key = {}
        for override in OverridesParser.create().parse_overrides(given):
            by_key[override.get_key_element()] = override
        size = 1
        for override in by_key.values():
            if override.is_sweep_override():
                size *= len(list(override.sweep_string_iterator()))
        return size
    except Exception:  # noqa: BLE001 - only a count for a warning, a note and the record
        return None


def concurrent_jobs(launcher: Any, jobs: int) -> int:
    """How many of a sweep's `jobs` a launcher runs at a time, as far as its config tells
    (1: one by one)."""
    target = str(launcher.get("_target_", ""))
    if "JoblibLauncher" in target:
        n = launcher.get("n_jobs", -1)
        return min(jobs, (os.cpu_count() or 2) if n is None or n < 0 else int(n))
    if "LocalLauncher" in target and "submitit" in target:  # starts every job at once
        return jobs
    return 1


class RunFolderGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run whose folder holds another run's result is refused here, before Hydra
        writes the run's .hydra/ over the one that belongs to that result. (The job checks it
        again, for callers without this callback; a sweep's launcher checks its jobs.)"""
        from hydra.core.hydra_config import HydraConfig

        from runner.record import (
            RESULT_FILE,
            config_origin,
            folder_conflict,
            note_run_folder,
            read_result,
            resume_changes,
        )

        try:
            HydraConfig.instance().set_config(config)  # ${hydra:...} in the folder's name resolves (run_job sets it too)
            folder = Path(str(OmegaConf.select(config, "hydra.run.dir")))
            overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]
            resume = bool(config.get("resume"))
        except Exception:  # noqa: BLE001 - a folder that does not resolve here: the job checks it
            return
        if (folder / "multirun.yaml").is_file():
            # A sweep's folder: a single run's result there would stand for the whole sweep in
            # its table (`runner.report` read one row, and wrote it over the sweep's).
            print(f"error: hydra.run.dir={folder} is a sweep's folder (it holds multirun.yaml); to resume the "
                  "sweep, add -m and hydra.sweep.dir=...; for a single run, name another folder", file=sys.stderr)
            raise SystemExit(2)
        note_run_folder(folder)  # what it holds before Hydra writes there: a refused run takes back only its own
        conflict = folder_conflict(folder, overrides, resume, config_origin(config.hydra))
        if not conflict and resume:  # before Hydra rewrites the .hydra/ that belongs to the kept result
            try:
                task = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]),
                                              resolve=True, enum_to_str=True)
            except Exception:  # noqa: BLE001 - not resolvable here: the job checks it
                task = None
            if task is not None:
                conflict = resume_changes(folder, read_result(folder / RESULT_FILE), task)
        if conflict:
            print(f"error: {conflict}", file=sys.stderr)
            raise SystemExit(2)  # Hydra turns a callback's exception into a warning


class SweepReport(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.record import RESULT_FILE

        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:  # noqa: BLE001 - a folder name that does not resolve here: Hydra says why
            sweep_dir = None
        if sweep_dir is not None and (sweep_dir / RESULT_FILE).is_file():
            # A single run's folder (as RunFolderGuard refuses a run into a sweep's): the sweep's
            # jobs beside that result would be read as one table with it, and `runner.report`
            # wrote that run's row over the sweep's table.
            print(f"error: hydra.sweep.dir={sweep_dir} is a single run's folder (it holds {RESULT_FILE}); name another "
                  "folder for the sweep", file=sys.stderr)
            raise SystemExit(2)
        given_dir = any(str(o).lstrip("+").partition("=")[0] == "hydra.sweep.dir"
                        for o in OmegaConf.select(config, "hydra.overrides.hydra", default=None) or [])
        if sweep_dir is not None and bool(config.get("resume")) and not given_dir \
                and not (sweep_dir / "multirun.yaml").is_file():
            # A new timestamped folder: nothing there to resume (a single run says so; a sweep
            # had run afresh without a word).
            print(f"error: resume=true: this sweep's folder {sweep_dir} is a new one (hydra.sweep.dir defaults to the "
                  "time of day), with nothing to resume; name the sweep's folder with hydra.sweep.dir=..., or drop "
                  "resume=true", file=sys.stderr)
            raise SystemExit(2)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
        if sweep_dir is not None and not target.endswith("runner_launcher.RunnerLauncher") \
                and (sweep_dir / "multirun.yaml").is_file() and not bool(config.get("resume")):
            # Other launchers let Hydra write each job's .hydra/ before the job checks its folder:
            # a refused job had left another sweep's kept results beside .hydra/, multirun.yaml
            # and a table rewritten for this one (review). The runner's launcher checks every
            # job before any runs.
            name = OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher", default=None) or "this launcher"
            print(f"error: hydra.sweep.dir={sweep_dir} holds an earlier sweep (multirun.yaml): with hydra/launcher={name} "
                  "its jobs' folders would be rewritten before each job is checked; name another folder, add resume=true "
                  "to resume that sweep, or use the default launcher, which checks every job first", file=sys.stderr)
            raise SystemExit(2)
        if sweep_dir is not None:
            # Whichever launcher: Hydra's sweeper writes multirun.yaml next, and a launch that
            # fails before any job (Slurm without sbatch, a bad override) puts the folder back
            # as it was (runner.app), not holding that file alone or another sweep's overwritten.
            from runner.record import sweep_pending

            sweep_pending(sweep_dir)
        jobs = sweep_size(config)
        n = concurrent_jobs(config.hydra.launcher, jobs)
        if n > 1:
            # Jobs share the host's cores and the GPU: each one's timings slow the others down.
            os.environ["RUNNER_CONCURRENT_JOBS"] = str(n)
            at_once = f"all {n} jobs at once" if n >= jobs else f"up to {n} jobs at a time"
            name = OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher", default=None)
            which = f"hydra/launcher={name}" if name else "this launcher"
            print(f"warning: {which} runs {at_once}: their timings interfere with each other; "
                  "for figures you compare, use the default runner launcher (one job at a time)", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop("RUNNER_CONCURRENT_JOBS", None)  # not for a later sweep in this process
        from runner.report import collect, failures, never_started, sweep_notes, text_table, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect([sweep_dir])
        if not rows:
            print(f"sweep: no job results under {sweep_dir}")
            return
        # Jobs a stopped sweep never began have no row: said under the table, in sweep.md too.
        unstarted = [note] if (note := never_started(sweep_dir)) else []
        print()
        print(f"sweep: {len(rows)} jobs in {sweep_dir}")
        print(text_table(rows))
        for note in [*sweep_notes(rows), *unstarted]:
            print(note)
        # The table is printed before its files are written: Hydra turns a callback's exception
        # into a warning, and a folder that could not take sweep.md had lost the table, the
        # failures and the exit code (0 for a sweep with failed jobs).
        unwritten = ""
        try:
            written = write_report(rows, sweep_dir, plots=self.plots, more_notes=unstarted)
            print(f"written: {', '.join(p.name for p in written)}")
        except Exception as exc:  # noqa: BLE001 - said, and the exit code set, below
            unwritten = f"{type(exc).__name__}: {exc}".splitlines()[0]
        bad = failures(rows)
        if bad:
            print(f"sweep: {len(bad)} of {len(rows)} jobs did not end ok: "
                  + ", ".join(f"#{r.job} {r.status}" for r in bad))
        if unwritten:
            print(f"error: the sweep's table could not be written into {sweep_dir} ({unwritten}); the results are "
                  f"kept: write it elsewhere with python -m runner.report {sweep_dir} --out DIR", file=sys.stderr)
            raise SystemExit(2)
        if bad or unstarted:
            # Hydra turns callback exceptions into warnings; only SystemExit sets the exit code.
            raise SystemExit(1)
