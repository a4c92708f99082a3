"""One sweep job in its own process: `python -m hydra_plugins.runner_launcher.worker`, with the
pickled job (Hydra context, task function, composed config, Hydra's global state) on stdin."""

from __future__ import annotations

import sys


def main() -> int:
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    hydra_context, task_function, config, singleton_state = cloudpickle.loads(sys.stdin.buffer.read())
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
    except KeyboardInterrupt:  # Ctrl-C before the job started: nothing to record
        sys.exit(130)
