"""Helpers shared by the sweep tests: a throwaway PostgreSQL server, a tiny picklable task, protocol workers.

Spawned worker processes import this module by name (the tests folder is on ``sys.path``), so it keeps its top-level
imports light.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "pg-test-server.sh"
#: CI may provide a server; otherwise the fixture starts one with scripts/pg-test-server.sh.
PG_URL_ENV = "EPSFINDER_TEST_PG_URL"


# --------------------------------------------------------------------------- PostgreSQL


def start_pg(folder: Path) -> str:
    """Start a PostgreSQL server in ``folder`` (random free port on 127.0.0.1) and return its URL.

    Raises:
        FileNotFoundError: the PostgreSQL binaries are missing (the script exits 3).
        RuntimeError: the server did not start (the script's message is included).
    """
    env = {**os.environ, "EPSFINDER_PG_DIR": str(folder)}
    env.pop("EPSFINDER_PG_PORT", None)
    proc = subprocess.run(["bash", str(PG_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode == 3:
        raise FileNotFoundError(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/pg-test-server.sh failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().splitlines()[-1]


def stop_pg(folder: Path) -> None:
    env = {**os.environ, "EPSFINDER_PG_DIR": str(folder)}
    subprocess.run(["bash", str(PG_SCRIPT), "destroy"], env=env, capture_output=True, text=True, timeout=120)


def pg_server() -> Iterator[str]:
    """Generator for a session fixture: the URL of a running server, stopped and removed afterwards.

    The server's folder is a fresh ``mkdtemp`` under the system temp folder (world-traversable), since as root the
    server runs as the ``postgres`` user, who cannot enter pytest's private temp folders.
    """
    import tempfile

    import pytest

    if os.environ.get(PG_URL_ENV):
        yield os.environ[PG_URL_ENV]
        return
    folder = Path(tempfile.mkdtemp(prefix="epsfinder-pg-"))
    try:
        url = start_pg(folder)
    except FileNotFoundError as err:
        os.rmdir(folder)
        pytest.skip(f"PostgreSQL binaries are missing, so no test server can start: {err}")
    try:
        yield url
    finally:
        stop_pg(folder)


# --------------------------------------------------------------------------- a tiny task


@dataclass
class TinyTask:
    """Two Gaussian blobs, a small MLP: a Task that trains in milliseconds (picklable for workers).

    ``epoch_sleep`` makes each evaluation sleep, to get trials that last a known time.
    """

    name: str = "tiny-blobs"
    family: str = "classification"
    metric: str = "accuracy"
    direction: str = "maximize"
    description: str = "two Gaussian blobs, a small MLP (tests)"
    epoch_sleep: float = 0.0
    n_batches: int = 6

    def build(
        self,
        *,
        preset: str = "cpu",
        seed: int = 0,
        data_dir: str | None = None,
        device: Any = "cpu",
        limit: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Any:
        import torch
        from torch import nn

        from epsfinder.tasks.base import TaskSetup

        g = torch.Generator().manual_seed(seed)
        n = 32 * self.n_batches
        y = torch.randint(0, 2, (n + 64,), generator=g)
        x = torch.randn(n + 64, 4, generator=g) + (2.0 * y - 1.0)[:, None]
        batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, n, 32)]
        xt, yt = x[n:], y[n:]
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        sleep = self.epoch_sleep

        def evaluate(m: nn.Module) -> float:
            if sleep:
                time.sleep(sleep)
            with torch.no_grad():
                return float((m(xt).argmax(1) == yt).float().mean())

        return TaskSetup(
            name=self.name, model=model, loss_fn=nn.functional.cross_entropy, train_loader=batches,
            evaluate=evaluate, metric="accuracy", direction="maximize", epochs=2, steps_per_epoch=len(batches),
            hparams={"weight_decay": 0.0, "betas": (0.9, 0.999), "clip_grad_norm": None}, family=self.family,
        )

    def data_status(self) -> str | None:
        return None


# --------------------------------------------------------------------------- protocol workers


def protocol_worker(url: str, study_name: str, points: list[dict[str, float]], sleep: float) -> None:
    """Claim and 'run' trials (a sleep) until the queue is empty; the value is lr·eps."""
    import warnings

    import optuna

    from epsfinder.sweep import _protocol as proto
    from epsfinder.sweep._storage import open_storage

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))

    def execute(trial: Any, lease: Any) -> Any:
        p = proto.trial_point(trial.study._storage.get_trial(trial._trial_id))
        time.sleep(sleep)
        lease.check()
        return proto.Outcome("COMPLETE", value=p["lr"] * p["eps"])

    proto.work(study, execute, points, heartbeat=1.0, grace=30.0)


def run_protocol_workers(url: str, name: str, points: list[dict[str, float]], n: int) -> None:
    """Start ``n`` spawned :func:`protocol_worker` processes on one study and wait for them."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=protocol_worker, args=(url, name, points, 0.05)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
        assert p.exitcode == 0, f"protocol worker exited with {p.exitcode}"


def assert_exactly_once(trials: list[Any], points: list[dict[str, float]], duplicates: int) -> None:
    """One COMPLETE trial per point (value lr·eps), ``duplicates`` refused duplicates, nothing left queued."""
    import math

    from epsfinder.sweep import _protocol as proto

    complete = [t for t in trials if t.state.name == "COMPLETE"]
    keys = [proto.point_key(proto.trial_point(t)) for t in complete]
    assert len(keys) == len(set(keys)) == len(points)
    assert set(keys) == {proto.point_key(p) for p in points}
    for t in complete:
        p = proto.trial_point(t)
        assert math.isclose(t.value, p["lr"] * p["eps"])
    refused = [t for t in trials if t.state.name == "FAIL"]
    assert len(refused) == duplicates
    assert all(t.user_attrs["reason"].startswith("duplicate of trial") for t in refused)
    assert not [t for t in trials if t.state.name in ("WAITING", "RUNNING")]


def sweep_cmd(*args: str) -> list[str]:
    """``python -m epsfinder sweep ARGS`` with this interpreter."""
    return [sys.executable, "-m", "epsfinder", "sweep", *args]


_STORAGES: dict[str, Any] = {}


def trials_of(url: str, study_name: str) -> list[Any]:
    """The study's frozen trials, read fresh from the storage (one connection pool per URL per process)."""
    import warnings

    import optuna

    from epsfinder.sweep._storage import open_storage

    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url not in _STORAGES:
        _STORAGES[url] = open_storage(url)
    storage = _STORAGES[url]
    study_id = storage.get_study_id_from_name(study_name)
    return storage.get_all_trials(study_id, deepcopy=True)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate()`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
