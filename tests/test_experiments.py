"""Fast tests of the reproduction scripts in experiments/: efficiency, verdicts, resume, command lines."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parent.parent / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import _common as C  # noqa: E402
import make_report as R  # noqa: E402

LRS = [1e-3, 1e-2]
EPS = [1e-8, 1e-6, 1e-4, 1e-2]


def grid(values: dict[tuple[float, float], float], duration: float = 1.0) -> list[dict[str, Any]]:
    """A finished synthetic lr × ε grid: the given values, 0.5 elsewhere."""
    return [{"lr": lr, "eps": e, "state": "COMPLETE", "value": values.get((lr, e), 0.5), "duration_s": duration}
            for e in EPS for lr in LRS]


# ---------------------------------------------------------------------------------------------------- efficiency


def test_efficiency_strategies_exact() -> None:
    trials = grid({(1e-2, 1e-4): 0.90, (1e-2, 1e-6): 0.897, (1e-3, 1e-2): 0.894})
    res = C.efficiency(trials, metric="accuracy", direction="maximize", lower=1e-6, upper=1e-2, seeds=50)
    assert res["grid_best"] == 0.90
    assert res["target"] == pytest.approx(0.895)
    s = res["strategies"]
    assert s["full_grid"] == {"trials": 8, "wall_s": 8.0, "best": 0.90, "best_lr": 1e-2, "best_eps": 1e-4,
                              "reached": True}
    assert s["estimated_range"]["trials"] == 6 and s["estimated_range"]["reached"]
    # the ends 1e-6 and 1e-2 hold 0.897 (within 0.5 points) and 0.894 (not)
    assert s["two_ends"]["trials"] == 4 and s["two_ends"]["best"] == 0.897 and s["two_ends"]["reached"]
    assert res["ends_used"] == [1e-6, 1e-2] and res["ends_on_grid"]


def test_efficiency_two_ends_miss_and_off_grid_end() -> None:
    trials = grid({(1e-2, 1e-4): 0.90})
    res = C.efficiency(trials, metric="accuracy", direction="maximize", lower=1e-7, upper=1e-2, seeds=10)
    # 1e-7 is not on the grid: mapped to 1e-8 (ties go to the smaller); neither end reaches 0.895
    assert res["ends_used"] == [1e-8, 1e-2] and not res["ends_on_grid"]
    assert res["strategies"]["two_ends"] == {"trials": 4, "wall_s": 4.0, "best": 0.5, "best_lr": 1e-3,
                                             "best_eps": 1e-8, "reached": False}
    # the range [1e-7, 1e-2] holds the grid ε 1e-6, 1e-4 and 1e-2, and with them the best
    assert res["strategies"]["estimated_range"]["trials"] == 6 and res["strategies"]["estimated_range"]["reached"]

def test_random_search_every_trial_reaches() -> None:
    trials = [{"lr": 1.0, "eps": e, "state": "COMPLETE", "value": 1.0, "duration_s": 2.0} for e in EPS]
    r = C.random_search(trials, target=0.99, direction="maximize", seeds=20)
    assert r == {"median_trials": 1.0, "p90_trials": 1.0, "median_wall_s": 2.0, "reached_fraction": 1.0,
                 "seeds": 20}


def test_random_search_single_winner_is_uniform() -> None:
    trials = [{"lr": 1.0, "eps": float(i), "state": "COMPLETE", "value": float(i == 0), "duration_s": 1.0}
              for i in range(1, 4)] + [{"lr": 1.0, "eps": 9.0, "state": "COMPLETE", "value": 1.0, "duration_s": 1.0}]
    r = C.random_search(trials, target=1.0, direction="maximize", seeds=2000, seed=1)
    assert r["reached_fraction"] == 1.0
    assert 2.0 <= r["median_trials"] <= 3.0 and r["p90_trials"] == 4.0


def test_perplexity_target_and_failed_trials() -> None:
    assert C.target_value(100.0, "perplexity") == pytest.approx(102.0)
    assert C.target_value(30.0, "bleu") == pytest.approx(29.5)
    trials = [{"lr": 1.0, "eps": 1e-8, "state": "COMPLETE", "value": 100.0, "duration_s": 1.0},
              {"lr": 1.0, "eps": 1e-6, "state": "FAIL", "value": None, "duration_s": 3.0},
              {"lr": 1.0, "eps": 1e-4, "state": "COMPLETE", "value": 101.5, "duration_s": 1.0}]
    res = C.efficiency(trials, metric="perplexity", direction="minimize", lower=1e-6, upper=1e-4, seeds=5)
    assert res["strategies"]["full_grid"]["wall_s"] == 5.0
    assert res["strategies"]["estimated_range"] == {"trials": 2, "wall_s": 4.0, "best": 101.5, "best_lr": 1.0,
                                                    "best_eps": 1e-4, "reached": True}


def test_tied_best() -> None:
    trials = grid({(1e-2, 1e-4): 0.9, (1e-3, 1e-8): 0.9, (1e-3, 1e-2): 0.89})
    assert sorted(t["eps"] for t in C.tied_best(trials, "maximize")) == [1e-8, 1e-4]
    assert C.tied_best([], "maximize") == []


def test_range_size_and_beta2_rule() -> None:
    assert C.range_size(1e-4, 1e-1, "adam") == 4
    assert C.range_size(1e-12, 1e-6, "adabelief") == 4
    assert C.beta2_rule(34, [0.9, 0.99, 0.999]) == 0.99
    assert C.beta2_rule(668, [0.9, 0.99, 0.999]) == 0.999
    assert C.beta2_rule(5000, [0.9, 0.99, 0.999]) == 0.999


# ---------------------------------------------------------------------------------------------------- verdicts


def test_verdict_words() -> None:
    assert [C.verdict(2, 2), C.verdict(1, 2), C.verdict(0, 2), C.verdict(0, 0)] == [
        "holds", "holds partly", "does not hold here", "not run"]


def test_diagonal_and_flat_tests() -> None:
    shares_imm = {1e-3: 0.05, 1e-2: 0.0, 1e-1: 0.0}
    d = C.diagonal_test({1e-3: 1e-4, 1e-2: 1e-3, 1e-1: 1e-2}, shares_imm)
    assert d["columns"] == 3 and d["slope"] == pytest.approx(1.0) and d["holds"]
    assert not C.diagonal_test({1e-3: 1e-3, 1e-2: 1e-3, 1e-1: 1e-3}, shares_imm)["holds"]  # slope 0
    shares_ad = {1e-9: 1.0, 1e-8: 1.0, 1e-7: 0.95, 1e-3: 0.01}
    f = C.flat_test({1e-9: 2e-3, 1e-8: 2e-3, 1e-7: 2e-3, 1e-3: 5e-2}, shares_ad, [5e-4, 2e-3, 1e-2, 5e-2])
    assert f == {"columns": 3, "slope": 0.0, "index_spread": 0, "holds": True}
    f2 = C.flat_test({1e-9: 5e-4, 1e-8: 2e-3, 1e-7: 1e-2}, shares_ad, [5e-4, 2e-3, 1e-2, 5e-2])
    assert f2["index_spread"] == 2 and not f2["holds"]


def _case(best_eps: float, lower: float, upper: float, *, near: bool = False, family: str = "classification",
          regime: str = "immutable", diag: bool = True, flat: bool = True) -> dict[str, Any]:
    return {"trials_done": 8, "trials_planned": 8, "family": family, "metric": "accuracy",
            "best": {"eps": best_eps, "lr": 1e-3, "value": 0.9},
            "range_paper": {"lower": lower, "upper": upper, "size": 4,
                            "inside": C.in_range(best_eps, lower, upper), "near": near},
            "literature": {"size": 8}, "regime_at_best": regime, "diagonal": {"holds": diag}, "flat": {"holds": flat}}


def test_claim1_verdicts() -> None:
    cases = [_case(1e-2, 1e-4, 1e-1), _case(1e-5, 1e-4, 1e-1, near=True)]
    v = R.claim1(cases)
    assert (v["cases"], v["inside"], v["near"], v["smaller"]) == (2, 1, 2, 2)
    assert v["verdict"] == "holds partly" and v["verdict_near"] == "holds" and v["median_size_ratio"] == 0.5
    partial = {**_case(1e-2, 1e-4, 1e-1), "trials_done": 3}
    assert R.claim1([partial])["verdict"] == "not run"


def test_claim2_and_claim3_verdicts() -> None:
    cls = [_case(1e-1, 1e-4, 1e-1), _case(1e-5, 1e-4, 1e-1, regime="adaptive", diag=False)]
    v2 = R.claim2(cls)
    assert (v2["immutable"], v2["diagonal"], v2["verdict"]) == (1, 1, "holds partly")
    lm = [_case(1e-9, 1e-9, 1e-3, family="language-modeling", regime="adaptive", flat=True)]
    assert R.claim3(lm)["verdict"] == "holds"
    mt = {**_case(1e-9, 1e-9, 1e-3, family="translation", regime="adaptive"), "metric": "bleu",
          "best": {"eps": 1e-9, "lr": 1e-3, "value": 0.2}}
    v3 = R.claim3([mt])
    assert v3["inconclusive"] == 1 and v3["verdict"] == "not run"


def test_claim4_task_checks() -> None:
    s = {"task": "t", "metric": "accuracy", "rule_beta2": 0.99, "trials_done": 6, "trials_planned": 6, "columns": {
        "1e-08": {"values": {"0.9": 0.80, "0.99": 0.85, "0.999": 0.82}, "spread": 0.05, "matters": True,
                  "best_beta2": 0.99, "regime": "adaptive"},
        "0.1": {"values": {"0.9": 0.70, "0.99": 0.701, "0.999": 0.702}, "spread": 0.002, "matters": False,
                "best_beta2": 0.999, "regime": "immutable"},
    }}
    c = R.claim4_task(s)
    assert c["checks"] == {"insensitive_when_immutable": True, "sensitive_when_adaptive": True,
                           "rule_beta2_best": True}
    assert c["verdict"] == "holds"
    s["columns"]["1e-08"]["best_beta2"] = 0.9
    assert R.claim4_task(s)["verdict"] == "holds partly"
    assert R.claim4([s])["verdict"] == "holds partly"


def test_claim5_verdict() -> None:
    trials = grid({(1e-2, 1e-4): 0.90, (1e-2, 1e-6): 0.897})
    eff = C.efficiency(trials, metric="accuracy", direction="maximize", lower=1e-6, upper=1e-2, seeds=5)
    v = R.claim5({"cases": [{"complete_grid": True, "paper": eff}, {"complete_grid": False, "paper": eff}]})
    assert (v["cases"], v["two_ends_reached"], v["verdict"]) == (1, 1, "holds")


# ---------------------------------------------------------------------------------------------------- resume


def test_finished_trial_is_not_rerun(tmp_path: pathlib.Path) -> None:
    calls: list[dict[str, Any]] = []

    def trainer(task: str, **kw: Any) -> SimpleNamespace:
        calls.append(kw)
        return SimpleNamespace(diverged=False, best=0.8, wall_s=1.5, epochs=[{"epoch": 1, "metric": 0.8}],
                               metric="accuracy", direction="maximize", steps_per_epoch=3,
                               hyperparameters={"eps": kw["eps"], "beta2": 0.999})

    tb = C.TaskBudget("digits-mlp", "cpu", epochs=1, limit=100, options={}, optimizers=["adam"], lr={"*": [1e-3]})
    first = C.run_trial(tb, "adam", 1e-3, 1e-8, None, root=tmp_path, trainer=trainer, log=lambda *a, **k: None)
    assert first["state"] == "COMPLETE" and first["value"] == 0.8 and len(calls) == 1
    path = C.trial_path(tb, "adam", 1e-3, 1e-8, None, root=tmp_path)
    assert path.exists()
    again = C.run_trial(tb, "adam", 1e-3, 1e-8, None, root=tmp_path, trainer=trainer, log=lambda *a, **k: None)
    assert len(calls) == 1 and again == first
    # another point, and a forced rerun, do train
    C.run_trial(tb, "adam", 1e-3, 1e-6, None, root=tmp_path, trainer=trainer, log=lambda *a, **k: None)
    C.run_trial(tb, "adam", 1e-3, 1e-8, None, root=tmp_path, trainer=trainer, fresh=True, log=lambda *a, **k: None)
    assert len(calls) == 3
    assert [t["eps"] for t in C.load_trials(tb, "adam", [(1e-3, 1e-8, None), (1e-3, 1e-4, None)], root=tmp_path)
            ] == [1e-8]


def test_failed_trial_is_stored(tmp_path: pathlib.Path) -> None:
    def boom(task: str, **kw: Any) -> None:
        raise RuntimeError("out of memory")

    tb = C.TaskBudget("digits-mlp", "cpu", epochs=1, limit=100, options={}, optimizers=["adam"], lr={"*": [1e-3]})
    t = C.run_trial(tb, "adam", 1e-3, 1e-8, None, root=tmp_path, trainer=boom, log=lambda *a, **k: None)
    assert t["state"] == "FAIL" and "out of memory" in t["reason"]
    assert C.trial_path(tb, "adam", 1e-3, 1e-8, None, root=tmp_path).exists()


# ---------------------------------------------------------------------------------------------------- scripts


@pytest.mark.parametrize(
    "script", ["range_vs_grid", "beta2_eps", "sgd_baseline", "tuning_efficiency", "make_report", "run_all"]
)
def test_script_help(script: str) -> None:
    r = subprocess.run([sys.executable, str(EXPERIMENTS / f"{script}.py"), "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--budget" in r.stdout
