"""epsfinder: find the search range of Adam's ε (and its kin) from gradient magnitude histograms.

Implements G. Silva and P. Rodriguez, "Fine-Tuning Adaptive Stochastic Optimizers: Determining the Optimal
Hyperparameter ε via Gradient Magnitude Histogram Analysis" (arXiv:2311.11532).

>>> import epsfinder
>>> probe = epsfinder.EpsilonProbe(optimizer, model=model)   # doctest: +SKIP
>>> ...train as usual...                                      # doctest: +SKIP
>>> r = probe.result(); r.lower, r.upper, r.grid()             # doctest: +SKIP
"""

from __future__ import annotations

from epsfinder._catalog import make_optimizer, optimizer_names
from epsfinder.dryrun import estimate_range
from epsfinder.errors import EpsfinderError, NoSnapshotError, UnsupportedOptimizerError
from epsfinder.estimate import EpsilonRange, LayerStats, Recommendation
from epsfinder.histogram import LogHistogram
from epsfinder.probe import EpsilonProbe, Snapshot, at_steps, every, log_spaced, per_epoch
from epsfinder.terms import AdaptiveTerm, register_term, supported_optimizers

__version__ = "0.1.0"

__all__ = [
    "AdaptiveTerm",
    "EpsfinderError",
    "EpsilonProbe",
    "EpsilonRange",
    "LayerStats",
    "LogHistogram",
    "NoSnapshotError",
    "Recommendation",
    "Snapshot",
    "UnsupportedOptimizerError",
    "__version__",
    "at_steps",
    "estimate_range",
    "every",
    "log_spaced",
    "make_optimizer",
    "optimizer_names",
    "per_epoch",
    "register_term",
    "supported_optimizers",
]
