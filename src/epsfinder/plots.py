"""Figures of the adaptive term ``A`` and of ε sweeps (matplotlib; ``pip install 'epsfinder[plot]'``).

Every public ``plot_*`` function draws into the given ``ax`` (else a new single-column figure, 3.5 in wide) and
returns the matplotlib :class:`~matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG and SVG.

* :func:`plot_histogram`: the gradient magnitude histogram of one snapshot (aggregated, one layer, or every layer
  overlaid), with the per-layer P2/P98 bounds, the estimated range shaded and ε lines labelled with the share of
  elements above them.
* :func:`plot_evolution`: the histogram at every kept snapshot as a ridgeline, so the drift of ``A`` against a
  fixed ε is visible.
* :func:`plot_adaptability`: the adaptability level (share of elements with ``A > ε``) as a function of ε, with
  the fully adaptive and fully immutable regions named.
* :func:`plot_heatmap`: the metric of a sweep over (ε, learning rate) or (ε, β2), best cell and estimated range
  marked, and the ``α/ε = const`` diagonal when the best ε sits at the upper end of the range.
* :func:`adaptability_table` and :func:`format_table`: the paper's Table II analogue as rows and as text.

Plots come in two layers (STYLE.md): private ``_..._info`` functions compute backend-neutral NamedTuples, and the
public renderers draw them. This is the only module of epsfinder that imports matplotlib, and it does so lazily.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from epsfinder.estimate import EpsilonRange, SnapshotRecord
from epsfinder.histogram import LogHistogram

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "PALETTE",
    "adaptability_table",
    "format_table",
    "load_sweep",
    "plot_adaptability",
    "plot_evolution",
    "plot_heatmap",
    "plot_histogram",
    "save_figure",
]

#: Okabe–Ito colour-blind-safe palette, in the order the figures use it.
PALETTE: dict[str, str] = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "green": "#009E73",
    "orange": "#E69F00",
    "purple": "#CC79A7",
    "sky": "#56B4E9",
    "black": "#000000",
    "yellow": "#F0E442",
}
_CYCLE = [PALETTE[k] for k in ("blue", "vermillion", "green", "orange", "purple", "sky", "black", "yellow")]
_EPS_COLORS = [PALETTE[k] for k in ("black", "purple", "green", "sky", "blue")]
_EPS_STYLES = ["-", "-.", (0, (5, 1.5)), ":", (0, (3, 1, 1, 1, 1, 1))]
_RANGE_COLOR = PALETTE["orange"]
_P_COLOR = PALETTE["vermillion"]
_MAX_LEGEND_LAYERS = 8
WIDTH_IN = 3.5  # single-column width

_RC: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 9,
    "axes.linewidth": 0.8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.3,
    "legend.frameon": False,
    "legend.handlelength": 1.8,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "svg.fonttype": "path",
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
}

_PLOT_EXTRA = "pip install 'epsfinder[plot]'"

# The adaptive term's formula per optimizer (mathtext), NOTES §3; the family's default otherwise.
_TERM_TEX: dict[str, str] = {
    "adam": r"\sqrt{\hat{v}}",
    "adamw": r"\sqrt{\hat{v}}",
    "nadam": r"\sqrt{\hat{v}}",
    "radam": r"\sqrt{\hat{v}}",
    "diffgrad": r"\sqrt{\hat{v}}",
    "adamod": r"\sqrt{\hat{v}}",
    "amsgrad": r"\sqrt{\hat{v}_{\max}}",
    "rmsprop": r"\sqrt{v}",
    "adagrad": r"\sqrt{G}",
    "adamax": r"u",
    "madgrad": r"\sqrt[3]{v}",
    "adabelief": r"(1-\beta_2)\,\hat{s}'",
    "eadam": r"(1-\beta_2)\,\hat{v}'",
    "adamomentum": r"(1-\beta_2)\,\hat{v}'",
}
_FAMILY_TEX = {"magnitude": r"\sqrt{\hat{v}}", "squared": r"(1-\beta_2)\,\hat{s}'"}
_FAMILY_UNITS = {"magnitude": "gradient units", "squared": "squared gradient units"}
# Optimizers without momentum: with ε ≫ A they are plain SGD (NOTES §3).
_NO_MOMENTUM = ("rmsprop", "adagrad")

_METRIC_LABELS = {"accuracy": "test accuracy", "perplexity": "test perplexity", "bleu": "BLEU"}
_PARAM_LABELS = {"eps": "ε", "lr": "learning rate α", "beta2": "β2"}
_SWEEP_PARAMS = ("eps", "lr", "beta2")


# ---------------------------------------------------------------------------------------------- matplotlib
def _mpl() -> tuple[Any, Any]:
    """Import matplotlib (and pyplot) on first use; Agg when there is no display."""
    try:
        import matplotlib
    except ImportError as err:  # pragma: no cover - exercised only without matplotlib
        raise ImportError(
            f"epsfinder's figures need matplotlib, which is not installed: {_PLOT_EXTRA}"
        ) from err
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND") and _headless():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return matplotlib, plt


def _headless() -> bool:
    return sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """epsfinder's rc settings for the duration of one plot; global rcParams are left as they were."""
    matplotlib, _ = _mpl()
    with matplotlib.rc_context(_RC):
        yield


def _axes(ax: Axes | None, height: float, width: float = WIDTH_IN) -> tuple[Figure, Axes, bool]:
    """``(figure, axes, created)``: the given Axes and its figure, or a new constrained-layout figure."""
    if ax is not None:
        return _root_figure(ax), ax, False
    _, plt = _mpl()
    fig = plt.figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot(), True


def _root_figure(ax: Axes) -> Figure:
    try:
        return ax.get_figure(root=True)  # type: ignore[call-arg]
    except TypeError:  # matplotlib < 3.10
        return ax.figure  # type: ignore[return-value]


def save_figure(
    fig: Figure,
    path: str | os.PathLike[str],
    formats: Sequence[str] = ("png", "svg"),
    *,
    dpi: int = 200,
) -> list[Path]:
    """Save ``fig`` once per format, e.g. ``runs/fm/histogram.png`` and ``runs/fm/histogram.svg``.

    Args:
        fig: the figure (what every ``plot_*`` function returns).
        path: the file path with or without a suffix; a suffix naming an image format (``.png``, ``.svg``, ...)
            is replaced by each of ``formats``. Parent folders are created.
        formats: the formats to write (any that matplotlib's canvas supports: png, svg, pdf, ...).
        dpi: resolution of raster formats.

    Returns:
        The paths written, in the order of ``formats``.
    """
    if isinstance(formats, str):
        formats = (formats,)
    supported = fig.canvas.get_supported_filetypes()
    bad = [f for f in formats if f.lower() not in supported]
    if bad or not formats:
        raise ValueError(
            f"formats={list(formats)!r} holds no format or unsupported ones; choose from {sorted(supported)}"
        )
    p = Path(path)
    if p.suffix.lower().lstrip(".") in supported:
        p = p.with_suffix("")
    p.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = p.with_name(f"{p.name}.{fmt.lower()}")
        metadata = {"Date": None} if fmt.lower() == "svg" else None
        fig.savefig(out, format=fmt.lower(), dpi=dpi, bbox_inches="tight", pad_inches=0.03, facecolor="white",
                    metadata=metadata)
        written.append(out)
    return written


# ---------------------------------------------------------------------------------------------- formatting
def _num(x: float, digits: int = 3) -> str:
    """Compact scientific notation: ``1e-8``, ``2.5e-3``, ``1.02e-5``."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    e = math.floor(math.log10(abs(x)))
    m = x / 10.0**e
    ms = f"{m:.{digits}g}"
    if ms in ("10", "-10"):
        e += 1
        ms = "1" if m > 0 else "-1"
    return f"{ms}e{e}"


def _pct(share: float) -> str:
    """A share as a percentage with three significant digits, more near 100 % (``99.85``) as in Table II."""
    if not math.isfinite(share):
        return "n/a"
    v = 100.0 * share
    if v <= 0 or v >= 100:
        return f"{v:.0f}"
    if v > 99:
        decimals = min(4, math.ceil(-math.log10(100.0 - v)) + 1)
        return f"{v:.{decimals}f}"
    return f"{v:.3g}"


def _eps_label(eps: float, share: float) -> str:
    return f"ε={_num(eps)}: {_pct(share)} % adaptive"


def _base_name(optimizer: str) -> str:
    name = optimizer.lower()
    if name.endswith("-amsgrad"):
        return "amsgrad"
    return name.split("-")[0]


def _term_label(optimizer: str, family: str) -> str:
    """Axis label of ``A`` with its formula and units, e.g. ``adaptive term A = √v̂ (gradient units)``."""
    tex = _TERM_TEX.get(_base_name(optimizer), _FAMILY_TEX.get(family, "A"))
    units = _FAMILY_UNITS.get(family, "units of the optimizer's state")
    return f"adaptive term $A={tex}$ ({units})"


def _immutable_name(optimizer: str) -> str:
    return "SGD" if _base_name(optimizer) in _NO_MOMENTUM else "SGD + momentum"


def _as_eps_list(result: EpsilonRange, eps: float | Iterable[float] | None) -> list[float]:
    """``eps`` as a list; None means the ε the optimizer ran with (when the result records one)."""
    if eps is None:
        current = result.hyperparameters.get("eps")
        values = [float(current)] if isinstance(current, (int, float)) and current > 0 else []
    elif isinstance(eps, (int, float)):
        values = [float(eps)]
    else:
        values = [float(e) for e in eps]
    bad = [e for e in values if not (math.isfinite(e) and e > 0)]
    if bad:
        raise ValueError(f"ε values must be positive and finite, got eps={eps!r}; pass e.g. eps=1e-8 or [1e-8, 1e-3]")
    return values


def _when(step: int | None, epoch: float | None) -> str:
    if epoch is not None:
        return f"epoch {round(epoch, 2):g}"
    return f"step {step}" if step is not None else "snapshot"


def _layer_colors(n: int) -> list[Any]:
    if n <= _MAX_LEGEND_LAYERS:
        return _CYCLE[:n]
    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps["cividis"]
    return [cmap(0.9 * i / (n - 1)) for i in range(n)]


def _check_layer(result: EpsilonRange, layer: str | None, *, allow_all: bool = True) -> None:
    if layer is None or (allow_all and layer == "all"):
        return
    names = [ly.name for ly in result.layers]
    if layer not in names:
        choices = "None, 'all' or " if allow_all else "None or "
        raise ValueError(f"layer={layer!r} is not a layer of this result; pass {choices}one of {names}")


# ---------------------------------------------------------------------------------------------- shared pieces
class _VLine(NamedTuple):
    x: float
    tag: str  # short text drawn above the axes ("P2")
    label: str  # legend text


class _EpsLine(NamedTuple):
    eps: float
    share: float
    label: str


def _share_heights(hist: LogHistogram, bins_per_decade: int, y: str = "share") -> tuple[np.ndarray, np.ndarray]:
    """``(edges, heights)``: heights in percent of the histogram's finite elements per bin, or counts."""
    edges, counts = hist.dense(bins_per_decade)
    if y == "count":
        return edges, counts.astype(float)
    return edges, 100.0 * counts / max(hist.finite, 1)


def _xlim(xs: Iterable[float], pad_decades: float = 0.3) -> tuple[float, float]:
    vals = [x for x in xs if x > 0 and math.isfinite(x)]
    lo, hi = min(vals), max(vals)
    return lo / 10**pad_decades, hi * 10**pad_decades


def _short(name: str, width: int = 24) -> str:
    """``name`` cut in the middle to at most ``width`` characters (for tick labels)."""
    if len(name) <= width:
        return name
    keep = width - 1
    return name[: keep // 2] + "…" + name[-(keep - keep // 2) :]


def _zero_notes(hist: LogHistogram, what: str) -> list[str]:
    notes = []
    if hist.zeros:
        notes.append(f"{hist.zeros} zeros ({_pct(hist.zeros / max(hist.finite, 1))} %) {what}")
    if hist.nonfinite:
        notes.append(f"{hist.nonfinite} non-finite values excluded")
    return notes


def _draw_eps_lines(
    ax: Axes, eps_lines: Sequence[_EpsLine], labels: Sequence[str] | None = None, zorder: float = 4
) -> None:
    for i, e in enumerate(eps_lines):
        ax.axvline(
            e.eps,
            color=_EPS_COLORS[i % len(_EPS_COLORS)],
            linestyle=_EPS_STYLES[i % len(_EPS_STYLES)],
            linewidth=1.4,
            label=e.label if labels is None else labels[i],
            zorder=zorder,
        )


def _draw_tags(ax: Axes, lines: Sequence[_VLine]) -> None:
    """Short tags (``P2``, ``P98``) just above the axes at each line's x."""
    transform = ax.get_xaxis_transform()
    for ln in lines:
        ax.text(ln.x, 1.01, ln.tag, transform=transform, ha="center", va="bottom", color=_P_COLOR,
                clip_on=False)


def _finish_legend(fig: Figure, ax: Axes, created: bool, notes: Sequence[str] = (), ncols: int = 1) -> None:
    """The legend below the plot on figures made here (constrained layout keeps it inside), else in the Axes."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for note in notes:
        handles.append(Line2D([], [], linestyle="none"))
        labels.append(note)
    if not handles:
        return
    if created:
        fig.legend(handles, labels, loc="outside lower center", ncols=ncols, handletextpad=0.5, borderaxespad=0.2)
    else:
        ax.legend(handles, labels, loc="best", ncols=ncols)


# ---------------------------------------------------------------------------------------------- ridgelines
class _Ridge(NamedTuple):
    """One row of a ridgeline: a histogram drawn above ``offset``."""

    label: str
    offset: float
    edges: np.ndarray
    heights: np.ndarray  # in offset units
    p_low: float
    p_high: float
    shares: dict[float, float]  # ε -> share of this row's elements above it
    highlight: bool  # drawn with a bold label (the estimate's snapshot)
    step: int | None = None
    epoch: float | None = None


class _RidgesInfo(NamedTuple):
    ridges: list[_Ridge]
    span: tuple[float, float]
    span_label: str
    eps_lines: list[_EpsLine]  # shares of all elements at the result's snapshot
    p_labels: tuple[str, str]
    connect: bool  # join the rows' percentile marks (a drift over time)
    xlabel: str
    title: str
    xlim: tuple[float, float]
    notes: list[str]


def _ridge_height(n: int, n_eps: int) -> float:
    return 1.9 + (0.24 if n <= 12 else 0.17) * n + 0.15 * n_eps


def _render_ridges(ax: Axes, info: _RidgesInfo) -> None:
    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps["cividis"]
    n = len(info.ridges)
    top_z = 3 * n + 20
    ax.set_xscale("log")
    ax.axvspan(*info.span, color=_RANGE_COLOR, alpha=0.22, linewidth=0, label=info.span_label, zorder=0)
    for i, r in enumerate(info.ridges):
        z = 10 + 2 * (n - i)  # lower rows in front
        ax.hlines(r.offset, info.xlim[0], info.xlim[1], color="0.6", linewidth=0.5, zorder=z + 1.5)
        if r.edges.size == 0:
            continue
        color = cmap(0.15 + 0.8 * i / max(n - 1, 1))
        ax.stairs(r.heights + r.offset, r.edges, baseline=r.offset, fill=True, color=color, alpha=0.9,
                  linewidth=0, zorder=z)
        ax.stairs(r.heights + r.offset, r.edges, baseline=r.offset, color="white", linewidth=0.7, zorder=z + 1)
    offsets = [r.offset for r in info.ridges]
    style = ":" if info.connect else "none"
    ax.plot([r.p_low for r in info.ridges], offsets, linestyle=style, marker="|", markersize=7, color=_P_COLOR,
            label=info.p_labels[0], zorder=top_z)
    ax.plot([r.p_high for r in info.ridges], offsets, linestyle=style, marker="|", markersize=7, color=_P_COLOR,
            markeredgewidth=2.2, label=info.p_labels[1], zorder=top_z)
    labels = [e.label + ("; right: % of each row above it" if i == 0 else "") for i, e in enumerate(info.eps_lines)]
    _draw_eps_lines(ax, info.eps_lines, labels, zorder=top_z + 1)
    if info.eps_lines:
        first = info.eps_lines[0].eps
        transform = matplotlib.transforms.blended_transform_factory(ax.transAxes, ax.transData)
        for r in info.ridges:
            ax.text(1.01, r.offset, f"{_pct(r.shares[first])} %", transform=transform, ha="left", va="bottom",
                    clip_on=False)
    ax.set_yticks(offsets, [r.label for r in info.ridges])
    for tick, r in zip(ax.get_yticklabels(), info.ridges):
        if r.highlight:
            tick.set_fontweight("bold")
    ax.tick_params(axis="y", length=0)
    ax.spines["left"].set_visible(False)
    peak = max((float(r.heights.max()) for r in info.ridges if r.heights.size), default=1.0)
    ax.set_ylim(-0.15, offsets[-1] + max(peak, 1.0) + 0.1)
    ax.set_xlim(*info.xlim)
    ax.set_xlabel(info.xlabel)
    ax.set_title(info.title)


# ---------------------------------------------------------------------------------------------- histogram
class _Series(NamedTuple):
    label: str
    edges: np.ndarray
    heights: np.ndarray  # per bin: % of the histogram's finite elements, or counts
    color: Any


class _HistogramInfo(NamedTuple):
    series: list[_Series]
    percentile_lines: list[_VLine]
    span: tuple[float, float]
    span_label: str
    eps_lines: list[_EpsLine]
    xlabel: str
    ylabel: str
    title: str
    notes: list[str]
    xlim: tuple[float, float]


def _histogram_info(
    result: EpsilonRange,
    *,
    layer: str | None = None,
    eps: float | Iterable[float] | None = None,
    bins_per_decade: int = 20,
    y: str = "share",
) -> _HistogramInfo:
    """The aggregated (``layer=None``) or one layer's histogram; ``layer="all"`` is :func:`_layers_info`."""
    if y not in ("share", "count"):
        raise ValueError(f"y must be 'share' or 'count', got y={y!r}")
    _check_bins(bins_per_decade)
    _check_layer(result, layer, allow_all=False)
    eps_values = _as_eps_list(result, eps)
    lo_tag, hi_tag = (f"P{p:g}" for p in result.percentiles)
    if layer is None:
        hist = result.histogram
        several = "lowest layer " if len(result.layers) > 1 else ""
        lines = [
            _VLine(result.raw_lower, lo_tag, f"{several}{lo_tag} = {_num(result.raw_lower)}"),
            _VLine(result.raw_upper, hi_tag, f"{several.replace('lowest', 'highest')}{hi_tag} = "
                   f"{_num(result.raw_upper)}"),
        ]
        subject = "all layers"
    else:
        ly = result.layer(layer)
        hist = ly.histogram
        lines = [
            _VLine(ly.p_low, lo_tag, f"{lo_tag} = {_num(ly.p_low)}"),
            _VLine(ly.p_high, hi_tag, f"{hi_tag} = {_num(ly.p_high)}"),
        ]
        subject = layer
    edges, heights = _share_heights(hist, bins_per_decade, y)
    shares = [hist.fraction_above(e) for e in eps_values]
    xlim = _xlim([*edges[:1], *edges[-1:], result.lower, result.upper, *eps_values])
    return _HistogramInfo(
        series=[_Series(subject, edges, heights, PALETTE["blue"])],
        percentile_lines=lines,
        span=(result.lower, result.upper),
        span_label=f"estimated range [{_num(result.lower)}, {_num(result.upper)}]",
        eps_lines=[_EpsLine(e, s, _eps_label(e, s)) for e, s in zip(eps_values, shares)],
        xlabel=_term_label(result.optimizer, result.family),
        ylabel="elements per bin (%)" if y == "share" else "elements per bin",
        title=f"{result.optimizer}, {subject}, {_when(result.step, result.epoch)}",
        notes=_zero_notes(hist, "not shown"),
        xlim=xlim,
    )


def _layers_info(
    result: EpsilonRange, *, eps: float | Iterable[float] | None = None, bins_per_decade: int = 20
) -> _RidgesInfo:
    """One ridge per layer (first layer at the top), each scaled to its own peak, with its own P2/P98."""
    _check_bins(bins_per_decade)
    eps_values = _as_eps_list(result, eps)
    lo_tag, hi_tag = (f"P{p:g}" for p in result.percentiles)
    n = len(result.layers)
    ridges = []
    for i, ly in enumerate(result.layers):
        edges, share = _share_heights(ly.histogram, bins_per_decade)
        peak = float(share.max()) if share.size else 1.0
        ridges.append(_Ridge(
            label=_short(ly.name), offset=float(n - 1 - i), edges=edges, heights=0.9 * share / (peak or 1.0),
            p_low=ly.p_low, p_high=ly.p_high, shares={e: ly.histogram.fraction_above(e) for e in eps_values},
            highlight=False,
        ))
    ridges.reverse()  # bottom row first, like the evolution
    xs = [x for r in ridges if r.edges.size for x in (r.edges[0], r.edges[-1])]
    return _RidgesInfo(
        ridges=ridges,
        span=(result.lower, result.upper),
        span_label=f"estimated range [{_num(result.lower)}, {_num(result.upper)}]",
        eps_lines=[_EpsLine(e, result.fraction_above(e), _eps_label(e, result.fraction_above(e)))
                   for e in eps_values],
        p_labels=(f"each layer's {lo_tag}", f"each layer's {hi_tag}"),
        connect=False,
        xlabel=_term_label(result.optimizer, result.family),
        title=f"{result.optimizer}, per layer (each scaled to its peak), {_when(result.step, result.epoch)}",
        xlim=_xlim([*xs, result.lower, result.upper, *eps_values]),
        notes=[],
    )


def _check_bins(bins_per_decade: int) -> None:
    if bins_per_decade < 1:
        raise ValueError(f"bins_per_decade must be >= 1, got bins_per_decade={bins_per_decade}")


def plot_histogram(
    result: EpsilonRange,
    *,
    layer: str | None = None,
    eps: float | Iterable[float] | None = None,
    ax: Axes | None = None,
    bins_per_decade: int = 20,
    y: str = "share",
) -> Figure:
    """The gradient magnitude histogram of the result's snapshot: ``A`` on a log axis.

    Marks the Algorithm 2 percentiles (dashed, tagged ``P2``/``P98``), shades the estimated range
    ``[lower, upper]`` and draws each ε as a vertical line labelled with the share of elements above it
    (``ε=1e-8: 97.3 % adaptive``).

    Args:
        result: an :class:`~epsfinder.EpsilonRange`.
        layer: None for all layers merged (the dashed lines are then the lowest per-layer low percentile and the
            highest high percentile, i.e. ``raw_lower``/``raw_upper``); a layer name for that layer alone (with
            its own percentiles); ``"all"`` for small multiples in one Axes: one row per layer (first layer at
            the top), each scaled to its own peak, ticked at its own P2/P98, with the share of the row's elements
            above the first ε at the right.
        eps: an ε or a list of them to mark; None marks the ε the optimizer ran with, when recorded (pass ``[]``
            for none).
        ax: draw into these Axes; None makes a single-column figure.
        bins_per_decade: resolution of the drawn histogram (the native bins are summed into these).
        y: ``"share"`` (percent of the histogram's finite elements per bin) or ``"count"`` (ignored with
            ``layer="all"``).

    Returns:
        The matplotlib Figure.
    """
    if layer == "all":
        rinfo = _layers_info(result, eps=eps, bins_per_decade=bins_per_decade)
        with _style():
            fig, ax, created = _axes(ax, height=_ridge_height(len(rinfo.ridges), len(rinfo.eps_lines)))
            _render_ridges(ax, rinfo)
            _finish_legend(fig, ax, created, rinfo.notes)
        return fig
    info = _histogram_info(result, layer=layer, eps=eps, bins_per_decade=bins_per_decade, y=y)
    with _style():
        fig, ax, created = _axes(ax, height=2.3 + 0.15 * (4 + len(info.eps_lines) + len(info.notes)))
        _render_histogram(ax, info)
        _finish_legend(fig, ax, created, info.notes)
    return fig


def _render_histogram(ax: Axes, info: _HistogramInfo) -> None:
    ax.set_xscale("log")
    ax.axvspan(*info.span, color=_RANGE_COLOR, alpha=0.22, linewidth=0, label=info.span_label, zorder=0)
    for s in info.series:
        if s.edges.size == 0:
            continue
        ax.stairs(s.heights, s.edges, fill=True, color=s.color, alpha=0.75, linewidth=0, label=s.label, zorder=2)
        ax.stairs(s.heights, s.edges, color=s.color, linewidth=0.8, zorder=2)
    for ln in info.percentile_lines:
        ax.axvline(ln.x, color=_P_COLOR, linestyle="--", linewidth=1.1, label=ln.label, zorder=3)
    _draw_tags(ax, info.percentile_lines)
    _draw_eps_lines(ax, info.eps_lines)
    ax.set_xlim(*info.xlim)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(info.xlabel)
    ax.set_ylabel(info.ylabel)
    ax.set_title(info.title, pad=12)


# ---------------------------------------------------------------------------------------------- evolution
def _pick(n: int, keep: int, must: Iterable[int]) -> list[int]:
    if n <= keep:
        return list(range(n))
    chosen = {round(i * (n - 1) / (keep - 1)) for i in range(keep)} if keep > 1 else {n - 1}
    return sorted(chosen | {m for m in must if 0 <= m < n})


def _evolution_info(
    result: EpsilonRange,
    *,
    eps: float | Iterable[float] | None = None,
    layer: str | None = None,
    bins_per_decade: int = 20,
    max_snapshots: int = 10,
    overlap: float = 1.6,
) -> _RidgesInfo:
    _check_layer(result, layer, allow_all=False)
    _check_bins(bins_per_decade)
    if max_snapshots < 1:
        raise ValueError(f"max_snapshots must be >= 1, got max_snapshots={max_snapshots}")
    eps_values = _as_eps_list(result, eps)
    records = sorted(result.snapshots, key=lambda s: s.step)
    if not records:  # a result without kept snapshots: its own snapshot only
        records = [SnapshotRecord(result.step or 0, result.epoch, {ly.name: ly.histogram for ly in result.layers})]
    est = [i for i, r in enumerate(records) if r.step == result.step]
    records = [records[i] for i in _pick(len(records), max_snapshots, est)]
    q = [p / 100 for p in result.percentiles]

    raw = []
    for rec in records:
        if layer is None:
            hist = rec.total()
            per_layer = [h for h in rec.histograms.values() if h.positive]
        elif layer in rec.histograms:
            hist = rec.histograms[layer]
            per_layer = [hist] if hist.positive else []
        else:
            continue  # the layer had no optimizer state yet at that snapshot
        edges, share = _share_heights(hist, bins_per_decade)
        p_low = min((float(h.quantile(q[0])) for h in per_layer), default=math.nan)
        p_high = max((float(h.quantile(q[1])) for h in per_layer), default=math.nan)
        raw.append((rec, edges, share, p_low, p_high, {e: hist.fraction_above(e) for e in eps_values}))
    if not raw:
        raise ValueError(f"no snapshot holds layer {layer!r}; pass layer=None for all layers")
    peak = max((float(s.max()) for _, _, s, *_ in raw if s.size), default=1.0) or 1.0
    ridges = [
        _Ridge(_when(rec.step, rec.epoch), float(i), edges, share * overlap / peak, p_low, p_high, shares,
               rec.step == result.step and len(raw) > 1, rec.step, rec.epoch)
        for i, (rec, edges, share, p_low, p_high, shares) in enumerate(raw)
    ]
    hist_now = result.histogram if layer is None else result.layer(layer).histogram
    now = [hist_now.fraction_above(e) for e in eps_values]
    lo_tag, hi_tag = (f"P{p:g}" for p in result.percentiles)
    several = layer is None and len(result.layers) > 1
    xs = [x for r in ridges if r.edges.size for x in (r.edges[0], r.edges[-1])]
    notes = ["bold: the snapshot of the estimate"] if any(r.highlight for r in ridges) else []
    return _RidgesInfo(
        ridges=ridges,
        span=(result.lower, result.upper),
        span_label=f"estimated range [{_num(result.lower)}, {_num(result.upper)}]",
        eps_lines=[_EpsLine(e, s, f"ε={_num(e)}") for e, s in zip(eps_values, now)],
        p_labels=(f"lowest layer {lo_tag}", f"highest layer {hi_tag}") if several else (lo_tag, hi_tag),
        connect=True,
        xlabel=_term_label(result.optimizer, result.family),
        title=f"{result.optimizer}, {'all layers' if layer is None else _short(layer)}: A over training",
        xlim=_xlim([*xs, result.lower, result.upper, *eps_values]),
        notes=notes,
    )


def plot_evolution(
    result: EpsilonRange,
    *,
    eps: float | Iterable[float] | None = None,
    layer: str | None = None,
    ax: Axes | None = None,
    bins_per_decade: int = 20,
    max_snapshots: int = 10,
) -> Figure:
    """The histogram of ``A`` at each kept snapshot (``result.snapshots``) as a ridgeline, earliest at the bottom.

    Each ridge is labelled by epoch (or step); the snapshot the range was estimated from is bold. Dotted
    tracks join each snapshot's lowest per-layer low percentile and highest high percentile, ε lines cross all
    ridges, and the share of elements above the first ε is printed at the right of each ridge, so the drift of
    ``A`` against a fixed ε shows. All ridges share one scale.

    Args:
        result: an :class:`~epsfinder.EpsilonRange` (from a probe, or ``EpsilonRange.from_json``).
        eps: ε values to draw (None: the optimizer's ε when recorded; ``[]`` for none).
        layer: None for all layers merged, or one layer's name.
        ax: draw into these Axes; None makes a single-column figure.
        bins_per_decade: histogram resolution.
        max_snapshots: at most this many ridges (evenly chosen, always the first, the last and the estimate's).

    Returns:
        The matplotlib Figure.
    """
    info = _evolution_info(result, eps=eps, layer=layer, bins_per_decade=bins_per_decade,
                           max_snapshots=max_snapshots)
    with _style():
        fig, ax, created = _axes(ax, height=_ridge_height(len(info.ridges), len(info.eps_lines)))
        _render_ridges(ax, info)
        _finish_legend(fig, ax, created, info.notes)
    return fig


# ---------------------------------------------------------------------------------------------- adaptability
class _Curve(NamedTuple):
    label: str
    shares: np.ndarray  # percent, at _AdaptabilityInfo.eps
    color: Any
    width: float


class _Region(NamedTuple):
    name: str
    x0: float
    x1: float


class _AdaptabilityInfo(NamedTuple):
    eps: np.ndarray
    overall: _Curve
    layers: list[_Curve]
    grid: list[tuple[float, float]]  # (ε, share %) at the range's grid
    span: tuple[float, float]
    span_label: str
    regions: list[_Region]
    xlabel: str
    ylabel: str
    title: str
    notes: list[str]


def _adaptability_info(result: EpsilonRange, *, per_layer: bool = True, points: int = 241) -> _AdaptabilityInfo:
    hist = result.histogram
    # Below the lowest layer P2 every layer is (almost) fully adaptive, above the highest P98 (almost) fully
    # immutable: Algorithm 2's raw bounds. Leave two decades of each region in view.
    lo_dec = min(math.floor(math.log10(result.raw_lower)) - 2, round(math.log10(result.lower)) - 1)
    hi_dec = max(math.ceil(math.log10(result.raw_upper)) + 2, round(math.log10(result.upper)) + 1)
    xs = np.logspace(lo_dec, hi_dec, points)
    overall = np.array([100.0 * hist.fraction_above(x) for x in xs])
    layers: list[_Curve] = []
    if per_layer and len(result.layers) > 1:
        colors = _layer_colors(len(result.layers))
        many = len(result.layers) > _MAX_LEGEND_LAYERS
        for i, (ly, c) in enumerate(zip(result.layers, colors)):
            label = ly.name if not many or i in (0, len(result.layers) - 1) else "_nolegend_"
            layers.append(_Curve(label, np.array([100.0 * ly.histogram.fraction_above(x) for x in xs]), c, 1.0))
    regions = [
        _Region("fully adaptive", float(xs[0]), result.raw_lower),
        _Region(f"fully immutable\n({_immutable_name(result.optimizer)})", result.raw_upper, float(xs[-1])),
    ]
    unit = _FAMILY_UNITS.get(result.family, "units of A")
    return _AdaptabilityInfo(
        eps=xs,
        overall=_Curve("all layers", overall, PALETTE["black"], 2.4),
        layers=layers,
        grid=[(e, 100.0 * hist.fraction_above(e)) for e in result.grid()],
        span=(result.lower, result.upper),
        span_label=f"estimated range [{_num(result.lower)}, {_num(result.upper)}]",
        regions=regions,
        xlabel=f"ε ({unit})",
        ylabel="elements with A > ε (%)",
        title=f"{result.optimizer}: adaptability level, {_when(result.step, result.epoch)}",
        notes=_zero_notes(hist, "never above ε"),
    )


def plot_adaptability(result: EpsilonRange, *, per_layer: bool = True, ax: Axes | None = None) -> Figure:
    """The adaptability level: the share of elements with ``A > ε`` as a function of ε (log axis).

    The thick curve is all layers, thin curves are the layers. Below the lowest per-layer P2 the optimizer is
    "fully adaptive" (every element divided by its own ``A``); above the highest per-layer P98 "fully
    immutable" (every step is ``α/ε``: SGD + momentum, or SGD for RMSprop/AdaGrad); both regions are greyed and
    named. Markers give the shares at the grid of the estimated range (the Table II values); the range itself is
    shaded. Elements whose ``A`` is exactly zero are never above ε, so the curve tops below 100 % when there are
    any.

    Args:
        result: an :class:`~epsfinder.EpsilonRange`.
        per_layer: also draw one curve per layer.
        ax: draw into these Axes; None makes a single-column figure.

    Returns:
        The matplotlib Figure.
    """
    info = _adaptability_info(result, per_layer=per_layer)
    with _style():
        n_legend = 3 + len(info.notes) + min(len(info.layers), _MAX_LEGEND_LAYERS)
        fig, ax, created = _axes(ax, height=2.9 + 0.15 * n_legend)
        _render_adaptability(ax, info)
        _finish_legend(fig, ax, created, info.notes)
    return fig


def _render_adaptability(ax: Axes, info: _AdaptabilityInfo) -> None:
    ax.set_xscale("log")
    for r in info.regions:
        ax.axvspan(r.x0, r.x1, color="0.5", alpha=0.12, linewidth=0, zorder=0)
    ax.axvspan(*info.span, color=_RANGE_COLOR, alpha=0.22, linewidth=0, label=info.span_label, zorder=0)
    for c in info.layers:
        ax.plot(info.eps, c.shares, color=c.color, linewidth=c.width, label=c.label, zorder=2)
    ax.plot(info.eps, info.overall.shares, color=info.overall.color, linewidth=info.overall.width,
            label=info.overall.label, zorder=3)
    if info.grid:
        gx, gy = zip(*info.grid)
        ax.plot(gx, gy, linestyle="none", marker="o", markersize=4, markerfacecolor="white",
                markeredgecolor=PALETTE["black"], label="grid of the range", zorder=4)
    # The regions' names above the plot, at its two ends, where no curve can run through them.
    adaptive, immutable = info.regions
    ax.text(0.0, 1.02, f"← {adaptive.name}", transform=ax.transAxes, ha="left", va="bottom", color="0.2")
    ax.text(1.0, 1.02, immutable.name.replace("\n", " →\n", 1), transform=ax.transAxes, ha="right", va="bottom",
            color="0.2", linespacing=1.1)
    ax.set_xlim(info.eps[0], info.eps[-1])
    ax.set_ylim(-2, 104)
    ax.set_xlabel(info.xlabel)
    ax.set_ylabel(info.ylabel)
    ax.set_title(info.title, pad=30)


# ---------------------------------------------------------------------------------------------- heat map
def load_sweep(sweep: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """A sweep as a dict: the dict itself, or loaded from a ``sweep.json`` path (or a folder holding one)."""
    if isinstance(sweep, Mapping):
        return dict(sweep)
    p = Path(sweep)
    if p.is_dir():
        p = p / "sweep.json"
    if not p.is_file():
        raise FileNotFoundError(f"no sweep file at {str(p)!r}: pass a sweep.json written by `epsfinder sweep`")
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or "trials" not in data:
        raise ValueError(f"{str(p)!r} is not a sweep.json: it has no 'trials' list")
    return data


def _values(sweep: Mapping[str, Any], key: str) -> list[float]:
    """Sorted distinct non-null values of one parameter, from the grid and the trials."""
    vals = [v for v in (sweep.get("grid") or {}).get(key) or [] if v is not None]
    vals += [t.get(key) for t in sweep.get("trials", []) if t.get(key) is not None]
    out: list[float] = []
    for v in sorted(float(v) for v in vals):
        if not out or not math.isclose(v, out[-1], rel_tol=1e-9):
            out.append(v)
    return out


def _index_of(values: Sequence[float], v: float | None) -> int | None:
    if v is None:
        return None
    for i, x in enumerate(values):
        if math.isclose(float(v), x, rel_tol=1e-9):
            return i
    return None


def _log_axis(values: Sequence[float]) -> tuple[Any, Any]:
    """Maps between a value and its (fractional) cell index, linear in log10 and extrapolated at both ends."""
    logs = np.log10(np.asarray(values, dtype=float))
    idx = np.arange(len(values), dtype=float)

    def to_index(v: np.ndarray) -> np.ndarray:
        lv = np.log10(v)
        if len(logs) == 1:
            return np.zeros_like(lv)
        out = np.interp(lv, logs, idx)
        lo_slope = 1.0 / (logs[1] - logs[0])
        hi_slope = 1.0 / (logs[-1] - logs[-2])
        out = np.where(lv < logs[0], (lv - logs[0]) * lo_slope, out)
        return np.where(lv > logs[-1], idx[-1] + (lv - logs[-1]) * hi_slope, out)

    def to_value(i: np.ndarray) -> np.ndarray:
        if len(logs) == 1:
            return np.full_like(i, 10 ** logs[0])
        out = np.interp(i, idx, logs)
        out = np.where(i < 0, logs[0] + i * (logs[1] - logs[0]), out)
        out = np.where(i > idx[-1], logs[-1] + (i - idx[-1]) * (logs[-1] - logs[-2]), out)
        return 10**out

    return to_index, to_value


def _tick(key: str, v: float) -> str:
    return f"{v:g}" if key == "beta2" else _num(v, 2)


class _HeatmapInfo(NamedTuple):
    x: str
    y: str
    xvalues: list[float]
    yvalues: list[float]
    values: np.ndarray  # shape (len(yvalues), len(xvalues)); NaN where no complete trial
    cell_text: list[list[str]]
    best_cell: tuple[int, int] | None  # (x index, y index)
    best_label: str
    range_cells: tuple[int, int] | None  # first and last ε index inside the estimated range
    range_label: str
    diagonal: tuple[np.ndarray, np.ndarray] | None  # (x indices, y indices) of the α/ε = const line
    diagonal_label: str
    xlabel: str
    ylabel: str
    clabel: str
    title: str
    cmap: str
    log_color: bool


def _range_of(sweep: Mapping[str, Any], result: EpsilonRange | None) -> tuple[float, float, str] | None:
    if result is not None:
        return result.lower, result.upper, result.family
    rng = sweep.get("range")
    if isinstance(rng, Mapping) and rng.get("lower") and rng.get("upper"):
        return float(rng["lower"]), float(rng["upper"]), str(rng.get("family", "magnitude"))
    return None


def _better(direction: str) -> Any:
    return max if direction == "maximize" else min


def _heatmap_info(
    sweep: Mapping[str, Any] | str | os.PathLike[str],
    *,
    x: str = "eps",
    y: str = "lr",
    result: EpsilonRange | None = None,
) -> _HeatmapInfo:
    sw = load_sweep(sweep)
    for name, key in (("x", x), ("y", y)):
        if key not in _SWEEP_PARAMS:
            raise ValueError(f"{name}={key!r} is not a sweep parameter; choose from {list(_SWEEP_PARAMS)}")
    if x == y:
        raise ValueError(f"x and y must differ, got x=y={x!r}; e.g. x='eps', y='lr'")
    direction = sw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"sweep direction must be 'maximize' or 'minimize', got direction={direction!r}")
    xs, ys = _values(sw, x), _values(sw, y)
    if not xs or not ys:
        missing = x if not xs else y
        raise ValueError(f"the sweep varies no {missing!r} (grid and trials hold no value for it); "
                         f"plot another pair, e.g. x='eps', y='lr'")
    better = _better(direction)
    values = np.full((len(ys), len(xs)), np.nan)
    states: dict[tuple[int, int], set[str]] = {}
    for t in sw.get("trials", []):
        ix, iy = _index_of(xs, t.get(x)), _index_of(ys, t.get(y))
        if ix is None or iy is None:
            continue
        state = t.get("state", "COMPLETE")
        v = t.get("value")
        ok = state == "COMPLETE" and v is not None and math.isfinite(float(v))
        states.setdefault((ix, iy), set()).add("ok" if ok else ("FAIL" if state == "COMPLETE" else state))
        if ok:
            cur = values[iy, ix]
            values[iy, ix] = float(v) if math.isnan(cur) else better(cur, float(v))
    text = [["" for _ in xs] for _ in ys]
    for iy in range(len(ys)):
        for ix in range(len(xs)):
            v = values[iy, ix]
            st = states.get((ix, iy), set())
            if not math.isnan(v):
                text[iy][ix] = f"{v:.3g}"
            elif "RUNNING" in st:
                text[iy][ix] = "…"
            elif "FAIL" in st:
                text[iy][ix] = "×"
            elif st:
                text[iy][ix] = "–"

    # Best trial: the sweep's own pick when it lies on this grid, else the best cell.
    best_cell = None
    best = sw.get("best")
    if isinstance(best, Mapping):
        ix, iy = _index_of(xs, best.get(x)), _index_of(ys, best.get(y))
        if ix is not None and iy is not None:
            best_cell = (ix, iy)
    if best_cell is None and not np.all(np.isnan(values)):
        flat = np.nanargmax(values) if direction == "maximize" else np.nanargmin(values)
        iy, ix = np.unravel_index(flat, values.shape)
        best_cell = (int(ix), int(iy))
        best = None
    if best_cell is not None:
        v = best.get("value") if isinstance(best, Mapping) else values[best_cell[1], best_cell[0]]
        number = f" #{best['number']}" if isinstance(best, Mapping) and best.get("number") is not None else ""
        best_label = (f"best trial{number}: {_PARAM_LABELS[x]}={_tick(x, xs[best_cell[0]])}, "
                      f"{_PARAM_LABELS[y].split()[-1]}={_tick(y, ys[best_cell[1]])}"
                      + (f" → {float(v):.4g}" if v is not None else ""))
    else:
        best_label = ""

    rng = _range_of(sw, result)
    range_cells = None
    range_label = ""
    diagonal = None
    diagonal_label = ""
    if rng is not None and "eps" in (x, y):
        lower, upper, family = rng
        evals = xs if x == "eps" else ys
        inside = [i for i, e in enumerate(evals) if lower / 1.001 <= e <= upper * 1.001]
        if inside:
            range_cells = (inside[0], inside[-1])
            range_label = f"estimated ε range [{_num(lower)}, {_num(upper)}]"
        if best_cell is not None and {x, y} == {"eps", "lr"}:
            best_eps = xs[best_cell[0]] if x == "eps" else ys[best_cell[1]]
            best_lr = ys[best_cell[1]] if y == "lr" else xs[best_cell[0]]
            half_step = 0.5 * (2.0 if family == "squared" else 1.0)  # half a grid step, in decades
            if math.log10(best_eps) >= math.log10(upper) - half_step:
                slope = 0.5 if family == "squared" else 1.0
                _, x_to_value = _log_axis(xs)
                y_to_index, _ = _log_axis(ys)
                xi = -0.5 + np.arange(8 * len(xs) + 1) / 8  # cell centres included
                if x == "eps":
                    lr = best_lr * (x_to_value(xi) / best_eps) ** slope
                    yi = y_to_index(lr)
                else:  # x = lr, y = eps
                    e = best_eps * (x_to_value(xi) / best_lr) ** (1.0 / slope)
                    yi = y_to_index(e)
                diagonal = (xi, yi)
                diagonal_label = "α/√ε = const (SGD + momentum)" if family == "squared" else \
                    "α/ε = const (SGD + momentum)"

    metric = str(sw.get("metric", "value"))
    arrow = "higher is better" if direction == "maximize" else "lower is better"
    positive = values[~np.isnan(values)]
    log_color = metric == "perplexity" and positive.size > 0 and positive.min() > 0 and \
        positive.max() / positive.min() > 10
    varied = [k for k in _SWEEP_PARAMS if k not in (x, y) and len(_values(sw, k)) > 1]
    title = f"{sw.get('task', 'sweep')}, {sw.get('optimizer', '')}".strip(", ")
    if varied:
        title += f" (best over {', '.join(_PARAM_LABELS[k] for k in varied)})"
    return _HeatmapInfo(
        x=x, y=y, xvalues=xs, yvalues=ys, values=values, cell_text=text, best_cell=best_cell,
        best_label=best_label, range_cells=range_cells, range_label=range_label, diagonal=diagonal,
        diagonal_label=diagonal_label, xlabel=_PARAM_LABELS[x], ylabel=_PARAM_LABELS[y],
        clabel=f"{_METRIC_LABELS.get(metric, metric)} ({arrow})", title=title,
        cmap="cividis" if direction == "maximize" else "cividis_r", log_color=log_color,
    )


def plot_heatmap(
    sweep: Mapping[str, Any] | str | os.PathLike[str],
    *,
    x: str = "eps",
    y: str = "lr",
    ax: Axes | None = None,
    result: EpsilonRange | None = None,
    annotate: bool | None = None,
) -> Figure:
    """Heat map of a sweep's metric over two of its parameters (ε × learning rate, or ε × β2).

    Each cell holds the best complete trial's value there (printed in the cell; ``×`` failed or diverged, ``–``
    pruned, ``…`` running, blank: not run); better is always brighter (cividis). The best trial's cell is
    outlined in vermillion, the columns (or rows) inside the estimated ε range in a dashed black box, and when
    the best ε sits at the upper end of the range (the optimizer acts as SGD + momentum there) the line of
    constant ``α/ε`` (``α/√ε`` for squared terms) is drawn through the best cell: the ridge along which the
    metric does not change.

    Args:
        sweep: the dict of a ``sweep.json``, or a path to it (or to the folder holding it).
        x, y: the parameters on the axes: ``"eps"``, ``"lr"`` or ``"beta2"``. When a third one varies, each cell
            shows the best over it.
        ax: draw into these Axes (a colour bar is added beside them); None makes a figure.
        result: the :class:`~epsfinder.EpsilonRange` whose range to outline; default ``sweep["range"]``.
        annotate: print the values in the cells; None prints them when the cells are wide enough.

    Returns:
        The matplotlib Figure.
    """
    info = _heatmap_info(sweep, x=x, y=y, result=result)
    nx, ny = len(info.xvalues), len(info.yvalues)
    width = min(7.0, max(WIDTH_IN, 1.5 + 0.42 * nx))
    with _style():
        fig, ax, created = _axes(ax, height=min(7.0, 1.6 + 0.26 * ny + 0.15 * 3), width=width)
        _render_heatmap(fig, ax, info, annotate)
        _finish_legend(fig, ax, created)
    return fig


def _render_heatmap(fig: Figure, ax: Axes, info: _HeatmapInfo, annotate: bool | None) -> None:
    import matplotlib.patheffects as pe
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.patches import Rectangle

    matplotlib, _ = _mpl()
    cmap = matplotlib.colormaps[info.cmap].with_extremes(bad="0.92")
    finite = info.values[~np.isnan(info.values)]
    if finite.size == 0:
        norm = Normalize(0, 1)
    elif info.log_color:
        norm = LogNorm(finite.min(), finite.max())
    else:
        norm = Normalize(finite.min(), finite.max() if finite.max() > finite.min() else finite.min() + 1e-12)
    im = ax.imshow(np.ma.masked_invalid(info.values), origin="lower", cmap=cmap, norm=norm, aspect="auto",
                   interpolation="nearest")
    ny, nx = info.values.shape
    if annotate is None:
        bbox = ax.get_position()
        cell_in = bbox.width * fig.get_figwidth() / max(nx, 1)
        annotate = cell_in >= 0.3
    if annotate:
        for iy in range(ny):
            for ix in range(nx):
                t = info.cell_text[iy][ix]
                if not t:
                    continue
                v = info.values[iy, ix]
                if math.isnan(v):
                    color = "0.3"
                else:
                    r, g, b, _ = cmap(norm(v))
                    color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(ix, iy, t, ha="center", va="center", color=color, fontsize=8, zorder=8)
    if info.range_cells is not None:
        a, b = info.range_cells
        if info.x == "eps":
            rect = Rectangle((a - 0.5, -0.5), b - a + 1, ny, label=info.range_label)
        else:
            rect = Rectangle((-0.5, a - 0.5), nx, b - a + 1, label=info.range_label)
        rect.set(fill=False, edgecolor="black", linestyle="--", linewidth=1.4, zorder=5, clip_on=False)
        ax.add_patch(rect)
    if info.best_cell is not None:
        bx, by = info.best_cell
        ax.add_patch(Rectangle((bx - 0.5, by - 0.5), 1, 1, fill=False, edgecolor=_P_COLOR, linewidth=2.2,
                               label=info.best_label, zorder=6))
    if info.diagonal is not None:
        xi, yi = info.diagonal
        ax.plot(xi, yi, color="black", linestyle=(0, (4, 2)), linewidth=1.4, label=info.diagonal_label, zorder=7,
                path_effects=[pe.Stroke(linewidth=3, foreground="white"), pe.Normal()])
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xticks(range(nx), [_tick(info.x, v) for v in info.xvalues], rotation=45 if nx > 5 else 0,
                  ha="right" if nx > 5 else "center", rotation_mode="anchor")
    ax.set_yticks(range(ny), [_tick(info.y, v) for v in info.yvalues])
    ax.set_xlabel(info.xlabel)
    ax.set_ylabel(info.ylabel)
    ax.set_title(info.title)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    cbar = fig.colorbar(im, ax=ax, shrink=0.9, pad=0.02)
    cbar.set_label(info.clabel)


# ---------------------------------------------------------------------------------------------- Table II
def adaptability_table(result: EpsilonRange, eps_values: Iterable[float] | None = None) -> list[dict[str, Any]]:
    """The paper's Table II analogue: for each ε, the share of elements with ``A > ε`` overall and per layer.

    Args:
        result: an :class:`~epsfinder.EpsilonRange`.
        eps_values: the ε values (default: the grid of the estimated range).

    Returns:
        One dict per ε: ``{"eps": ε, "overall": share, <layer name>: share, ...}`` with shares in [0, 1].
    """
    return result.adaptability_table(eps_values)


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of :func:`adaptability_table` as text: one line per layer (overall first), one column per ε."""
    if not rows:
        return ""
    names = [k for k in rows[0] if k != "eps"]
    heads = [f"ε={_num(float(r['eps']))}" for r in rows]
    labels = ["all layers" if n == "overall" else n for n in names]
    w0 = max(len(s) for s in [*labels, "layer"])
    cells = [[f"{_pct(float(r[n]))} %" for r in rows] for n in names]
    w = max(len(s) for s in [*heads, *(c for row in cells for c in row)])
    lines = [f"{'layer':<{w0}}  " + "  ".join(f"{h:>{w}}" for h in heads)]
    for label, row in zip(labels, cells):
        lines.append(f"{label:<{w0}}  " + "  ".join(f"{c:>{w}}" for c in row))
    return "\n".join(lines)
