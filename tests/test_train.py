"""Tests for :func:`epsfinder.tasks.train_task`, :class:`TrainResult`, and the ``tasks`` / ``train`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _tasks_helpers import NAMES
from epsfinder.cli import main
from epsfinder.errors import UnsupportedOptimizerError
from epsfinder.tasks import TrainResult, get_task, train_task


@pytest.fixture(autouse=True)
def _digits_installed() -> None:
    status = get_task("digits-mlp").data_status()
    if status is not None:
        pytest.skip(f"digits data not installed: {status}")


def quick(**kwargs: object) -> TrainResult:
    args: dict[str, object] = {"optimizer": "adam", "lr": 1e-3, "epochs": 2, "limit": 256, "progress": False}
    args.update(kwargs)
    return train_task("digits-mlp", **args)  # type: ignore[arg-type]


def test_train_task_records_every_epoch_and_writes_metrics_json(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []
    result = quick(out=tmp_path, on_epoch=lambda i, m: seen.append((i, m)))
    assert [e["epoch"] for e in result.epochs] == [1, 2]
    assert [i for i, _ in seen] == [0, 1]
    assert [m for _, m in seen] == [e["metric"] for e in result.epochs]
    assert result.best == max(e["metric"] for e in result.epochs)
    assert all(0.0 <= e["metric"] <= 1.0 and e["train_loss"] > 0 and e["wall_s"] > 0 for e in result.epochs)
    assert result.metric == "accuracy" and result.direction == "maximize" and not result.diverged
    assert result.steps == 2 * result.steps_per_epoch == 16  # 256 images / batch 32
    hp = result.hyperparameters
    assert (hp["lr"], hp["eps"], hp["beta2"], hp["weight_decay"], hp["epochs"], hp["preset"], hp["seed"]) == (
        1e-3, 1e-8, 0.999, 5e-4, 2, "cpu", 0)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == result.to_dict()
    assert TrainResult.from_json(tmp_path / "metrics.json") == TrainResult.from_dict(saved)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_the_loss_falls_over_epochs() -> None:
    result = quick(epochs=3, limit=512)
    losses = [e["train_loss"] for e in result.epochs]
    assert losses[-1] < losses[0] * 0.7


def test_same_seed_gives_identical_losses_and_another_seed_does_not() -> None:
    a, b, c = quick(seed=3), quick(seed=3), quick(seed=4)
    assert [e["train_loss"] for e in a.epochs] == [e["train_loss"] for e in b.epochs]
    assert [e["metric"] for e in a.epochs] == [e["metric"] for e in b.epochs]
    assert [e["train_loss"] for e in a.epochs] != [e["train_loss"] for e in c.epochs]


def test_divergence_stops_the_run_and_is_recorded(tmp_path: Path) -> None:
    result = quick(optimizer="sgd", lr=1e6, epochs=3, out=tmp_path)
    assert result.diverged and isinstance(result.diverged_step, int) and result.diverged_step >= 1
    assert result.steps == result.diverged_step - 1 and result.epochs == [] and result.best is None
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["diverged"] is True and saved["diverged_step"] == result.diverged_step


def test_on_epoch_exceptions_propagate_after_metrics_are_saved(tmp_path: Path) -> None:
    class Pruned(Exception):
        pass

    def prune(epoch: int, metric: float) -> None:
        raise Pruned(epoch)

    with pytest.raises(Pruned):
        quick(out=tmp_path, on_epoch=prune)
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 1


def test_probe_writes_the_epsilon_range(tmp_path: Path) -> None:
    from epsfinder import EpsilonRange

    result = quick(probe=True, out=tmp_path, epochs=1)
    assert (tmp_path / "result.json").is_file() and result.probe is not None
    loaded = EpsilonRange.from_json(tmp_path / "result.json")
    assert loaded.lower == result.probe["lower"] and loaded.upper == result.probe["upper"]
    assert 0 < loaded.lower <= loaded.upper
    with pytest.raises(UnsupportedOptimizerError, match="adaptive"):
        quick(optimizer="sgd", lr=0.1, probe=True)


def test_max_steps_ends_with_a_partial_epoch() -> None:
    result = quick(max_steps=3, epochs=5)
    assert result.steps == 3 and len(result.epochs) == 1 and result.epochs[0]["steps"] == 3


def test_lr_milestones_decay_the_learning_rate() -> None:
    result = quick(epochs=3, options={"lr_milestones": [1, 2]})
    assert [e["lr"] for e in result.epochs] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_beta2_defaults_to_the_presets_and_maps_to_rmsprop_alpha() -> None:
    assert quick(optimizer="rmsprop", epochs=1, max_steps=1).hyperparameters["beta2"] == 0.999
    assert quick(optimizer="adam", beta2=0.95, epochs=1, max_steps=1).hyperparameters["beta2"] == 0.95
    sgd = quick(optimizer="sgd", lr=0.01, epochs=1, max_steps=1).hyperparameters
    assert sgd["eps"] is None and sgd["beta2"] is None


def test_bad_arguments_name_the_valid_values() -> None:
    with pytest.raises(ValueError, match=r"unknown optimizer name 'adamm'.*adam.*rmsprop.*sgd"):
        quick(optimizer="adamm")
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        train_task("nope", optimizer="adam", lr=1e-3)
    with pytest.raises(ValueError, match=r"unknown preset 'gpu'.*cpu, paper"):
        quick(preset="gpu")
    with pytest.raises(ValueError, match="has no ε"):
        quick(optimizer="sgd", eps=1e-8)
    with pytest.raises(ValueError, match="lr must be a positive"):
        quick(lr=0.0)


def test_language_model_trains_with_clipping_and_reports_perplexity() -> None:
    if get_task("ptb-lstm1").data_status() is not None:
        pytest.skip("ptb not installed")
    result = train_task("ptb-lstm1", optimizer="adam", lr=1e-3, limit=20 * 36 * 4, max_steps=3, progress=False,
                        options={"eval_limit": 2000})
    assert result.hyperparameters["clip_grad_norm"] == 0.25 and result.hyperparameters["weight_decay"] == 1.2e-6
    assert result.metric == "perplexity" and result.direction == "minimize"
    assert 1.0 < result.best < 20000  # type: ignore[operator]


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def test_cli_tasks_lists_all_ten(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert name in out
    assert "accuracy (max)" in out and "perplexity (min)" in out and "bleu (max)" in out
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows][:10] == NAMES
    assert all(r["data"] in ("installed", "missing") for r in rows)


def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["train", "--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3", "--eps", "1e-8",
                 "--epochs", "2", "--limit", "256", "--no-progress", "--probe", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "epoch 1:" in printed and "epoch 2:" in printed and "best accuracy:" in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["task"] == "digits-mlp" and len(saved["epochs"]) == 2 and saved["diverged"] is False
    assert saved["hyperparameters"]["eps"] == 1e-8
    assert (out / "result.json").is_file()


def test_cli_train_exits_1_when_the_run_diverges(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--task", "digits-mlp", "--optimizer", "sgd", "--lr", "1e6", "--limit", "256",
                 "--no-progress", "--out", str(tmp_path)])
    assert code == 1
    assert "diverged at step" in capsys.readouterr().err
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["diverged"] is True and isinstance(saved["diverged_step"], int)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--task", "nope", "--optimizer", "adam"], "unknown task 'nope'"),
        (["--task", "digits-mlp", "--optimizer", "adamm"], "unknown optimizer name 'adamm'"),
        (["--task", "digits-mlp", "--optimizer", "adam", "--preset", "big"], "unknown preset 'big'"),
        (["--task", "digits-mlp", "--optimizer", "adam", "--option", "widht=1"], "unknown option 'widht'"),
    ],
)
def test_cli_train_usage_errors_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", *argv, "--lr", "1e-3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    if "task" in message:
        assert "digits-mlp" in err and "es-en-transformer" in err


def test_cli_train_missing_data_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EPSFINDER_CIFAR10", raising=False)
    code = main(["train", "--task", "cifar10-vgg11", "--optimizer", "adam", "--lr", "1e-3", "--out", str(tmp_path)])
    assert code == 2
    assert "cifar10 data not found" in capsys.readouterr().err
