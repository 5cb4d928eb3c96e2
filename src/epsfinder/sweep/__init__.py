"""Sweeps over (lr, ε, β2) on Optuna: every grid point exactly once, any number of workers, resumable.

>>> from epsfinder.sweep import run_sweep
>>> r = run_sweep("digits-mlp", optimizer="adam", lr="1e-3:1e-1", eps="auto", epochs=3,
...               out="runs/digits-adam")                                  # doctest: +SKIP
>>> r.best                                                                 # doctest: +SKIP

This package is the only part of epsfinder that imports Optuna, and only when a sweep runs
(``pip install 'epsfinder[sweep]'``). See ``docs/sweeps.md`` for storages, workers and the exactly-once protocol.
"""

from __future__ import annotations

from epsfinder.sweep._run import TRIALS_CSV_COLUMNS, SweepError, SweepResult, grid_points, run_sweep, sgd_equivalent_lr
from epsfinder.sweep._spec import log_range, paper_eps_grid, paper_lr_grid, parse_values
from epsfinder.sweep._storage import redact

__all__ = [
    "TRIALS_CSV_COLUMNS",
    "SweepError",
    "SweepResult",
    "grid_points",
    "log_range",
    "paper_eps_grid",
    "paper_lr_grid",
    "parse_values",
    "redact",
    "run_sweep",
    "sgd_equivalent_lr",
]
