"""``EpsilonFinderCallback`` for Lightning: the ε range of the optimizer(s) of a ``Trainer.fit`` run.

>>> from epsfinder.integrations.lightning import EpsilonFinderCallback     # doctest: +SKIP
>>> finder = EpsilonFinderCallback(out_dir="runs/eps")                    # doctest: +SKIP
>>> lightning.pytorch.Trainer(max_epochs=3, callbacks=[finder]).fit(model, loader)  # doctest: +SKIP
>>> finder.result.lower, finder.result.upper                              # doctest: +SKIP

When training starts (Lightning's ``on_train_start``: the optimizers and the number of batches are known then)
the callback attaches an :class:`~epsfinder.EpsilonProbe` to each optimizer of ``trainer.optimizers``, with one
epoch = ``ceil(trainer.num_training_batches / accumulate_grad_batches)`` optimizer steps. After every snapshot it
logs ``epsfinder/eps_lower``, ``epsfinder/eps_upper``, ``epsfinder/raw_lower``, ``epsfinder/raw_upper`` and
``epsfinder/fraction_above_eps`` (the share of the adaptive term above the optimizer's current ε) to every logger
of the trainer, at the trainer's global step. At the end of the first epoch it writes ``out_dir/result.json``
(and ``report.html`` when matplotlib is installed); with ``stop_after_first_epoch=True`` it then detaches and
stops the run (an ε-finder run, like an LR finder), else it keeps probing and rewrites the files at the end of
``fit`` (the result is still the end of the first epoch, the paper's snapshot; the files hold every snapshot).

Under DDP, FSDP and the other strategies every rank probes (the counts are combined across ranks, see
:mod:`epsfinder._distributed`); only global rank 0 logs and writes files.

The callback subclasses ``lightning.pytorch.Callback`` and, when installed, ``pytorch_lightning.Callback`` too,
so either trainer accepts it. It needs ``pip install 'epsfinder[integrations]'``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from epsfinder.estimate import EpsilonRange
from epsfinder.integrations import INSTALL_HINT, _epoch_steps, _finder_dir, _FinderCallback

__all__ = ["EpsilonFinderCallback"]


def _callback_bases() -> tuple[type, ...]:
    bases = []
    for module in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(__import__(module, fromlist=["Callback"]).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError(
            "epsfinder.integrations.lightning needs Lightning ('lightning' or 'pytorch_lightning'), which could not "
            f"be imported; install it with {INSTALL_HINT}"
        )
    return tuple(bases)


_BASES = _callback_bases()


def _steps_per_epoch(trainer: Any) -> int | None:
    batches = getattr(trainer, "num_training_batches", None)
    if batches is None or not math.isfinite(batches) or batches < 1:
        return None
    return _epoch_steps(int(batches), getattr(trainer, "accumulate_grad_batches", 1))


class EpsilonFinderCallback(_FinderCallback, *_BASES):  # type: ignore[misc]
    """Estimate ε's search range while Lightning trains.

    Args:
        out_dir: where to write ``result.json`` and ``report.html`` (default: ``trainer.default_root_dir/epsfinder``;
            the results of a second optimizer go to ``out_dir/optimizer1`` and so on).
        schedule: step count → bool (default: four snapshots per epoch, the last at the end of each epoch).
        method: ``"histogram"`` (streaming bins, default) or ``"paper"`` (exact sort, slower).
        eps: the ε whose adaptability (share of ``A`` above it) to log; default: the optimizer's current ε.
        log: log the metrics after each snapshot, and the range at the end.
        stop_after_first_epoch: stop training at the end of the first epoch, once the result is written.
        distributed: passed to :class:`~epsfinder.EpsilonProbe` (``"auto"`` detects DDP, FSDP, ZeRO).
        report: also write ``report.html`` (needs matplotlib; never fails the run).

    Attributes:
        probes: the attached probes, one per supported optimizer.
        history: the logged metrics, one dict per step with a new snapshot.
    """

    @property
    def results(self) -> list[EpsilonRange]:
        """One :class:`~epsfinder.EpsilonRange` per probed optimizer that took a snapshot."""
        return self._finder.results()

    # ------------------------------------------------------------------ hooks
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._finder.attach(list(trainer.optimizers), pl_module, _steps_per_epoch(trainer))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        metrics = self._finder.new_metrics()
        if metrics and self._finder.log and trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self._finder.end_first_epoch(self._default_dir(trainer), is_main=trainer.is_global_zero):
            trainer.should_stop = True

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finder.end_training(self._default_dir(trainer), is_main=trainer.is_global_zero)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._finder.detach()

    @staticmethod
    def _default_dir(trainer: Any) -> Path | None:
        return _finder_dir(getattr(trainer, "default_root_dir", None))
