"""Tests for the built-in tasks (:mod:`epsfinder.tasks`): registry, presets, loaders, models, metrics.

Every task whose data is installed trains a few steps on a real slice of its data and its loss must fall; tasks
whose data is missing are skipped with the install hint. CIFAR-10 is built from a tiny pickle fixture.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from _tasks_helpers import NAMES
from epsfinder.tasks import PresetTooLargeError, Task, TaskSetup, get_task, list_tasks, register_task
from epsfinder.tasks import builtin as builtin_mod
from epsfinder.tasks.builtin import (
    ImageBatches,
    LMBatches,
    TranslationBatches,
    TruncatedBPTTStep,
    random_crop_flip,
    scale_milestones,
)
from epsfinder.tasks.models import MLP, VGG, AlexNet, LSTMLanguageModel, ResNet, TransformerTranslator
from epsfinder.tasks.registry import unregister_task
from epsfinder.tasks.train import accuracy_of, bleu_score, perplexity_of


@pytest.fixture
def small_tokenizer_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A per-session tokenizer cache, so tests never write to ~/.cache (the tokenizer trains once per session)."""
    cache = tmp_path_factory.getbasetemp() / "epsfinder-cache"
    monkeypatch.setenv("EPSFINDER_CACHE", str(cache))
    return cache


def _require_data(name: str) -> None:
    status = get_task(name).data_status()
    if status is not None:
        pytest.skip(f"{name}: data not installed: {status}")


def write_cifar_fixture(folder: Path, train: int = 40, test: int = 12) -> Path:
    """A tiny CIFAR-10 folder in the python-pickle layout (one training batch and the test batch)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("data_batch_1", train), ("test_batch", test)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [int(i % 10) for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------


def test_list_tasks_has_the_ten_builtins_in_order() -> None:
    assert [t.name for t in list_tasks()][: len(NAMES)] == NAMES


def test_task_attributes_match_their_family() -> None:
    expected = {"classification": ("accuracy", "maximize"), "language-modeling": ("perplexity", "minimize"),
                "translation": ("bleu", "maximize")}
    for task in list_tasks():
        if task.name not in NAMES:
            continue
        assert isinstance(task, Task)
        assert (task.metric, task.direction) == expected[task.family]
        assert task.description
        assert set(task.presets) == {"cpu", "paper"}  # type: ignore[attr-defined]


def test_get_task_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown task 'mnist-mlp'") as err:
        get_task("mnist-mlp")
    for name in NAMES:
        assert name in str(err.value)


def test_get_task_passes_task_objects_through_and_rejects_others() -> None:
    task = get_task("digits-mlp")
    assert get_task(task) is task
    with pytest.raises(TypeError, match="task name or a Task"):
        get_task(42)  # type: ignore[arg-type]


class _ToyTask:
    name = "toy-task"
    family = "classification"
    metric = "accuracy"
    direction = "maximize"
    description = "a user's task"

    def build(self, *, preset: str = "cpu", seed: int = 0, data_dir: Any = None, device: Any = "cpu",
              limit: int | None = None, options: Any = None) -> TaskSetup:
        torch.manual_seed(seed)
        x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
        model = nn.Linear(4, 2)
        return TaskSetup(name=self.name, model=model, loss_fn=nn.functional.cross_entropy, train_loader=data,
                         evaluate=lambda m: accuracy_of(m, data), metric="accuracy", direction="maximize", epochs=1,
                         steps_per_epoch=4, hparams={"weight_decay": 0.0, "betas": (0.9, 0.999)})

    def data_status(self) -> str | None:
        return None


def test_register_task_makes_a_users_task_available_by_name() -> None:
    toy = _ToyTask()
    try:
        assert register_task(toy) is toy
        assert get_task("toy-task") is toy
        assert "toy-task" in [t.name for t in list_tasks()]
        with pytest.raises(ValueError, match="already registered"):
            register_task(_ToyTask())
        register_task(_ToyTask(), replace=True)
    finally:
        unregister_task("toy-task")
    with pytest.raises(TypeError, match=r"not a Task: it lacks name, .*build"):
        register_task(object())  # type: ignore[arg-type]


def test_unknown_preset_and_option_list_the_valid_ones() -> None:
    task = get_task("digits-mlp")
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*cpu, paper"):
        task.build(preset="huge")
    with pytest.raises(ValueError, match=r"unknown option 'widht'.*batch_size.*eval_limit"):
        task.build(options={"widht": 2})
    with pytest.raises(ValueError, match="limit must be a positive"):
        task.build(limit=0)


def test_scale_milestones_shrinks_the_paper_schedule() -> None:
    assert scale_milestones([100, 145], 200, 10) == [5, 7]
    assert scale_milestones([100, 145], 200, 200) == [100, 145]
    assert scale_milestones([100, 145], 200, 1) == []
    lm = get_task("ptb-lstm1")
    assert lm.presets["paper"]["lr_milestones"] == [100, 145]  # type: ignore[attr-defined]
    assert lm.presets["cpu"]["lr_milestones"] == [5, 7]  # type: ignore[attr-defined]


def test_memory_check_refuses_a_preset_that_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin_mod, "_available_memory", lambda device: 1024)
    with pytest.raises(PresetTooLargeError, match=r"'digits-mlp' with preset 'paper' needs about .* GiB") as err:
        get_task("digits-mlp").build(preset="paper")
    assert isinstance(err.value, MemoryError) and isinstance(err.value, ValueError)
    get_task("digits-mlp").build(preset="paper", options={"memory_check": False})  # the escape hatch works


def test_memory_estimate_grows_with_the_model() -> None:
    small, big = MLP(64, (16,)), MLP(64, (1000, 1000))
    x = torch.zeros(1, 1, 8, 8)
    assert builtin_mod.estimate_memory(big, lambda m: m(x), 32) > 10 * builtin_mod.estimate_memory(
        small, lambda m: m(x), 32)


# ----------------------------------------------------------------------------------------------------------------
# Loaders and augmentation
# ----------------------------------------------------------------------------------------------------------------


def test_random_crop_flip_is_a_seeded_shifted_window() -> None:
    images = torch.arange(2 * 3 * 5 * 5, dtype=torch.int64).remainder(256).to(torch.uint8).view(2, 3, 5, 5)
    same = random_crop_flip(images, padding=0, flip=False)
    assert torch.equal(same, images)
    a = random_crop_flip(images, padding=2, flip=True, generator=torch.Generator().manual_seed(1))
    b = random_crop_flip(images, padding=2, flip=True, generator=torch.Generator().manual_seed(1))
    assert a.dtype == torch.uint8 and a.shape == images.shape and torch.equal(a, b)
    padded = nn.functional.pad(images, (2, 2, 2, 2))
    for i in range(2):  # every output is some 5×5 window of the padded image, maybe mirrored
        windows = [padded[i, :, y : y + 5, x : x + 5] for y in range(5) for x in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(-1)) for w in windows)


def test_image_batches_reshuffle_every_epoch_reproducibly() -> None:
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)

    def epochs(seed: int) -> list[list[int]]:
        loader = ImageBatches(images, labels, 4, mean=(0.0,), std=(1.0,), seed=seed)
        assert len(loader) == 3
        return [torch.cat([y for _, y in loader]).tolist() for _ in range(2)]

    first, second = epochs(0)
    assert sorted(first) == list(range(10)) and first != second
    assert epochs(0) == [first, second]
    x, _ = next(iter(ImageBatches(images, labels, 4, mean=(0.5,), std=(0.5,), shuffle=False)))
    assert x.dtype == torch.float32 and torch.allclose(x[1, 0, 0, 0], torch.tensor((1 / 255 - 0.5) / 0.5))


def test_truncated_bptt_step_carries_a_detached_state_and_resets_each_epoch() -> None:
    torch.manual_seed(0)
    model = LSTMLanguageModel(50, 8, 12, 2, dropout=0.0, dropout_h=0.0, dropout_i=0.0)
    stream = torch.randint(0, 50, (4, 3, 2))
    windows = [(stream[0:2, :, 0], stream[0:2, :, 1]), (stream[2:4, :, 0], stream[2:4, :, 1])]
    loader, step = LMBatches(windows), TruncatedBPTTStep()
    loader.on_epoch_start.append(step.reset)
    for batch in loader:
        loss = step(model, batch)
        loss.backward()
        assert step.hidden is not None and not step.hidden[0][0].requires_grad
    carried = step.hidden
    iter(loader).__next__()  # a new epoch resets the state
    assert step.hidden is None and carried is not None
    # the carried state matters: window 2 from window 1's state differs from window 2 from zeros
    step(model, windows[0])
    with_state = step(model, windows[1])
    assert not torch.allclose(with_state, builtin_mod.lm_loss(model(windows[1][0]), windows[1][1]))


def test_translation_batches_cover_every_pair_once_per_epoch() -> None:
    pairs = [([5] * (1 + i % 7), [2, *([6] * (1 + i % 5)), 3]) for i in range(23)]
    loader = TranslationBatches(pairs, 4, pad_id=0, seed=0)
    assert len(loader) == 6
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert sum(src.size(0) for src, _ in batches) == 23
        for src, tgt in batches:
            assert src.dtype == torch.long and bool((tgt[:, 0] == 2).all())


# ----------------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (8, 1)])
def test_conv_models_accept_every_image_size(size: int, channels: int) -> None:
    x = torch.randn(2, channels, size, size)
    models: list[nn.Module] = [VGG(channels, 10, width=0.125), ResNet(channels, 10, (8, 16), (1, 1))]
    if size >= 28:
        models.append(AlexNet(channels, 10, width=0.0625))
    for model in models:
        assert model(x).shape == (2, 10)


def test_paper_sized_models_have_the_papers_parameter_counts() -> None:
    from epsfinder.tasks.models import count_parameters

    assert abs(count_parameters(ResNet(3, 10)) - 21.28e6) < 0.1e6  # ResNet34 for CIFAR-10
    assert abs(count_parameters(VGG(3, 10)) - 9.23e6) < 0.1e6  # VGG11-BN for CIFAR-10
    assert count_parameters(MLP(784, (1000, 1000))) == 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 10010
    lstm2 = LSTMLanguageModel(10000, 400, 1150, 2)
    assert [r.hidden_size for r in lstm2.rnns] == [1150, 400]  # AWD layout: the last layer is emb-wide (tied)
    assert lstm2.decoder.weight is lstm2.encoder.weight


def test_transformer_greedy_decoding_stops_at_eos() -> None:
    torch.manual_seed(0)
    model = TransformerTranslator(20, 16, 2, 1, 1, 32, 0.0, pad_id=0, max_len=32).eval()
    with torch.no_grad():  # make the model always predict eos (id 3)
        model.embed.weight.zero_()
        model.embed.weight[3] = 1.0
    out = model.greedy(torch.tensor([[5, 6, 7], [8, 9, 0]]), bos_id=2, eos_id=3)
    assert out == [[], []]
    logits = model(torch.tensor([[5, 6]]), torch.tensor([[2, 4, 5]]))
    assert logits.shape == (1, 3, 20)


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def test_bleu_of_references_against_themselves_is_100() -> None:
    refs = ["In the beginning God created the heaven and the earth.", "And God said, Let there be light."]
    assert bleu_score(refs, refs) == pytest.approx(100.0)
    assert 0.0 <= bleu_score(["the the the", "light"], refs) < 10.0
    with pytest.raises(ValueError, match="must pair up"):
        bleu_score(refs[:1], refs)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size() -> None:
    class Uniform(nn.Module):
        def forward(self, x: torch.Tensor, hidden: Any = None, *, return_hidden: bool = False) -> Any:
            logits = torch.zeros(*x.shape, 37)
            return (logits, hidden) if return_hidden else logits

    windows = [(torch.zeros(5, 2, dtype=torch.long), torch.ones(5, 2, dtype=torch.long))] * 3
    assert perplexity_of(Uniform(), windows) == pytest.approx(37.0)


def test_accuracy_is_a_fraction_on_real_digits() -> None:
    _require_data("digits-mlp")
    setup = get_task("digits-mlp").build(seed=0)
    acc = setup.evaluate(setup.model)
    assert 0.0 <= acc <= 1.0
    assert setup.hparams["test_examples"] == 360 and setup.hparams["train_examples"] == 1437


def test_lstm_perplexity_at_initialisation_is_about_the_vocabulary_size() -> None:
    _require_data("ptb-lstm1")
    setup = get_task("ptb-lstm1").build(seed=0, limit=5000, options={"eval_limit": 3000})
    ppl = setup.evaluate(setup.model)
    vocab = setup.hparams["vocab"]
    assert vocab == 10000
    assert vocab / 2 < ppl < 2 * vocab


def test_translation_bleu_is_in_range(small_tokenizer_cache: Path) -> None:
    _require_data("es-en-transformer")
    options = {"eval_limit": 8, "tokenizer_pairs": 2000, "vocab_size": 600}
    setup = get_task("es-en-transformer").build(seed=0, limit=64, options=options)
    assert 0.0 <= setup.evaluate(setup.model) <= 100.0
    assert setup.hparams["betas"] == (0.9, 0.98) and setup.hparams["weight_decay"] == 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Every task with installed data learns on a real slice
# ----------------------------------------------------------------------------------------------------------------

#: task → (limit, options, steps, lr): small slices and batches keep the whole test under a minute.
LEARNS: dict[str, tuple[int, dict[str, Any], int, float]] = {
    "digits-mlp": (256, {"batch_size": 32}, 12, 1e-3),
    "fashion-mnist-mlp": (512, {"batch_size": 32}, 12, 1e-3),
    "fashion-mnist-alexnet": (1024, {"batch_size": 32}, 32, 1e-3),  # dropout 0.5 and 8 layers: slower start
    "fashion-mnist-vgg11": (512, {"batch_size": 32}, 12, 1e-3),
    "fashion-mnist-resnet": (1024, {"batch_size": 32}, 24, 1e-3),
    "ptb-lstm1": (20 * 21 * 12, {"bptt": 20}, 12, 3e-3),
    "ptb-lstm2": (20 * 21 * 12, {"bptt": 20}, 12, 3e-3),
    "es-en-transformer": (256, {"batch_size": 16, "tokenizer_pairs": 2000, "vocab_size": 600}, 12, 1e-3),
}


def _loss(setup: TaskSetup, batch: Any) -> torch.Tensor:
    if setup.family == "language-modeling":
        return setup.loss_fn(setup.model(batch[0]), batch[1])  # from a zero state: the same every time
    if setup.step_fn is not None:
        return setup.step_fn(setup.model, batch)
    return setup.loss_fn(setup.model(batch[0]), batch[1])


@pytest.mark.parametrize("name", list(LEARNS))
def test_every_installed_task_learns_on_real_data(name: str, small_tokenizer_cache: Path) -> None:
    _require_data(name)
    limit, options, steps, lr = LEARNS[name]
    setup = get_task(name).build(preset="cpu", seed=0, limit=limit, options={**options, "eval_limit": 16})
    assert setup.steps_per_epoch == len(setup.train_loader) >= 4  # type: ignore[arg-type]
    fixed = next(iter(setup.train_loader))

    def measure() -> float:
        torch.manual_seed(123)  # same dropout masks before and after
        with torch.no_grad():
            return float(_loss(setup, fixed))

    before = measure()
    opt = torch.optim.Adam(setup.model.parameters(), lr=lr)
    clip = setup.hparams["clip_grad_norm"]
    taken = 0
    while taken < steps:
        for batch in setup.train_loader:
            opt.zero_grad()
            loss = setup.step_fn(setup.model, batch) if setup.step_fn else setup.loss_fn(setup.model(batch[0]),
                                                                                          batch[1])
            assert math.isfinite(float(loss.detach()))
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(setup.model.parameters(), clip)
            opt.step()
            taken += 1
            if taken == steps:
                break
    after = measure()
    assert after < before * 0.9, f"{name}: loss {before:.3f} -> {after:.3f}"


# ----------------------------------------------------------------------------------------------------------------
# CIFAR-10 from a fixture folder
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10-vgg11", "cifar10-resnet"])
def test_cifar_task_builds_from_a_fixture_folder_and_trains(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from epsfinder.tasks import train_task

    folder = write_cifar_fixture(tmp_path / "cifar-10-batches-py")
    monkeypatch.delenv("EPSFINDER_CIFAR10", raising=False)
    assert get_task(name).data_status() is not None
    setup = get_task(name).build(data_dir=tmp_path, options={"batch_size": 16})
    assert setup.hparams["augment"] is True and setup.hparams["train_examples"] == 40
    x, y = next(iter(setup.train_loader))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    result = train_task(name, optimizer="adam", lr=1e-3, data_dir=tmp_path, max_steps=2, progress=False,
                        options={"batch_size": 16})
    assert result.steps == 2 and not result.diverged and 0.0 <= result.best <= 1.0  # type: ignore[operator]
    monkeypatch.setenv("EPSFINDER_CIFAR10", str(folder))
    assert get_task(name).data_status() is None


def test_cifar_task_without_data_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from epsfinder.tasks.data import MissingDataError

    monkeypatch.delenv("EPSFINDER_CIFAR10", raising=False)
    with pytest.raises(MissingDataError, match="EPSFINDER_CIFAR10"):
        get_task("cifar10-vgg11").build()
