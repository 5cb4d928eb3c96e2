"""One self-contained HTML page for a run: the ε range, the advice, the tables and the figures.

:func:`write_report` reads ``DIR/result.json`` (an :class:`~epsfinder.EpsilonRange`) and ``DIR/sweep.json``
(a sweep's trials) and writes ``DIR/report.html``: figures embedded as data URIs (SVG by default), CSS inline, no
script and no external request, so the page can be mailed or archived as one file. ``epsfinder report DIR`` calls
it. Needs matplotlib (``pip install 'epsfinder[plot]'``).
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from epsfinder.estimate import EpsilonRange

__all__ = ["write_report"]

RESULT_FILE = "result.json"
SWEEP_FILE = "sweep.json"
REPORT_FILE = "report.html"
_FORMATS = ("svg", "png")
_TOP_TRIALS = 10
_DPI = 200  # as plots.save_figure

_CSS = """
:root { --fg: #1b1b1b; --muted: #5a5a5a; --line: #d8d8d8; --band: #f4f4f4; --accent: #0072B2; --range: #fbeed3; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff; line-height: 1.45;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05em; margin: 22px 0 8px; }
p.sub { color: var(--muted); margin: 0 0 18px; }
nav a { margin-right: 14px; color: var(--accent); text-decoration: none; }
.range { background: var(--range); border-left: 6px solid #E69F00; padding: 14px 18px; margin: 16px 0; }
.range .big { font-size: 1.5em; font-weight: 600; }
.range ul { margin: 8px 0 0; padding-left: 20px; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 4px 18px; margin: 8px 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; }
table { border-collapse: collapse; margin: 8px 0 4px; font-size: 0.92em; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #fdf1e8; font-weight: 600; }
tr.total td { font-weight: 600; }
.scroll { overflow-x: auto; }
.figs { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 22px; }
figure { margin: 0; }
figure img { width: 100%; max-width: 560px; height: auto; display: block; border: 1px solid var(--line); }
figure.wide { grid-column: 1 / -1; }
figure.wide img { max-width: 860px; }
figure.wide figcaption { max-width: 860px; }
figcaption { color: var(--muted); font-size: 0.9em; margin-top: 6px; max-width: 560px; }
.note { color: var(--muted); font-style: italic; }
details { margin: 10px 0; }
pre { background: var(--band); padding: 10px; overflow-x: auto; font-size: 0.85em; }
footer { margin-top: 40px; color: var(--muted); font-size: 0.85em; }
"""


# ---------------------------------------------------------------------------------------------- helpers
def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    from epsfinder.plots import _num as fmt

    if x is None:
        return "–"
    return fmt(float(x), digits)


def _pct(share: float | None) -> str:
    from epsfinder.plots import _pct as fmt

    return "–" if share is None else f"{fmt(share)} %"


def _value(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric: Sequence[bool] | None = None,
           row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cell values are escaped; ``numeric`` right-aligns columns."""
    numeric = numeric or [False] * len(headers)
    head = "".join(f'<th{" class=num" if n else ""}>{_e(h)}</th>' for h, n in zip(headers, numeric))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td{" class=num" if n else ""}>{_e(c)}</td>' for c, n in zip(row, numeric))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _kv(pairs: Iterable[tuple[str, Any]]) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs)
    return f'<dl class="kv">{items}</dl>'


class _Figures:
    """Renders figures to data URIs (and optionally to files), closing each one."""

    def __init__(self, fmt: str, save_dir: Path | None) -> None:
        self.fmt = fmt
        self.save_dir = save_dir
        self.saved: list[Path] = []

    def html(self, make: Callable[[], Any], name: str, caption: str, *, wide: bool = False) -> str:
        from epsfinder import plots

        _, plt = plots._mpl()
        try:
            fig = make()
        except ValueError as err:  # e.g. a sweep that does not vary the plotted parameters
            return f'<p class="note">{_e(name)}: not drawn ({_e(err)})</p>'
        try:
            buf = io.BytesIO()
            metadata = {"Date": None} if self.fmt == "svg" else None
            fig.savefig(buf, format=self.fmt, dpi=_DPI, bbox_inches="tight", pad_inches=0.03, facecolor="white",
                        metadata=metadata)
            if self.save_dir is not None:  # the embedded bytes are one of the files: render only the other format
                self.save_dir.mkdir(parents=True, exist_ok=True)
                same = self.save_dir / f"{name}.{self.fmt}"
                same.write_bytes(buf.getvalue())
                other = [f for f in _FORMATS if f != self.fmt]
                self.saved += [same, *plots.save_figure(fig, self.save_dir / name, formats=other, dpi=_DPI)]
        finally:
            plt.close(fig)
        mime = "image/svg+xml" if self.fmt == "svg" else "image/png"
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        cls = ' class="wide"' if wide else ""
        return (f'<figure{cls} id="fig-{_e(name)}"><img src="data:{mime};base64,{data}" alt="{_e(caption)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------------------------- loading
def _load(directory: Path, result: EpsilonRange | None, sweep: Any) -> tuple[EpsilonRange | None, dict | None]:
    from epsfinder.plots import load_sweep

    if result is None and (directory / RESULT_FILE).is_file():
        result = EpsilonRange.from_json(directory / RESULT_FILE)
    if sweep is None and (directory / SWEEP_FILE).is_file():
        sweep = directory / SWEEP_FILE
    sw = load_sweep(sweep) if sweep is not None else None
    if result is None and sw is not None and isinstance(sw.get("range"), Mapping) and sw["range"].get("layers"):
        result = EpsilonRange.from_dict(sw["range"])  # the range the sweep was built on
    if result is None and sw is None:
        raise FileNotFoundError(
            f"{str(directory)!r} holds neither {RESULT_FILE} (written by `epsfinder estimate --out DIR` or "
            f"EpsilonRange.to_json) nor {SWEEP_FILE} (written by `epsfinder sweep`); pass a directory with at least "
            "one of them"
        )
    return result, sw


# ---------------------------------------------------------------------------------------------- sections
def _range_section(r: EpsilonRange) -> str:
    rec = r.recommend()
    p_lo, p_hi = (f"P{p:g}" for p in r.percentiles)
    extra = []
    if rec.sgd_lr is not None:
        extra.append(f"SGD + momentum equivalent at ε = {_num(r.upper)}: learning rate ≈ {rec.sgd_lr:.3g}")
    if rec.beta2 is not None:
        extra.append(f"β2 for the lower end: ≥ {rec.beta2}")
    notes = "".join(f"<li>{_e(n)}</li>" for n in rec.notes)
    return (
        '<section id="range"><div class="range">'
        f'<div class="big">ε ∈ [{_e(_num(r.lower))}, {_e(_num(r.upper))}]</div>'
        f"<div>grid: {_e(', '.join(_num(g) for g in r.grid()))} &nbsp;·&nbsp; lowest layer {_e(p_lo)} = "
        f"{_e(_num(r.raw_lower))}, highest layer {_e(p_hi)} = {_e(_num(r.raw_upper))}</div>"
        + "".join(f"<div>{_e(x)}</div>" for x in extra)
        + f"<ul>{notes}</ul></div></section>"
    )


def _summary_section(r: EpsilonRange) -> str:
    h = r.histogram
    hp = r.hyperparameters
    hyper = ", ".join(f"{k}={v}" for k, v in hp.items()) or "–"
    pairs: list[tuple[str, Any]] = [
        ("optimizer", f"{r.optimizer} ({r.family} term)"),
        ("method", r.method),
        ("snapshot", f"step {r.step}" + (f", epoch {r.epoch:.3g}" if r.epoch is not None else "")),
        ("steps per epoch", r.steps_per_epoch if r.steps_per_epoch is not None else "–"),
        ("hyperparameters", hyper),
        ("parameter tensors", f"{len(r.layers)} measured, {len(r.skipped)} skipped"),
        ("elements", f"{h.total:,}"),
        ("exact zeros", f"{h.zeros:,} ({_pct(h.zeros / h.finite) if h.finite else '–'})"),
        ("non-finite (excluded)", f"{h.nonfinite:,}"),
        ("snapshots kept", len(r.snapshots)),
    ]
    if hp.get("eps") is not None:
        pairs.append((f"adaptive at the run's ε = {_num(float(hp['eps']))}", _pct(r.fraction_above(float(hp["eps"])))))
    skipped = ""
    if r.skipped:
        skipped = "<h3>Skipped tensors</h3>" + _table(["tensor", "reason"], list(r.skipped.items()))
    return f'<section id="summary"><h2>Summary</h2>{_kv(pairs)}{skipped}</section>'


def _layers_section(r: EpsilonRange) -> str:
    p_lo, p_hi = (f"P{p:g}" for p in r.percentiles)
    rows = []
    for i, ly in enumerate(r.layers):
        h = ly.histogram
        rows.append([
            i, ly.name, "×".join(str(s) for s in ly.shape) or "scalar", f"{ly.numel:,}", _num(ly.p_low),
            _num(ly.p_high), f"{h.zeros:,}", f"{h.nonfinite:,}", _pct(h.fraction_above(r.lower)),
            _pct(h.fraction_above(r.upper)),
        ])
    headers = ["#", "layer", "shape", "elements", p_lo, p_hi, "zeros", "non-finite",
               f"> lower ({_num(r.lower)})", f"> upper ({_num(r.upper)})"]
    numeric = [True, False, False, True, True, True, True, True, True, True]
    return (
        '<section id="layers"><h2>Per layer</h2>'
        f'<p class="sub">The adaptive term A of each parameter tensor at the snapshot: its {_e(p_lo)} and '
        f"{_e(p_hi)} (Algorithm 2 takes the lowest and the highest), and the share of its elements with A above "
        "each end of the range.</p>"
        + _table(headers, rows, numeric=numeric)
        + "</section>"
    )


def _adaptability_section(r: EpsilonRange) -> str:
    from epsfinder.plots import adaptability_table, format_table

    rows = adaptability_table(r)
    if not rows:
        return ""
    names = [k for k in rows[0] if k != "eps"]
    headers = ["layer", *(f"ε = {_num(row['eps'])}" for row in rows)]
    body = [["all layers" if n == "overall" else n, *(_pct(row[n]) for row in rows)] for n in names]
    return (
        '<section id="adaptability"><h2>Adaptability level</h2>'
        '<p class="sub">Share of elements with A &gt; ε at each ε of the grid (the paper\'s Table II): near 100 % '
        "the optimizer is fully adaptive, near 0 % it acts as SGD with momentum.</p>"
        + _table(headers, body, numeric=[False] + [True] * len(rows), row_classes=["total"] + [""] * (len(body) - 1))
        + f"<details><summary>as text</summary><pre>{_e(format_table(rows))}</pre></details></section>"
    )


def _figures_section(r: EpsilonRange, figs: _Figures) -> str:
    from epsfinder import plots

    parts = [
        figs.html(lambda: plots.plot_histogram(r), "histogram",
                  "Gradient magnitude histogram of A, all layers: dashed lines at the lowest per-layer P2 and the "
                  "highest P98, the estimated range shaded, the run's ε with the share of elements above it."),
        figs.html(lambda: plots.plot_histogram(r, layer="all"), "layers",
                  "One row per layer, each scaled to its own peak, ticked at its own P2 and P98; at the right, "
                  "the share of the layer's elements above the run's ε."),
    ]
    if len(r.snapshots) > 1:
        parts.append(figs.html(
            lambda: plots.plot_evolution(r), "evolution",
            "A over training: the histogram at each kept snapshot (earliest at the bottom; bold: the snapshot of "
            "the estimate), with the drift of the P2/P98 bounds and of the share above ε."))
    else:
        parts.append('<p class="note">Evolution: the result keeps one snapshot only, so there is no drift to '
                     "draw (probe during training, or estimate with several snapshots).</p>")
    parts.append(figs.html(
        lambda: plots.plot_adaptability(r), "adaptability",
        "Adaptability level: share of elements with A > ε against ε, all layers (thick) and per layer; grey: the "
        "fully adaptive and fully immutable regions, orange: the estimated range, circles: its grid."))
    return f'<section id="figures"><h2>Figures</h2><div class="figs">{"".join(parts)}</div></section>'


def _trial_row(t: Mapping[str, Any]) -> list[str]:
    dur = t.get("duration_s")
    return [
        _value(t.get("number")), _num(t.get("lr")), _num(t.get("eps")),
        "–" if t.get("beta2") is None else f"{float(t['beta2']):g}", _value(t.get("value")),
        "–" if dur is None else f"{float(dur):.1f}", _value(t.get("state")),
    ]


def _sweep_section(sw: Mapping[str, Any], r: EpsilonRange | None, figs: _Figures) -> str:
    from epsfinder import plots

    trials = list(sw.get("trials") or [])
    direction = sw.get("direction", "maximize")
    states: dict[str, int] = {}
    for t in trials:
        states[str(t.get("state"))] = states.get(str(t.get("state")), 0) + 1
    pairs: list[tuple[str, Any]] = [
        ("task", sw.get("task", "–")),
        ("optimizer", sw.get("optimizer", "–")),
        ("metric", f"{sw.get('metric', '–')} ({direction})"),
        ("ε values", sw.get("eps_spec", "–")),
        ("study", f"{sw.get('study', '–')} on {sw.get('storage', '–')}"),
        ("trials", ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none"),
    ]
    best = sw.get("best")
    if isinstance(best, Mapping):
        pairs.append(("best", f"trial #{best.get('number')}: lr={_num(best.get('lr'))}, ε={_num(best.get('eps'))}"
                      + (f", β2={best['beta2']:g}" if best.get("beta2") is not None else "")
                      + f" → {_value(best.get('value'))}"))
    base = sw.get("baseline")
    if isinstance(base, Mapping):
        name = str(base.get("optimizer") or "sgd")
        name = "SGD + momentum" if name.lower() == "sgd" else name
        pairs.append(("baseline", f"{name}, lr={_num(base.get('lr'))} → {_value(base.get('value'))}"))

    maps = [figs.html(lambda: plots.plot_heatmap(sw, x="eps", y="lr", result=r), "heatmap-lr-eps",
                      "Metric over learning rate × ε (each cell: the best complete trial there; × failed, – pruned). "
                      "Vermillion: best trial; dashed: the estimated ε range; the diagonal α/ε = const is drawn "
                      "when the best ε is at the upper end of the range.", wide=True)]
    if len(plots._values(sw, "beta2")) > 1:
        maps.append(figs.html(lambda: plots.plot_heatmap(sw, x="eps", y="beta2", result=r), "heatmap-beta2-eps",
                              "Metric over β2 × ε (each cell: the best over the learning rates).", wide=True))

    done = [t for t in trials if t.get("state") == "COMPLETE" and t.get("value") is not None
            and math.isfinite(float(t["value"]))]
    done.sort(key=lambda t: float(t["value"]), reverse=direction == "maximize")
    top = done[:_TOP_TRIALS]
    best_number = best.get("number") if isinstance(best, Mapping) else None
    headers = ["trial", "learning rate", "ε", "β2", str(sw.get("metric", "value")), "duration (s)", "state"]
    numeric = [True, True, True, True, True, True, False]
    table = _table(headers, [_trial_row(t) for t in top], numeric=numeric,
                   row_classes=["best" if t.get("number") == best_number else "" for t in top]) if top else \
        '<p class="note">No trial has completed yet.</p>'
    failed = [t for t in trials if t.get("state") == "FAIL"]
    fail_html = ""
    if failed:
        fail_html = "<h3>Failed trials</h3>" + _table(
            ["trial", "learning rate", "ε", "β2", "reason"],
            [[_value(t.get("number")), _num(t.get("lr")), _num(t.get("eps")),
              "–" if t.get("beta2") is None else f"{float(t['beta2']):g}", t.get("reason") or "–"]
             for t in failed[:_TOP_TRIALS]],
            numeric=[True, True, True, True, False])
        if len(failed) > _TOP_TRIALS:
            fail_html += f'<p class="note">… and {len(failed) - _TOP_TRIALS} more.</p>'
    return (
        f'<section id="sweep"><h2>Sweep</h2>{_kv(pairs)}<div class="figs">{"".join(maps)}</div>'
        f"<h3>Best trials</h3>{table}{fail_html}</section>"
    )


# ---------------------------------------------------------------------------------------------- page
def write_report(
    directory: str | os.PathLike[str],
    *,
    result: EpsilonRange | None = None,
    sweep: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    figure_format: str = "svg",
    save_figures: bool = False,
) -> Path:
    """Write ``directory/report.html``: one self-contained page with the range, the advice, tables and figures.

    The page shows the estimated range and the recommendation, the summary numbers, the per-layer table, the
    adaptability table, the figures of the estimate (histogram, per layer, evolution, adaptability), and for a
    sweep its heat map(s) (learning rate × ε, and β2 × ε when β2 varies) and its best trials. Figures are
    embedded as data URIs; the page loads nothing else and runs no script.

    Args:
        directory: the run's folder. ``result.json`` there is read when ``result`` is None, ``sweep.json`` when
            ``sweep`` is None; the report is written there (the folder is created if a result or sweep is given).
        result: the :class:`~epsfinder.EpsilonRange` to report (default: ``directory/result.json``, else the range
            stored in the sweep).
        sweep: a sweep dict or a path to a ``sweep.json`` (default: ``directory/sweep.json`` when present).
        figure_format: ``"svg"`` (crisp at any zoom) or ``"png"`` for the embedded figures.
        save_figures: also save every figure as PNG and SVG under ``directory/figures/``.

    Returns:
        The path of the report.

    Raises:
        FileNotFoundError: ``directory`` holds neither ``result.json`` nor ``sweep.json`` and none was given.
        ImportError: matplotlib is missing (``pip install 'epsfinder[plot]'``).
    """
    if figure_format not in _FORMATS:
        raise ValueError(f"figure_format must be one of {_FORMATS}, got figure_format={figure_format!r}")
    d = Path(directory)
    if not d.is_dir() and result is None and sweep is None:
        raise FileNotFoundError(
            f"no directory {str(d)!r}: pass the folder holding {RESULT_FILE} or {SWEEP_FILE} (the --out of "
            "`epsfinder estimate` or `epsfinder sweep`)"
        )
    r, sw = _load(d, result, sweep)
    from epsfinder import __version__, plots

    plots._mpl()  # fail early, naming the extra, when matplotlib is missing
    figs = _Figures(figure_format, d / "figures" if save_figures else None)
    sections = []
    nav = []
    if r is not None:
        sections += [_range_section(r), _summary_section(r), _layers_section(r), _adaptability_section(r),
                     _figures_section(r, figs)]
        nav += [("range", "Range"), ("summary", "Summary"), ("layers", "Per layer"),
                ("adaptability", "Adaptability"), ("figures", "Figures")]
    if sw is not None:
        sections.append(_sweep_section(sw, r if sw.get("range") is None else None, figs))
        nav.append(("sweep", "Sweep"))
    if r is not None:
        sections.append(f"<details><summary>Plain-text summary</summary><pre>{_e(r.summary())}</pre></details>")

    if r is not None:
        title = f"ε range for {r.optimizer}: [{_num(r.lower)}, {_num(r.upper)}]"
        sub = f"{r.optimizer}, {r.family} term, method {r.method}, snapshot at step {r.step}"
    else:
        title = f"ε sweep: {sw.get('task', '')} {sw.get('optimizer', '')}".strip()  # type: ignore[union-attr]
        sub = "no result.json: sweep only"
    if sw is not None and sw.get("task"):
        sub = f"task {sw['task']} · " + sub
    links = "".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in nav)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=\"sub\">{_e(sub)} · {_e(d.resolve().name)}</p><nav>{links}</nav>"
        + "".join(sections)
        + f"<footer>epsfinder {_e(__version__)} · method of G. Silva and P. Rodriguez, arXiv:2311.11532 · figures "
        f"{_e(figure_format.upper())}, embedded</footer></main></body></html>\n"
    )
    d.mkdir(parents=True, exist_ok=True)
    out = d / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out
