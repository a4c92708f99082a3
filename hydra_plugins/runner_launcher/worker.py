"""One sweep job in its own process.

The launcher forks each job from a server process that has imported torch, Hydra and the
runner once (multiprocessing's forkserver, with those modules preloaded): a job starts in
milliseconds instead of paying the imports again, and still runs in a process of its own, so a
crash costs that job alone. The server never touches CUDA; each job initializes it itself.

`run_forked` is the job's entry there. `python -m hydra_plugins.runner_launcher.worker` runs the
same job with the pickled payload on stdin instead (a plain subprocess)."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
from typing import Any, Optional

# What the server imports once, before it forks any job: the expensive part of a job's start.
PRELOAD = ["torch", "hydra_plugins.runner_launcher.worker", "runner.app", "runner.job"]


def run_payload(data: bytes) -> int:
    """Run the job pickled in `data` (Hydra context, task function, composed config, Hydra's
    global state, the sweep's command line); its exit code."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    hydra_context, task_function, config, singleton_state, argv = cloudpickle.loads(data)
    sys.argv = list(argv)  # the sweep's command, for the job's record, not this worker's own
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(config)
    try:
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except KeyboardInterrupt:  # the job recorded itself as interrupted; the launcher tells the rest
        return 130
    return 0 if ret.status == JobStatus.COMPLETED else 1


def check_targets(targets: list[str], answer: Any) -> None:
    """In a process forked from the server: for each model target of a sweep, the one-line
    error its jobs would end with, or None. A target in a package the server has imported
    (torch, the runner) is located in full; in another one (transformers, a project's own),
    only the package is looked for, not imported: its import can take seconds (transformers'
    models: 7 s on the GPU host), which the sweep would pay once more before any job, and a
    misspelt name inside it still fails its own job, in one line."""
    import importlib.util

    from runner.build import target_error

    def error(target: str) -> Optional[str]:
        package = target.partition(".")[0]
        try:
            if package in sys.modules or importlib.util.find_spec(package) is None:
                return target_error(target)
        except (ImportError, ValueError):  # a name find_spec refuses: locating it says why
            return target_error(target)
        return None

    try:
        answer.send([error(target) for target in targets])
    finally:
        answer.close()


def run_forked(data: bytes, env: dict[str, str], cpus: Optional[list[int]], console: Optional[str]) -> None:
    """A job's process, forked from the server: take the job's environment, cores and console,
    then run it. The server imported torch before this job's environment was known, so what
    torch reads at import (the thread count) is set here explicitly."""
    import atexit
    import signal

    from runner.cli import keep_lost_interrupts

    code = 130
    try:
        # Ctrl-C reaches the job as KeyboardInterrupt. The server runs with SIGINT blocked (see
        # fork_context): a Ctrl-C held since the fork arrives at the unblock, inside this try.
        # Unless the sweep itself ignores SIGINT (started in the background by a shell): then
        # its jobs do too, as a fresh interpreter would.
        ignored = env.get("RUNNER_SIGINT_IGNORED") == "1"
        signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
        keep_lost_interrupts()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if console is not None:  # parallel jobs: each one's output in its own folder
            fd = os.open(console, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)
        with contextlib.suppress(OSError, ValueError, AttributeError):  # a stderr with no file reports nothing
            faulthandler.enable()  # a crash in the model's code: where, on the job's console (its record says it died)
        os.environ.update(env)
        if cpus:
            import torch

            os.sched_setaffinity(0, cpus)
            torch.set_num_threads(len(cpus))
        code = run_payload(data)
        # The fork server ends its children with os._exit: run what a normal exit would
        # (logging's flush and close, torch's own cleanup), then flush.
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except KeyboardInterrupt:  # Ctrl-C before the job started or while it ended: nothing to record
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    import signal

    from runner.cli import keep_lost_interrupts

    keep_lost_interrupts()
    try:
        # Started while the launcher held SIGINT blocked (_ctrl_c_deferred): the mask passes to
        # a new process, and a job that kept it would never see Ctrl-C.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        sys.exit(run_payload(sys.stdin.buffer.read()))
    except KeyboardInterrupt:  # Ctrl-C before the job started: nothing to record
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second one must not end it by SIGINT (-2)
        sys.exit(130)
