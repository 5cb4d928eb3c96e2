"""Where people train: callbacks for Lightning and the Hugging Face Trainer, TensorBoard and W&B logging.

Each module imports its framework only when it is imported itself, so ``import epsfinder`` never needs them:

* :mod:`epsfinder.integrations.lightning`: ``EpsilonFinderCallback`` for ``lightning.pytorch.Trainer``
  (and ``pytorch_lightning.Trainer``).
* :mod:`epsfinder.integrations.transformers`: ``EpsilonFinderCallback``, a ``transformers.TrainerCallback``.
* :mod:`epsfinder.integrations.tensorboard`: ``log_tensorboard(writer, result, step)``.
* :mod:`epsfinder.integrations.wandb`: ``log_wandb(run, result, step)``.

Install them with ``pip install 'epsfinder[integrations]'``. The helpers below are shared by those modules.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from epsfinder.errors import UnsupportedOptimizerError
from epsfinder.estimate import METHODS, EpsilonRange, SnapshotRecord, round_to_power_of_ten
from epsfinder.histogram import LogHistogram
from epsfinder.probe import EpsilonProbe, Schedule, Snapshot

__all__: list[str] = []

log = logging.getLogger("epsfinder")

INSTALL_HINT = "pip install 'epsfinder[integrations]'"

#: What the logging functions accept: a result, one of ``probe.snapshots``, or one of ``result.snapshots``.
Source = EpsilonRange | Snapshot | SnapshotRecord


def _require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that names the feature and the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        raise ImportError(
            f"{feature} needs the '{top}' package, which could not be imported ({e}); install it with {INSTALL_HINT}"
        ) from e


def _unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a framework's wrapper (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``); a ``ZeroRedundancyOptimizer`` is kept (the probe handles it)."""
    seen = 0
    while seen < 8:
        seen += 1
        if type(optimizer).__name__ == "ZeroRedundancyOptimizer":
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            inner = getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer (or a wrapper of one), got {type(optimizer).__name__}")
    return optimizer


def _current_eps(source: Source, eps: float | None) -> float | None:
    if eps is not None:
        return float(eps)
    value = getattr(source, "hyperparameters", {}).get("eps")  # a SnapshotRecord keeps no hyperparameters
    if isinstance(value, (list, tuple)):  # e.g. Adafactor-style (eps1, eps2): the first is compared with A
        value = value[0] if value else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _percentiles(source: Source) -> list[tuple[float, float]]:
    """Each layer's (low, high) percentile; a :class:`SnapshotRecord` reads P2/P98 from its histograms."""
    if isinstance(source, SnapshotRecord):
        pairs = []
        for h in source.histograms.values():
            if h.positive:
                lo, hi = h.quantile([0.02, 0.98])
                pairs.append((float(lo), float(hi)))
        return pairs
    return [(ly.p_low, ly.p_high) for ly in source.layers]


def _bounds(source: Source) -> tuple[float, float, float, float] | None:
    """``(lower, upper, raw_lower, raw_upper)`` of a result, or of a snapshot by the same rule (Algorithm 2)."""
    if isinstance(source, EpsilonRange):
        return source.lower, source.upper, source.raw_lower, source.raw_upper
    usable = [(lo, hi) for lo, hi in _percentiles(source) if math.isfinite(lo) and math.isfinite(hi)]
    if not usable:
        return None
    raw_lower = min(lo for lo, _ in usable)
    raw_upper = max(hi for _, hi in usable)
    return round_to_power_of_ten(raw_lower), round_to_power_of_ten(raw_upper), raw_lower, raw_upper


def range_metrics(source: Source, *, eps: float | None = None, prefix: str = "epsfinder/") -> dict[str, float]:
    """The scalars every integration logs: the bounds, the raw percentiles and the share of ``A`` above ε.

    Args:
        source: a result, one of the probe's snapshots, or one of the result's snapshot records (whose bounds are
            read from their histograms at the 2nd and 98th percentiles).
        eps: the ε whose adaptability level to report (default: the optimizer's ε at the snapshot).
        prefix: prepended to every key.

    Returns:
        ``{prefix + "eps_lower": ..., "eps_upper", "raw_lower", "raw_upper", "eps", "fraction_above_eps"}`` (the
        last two only when an ε is known).
    """
    out: dict[str, float] = {}
    bounds = _bounds(source)
    if bounds is not None:
        for key, value in zip(("eps_lower", "eps_upper", "raw_lower", "raw_upper"), bounds):
            out[prefix + key] = float(value)
    e = _current_eps(source, eps)
    if e is not None and e > 0 and math.isfinite(e):
        total = LogHistogram.sum(_layer_histograms(source).values())
        out[prefix + "eps"] = e
        out[prefix + "fraction_above_eps"] = float(total.fraction_above(e))
    return out


def histogram_bins(
    hist: LogHistogram, bins_per_decade: int | None = 20, *, max_bins: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(edges, counts)`` of a histogram's non-empty span, from its own counts (no second binning of values).

    ``bins_per_decade=None`` gives the native bins (64 per octave); an integer sums native bins into that many
    log-spaced bins per decade (:meth:`LogHistogram.dense`). With ``max_bins``, the bins are coarsened further
    (fewer per decade) until there are at most that many. Empty histograms give empty arrays.
    """
    if bins_per_decade is not None and bins_per_decade < 1:
        raise ValueError(f"bins_per_decade must be a positive integer or None, got bins_per_decade={bins_per_decade}")
    edges, counts = hist.dense(bins_per_decade)
    if max_bins is not None and counts.size > max_bins:
        per = bins_per_decade or 200
        while counts.size > max_bins and per > 1:
            per = max(1, per * max_bins // (counts.size + 1))
            edges, counts = hist.dense(per)
        if counts.size > max_bins:
            raise ValueError(f"cannot fit the histogram in max_bins={max_bins} bins even at 1 bin per decade")
    return edges, counts


def _layer_histograms(source: Source) -> dict[str, LogHistogram]:
    if isinstance(source, SnapshotRecord):
        return dict(source.histograms)
    return {ly.name: ly.histogram for ly in source.layers}


def _write_outputs(result: EpsilonRange, out_dir: str | os.PathLike[str], *, report: bool = True) -> Path:
    """Write ``out_dir/result.json`` and, when possible, ``out_dir/report.html`` (never fails on the report)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result.to_json(out / "result.json")
    if report:
        try:
            from epsfinder.report import write_report

            write_report(out, result=result)
        except (ImportError, AttributeError) as e:
            log.info("epsfinder: no report.html written (%s); result.json is in %s", e, out)
        except Exception as e:  # a figure failing must never stop training
            log.warning("epsfinder: writing report.html in %s failed: %r; result.json was written", out, e)
    return out


def _epoch_steps(batches: int, accumulate: Any) -> int:
    """Optimizer steps in an epoch of ``batches`` batches with ``accumulate`` gradient-accumulation steps."""
    return max(1, math.ceil(batches / max(1, int(accumulate or 1))))


def _finder_dir(root: str | os.PathLike[str] | None) -> Path | None:
    """The callbacks' default output folder, ``root/epsfinder`` (``None`` without a root)."""
    return None if root is None else Path(root) / "epsfinder"


def _summary_line(result: EpsilonRange) -> str:
    return f"epsfinder: {result.optimizer} ε range [{result.lower:.0e}, {result.upper:.0e}] at step {result.step}" + (
        f" (epoch {result.epoch:.2f})" if result.epoch is not None else ""
    )


class _Finder:
    """What both training-framework callbacks do: attach probes, log each new snapshot, write the result.

    The frameworks differ only in where they keep the optimizers, the model, the epoch length and the loggers.
    """

    def __init__(
        self,
        *,
        out_dir: str | os.PathLike[str] | None,
        schedule: Schedule | None,
        method: str,
        eps: float | None,
        log: bool,
        stop_after_first_epoch: bool,
        distributed: str | None,
        report: bool,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got method={method!r}")
        if eps is not None and not (eps > 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a positive finite float or None (the optimizer's ε), got eps={eps!r}")
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must map a step count to a bool (e.g. epsfinder.every(10)), got {schedule!r}")
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.schedule = schedule
        self.method = method
        self.eps = eps
        self.log = log
        self.stop_after_first_epoch = stop_after_first_epoch
        self.distributed = distributed
        self.report = report
        self.probes: list[EpsilonProbe] = []
        self.history: list[dict[str, float]] = []
        self._logged: list[int] = []
        self.first_epoch_written = False

    # ------------------------------------------------------------------ lifecycle
    def attach(
        self,
        optimizers: list[Any],
        model: torch.nn.Module | None,
        steps_per_epoch: int | None,
        *,
        start_step: int = 0,
    ) -> None:
        """One probe per supported optimizer; an unsupported one is skipped with a warning unless none is left."""
        if self.probes:
            return
        errors = []
        for i, opt in enumerate(optimizers):
            try:
                probe = EpsilonProbe(
                    _unwrap_optimizer(opt),
                    model=model,
                    schedule=self.schedule,
                    steps_per_epoch=steps_per_epoch,
                    method=self.method,
                    distributed=self.distributed,
                )
            except UnsupportedOptimizerError as e:
                errors.append(e)
                log.warning("epsfinder: optimizer %d (%s) is not probed: %s", i, type(opt).__name__, e)
                continue
            probe.steps = start_step
            self.probes.append(probe)
            self._logged.append(-1)
        if not self.probes:
            if errors:
                raise errors[0]
            raise ValueError("the trainer has no optimizer to probe; attach the callback to a training run")
        for p in self.probes:
            log.debug("epsfinder: attached %r", p)

    def detach(self) -> None:
        for p in self.probes:
            p.detach()

    def end_first_epoch(self, default_dir: str | os.PathLike[str] | None, *, is_main: bool) -> bool:
        """Write the result once, at the end of the first epoch; ``True`` when training should stop now."""
        if self.first_epoch_written or not self.attached:
            return False
        self.first_epoch_written = True
        self.write(default_dir, is_main=is_main)
        if self.stop_after_first_epoch:
            self.detach()
            return True
        return False

    def end_training(self, default_dir: str | os.PathLike[str] | None, *, is_main: bool) -> None:
        """Rewrite the result when still probing (or when no epoch ended), then detach."""
        if self.attached or not self.first_epoch_written:
            self.write(default_dir, is_main=is_main)
        self.detach()

    @property
    def attached(self) -> bool:
        return any(p.attached for p in self.probes)

    # ------------------------------------------------------------------ per step
    def new_metrics(self) -> dict[str, float]:
        """Metrics of the snapshots taken since the last call (keys suffixed ``/opt{i}`` beyond one optimizer)."""
        out: dict[str, float] = {}
        for i, p in enumerate(self.probes):
            if not p.snapshots or p.snapshots[-1].step == self._logged[i]:
                continue
            snap = p.snapshots[-1]
            self._logged[i] = snap.step
            metrics = range_metrics(snap, eps=self.eps)
            if len(self.probes) > 1:
                metrics = {f"{k}/opt{i}": v for k, v in metrics.items()}
            out.update(metrics)
        if out:
            self.history.append({"step": float(max(self._logged)), **out})
        return out

    # ------------------------------------------------------------------ results
    def results(self) -> list[EpsilonRange]:
        return [p.result() for p in self.probes if p.snapshots]

    def write(self, default_dir: str | os.PathLike[str] | None, *, is_main: bool) -> list[Path]:
        """Write each probed optimizer's result (the first in the folder, the others in ``optimizer{i}/``)."""
        folder = self.out_dir if self.out_dir is not None else (None if default_dir is None else Path(default_dir))
        written: list[Path] = []
        for i, p in enumerate(self.probes):
            if not p.snapshots:
                log.warning("epsfinder: optimizer %d took no snapshot (%d steps); nothing to write", i, p.steps)
                continue
            result = p.result()
            if self.log and is_main:
                log.info("%s", _summary_line(result))
            if folder is None or not is_main:
                continue
            target = folder if i == 0 else folder / f"optimizer{i}"
            written.append(_write_outputs(result, target, report=self.report))
        return written


class _FinderCallback:
    """The framework-independent half of both ``EpsilonFinderCallback`` classes: arguments, state and result.

    Listed before the framework's callback base class, whose ``__init__`` it calls with no arguments.
    """

    #: The verb that ends the "not attached yet" message (``Trainer.fit`` or ``Trainer.train``).
    _run_verb = "fit"

    def __init__(
        self,
        out_dir: str | os.PathLike[str] | None = None,
        schedule: Schedule | None = None,
        method: str = "histogram",
        eps: float | None = None,
        log: bool = True,
        stop_after_first_epoch: bool = False,
        *,
        distributed: str | None = "auto",
        report: bool = True,
    ) -> None:
        super().__init__()
        self._finder = _Finder(
            out_dir=out_dir,
            schedule=schedule,
            method=method,
            eps=eps,
            log=log,
            stop_after_first_epoch=stop_after_first_epoch,
            distributed=distributed,
            report=report,
        )

    @property
    def probes(self) -> list[EpsilonProbe]:
        return self._finder.probes

    @property
    def history(self) -> list[dict[str, float]]:
        return self._finder.history

    @property
    def result(self) -> EpsilonRange:
        """The first optimizer's :class:`~epsfinder.EpsilonRange` (raises NoSnapshotError before any snapshot)."""
        if not self.probes:
            raise RuntimeError(
                f"the callback has not been attached yet: pass it to Trainer(callbacks=[...]) and {self._run_verb}"
            )
        return self.probes[0].result()
