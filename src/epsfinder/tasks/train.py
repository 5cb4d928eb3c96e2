"""Training loop and metrics for tasks: :func:`train_task` → :class:`TrainResult` (JSON-serialisable).

The loop is the plain one the paper uses: for each epoch, every batch of the task's loader does forward, loss,
backward, optional gradient-norm clipping, ``optimizer.step()``; after each epoch the learning rate follows the
preset's step decays (:class:`torch.optim.lr_scheduler.MultiStepLR`) and the task's metric is evaluated on its
test split. A non-finite loss stops the run (``diverged=True``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from epsfinder._progress import progress as progress_bar
from epsfinder._util import to_device

__all__ = ["TrainResult", "accuracy_of", "bleu_score", "perplexity_of", "train_task"]

log = logging.getLogger("epsfinder")


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def accuracy_of(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device | str = "cpu"
) -> float:
    """Share of correctly classified examples over ``(inputs, labels)`` batches, in [0, 1] (eval mode)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for inputs, labels in batches:
                inputs, labels = inputs.to(device), labels.to(device)
                correct += int(model(inputs).argmax(-1).eq(labels).sum())
                total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("accuracy_of got no examples")
    return correct / total


def perplexity_of(
    model: nn.Module, windows: Sequence[tuple[torch.Tensor, torch.Tensor]], *, device: torch.device | str = "cpu"
) -> float:
    """``exp`` of the mean cross-entropy over every target token of ``windows`` (eval mode, carried state).

    ``model(inputs, hidden, return_hidden=True)`` must return ``(logits [T, B, V], hidden)`` as
    :class:`~epsfinder.tasks.models.LSTMLanguageModel` does. Returns ``inf`` when the mean loss overflows ``exp``.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    hidden = None
    try:
        with torch.no_grad():
            for inputs, targets in windows:
                inputs, targets = inputs.to(device), targets.to(device)
                logits, hidden = model(inputs, hidden, return_hidden=True)
                total += float(F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                               reduction="sum"))
                count += targets.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("perplexity_of got no tokens")
    mean = total / count
    return math.exp(mean) if mean < 700 else math.inf


def bleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in [0, 100] of detokenised ``hypotheses`` against one reference each (sacrebleu defaults:
    13a tokenisation, exponential smoothing)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references; they must pair up")
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("BLEU needs sacrebleu: pip install sacrebleu (or 'epsfinder[tasks]')") from None
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


# ----------------------------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------------------------


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    return x


@dataclass
class TrainResult:
    """What one :func:`train_task` run did.

    Attributes:
        task: task name.
        optimizer: optimizer name.
        hyperparameters: ``lr``, ``eps``, ``beta2``, ``weight_decay`` (the values the optimizer actually used,
            class defaults included), ``epochs``, ``preset``, ``seed``, plus ``limit`` and ``max_steps``.
        metric, direction: the task's metric and whether larger is better.
        epochs: one record per finished epoch: ``{"epoch": 1-based, "train_loss", "metric", "wall_s", "steps",
            "lr"}``.
        best: best metric over the finished epochs (by ``direction``), None when none finished.
        diverged: True when a non-finite loss stopped the run; ``diverged_step`` is that step (1-based, global).
        wall_s: seconds for the whole run (building the task included).
        steps: optimizer steps taken.
        steps_per_epoch: batches per epoch.
        probe: with ``probe=True``: ``{"lower", "upper", "path"}`` of the ε range, else None.
    """

    task: str
    optimizer: str
    hyperparameters: dict[str, Any]
    metric: str
    direction: str
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    diverged: bool = False
    diverged_step: int | None = None
    wall_s: float = 0.0
    steps: int = 0
    steps_per_epoch: int | None = None
    probe: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (non-finite floats become None)."""
        return _finite_or_none(asdict(self))

    def to_json(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parent folders created, atomic replace); returns the path."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(data))

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> TrainResult:
        return cls.from_dict(json.loads(pathlib.Path(path).read_text(encoding="utf-8")))


def _best(values: Iterable[float | None], direction: str) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return None
    return max(finite) if direction == "maximize" else min(finite)


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _optimizer_hparams(opt: torch.optim.Optimizer) -> dict[str, Any]:
    group = opt.param_groups[0]
    out: dict[str, Any] = {"eps": group.get("eps"), "beta2": None}
    if "betas" in group:
        out["beta2"] = float(group["betas"][1])
    elif "alpha" in group and isinstance(opt, torch.optim.RMSprop):
        out["beta2"] = float(group["alpha"])
    if out["eps"] is not None:
        out["eps"] = float(out["eps"])
    return out


def train_task(
    task: Any,
    *,
    optimizer: str,
    lr: float,
    eps: float | None = None,
    beta2: float | None = None,
    epochs: int | None = None,
    preset: str = "cpu",
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    device: str | torch.device = "cpu",
    weight_decay: float | None = None,
    probe: bool = False,
    out: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    options: Mapping[str, Any] | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a task with one optimizer setting and evaluate its metric after every epoch.

    >>> r = train_task("digits-mlp", optimizer="adam", lr=1e-3, epochs=1, progress=False)  # doctest: +SKIP
    >>> r.best  # test accuracy, a fraction                                                  # doctest: +SKIP

    The optimizer is ``make_optimizer(optimizer, params, lr=lr, eps=eps, beta2=..., weight_decay=...)``. Unset
    values take the preset's: ``weight_decay`` (5e-4 classification, 1.2e-6 language modelling, 1e-4
    translation), β2 (the preset's ``betas[1]``: 0.999, or 0.98 for translation; it is also RMSprop's ``alpha``,
    as in the authors' code), ε the optimizer class default. ``'sgd'`` (SGD + momentum 0.9) takes neither ε nor
    β2. torch, numpy and ``random`` are seeded with ``seed`` before the task is built, so the same seed gives the
    same losses.

    Args:
        task: a task name (see :func:`epsfinder.tasks.list_tasks`) or a :class:`~epsfinder.tasks.Task`.
        optimizer: optimizer name (``epsfinder optimizers``).
        lr: learning rate α.
        eps: ε; None keeps the class default.
        beta2: β2; None takes the preset's.
        epochs: number of epochs; None takes the preset's (paper presets: 25–60 classification, 200 PTB,
            50 translation; cpu presets: 10, digits 20). The lr milestones stay the preset's.
        preset: ``"cpu"`` (sized for a laptop) or ``"paper"`` (the paper's sizes).
        seed: seeds torch, numpy, ``random``, the model's initialisation and the data order.
        data_dir: the data folder, when not installed at its default place (CIFAR-10 always needs one).
        limit: cap on training examples (images, tokens, sentence pairs) for smoke runs.
        device: where to train.
        weight_decay: coupled L2 (decoupled for AdamW); None takes the preset's.
        probe: attach an :class:`~epsfinder.EpsilonProbe` (``steps_per_epoch`` set) and, with ``out``, write
            ``out/result.json``; SGD has no adaptive term and is refused.
        out: folder for ``metrics.json`` (rewritten after every epoch) and ``result.json``.
        on_epoch: called as ``on_epoch(epoch_index, metric)`` after each epoch with the 0-based epoch index;
            exceptions propagate (e.g. ``optuna.TrialPruned``), after ``metrics.json`` is written.
        progress: show a tqdm bar over each epoch's batches.
        max_steps: stop after this many optimizer steps in all; a partial last epoch is evaluated and recorded.
        options: preset overrides passed to ``task.build`` (e.g. ``{"batch_size": 64, "eval_limit": 500}``).
        on_record: called with each epoch record dict (for logging).

    Returns:
        a :class:`TrainResult`; ``diverged=True`` with ``diverged_step`` when a loss was non-finite.

    Raises:
        ValueError: unknown task, optimizer or preset (the message lists the valid ones), bad argument.
        MissingDataError: the task's data is not installed (the message says how to install it).
        PresetTooLargeError: the preset does not fit in free memory.
    """
    from epsfinder._catalog import OPTIMIZERS, make_optimizer, optimizer_names
    from epsfinder.errors import EpsfinderError, UnsupportedOptimizerError
    from epsfinder.tasks.registry import get_task

    started = time.perf_counter()
    task_obj = get_task(task)
    entry = OPTIMIZERS.get(str(optimizer).lower())
    if entry is None:
        raise UnsupportedOptimizerError(
            f"unknown optimizer name {optimizer!r}; choose one of: {', '.join(optimizer_names())}"
        )
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a positive finite number, got lr={lr}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got epochs={epochs}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got max_steps={max_steps}")
    if not entry.adaptive and eps is not None:
        raise ValueError(f"optimizer {optimizer!r} has no ε; drop eps={eps}")
    if entry.beta2 is None and beta2 is not None:
        raise ValueError(f"optimizer {optimizer!r} has no β2; drop beta2={beta2}")
    if probe and not entry.adaptive:
        raise UnsupportedOptimizerError(
            f"probe=True needs an adaptive optimizer, and {optimizer!r} has no adaptive term; choose one of: "
            f"{', '.join(optimizer_names(adaptive_only=True))}"
        )

    _seed_everything(seed)
    setup = task_obj.build(preset=preset, seed=seed, data_dir=data_dir, device=device, limit=limit, options=options)
    hp = setup.hparams
    model = setup.model
    wd = weight_decay if weight_decay is not None else hp.get("weight_decay")
    b2 = beta2
    if b2 is None and entry.beta2 is not None and hp.get("betas") is not None:
        b2 = float(hp["betas"][1])
    opt = make_optimizer(optimizer, model.parameters(), lr=lr, eps=eps, beta2=b2, weight_decay=wd)
    n_epochs = int(epochs if epochs is not None else setup.epochs)
    milestones = [int(m) for m in hp.get("lr_milestones", [])]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=hp.get("lr_gamma", 0.1))
    clip = hp.get("clip_grad_norm")
    steps_per_epoch = setup.steps_per_epoch
    if steps_per_epoch is None:
        try:
            steps_per_epoch = len(setup.train_loader)  # type: ignore[arg-type]
        except TypeError:
            steps_per_epoch = None

    used = _optimizer_hparams(opt)
    result = TrainResult(
        task=setup.name,
        optimizer=str(optimizer).lower(),
        hyperparameters={
            "lr": lr, "eps": used["eps"], "beta2": used["beta2"], "weight_decay": wd, "epochs": n_epochs,
            "preset": preset, "seed": seed, "limit": limit, "max_steps": max_steps,
            "clip_grad_norm": clip, "batch_size": hp.get("batch_size"), "lr_milestones": milestones,
            "lr_gamma": hp.get("lr_gamma", 0.1), "options": dict(options or {}),
        },
        metric=setup.metric,
        direction=setup.direction,
        steps_per_epoch=steps_per_epoch,
    )
    out_dir = pathlib.Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    eps_probe = None
    if probe:
        from epsfinder.probe import EpsilonProbe

        eps_probe = EpsilonProbe(opt, model=model, steps_per_epoch=steps_per_epoch)

    def save() -> None:
        result.wall_s = time.perf_counter() - started
        if out_dir is not None:
            result.to_json(out_dir / "metrics.json")

    step_fn = setup.step_fn
    loss_fn = setup.loss_fn
    dev = setup.device
    params = [p for p in model.parameters() if p.requires_grad]
    global_step = 0
    model.train()
    try:
        for epoch in range(n_epochs):
            epoch_start = time.perf_counter()
            lr_now = float(opt.param_groups[0]["lr"])
            losses: list[float] = []
            stop = False
            batches = progress_bar(
                setup.train_loader, total=steps_per_epoch, desc=f"{setup.name} epoch {epoch + 1}/{n_epochs}",
                enabled=progress,
            )
            for batch in batches:
                batch = to_device(batch, dev)
                opt.zero_grad(set_to_none=True)
                if step_fn is not None:
                    loss = step_fn(model, batch)
                else:
                    inputs, targets = batch
                    loss = loss_fn(model(inputs), targets)
                value = float(loss.detach())
                if not math.isfinite(value):
                    result.diverged = True
                    result.diverged_step = global_step + 1
                    log.warning("%s: loss is %s at step %d: diverged, stopping", setup.name, value, global_step + 1)
                    break
                loss.backward()
                if clip:
                    nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                global_step += 1
                losses.append(value)
                if max_steps is not None and global_step >= max_steps:
                    stop = True
                    break
            result.steps = global_step
            if result.diverged:
                break
            scheduler.step()
            metric = float(setup.evaluate(model))
            model.train()
            record = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)) if losses else None,
                "metric": metric,
                "wall_s": time.perf_counter() - epoch_start,
                "steps": len(losses),
                "lr": lr_now,
            }
            result.epochs.append(record)
            result.best = _best((e["metric"] for e in result.epochs), result.direction)
            save()
            if on_record is not None:
                on_record(record)
            if on_epoch is not None:
                on_epoch(epoch, metric)
            if stop:
                break
    finally:
        if eps_probe is not None:
            eps_probe.detach()
            try:
                if not eps_probe.snapshots and global_step > 0:
                    eps_probe.snapshot()
                rng = eps_probe.result()
                result.probe = {"lower": rng.lower, "upper": rng.upper, "path": None}
                if out_dir is not None:
                    path = out_dir / "result.json"
                    rng.to_json(path)
                    result.probe["path"] = str(path)
            except EpsfinderError as err:
                log.warning("%s: no ε range from the probe: %s", setup.name, err)
        save()
    return result
