"""``run_sweep``: a grid over (lr, ε, β2) on an Optuna storage, run exactly once per point, resumable.

The objective of a trial is the task's metric, best over its epochs (``TrainResult.best``), optimised in the task's
direction. Results land in ``out``: ``trials.csv``, ``sweep.json``, ``range.json`` (for ``auto``/``ends``) and, when
``epsfinder.report`` is available, ``report.html``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import multiprocessing
import os
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from epsfinder.errors import EpsfinderError
from epsfinder.estimate import sgd_equivalent_lr as _sgd_lr
from epsfinder.sweep import _protocol as proto
from epsfinder.sweep._spec import describe, paper_eps_grid, paper_lr_grid, parse_values, unit_family
from epsfinder.sweep._storage import check_reachable, default_storage_url, normalize_url, open_storage, redact

__all__ = ["SweepError", "SweepResult", "run_sweep"]

log = logging.getLogger("epsfinder.sweep")

ATTR_CONFIG = "epsfinder:config"
ATTR_GRID = "epsfinder:grid"
ATTR_RANGE = "epsfinder:range"
ATTR_NOTES = "epsfinder:notes"
ATTR_ENQUEUED = "epsfinder:enqueued"
ATTR_BASELINE = "epsfinder:baseline"
#: Config keys that must match for a run to join or resume a study.
_CONFIG_KEYS = ("task", "optimizer", "epochs", "preset", "seed", "limit")
#: A range dict larger than this (characters of JSON) is stored in the study without its snapshots.
_MAX_ATTR_CHARS = 60_000
TRIALS_CSV_COLUMNS = ("number", "lr", "eps", "beta2", "state", "value", "duration_s")
EPS_KEYWORDS = ("auto", "ends", "paper-grid")


class SweepError(EpsfinderError, RuntimeError):
    """A sweep could not finish (a worker process failed); the message says which and where its log is."""


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise ImportError(f"sweeps need Optuna: pip install 'epsfinder[sweep]' ({err})") from None
    return optuna


# --------------------------------------------------------------------------- result


@dataclass
class SweepResult:
    """What a sweep found; ``to_dict()`` is exactly ``sweep.json``.

    Attributes:
        task, optimizer, metric, direction, study: what was swept.
        storage: the storage URL with its password hidden.
        eps_spec: the ε specification as given (``"auto"``, ``"ends"``, ``"paper-grid"``, a list or range).
        range: the estimated :class:`~epsfinder.EpsilonRange` for ``auto``/``ends``, else None.
        grid: ``{"lr": [...], "eps": [...], "beta2": [...] or [None]}``.
        trials: one dict per trial: ``number, lr, eps, beta2, state, value, duration_s, reason``.
        best: the best COMPLETE trial (same keys), or None.
        baseline: SGD + momentum at the equivalent learning rate when the best ε is the upper end, else None.
        out: the output folder.
    """

    task: str
    optimizer: str
    metric: str
    direction: str
    study: str
    storage: str
    eps_spec: str
    range: Any
    grid: dict[str, list[Any]]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    baseline: dict[str, Any] | None
    out: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every grid point has a finished trial (COMPLETE, PRUNED, or FAIL as diverged)."""
        points = {proto.point_key(p) for p in grid_points(self.grid)}
        done = {
            proto.point_key({k: t[k] for k in ("lr", "eps", "beta2") if t[k] is not None or k != "beta2"})
            for t in self.trials
            if t["state"] in ("COMPLETE", "PRUNED") or (t["state"] == "FAIL" and _final_reason(t["reason"]))
        }
        return points <= done

    def to_dict(self) -> dict[str, Any]:
        rng = self.range
        return {
            "task": self.task,
            "optimizer": self.optimizer,
            "metric": self.metric,
            "direction": self.direction,
            "study": self.study,
            "storage": self.storage,
            "eps_spec": self.eps_spec,
            "range": rng.to_dict() if hasattr(rng, "to_dict") else rng,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "trials": [dict(t) for t in self.trials],
            "best": dict(self.best) if self.best else None,
            "baseline": dict(self.baseline) if self.baseline else None,
        }

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False, default=float)
        if path is not None:
            _write_atomic(Path(path), text + "\n")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> SweepResult:
        """Read ``sweep.json`` back (``range`` becomes an :class:`~epsfinder.EpsilonRange` when present)."""
        from epsfinder.estimate import EpsilonRange

        p = Path(path)
        if p.is_dir():
            p = p / "sweep.json"
        d = json.loads(p.read_text(encoding="utf-8"))
        rng = EpsilonRange.from_dict(d["range"]) if d.get("range") else None
        return cls(
            task=d["task"], optimizer=d["optimizer"], metric=d["metric"], direction=d["direction"], study=d["study"],
            storage=d["storage"], eps_spec=d["eps_spec"], range=rng, grid=d["grid"], trials=d["trials"],
            best=d["best"], baseline=d["baseline"], out=p.parent,
        )

    def summary(self) -> str:
        """Plain text: the grid, counts per state, the best trial and the baseline."""
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t["state"]] = counts.get(t["state"], 0) + 1
        b2 = self.grid.get("beta2", [None])
        lines = [
            f"sweep {self.study}: {self.task}, {self.optimizer}, {self.metric} ({self.direction})",
            f"storage {self.storage}",
            f"grid: lr {describe(self.grid['lr'])}; eps {describe(self.grid['eps'])}"
            + ("" if b2 == [None] else f"; beta2 {describe(b2)}"),
            "trials: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"),
        ]
        if self.range is not None and hasattr(self.range, "lower"):
            lines.append(f"estimated ε range: [{self.range.lower:.0e}, {self.range.upper:.0e}]")
        if self.best:
            b = self.best
            lines.append(
                f"best: trial {b['number']}: lr {b['lr']:g}, eps {b['eps']:g}"
                + (f", beta2 {b['beta2']:g}" if b.get("beta2") is not None else "")
                + f" -> {self.metric} {b['value']:.6g}"
            )
        else:
            lines.append("best: none yet (no COMPLETE trial)")
        if self.baseline:
            bl = self.baseline
            val = "no value" if bl["value"] is None else f"{self.metric} {bl['value']:.6g}"
            lines.append(f"baseline: sgd + momentum at lr {bl['lr']:.4g} -> {val} ({bl['reason']})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _final_reason(reason: str | None) -> bool:
    return bool(reason) and (reason.startswith("diverged") or reason.startswith("no finite metric"))


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The points of a grid in a fixed order (lr, then ε, then β2), as parameter dicts."""
    pts = []
    for lr in grid["lr"]:
        for eps in grid["eps"]:
            for b2 in grid.get("beta2", [None]):
                p = {"lr": float(lr), "eps": float(eps)}
                if b2 is not None:
                    p["beta2"] = float(b2)
                pts.append(p)
    return pts


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- configuration


@dataclass
class _WorkerConfig:
    """Everything a worker process needs (picklable: sent to spawned workers)."""

    task: Any  # a registered name, or the user's Task object itself
    optimizer: str
    storage_url: str
    study: str
    grid: dict[str, list[Any]]
    epochs: int | None
    preset: str
    seed: int
    limit: int | None
    data_dir: str | None
    device: str
    pruning: bool
    heartbeat: float
    grace: float
    threads: int | None = None
    log_level: int = logging.WARNING


def _resolve_task(task: Any) -> tuple[Any, Any]:
    """``(task object, what to send to workers)``: a name for registered tasks, else the object."""
    from epsfinder.tasks import get_task

    obj = get_task(task)
    return obj, (task if isinstance(task, str) else obj)


def _spec_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec.strip()
    if isinstance(spec, (int, float)):
        return f"{spec:g}"
    return ",".join(f"{float(v):g}" for v in spec)


def _check_optimizer(optimizer: str) -> Any:
    from epsfinder._catalog import OPTIMIZERS, optimizer_names

    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name such as 'adam', got {optimizer!r}")
    entry = OPTIMIZERS.get(optimizer.lower())
    if entry is None:
        raise ValueError(
            f"unknown optimizer {optimizer!r}; choose one of: {', '.join(optimizer_names(adaptive_only=True))}"
        )
    if not entry.adaptive:
        raise ValueError(
            f"optimizer {optimizer!r} has no ε to sweep; choose an adaptive one: "
            f"{', '.join(optimizer_names(adaptive_only=True))} (SGD runs as the baseline by itself)"
        )
    return entry


def _build(task: Any, preset: str, seed: int, limit: int | None, data_dir: str | None, device: str) -> Any:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return task.build(preset=preset, seed=seed, data_dir=data_dir, device=device, limit=limit)


def _steps_per_epoch(setup: Any) -> int:
    if setup.steps_per_epoch:
        return int(setup.steps_per_epoch)
    try:
        return len(setup.train_loader)
    except TypeError:
        raise ValueError(
            f"--beta2 auto needs the number of batches per epoch, and task {setup.name!r} does not know it "
            "(its loader has no len); give --beta2 values instead"
        ) from None


def _estimate(setup: Any, optimizer: str, entry: Any, progress: bool) -> Any:
    """Algorithm 2 on the task with its own training settings (weight decay, β2, step_fn, clipping)."""
    from epsfinder.dryrun import estimate_range

    hp = setup.hparams
    kwargs: dict[str, Any] = {}
    if hp.get("weight_decay") is not None:
        kwargs["weight_decay"] = hp["weight_decay"]
    if entry.beta2 is not None and hp.get("betas") is not None:
        kwargs["beta2"] = float(hp["betas"][1])  # as train_task does (RMSprop's alpha too)
    rng = estimate_range(
        setup.model, setup.loss_fn, setup.train_loader, optimizer, step_fn=setup.step_fn,
        clip_grad_norm=hp.get("clip_grad_norm"), progress_bar=progress, **kwargs,
    )
    rng.hyperparameters["task"] = setup.name
    return rng


def _compact_range(d: dict[str, Any]) -> dict[str, Any]:
    """The range dict small enough for a study attribute (MySQL's TEXT holds 64 KiB).

    Tried in order: as is; zlib-compressed (base64); without the snapshots over time, compressed. PostgreSQL and
    SQLite take any size, so the last form is stored whatever its size.
    """
    import base64
    import zlib

    def packed(x: dict[str, Any]) -> dict[str, Any]:
        raw = zlib.compress(json.dumps(x).encode("utf-8"), 9)
        return {"zlib_b64": base64.b64encode(raw).decode("ascii")}

    if len(json.dumps(d)) <= _MAX_ATTR_CHARS:
        return d
    small = packed(d)
    if len(small["zlib_b64"]) <= _MAX_ATTR_CHARS:
        return small
    return packed({**d, "snapshots": []})


def _expand_range(d: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_compact_range`."""
    if "zlib_b64" not in d:
        return d
    import base64
    import zlib

    return json.loads(zlib.decompress(base64.b64decode(d["zlib_b64"])).decode("utf-8"))


def _diff_grid(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    out = []
    for key in ("lr", "eps", "beta2"):
        a = [proto._fmt(v) for v in stored.get(key, [None])]
        b = [proto._fmt(v) for v in now.get(key, [None])]
        if a != b:
            out.append(f"{key}: stored [{describe(stored.get(key, [None]))}], now [{describe(now.get(key, [None]))}]")
    return out


def _diff_config(stored: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    return [f"{k}: stored {stored.get(k)!r}, now {now.get(k)!r}" for k in _CONFIG_KEYS if stored.get(k) != now.get(k)]


def _mismatch(study: str, storage: str, diffs: list[str]) -> ValueError:
    return ValueError(
        f"study {study!r} in {storage} was made with other settings: {'; '.join(diffs)}. Run the same command as "
        f"before to resume it, or pass --study with a new name (e.g. --study {study}-2) to start another"
    )


# --------------------------------------------------------------------------- trial execution


def _execute(cfg: _WorkerConfig, task: Any, trial: Any, lease: proto.Lease) -> proto.Outcome:
    """Train one grid point; returns its outcome (the protocol records it)."""
    optuna = _optuna()
    from epsfinder.tasks import train_task

    point = proto.trial_point(trial.study._storage.get_trial(trial._trial_id))
    grid = cfg.grid
    lr = trial.suggest_float("lr", min(grid["lr"]), max(grid["lr"]), log=True)
    eps = trial.suggest_float("eps", min(grid["eps"]), max(grid["eps"]), log=True)
    beta2 = None
    if "beta2" in point:
        b2s = [b for b in grid["beta2"] if b is not None]
        beta2 = trial.suggest_float("beta2", min(b2s), max(b2s))

    def on_epoch(epoch: int, metric: float) -> None:
        lease.check()
        if cfg.pruning and metric is not None and math.isfinite(metric):
            trial.report(float(metric), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned by the median rule after epoch {epoch + 1}")

    log.debug("trial %d: lr %g, eps %g%s", trial.number, lr, eps, "" if beta2 is None else f", beta2 {beta2:g}")
    try:
        res = train_task(
            task, optimizer=cfg.optimizer, lr=lr, eps=eps, beta2=beta2, epochs=cfg.epochs, preset=cfg.preset,
            seed=cfg.seed, data_dir=cfg.data_dir, limit=cfg.limit, device=cfg.device, on_epoch=on_epoch,
            progress=False,
        )
    except optuna.TrialPruned as err:
        return proto.Outcome("PRUNED", outcome="pruned", reason=str(err) or "pruned")
    lease.check()
    attrs = {"epochs": _jsonable(res.epochs), "wall_s": float(res.wall_s), "steps": int(res.steps)}
    if res.diverged:
        return proto.Outcome("FAIL", outcome="diverged", reason=f"diverged at step {res.diverged_step}",
                             user_attrs=attrs)
    if res.best is None or not math.isfinite(float(res.best)):
        return proto.Outcome("FAIL", outcome="no-metric", reason="no finite metric value in any epoch",
                             user_attrs=attrs)
    return proto.Outcome("COMPLETE", value=float(res.best), user_attrs=attrs)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _load_study(cfg: _WorkerConfig, storage: Any | None = None) -> Any:
    optuna = _optuna()
    storage = storage if storage is not None else open_storage(cfg.storage_url)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0) if cfg.pruning else (
        optuna.pruners.NopPruner()
    )
    return optuna.load_study(
        study_name=cfg.study, storage=storage, sampler=optuna.samplers.RandomSampler(seed=cfg.seed), pruner=pruner
    )


def _quiet_optuna() -> None:
    import warnings

    optuna = _optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _worker_main(cfg: _WorkerConfig) -> None:
    """Entry point of a spawned worker process."""
    logging.basicConfig(level=cfg.log_level, format=f"%(levelname)s %(name)s[{os.getpid()}]: %(message)s")
    _quiet_optuna()
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    from epsfinder.tasks import get_task

    task = get_task(cfg.task)
    study = _load_study(cfg)
    proto.work(
        study, lambda trial, lease: _execute(cfg, task, trial, lease), grid_points(cfg.grid),
        heartbeat=cfg.heartbeat, grace=cfg.grace,
    )


# --------------------------------------------------------------------------- progress


class _Progress:
    """A bar over the grid's points and one line per newly finished trial (read from the storage)."""

    def __init__(self, study: Any, points: list[dict[str, Any]], metric: str, enabled: bool) -> None:
        self.study = study
        self.metric = metric
        self.keys = {proto.point_key(p) for p in points}
        self.seen: set[int] = set()
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=len(points), desc=f"sweep {study.study_name}", unit="point", file=sys.stderr,
                                dynamic_ncols=True)
            except ImportError:  # pragma: no cover - tqdm comes with the extras
                self.bar = None
        self.refresh(initial=True)

    def refresh(self, initial: bool = False) -> int:
        trials = self.study.get_trials(deepcopy=False)
        done = {proto.point_key(proto.trial_point(t)) for t in trials if proto.is_done(t)} & self.keys
        for t in trials:
            if t.state.is_finished() and t.number not in self.seen:
                self.seen.add(t.number)
                if not initial:
                    self._line(t)
        if self.bar is not None:
            self.bar.n = len(done)
            self.bar.refresh()
        return len(done)

    def _line(self, t: Any) -> None:
        p = proto.trial_point(t)
        what = f"lr {p.get('lr'):g}, eps {p.get('eps'):g}" + (f", beta2 {p['beta2']:g}" if "beta2" in p else "")
        dur = f" ({t.duration.total_seconds():.1f} s)" if t.duration else ""
        if t.state.name == "COMPLETE":
            text = f"trial {t.number}: {what} -> {self.metric} {t.value:.6g}{dur}"
        else:
            text = f"trial {t.number}: {what} -> {t.state.name}: {t.user_attrs.get('reason', '')}{dur}"
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
            log.debug(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- results


def _trial_dict(t: Any) -> dict[str, Any]:
    p = proto.trial_point(t)
    state = t.state.name
    value = t.value if state in ("COMPLETE", "PRUNED") and t.value is not None and math.isfinite(t.value) else None
    reason = None
    if state != "COMPLETE":
        reason = t.user_attrs.get(proto.REASON_KEY)
        if state == "RUNNING":
            lease = t.system_attrs.get(proto.LEASE_KEY) or {}
            reason = f"running (pid {lease['pid']})" if lease else "running"
        elif state == "WAITING":
            reason = "queued"
    return {
        "number": t.number,
        "lr": p.get("lr"),
        "eps": p.get("eps"),
        "beta2": p.get("beta2"),
        "state": state,
        "value": value,
        "duration_s": t.duration.total_seconds() if t.duration is not None else None,
        "reason": reason,
    }


def _best(trials: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    if not done:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * t["value"], t["number"]))


def _write_csv(path: Path, trials: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(TRIALS_CSV_COLUMNS)
        for t in trials:
            w.writerow(["" if t[c] is None else t[c] for c in TRIALS_CSV_COLUMNS])
    os.replace(tmp, path)


def _default_beta2(optimizer: str) -> float:
    import inspect

    from epsfinder._catalog import OPTIMIZERS, optimizer_class

    entry = OPTIMIZERS[optimizer.lower()]
    try:
        params = inspect.signature(optimizer_class(optimizer).__init__).parameters
        if entry.beta2 == "alpha":
            return float(params["alpha"].default)
        return float(params["betas"].default[1])
    except Exception:
        return 0.999


def sgd_equivalent_lr(lr: float, eps: float, family: str, beta2: float | None = None, beta1: float = 0.9) -> float:
    """The ``torch.optim.SGD(momentum=β1)`` learning rate the optimizer approaches at large ε.

    ``(1 − β1)·α/ε`` for magnitude terms, ``(1 − β1)·α·sqrt((1 − β2)/ε)`` for squared terms; see
    :func:`epsfinder.estimate.sgd_equivalent_lr`.
    """
    return _sgd_lr(lr, eps, family, beta1=beta1, beta2=0.999 if beta2 is None else beta2)


def _baseline(
    cfg: _WorkerConfig, task: Any, study: Any, best: dict[str, Any] | None, rng: Any, complete: bool
) -> dict[str, Any] | None:
    """Run (once per best trial, remembered in the study) SGD + momentum at the equivalent lr, when due."""
    if best is None:
        return None
    top = max(cfg.grid["eps"])
    at_upper = rng is not None and math.isclose(best["eps"], rng.upper, rel_tol=1e-9)
    if not (at_upper or math.isclose(best["eps"], top, rel_tol=1e-9)):
        return None
    stored = study.user_attrs.get(ATTR_BASELINE)
    if stored and stored.get("trial") == best["number"]:
        return {k: stored[k] for k in ("optimizer", "lr", "value", "reason")}
    if not complete:
        log.info("baseline: waits until every grid point has finished")
        return None
    family = rng.family if rng is not None else unit_family(cfg.optimizer)
    b2 = best.get("beta2")
    if b2 is None and family == "squared":
        b2 = _default_beta2(cfg.optimizer)
    sgd_lr = sgd_equivalent_lr(best["lr"], best["eps"], family, b2)
    where = "the upper end of the estimated range" if at_upper else "the top of the ε grid"
    formula = "(1 − β1)·α/ε" if family != "squared" else "(1 − β1)·α·sqrt((1 − β2)/ε)"
    reason = (
        f"best ε = {best['eps']:g} is {where}, where {cfg.optimizer} acts as SGD + momentum with lr = {formula} = "
        f"{sgd_lr:.4g}"
    )
    log.warning("baseline: sgd + momentum at lr %.4g (%s)", sgd_lr, reason)
    from epsfinder.tasks import train_task

    try:
        res = train_task(
            task, optimizer="sgd", lr=sgd_lr, epochs=cfg.epochs, preset=cfg.preset, seed=cfg.seed,
            data_dir=cfg.data_dir, limit=cfg.limit, device=cfg.device, progress=False,
        )
        value = None if res.best is None or not math.isfinite(res.best) else float(res.best)
        if res.diverged:
            reason += f"; the SGD run diverged at step {res.diverged_step}"
            value = None
    except (ValueError, RuntimeError) as err:
        value, reason = None, f"{reason}; the SGD run failed: {err}"
    out = {"optimizer": "sgd", "lr": sgd_lr, "value": value, "reason": reason}
    study.set_user_attr(ATTR_BASELINE, {**out, "trial": best["number"]})
    return out


def _collect(
    cfg: _WorkerConfig, study: Any, meta: dict[str, Any], rng: Any, out: Path, task: Any, baseline: bool,
    notes: list[str], report: bool = True,
) -> SweepResult:
    trials = [_trial_dict(t) for t in study.get_trials(deepcopy=False)]
    best = _best(trials, meta["direction"])
    result = SweepResult(
        task=meta["task"], optimizer=cfg.optimizer, metric=meta["metric"], direction=meta["direction"],
        study=cfg.study, storage=redact(cfg.storage_url), eps_spec=meta["eps_spec"], range=rng, grid=cfg.grid,
        trials=trials, best=best, baseline=None, out=out, notes=notes,
    )
    if baseline:
        result.baseline = _baseline(cfg, task, study, best, rng, result.complete)
    _write_csv(out / "trials.csv", trials)
    result.to_json(out / "sweep.json")
    if not report:
        return result
    try:
        from epsfinder.report import write_report

        write_report(out)
    except (ImportError, AttributeError):
        pass
    except Exception as err:  # the report is a convenience: never fail the sweep because of it
        log.warning("report.html not written: %s", err)
    return result


# --------------------------------------------------------------------------- run_sweep


def run_sweep(
    task: Any,
    *,
    optimizer: str,
    lr: str | float | Sequence[float],
    eps: str | float | Sequence[float] = "auto",
    beta2: str | float | Sequence[float] | None = None,
    epochs: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    workers: int = 1,
    out: str | os.PathLike[str],
    preset: str = "cpu",
    seed: int = 0,
    limit: int | None = None,
    pruning: bool = False,
    baseline: bool = True,
    progress: bool = True,
    report: bool = True,
    data_dir: str | None = None,
    device: str = "cpu",
    heartbeat: float = proto.DEFAULT_HEARTBEAT,
    grace: float = proto.DEFAULT_GRACE,
) -> SweepResult:
    """Run a grid over (lr, ε[, β2]) on a task, each point exactly once, on an Optuna storage.

    The same call resumes an interrupted sweep (finished trials are kept, trials of dead workers run again) and
    joins a running one from another machine (same ``storage`` and ``study``).

    >>> r = run_sweep("digits-mlp", optimizer="adam", lr="1e-3:1e-2", eps="ends", epochs=2,
    ...               out="runs/digits")                                             # doctest: +SKIP
    >>> r.best["eps"], r.best["value"]                                               # doctest: +SKIP

    Args:
        task: a task name (``epsfinder tasks``) or a :class:`~epsfinder.tasks.Task` object (picklable when
            ``workers > 1``).
        optimizer: an adaptive optimizer's name (``epsfinder optimizers``).
        lr: learning rates: a list ``"1e-4,1e-3"``, a range ``"1e-4:1e-1[:per-decade]"`` (log-even, ends included),
            ``"paper-grid"`` (the authors' grid for the task family), a number or a sequence.
        eps: ``"auto"`` (the grid of the range estimated on the task, Algorithm 2), ``"ends"`` (its two ends),
            ``"paper-grid"`` (the authors' literature grid for the optimizer and task family), or values as for
            ``lr``.
        beta2: None (the task's β2), ``"auto"`` (the smallest ``1 − 10^-k`` with ``1/(1 − β2)`` ≥ batches per
            epoch, NOTES §4), or values as for ``lr`` (a range spaces ``1 − β2`` log-evenly).
        epochs: epochs per trial; None takes the task preset's.
        storage: an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``, ``mysql://…``) or a SQLite file path;
            default ``sqlite:///<out>/study.db``.
        study: the study name; default ``"<task>-<optimizer>"``.
        workers: local worker processes (spawned; each gets ``cpu_count/workers`` torch threads).
        out: folder for ``trials.csv``, ``sweep.json``, ``range.json`` and ``report.html``.
        preset, seed, limit, data_dir, device: passed to the task (``train_task``).
        pruning: stop poor trials early (Optuna's MedianPruner on the per-epoch metric).
        baseline: when the best ε is the range's upper end (or the grid's top), also train SGD + momentum at the
            equivalent learning rate (``α/ε``, or ``α·sqrt((1 − β2)/ε)`` for squared-term optimizers).
        progress: show a bar over the grid and a line per finished trial.
        report: write ``out/report.html`` with ``epsfinder.report`` when it is available.
        heartbeat: seconds between a running trial's lease renewals.
        grace: seconds without renewal after which a trial on another host counts as dead (a dead process on this
            host is detected at once).

    Returns:
        a :class:`SweepResult` (also written to ``out/sweep.json``).

    Raises:
        ValueError: bad input (malformed or inverted range, unknown optimizer or preset, β2 for an optimizer
            without one, unreachable storage, a study that exists with other settings), always before any trial.
        FileNotFoundError: the task's data is not installed (the message says how to install it).
        ImportError: Optuna or the database driver is missing (the message says what to install).
        SweepError: a worker process failed.
    """
    optuna = _optuna()
    _quiet_optuna()
    t0 = time.perf_counter()
    entry = _check_optimizer(optimizer)
    optimizer = optimizer.lower()
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got workers={workers!r}")
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise ValueError(f"epochs must be a whole number >= 1, got epochs={epochs!r}")
    if limit is not None and (int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a whole number >= 1, got limit={limit!r}")
    if not (heartbeat > 0 and grace > heartbeat):
        raise ValueError(f"need 0 < heartbeat < grace, got heartbeat={heartbeat}, grace={grace}")
    task_obj, task_ref = _resolve_task(task)
    if workers > 1:
        # Workers get the task object itself (a name registered only in this process would be unknown there).
        try:
            pickle.dumps(task_obj)
            task_ref = task_obj
        except Exception as err:
            if not isinstance(task, str):
                raise ValueError(
                    f"workers={workers} sends the task to other processes, but task {task_obj.name!r} cannot be "
                    f"pickled ({err}); define its class at module level, or use workers=1"
                ) from None
    presets = getattr(task_obj, "presets", None)
    if isinstance(presets, Mapping) and preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for task {task_obj.name!r}; choose one of: {', '.join(presets)}")
    if data_dir is None:
        missing = task_obj.data_status()
        if missing:
            raise FileNotFoundError(f"task {task_obj.name!r} cannot run: {missing}")
    notes: list[str] = []

    # ---- the specs, parsed before anything expensive
    eps_text = _spec_text(eps)
    lr_text = _spec_text(lr)
    if lr_text == "paper-grid":
        lr_values, n = paper_lr_grid(optimizer, task_obj.family)
        notes += n
    else:
        lr_values = parse_values(lr, what="--lr")
    eps_kw = eps_text if eps_text in EPS_KEYWORDS else None
    eps_values: list[float] | None = None
    if eps_kw == "paper-grid":
        eps_values, n = paper_eps_grid(optimizer, task_obj.family)
        notes += n
    elif eps_kw is None:
        eps_values = parse_values(eps, what="--eps")
    b2_text = None if beta2 is None else _spec_text(beta2)
    if b2_text is not None and entry.beta2 is None:
        raise ValueError(f"optimizer {optimizer!r} has no β2; drop --beta2 {b2_text}")
    b2_values: list[float | None] | None = [None]
    if b2_text == "auto":
        b2_values = None  # needs the batches per epoch
    elif b2_text is not None:
        b2_values = list(parse_values(beta2, what="--beta2", beta=True))  # type: ignore[arg-type]

    # ---- storage and an existing study, checked before any trial
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = normalize_url(storage) if storage else default_storage_url(out_dir)
    shown = redact(url)
    check_reachable(url)
    rdb = open_storage(url)
    study_name = study or f"{task_obj.name}-{optimizer}"
    config = {"task": task_obj.name, "optimizer": optimizer, "epochs": epochs, "preset": preset, "seed": seed,
              "limit": limit, "eps_spec": eps_text, "beta2_spec": b2_text, "version": 1}
    try:
        existing_id = rdb.get_study_id_from_name(study_name)
    except KeyError:
        existing_id = None
    stored_range = None
    stored_grid = None
    if existing_id is not None:
        attrs = rdb.get_study_user_attrs(existing_id)
        if ATTR_GRID not in attrs:
            attrs = _wait_for_attrs(rdb, existing_id)
        if ATTR_GRID not in attrs:
            raise ValueError(
                f"study {study_name!r} in {shown} exists but holds no epsfinder grid (made by another tool, or its "
                "creator died before storing the grid); pass --study with another name"
            )
        diffs = _diff_config(attrs.get(ATTR_CONFIG, {}), config)
        if diffs:
            raise _mismatch(study_name, shown, diffs)
        stored_grid = attrs[ATTR_GRID]
        direction_now = rdb.get_study_directions(existing_id)[0].name.lower()
        if direction_now != task_obj.direction:
            raise _mismatch(study_name, shown, [f"direction: stored {direction_now}, now {task_obj.direction}"])
        if eps_kw in ("auto", "ends") and attrs.get(ATTR_RANGE):
            from epsfinder.estimate import EpsilonRange

            stored_range = EpsilonRange.from_dict(_expand_range(attrs[ATTR_RANGE]))
        if b2_values is None:
            b2_values = list(stored_grid.get("beta2", [None]))
        notes = list(attrs.get(ATTR_NOTES, notes))

    # ---- the range (auto / ends) and β2 auto: build the task once
    rng = stored_range
    if (eps_kw in ("auto", "ends") and rng is None) or b2_values is None:
        setup = _build(task_obj, preset, seed, limit, data_dir, device)
        if b2_values is None:
            from epsfinder.estimate import beta2_for_batches

            batches = _steps_per_epoch(setup)
            b2_values = [beta2_for_batches(batches)]
            notes.append(f"β2 = {b2_values[0]} from the β2 rule: 1/(1 − β2) ≥ {batches} batches per epoch")
        if eps_kw in ("auto", "ends") and rng is None:
            log.info("estimating the ε range of %s on %s (Algorithm 2)", optimizer, task_obj.name)
            rng = _estimate(setup, optimizer, entry, progress)
        del setup
    if eps_kw == "auto":
        eps_values = rng.grid()
    elif eps_kw == "ends":
        eps_values = sorted({rng.lower, rng.upper})
    assert eps_values is not None and b2_values is not None
    grid = {"lr": [float(v) for v in lr_values], "eps": [float(v) for v in eps_values],
            "beta2": [None if v is None else float(v) for v in b2_values]}
    if stored_grid is not None:
        diffs = _diff_grid(stored_grid, grid)
        if diffs:
            raise _mismatch(study_name, shown, diffs)
    if rng is not None:
        rng.to_json(out_dir / "range.json")
    for n in notes:
        log.warning("%s", n)

    # ---- create (once) or load the study; enqueue the grid
    points = grid_points(grid)
    cfg = _WorkerConfig(
        task=task_ref, optimizer=optimizer, storage_url=url, study=study_name, grid=grid, epochs=epochs,
        preset=preset, seed=seed, limit=limit, data_dir=None if data_dir is None else str(data_dir),
        device=str(device), pruning=pruning, heartbeat=float(heartbeat), grace=float(grace),
        log_level=logging.getLogger("epsfinder").getEffectiveLevel(),
    )
    created = False
    if existing_id is None:
        try:
            optuna.create_study(storage=rdb, study_name=study_name, direction=task_obj.direction)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
            attrs = _wait_for_attrs(rdb, rdb.get_study_id_from_name(study_name))
            diffs = _diff_config(attrs.get(ATTR_CONFIG, {}), config) + _diff_grid(attrs.get(ATTR_GRID, {}), grid)
            if diffs:
                raise _mismatch(study_name, shown, diffs) from None
    st = _load_study(cfg, rdb)
    if created:
        st.set_user_attr(ATTR_CONFIG, config)
        st.set_user_attr(ATTR_NOTES, notes)
        if rng is not None:
            st.set_user_attr(ATTR_RANGE, _compact_range(rng.to_dict()))
        st.set_user_attr(ATTR_GRID, grid)  # last of the settings: joiners wait for it
        for p in points:
            st.enqueue_trial(p)
        st.set_user_attr(ATTR_ENQUEUED, True)
        log.info("study %s created in %s with %d grid points", study_name, shown, len(points))
    else:
        _wait_for_enqueued(st)
        reaped, enqueued = proto.reconcile(st, points, retry_errors=True, grace=grace)
        log.info("study %s resumed: %d dead trial(s) failed, %d point(s) queued again", study_name, reaped, enqueued)

    # ---- run
    meta = {"task": task_obj.name, "metric": task_obj.metric, "direction": task_obj.direction, "eps_spec": eps_text}
    bar = _Progress(st, points, task_obj.metric, progress)
    try:
        if workers == 1:
            proto.work(st, lambda trial, lease: _execute(cfg, task_obj, trial, lease), points,
                       heartbeat=heartbeat, grace=grace, on_finished=bar.refresh)
        else:
            _run_workers(cfg, workers, bar)
        bar.refresh()
    except BaseException:
        bar.close()
        try:  # write what there is, then let the error through
            _collect(cfg, st, meta, rng, out_dir, task_obj, False, notes, report=False)
        except Exception as err:
            log.warning("could not write the results after the error: %s", err)
        raise
    bar.close()
    result = _collect(cfg, st, meta, rng, out_dir, task_obj, baseline, notes, report=report)
    log.info("sweep %s: %d trials in %.1f s", study_name, len(result.trials), time.perf_counter() - t0)
    return result


def _wait_for_attrs(rdb: Any, study_id: int, timeout: float = 60.0) -> dict[str, Any]:
    """The study's user attrs once its creator has stored the grid (a few ms after creating it)."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = rdb.get_study_user_attrs(study_id)
        if ATTR_GRID in attrs or time.monotonic() > deadline:
            return attrs
        time.sleep(0.2)


def _wait_for_enqueued(study: Any, timeout: float = 60.0) -> None:
    """Let the creator finish enqueueing the grid before reconciling (else both would enqueue the same points)."""
    deadline = time.monotonic() + timeout
    while not study.user_attrs.get(ATTR_ENQUEUED) and time.monotonic() < deadline:
        time.sleep(0.5)


def _run_workers(cfg: _WorkerConfig, workers: int, bar: _Progress) -> None:
    ctx = multiprocessing.get_context("spawn")
    cfg = replace(cfg, threads=max(1, (os.cpu_count() or 1) // workers))
    procs = [ctx.Process(target=_worker_main, args=(cfg,), name=f"epsfinder-sweep-{i}") for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=1.0 / workers)
            bar.refresh()
    except BaseException:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise SweepError(
            "worker process(es) failed: " + ", ".join(f"{n} (exit status {c})" for n, c in bad)
            + "; their errors are printed above and their trials are marked FAIL. Fix the cause and run the same "
            "command again to resume"
        )
