"""The estimate and optimizers commands, on a real slice of Fashion-MNIST."""

from __future__ import annotations

import json
import os

import pytest

from epsfinder.cli import main
from epsfinder.tasks.data import data_status

needs_fmnist = pytest.mark.skipif(
    data_status("fashion-mnist") is not None, reason="apt-get install dataset-fashion-mnist"
)


@needs_fmnist
@pytest.mark.parametrize("method", ["histogram", "paper"])
def test_estimate_on_fashion_mnist_slice(tmp_path, capsys, method):
    out = tmp_path / "run"
    rc = main(
        [
            "estimate",
            "--task",
            "fashion-mnist-mlp",
            "--optimizer",
            "adam",
            "--limit",
            "2048",
            "--method",
            method,
            "--out",
            str(out),
            "--no-progress",
            "--no-report",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "ε range: [" in text and "adaptability" in text and "net.1.weight" in text
    d = json.loads((out / "result.json").read_text())
    assert {"lower", "upper", "raw_lower", "raw_upper", "optimizer", "method", "layers"} <= set(d)
    assert d["method"] == method and d["optimizer"] == "adam" and d["steps_per_epoch"] == 16
    assert d["lower"] <= d["raw_lower"] * 10**0.5 and d["upper"] >= d["raw_upper"] / 10**0.5
    assert all(ly["numel"] > 0 for ly in d["layers"])


def test_optimizers_lists_every_supported_name(capsys):
    assert main(["optimizers"]) == 0
    text = capsys.readouterr().out
    for name in (
        "adam",
        "adamw",
        "amsgrad",
        "nadam",
        "radam",
        "adamax",
        "rmsprop",
        "rmsprop-centered",
        "adagrad",
        "adabelief",
        "diffgrad",
        "adamod",
        "madgrad",
        "eadam",
        "adamomentum",
    ):
        assert f"\n{name} " in text
    assert "register_term" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "sgd"], "SGD has no adaptive term"),
        (["--optimizer", "adamm"], "unknown optimizer name 'adamm'; choose one of"),
        (["--task", "nope"], "nope"),
    ],
)
def test_estimate_bad_input(args, message, capsys):
    assert main(["estimate", *args, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_missing_data_says_how_to_install(tmp_path, capsys):
    rc = main(["estimate", "--task", "fashion-mnist-mlp", "--data-dir", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "apt-get install" in capsys.readouterr().err


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "epsfinder", "--version"], capture_output=True, text=True, env={**os.environ}, check=True
    )
    assert r.stdout.startswith("epsfinder ")
