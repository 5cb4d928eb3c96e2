"""``EpsilonFinderCallback`` for the Hugging Face ``Trainer``: the ε range of its optimizer while it trains.

>>> from epsfinder.integrations.transformers import EpsilonFinderCallback  # doctest: +SKIP
>>> finder = EpsilonFinderCallback(out_dir="runs/eps")                     # doctest: +SKIP
>>> Trainer(model=model, args=args, train_dataset=ds, callbacks=[finder]).train()  # doctest: +SKIP
>>> finder.result.lower, finder.result.upper                               # doctest: +SKIP

At ``on_train_begin`` the callback attaches an :class:`~epsfinder.EpsilonProbe` to the Trainer's optimizer (the
torch optimizer inside accelerate's wrapper). When the optimizer does not exist yet (some set-ups create it
lazily), the probe attaches at the first ``on_step_end`` and starts counting from ``state.global_step``. One epoch
is ``ceil(len(train_dataloader) / gradient_accumulation_steps)`` optimizer steps, as the Trainer counts them.

After each snapshot the metrics ``epsfinder/eps_lower``, ``epsfinder/eps_upper``, ``epsfinder/raw_lower``,
``epsfinder/raw_upper`` and ``epsfinder/fraction_above_eps`` (share of ``A`` above the optimizer's current ε) are
appended to ``state.log_history`` (so they land in ``trainer_state.json``) with the step, and kept in
:attr:`EpsilonFinderCallback.history`. For TensorBoard or W&B histograms, call
:func:`epsfinder.integrations.tensorboard.log_tensorboard` or :func:`epsfinder.integrations.wandb.log_wandb`
on :attr:`EpsilonFinderCallback.result`.

At the end of the first epoch ``out_dir/result.json`` (and ``report.html`` when matplotlib is installed) is written;
with ``stop_after_first_epoch=True`` training then stops, else the probe keeps watching and the files are rewritten
at ``on_train_end``. Under ``torchrun`` every process probes (the counts are combined across ranks, see
:mod:`epsfinder._distributed`); only the main process writes and logs. Needs
``pip install 'epsfinder[integrations]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from epsfinder.integrations import _epoch_steps, _finder_dir, _FinderCallback, _require

__all__ = ["EpsilonFinderCallback"]

_transformers = _require("transformers", "epsfinder.integrations.transformers")
TrainerCallback = _transformers.TrainerCallback


def _steps_per_epoch(args: Any, train_dataloader: Any) -> int | None:
    try:
        batches = len(train_dataloader)
    except TypeError:  # an iterable dataset: no epoch length
        return None
    if batches < 1:
        return None
    return _epoch_steps(batches, getattr(args, "gradient_accumulation_steps", 1))


class EpsilonFinderCallback(_FinderCallback, TrainerCallback):
    """Estimate ε's search range while the Hugging Face ``Trainer`` trains.

    Args:
        out_dir: where to write ``result.json`` and ``report.html`` (default: ``args.output_dir/epsfinder``).
        schedule: step count → bool (default: four snapshots per epoch, the last at the end of each epoch).
        method: ``"histogram"`` (streaming bins, default) or ``"paper"`` (exact sort, slower).
        eps: the ε whose adaptability (share of ``A`` above it) to log; default: the optimizer's current ε.
        log: log the metrics after each snapshot, and the range at the end.
        stop_after_first_epoch: stop training at the end of the first epoch, once the result is written.
        distributed: passed to :class:`~epsfinder.EpsilonProbe` (``"auto"`` detects DDP, FSDP, ZeRO).
        report: also write ``report.html`` (needs matplotlib; never fails the run).

    Attributes:
        probes: the attached probes (one).
        history: the logged metrics, one dict per step with a new snapshot.
    """

    _run_verb = "train"

    # ------------------------------------------------------------------ hooks
    def _attach(self, args: Any, state: Any, kwargs: dict[str, Any], *, start_step: int) -> bool:
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            return False
        spe = _steps_per_epoch(args, kwargs.get("train_dataloader"))
        self._finder.attach([optimizer], kwargs.get("model"), spe, start_step=start_step)
        return True

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._attach(args, state, kwargs, start_step=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.probes and self._attach(args, state, kwargs, start_step=state.global_step):
            probe = self.probes[0]
            if probe.schedule(probe.steps):  # the step just taken was scheduled: take it now
                probe.snapshot()
        metrics = self._finder.new_metrics()
        if metrics and self._finder.log and state.is_world_process_zero:
            state.log_history.append({**metrics, "step": state.global_step})

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._finder.end_first_epoch(self._default_dir(args), is_main=state.is_world_process_zero):
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finder.end_training(self._default_dir(args), is_main=state.is_world_process_zero)

    @staticmethod
    def _default_dir(args: Any) -> Path | None:
        return _finder_dir(getattr(args, "output_dir", None))
