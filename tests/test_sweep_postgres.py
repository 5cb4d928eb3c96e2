"""Sweeps on a real PostgreSQL server: concurrent workers, exactly-once grid points, resume after ``kill -9``.

The session fixture starts a throwaway server with ``scripts/pg-test-server.sh`` on 127.0.0.1 (random free port),
or uses ``$EPSFINDER_TEST_PG_URL`` when set. Without the PostgreSQL binaries the tests are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import _pg  # noqa: E402
from epsfinder.sweep import _protocol as proto  # noqa: E402
from epsfinder.sweep._storage import normalize_url, open_storage  # noqa: E402

pytestmark = pytest.mark.postgres

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    yield from _pg.pg_server()


def _name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def _complete_points(trials: list) -> list[tuple[float, float]]:
    return [(t.params["lr"], t.params["eps"]) for t in trials if t.state.name == "COMPLETE"]


def test_protocol_exactly_once_postgres(pg_url: str) -> None:
    """Two processes drain a queue where every point is enqueued twice: each point completes exactly once."""
    url = normalize_url(pg_url)
    name = _name()
    study = optuna.create_study(storage=open_storage(url), study_name=name, direction="maximize")
    points = [{"lr": lr, "eps": eps} for lr in (1e-3, 1e-2) for eps in (1e-8, 1e-6, 1e-4)]
    for p in points + points:
        study.enqueue_trial(p)
    _pg.run_protocol_workers(url, name, points, n=2)
    _pg.assert_exactly_once(_pg.trials_of(url, name), points, duplicates=len(points))


def test_two_workers_finish_a_3x3_grid_once(pg_url: str, tmp_path: Path) -> None:
    """Two `epsfinder sweep` processes started together on one study (as two machines would) share a 3×3 grid."""
    name = _name()
    args = ["--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3,3e-3,1e-2", "--eps", "1e-8,1e-4,1e-1",
            "--epochs", "1", "--limit", "300", "--storage", pg_url, "--study", name, "--no-progress", "--no-report",
            "--no-baseline"]
    procs = [subprocess.Popen(_pg.sweep_cmd(*args, "--out", str(tmp_path / f"w{i}")), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, text in zip(procs, outputs, strict=True):
        assert p.returncode == 0, text
    trials = _pg.trials_of(normalize_url(pg_url), name)
    points = _complete_points(trials)
    assert len(points) == 9 and len(set(points)) == 9
    assert set(points) == {(lr, eps) for lr in (1e-3, 3e-3, 1e-2) for eps in (1e-8, 1e-4, 1e-1)}
    assert [t for t in trials if t.state.name != "COMPLETE"] == []
    pids = [t.system_attrs[proto.LEASE_KEY]["pid"] for t in trials]
    print("trials per worker pid:", {pid: pids.count(pid) for pid in set(pids)})
    # The password never reaches results or output.
    from sqlalchemy.engine import make_url

    password = make_url(pg_url).password
    stored = json.loads((tmp_path / "w0" / "sweep.json").read_text())["storage"]
    assert "***" in stored and f":{password}@" not in stored
    assert all(f":{password}@" not in text for text in outputs)


def test_sigkill_mid_trial_then_resume(pg_url: str, tmp_path: Path) -> None:
    """kill -9 a worker while a trial runs; the same command again finishes the grid, nothing run twice or lost."""
    url = normalize_url(pg_url)
    name = _name()
    # 800 digits, 2 epochs: a trial lasts a couple of seconds.
    cmd = _pg.sweep_cmd("--task", "digits-mlp", "--optimizer", "adam", "--lr", "1e-3,1e-2", "--eps", "1e-8,1e-2",
                        "--epochs", "2", "--limit", "800", "--storage", pg_url, "--study", name, "--out", str(tmp_path),
                        "--no-progress", "--no-report", "--no-baseline")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def running() -> list:
            try:
                return [t for t in _pg.trials_of(url, name)
                        if t.state.name == "RUNNING" and t.system_attrs.get(proto.LEASE_KEY)]
            except KeyError:  # the study does not exist yet
                return []

        victim = _pg.wait_for(running, timeout=180, what="a RUNNING trial")[0]
        assert victim.system_attrs[proto.LEASE_KEY]["pid"] == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {t.number: t for t in _pg.trials_of(url, name)}
    assert before[victim.number].state.name == "RUNNING"  # left behind by the dead worker
    finished_before = {n: t.datetime_complete for n, t in before.items() if t.state.name == "COMPLETE"}

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = _pg.trials_of(url, name)
    points = _complete_points(after)
    assert len(points) == len(set(points)) == 4  # none duplicated, none lost
    assert set(points) == {(lr, eps) for lr in (1e-3, 1e-2) for eps in (1e-8, 1e-2)}
    dead = next(t for t in after if t.number == victim.number)
    assert dead.state.name == "FAIL" and dead.user_attrs["reason"].startswith("worker died")
    for n, done_at in finished_before.items():  # nothing that had finished ran again
        assert next(t for t in after if t.number == n).datetime_complete == done_at
    assert len(after) == 4 + 1  # the four points, plus the dead worker's failed attempt
