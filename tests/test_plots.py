"""epsfinder.plots on real small runs (sklearn digits, a small MLP): the info layer, then the drawn artists."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

import epsfinder
from epsfinder import EpsilonRange, plots

PLOT_EXTRA = "pip install 'epsfinder[plot]'"


# ---------------------------------------------------------------------------------------------- real runs
@functools.cache
def digits_result(epochs: int = 3) -> EpsilonRange:
    """Adam trained on sklearn's digits for a few epochs with a probe: two snapshots per epoch."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    bs = 128
    spe = math.ceil(len(x) / bs)
    g = torch.Generator().manual_seed(0)
    with epsfinder.EpsilonProbe(opt, model=model, schedule=epsfinder.per_epoch(spe, 2), steps_per_epoch=spe) as p:
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(spe):
                idx = perm[i * bs : (i + 1) * bs]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    return p.result()


@functools.cache
def digits_dryrun() -> EpsilonRange:
    """The paper's dry pass (Algorithm 2) over one epoch of digits."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10))
    loader = [(x[i : i + 100], y[i : i + 100]) for i in range(0, len(x), 100)]
    return epsfinder.estimate_range(model, nn.functional.cross_entropy, loader, "adam", progress_bar=False)


def make_sweep(result: EpsilonRange, *, best_eps: float, direction: str = "maximize", metric: str = "accuracy",
               beta2: tuple[float | None, ...] = (0.99, 0.999), with_range: bool = True) -> dict:
    """A well-formed sweep.json dict over lr × eps (× beta2) whose optimum sits at ``best_eps``.

    Left of the range the metric depends on lr only; at large ε it depends on lr/ε (the SGD + momentum ridge).
    """
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
    epss = [10.0**k for k in range(-8, 0)]
    trials = []
    sign = 1.0 if direction == "maximize" else -1.0
    for b2 in beta2:
        for lr in lrs:
            for eps in epss:
                eff = lr / max(eps, best_eps) * best_eps  # constant along lr/eps above best_eps
                score = 0.95 - 0.02 * abs(math.log10(eff) - math.log10(1e-3)) - 0.01 * abs(
                    math.log10(eps) - math.log10(best_eps)) * (eps < best_eps) - (0.005 if b2 == 0.99 else 0.0)
                value = score if direction == "maximize" else 100.0 * (2.0 - score)
                trials.append({"number": len(trials), "lr": lr, "eps": eps, "beta2": b2, "state": "COMPLETE",
                               "value": value, "duration_s": 1.5, "reason": None})
    trials[0].update(state="FAIL", value=None, reason="diverged (loss is nan)")
    trials.append({"number": len(trials), "lr": 1e-2, "eps": 1e-5, "beta2": beta2[0], "state": "RUNNING",
                   "value": None, "duration_s": None, "reason": None})
    done = [t for t in trials if t["state"] == "COMPLETE"]
    best = max(done, key=lambda t: sign * t["value"])
    return {
        "task": "digits-mlp", "optimizer": "adam", "metric": metric, "direction": direction, "study": "test",
        "storage": "sqlite:///x.db", "eps_spec": "auto", "range": result.to_dict() if with_range else None,
        "grid": {"lr": lrs, "eps": epss, "beta2": list(beta2)}, "trials": trials, "best": best,
        "baseline": {"optimizer": "sgd", "lr": 0.05, "value": 0.94},
    }


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def result() -> EpsilonRange:
    return digits_result()


def _labels(ax) -> list[str]:
    return [ln.get_label() for ln in ax.lines]


def _line(ax, prefix: str):
    found = [ln for ln in ax.lines if ln.get_label().startswith(prefix)]
    assert found, f"no line labelled {prefix!r} in {_labels(ax)}"
    return found[0]


def _span(ax, prefix: str) -> Rectangle:
    found = [p for p in ax.patches if p.get_label().startswith(prefix)]
    assert found, f"no patch labelled {prefix!r}"
    return found[0]


def _legend_texts(fig: Figure) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


# ---------------------------------------------------------------------------------------------- the runs
def test_digits_run_has_several_snapshots(result):
    assert len(result.snapshots) == 6
    assert result.step == result.steps_per_epoch  # the paper's snapshot: end of the first epoch
    assert result.lower < result.upper
    assert result.histogram.zeros > 0  # digits has constant (dead) pixels: their weights' A is exactly zero


# ---------------------------------------------------------------------------------------------- histogram
def test_histogram_info_marks_algorithm_2(result):
    info = plots._histogram_info(result, eps=[1e-8, 1e-3])
    assert [ln.x for ln in info.percentile_lines] == [result.raw_lower, result.raw_upper]
    assert [ln.tag for ln in info.percentile_lines] == ["P2", "P98"]
    assert info.span == (result.lower, result.upper)
    for line in info.eps_lines:
        share = result.fraction_above(line.eps)
        assert line.share == pytest.approx(share)
        assert f"{plots._pct(share)} % adaptive" in line.label
    assert info.eps_lines[1].label.startswith("ε=1e-3: ")
    assert "gradient units" in info.xlabel and "squared" not in info.xlabel
    (series,) = info.series
    h = result.histogram
    assert series.heights.sum() == pytest.approx(100.0 * h.positive / h.finite)
    assert any("zeros" in n for n in info.notes)
    assert info.xlim[0] < min(series.edges[0], 1e-8) and info.xlim[1] > result.upper


def test_histogram_info_default_eps_is_the_runs(result):
    info = plots._histogram_info(result)
    assert [e.eps for e in info.eps_lines] == [result.hyperparameters["eps"]]
    assert plots._histogram_info(result, eps=[]).eps_lines == []


def test_histogram_info_one_layer(result):
    ly = result.layers[0]
    info = plots._histogram_info(result, layer=ly.name, eps=1e-3)
    assert [ln.x for ln in info.percentile_lines] == [ly.p_low, ly.p_high]
    assert info.eps_lines[0].share == pytest.approx(ly.histogram.fraction_above(1e-3))
    assert ly.name in info.title


def test_histogram_info_counts(result):
    info = plots._histogram_info(result, y="count", bins_per_decade=10)
    assert info.series[0].heights.sum() == result.histogram.positive
    assert info.ylabel == "elements per bin"


def test_histogram_axis_label_for_squared_terms(result):
    sq = dataclasses.replace(result, optimizer="adabelief", family="squared")
    info = plots._histogram_info(sq)
    assert "squared gradient units" in info.xlabel
    assert "beta_2" in info.xlabel
    assert "squared gradient units" in plots._adaptability_info(sq).xlabel


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layer": "nope"}, "layer='nope'.*0.weight"),
        ({"eps": -1.0}, "positive and finite"),
        ({"eps": [1e-8, float("nan")]}, "positive and finite"),
        ({"y": "density"}, "y must be"),
        ({"bins_per_decade": 0}, "bins_per_decade"),
    ],
)
def test_histogram_errors_name_the_value(result, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_histogram(result, **kwargs)


def test_plot_histogram_draws_the_marks(result, tmp_path):
    fig = plots.plot_histogram(result, eps=[1e-8, 1e-3])
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "gradient units" in ax.get_xlabel() and "elements" in ax.get_ylabel()
    assert _line(ax, "lowest layer P2").get_xdata()[0] == pytest.approx(result.raw_lower)
    assert _line(ax, "highest layer P98").get_xdata()[0] == pytest.approx(result.raw_upper)
    assert _line(ax, "lowest layer P2").get_linestyle() == "--"
    span = _span(ax, "estimated range")
    assert span.get_x() == pytest.approx(result.lower)
    assert span.get_x() + span.get_width() == pytest.approx(result.upper)
    for eps in (1e-8, 1e-3):
        line = _line(ax, f"ε={plots._num(eps)}:")
        assert line.get_xdata()[0] == pytest.approx(eps)
        assert f"{plots._pct(result.fraction_above(eps))} % adaptive" in line.get_label()
    texts = [t.get_text() for t in ax.texts]
    assert "P2" in texts and "P98" in texts
    assert any("adaptive" in t for t in _legend_texts(fig))
    assert fig.get_figwidth() == pytest.approx(plots.WIDTH_IN)
    assert all(t.get_fontsize() >= 8 for t in [ax.xaxis.label, ax.yaxis.label, *ax.get_xticklabels()])

    written = plots.save_figure(fig, tmp_path / "hist")
    assert [p.name for p in written] == ["hist.png", "hist.svg"]
    assert all(p.stat().st_size > 1000 for p in written)
    img = matplotlib.image.imread(written[0])
    assert img.shape[1] <= 3.6 * 200  # single column at 200 dpi (the tight box may trim a little)
    assert written[1].read_text().lstrip().startswith("<?xml")


def test_plot_histogram_all_layers_small_multiples(result):
    info = plots._layers_info(result, eps=1e-3)
    assert [r.label for r in reversed(info.ridges)] == [ly.name for ly in result.layers]  # first layer on top
    for r, ly in zip(reversed(info.ridges), result.layers):
        assert (r.p_low, r.p_high) == (ly.p_low, ly.p_high)
        assert r.shares[1e-3] == pytest.approx(ly.histogram.fraction_above(1e-3))
        assert r.heights.max() == pytest.approx(0.9)

    fig = plots.plot_histogram(result, layer="all", eps=1e-3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == [ly.name for ly in reversed(result.layers)]
    lows = _line(ax, "each layer's P2").get_xdata()
    assert list(lows) == pytest.approx([ly.p_low for ly in reversed(result.layers)])
    assert f"{plots._pct(result.fraction_above(1e-3))} % adaptive" in _line(ax, "ε=1e-3").get_label()
    right = {t.get_text() for t in ax.texts}
    assert f"{plots._pct(result.layers[0].histogram.fraction_above(1e-3))} %" in right


def test_plot_into_given_axes_returns_its_figure(result):
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.5))
    assert plots.plot_histogram(result, ax=axes[0]) is fig
    assert plots.plot_adaptability(result, ax=axes[1]) is fig
    assert axes[0].get_xscale() == "log" and axes[1].get_xscale() == "log"
    assert axes[0].get_legend() is not None
    assert len(fig.axes) == 2


def test_rc_context_does_not_leak(result):
    before = dict(matplotlib.rcParams)
    plots.plot_histogram(result)
    after = dict(matplotlib.rcParams)
    assert {k: v for k, v in after.items() if before.get(k) != v and k != "backend"} == {}


def test_epsilon_range_plot_returns_figure(result):
    fig = result.plot(eps=1e-4)
    assert isinstance(fig, Figure)
    assert _line(fig.axes[0], "ε=1e-4")


def test_plot_histogram_of_a_dry_run():
    r = digits_dryrun()
    fig = plots.plot_histogram(r)
    assert _line(fig.axes[0], "lowest layer P2").get_xdata()[0] == pytest.approx(r.raw_lower)


# ---------------------------------------------------------------------------------------------- evolution
def test_evolution_info_from_json_round_trip(result):
    r = EpsilonRange.from_json(result.to_json())
    info = plots._evolution_info(r, eps=1e-3)
    assert [x.step for x in info.ridges] == [s.step for s in result.snapshots]
    assert [x.offset for x in info.ridges] == list(range(len(result.snapshots)))
    assert [x.highlight for x in info.ridges].count(True) == 1
    assert next(x for x in info.ridges if x.highlight).step == result.step
    for ridge, snap in zip(info.ridges, result.snapshots):
        assert ridge.shares[1e-3] == pytest.approx(snap.total().fraction_above(1e-3))
        assert ridge.p_low == pytest.approx(min(h.quantile(0.02) for h in snap.histograms.values()))
        assert ridge.p_high == pytest.approx(max(h.quantile(0.98) for h in snap.histograms.values()))
    assert max(float(x.heights.max()) for x in info.ridges) == pytest.approx(1.6)
    assert info.ridges[0].label == f"epoch {round(result.snapshots[0].epoch, 2):g}"
    assert info.eps_lines[0].share == pytest.approx(result.fraction_above(1e-3))


def test_evolution_keeps_first_last_and_estimate(result):
    info = plots._evolution_info(result, max_snapshots=2)
    steps = [x.step for x in info.ridges]
    assert steps[0] == result.snapshots[0].step and steps[-1] == result.snapshots[-1].step
    assert result.step in steps


def test_evolution_one_layer_and_no_snapshots(result):
    name = result.layers[2].name
    info = plots._evolution_info(result, layer=name, eps=[])
    assert info.ridges[-1].p_high == pytest.approx(result.snapshots[-1].histograms[name].quantile(0.98))
    bare = dataclasses.replace(result, snapshots=[])
    (only,) = plots._evolution_info(bare).ridges
    assert only.step == result.step
    with pytest.raises(ValueError, match="layer='all'"):
        plots.plot_evolution(result, layer="all")


def test_plot_evolution_draws_ridges(result, tmp_path):
    r = EpsilonRange.from_json(result.to_json())
    fig = plots.plot_evolution(r, eps=[1e-3, 1e-2])
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert "gradient units" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0].startswith("epoch 0.5") and labels[-1] == "epoch 3"
    bold = [t.get_text() for t in ax.get_yticklabels() if t.get_fontweight() == "bold"]
    assert bold == ["epoch 1"]
    assert _line(ax, "ε=1e-3").get_xdata()[0] == pytest.approx(1e-3)
    assert _line(ax, "ε=1e-2")
    track = _line(ax, "lowest layer P2")
    assert len(track.get_xdata()) == len(result.snapshots)
    right = [t.get_text() for t in ax.texts]
    assert f"{plots._pct(result.snapshots[-1].total().fraction_above(1e-3))} %" in right
    assert all(p.exists() for p in plots.save_figure(fig, tmp_path / "evolution.svg"))


# ---------------------------------------------------------------------------------------------- adaptability
def test_adaptability_info(result):
    info = plots._adaptability_info(result)
    shares = info.overall.shares
    assert np.all(np.diff(shares) <= 1e-9)  # non-increasing in ε
    h = result.histogram
    assert shares[0] == pytest.approx(100.0 * h.positive / h.finite)
    assert shares[-1] == pytest.approx(0.0)
    assert [g for g, _ in info.grid] == result.grid()
    assert [s for _, s in info.grid] == pytest.approx([100 * result.fraction_above(e) for e in result.grid()])
    adaptive, immutable = info.regions
    assert adaptive.name == "fully adaptive" and adaptive.x1 == result.raw_lower
    assert "fully immutable" in immutable.name and "(SGD + momentum)" in immutable.name
    assert immutable.x0 == result.raw_upper
    assert info.eps[0] <= result.raw_lower / 100 and info.eps[-1] >= result.raw_upper * 100
    assert len(info.layers) == len(result.layers)
    assert plots._adaptability_info(result, per_layer=False).layers == []
    rms = dataclasses.replace(result, optimizer="rmsprop")
    assert plots._adaptability_info(rms).regions[1].name == "fully immutable\n(SGD)"


def test_plot_adaptability_draws_curves_and_regions(result):
    fig = plots.plot_adaptability(result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "ε (gradient units)"
    assert "A > ε" in ax.get_ylabel()
    overall = _line(ax, "all layers")
    assert overall.get_linewidth() > max(_line(ax, ly.name).get_linewidth() for ly in result.layers)
    grid = _line(ax, "grid of the range")
    assert list(grid.get_xdata()) == result.grid()
    texts = [t.get_text() for t in ax.texts]
    assert "← fully adaptive" in texts and "fully immutable →\n(SGD + momentum)" in texts
    span = _span(ax, "estimated range")
    assert (span.get_x(), span.get_x() + span.get_width()) == pytest.approx((result.lower, result.upper))


# ---------------------------------------------------------------------------------------------- heat map
def test_heatmap_info_best_cell_and_range(result):
    sweep = make_sweep(result, best_eps=1e-6)
    info = plots._heatmap_info(sweep)
    best = sweep["best"]
    assert info.best_cell == (info.xvalues.index(best["eps"]), info.yvalues.index(best["lr"]))
    assert info.values[info.best_cell[1], info.best_cell[0]] == pytest.approx(best["value"])
    inside = [i for i, e in enumerate(info.xvalues) if result.lower <= e <= result.upper]
    assert info.range_cells == (inside[0], inside[-1])
    assert info.diagonal is None  # best ε below the upper end: no SGD ridge
    assert not math.isnan(info.values[0, 0])  # failed at β2=0.99, complete at β2=0.999: the best over β2
    assert "best over β2" in info.title
    assert "higher is better" in info.clabel and info.cmap == "cividis"


def test_heatmap_diagonal_only_at_the_upper_end(result):
    sweep = make_sweep(result, best_eps=result.upper, beta2=(None,))
    info = plots._heatmap_info(sweep)
    assert info.xvalues[info.best_cell[0]] == result.upper
    assert info.diagonal is not None and "α/ε = const" in info.diagonal_label
    xi, yi = info.diagonal
    bx, by = info.best_cell
    assert np.interp(bx, xi, yi) == pytest.approx(by)  # through the best cell
    # one ε decade up = one lr decade up; the lr grid has two cells per decade
    assert np.interp(bx - 1, xi, yi) == pytest.approx(by - 2)
    assert "best over" not in info.title

    fig = plots.plot_heatmap(sweep)
    ax = fig.axes[0]
    diag = _line(ax, "α/ε = const")
    assert np.interp(bx, diag.get_xdata(), diag.get_ydata()) == pytest.approx(by)
    best_box = _span(ax, "best trial")
    assert (best_box.get_x(), best_box.get_y()) == (bx - 0.5, by - 0.5)
    rng = _span(ax, "estimated ε range")
    a, b = info.range_cells
    assert (rng.get_x(), rng.get_width()) == (a - 0.5, b - a + 1)
    assert [t.get_text() for t in ax.get_xticklabels()] == [plots._num(e, 2) for e in info.xvalues]
    assert ax.get_xlabel() == "ε" and ax.get_ylabel() == "learning rate α"
    assert "accuracy" in fig.axes[1].get_ylabel()  # the colour bar
    cell = [t for t in ax.texts if (t.get_position() == (bx, by))]
    assert cell and cell[0].get_text() == f"{info.values[by, bx]:.3g}"


def test_heatmap_squared_family_uses_half_slope(result):
    sq = dataclasses.replace(result, family="squared", optimizer="adabelief")
    sweep = make_sweep(result, best_eps=result.upper, beta2=(None,), with_range=False)
    info = plots._heatmap_info(sweep, result=sq)
    assert "α/√ε" in info.diagonal_label
    xi, yi = info.diagonal
    bx, by = info.best_cell
    assert np.interp(bx - 2, xi, yi) == pytest.approx(by - 2)  # two ε decades = one lr decade


def test_heatmap_beta2_and_missing_cells(result, tmp_path):
    sweep = make_sweep(result, best_eps=1e-6)
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps(sweep))
    info = plots._heatmap_info(path, x="eps", y="beta2")
    assert info.yvalues == [0.99, 0.999]
    assert info.diagonal is None
    assert "best over learning rate α" in info.title
    fig = plots.plot_heatmap(tmp_path, y="beta2")  # the folder holding sweep.json works too
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["0.99", "0.999"]
    assert fig.axes[0].get_ylabel() == "β2"

    only_fail = dict(sweep, trials=[dict(sweep["trials"][0])], best=None, grid={"lr": [1e-4], "eps": [1e-8]})
    info = plots._heatmap_info(only_fail)
    assert info.cell_text == [["×"]] and info.best_cell is None


def test_heatmap_minimize_picks_the_lowest(result):
    sweep = make_sweep(result, best_eps=1e-6, direction="minimize", metric="perplexity")
    sweep["best"] = None  # computed from the cells
    info = plots._heatmap_info(sweep)
    bx, by = info.best_cell
    assert info.values[by, bx] == pytest.approx(np.nanmin(info.values))
    assert info.cmap == "cividis_r" and "lower is better" in info.clabel
    assert "perplexity" in info.clabel


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"x": "momentum"}, "x='momentum'.*eps"), ({"x": "lr", "y": "lr"}, "x and y must differ")],
)
def test_heatmap_errors(result, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plots.plot_heatmap(make_sweep(result, best_eps=1e-6), **kwargs)


def test_heatmap_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"sweep\.json"):
        plots.plot_heatmap(tmp_path)


# ---------------------------------------------------------------------------------------------- Table II, saving
def test_adaptability_table_and_text(result):
    rows = plots.adaptability_table(result)
    assert [r["eps"] for r in rows] == result.grid()
    assert rows[0]["overall"] == pytest.approx(result.fraction_above(result.grid()[0]))
    text = plots.format_table(plots.adaptability_table(result, [1e-8, 1e-3]))
    lines = text.splitlines()
    assert lines[0].split() == ["layer", "ε=1e-8", "ε=1e-3"]
    assert lines[1].startswith("all layers")
    assert f"{plots._pct(result.fraction_above(1e-3))} %" in lines[1]
    assert [ln.split()[0] for ln in lines[2:]] == [ly.name for ly in result.layers]
    assert plots.format_table([]) == ""


@pytest.mark.parametrize(
    ("share", "text"),
    [(0.966, "96.6"), (0.615, "61.5"), (0.0459, "4.59"), (0.0033, "0.33"), (0.9985, "99.85"), (1.0, "100"),
     (0.0, "0")],
)
def test_percentages_read_like_table_ii(share, text):
    assert plots._pct(share) == text


def test_save_figure_suffix_and_formats(result, tmp_path):
    fig = plots.plot_adaptability(result, per_layer=False)
    out = plots.save_figure(fig, tmp_path / "sub" / "adapt.png", formats=("png",))
    assert out == [tmp_path / "sub" / "adapt.png"] and out[0].stat().st_size > 0
    with pytest.raises(ValueError, match="unsupported"):
        plots.save_figure(fig, tmp_path / "x", formats=("bmp-ish",))


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=PLOT_EXTRA.replace("[", r"\[").replace("]", r"\]")):
        plots._mpl()
