"""TensorBoard: the histograms of the adaptive term ``A`` and the ε range, from epsfinder's own counts.

>>> from torch.utils.tensorboard import SummaryWriter                    # doctest: +SKIP
>>> from epsfinder.integrations.tensorboard import log_tensorboard      # doctest: +SKIP
>>> with SummaryWriter("runs/tb") as writer:                             # doctest: +SKIP
...     for snap in probe.snapshots:
...         log_tensorboard(writer, snap, snap.step)

The histograms are written with ``add_histogram_raw`` from the probe's log-binned counts: nothing is binned a
second time. Bucket ``i`` spans ``[edges[i], edges[i+1])`` of :func:`~epsfinder.integrations.histogram_bins`
(log-spaced, ``bins_per_decade`` per decade, or the native 64-per-octave bins with ``bins_per_decade=None``):
its limit is the upper edge, TensorBoard's ``min``/``max`` are the first and last edge (so TensorBoard draws
exactly these bins), ``num`` is the count of positive values, and ``sum``/``sum_squares`` are taken at the bin
midpoints. Zeros and non-finite values are not in the histograms (they have no place on a log axis).

Tags, under ``tag`` (default ``"epsfinder"``): ``{tag}/A`` (all layers), ``{tag}/A/{layer name}`` (per layer,
with ``per_layer=True``), and scalars ``{tag}/eps_lower``, ``{tag}/eps_upper``, ``{tag}/raw_lower``,
``{tag}/raw_upper``, ``{tag}/eps`` and ``{tag}/fraction_above_eps`` (the share of ``A`` above the optimizer's ε,
or above ``eps``). Works with ``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package) and
``tensorboardX.SummaryWriter``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from epsfinder.histogram import LogHistogram
from epsfinder.integrations import Source, _layer_histograms, histogram_bins, range_metrics

__all__ = ["histogram_proto_fields", "log_tensorboard"]


def histogram_proto_fields(hist: LogHistogram, bins_per_decade: int | None = 20) -> dict[str, Any] | None:
    """The arguments of ``SummaryWriter.add_histogram_raw`` for one histogram (None when it is empty).

    Returns:
        ``{"min", "max", "num", "sum", "sum_squares", "bucket_limits", "bucket_counts"}`` with ``bucket_limits`` the
        upper edges of the bins and ``bucket_counts`` their counts.
    """
    edges, counts = histogram_bins(hist, bins_per_decade)
    if counts.size == 0:
        return None
    mids = 0.5 * (edges[:-1] + edges[1:])
    c = counts.astype(np.float64)
    return {
        "min": float(edges[0]),
        "max": float(edges[-1]),
        "num": int(counts.sum()),
        "sum": float(c @ mids),
        "sum_squares": float(c @ (mids * mids)),
        "bucket_limits": edges[1:].tolist(),
        "bucket_counts": counts.tolist(),
    }


def log_tensorboard(
    writer: Any,
    result_or_snapshot: Source,
    step: int | None = None,
    *,
    tag: str = "epsfinder",
    bins_per_decade: int | None = 20,
    per_layer: bool = True,
    eps: float | None = None,
) -> list[str]:
    """Log the histograms of ``A`` (overall and per layer) and the range's scalars to a TensorBoard writer.

    Args:
        writer: a ``SummaryWriter`` (``torch.utils.tensorboard`` or ``tensorboardX``).
        result_or_snapshot: an :class:`~epsfinder.EpsilonRange`, one of ``probe.snapshots`` or of ``result.snapshots``.
        step: the global step to log at (default: the snapshot's optimizer step).
        tag: the prefix of every tag.
        bins_per_decade: log-spaced bins per decade, summed from the native bins; None for the native bins.
        per_layer: also log one histogram per parameter tensor.
        eps: the ε whose adaptability to log (default: the optimizer's ε at the snapshot).

    Returns:
        The tags written.
    """
    if not hasattr(writer, "add_histogram_raw"):
        raise TypeError(
            f"writer must be a TensorBoard SummaryWriter (with add_histogram_raw), got {type(writer).__name__}"
        )
    source = result_or_snapshot
    if step is None:
        step = source.step
    written: list[str] = []
    layers = _layer_histograms(source)
    hists = {"": LogHistogram.sum(layers.values())}
    if per_layer:
        hists.update({f"/{name}": h for name, h in layers.items()})
    for suffix, h in hists.items():
        fields = histogram_proto_fields(h, bins_per_decade)
        if fields is None:
            continue
        name = f"{tag}/A{suffix}"
        writer.add_histogram_raw(name, global_step=step, **fields)
        written.append(name)
    for key, value in range_metrics(source, eps=eps, prefix=f"{tag}/").items():
        writer.add_scalar(key, value, global_step=step)
        written.append(key)
    return written
