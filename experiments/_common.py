"""Shared machinery of the reproduction studies: budgets, resumable trial grids, sweep.json files, efficiency.

Every study script (``range_vs_grid.py``, ``beta2_eps.py``, ``sgd_baseline.py``, ``tuning_efficiency.py``) imports
this module. Nothing here is specific to one study.

* **Budgets.** ``BUDGETS["cpu"]`` is what a 2-core machine runs in about an hour (small training subsets, one or
  two epochs, a subset of the authors' learning rates, but *every* ε of the authors' literature grids);
  ``BUDGETS["paper"]`` is the paper's own setting (``preset="paper"``, the paper's epochs, the full α and ε grids of
  ``paper/NOTES.md`` §5) for users with GPUs.
* **Trials.** :func:`run_trial` trains one (task, optimizer, lr, ε, β2) point with
  :func:`epsfinder.tasks.train_task` and stores the outcome as its own JSON file, named by a key of every setting
  that changes the result (:func:`trial_key`). A rerun finds the file and skips the training, so a study that is
  stopped at any moment resumes where it stopped; studies that need the same point share the file.
* **Sweeps.** :func:`write_sweep` writes the ``sweep.json`` format that :func:`epsfinder.plots.plot_heatmap` reads.
* **Efficiency and verdicts.** Pure functions on lists of trial dicts (tested in ``tests/test_experiments.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent
RESULTS = ROOT / "results"
TRIALS = RESULTS / "trials"

# ----------------------------------------------------------------------------------------------------------------
# Grids
# ----------------------------------------------------------------------------------------------------------------


def decades(low_exp: int, high_exp: int, step: int = 1) -> list[float]:
    """Powers of ten ``10**low_exp ... 10**high_exp`` every ``step`` decades, as exact floats (``float('1e-8')``)."""
    return [float(f"1e{e}") for e in range(low_exp, high_exp + 1, step)]


#: The authors' literature ε grids (NOTES §5): (task family, optimizer) -> ε values. Translation has no grid in
#: the paper; we use the language-modelling one (marked in :data:`LITERATURE_NOTES`).
LITERATURE_EPS: dict[tuple[str, str], list[float]] = {
    ("classification", "adam"): decades(-8, -1),
    ("classification", "rmsprop"): decades(-8, -1),
    ("classification", "adabelief"): decades(-16, -4, 2),
    ("classification", "adamomentum"): decades(-16, -4, 2),
    ("language-modeling", "adam"): decades(-9, -3),
    ("language-modeling", "rmsprop"): decades(-9, -3),
    ("language-modeling", "adabelief"): decades(-20, -8, 2),
    ("language-modeling", "adamomentum"): decades(-20, -8, 2),
    ("translation", "adam"): decades(-9, -3),
}
LITERATURE_NOTES = {
    "translation": "the paper gives no ε grid for translation; the language-modelling grid is used",
}
#: The authors' α grids (NOTES §5).
PAPER_LR: dict[str, list[float]] = {
    "classification": [2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2],
    "language-modeling": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1],
    "translation": [1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3],
}
SQUARED = {"adabelief", "adamomentum", "eadam"}


def family_of(task: str) -> str:
    """Task family from the built-in task name."""
    if task.startswith("ptb"):
        return "language-modeling"
    if task.startswith("es-en"):
        return "translation"
    return "classification"


# ----------------------------------------------------------------------------------------------------------------
# Budgets
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class TaskBudget:
    """How one task is trained in a budget: preset, training subset, epochs, build options and grids.

    ``lr`` maps an optimizer name (or ``"*"``) to its learning rates; ``eps`` likewise to ε values (default: the
    literature grid). ``optimizers`` lists who gets the full lr × ε grid in ``range_vs_grid``.
    """

    task: str
    preset: str
    epochs: int
    limit: int | None
    options: dict[str, Any]
    optimizers: list[str]
    lr: dict[str, list[float]]
    eps: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    @property
    def family(self) -> str:
        return family_of(self.task)

    def lrs(self, optimizer: str) -> list[float]:
        return list(self.lr.get(optimizer, self.lr["*"]))

    def eps_grid(self, optimizer: str) -> list[float]:
        if optimizer in self.eps:
            return list(self.eps[optimizer])
        return list(LITERATURE_EPS[(self.family, optimizer)])


@dataclass
class Budget:
    """A whole budget: its tasks plus the β2 and SGD studies' settings."""

    name: str
    description: str
    tasks: dict[str, TaskBudget]
    beta2: list[float]
    beta2_tasks: list[str]
    baseline_task: str
    threads: int | None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary stored in every result file."""
        return {
            "name": self.name,
            "description": self.description,
            "threads": self.threads,
            "beta2": self.beta2,
            "tasks": {k: asdict(v) for k, v in self.tasks.items()},
        }


_FM_LR = [1e-4, 5e-4, 2e-3, 1e-2, 5e-2]

CPU = Budget(
    name="cpu",
    description=(
        "2-core CPU budget (about an hour in all): cpu presets, training subsets of a few thousand examples, "
        "1-2 epochs, 2-5 learning rates from the authors' α grid, every ε of the authors' literature grid "
        "(none for translation: 3 ε)"
    ),
    tasks={
        "fashion-mnist-mlp": TaskBudget(
            "fashion-mnist-mlp", "cpu", epochs=2, limit=6000, options={},
            optimizers=["adam", "rmsprop", "adabelief", "adamomentum"], lr={"*": _FM_LR},
            note="MLP 784-512-512-10, first 6,000 training images, 2 epochs, full 10,000-image test set",
        ),
        "ptb-lstm1": TaskBudget(
            "ptb-lstm1", "cpu", epochs=1, limit=24_000, options={"eval_limit": 10_000},
            optimizers=["adam", "rmsprop", "adabelief", "adamomentum"],
            lr={"adam": [5e-4, 2e-3, 1e-2, 5e-2], "*": [1e-3, 5e-3, 2e-2]},
            note="1-layer tied LSTM 200, first 24,000 training tokens (34 windows of 20x35), 1 epoch, "
                 "perplexity on the first 10,000 test tokens",
        ),
        "fashion-mnist-alexnet": TaskBudget(
            "fashion-mnist-alexnet", "cpu", epochs=2, limit=4000, options={"eval_limit": 2000},
            optimizers=["adam"], lr={"*": [1e-4, 5e-4, 2e-3, 1e-2]},
            note="AlexNet width 0.125, first 4,000 training images, 2 epochs, first 2,000 test images",
        ),
        "es-en-transformer": TaskBudget(
            "es-en-transformer", "cpu", epochs=1, limit=3000, options={"eval_limit": 100},
            optimizers=["adam"], lr={"*": [5e-4, 2e-3]}, eps={"adam": [1e-9, 1e-6, 1e-3]},
            note="Transformer 128 wide 2+2 layers, first 3,000 verse pairs, 1 epoch, BLEU on 100 test verses "
                 "(far too little training for a meaningful BLEU: the ε-share part of the claim is the evidence)",
        ),
    },
    beta2=[0.9, 0.99, 0.999],
    beta2_tasks=["fashion-mnist-mlp", "ptb-lstm1"],
    baseline_task="fashion-mnist-mlp",
    threads=1,
)

PAPER = Budget(
    name="paper",
    description="the paper's setting (NOTES §5): paper presets, the paper's epochs, the authors' full α and ε grids",
    tasks={
        "fashion-mnist-mlp": TaskBudget(
            "fashion-mnist-mlp", "paper", epochs=25, limit=None, options={},
            optimizers=["adam", "rmsprop", "adabelief", "adamomentum"], lr={"*": PAPER_LR["classification"]},
        ),
        "ptb-lstm1": TaskBudget(
            "ptb-lstm1", "paper", epochs=200, limit=None, options={},
            optimizers=["adam", "rmsprop", "adabelief", "adamomentum"], lr={"*": PAPER_LR["language-modeling"]},
        ),
        "fashion-mnist-alexnet": TaskBudget(
            "fashion-mnist-alexnet", "paper", epochs=25, limit=None, options={},
            optimizers=["adam", "rmsprop", "adabelief", "adamomentum"], lr={"*": PAPER_LR["classification"]},
        ),
        "es-en-transformer": TaskBudget(
            "es-en-transformer", "paper", epochs=50, limit=None, options={},
            optimizers=["adam"], lr={"*": PAPER_LR["translation"]},
        ),
    },
    beta2=[0.9, 0.99, 0.999, 0.9999],
    beta2_tasks=["fashion-mnist-mlp", "ptb-lstm1"],
    baseline_task="fashion-mnist-alexnet",
    threads=None,
)

BUDGETS: dict[str, Budget] = {"cpu": CPU, "paper": PAPER}

#: Tuning target: how close to the full grid's best a strategy must come.
TOLERANCE: dict[str, tuple[str, float]] = {
    "accuracy": ("abs", 0.005),
    "perplexity": ("rel", 0.02),
    "bleu": ("abs", 0.5),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise SystemExit(f"unknown budget {name!r}; choose one of {sorted(BUDGETS)}")
    return BUDGETS[name]


def study_parser(description: str) -> argparse.ArgumentParser:
    """The command line every study shares: ``--budget cpu|paper [--resume] [--tasks ...]``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu", help="compute budget (default: cpu)")
    p.add_argument("--resume", action="store_true", default=True,
                   help="skip trials whose result file exists (the default; kept for explicitness)")
    p.add_argument("--fresh", action="store_true", help="ignore stored trial files and train again")
    p.add_argument("--tasks", nargs="*", default=None, help="only these tasks (default: all of the budget's)")
    p.add_argument("--optimizers", nargs="*", default=None, help="only these optimizers")
    return p


def setup_threads(budget: Budget) -> None:
    """One intra-op thread under the cpu budget: measured 3-4x faster than 2 on a shared 2-core machine."""
    if budget.threads:
        import torch

        torch.set_num_threads(budget.threads)


# ----------------------------------------------------------------------------------------------------------------
# Trials
# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "default" if x is None else f"{x:.6g}"


def trial_key(
    task: str, optimizer: str, lr: float, eps: float | None, beta2: float | None, *, preset: str, epochs: int,
    limit: int | None, options: Mapping[str, Any] | None = None, seed: int = 0,
) -> str:
    """File-name key of one trial: every setting that changes its outcome.

    >>> trial_key("t", "adam", 1e-3, 1e-8, None, preset="cpu", epochs=2, limit=100)
    'adam_lr=0.001_eps=1e-08_b2=default_cpu_ep=2_lim=100_seed=0'
    """
    opts = "".join(f"_{k}={v}" for k, v in sorted((options or {}).items()))
    return (f"{optimizer}_lr={_fmt(lr)}_eps={_fmt(eps)}_b2={_fmt(beta2)}_{preset}_ep={epochs}"
            f"_lim={limit if limit is not None else 'all'}{opts}_seed={seed}")


def trial_path(tb: TaskBudget, optimizer: str, lr: float, eps: float | None, beta2: float | None,
               seed: int = 0, root: pathlib.Path | None = None) -> pathlib.Path:
    key = trial_key(tb.task, optimizer, lr, eps, beta2, preset=tb.preset, epochs=tb.epochs, limit=tb.limit,
                    options=tb.options, seed=seed)
    return (root or TRIALS) / tb.task / optimizer / f"{key}.json"


def write_json(path: pathlib.Path, data: Any) -> None:
    """Write JSON atomically (a temporary file, then rename), so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: pathlib.Path) -> Any:
    return json.loads(pathlib.Path(path).read_text())


def run_trial(
    tb: TaskBudget, optimizer: str, lr: float, eps: float | None = None, beta2: float | None = None, *,
    budget: str = "cpu", seed: int = 0, fresh: bool = False, root: pathlib.Path | None = None,
    trainer: Any = None, log: Any = print,
) -> dict[str, Any]:
    """Train one point, or load it if its file exists; return the trial dict (sweep.json's trial format + extras).

    ``trainer`` replaces :func:`epsfinder.tasks.train_task` (tests pass a stub). A diverged run or an exception
    gives ``state="FAIL"`` with the reason; either is stored too, so it is not retried on resume.
    """
    path = trial_path(tb, optimizer, lr, eps, beta2, seed, root)
    if path.exists() and not fresh:
        return read_json(path)
    if trainer is None:
        from epsfinder.tasks import train_task as trainer
    started = time.perf_counter()
    trial: dict[str, Any] = {
        "task": tb.task, "optimizer": optimizer, "lr": lr, "eps": eps, "beta2": beta2, "seed": seed,
        "preset": tb.preset, "epochs_planned": tb.epochs, "limit": tb.limit, "options": tb.options, "budget": budget,
    }
    try:
        r = trainer(tb.task, optimizer=optimizer, lr=lr, eps=eps, beta2=beta2, epochs=tb.epochs, preset=tb.preset,
                    seed=seed, limit=tb.limit, options=tb.options or None, progress=False)
        trial.update(
            state="FAIL" if r.diverged or r.best is None else "COMPLETE",
            value=None if r.diverged or r.best is None else float(r.best),
            reason=(f"diverged at step {getattr(r, 'diverged_step', None)}" if r.diverged else
                    ("no metric" if r.best is None else None)),
            duration_s=float(r.wall_s or (time.perf_counter() - started)),
            epochs=list(r.epochs), metric=r.metric, direction=r.direction,
            steps_per_epoch=getattr(r, "steps_per_epoch", None),
            eps_used=(r.hyperparameters or {}).get("eps"), beta2_used=(r.hyperparameters or {}).get("beta2"),
            partial_best=_best_of([e.get("metric") for e in r.epochs], r.direction),
        )
    except Exception as exc:
        trial.update(state="FAIL", value=None, reason=f"{type(exc).__name__}: {exc}",
                     duration_s=time.perf_counter() - started, epochs=[])
    trial["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(path, trial)
    v = trial.get("value")
    log(f"  {tb.task} {optimizer} lr={lr:g} eps={_fmt(eps)} b2={_fmt(beta2)}: {trial['state']} "
        f"value={'-' if v is None else f'{v:.4g}'} ({trial['duration_s']:.1f}s)", flush=True)
    return trial


def _best_of(values: Sequence[float | None], direction: str) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None
    return max(v) if direction == "maximize" else min(v)


def load_trials(tb: TaskBudget, optimizer: str, points: Iterable[tuple[float, float | None, float | None]],
                seed: int = 0, root: pathlib.Path | None = None) -> list[dict[str, Any]]:
    """The stored trials of ``points`` that exist (no training): what a report reads from a partial run."""
    out = []
    for lr, eps, b2 in points:
        path = trial_path(tb, optimizer, lr, eps, b2, seed, root)
        if path.exists():
            out.append(read_json(path))
    return out


def run_grid(
    tb: TaskBudget, optimizer: str, points: Iterable[tuple[float, float | None, float | None]], **kw: Any
) -> list[dict[str, Any]]:
    """Run (or load) every ``(lr, eps, beta2)`` point in order; return the trials."""
    return [run_trial(tb, optimizer, lr, eps, b2, **kw) for lr, eps, b2 in points]


def best_trial(trials: Sequence[Mapping[str, Any]], direction: str) -> Mapping[str, Any] | None:
    """The complete trial with the best value (ties: the first), or None."""
    done = [t for t in trials if t.get("state") == "COMPLETE" and t.get("value") is not None]
    if not done:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    return max(done, key=lambda t: sign * float(t["value"]))


def tied_best(trials: Sequence[Mapping[str, Any]], direction: str) -> list[Mapping[str, Any]]:
    """Every complete trial whose value equals the best (accuracies on a fixed test set tie exactly)."""
    best = best_trial(trials, direction)
    if best is None:
        return []
    return [t for t in trials if t.get("state") == "COMPLETE" and t.get("value") is not None
            and abs(float(t["value"]) - float(best["value"])) <= 1e-12]


def metric_of(task: str) -> tuple[str, str]:
    """(metric name, direction) of a built-in task without building it."""
    fam = family_of(task)
    if fam == "language-modeling":
        return "perplexity", "minimize"
    if fam == "translation":
        return "bleu", "maximize"
    return "accuracy", "maximize"


def write_sweep(
    path: pathlib.Path, *, task: str, optimizer: str, trials: Sequence[Mapping[str, Any]], lr: Sequence[float],
    eps: Sequence[float], beta2: Sequence[float | None] = (None,), range_dict: Mapping[str, Any] | None = None,
    baseline: Mapping[str, Any] | None = None, study: str = "", budget: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a ``sweep.json`` (the format :func:`epsfinder.plots.plot_heatmap` reads) and return it."""
    metric, direction = metric_of(task)
    keep = ("number", "lr", "eps", "beta2", "state", "value", "duration_s", "reason")
    rows = [{k: ({**t, "number": i}).get(k) for k in keep} for i, t in enumerate(trials)]
    best = best_trial(rows, direction)
    sweep = {
        "task": task, "optimizer": optimizer, "metric": metric, "direction": direction, "study": study,
        "storage": os.path.relpath(TRIALS, ROOT.parent), "eps_spec": [float(e) for e in eps],
        "range": dict(range_dict) if range_dict else None,
        "grid": {"lr": list(lr), "eps": list(eps), "beta2": list(beta2)},
        "trials": rows, "best": dict(best) if best else None, "baseline": dict(baseline) if baseline else None,
        "budget": dict(budget) if budget else None,
    }
    write_json(path, sweep)
    return sweep


def save_png(fig: Any, path: pathlib.Path, dpi: int = 100) -> pathlib.Path:
    """Save a matplotlib figure as a small PNG and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Estimates and probes
# ----------------------------------------------------------------------------------------------------------------


def estimate(tb: TaskBudget, optimizer: str, method: str, out: pathlib.Path, *, seed: int = 0,
             fresh: bool = False) -> Any:
    """Algorithm 2 on the task's first epoch (weights untouched), stored as ``out`` (EpsilonRange JSON)."""
    from epsfinder import EpsilonRange, estimate_range
    from epsfinder.tasks import get_task

    if out.exists() and not fresh:
        return EpsilonRange.from_json(out)
    import numpy as np
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    started = time.perf_counter()
    setup = get_task(tb.task).build(preset=tb.preset, seed=seed, limit=tb.limit, options=tb.options or None)
    hp = setup.hparams
    kw: dict[str, Any] = {"weight_decay": hp.get("weight_decay")}
    if hp.get("betas") is not None:
        kw["beta2"] = float(hp["betas"][1])
    r = estimate_range(setup.model, setup.loss_fn, setup.train_loader, optimizer, method=method,
                       step_fn=setup.step_fn, clip_grad_norm=hp.get("clip_grad_norm"), progress_bar=False, **kw)
    out.parent.mkdir(parents=True, exist_ok=True)
    r.to_json(out)
    print(f"  estimate {tb.task} {optimizer} {method}: [{r.lower:g}, {r.upper:g}] "
          f"({time.perf_counter() - started:.1f}s)", flush=True)
    return r


def probe_run(tb: TaskBudget, optimizer: str, lr: float, eps: float | None, out: pathlib.Path, *,
              seed: int = 0, fresh: bool = False, epochs: int | None = None) -> pathlib.Path | None:
    """A real training run with an EpsilonProbe attached; writes ``out/result.json`` (skipped when present)."""
    from epsfinder.tasks import train_task

    if (out / "result.json").exists() and not fresh:
        return out / "result.json"
    started = time.perf_counter()
    try:
        train_task(tb.task, optimizer=optimizer, lr=lr, eps=eps, epochs=epochs or tb.epochs, preset=tb.preset,
                   seed=seed, limit=tb.limit, options=tb.options or None, probe=True, out=out, progress=False)
    except Exception as exc:
        print(f"  probe {tb.task} {optimizer} failed: {type(exc).__name__}: {exc}", flush=True)
        return None
    print(f"  probe {tb.task} {optimizer} lr={lr:g} eps={_fmt(eps)} ({time.perf_counter() - started:.1f}s)",
          flush=True)
    return out / "result.json" if (out / "result.json").exists() else None


# ----------------------------------------------------------------------------------------------------------------
# Pure analysis (tested)
# ----------------------------------------------------------------------------------------------------------------


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b))


def in_range(eps: float, lower: float, upper: float) -> bool:
    """Whether ``eps`` lies in ``[lower, upper]`` (with a float tolerance of 1e-6 relative)."""
    return (eps >= lower or close(eps, lower)) and (eps <= upper or close(eps, upper))


def range_size(lower: float, upper: float, optimizer: str) -> int:
    """Number of grid values in an estimated range: powers of ten every decade (every 2 for the squared family).

    >>> range_size(1e-6, 1e-2, "adam"), range_size(1e-12, 1e-6, "adabelief")
    (5, 4)
    """
    step = 2 if optimizer in SQUARED else 1
    span = round(math.log10(upper) - math.log10(lower))
    return span // step + 1


def target_value(best: float, metric: str) -> float:
    """The value a strategy must reach: within 0.5 accuracy points, 2 % perplexity, 0.5 BLEU of ``best``."""
    kind, tol = TOLERANCE[metric]
    if metric == "perplexity":
        return best * (1 + tol)
    return best - tol if kind == "abs" else best * (1 - tol)


def reaches(value: float | None, target: float, direction: str) -> bool:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    return value >= target - 1e-12 if direction == "maximize" else value <= target + 1e-12


def nearest_on_grid(value: float, grid: Sequence[float]) -> float:
    """The grid value nearest to ``value`` in log space (ties: the smaller)."""
    return min(sorted(grid), key=lambda g: abs(math.log10(g) - math.log10(value)))


def strategy_cost(trials: Sequence[Mapping[str, Any]], target: float, direction: str) -> dict[str, Any]:
    """Cost of running every trial of a grid strategy: trials, wall time, its best, whether it reaches ``target``."""
    best = best_trial(trials, direction)
    return {
        "trials": len(trials),
        "wall_s": float(sum(float(t.get("duration_s") or 0.0) for t in trials)),
        "best": None if best is None else float(best["value"]),
        "best_lr": None if best is None else best["lr"],
        "best_eps": None if best is None else best["eps"],
        "reached": best is not None and reaches(float(best["value"]), target, direction),
    }


def random_search(trials: Sequence[Mapping[str, Any]], target: float, direction: str, *, seeds: int = 1000,
                  seed: int = 0) -> dict[str, Any]:
    """Random search simulated on a finished grid: shuffle its trials (``seeds`` times) and count the trials and
    wall time until the first one that reaches ``target``. Reports medians (and the 90th percentile of trials)."""
    rng = random.Random(seed)
    counts: list[int] = []
    times: list[float] = []
    for _ in range(seeds):
        order = list(trials)
        rng.shuffle(order)
        spent = 0.0
        for i, t in enumerate(order, 1):
            spent += float(t.get("duration_s") or 0.0)
            if t.get("state") == "COMPLETE" and reaches(t.get("value"), target, direction):
                counts.append(i)
                times.append(spent)
                break
    if not counts:
        return {"median_trials": None, "p90_trials": None, "median_wall_s": None, "reached_fraction": 0.0,
                "seeds": seeds}
    counts_sorted = sorted(counts)
    return {
        "median_trials": float(statistics.median(counts)),
        "p90_trials": float(counts_sorted[min(len(counts_sorted) - 1, math.ceil(0.9 * len(counts_sorted)) - 1)]),
        "median_wall_s": float(statistics.median(times)),
        "reached_fraction": len(counts) / seeds,
        "seeds": seeds,
    }


def efficiency(trials: Sequence[Mapping[str, Any]], *, metric: str, direction: str, lower: float, upper: float,
               seeds: int = 1000) -> dict[str, Any]:
    """Tuning efficiency of four strategies on one finished lr × ε grid (no new training).

    (a) the full grid; (b) the grid ε values inside ``[lower, upper]`` × all lr; (c) the two ends only × all lr
    (each end mapped to the nearest grid ε when it is not on the grid); (d) random search over the full grid.
    The target is :func:`target_value` of the full grid's best.
    """
    best = best_trial(trials, direction)
    if best is None:
        return {"target": None, "grid_best": None, "strategies": {}}
    target = target_value(float(best["value"]), metric)
    grid_eps = sorted({float(t["eps"]) for t in trials if t.get("eps") is not None})
    inside = [t for t in trials if t.get("eps") is not None and in_range(float(t["eps"]), lower, upper)]
    ends_exact = [e for e in (lower, upper) if any(close(e, g) for g in grid_eps)]
    ends = sorted({nearest_on_grid(e, grid_eps) for e in (lower, upper)}) if grid_eps else []
    two = [t for t in trials if t.get("eps") is not None and any(close(float(t["eps"]), e) for e in ends)]
    return {
        "target": target,
        "grid_best": float(best["value"]),
        "ends_used": ends,
        "ends_on_grid": len(ends_exact) == 2,
        "strategies": {
            "full_grid": strategy_cost(trials, target, direction),
            "estimated_range": strategy_cost(inside, target, direction),
            "two_ends": strategy_cost(two, target, direction),
            "random_search": random_search(trials, target, direction, seeds=seeds),
        },
    }


def best_lr_per_eps(trials: Sequence[Mapping[str, Any]], direction: str) -> dict[float, float]:
    """For each ε column, the learning rate of its best complete trial (columns with none are left out)."""
    out: dict[float, float] = {}
    for e in sorted({float(t["eps"]) for t in trials if t.get("eps") is not None}):
        b = best_trial([t for t in trials if t.get("eps") is not None and close(float(t["eps"]), e)], direction)
        if b is not None:
            out[e] = float(b["lr"])
    return out


def log_slope(points: Mapping[float, float]) -> float | None:
    """Least-squares slope of log10(y) on log10(x); None with fewer than two distinct x."""
    xs = [math.log10(x) for x in points]
    ys = [math.log10(y) for y in points.values()]
    if len(set(xs)) < 2:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


#: Shares of elements with A > ε that name a regime: "immutable" at most 10 %, "adaptive" at least 90 %.
IMMUTABLE_SHARE = 0.10
ADAPTIVE_SHARE = 0.90


def regime(share: float) -> str:
    """'immutable' (share of A > ε ≤ 10 %), 'adaptive' (≥ 90 %) or 'mixed'."""
    if share <= IMMUTABLE_SHARE:
        return "immutable"
    if share >= ADAPTIVE_SHARE:
        return "adaptive"
    return "mixed"


def diagonal_test(best_lr: Mapping[float, float], shares: Mapping[float, float]) -> dict[str, Any]:
    """Claim 2's ridge: over the immutable ε columns, does the best α grow with ε (α/ε constant)?

    Criterion: at least two immutable columns and a log-log slope of best α on ε in [0.5, 1.5].
    """
    cols = {e: lr for e, lr in best_lr.items() if e in shares and regime(shares[e]) == "immutable"}
    slope = log_slope(cols)
    return {"columns": len(cols), "slope": slope,
            "holds": slope is not None and len(cols) >= 2 and 0.5 <= slope <= 1.5}


def flat_test(best_lr: Mapping[float, float], shares: Mapping[float, float], lr_grid: Sequence[float]
              ) -> dict[str, Any]:
    """Claim 3's flat optimum: over the adaptive ε columns, is the best α the same whatever ε?

    Criterion: at least two adaptive columns, and their best α values span at most two adjacent values of the
    lr grid (max/min index difference ≤ 1) with a log-log slope |s| ≤ 0.25.
    """
    cols = {e: lr for e, lr in best_lr.items() if e in shares and regime(shares[e]) == "adaptive"}
    grid = sorted(lr_grid)
    idx = [min(range(len(grid)), key=lambda i, lr=lr: abs(math.log10(grid[i]) - math.log10(lr)))
           for lr in cols.values()]
    slope = log_slope(cols)
    spread = (max(idx) - min(idx)) if idx else None
    holds = len(cols) >= 2 and spread is not None and spread <= 1 and slope is not None and abs(slope) <= 0.25
    return {"columns": len(cols), "slope": slope, "index_spread": spread, "holds": holds}


def verdict(passed: int, total: int) -> str:
    """'holds' when every case passes, 'holds partly' when some do, 'does not hold here' when none, 'not run'."""
    if total == 0:
        return "not run"
    if passed == total:
        return "holds"
    if passed == 0:
        return "does not hold here"
    return "holds partly"


def beta2_rule(steps_per_epoch: int, beta2_grid: Sequence[float]) -> float:
    """NOTES §4: the smallest β2 of the grid whose horizon 1/(1−β2) covers an epoch's batches (else the largest)."""
    for b in sorted(beta2_grid):
        if 1.0 / (1.0 - b) >= steps_per_epoch:
            return b
    return max(beta2_grid)


def spread(values: Sequence[float | None], metric: str) -> float | None:
    """Spread of a metric over settings: max − min (relative to the min for perplexity); None if < 2 values."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if len(v) < 2:
        return None
    return (max(v) - min(v)) / min(v) if metric == "perplexity" else max(v) - min(v)


def matters(s: float | None, metric: str) -> bool | None:
    """Whether a spread exceeds the tuning tolerance (None when there is no spread)."""
    if s is None:
        return None
    return s > TOLERANCE[metric][1]


def result_dir(study: str, budget: str) -> pathlib.Path:
    return RESULTS / study / budget


def log_header(study: str, budget: Budget) -> None:
    print(f"== {study} (budget {budget.name}) {time.strftime('%H:%M:%S')}", flush=True)
