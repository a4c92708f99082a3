"""The `runner` launcher: every job of a sweep in a process of its own.

- Jobs are forked from a server process that imported torch, Hydra and the runner once
  (`fork_server`, on by default): a job's process starts in milliseconds, not the seconds those
  imports take, and nothing runs beside a job while it measures (the server waits, idle).
- A job whose process dies (segfault, CUDA abort, killed) costs that job alone: the launcher
  records it as failed with the signal, and the sweep goes on.
- Ctrl-C: running jobs write an `interrupted` result (or the launcher writes it for them);
  finished results stay as they are; the sweep can be resumed with `resume=true`.
- `devices`: run jobs in parallel, one per GPU at a time, each job's process seeing only its
  GPU (CUDA_VISIBLE_DEVICES) and, with `pin_cpus`, only its share of the host's cores.
- A progress line between jobs (job i of n, elapsed, estimate); nothing runs inside a job.

This module is imported whenever Hydra scans its plugins: keep its imports light (no torch),
and no `from __future__ import annotations` (Hydra's scan runs modules outside sys.modules,
where dataclasses cannot resolve string annotations).
"""

import atexit
import contextlib
import copy
import logging
import math
import multiprocessing
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.runner_launcher.topology import cpu_shares, nearest_cpus, visible_gpu_ids

log = logging.getLogger(__name__)
# A SIGINT this soon after the one that began an interrupt is the same interrupt, sent twice
# (`timeout -s INT` signals its child, then the child's group); a second Ctrl-C is later.
SAME_INTERRUPT_S = 0.1


@dataclass
class RunnerLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.runner_launcher.RunnerLauncher"
    # null: one job at a time on whatever device the job asks for. "all": one job per visible
    # GPU at a time. A list of CUDA device ids (as CUDA_VISIBLE_DEVICES names them): those.
    devices: Any = None
    pin_cpus: bool = True  # with several devices, give each job its own share of the cores
    grace_s: float = 15.0  # after Ctrl-C, how long a job may take to write its result
    # Fork each job from a server that has imported torch and the runner (false: start a fresh
    # interpreter per job, which pays those imports, seconds, every time).
    fork_server: bool = True


ConfigStore.instance().store(group="hydra/launcher", name="runner", node=RunnerLauncherConf, provider="runner")


class SlotScheduler:
    """Hands jobs, in order, to free slots; a slot holds at most one job at a time."""

    def __init__(self, slots: Sequence[Hashable]) -> None:
        if not slots:
            raise ValueError("no slots to run jobs on")
        if len(set(slots)) != len(slots):
            raise ValueError(f"slots must be distinct: {list(slots)}")
        self.free: deque = deque(slots)
        self.busy: set = set()

    def assign(self, pending: deque) -> list[tuple[Any, Hashable]]:
        """Pop jobs from `pending` onto free slots; returns the (job, slot) pairs to start."""
        started = []
        while pending and self.free:
            slot = self.free.popleft()
            self.busy.add(slot)
            started.append((pending.popleft(), slot))
        return started

    def release(self, slot: Hashable) -> None:
        if slot not in self.busy:
            raise ValueError(f"slot {slot!r} is not busy")
        self.busy.remove(slot)
        self.free.append(slot)


def resolve_devices(devices: Any) -> list[Optional[str]]:
    """The launcher's slots: [None] for one job at a time, else one slot per device id."""
    if devices is None or devices == "none":
        return [None]
    from runner.errors import ConfigError  # a setting this machine cannot meet: exit 2, one line

    if devices == "all":
        ids = visible_gpu_ids()
        if not ids:
            raise ConfigError("hydra.launcher.devices=all: no CUDA devices are visible here; run without "
                              "hydra/launcher=gpus, or set hydra.launcher.devices=null")
        return ids
    # "0,1" (a quoted list, as CUDA_VISIBLE_DEVICES is written) is two devices, not one slot
    # that sees both and runs one job at a time.
    if isinstance(devices, str):
        ids = [d.strip() for d in devices.split(",")]
    elif isinstance(devices, bool):
        ids = [str(devices).lower()]
    elif hasattr(devices, "__iter__"):
        ids = [str(d) for d in devices]
    else:  # a number (1.5 had failed with "'float' object is not iterable")
        ids = [str(devices)]
    usage = "give GPU ids as CUDA_VISIBLE_DEVICES names them (0, [0,2], GPU-<uuid>), 'all' or null"
    if not ids or "" in ids or len(set(ids)) != len(ids):
        raise ConfigError(f"hydra.launcher.devices={ids}: give distinct device ids; {usage}")
    # Each job's CUDA_VISIBLE_DEVICES is set to its id: a typo there (cuda:0, abc, true) hid every
    # GPU from the job, which then measured the CPU without a word.
    bad = [d for d in ids if not (d.isdigit() or d.startswith(("GPU-", "MIG-")))]
    if bad:
        raise ConfigError(f"hydra.launcher.devices: {bad[0]!r} is no device id; {usage}")
    numbered = [d for d in ids if d.isdigit()]
    if numbered:
        visible = visible_gpu_ids()
        missing = [d for d in numbered if d not in visible]
        if missing:
            seen = f"visible: {', '.join(visible)}" if visible else "no CUDA devices are visible here"
            raise ConfigError(f"hydra.launcher.devices: no GPU {missing[0]} ({seen}); {usage}")
    return ids


def _check_grace(grace_s: Any) -> None:
    """After Ctrl-C the running jobs get `grace_s` to write what they measured: a negative or
    infinite wait (-1 had been taken, and cut every job off before it could record itself)."""
    from runner.errors import ConfigError

    if isinstance(grace_s, bool) or not isinstance(grace_s, (int, float)) or not 0 <= grace_s < math.inf:
        shown = f"{grace_s:g}" if isinstance(grace_s, float) else grace_s
        raise ConfigError(f"hydra.launcher.grace_s={shown}: give the seconds a job may take to write its result "
                          "after Ctrl-C, 0 or more (default 15)")


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (exit {code})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Spawned:
    """A job in a fresh interpreter (subprocess); waited for through a pidfd."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)  # readable once it ends; this process, no other

    @property
    def returncode(self) -> Optional[int]:
        return self.popen.poll()

    def wait(self, timeout: Optional[float] = None) -> int:
        return self.popen.wait(timeout)

    def send_signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def kill(self) -> None:
        self.popen.kill()

    def close(self) -> None:
        os.close(self.sentinel)


class _Forked:
    """A job forked from the preloaded server (multiprocessing's forkserver)."""

    def __init__(self, process: Any) -> None:
        self.process = process
        self.pid = process.pid
        self.sentinel = process.sentinel  # readable once it ends

    @property
    def returncode(self) -> Optional[int]:
        return self.process.exitcode  # negative: the signal that ended it

    def wait(self, timeout: Optional[float] = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired("job", timeout or 0)
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        if self.process.exitcode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.process.kill()

    def close(self) -> None:
        if self.process.exitcode is not None:  # one stuck past SIGKILL cannot be closed: left to the OS
            self.process.close()


def fork_context() -> Any:
    """multiprocessing's forkserver with the job's imports preloaded, started now so that its
    imports overlap the launcher's own preparation; None where forking is not available."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    from hydra_plugins.runner_launcher.worker import PRELOAD

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    from multiprocessing import forkserver, resource_tracker

    # Ctrl-C must not reach the server during its imports (it would print a traceback there),
    # nor be lost to the launcher. While the server starts, the launcher holds SIGINT back
    # (blocked, not ignored: ignoring it lost it, and the sweep ran on). The server inherits the
    # blocked mask across exec and keeps it until its own code ignores SIGINT, which drops what
    # was held; each job unblocks SIGINT and puts the default handler back (worker.run_forked).
    # The resource tracker's start unblocks SIGINT: it starts first, outside the window.
    resource_tracker.ensure_running()
    with _ctrl_c_deferred():
        forkserver.ensure_running()
    return context


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    config: DictConfig  # the job's composed config, sweep folder resolved
    output_dir: Path
    slot: Optional[str] = None
    process: Any = None  # _Forked or _Spawned
    started: float = 0.0
    result_mtime: Optional[int] = None  # result.json's mtime before the job started
    conflict_mtime: Optional[int] = None  # and resume_conflict.txt's: one left by an earlier run is not this job's
    console: Any = None  # the console.log of a job that does not print to the terminal
    kept: bool = False  # resume=true kept its earlier ok result: nothing was measured


def _mtime(path: Path) -> Optional[int]:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


class RunnerLauncher(Launcher):
    def __init__(self, devices: Any = None, pin_cpus: bool = True, grace_s: float = 15.0,
                 fork_server: bool = True) -> None:
        self.devices = devices
        self.pin_cpus = pin_cpus
        self.grace_s = grace_s
        self.fork_server = fork_server
        self.context: Any = None  # the forkserver, once started
        self.launched = 0  # jobs of earlier batches (hydra.sweeper.max_batch_size)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # The sweep folder as it is before Hydra's sweeper writes this sweep's multirun.yaml: a
        # launch refused before any job ran puts it back (runner.record.undo_pending_sweep).
        from runner.record import sweep_pending

        try:
            sweep_pending(Path(str(config.hydra.sweep.dir)))
        except Exception:  # noqa: BLE001 - a folder name that does not resolve here: nothing to keep
            pass

    # --- preparing jobs ----------------------------------------------------------------
    def _prepare(self, overrides: Sequence[str], idx: int) -> _Job:
        assert self.hydra_context is not None and self.config is not None
        from runner.record import as_written

        overrides = [as_written(o) for o in overrides]
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        # Pin the folder now: `${now:...}` must not be evaluated again in the job's process.
        sweep_dir = str(config.hydra.sweep.dir)
        subdir = str(OmegaConf.select(config, "hydra.sweep.subdir"))
        with read_write(config.hydra):
            config.hydra.sweep.dir = sweep_dir
            config.hydra.sweep.subdir = subdir
        return _Job(idx, list(overrides), config, Path(sweep_dir) / subdir)

    def _refuse_bad_targets(self, jobs: list[_Job]) -> None:
        """A model target that does not import is refused before any job starts, like any other
        bad value (a sweep over model.module._target_ with a typo in one). The imports run in a
        process forked from the server, which has torch already: the launcher never imports it.
        Without the server, each job checks its own."""
        if self.context is None:
            return
        first_job: dict[str, _Job] = {}
        for job in jobs:
            target = OmegaConf.select(job.config, "model.module._target_", default=None)
            if isinstance(target, str):
                first_job.setdefault(target, job)
        if not first_job:
            return
        from hydra_plugins.runner_launcher.worker import check_targets

        answers: Optional[list] = None
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(target=check_targets, args=(list(first_job), sender), name="runner-targets")
        started = time.monotonic()
        said = False
        try:
            try:
                with _ctrl_c_deferred():  # as a job's start: never half started
                    process.start()
            except Exception:  # noqa: BLE001 - the server is gone: the jobs check their own targets
                return
            finally:
                sender.close()
            while answers is None and (process.is_alive() or receiver.poll()):
                if receiver.poll(0.1):
                    answers = receiver.recv()
                elif not said and time.monotonic() - started > 5:
                    said = True
                    print(f"[runner] importing the sweep's model target(s) to check them: {', '.join(first_job)}",
                          flush=True)
        except (EOFError, OSError):  # it died before answering: the jobs check their own targets
            pass
        finally:
            receiver.close()
            if process.pid is not None:
                if process.is_alive():  # a Ctrl-C meanwhile: it ignores SIGINT, as the server does
                    process.terminate()
                    process.join(timeout=5)
                if process.is_alive():
                    process.kill()
                process.join(timeout=5)
        for job, error in zip(first_job.values(), answers or [], strict=False):
            if error:
                raise _refused(error, job.idx, job.overrides, self.launched)

    def _payload(self, job: _Job) -> bytes:
        import cloudpickle
        from hydra.core.singleton import Singleton

        return cloudpickle.dumps((self.hydra_context, self.task_function, job.config, Singleton.get_state(), sys.argv))

    def _start(self, job: _Job, slot: Optional[str], cpus: Optional[list[int]], quiet: bool,
               devices: int = 1) -> None:
        env = {"RUNNER_LAUNCHER_START": "forked" if self.context is not None else "fresh interpreter"}
        # The devices this sweep runs jobs on at once: jobs on the others share the host with this
        # one (its memory, caches, PCIe). On record; always set, so that nothing inherited decides.
        env["RUNNER_PARALLEL_DEVICES"] = str(devices)
        # Started in the background (SIGINT ignored): so are its jobs. Always set: a value the
        # launcher inherited must not decide.
        env["RUNNER_SIGINT_IGNORED"] = "1" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "0"
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
            env["RUNNER_LAUNCHER_DEVICE"] = slot
        if cpus:
            env["OMP_NUM_THREADS"] = str(len(cpus))
            env["RUNNER_LAUNCHER_CPUS"] = ",".join(map(str, cpus))
        from runner.record import CONFLICT_FILE  # no torch: the launcher never imports it

        job.output_dir.mkdir(parents=True, exist_ok=True)
        job.result_mtime = _mtime(job.output_dir / "result.json")
        job.conflict_mtime = _mtime(job.output_dir / CONFLICT_FILE)
        job.slot = slot
        job.started = time.monotonic()
        console = str(job.output_dir / "console.log") if quiet else None  # parallel jobs: a readable console
        if self.context is not None:
            from hydra_plugins.runner_launcher.worker import run_forked

            # The whole environment as it is now: the server's is the launcher's at its start.
            process = self.context.Process(target=run_forked, args=(self._payload(job), {**os.environ, **env}, cpus,
                                                                    console), name=f"runner-job-{job.idx}")
            try:
                process.start()
                job.process = _Forked(process)
                return
            except Exception as exc:  # noqa: BLE001 - the server is gone: this job and the rest start afresh
                print(f"[runner] warning: the fork server failed ({exc}); jobs start a fresh interpreter from now on",
                      flush=True)
                self.context = None
                env["RUNNER_LAUNCHER_START"] = "fresh interpreter"
        job.process = self._spawn(job, env, cpus, console)

    def _spawn(self, job: _Job, env: dict[str, str], cpus: Optional[list[int]], console: Optional[str]) -> _Spawned:
        """The job in a fresh interpreter, its payload on stdin."""
        full = dict(os.environ, **env)
        # The job's process must import what this one did: the project (from a checkout or an
        # install) and modules next to the working directory that `_target_` may name.
        here = str(Path(__file__).resolve().parents[2])
        # The working directory first: there a project's own `models` package is the one meant.
        full["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), here, full.get("PYTHONPATH")]))
        if console is not None:
            job.console = open(console, "wb")  # noqa: SIM115
        popen = subprocess.Popen(
            [sys.executable, "-m", "hydra_plugins.runner_launcher.worker"],
            stdin=subprocess.PIPE,
            stdout=job.console,
            stderr=subprocess.STDOUT if console is not None else None,
            env=full,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        spawned = _Spawned(popen)
        assert popen.stdin is not None
        try:
            popen.stdin.write(self._payload(job))
            popen.stdin.close()
        except BrokenPipeError:  # it died before reading: its exit status tells the rest
            pass
        return spawned

    # --- finishing jobs ----------------------------------------------------------------
    def _finish(self, job: _Job, code: int, interrupted: bool = False, how: str = "Ctrl-C") -> JobReturn:
        # No torch: the launcher never imports it.
        from runner.record import CONFLICT_FILE, config_origin, read_result

        if job.console is not None:
            job.console.close()
        if job.process is not None:
            job.process.close()
        path = job.output_dir / "result.json"
        # A job that ended normally wrote its result, or kept an earlier ok one (resume); a
        # result older than the job's start is trusted only then, or when it is an ok result
        # that resume would keep (never overwrite a finished result from outside).
        fresh = _mtime(path) != job.result_mtime
        earlier = None if fresh else read_result(path)
        keep = earlier is not None and earlier.get("status") == "ok" and bool(job.config.get("resume"))
        result = read_result(path) if fresh or (code == 0 and not interrupted) or keep else None
        conflict = job.output_dir / CONFLICT_FILE
        if not fresh and _mtime(conflict) not in (None, job.conflict_mtime):  # it refused another job's folder
            result = {"status": "failed", "reason": conflict.read_text().strip()}
        job.kept = keep and result is not None and result.get("status") == "ok"
        if result is None:
            from runner.job import JobInfo, record_outside  # torch, but only for a job that died

            status = "interrupted" if interrupted else "failed"
            reason = (
                f"interrupted ({how}) before the job wrote its result"
                if interrupted
                else f"the job's process died: {_describe_exit(code)}; nothing else in the sweep was affected"
            )
            task_cfg = copy.deepcopy(job.config)  # the job's config as its task saw it: no hydra node
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            info = JobInfo(
                output_dir=job.output_dir,
                overrides=_task_overrides(job.config),
                multirun=True,
                num=job.idx,
                sweep_dir=os.path.abspath(str(job.config.hydra.sweep.dir)),  # the launcher never changes folder
                # What chose the config besides the overrides, as the job's own record has it:
                # without it a resume (or a rerun) of a --config-name sweep took this record for
                # another job's and refused the folder.
                origin=config_origin(job.config.hydra),
            )
            result = record_outside(task_cfg, info, status, reason, device_slot=job.slot,
                                    ran_s=time.monotonic() - job.started if job.started else None)
        ret = JobReturn(overrides=job.overrides, working_dir=str(job.output_dir), task_name="runner")
        ret.status = JobStatus.COMPLETED  # failures live in result.json; the sweep goes on
        ret.return_value = result
        return ret

    def _stop(self, running: dict[int, _Job], wait_s: float = 10.0) -> None:
        """Kill the running jobs; wait for each at most `wait_s` (a process stuck in a driver
        call may outlive SIGKILL for a while: the launcher does not hang on it)."""
        for job in running.values():
            assert job.process is not None
            if job.process.returncode is None:
                job.process.kill()
        deadline = time.monotonic() + wait_s
        for job in running.values():
            assert job.process is not None
            try:
                job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if job.process.returncode is None:
                print(f"[runner] job #{job.idx} (pid {job.process.pid}) has not exited {wait_s:.0f}s after SIGKILL; "
                      "left behind", file=sys.stderr, flush=True)

    def _interrupt(self, running: dict[int, _Job], how: str = "Ctrl-C") -> list[JobReturn]:
        """Give running jobs `grace_s` to record themselves as interrupted (a second Ctrl-C: stop
        them now), then stop them, record what they left, and say where it all is. `how`: what
        stopped the sweep, Ctrl-C or SIGTERM; the jobs get the same signal, and say it."""
        # A job that had already ended by itself (killed, crashed) died; it was not interrupted.
        ended = {job.idx: job.process.returncode for job in running.values()}  # type: ignore[union-attr]
        # ... unless the sweep's own SIGTERM (sent to its whole group) ended it during its imports.
        stopped_codes = (None, 130, -signal.SIGINT) + ((-signal.SIGTERM,) if how == "SIGTERM" else ())
        second = "Ctrl-C again" if how == "Ctrl-C" else "Ctrl-C (SIGINT)"
        began = time.monotonic()
        deadline = began + self.grace_s
        forward_at = began + 0.5  # a terminal's Ctrl-C (a scheduler's SIGTERM) reaches the jobs themselves too
        said = again = False
        forwarded: set[int] = set()
        while True:  # each step below may be retaken: an echo of the first SIGINT resumes them
            try:
                if not said:
                    print(f"\n[runner] interrupted ({how}): waiting up to {self.grace_s:.0f}s for {len(running)} running "
                          f"job(s) to record what they measured ({second}: stop now)", file=sys.stderr, flush=True)
                    said = True
                time.sleep(max(0.0, forward_at - time.monotonic()))
                for job in running.values():
                    assert job.process is not None
                    if job.process.returncode is None and job.idx not in forwarded:
                        job.process.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGINT)
                    forwarded.add(job.idx)
                for job in running.values():
                    assert job.process is not None
                    try:
                        job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        pass  # stopped below
                break
            except KeyboardInterrupt:
                # `timeout -s INT` signals the launcher, then its whole group, the launcher again:
                # one interrupt, not a second Ctrl-C (it had stopped the jobs at once, their
                # finished repeats lost). A person's second Ctrl-C comes later than this.
                if time.monotonic() - began < SAME_INTERRUPT_S:
                    continue
                again = True
                break
        # From here on, further Ctrl-Cs wait until what the jobs left is recorded and said.
        with _ctrl_c_deferred():
            if again:
                print("[runner] stopping the running job(s) now", file=sys.stderr, flush=True)
            self._stop(running)  # those still running past the grace (or a second Ctrl-C)
            returns = [self._finish(job, job.process.returncode,
                                    interrupted=ended[job.idx] in stopped_codes, how=how)
                       for job in running.values()]
            sweep_dir = self.config.hydra.sweep.dir if self.config is not None else "?"
            print(
                f"[runner] sweep interrupted; finished results are kept in {sweep_dir}\n"
                f"[runner] table: python -m runner.report {sweep_dir}\n"
                f"[runner] resume: the same command with resume=true hydra.sweep.dir={sweep_dir}",
                file=sys.stderr,
                flush=True,
            )
        return returns

    # --- the sweep ------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        if self.fork_server and self.context is None:
            try:
                self.context = fork_context()  # its imports run while the jobs are prepared
            except Exception as exc:  # noqa: BLE001 - any failure: the jobs start afresh instead
                print(f"[runner] warning: no fork server ({exc}); each job starts a fresh interpreter", flush=True)
        slots = resolve_devices(self.devices)
        _check_grace(self.grace_s)
        parallel = len(slots) > 1
        shares, cut = cpu_shares(len(slots), near=nearest_cpus(slots)) if parallel and self.pin_cpus else (None, "")
        if parallel and self.pin_cpus and shares is None:
            print("[runner] warning: fewer CPU cores than devices; jobs are not pinned to cores", flush=True)
        share_of = dict(zip(slots, shares or [None] * len(slots), strict=True))
        jobs = []
        for i, overrides in enumerate(job_overrides):
            try:
                jobs.append(self._prepare(overrides, initial_job_idx + i))
            except Exception as exc:
                if type(exc).__module__.split(".")[0] not in ("hydra", "omegaconf"):
                    raise  # not the config: a bug, to be seen with its traceback
                from runner.errors import condense

                raise _refused(condense(exc), initial_job_idx + i, overrides, self.launched) from None
        typed = _task_overrides(self.config)  # unresolved: ${hydra:job.num} resolves in a job only
        _refuse_swept_sweeps(self.config, jobs, self.launched)
        _refuse_bad_jobs(jobs, self.launched, one_gpu_each=slots != [None], typed=typed)
        _refuse_shared_folders(jobs, self.launched)
        if OmegaConf.select(self.config, "hydra.sweeper.max_batch_size") is None:  # every job is in this batch
            _refuse_leftover_jobs(jobs, self.launched)
        self._refuse_bad_targets(jobs)
        _hold_sweep_folder(Path(str(self.config.hydra.sweep.dir)))  # last: a refused launch leaves no trace
        from runner.record import sweep_started

        sweep_started()
        self.launched += len(jobs)
        total = len(jobs)
        where = f"on devices {', '.join(map(str, slots))}, one job per device at a time" if parallel else "one at a time"
        if shares:
            where += f"; each job pinned to its device's share of the cores ({cut})"
        how = "forked from a preloaded server" if self.context is not None else "a fresh interpreter each"
        print(f"[runner] launching {total} job(s), each in its own process ({how}), {where}", flush=True)

        scheduler = SlotScheduler(slots)
        pending: deque = deque(jobs)
        running: dict[int, _Job] = {}  # pid -> job
        returns: dict[int, JobReturn] = {}
        start = time.monotonic()
        started = 0
        kept_s = 0.0  # wall time of the jobs whose earlier results were kept (resume=true)
        with _sigterm_as_ctrl_c() as stopped_by:  # SIGTERM stops the sweep as a Ctrl-C does
            try:
                while pending or running:
                    for job, slot in scheduler.assign(pending):
                        started += 1
                        label = " ".join(job.overrides)
                        device = f" on device {slot}" if slot is not None else ""
                        print(f"[runner] job {started}/{total} started: #{job.idx} {label}{device}", flush=True)
                        with _ctrl_c_deferred():  # a job half sent would die with a traceback, or be lost
                            self._start(job, slot, share_of[slot], quiet=parallel, devices=min(len(slots), total))
                            assert job.process is not None
                            running[job.process.pid] = job
                    job = _wait_any(running)
                    assert job.process is not None
                    with _ctrl_c_deferred():  # a job that ended is recorded whole; a Ctrl-C now waits for that
                        running.pop(job.process.pid)
                        scheduler.release(job.slot)
                        code = job.process.returncode
                        # A job the sweep's SIGTERM ended before it took SIGTERM as an interrupt
                        # (its imports): stopped with the sweep, not a crash.
                        stopped = code == -signal.SIGTERM and stopped_by[0] == "SIGTERM"
                        returns[job.idx] = self._finish(job, code, interrupted=stopped, how=stopped_by[0])
                    status_text = returns[job.idx].return_value.get("status", "?")
                    job_s = time.monotonic() - job.started
                    if job.kept:
                        status_text = "kept (ok, resume=true)"
                        kept_s += job_s
                    done = len(returns)
                    elapsed = time.monotonic() - start
                    # The pace of the jobs that ran: a kept result takes a fraction of a second,
                    # and counted in it made a resumed sweep's "left" read a fraction of the truth.
                    measured = done - sum(1 for j in jobs if j.kept)
                    left = max(elapsed - kept_s / len(slots), 0.0) / measured * (total - done) if measured else None
                    print(
                        f"[runner] job {done}/{total} #{job.idx}: {status_text} in {job_s:.1f}s | elapsed {_clock(elapsed)}"
                        + (f", about {_clock(left)} left" if total > done and left is not None else ""),
                        flush=True,
                    )
            except BaseException as exc:
                if not isinstance(exc, KeyboardInterrupt):
                    self._stop(running)  # never leave jobs running behind a broken launcher
                    raise
                self._interrupt(running, stopped_by[0])
                raise
        return [returns[job.idx] for job in jobs]


def _refuse_swept_sweeps(config: DictConfig, jobs: list, earlier_jobs: int) -> None:
    """A job whose preset defines a sweep of its own (hydra.sweeper.params) that this sweep's
    config does not: `-m experiment=sweep_modes,sweep_batch` ran one default job per preset,
    labelled with the preset's name, and dropped both sweeps without a word."""
    def params(cfg: DictConfig) -> Any:
        node = OmegaConf.select(cfg, "hydra.sweeper.params")
        return OmegaConf.to_container(node, resolve=False) if node is not None else {}

    base = params(config)
    for job in jobs:
        own = params(job.config)
        if own != base:
            swept = " ".join(f"{k}={v}" for k, v in own.items() if base.get(k) != v)
            raise _refused(f"its config defines a sweep of its own ({swept}), which a sweep over presets does not run: "
                           "run that preset alone, with -m and no other value for its group",
                           job.idx, job.overrides, earlier_jobs)


def _refuse_bad_jobs(jobs: list, earlier_jobs: int, one_gpu_each: bool = False, typed: Sequence[str] = ()) -> None:
    """Every job's config is checked before any job of the batch starts: a typo in one value of
    a long sweep is one line and exit 2 now, not a failed job after the others have run. The
    checks need no machine (what a device allows is settled in each job). The CLI then puts
    the sweep folder back as the launch found it (runner.record.undo_pending_sweep)."""
    from hydra.core.hydra_config import HydraConfig

    from runner.errors import ConfigError
    from runner.record import RESULT_FILE, config_origin, folder_conflict, read_result, resume_changes
    from runner.spec import check_file_booleans, check_output_overrides, check_overrides, validate

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:  # as typed: the jobs' overrides are written back from what Hydra read (1.10 as 1.1)
        check_output_overrides(list(typed))
    except ConfigError as exc:
        raise ConfigError(f"{exc} (no job was started)") from None
    try:
        for job in jobs:
            config = copy.deepcopy(job.config)
            with read_write(config), open_dict(config):
                del config["hydra"]  # what a job's task function receives
            hydra_config.set_config(job.config)  # ${hydra:...} resolves as in the job itself
            try:
                check_overrides(job.overrides)
                hydra_node = job.config.hydra
                check_file_booleans(hydra_node.runtime.choices, hydra_node.runtime.config_sources,
                                    hydra_node.job.config_name)
                validate(config)
                # A folder that holds another job's result (resume=true or not) is refused before
                # anything runs: never overwritten, nor listed in this sweep's table as failed.
                resume = bool(config.get("resume"))
                conflict = folder_conflict(job.output_dir, _task_overrides(job.config), resume,
                                           config_origin(job.config.hydra))
                if not conflict and resume:
                    # The same overrides, other settings (an edited model file, a changed preset):
                    # refused in the job itself, it had left .hydra/, multirun.yaml and the table
                    # rewritten around results they no longer described.
                    task = OmegaConf.to_container(config, resolve=True, enum_to_str=True)
                    conflict = resume_changes(job.output_dir, read_result(job.output_dir / RESULT_FILE), task)
                if conflict:
                    raise ConfigError(conflict)
                device = str(config.get("device") or "")
                index = re.fullmatch(r"cuda:(\d+)", device)
                if one_gpu_each and index and int(index.group(1)) != 0:
                    # The job's process sees its own GPU alone, as cuda:0: cuda:1 would not exist
                    # there, or would be another job's GPU.
                    raise ConfigError(f"device={device}: with hydra.launcher.devices each job sees only its own GPU, "
                                      "as cuda:0; use device=cuda (or auto)")
            except ConfigError as exc:
                raise _refused(str(exc), job.idx, job.overrides, earlier_jobs) from None
    finally:
        hydra_config.cfg = before


def _refuse_shared_folders(jobs: list, earlier_jobs: int) -> None:
    """Two jobs of a batch that would write into one folder (a hydra.sweep.subdir that does not
    tell them apart) are refused: the second would overwrite the first's result."""
    first: dict[Path, Any] = {}
    for job in jobs:
        other = first.setdefault(job.output_dir.resolve(), job)
        if other is not job:
            raise _refused(f"sweep jobs #{other.idx} and #{job.idx} would both write into {job.output_dir}: make "
                           "hydra.sweep.subdir tell the jobs apart, e.g. hydra.sweep.subdir=${hydra.job.num} (the "
                           "default)", job.idx, job.overrides, earlier_jobs)


def _refuse_leftover_jobs(jobs: list, earlier_jobs: int) -> None:
    """A sweep into a folder where an earlier, longer sweep left results of jobs this one does
    not have is refused: the table, built from the folder, would list them as this sweep's."""
    from runner.errors import ConfigError
    from runner.record import RESULT_FILE

    if not jobs or any(job.output_dir.name != str(job.idx) for job in jobs):
        return  # folders not named by job number (hydra.sweep.subdir changed): nothing to tell apart
    sweep_dir = jobs[0].output_dir.parent
    if any(job.output_dir.parent != sweep_dir for job in jobs):
        return
    last = earlier_jobs + len(jobs) - 1
    try:
        extra = sorted(int(p.name) for p in sweep_dir.iterdir()
                       if p.name.isdigit() and int(p.name) > last and (p / RESULT_FILE).exists())
    except OSError:
        return
    if extra:
        shown = ", ".join(f"#{n}" for n in extra[:5]) + (", ..." if len(extra) > 5 else "")
        raise ConfigError(f"hydra.sweep.dir={sweep_dir} holds results of job(s) {shown} from an earlier sweep, beyond "
                          f"this sweep's {last + 1}: its table would list them as its own; use another "
                          "hydra.sweep.dir, or remove them (no job was started)")


SWEEP_LOCK = ".runner_sweep.pid"


def _hold_sweep_folder(folder: Path) -> None:
    """One sweep at a time in a folder: two at once overwrote each other's results and tables
    (each checks the folder at launch and as a job starts, not as the other writes). The
    folder holds the sweep's pid while it runs; a pid whose process is gone (killed) is stale."""
    from runner.errors import ConfigError

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SWEEP_LOCK
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():  # a later batch of this sweep (hydra.sweeper.max_batch_size)
                return
            if pid > 0 and _alive(pid):
                raise ConfigError(f"hydra.sweep.dir={folder}: another sweep (pid {pid}) is running into this folder; "
                                  "wait for it to end, or name another folder") from None
            path.unlink(missing_ok=True)  # its sweep ended without removing it
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        atexit.register(_release_sweep_folder, path)
        return


def _release_sweep_folder(path: Path) -> None:
    try:
        if int(path.read_text().strip() or 0) == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: alive, someone else's
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _refused(reason: str, idx: int, overrides: Sequence[str], earlier_jobs: int) -> Exception:
    """The one line of a sweep refused at job `idx`, with what ran before it."""
    from runner.errors import ConfigError

    ran = f"{earlier_jobs} earlier job(s) ran; none of this batch was started" if earlier_jobs else "no job was started"
    said = " ".join(re.sub(r"\\(.)", r"\1", o) for o in overrides)  # as typed: Hydra's sweeper wrote cuda\:1
    return ConfigError(f"{reason} (sweep job #{idx}: {said}; {ran})")


def _task_overrides(config: DictConfig) -> list[str]:
    """The job's overrides as its result records them."""
    return [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task, resolve=False)]


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Any:
    """While the sweep runs, SIGTERM (`kill`, `timeout`, a scheduler's cancel) is a Ctrl-C: the
    running jobs record what they measured and stop, instead of going on, orphaned, beside
    whatever runs next. Sent on as SIGINT, it waits where a Ctrl-C waits (`_ctrl_c_deferred`).
    Yields a one-item list: what stopped the sweep ("SIGTERM" once one came)."""
    stopped_by = ["Ctrl-C"]
    if threading.current_thread() is not threading.main_thread():
        yield stopped_by
        return

    def terminated(signum: int, frame: Any) -> None:
        if stopped_by[0] == "SIGTERM":  # `timeout` sends it twice (to the launcher, then to its group):
            return  # only a Ctrl-C stops the jobs at once, never a repeated SIGTERM
        stopped_by[0] = "SIGTERM"
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            # Started in the background (`runner -m ... &` in a script): a SIGINT sent to itself
            # would be dropped, and the sweep ran on past `kill` and `timeout`. Raised here, or
            # where a Ctrl-C held back would arrive.
            if _deferred[0]:
                _deferred[1] = True
                return
            raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield stopped_by
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Any:
    """Hold SIGINT back (blocked: it stays pending) while a job, or the fork server, is started;
    a Ctrl-C meanwhile arrives right after (where the launcher has other threads, at one of
    them, still as KeyboardInterrupt), with the job among those the launcher interrupts."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    _deferred[0] += 1
    try:
        yield
    finally:
        # The count first: a Ctrl-C held back raises KeyboardInterrupt as soon as SIGINT is
        # unblocked, and one raised before the count went down left the section "open" for
        # good (a later SIGTERM, SIGINT ignored, was then held back forever).
        _deferred[0] -= 1
        terminated = not _deferred[0] and _deferred[1]  # a SIGTERM taken for a Ctrl-C while SIGINT is ignored
        if terminated:
            _deferred[1] = False
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if terminated:
            raise KeyboardInterrupt


# [sections holding Ctrl-C back now, a SIGTERM held back meanwhile (SIGINT ignored)]
_deferred: list = [0, False]


def _wait_any(running: dict[int, _Job]) -> _Job:
    """Block until one of these jobs' processes ends (and only these: a sentinel per job)."""
    by_fd = {job.process.sentinel: job for job in running.values()}
    ready, _, _ = select.select(list(by_fd), [], [])
    job = by_fd[ready[0]]
    assert job.process is not None
    job.process.wait()
    return job


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
