"""One sweep job in its own process: `python -m hydra_plugins.runner_launcher.worker`, with the
pickled job (Hydra context, task function, composed config, Hydra's global state) on stdin."""

from __future__ import annotations

import os
import sys


def main() -> int:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    # The heavy imports first: a spare process does them while the job before it runs, then
    # waits here for its own job.
    import runner.app  # noqa: F401

    payload = sys.stdin.buffer.read()
    job_cpus = os.environ.pop("RUNNER_SPARE_JOB_CPUS", None)
    if job_cpus:  # a spare imported on the one core kept for spares; its job runs on the others
        os.sched_setaffinity(0, {int(c) for c in job_cpus.split(",")})
    hydra_context, task_function, config, singleton_state = cloudpickle.loads(payload)
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


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while importing or waiting for a job: nothing to record
        sys.exit(130)
