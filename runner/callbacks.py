"""Hydra callbacks: the table at the end of every sweep, built from the files the jobs wrote
(so it is the same with the basic, joblib, submitit or runner launcher)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReport(Callback):
    def __init__(self, plots: bool = True) -> None:
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.report import collect, failures, text_table, write_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        rows = collect([sweep_dir])
        if not rows:
            print(f"sweep: no job results under {sweep_dir}")
            return
        written = write_report(rows, sweep_dir, plots=self.plots)
        print()
        print(f"sweep: {len(rows)} jobs in {sweep_dir}")
        print(text_table(rows))
        print(f"written: {', '.join(p.name for p in written)}")
        bad = failures(rows)
        if bad:
            print(f"sweep: {len(bad)} of {len(rows)} jobs did not end ok: "
                  + ", ".join(f"#{r.job} {r.status}" for r in bad))
            # Hydra turns callback exceptions into warnings; only SystemExit sets the exit code.
            raise SystemExit(1)
