"""Tests for :mod:`epsfinder.sweep`: grid specs, the exactly-once protocol, SQLite end to end, bad input.

PostgreSQL tests live in ``test_sweep_postgres.py``. Real-task tests use ``digits-mlp`` with a few hundred
examples and one epoch; protocol tests use a tiny task or no training at all.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import multiprocessing
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

optuna = pytest.importorskip("optuna")

import _pg  # noqa: E402
from epsfinder.cli import main  # noqa: E402
from epsfinder.sweep import (  # noqa: E402
    TRIALS_CSV_COLUMNS,
    SweepResult,
    log_range,
    paper_eps_grid,
    paper_lr_grid,
    parse_values,
    redact,
    run_sweep,
    sgd_equivalent_lr,
)
from epsfinder.sweep import _protocol as proto  # noqa: E402
from epsfinder.sweep._storage import default_storage_url, normalize_url, open_storage  # noqa: E402

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)

SWEEP_KEYS = {"task", "optimizer", "metric", "direction", "study", "storage", "eps_spec", "range", "grid", "trials",
              "best", "baseline"}
TRIAL_KEYS = {"number", "lr", "eps", "beta2", "state", "value", "duration_s", "reason"}


def _n_trials(db: Path) -> int:
    """Trials in every study of a SQLite storage (0 when the file does not exist)."""
    if not db.exists():
        return 0
    storage = open_storage(f"sqlite:///{db}")
    try:
        return sum(len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies())
    finally:
        storage.engine.dispose()


# --------------------------------------------------------------------------- specs


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1e-4:1e-1", [1e-4, 1e-3, 1e-2, 1e-1]),
        ("1e-2:1e-1:2", [1e-2, 10**-1.5, 1e-1]),
        ("1e-8,1e-6", [1e-8, 1e-6]),
        ("1e-6, 1e-8,1e-6", [1e-8, 1e-6]),
        ("3e-4", [3e-4]),
        ("1e-3:1e-3", [1e-3]),
        (0.01, [0.01]),
        ([1e-3, 1e-4], [1e-4, 1e-3]),
    ],
)
def test_parse_values(spec: Any, expected: list[float]) -> None:
    got = parse_values(spec, what="--lr")
    assert len(got) == len(expected)
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, expected))


def test_parse_values_per_decade_three() -> None:
    got = parse_values("1e-4:1e-1:3", what="--lr")
    assert len(got) == 10 and got[0] == 1e-4 and got[-1] == 1e-1
    assert all(math.isclose(math.log10(b / a), 1 / 3, rel_tol=1e-6) for a, b in itertools.pairwise(got))


def test_parse_beta2_range_spaces_one_minus_beta() -> None:
    assert parse_values("0.9:0.9999", what="--beta2", beta=True) == [0.9, 0.99, 0.999, 0.9999]
    assert parse_values("0.99,0.999", what="--beta2", beta=True) == [0.99, 0.999]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("1e-1:1e-4", r"inverted --lr range '1e-1:1e-4': lo=0.1 is above hi=0.0001; write 1e-4:1e-1"),
        ("1e-3,abc", r"'abc' is not a number"),
        ("", r"empty --lr"),
        ("1e-4:", r"malformed --lr range"),
        ("1e-4:1e-1:0", r"values per decade must be a whole number"),
        ("1e-4:1e-1:1.5", r"values per decade must be a whole number"),
        ("1e-3,,1e-2", r"an item is empty"),
        ("-1e-3", r"--lr values must be positive, got -0.001"),
        ("0:1e-2", r"must be positive"),
        ("1e-3:inf", r"is not finite"),
        ([], r"empty --lr list"),
    ],
)
def test_parse_values_errors(spec: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_values(spec, what="--lr")


def test_parse_beta2_out_of_bounds() -> None:
    with pytest.raises(ValueError, match=r"--beta2 values must lie in \[0, 1\), got 1.0"):
        parse_values("0.9,1.0", what="--beta2", beta=True)


@settings(max_examples=200, deadline=None)
@given(
    lo_exp=st.floats(min_value=-20, max_value=2),
    span=st.floats(min_value=0.05, max_value=12),
    k=st.integers(min_value=1, max_value=6),
)
def test_log_range_property(lo_exp: float, span: float, k: int) -> None:
    lo, hi = 10.0**lo_exp, 10.0 ** (lo_exp + span)
    values = parse_values(f"{lo!r}:{hi!r}:{k}", what="--eps")
    assert values[0] == lo and values[-1] == hi  # both ends exactly
    assert all(a < b for a, b in itertools.pairwise(values))  # strictly increasing
    assert all(lo <= v <= hi for v in values)
    steps = [math.log10(b / a) for a, b in itertools.pairwise(values)]
    assert max(steps) <= 1 / k + 1e-9  # at least k values per decade
    assert max(steps) - min(steps) < 1e-9 * max(1.0, span) + 1e-10 * len(values)  # log-even
    assert len(values) == max(1, math.ceil(span * k - 1e-9)) + 1


def test_log_range_errors() -> None:
    with pytest.raises(ValueError, match="inverted range"):
        log_range(1.0, 0.1)
    with pytest.raises(ValueError, match="positive finite"):
        log_range(0.0, 0.1)


def test_paper_grids() -> None:
    eps, notes = paper_eps_grid("adam", "classification")
    assert eps == [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1] and notes == []
    eps, _ = paper_eps_grid("adabelief", "classification")
    assert eps == [1e-16, 1e-14, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4]
    eps, _ = paper_eps_grid("rmsprop", "language-modeling")
    assert eps == [1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3]
    eps, _ = paper_eps_grid("adamomentum", "language-modeling")
    assert eps == [1e-20, 1e-18, 1e-16, 1e-14, 1e-12, 1e-10, 1e-8]
    eps, notes = paper_eps_grid("adam", "translation")
    assert eps[0] == 1e-9 and any("translation" in n and "language-modeling" in n for n in notes)
    eps, notes = paper_eps_grid("nadam", "classification")
    assert eps[0] == 1e-8 and any("nadam" in n for n in notes)
    lr, _ = paper_lr_grid("adam", "classification")
    assert lr[0] == 2e-5 and lr[-1] == 5e-2 and len(lr) == 11
    lr, _ = paper_lr_grid("adam", "language-modeling")
    assert lr[0] == 1e-4 and lr[-1] == 1e-1 and len(lr) == 10


def test_redact_and_urls(tmp_path: Path) -> None:
    assert redact("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert redact("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert default_storage_url(tmp_path) == f"sqlite:///{tmp_path.resolve()}/study.db"
    assert normalize_url(str(tmp_path / "s.db")) == f"sqlite:///{tmp_path.resolve()}/s.db"
    assert normalize_url("postgresql://u:p@h/d").startswith("postgresql")


def test_sgd_equivalent_lr_matches_recommend() -> None:
    import torch

    from epsfinder.estimate import EpsilonRange, LayerStats
    from epsfinder.histogram import LogHistogram

    layer = LayerStats("w", (2,), 0, 1e-6, 1e-2, LogHistogram.of(torch.tensor([1e-6, 1e-2])))
    for family, b2 in (("magnitude", 0.999), ("squared", 0.99)):
        rng = EpsilonRange(1e-6, 1e-2, 1e-6, 1e-2, "adam", family, "paper", [layer],
                           hyperparameters={"lr": 1e-3, "betas": (0.9, b2)})
        assert math.isclose(rng.recommend(lr=1e-3).sgd_lr, sgd_equivalent_lr(1e-3, 1e-2, family, b2))


# --------------------------------------------------------------------------- protocol


def _new_study(url: str, name: str) -> Any:
    return optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")


def test_claim_is_exactly_once_under_concurrency_sqlite(tmp_path: Path) -> None:
    """Two processes, 8 points each queued twice: every point completes once; every duplicate is refused."""
    url = f"sqlite:///{tmp_path}/p.db"
    study = _new_study(url, "stress")
    points = [{"lr": lr, "eps": eps} for lr in (1e-3, 1e-2) for eps in (1e-8, 1e-6, 1e-4, 1e-2)]
    for p in points + points:
        study.enqueue_trial(p)
    _pg.run_protocol_workers(url, "stress", points, n=2)
    _pg.assert_exactly_once(study.get_trials(), points, duplicates=len(points))


def _dead_pid() -> int:
    proc = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    proc.start()
    proc.join()
    return proc.pid


def test_dead_worker_is_reaped_and_point_requeued(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/d.db"
    study = _new_study(url, "dead")
    points = [{"lr": 1e-3, "eps": 1e-8}, {"lr": 1e-3, "eps": 1e-4}]
    for p in points:
        study.enqueue_trial(p)
    storage = study._storage
    # Trial 0: claimed by a process on this host that has died since (kill -9 leaves exactly this).
    t0 = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    assert storage.set_trial_state_values(t0._trial_id, optuna.trial.TrialState.RUNNING)
    storage.set_trial_system_attr(t0._trial_id, proto.LEASE_KEY,
                                  {"host": proto._HOST, "pid": _dead_pid(), "start": None, "beat": time.time()})
    # Trial 1: claimed on another host, heartbeat fresh: alive.
    t1 = study.get_trials(states=(optuna.trial.TrialState.WAITING,))[0]
    assert storage.set_trial_state_values(t1._trial_id, optuna.trial.TrialState.RUNNING)
    storage.set_trial_system_attr(t1._trial_id, proto.LEASE_KEY,
                                  {"host": "elsewhere/1", "pid": 1, "start": None, "beat": time.time()})
    assert not proto.is_alive(storage.get_trial(t0._trial_id))
    assert proto.is_alive(storage.get_trial(t1._trial_id))
    assert not proto.is_alive(storage.get_trial(t1._trial_id), now=time.time() + 120)  # beat too old

    reaped, enqueued = proto.reconcile(study, points)
    assert (reaped, enqueued) == (1, 1)
    t0 = storage.get_trial(t0._trial_id)
    assert t0.state.name == "FAIL" and t0.user_attrs["reason"].startswith("worker died")
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [proto.trial_point(t) for t in waiting] == [points[0]]
    assert proto.reconcile(study, points) == (0, 0)  # idempotent


def test_worker_declared_dead_loses_its_result(tmp_path: Path) -> None:
    """A trial failed by another process (false death) cannot be told COMPLETE afterwards."""
    url = f"sqlite:///{tmp_path}/l.db"
    study = _new_study(url, "lost")
    study.enqueue_trial({"lr": 1e-3, "eps": 1e-8})
    trial, lease = proto.claim(study)
    try:
        assert proto._fail(study, trial._trial_id, "worker-died", "worker died (test)")
        lease.beat()
        assert lease.lost
        with pytest.raises(proto.LeaseLost):
            lease.check()
        assert not proto.finish(study, trial, proto.Outcome("COMPLETE", value=1.0))
    finally:
        lease.stop()
    assert [t.state.name for t in study.get_trials()] == ["FAIL"]


def test_claim_never_creates_trials(tmp_path: Path) -> None:
    study = _new_study(f"sqlite:///{tmp_path}/e.db", "empty")
    assert proto.claim(study) is None
    assert study.get_trials() == []


# --------------------------------------------------------------------------- run_sweep on a tiny task


def test_run_sweep_user_task_and_baseline(tmp_path: Path) -> None:
    """A user's Task object works; a best ε at the top of the grid triggers the SGD + momentum baseline."""
    task = _pg.TinyTask()
    r = run_sweep(task, optimizer="adam", lr="1e-2,1e-1", eps="1e-1", epochs=1, out=tmp_path, progress=False,
                  report=False)
    assert [t["state"] for t in r.trials] == ["COMPLETE", "COMPLETE"]
    assert r.best is not None and r.best["eps"] == 0.1
    assert r.baseline is not None and r.baseline["optimizer"] == "sgd"
    assert math.isclose(r.baseline["lr"], (1 - 0.9) * r.best["lr"] / 0.1)  # torch SGD(momentum=0.9)
    assert "top of the ε grid" in r.baseline["reason"] and r.baseline["value"] is not None
    assert r.complete
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["baseline"] == r.baseline
    # Resume: nothing runs again, the stored baseline is reused.
    again = run_sweep(task, optimizer="adam", lr="1e-2,1e-1", eps="1e-1", epochs=1, out=tmp_path, progress=False,
                      report=False)
    assert [t["number"] for t in again.trials] == [0, 1] and again.baseline == r.baseline


def test_run_sweep_diverged_trial_is_fail_and_sweep_goes_on(tmp_path: Path) -> None:
    r = run_sweep(_pg.TinyTask(), optimizer="adam", lr="1e-2,1e30", eps="1e-8", epochs=1, out=tmp_path,
                  progress=False, report=False, baseline=False)
    by_lr = {t["lr"]: t for t in r.trials}
    assert by_lr[1e-2]["state"] == "COMPLETE"
    assert by_lr[1e30]["state"] == "FAIL" and by_lr[1e30]["reason"].startswith("diverged at step ")
    assert r.complete  # a diverged point is finished
    assert run_sweep(_pg.TinyTask(), optimizer="adam", lr="1e-2,1e30", eps="1e-8", epochs=1, out=tmp_path,
                     progress=False, report=False, baseline=False).trials == r.trials


def test_run_sweep_beta2_grid_and_auto(tmp_path: Path) -> None:
    r = run_sweep(_pg.TinyTask(), optimizer="rmsprop", lr="1e-2", eps="1e-8", beta2="0.9,0.99", epochs=1,
                  out=tmp_path / "a", progress=False, report=False)
    assert r.grid["beta2"] == [0.9, 0.99] and sorted(t["beta2"] for t in r.trials) == [0.9, 0.99]
    r = run_sweep(_pg.TinyTask(), optimizer="adam", lr="1e-2", eps="1e-8", beta2="auto", epochs=1,
                  out=tmp_path / "b", progress=False, report=False)
    assert r.grid["beta2"] == [0.9]  # 6 batches per epoch: 1/(1 - 0.9) = 10 >= 6
    r = run_sweep(_pg.TinyTask(), optimizer="adam", lr="1e-2", eps="1e-8", epochs=1, out=tmp_path / "c",
                  progress=False, report=False)
    assert r.grid["beta2"] == [None] and r.trials[0]["beta2"] is None


def test_run_sweep_two_local_workers(tmp_path: Path) -> None:
    task = _pg.TinyTask(epoch_sleep=0.3)
    r = run_sweep(task, optimizer="adam", lr="1e-2,1e-1", eps="1e-8,1e-4", epochs=1, out=tmp_path, workers=2,
                  progress=False, report=False, baseline=False)
    keys = [(t["lr"], t["eps"]) for t in r.trials if t["state"] == "COMPLETE"]
    assert len(keys) == len(set(keys)) == 4


def test_pruning_records_pruned_trials(tmp_path: Path) -> None:
    """ε = 1e3 makes Adam's steps tiny, so that trial trails the median of the first two after one epoch."""
    r = run_sweep(_pg.TinyTask(), optimizer="adam", lr="1e-1", eps="1e-8,1e-6,1e3", epochs=2, out=tmp_path,
                  pruning=True, progress=False, report=False, baseline=False)
    assert [t["state"] for t in r.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert r.trials[2]["reason"].startswith("pruned by the median rule after epoch 1") and r.complete


# --------------------------------------------------------------------------- bad input


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


BAD_INPUT = [
    (["--lr", "1e-1:1e-4"], r"inverted --lr range '1e-1:1e-4'"),
    (["--lr", "1e-3", "--eps", "1e-2:1e-8"], r"inverted --eps range"),
    (["--lr", "1e-3,oops"], r"malformed --lr value '1e-3,oops': 'oops' is not a number"),
    (["--lr", "1e-3", "--eps", "1e-8:1e-2:0"], r"values per decade must be a whole number"),
    (["--lr", "1e-3", "--eps", ""], r"empty --eps"),
    (["--lr", "1e-3", "--optimizer", "adamx"], r"unknown optimizer 'adamx'; choose one of: .*adam"),
    (["--lr", "1e-3", "--optimizer", "sgd"], r"optimizer 'sgd' has no ε to sweep"),
    (["--lr", "1e-3", "--optimizer", "adagrad", "--beta2", "0.99"], r"optimizer 'adagrad' has no β2; drop --beta2"),
    (["--lr", "1e-3", "--beta2", "0.9:1.5"], r"--beta2 values must lie in \[0, 1\)"),
    (["--lr", "1e-3", "--task", "no-such-task"], r"unknown task 'no-such-task'; choose one of"),
    (["--lr", "1e-3", "--workers", "0"], r"workers must be a whole number >= 1"),
    (["--lr", "1e-3", "--preset", "huge"], r"unknown preset 'huge' for task 'digits-mlp'; choose one of: cpu, paper"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUT)
def test_bad_input_fails_before_any_trial(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"--task": "digits-mlp", "--optimizer": "adam", "--eps": "1e-8"}
    for k, v in zip(extra[::2], extra[1::2]):
        base[k] = v
    args = ["sweep", "--out", str(tmp_path), "--no-progress", *[x for kv in base.items() for x in kv]]
    code, err = _cli(args, capsys)
    assert code == 2
    import re

    assert re.search(message, err), err
    assert _n_trials(tmp_path / "study.db") == 0


def test_unreachable_storage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:  # a free port: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://bob:s3cret@127.0.0.1:{port}/nodb"
    code, err = _cli(["sweep", "--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3", "--eps", "1e-8",
                      "--storage", url, "--out", str(tmp_path), "--no-progress"], capsys)
    assert code == 2
    assert f"cannot reach the storage postgresql+psycopg2://bob:***@127.0.0.1:{port}/nodb" in err or (
        f"cannot reach the storage postgresql://bob:***@127.0.0.1:{port}/nodb" in err)
    assert "s3cret" not in err and "leave out --storage" in err
    assert not (tmp_path / "study.db").exists()
    code, err = _cli(["sweep", "--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3", "--eps", "1e-8",
                      "--storage", f"sqlite:///{tmp_path}/missing/dir/s.db", "--out", str(tmp_path)], capsys)
    assert code == 2 and "does not exist; create it" in err


def test_existing_study_with_other_grid(tmp_path: Path) -> None:
    task = _pg.TinyTask()
    run_sweep(task, optimizer="adam", lr="1e-2", eps="1e-8,1e-6", epochs=1, out=tmp_path, progress=False,
              report=False, baseline=False)
    n = _n_trials(tmp_path / "study.db")
    mismatch = r"eps: stored \[1e-08, 1e-06\], now \[1e-08, 1e-07\].*--study tiny-blobs-adam-2"
    with pytest.raises(ValueError, match=mismatch):
        run_sweep(task, optimizer="adam", lr="1e-2", eps="1e-8,1e-7", epochs=1, out=tmp_path, progress=False,
                  report=False)
    with pytest.raises(ValueError, match=r"epochs: stored 1, now 2"):
        run_sweep(task, optimizer="adam", lr="1e-2", eps="1e-8,1e-6", epochs=2, out=tmp_path, progress=False,
                  report=False)
    assert _n_trials(tmp_path / "study.db") == n
    # Another name starts a new study in the same storage.
    r = run_sweep(task, optimizer="adam", lr="1e-2", eps="1e-8,1e-7", epochs=1, out=tmp_path, study="other",
                  progress=False, report=False, baseline=False)
    assert r.study == "other" and len(r.trials) == 2


def test_sweep_error_names_optuna_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(ImportError, match=r"pip install 'epsfinder\[sweep\]'"):
        run_sweep("digits-mlp", optimizer="adam", lr="1e-3", eps="1e-8", out="unused")


# --------------------------------------------------------------------------- SQLite end to end on digits-mlp


def test_cli_sqlite_end_to_end_auto_and_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    args = ["sweep", "--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3:1e-2", "--eps", "auto",
            "--epochs", "1", "--limit", "200", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "best: trial" in printed and f"wrote {out / 'sweep.json'}" in printed
    with (out / "trials.csv").open() as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == TRIALS_CSV_COLUMNS
    data = json.loads((out / "sweep.json").read_text())
    assert set(data) == SWEEP_KEYS
    assert data["eps_spec"] == "auto" and data["storage"] == f"sqlite:///{out.resolve()}/study.db"
    rng = json.loads((out / "range.json").read_text())
    assert data["range"]["lower"] == rng["lower"] and data["grid"]["eps"] == rng["grid"]
    assert data["grid"]["lr"] == [1e-3, 1e-2] and data["grid"]["beta2"] == [None]
    assert len(data["trials"]) == 2 * len(rng["grid"]) == len(rows) - 1
    assert all(set(t) == TRIAL_KEYS and t["state"] == "COMPLETE" for t in data["trials"])
    assert data["best"] in data["trials"]
    assert (data["baseline"] is None) == (data["best"]["eps"] != rng["upper"])
    first = SweepResult.from_json(out)
    assert first.range.lower == rng["lower"]

    # The same command again: nothing runs (same trials, same completion times).
    before = {t.number: t.datetime_complete for t in _pg.trials_of(default_storage_url(out), "digits-mlp-adam")}
    (out / "range.json").unlink()
    import epsfinder.sweep._run as run_mod

    def no_estimate(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a resumed sweep must reuse the stored range")

    monkeypatch.setattr(run_mod, "_estimate", no_estimate)
    assert main(args) == 0
    assert json.loads((out / "range.json").read_text())["lower"] == rng["lower"]  # rewritten from the study
    after = {t.number: t.datetime_complete for t in _pg.trials_of(default_storage_url(out), "digits-mlp-adam")}
    assert after == before
    assert json.loads((out / "sweep.json").read_text())["trials"] == data["trials"]


def test_cli_writes_results_even_when_interrupted(tmp_path: Path) -> None:
    """An interrupted worker's trial is recorded as FAIL ("interrupted") and re-run by the next start."""
    task = _pg.TinyTask()

    calls = {"n": 0}
    import epsfinder.tasks as tasks_mod

    real = tasks_mod.train_task

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    tasks_mod.train_task = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            run_sweep(task, optimizer="adam", lr="1e-2,1e-1", eps="1e-8", epochs=1, out=tmp_path, progress=False,
                      report=False)
    finally:
        tasks_mod.train_task = real
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert [t["state"] for t in data["trials"]] == ["COMPLETE", "FAIL"]
    assert data["trials"][1]["reason"].startswith("interrupted")
    r = run_sweep(task, optimizer="adam", lr="1e-2,1e-1", eps="1e-8", epochs=1, out=tmp_path, progress=False,
                  report=False, baseline=False)
    assert [t["state"] for t in r.trials] == ["COMPLETE", "FAIL", "COMPLETE"] and r.complete
