"""The paper's experiments as built-in tasks, on real offline data, each with a ``cpu`` and a ``paper`` preset.

=====================  ====================  ===========  ==================================================
task                   data                  metric       model: ``paper`` preset / ``cpu`` preset
=====================  ====================  ===========  ==================================================
digits-mlp             sklearn digits 8×8    accuracy     MLP 64-1000-1000-10 / MLP 64-256-256-10
fashion-mnist-mlp      Fashion-MNIST         accuracy     MLP 784-1000-1000-10 / MLP 784-512-512-10
fashion-mnist-alexnet  Fashion-MNIST         accuracy     AlexNet (authors' variant) / width 0.125
fashion-mnist-vgg11    Fashion-MNIST         accuracy     VGG11-BN / VGG11-BN width 0.125
fashion-mnist-resnet   Fashion-MNIST         accuracy     ResNet34 / ResNet-8 (3 stages of 8-16-32 channels)
cifar10-vgg11          CIFAR-10 (user's)     accuracy     as fashion-mnist-vgg11, 3 input channels
cifar10-resnet         CIFAR-10 (user's)     accuracy     as fashion-mnist-resnet, 3 input channels
ptb-lstm1              Penn Treebank         perplexity   1 tied layer 400→400 / 200→200
ptb-lstm2              Penn Treebank         perplexity   emb 400, 400→1150→400 / emb 200, 200→200→200
es-en-transformer      Bible verses es→en    bleu         512 wide, 4 heads, 6+6 layers / 128, 4, 2+2
=====================  ====================  ===========  ==================================================

Training settings (``TaskSetup.hparams``) follow the paper §5 and the authors' code: classification uses batch
128, weight decay 5e-4, no lr decay (the authors' code decays at epoch 150, after the 25–60 epochs the paper
trains), random crop (padding 4) + horizontal flip on CIFAR-10 only; language modelling uses batch 20, BPTT 70,
gradient clipping 0.25, weight decay 1.2e-6, lr ×0.1 at epochs 100 and 145 of 200; translation uses label
smoothing 0.1, weight decay 1e-4 and β = (0.9, 0.98) as fairseq's IWSLT recipe. The ``cpu`` presets keep those
settings but use thinner models and fewer epochs (10; milestones scaled to the epoch count); the LSTM uses BPTT 35
and the first 300,000 training tokens, the Transformer the first 12,000 training pairs and 500 test pairs.

Every ``build`` accepts ``options``: any preset key (``batch_size``, ``epochs``, ``width``, ...) to override it,
plus ``eval_limit`` (cap the test examples the metric uses) and ``memory_check`` (False skips the check that the
preset fits in free memory).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from epsfinder.tasks.base import Direction, Metric, PresetTooLargeError, TaskSetup
from epsfinder.tasks.models import MLP, VGG, AlexNet, LSTMLanguageModel, ResNet, TransformerTranslator
from epsfinder.tasks.train import accuracy_of, bleu_score, perplexity_of

__all__ = [
    "BUILTIN_TASKS",
    "PRESETS",
    "BuiltinTask",
    "ImageBatches",
    "ImageClassificationTask",
    "LMBatches",
    "LanguageModelTask",
    "TeacherForcingStep",
    "TranslationBatches",
    "TranslationTask",
    "TruncatedBPTTStep",
    "random_crop_flip",
    "scale_milestones",
]

log = logging.getLogger("epsfinder")

#: Preset names every built-in task has.
PRESETS: tuple[str, ...] = ("cpu", "paper")
#: Options every built-in task accepts besides its preset keys.
COMMON_OPTIONS: tuple[str, ...] = ("eval_limit", "memory_check")


def scale_milestones(milestones: Sequence[int], paper_epochs: int, epochs: int) -> list[int]:
    """The paper's lr-decay epochs rescaled to a shorter run: ``round(m * epochs / paper_epochs)``, deduplicated.

    >>> scale_milestones([100, 145], 200, 10)
    [5, 7]
    """
    out = sorted({max(1, round(m * epochs / paper_epochs)) for m in milestones})
    return [m for m in out if m < epochs] if epochs > 1 else []


# ----------------------------------------------------------------------------------------------------------------
# Memory check
# ----------------------------------------------------------------------------------------------------------------


def _available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, else MemAvailable from /proc/meminfo (or sysconf)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # pragma: no cover - depends on the driver
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


def _activation_bytes(model: nn.Module, forward: Callable[[nn.Module], Any]) -> int:
    """Bytes of every leaf module's output for one forward pass (eval mode, no grad, no RNG use)."""
    total = 0

    def count(out: Any) -> int:
        if isinstance(out, torch.Tensor):
            return out.numel() * out.element_size()
        if isinstance(out, (list, tuple)):
            return sum(count(o) for o in out)
        return 0

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        nonlocal total
        total += count(out)

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            forward(model)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


def estimate_memory(model: nn.Module, forward_one: Callable[[nn.Module], Any], batch_size: int) -> int:
    """Rough training memory in bytes: 4 × parameters (weights, gradients, two optimizer moments) plus
    4 × the activations of one example × ``batch_size`` (outputs kept for backward, their gradients, and slack)."""
    params = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return 4 * params + 4 * _activation_bytes(model, forward_one) * batch_size


def _check_memory(
    name: str, preset: str, model: nn.Module, forward_one: Callable[[nn.Module], Any], batch_size: int,
    device: torch.device,
) -> None:
    free = _available_memory(device)
    if free is None:
        return
    need = estimate_memory(model, forward_one, batch_size)
    if need > free:
        gib = 1024**3
        raise PresetTooLargeError(
            f"task {name!r} with preset {preset!r} needs about {need / gib:.2f} GiB on {device} (model, gradients, "
            f"optimizer state and activations of batch {batch_size}) but only {free / gib:.2f} GiB is free; use "
            "preset='cpu', a smaller options={'batch_size': ...}, another device, or options={'memory_check': "
            "False} to try anyway"
        )


# ----------------------------------------------------------------------------------------------------------------
# Image data
# ----------------------------------------------------------------------------------------------------------------


def random_crop_flip(
    images: torch.Tensor, *, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip of a uint8 batch ``[N, C, H, W]``, in torch.

    Each image is padded by ``padding`` pixels on every side and cropped back to ``H × W`` at a uniformly random
    offset (as torchvision's ``RandomCrop(H, padding)``); with ``flip`` each image is mirrored with probability
    1/2. Randomness comes from ``generator`` only, so a seeded generator gives the same batch every time.
    """
    n, _c, h, w = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding, padding, padding, padding))
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (oy[:, None] + torch.arange(h))[:, :, None]  # [N, H, 1]
        cols = (ox[:, None] + torch.arange(w))[:, None, :]  # [N, 1, W]
        out = padded[torch.arange(n)[:, None, None], :, rows, cols]  # [N, H, W, C]
        out = out.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = torch.rand(n, generator=generator) < 0.5
        if bool(mirror.any()):
            out = out.clone() if out is images else out
            out[mirror] = out[mirror].flip(-1)
    return out


class ImageBatches:
    """Re-iterable mini-batches of normalised images: each ``iter()`` is one epoch, reshuffled.

    Batches are ``(images float32 [B, C, H, W], labels int64 [B])``; images are ``(x / 255 - mean) / std`` per
    channel, after augmentation on the uint8 tensors when ``augment``. The order and the augmentation come from
    a generator seeded with ``seed``, advanced epoch by epoch, so a run is reproducible and every epoch differs.
    The last batch may be smaller (``len()`` counts it).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
        shuffle: bool = True,
        augment: bool = False,
        crop_padding: int = 4,
        flip: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
        if len(images) == 0:
            raise ValueError("no training images: limit or the data set left none")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.shuffle, self.augment, self.crop_padding, self.flip = shuffle, augment, crop_padding, flip
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self.mean) / self.std

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.images[idx]
            if self.augment:
                x = random_crop_flip(x, padding=self.crop_padding, flip=self.flip, generator=self.generator)
            yield self.normalize(x), self.labels[idx]


# ----------------------------------------------------------------------------------------------------------------
# Language-model data
# ----------------------------------------------------------------------------------------------------------------


class LMBatches:
    """Re-iterable truncated-BPTT windows ``(inputs [bptt, B], targets [bptt, B])`` in stream order.

    The windows are *not* shuffled: the hidden state flows from each window into the next, so their order is the
    text's. Every ``iter()`` (one epoch) first calls the ``on_epoch_start`` callbacks, which the
    :class:`TruncatedBPTTStep` uses to restart from a zero state.
    """

    def __init__(self, windows: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not windows:
            raise ValueError("no training windows: limit left fewer tokens than batch_size × (bptt + 1)")
        self.windows = windows
        self.on_epoch_start: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for callback in self.on_epoch_start:
            callback()
        yield from self.windows


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the flattened targets: ``logits [T, B, V]``, ``targets [T, B]``."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class TruncatedBPTTStep:
    """``step_fn`` of the LSTM tasks: truncated backpropagation through time with a carried hidden state.

    Each call runs the model on one window from the state the previous window left, stores the new state
    *detached* (so gradients stop at the window's start, as in AWD-LSTM's ``repackage_hidden``) and returns the
    cross-entropy over the window's flattened targets. The state restarts from zeros at every epoch start (the
    loader calls :meth:`reset`), when the batch width changes, and when the model changes.
    """

    def __init__(self) -> None:
        self.hidden: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._model_id: int | None = None

    def reset(self) -> None:
        self.hidden = None

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        hidden = self.hidden
        if (
            hidden is None
            or self._model_id != id(model)
            or hidden[0][0].size(1) != inputs.size(1)
            or hidden[0][0].device != inputs.device
        ):
            hidden = model.init_hidden(inputs.size(1))  # type: ignore[operator]
        logits, new_hidden = model(inputs, hidden, return_hidden=True)
        self.hidden = [(h.detach(), c.detach()) for h, c in new_hidden]
        self._model_id = id(model)
        return lm_loss(logits, targets)


# ----------------------------------------------------------------------------------------------------------------
# Translation data
# ----------------------------------------------------------------------------------------------------------------


def _pad(rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


class TranslationBatches:
    """Re-iterable padded batches ``(src [B, S], tgt [B, T])`` of token ids, length-bucketed and reshuffled.

    ``tgt`` rows are ``bos + ids + eos``; padding is ``pad_id``. Each epoch the pairs are shuffled (seeded
    generator), cut into chunks of 50 batches, sorted by length inside each chunk (less padding), batched, and
    the batches shuffled again. ``len()`` is the same every epoch.
    """

    CHUNK = 50

    def __init__(
        self, pairs: list[tuple[list[int], list[int]]], batch_size: int, *, pad_id: int, seed: int = 0
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
        if not pairs:
            raise ValueError("no training pairs: limit or the data set left none")
        self.pairs, self.batch_size, self.pad_id = pairs, batch_size, pad_id
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        chunk = self.batch_size * self.CHUNK
        n = len(self.pairs)
        full, rest = divmod(n, chunk)
        return full * self.CHUNK + math.ceil(rest / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.pairs), generator=self.generator).tolist()
        chunk = self.batch_size * self.CHUNK
        batches: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start : start + chunk], key=lambda i: (len(self.pairs[i][1]), len(self.pairs[i][0])))
            batches += [part[k : k + self.batch_size] for k in range(0, len(part), self.batch_size)]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            idx = batches[b]
            yield _pad([self.pairs[i][0] for i in idx], self.pad_id), _pad([self.pairs[i][1] for i in idx], self.pad_id)


class TeacherForcingStep:
    """``step_fn`` of the translation task: teacher forcing with label-smoothed cross-entropy, padding ignored.

    The decoder reads ``tgt[:, :-1]`` (bos + target) and predicts ``tgt[:, 1:]`` (target + eos).
    """

    def __init__(self, pad_id: int, label_smoothing: float = 0.1) -> None:
        self.pad_id, self.label_smoothing = pad_id, label_smoothing

    def __call__(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        src, tgt = batch
        logits = model(src, tgt[:, :-1])
        return F.cross_entropy(
            logits.reshape(-1, logits.size(-1)),
            tgt[:, 1:].reshape(-1),
            ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )


# ----------------------------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------------------------


class BuiltinTask:
    """Base of the built-in tasks: presets as dicts of settings, option checking, data status.

    Attributes:
        name, family, metric, direction, description: as in :class:`~epsfinder.tasks.base.Task`.
        dataset: the data set name :func:`epsfinder.tasks.data.data_status` knows.
        presets: preset name → settings; ``options`` may override any of these keys.
    """

    name: str
    family: str
    metric: Metric
    direction: Direction
    description: str
    dataset: str
    presets: dict[str, dict[str, Any]]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def data_status(self) -> str | None:
        """None when the data is installed, else how to install it."""
        from epsfinder.tasks.data import data_status

        return data_status(self.dataset)

    def config(self, preset: str = "cpu", options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The preset's settings with ``options`` applied (validated, without building anything)."""
        if preset not in self.presets:
            raise ValueError(
                f"unknown preset {preset!r} for task {self.name!r}; choose one of: {', '.join(self.presets)}"
            )
        cfg = dict(self.presets[preset])
        cfg.setdefault("eval_limit", None)
        cfg.setdefault("memory_check", True)
        for key, value in (options or {}).items():
            if key not in cfg:
                valid = sorted(set(self.presets[preset]) | set(COMMON_OPTIONS))
                raise ValueError(f"unknown option {key!r} for task {self.name!r}; valid options: {', '.join(valid)}")
            cfg[key] = value
        return cfg

    def build(
        self,
        *,
        preset: str = "cpu",
        seed: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        limit: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> TaskSetup:
        """Build the task (its data, model and loaders; the model seeded with ``seed``) as ``preset`` with ``options``.

        Each task's ``_build`` says what it loads and builds; see the module docstring for presets.
        """
        cfg = self.config(preset, options)
        self._check_limit(limit)
        return self._build(cfg, preset=preset, seed=seed, data_dir=data_dir, dev=torch.device(device), limit=limit)

    def _build(
        self, cfg: dict[str, Any], *, preset: str, seed: int, data_dir: str | os.PathLike[str] | None,
        dev: torch.device, limit: int | None,
    ) -> TaskSetup:
        """What :meth:`build` does once the settings ``cfg`` are checked (``dev`` is the torch device).

        Every built-in task family overrides this; the base refuses with the name of the class that does not.
        """
        raise TypeError(f"{type(self).__name__} must define _build(cfg, ...) to be built")

    def _setup(self, cfg: Mapping[str, Any], dev: torch.device, loader: Any, **fields: Any) -> TaskSetup:
        """The :class:`TaskSetup` of this task, with one epoch = one pass of ``loader``."""
        return TaskSetup(
            name=self.name, train_loader=loader, metric=self.metric, direction=self.direction, epochs=cfg["epochs"],
            steps_per_epoch=len(loader), device=dev, family=self.family, **fields,
        )

    @staticmethod
    def _check_limit(limit: int | None) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of training examples, got limit={limit}")

    @staticmethod
    def _hparams(cfg: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
        out = {k: cfg[k] for k in keys if k in cfg}
        out["lr_milestones"] = list(cfg.get("lr_milestones", []))
        out["betas"] = tuple(cfg["betas"])
        return out


_NORMALIZE: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    # The authors' CIFAR-10 constants (their code, transforms.Normalize).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "digits": ((0.3049,), (0.3757,)),
}

_CLASSIFICATION = {"batch_size": 128, "weight_decay": 5e-4, "clip_grad_norm": None, "lr_milestones": [],
                   "lr_gamma": 0.1, "betas": (0.9, 0.999), "augment": False, "crop_padding": 4, "flip": True}
_PAPER_MLP = {"model": "mlp", "hidden": (1000, 1000)}
_PAPER_ALEXNET = {"model": "alexnet", "width": 1.0}
_PAPER_VGG = {"model": "vgg11", "width": 1.0}
_PAPER_RESNET = {"model": "resnet", "widths": (64, 128, 256, 512), "blocks": (3, 4, 6, 3), "width": 1.0}
_CPU_RESNET = {"model": "resnet", "widths": (16, 32, 64), "blocks": (1, 1, 1), "width": 0.5}


def _classification_presets(paper_model: dict[str, Any], cpu_model: dict[str, Any], paper_epochs: int,
                            cpu_epochs: int, **extra: Any) -> dict[str, dict[str, Any]]:
    paper = {**_CLASSIFICATION, **paper_model, "epochs": paper_epochs, **extra}
    cpu = {**_CLASSIFICATION, **cpu_model, "epochs": cpu_epochs, **extra}
    return {"cpu": cpu, "paper": paper}


class ImageClassificationTask(BuiltinTask):
    """Image classification: cross-entropy, metric = test accuracy (a fraction in [0, 1], maximised).

    ``limit`` keeps the first ``limit`` training images (the data sets are stored shuffled). Batches are
    ``(float images [B, C, H, W], int64 labels [B])``.
    """

    family = "classification"
    metric: Metric = "accuracy"
    direction: Direction = "maximize"

    def __init__(self, name: str, dataset: str, description: str, presets: dict[str, dict[str, Any]]) -> None:
        self.name, self.dataset, self.description, self.presets = name, dataset, description, presets

    def _load(self, data_dir: str | os.PathLike[str] | None) -> Any:
        from epsfinder.tasks import data

        if self.dataset == "fashion-mnist":
            return data.load_fashion_mnist(data_dir)
        if self.dataset == "cifar10":
            return data.load_cifar10(data_dir)
        return data.load_digits_data()

    def make_model(self, cfg: Mapping[str, Any], in_channels: int, size: int, classes: int) -> nn.Module:
        kind = cfg["model"]
        if kind == "mlp":
            return MLP(in_channels * size * size, cfg["hidden"], classes)
        if kind == "alexnet":
            return AlexNet(in_channels, classes, width=cfg["width"])
        if kind == "vgg11":
            return VGG(in_channels, classes, width=cfg["width"])
        if kind == "resnet":
            return ResNet(in_channels, classes, widths=cfg["widths"], blocks=cfg["blocks"], width=cfg["width"])
        raise ValueError(f"unknown model {kind!r}; choose one of: mlp, alexnet, vgg11, resnet")

    def _build(
        self, cfg: dict[str, Any], *, preset: str, seed: int, data_dir: str | os.PathLike[str] | None,
        dev: torch.device, limit: int | None,
    ) -> TaskSetup:
        """Load the images, build the model (seeded) and the loaders; see the module docstring for presets."""
        data = self._load(data_dir)
        train_x, train_y = data.train_images, data.train_labels
        if limit is not None:
            train_x, train_y = train_x[:limit], train_y[:limit]
        test_x, test_y = data.test_images, data.test_labels
        if cfg["eval_limit"] is not None:
            test_x, test_y = test_x[: cfg["eval_limit"]], test_y[: cfg["eval_limit"]]
        channels, size = int(train_x.shape[1]), int(train_x.shape[2])
        mean, std = _NORMALIZE[self.dataset]
        torch.manual_seed(seed)
        model = self.make_model(cfg, channels, size, data.classes).to(dev)
        if cfg["memory_check"]:
            probe_input = torch.zeros(1, channels, size, size, device=dev)
            _check_memory(self.name, preset, model, lambda m: m(probe_input), cfg["batch_size"], dev)
        loader = ImageBatches(
            train_x, train_y, cfg["batch_size"], mean=mean, std=std, seed=seed, augment=cfg["augment"],
            crop_padding=cfg["crop_padding"], flip=cfg["flip"],
        )
        test_loader = ImageBatches(test_x, test_y, 1000, mean=mean, std=std, shuffle=False)

        def evaluate(m: nn.Module) -> float:
            return accuracy_of(m, test_loader, device=dev)

        hparams = self._hparams(cfg, ("batch_size", "weight_decay", "clip_grad_norm", "lr_gamma", "augment"))
        hparams.update(preset=preset, model=cfg["model"], train_examples=len(train_x), test_examples=len(test_x))
        return self._setup(cfg, dev, loader, model=model, loss_fn=F.cross_entropy, evaluate=evaluate, hparams=hparams)


_LM_PAPER = {"emb": 400, "hidden": 1150, "tied": True, "dropout": 0.4, "dropout_h": 0.3, "dropout_i": 0.65,
             "batch_size": 20, "bptt": 70, "eval_batch_size": 10, "clip_grad_norm": 0.25, "weight_decay": 1.2e-6,
             "epochs": 200, "lr_milestones": [100, 145], "lr_gamma": 0.1, "betas": (0.9, 0.999), "train_tokens": None}
_LM_CPU = {**_LM_PAPER, "emb": 200, "hidden": 200, "dropout": 0.2, "dropout_h": 0.2, "dropout_i": 0.2, "bptt": 35,
           "epochs": 10, "lr_milestones": scale_milestones([100, 145], 200, 10), "train_tokens": 300_000}


class LanguageModelTask(BuiltinTask):
    """Word-level language modelling on Penn Treebank; metric = test perplexity (minimised).

    Batches are ``(inputs [bptt, B], targets [bptt, B])`` windows of the batchified training stream, in order;
    ``step_fn`` is a :class:`TruncatedBPTTStep` that carries the hidden state from window to window (detached)
    and restarts it every epoch. ``loss_fn(model(inputs), targets)`` (a zero state per window) also works, for
    tools that ignore ``step_fn``. ``limit`` keeps the first ``limit`` training *tokens*. Perplexity is
    ``exp`` of the mean cross-entropy over every test token, evaluated with batch 10 and a carried state.
    """

    family = "language-modeling"
    metric: Metric = "perplexity"
    direction: Direction = "minimize"
    dataset = "ptb"

    def __init__(self, name: str, layers: int, description: str) -> None:
        self.name, self.layers, self.description = name, layers, description
        self.presets = {"cpu": dict(_LM_CPU), "paper": dict(_LM_PAPER)}

    def _build(
        self, cfg: dict[str, Any], *, preset: str, seed: int, data_dir: str | os.PathLike[str] | None,
        dev: torch.device, limit: int | None,
    ) -> TaskSetup:
        """Load PTB, batchify it, build the LSTM (seeded); see the module docstring for presets."""
        from epsfinder.tasks.data import batchify, bptt_batches, load_ptb

        corpus = load_ptb(data_dir)
        train = corpus.train
        if cfg["train_tokens"] is not None:
            train = train[: cfg["train_tokens"]]
        if limit is not None:
            train = train[:limit]
        test = corpus.test if cfg["eval_limit"] is None else corpus.test[: cfg["eval_limit"]]
        bs, bptt = cfg["batch_size"], cfg["bptt"]
        if train.numel() < bs * (bptt + 1):
            raise ValueError(
                f"limit={limit} leaves {train.numel()} training tokens, fewer than batch_size × (bptt + 1) = "
                f"{bs * (bptt + 1)}; raise limit"
            )
        windows = bptt_batches(batchify(train, bs), bptt)
        eval_bs = min(cfg["eval_batch_size"], max(1, test.numel() // 2))
        eval_windows = bptt_batches(batchify(test, eval_bs), bptt, drop_last=False)
        torch.manual_seed(seed)
        model = LSTMLanguageModel(
            corpus.vocab_size, cfg["emb"], cfg["hidden"], self.layers, dropout=cfg["dropout"],
            dropout_h=cfg["dropout_h"], dropout_i=cfg["dropout_i"], tied=cfg["tied"],
        ).to(dev)
        if cfg["memory_check"]:
            probe_input = torch.zeros(bptt, 1, dtype=torch.long, device=dev)
            _check_memory(self.name, preset, model, lambda m: m(probe_input), bs, dev)
        loader = LMBatches(windows)
        step = TruncatedBPTTStep()
        loader.on_epoch_start.append(step.reset)

        def evaluate(m: nn.Module) -> float:
            return perplexity_of(m, eval_windows, device=dev)

        hparams = self._hparams(cfg, ("batch_size", "bptt", "weight_decay", "clip_grad_norm", "lr_gamma", "emb",
                                      "hidden", "tied"))
        hparams.update(preset=preset, layers=self.layers, vocab=corpus.vocab_size, train_tokens=int(train.numel()),
                       test_tokens=int(test.numel()))
        return self._setup(
            cfg, dev, loader, model=model, loss_fn=lm_loss, evaluate=evaluate, step_fn=step, hparams=hparams
        )


_MT_PAPER = {"d_model": 512, "nhead": 4, "encoder_layers": 6, "decoder_layers": 6, "ff": 1024, "dropout": 0.3,
             "vocab_size": 8000, "max_tokens": 160, "batch_size": 128, "label_smoothing": 0.1, "weight_decay": 1e-4,
             "clip_grad_norm": None, "epochs": 50, "lr_milestones": [], "lr_gamma": 0.1, "betas": (0.9, 0.98),
             "eval_batch_size": 100, "train_pairs": None, "tokenizer_pairs": None}
_MT_CPU = {**_MT_PAPER, "d_model": 128, "nhead": 4, "encoder_layers": 2, "decoder_layers": 2, "ff": 256,
           "dropout": 0.1, "vocab_size": 4000, "max_tokens": 64, "batch_size": 64, "epochs": 10, "train_pairs": 12_000,
           "eval_limit": 500}


class TranslationTask(BuiltinTask):
    """Spanish → English translation of Bible verses (Reina-Valera 1909 → King James); metric = test BLEU.

    The verse pairs are split with seed 0 (29,084 train / 1,000 valid / 1,000 test, the same for every run). A
    joint sentencepiece unigram model (``vocab_size`` pieces) is trained once on the training split's Spanish and
    English sides and cached under :func:`epsfinder.tasks.data.default_cache_dir` ``/tokenizers`` (option
    ``tokenizer_pairs`` trains it on the first pairs only, for quick smoke runs). Training pairs longer than
    ``max_tokens`` pieces on either side are left out (6 % of them in the cpu preset, 64 pieces; 0.1 % at 160), and
    the cpu preset trains on the first ``train_pairs`` = 12,000 pairs and scores BLEU on the first 500 test
    pairs. Batches are ``(src [B, S], tgt [B, T])`` padded id tensors and ``step_fn`` is a
    :class:`TeacherForcingStep`. BLEU is sacrebleu's ``corpus_bleu`` of greedy, detokenised outputs against the
    raw English test verses. ``limit`` keeps the first ``limit`` training pairs.
    """

    family = "translation"
    metric: Metric = "bleu"
    direction: Direction = "maximize"
    dataset = "verse-pairs"

    def __init__(self, name: str, description: str) -> None:
        self.name, self.description = name, description
        self.presets = {"cpu": dict(_MT_CPU), "paper": dict(_MT_PAPER)}

    @staticmethod
    def tokenizer(corpus: Any, vocab_size: int, pairs: int | None = None) -> Any:
        """The cached joint sentencepiece model of ``corpus.train`` (its first ``pairs``; trained on first use)."""
        from epsfinder.tasks.data import SubwordTokenizer, default_cache_dir

        texts = [s for pair in corpus.train[:pairs] for s in pair]
        return SubwordTokenizer.train(texts, vocab_size, default_cache_dir() / "tokenizers", name="verse-pairs-es-en")

    def _build(
        self, cfg: dict[str, Any], *, preset: str, seed: int, data_dir: str | os.PathLike[str] | None,
        dev: torch.device, limit: int | None,
    ) -> TaskSetup:
        """Load the verse pairs, train or load the tokenizer, build the Transformer (seeded) and the loaders."""
        from epsfinder.tasks.data import load_verse_pairs

        corpus = load_verse_pairs(data_dir, seed=0)
        tok = self.tokenizer(corpus, cfg["vocab_size"], cfg["tokenizer_pairs"])
        max_tokens = cfg["max_tokens"]
        train_pairs = corpus.train
        if cfg["train_pairs"] is not None:
            train_pairs = train_pairs[: cfg["train_pairs"]]
        if limit is not None:
            train_pairs = train_pairs[:limit]
        encoded = []
        for es, en in train_pairs:
            src, tgt = tok.encode(es), tok.encode(en)
            if len(src) <= max_tokens and len(tgt) <= max_tokens - 2:  # longer verses are left out of training
                encoded.append((src, [tok.bos_id, *tgt, tok.eos_id]))
        test_pairs = corpus.test if cfg["eval_limit"] is None else corpus.test[: cfg["eval_limit"]]
        test_src = [tok.encode(es)[:max_tokens] for es, _ in test_pairs]
        test_refs = [en for _, en in test_pairs]
        torch.manual_seed(seed)
        model = TransformerTranslator(
            tok.vocab_size, cfg["d_model"], cfg["nhead"], cfg["encoder_layers"], cfg["decoder_layers"], cfg["ff"],
            cfg["dropout"], pad_id=tok.pad_id, max_len=2 * max_tokens,
        ).to(dev)
        step = TeacherForcingStep(tok.pad_id, cfg["label_smoothing"])
        if cfg["memory_check"]:
            src1 = torch.ones(1, max_tokens // 2, dtype=torch.long, device=dev)
            _check_memory(self.name, preset, model, lambda m: m(src1, src1), cfg["batch_size"], dev)
        loader = TranslationBatches(encoded, cfg["batch_size"], pad_id=tok.pad_id, seed=seed)
        eval_bs = cfg["eval_batch_size"]

        def evaluate(m: nn.Module) -> float:
            return translate_bleu(m, test_src, test_refs, tok, batch_size=eval_bs, device=dev, max_len=max_tokens)

        hparams = self._hparams(cfg, ("batch_size", "weight_decay", "clip_grad_norm", "lr_gamma", "label_smoothing",
                                      "d_model", "vocab_size", "max_tokens"))
        hparams.update(preset=preset, train_pairs=len(encoded), test_pairs=len(test_src),
                       tokenizer=str(tok.model_path))
        return self._setup(
            cfg, dev, loader, model=model, loss_fn=_translation_loss(tok.pad_id), evaluate=evaluate, step_fn=step,
            hparams=hparams,
        )


def _translation_loss(pad_id: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=pad_id)

    return loss_fn


def translate_bleu(
    model: nn.Module, sources: Sequence[Sequence[int]], references: Sequence[str], tokenizer: Any, *,
    batch_size: int = 100, device: torch.device | str = "cpu", max_len: int | None = None,
) -> float:
    """Greedy-decode ``sources`` (id lists), detokenise, and score against ``references`` with sacrebleu."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    hyps: list[str] = [""] * len(sources)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            src = _pad([list(sources[i]) or [tokenizer.eos_id] for i in idx], tokenizer.pad_id).to(device)
            outputs = model.greedy(  # type: ignore[operator]
                src, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, max_len=max_len
            )
            for i, ids in zip(idx, outputs):
                hyps[i] = tokenizer.decode(ids)
    finally:
        model.train(was_training)
    return bleu_score(hyps, references)


def _builtin_tasks() -> list[BuiltinTask]:
    fm = "Fashion-MNIST (60k/10k 28×28 grey images, 10 classes)"
    cifar = "CIFAR-10 (50k/10k 32×32 colour images; your own copy via --data-dir or $EPSFINDER_CIFAR10)"
    cifar_aug = {"augment": True, "crop_padding": 4, "flip": True}
    return [
        ImageClassificationTask(
            "digits-mlp", "digits", "MLP on scikit-learn's 8×8 digits (1,437/360): a seconds-long smoke task",
            {
                "cpu": {**_CLASSIFICATION, "model": "mlp", "hidden": (256, 256), "batch_size": 32, "epochs": 20},
                "paper": {**_CLASSIFICATION, **_PAPER_MLP, "batch_size": 32, "epochs": 25},
            },
        ),
        ImageClassificationTask(
            "fashion-mnist-mlp", "fashion-mnist", f"MLP 784-1000-1000-10 on {fm} (paper: 25 epochs)",
            _classification_presets(_PAPER_MLP, {"model": "mlp", "hidden": (512, 512)}, 25, 10),
        ),
        ImageClassificationTask(
            "fashion-mnist-alexnet", "fashion-mnist", f"AlexNet (authors' small-image variant) on {fm} (25 epochs)",
            _classification_presets(_PAPER_ALEXNET, {"model": "alexnet", "width": 0.125}, 25, 10),
        ),
        ImageClassificationTask(
            "fashion-mnist-vgg11", "fashion-mnist", f"VGG11 with batch norm on {fm} (45 epochs, as CIFAR-10's)",
            _classification_presets(_PAPER_VGG, {"model": "vgg11", "width": 0.125}, 45, 10),
        ),
        ImageClassificationTask(
            "fashion-mnist-resnet", "fashion-mnist", f"ResNet34 (cpu: ResNet-8) on {fm} (60 epochs, as CIFAR-10's)",
            _classification_presets(_PAPER_RESNET, _CPU_RESNET, 60, 10),
        ),
        ImageClassificationTask(
            "cifar10-vgg11", "cifar10", f"VGG11 with batch norm on {cifar}, crops + flips (45 epochs)",
            _classification_presets(_PAPER_VGG, {"model": "vgg11", "width": 0.125}, 45, 10, **cifar_aug),
        ),
        ImageClassificationTask(
            "cifar10-resnet", "cifar10", f"ResNet34 (cpu: ResNet-8) on {cifar}, crops + flips (60 epochs)",
            _classification_presets(_PAPER_RESNET, _CPU_RESNET, 60, 10, **cifar_aug),
        ),
        LanguageModelTask(
            "ptb-lstm1", 1, "1-layer LSTM language model on Penn Treebank (AWD-LSTM settings, 200 epochs)"
        ),
        LanguageModelTask(
            "ptb-lstm2", 2, "2-layer LSTM language model on Penn Treebank (AWD-LSTM settings, 200 epochs)"
        ),
        TranslationTask(
            "es-en-transformer",
            "Transformer es→en on 31k Bible verse pairs (stand-in for IWSLT'14 de→en, 50 epochs)",
        ),
    ]


#: The ten built-in tasks, in the order ``epsfinder tasks`` lists them.
BUILTIN_TASKS: list[BuiltinTask] = _builtin_tasks()


def describe_preset(task: BuiltinTask, preset: str) -> str:
    """One line with the model size settings of a preset, for listings."""
    cfg = task.presets[preset]
    if isinstance(task, ImageClassificationTask):
        model = cfg["model"]
        if model == "mlp":
            arch = "MLP " + "-".join(str(h) for h in cfg["hidden"])
        elif model == "resnet":
            arch = f"ResNet blocks {tuple(cfg['blocks'])} widths {tuple(cfg['widths'])}"
        else:
            arch = f"{model} width {cfg['width']}"
        extra = ", crop+flip" if cfg["augment"] else ""
        return f"{arch}, batch {cfg['batch_size']}, {cfg['epochs']} epochs{extra}"
    if isinstance(task, LanguageModelTask):
        return (
            f"emb {cfg['emb']} hidden {cfg['hidden']} x{task.layers}, batch {cfg['batch_size']}, bptt {cfg['bptt']}, "
            f"{cfg['epochs']} epochs, lr x{cfg['lr_gamma']} at {cfg['lr_milestones']}"
        )
    if isinstance(task, TranslationTask):
        return (
            f"d_model {cfg['d_model']}, {cfg['encoder_layers']}+{cfg['decoder_layers']} layers, vocab "
            f"{cfg['vocab_size']}, batch {cfg['batch_size']}, {cfg['epochs']} epochs"
        )
    return ""  # pragma: no cover
