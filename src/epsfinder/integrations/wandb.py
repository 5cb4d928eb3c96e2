"""Weights & Biases: the histograms of the adaptive term ``A`` and the ε range, from epsfinder's own counts.

>>> import wandb                                                    # doctest: +SKIP
>>> from epsfinder.integrations.wandb import log_wandb              # doctest: +SKIP
>>> run = wandb.init(project="eps", mode="offline")                 # doctest: +SKIP
>>> log_wandb(run, probe.result(), step=100)                        # doctest: +SKIP

Each histogram is a ``wandb.Histogram(np_histogram=(counts, edges))`` built from the probe's log-binned counts
(no second binning): ``bins_per_decade`` log-spaced bins per decade, coarsened when needed to W&B's limit of 512
bins. Keys, under ``prefix`` (default ``"epsfinder"``): ``{prefix}/A``, ``{prefix}/A/{layer name}``, and the
scalars ``{prefix}/eps_lower``, ``{prefix}/eps_upper``, ``{prefix}/raw_lower``, ``{prefix}/raw_upper``,
``{prefix}/eps`` and ``{prefix}/fraction_above_eps``. W&B plots histograms on a linear axis: the edges are the
values of ``A``; for a log axis pass ``log10_edges=True`` (the edges become ``log10(A)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epsfinder.histogram import LogHistogram
from epsfinder.integrations import Source, _layer_histograms, _require, histogram_bins, range_metrics

__all__ = ["MAX_BINS", "log_wandb", "wandb_histograms"]

#: W&B's maximum number of bins per histogram.
MAX_BINS = 512


def wandb_histograms(
    result_or_snapshot: Source,
    *,
    prefix: str = "epsfinder",
    bins_per_decade: int | None = 20,
    per_layer: bool = True,
    log10_edges: bool = False,
) -> dict[str, Any]:
    """``{key: wandb.Histogram}`` for the overall and per-layer histograms of ``A`` (empty ones left out)."""
    wandb = _require("wandb", "epsfinder.integrations.wandb")
    source = result_or_snapshot
    layers = _layer_histograms(source)
    hists = {"": LogHistogram.sum(layers.values())}
    if per_layer:
        hists.update({f"/{name}": h for name, h in layers.items()})
    out: dict[str, Any] = {}
    for suffix, h in hists.items():
        edges, counts = histogram_bins(h, bins_per_decade, max_bins=MAX_BINS)
        if counts.size == 0:
            continue
        if log10_edges:
            edges = np.log10(edges)
        out[f"{prefix}/A{suffix}"] = wandb.Histogram(np_histogram=(counts, edges))
    return out


def log_wandb(
    run: Any,
    result_or_snapshot: Source,
    step: int | None = None,
    *,
    prefix: str = "epsfinder",
    bins_per_decade: int | None = 20,
    per_layer: bool = True,
    eps: float | None = None,
    log10_edges: bool = False,
    commit: bool | None = None,
) -> dict[str, Any]:
    """Log the histograms of ``A`` and the range's scalars to a W&B run.

    Args:
        run: the run from ``wandb.init(...)``.
        result_or_snapshot: an :class:`~epsfinder.EpsilonRange`, one of ``probe.snapshots`` or of ``result.snapshots``.
        step: the W&B step (default: the snapshot's optimizer step); must not go back in time within a run.
        prefix: the prefix of every key.
        bins_per_decade: log-spaced bins per decade (coarsened to at most 512 bins); None for native bins.
        per_layer: also log one histogram per parameter tensor.
        eps: the ε whose adaptability to log (default: the optimizer's ε at the snapshot).
        log10_edges: give the bin edges as ``log10(A)`` (W&B draws a linear axis).
        commit: passed to ``run.log``.

    Returns:
        The dict that was logged.
    """
    if not hasattr(run, "log"):
        raise TypeError(f"run must be a wandb run (from wandb.init), got {type(run).__name__}")
    source = result_or_snapshot
    if step is None:
        step = source.step
    data: dict[str, Any] = wandb_histograms(
        source, prefix=prefix, bins_per_decade=bins_per_decade, per_layer=per_layer, log10_edges=log10_edges
    )
    data.update(range_metrics(source, eps=eps, prefix=f"{prefix}/"))
    run.log(data, step=step, commit=commit)
    return data
