"""Lightning and Hugging Face callbacks, TensorBoard and W&B logging, on tiny real training runs.

Each callback run is compared with a plain :class:`EpsilonProbe` on an identical run written as a bare PyTorch
loop (same seed, same batches in the same order, same optimizer): bounds, per-layer percentiles and every
histogram count must be equal, for both methods.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from epsfinder import EpsilonProbe, EpsilonRange, every
from epsfinder.histogram import LogHistogram
from epsfinder.integrations import _require, histogram_bins, range_metrics

BATCH = 8
N = 56  # 7 batches per epoch: the default schedule's marks (2, 4, 5, 7) are not a plain "every k"


def _data() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, 8, generator=g)
    y = (x[:, :3].argmax(1) + (x[:, 3] > 1.5).long()) % 3  # learnable labels
    return torch.utils.data.TensorDataset(x, y)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _reference(
    epochs: int, steps_per_epoch: int, accumulate: int = 1, *, divide_by_group: bool = True
) -> dict[str, EpsilonRange]:
    """A bare loop: Adam on the same net and batches; one probe per method.

    With gradient accumulation each loss is divided by the number of batches in its group (the Trainer's rule), or
    always by ``accumulate`` with ``divide_by_group=False`` (Lightning's rule, also for an epoch's last, partial group).
    """
    holder = nn.Module()
    holder.net = net = _net()  # named like the framework modules' parameters: net.0.weight, ...
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    probes = {
        m: EpsilonProbe(opt, model=holder, steps_per_epoch=steps_per_epoch, method=m) for m in ("histogram", "paper")
    }
    batches = list(torch.utils.data.DataLoader(_data(), batch_size=BATCH))
    for _ in range(epochs):
        for i in range(0, len(batches), accumulate):
            group = batches[i : i + accumulate]
            opt.zero_grad()
            for x, y in group:
                (nn.functional.cross_entropy(net(x), y) / (len(group) if divide_by_group else accumulate)).backward()
            opt.step()
    return {m: p.result() for m, p in probes.items()}


def assert_same(got: EpsilonRange, ref: EpsilonRange) -> None:
    assert (got.lower, got.upper, got.raw_lower, got.raw_upper) == (ref.lower, ref.upper, ref.raw_lower, ref.raw_upper)
    assert (got.step, got.epoch, got.steps_per_epoch, got.method) == (
        ref.step,
        ref.epoch,
        ref.steps_per_epoch,
        ref.method,
    )
    assert len(got.layers) == len(ref.layers)
    for a, b in zip(got.layers, ref.layers):
        assert (a.name, a.shape, a.p_low, a.p_high) == (b.name, b.shape, b.p_low, b.p_high)
        assert a.histogram == b.histogram
    assert [s.step for s in got.snapshots] == [s.step for s in ref.snapshots]
    for s, t in zip(got.snapshots, ref.snapshots):
        assert s.histograms == t.histograms


# ---------------------------------------------------------------------------------------------- Lightning
@pytest.fixture(scope="module")
def lightning_module_class() -> type:
    L = pytest.importorskip("lightning.pytorch")

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return Module


def _lightning_fit(module: object, callbacks: list, tmp: Path, **kw: object) -> object:
    import lightning.pytorch as L

    trainer = L.Trainer(
        default_root_dir=str(tmp),
        callbacks=callbacks,
        logger=L.loggers.CSVLogger(str(tmp), name="logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        **kw,
    )
    trainer.fit(module, torch.utils.data.DataLoader(_data(), batch_size=BATCH))
    return trainer


def test_lightning_callback_equals_plain_probe(lightning_module_class: type, tmp_path: Path) -> None:
    from epsfinder.integrations.lightning import EpsilonFinderCallback

    hist_cb = EpsilonFinderCallback(out_dir=tmp_path / "hist", report=False)
    paper_cb = EpsilonFinderCallback(out_dir=tmp_path / "paper", method="paper", log=False, report=False)
    accumulate = 2
    trainer = _lightning_fit(
        lightning_module_class(), [hist_cb, paper_cb], tmp_path, max_epochs=2, accumulate_grad_batches=accumulate
    )
    spe = math.ceil(N // BATCH / accumulate)  # Lightning steps on the last, partial accumulation of an epoch
    assert trainer.global_step == 2 * spe
    ref = _reference(2, spe, accumulate, divide_by_group=False)
    assert_same(hist_cb.result, ref["histogram"])
    assert_same(paper_cb.result, ref["paper"])
    assert not hist_cb.probes[0].attached  # detached at the end of fit
    assert_same(EpsilonRange.from_json(tmp_path / "hist" / "result.json"), ref["histogram"])

    # metrics of every snapshot reached the trainer's logger, at the global step of the snapshot
    rows = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, r.split(","))) for r in rows[1:]]
    steps = [int(r["step"]) for r in logged if r.get("epsfinder/eps_upper")]
    assert steps == [s.step for s in ref["histogram"].snapshots]
    last = hist_cb.history[-1]
    assert last["epsfinder/eps_upper"] == range_metrics(hist_cb.probes[0].snapshots[-1])["epsfinder/eps_upper"]
    assert last["epsfinder/fraction_above_eps"] == pytest.approx(
        ref["histogram"].snapshots[-1].total().fraction_above(1e-8)
    )


def test_lightning_stop_after_first_epoch_writes_report(lightning_module_class: type, tmp_path: Path) -> None:
    from epsfinder.integrations.lightning import EpsilonFinderCallback

    cb = EpsilonFinderCallback(stop_after_first_epoch=True, schedule=every(3))
    trainer = _lightning_fit(lightning_module_class(), [cb], tmp_path, max_epochs=5)
    spe = N // BATCH
    assert trainer.global_step == spe and trainer.current_epoch == 1
    out = tmp_path / "epsfinder"  # default: trainer.default_root_dir/epsfinder
    result = EpsilonRange.from_json(out / "result.json")
    assert result.step == 6 and [s.step for s in result.snapshots] == [3, 6]  # no end-of-epoch snapshot: the latest
    assert not cb.probes[0].attached
    try:
        import matplotlib  # noqa: F401

        import epsfinder.report  # noqa: F401
    except ImportError:
        return
    assert (out / "report.html").stat().st_size > 0


def test_lightning_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        from epsfinder.integrations import lightning as lt
    except ImportError as e:  # Lightning is not installed: the import itself must say what to install
        assert "pip install 'epsfinder[integrations]'" in str(e)
        return

    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(ImportError, match=r"pip install 'epsfinder\[integrations\]'"):
        lt._callback_bases()
    with pytest.raises(ImportError, match=r"needs the 'no_such_pkg' package.*epsfinder\[integrations\]"):
        _require("no_such_pkg.sub", "a feature")


def test_callback_arguments_are_validated() -> None:
    pytest.importorskip("lightning.pytorch")
    from epsfinder.integrations.lightning import EpsilonFinderCallback

    with pytest.raises(ValueError, match=r"method=.*'sorted'"):
        EpsilonFinderCallback(method="sorted")
    with pytest.raises(ValueError, match="eps=-1"):
        EpsilonFinderCallback(eps=-1)
    with pytest.raises(RuntimeError, match="not been attached"):
        _ = EpsilonFinderCallback().result


# ---------------------------------------------------------------------------------------------- Hugging Face
class _DictData(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x, self.y = _data().tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class _HFNet(nn.Module):
    """A tiny model with the Hugging Face calling convention: forward(**batch) -> {"loss", "logits"}."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _net()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.net(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def _hf_train(callbacks: list, tmp: Path, **kw: object) -> object:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    model = _HFNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    constant = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        per_device_train_batch_size=BATCH,
        max_grad_norm=0.0,  # no clipping, as in the bare loop
        disable_tqdm=True,
        **kw,
    )

    class InOrder(transformers.Trainer):  # batches in dataset order, as the bare loop reads them (any version)
        def _get_train_sampler(self, *args: object, **kwargs: object) -> torch.utils.data.Sampler:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrder(
        model=model, args=args, train_dataset=_DictData(), callbacks=callbacks, optimizers=(opt, constant)
    )
    trainer.train()
    return trainer


def test_hf_callback_equals_plain_probe(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from epsfinder.integrations.transformers import EpsilonFinderCallback

    hist_cb = EpsilonFinderCallback(out_dir=tmp_path / "hist", report=False)
    paper_cb = EpsilonFinderCallback(out_dir=tmp_path / "paper", method="paper", log=False, report=False)
    accumulate = 2
    trainer = _hf_train([hist_cb, paper_cb], tmp_path, num_train_epochs=2, gradient_accumulation_steps=accumulate)
    spe = math.ceil(N // BATCH / accumulate)
    assert trainer.state.global_step == 2 * spe
    ref = _reference(2, spe, accumulate)
    assert_same(hist_cb.result, ref["histogram"])
    assert_same(paper_cb.result, ref["paper"])
    assert_same(EpsilonRange.from_json(tmp_path / "paper" / "result.json"), ref["paper"])
    assert not hist_cb.probes[0].attached
    logged = [e for e in trainer.state.log_history if "epsfinder/eps_lower" in e]
    assert [e["step"] for e in logged] == [s.step for s in ref["histogram"].snapshots]
    assert logged[-1]["epsfinder/fraction_above_eps"] == hist_cb.history[-1]["epsfinder/fraction_above_eps"]


def test_hf_stop_after_first_epoch(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from epsfinder.integrations.transformers import EpsilonFinderCallback

    cb = EpsilonFinderCallback(stop_after_first_epoch=True, report=False)
    trainer = _hf_train([cb], tmp_path, num_train_epochs=4)
    assert trainer.state.global_step == N // BATCH
    result = EpsilonRange.from_json(tmp_path / "epsfinder" / "result.json")  # default: args.output_dir/epsfinder
    assert result.step == N // BATCH and result.epoch == 1.0


def test_hf_attaches_late_when_the_optimizer_is_created_lazily() -> None:
    transformers = pytest.importorskip("transformers")
    from epsfinder.integrations.transformers import EpsilonFinderCallback

    net = _net()
    opt = torch.optim.Adam(net.parameters())
    cb = EpsilonFinderCallback(schedule=every(2), report=False)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    args = type("Args", (), {"gradient_accumulation_steps": 1, "output_dir": None})()
    cb.on_train_begin(args, state, control, optimizer=None, model=net)
    assert cb.probes == []
    for step in (1, 2, 3, 4):
        net(torch.randn(4, 8)).pow(2).mean().backward()
        opt.step()
        state.global_step = step
        cb.on_step_end(args, state, control, optimizer=opt, model=net, train_dataloader=None)
    assert cb.probes[0].steps == 4
    assert [s.step for s in cb.probes[0].snapshots] == [2, 4]  # step 2 was taken at attach time
    assert [e["step"] for e in state.log_history] == [2, 4]


# ---------------------------------------------------------------------------------------------- TensorBoard, W&B
@pytest.fixture(scope="module")
def result() -> EpsilonRange:
    return _reference(1, N // BATCH)["histogram"]


@pytest.mark.parametrize("bins_per_decade", [20, None])
def test_tensorboard_histograms_are_our_bins(result: EpsilonRange, tmp_path: Path, bins_per_decade: int | None) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator as ea
    from torch.utils.tensorboard import SummaryWriter

    from epsfinder.integrations.tensorboard import log_tensorboard

    with SummaryWriter(str(tmp_path)) as writer:
        tags = log_tensorboard(writer, result, 7, bins_per_decade=bins_per_decade)
        log_tensorboard(writer, result.snapshots[0], tag="snap", per_layer=False)  # a snapshot record works too
    acc = ea.EventAccumulator(str(tmp_path), size_guidance={ea.HISTOGRAMS: 0, ea.SCALARS: 0})
    acc.Reload()
    hist_tags = acc.Tags()["histograms"]
    assert set(hist_tags) == {"epsfinder/A", "snap/A"} | {f"epsfinder/A/{ly.name}" for ly in result.layers}
    expected = {"epsfinder/A": result.histogram} | {f"epsfinder/A/{ly.name}": ly.histogram for ly in result.layers}
    for tag, ours in expected.items():
        (event,) = acc.Histograms(tag)
        h = event.histogram_value
        edges, counts = histogram_bins(ours, bins_per_decade)
        assert event.step == 7
        assert list(h.bucket) == counts.tolist()  # the counts, bin by bin, exactly
        assert list(h.bucket_limit) == edges[1:].tolist()  # upper edges
        assert (h.min, h.max, h.num) == (edges[0], edges[-1], ours.positive)
        mids = 0.5 * (edges[:-1] + edges[1:])
        assert h.sum == pytest.approx(float(counts @ mids)) and h.sum_squares == pytest.approx(float(counts @ mids**2))
    (snap_event,) = acc.Histograms("snap/A")
    assert snap_event.step == result.snapshots[0].step
    scalars = {t: acc.Scalars(t)[0].value for t in acc.Tags()["scalars"]}
    assert scalars["epsfinder/eps_upper"] == pytest.approx(result.upper)
    assert scalars["epsfinder/eps_lower"] == pytest.approx(result.lower)
    assert scalars["epsfinder/fraction_above_eps"] == pytest.approx(result.fraction_above(1e-8))
    assert "epsfinder/eps_upper" in tags


def test_wandb_offline_histograms_are_our_bins(result: EpsilonRange, tmp_path: Path, monkeypatch) -> None:
    wandb = pytest.importorskip("wandb")
    from epsfinder.integrations.wandb import log_wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = wandb.init(project="epsfinder-test", mode="offline", dir=str(tmp_path))
    try:
        logged = log_wandb(run, result, step=5)
    finally:
        run.finish()
    for key, ours in {
        "epsfinder/A": result.histogram,
        f"epsfinder/A/{result.layers[0].name}": result.layers[0].histogram,
    }.items():
        h = logged[key]
        assert isinstance(h, wandb.Histogram)
        edges, counts = histogram_bins(ours, 20, max_bins=512)
        assert h.histogram == counts.tolist() and h.bins == edges.tolist()
    assert logged["epsfinder/eps_upper"] == result.upper
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_histogram_bins_fit_wandb_limit() -> None:
    h = LogHistogram.of(torch.logspace(-30, 30, 5000))
    edges, counts = histogram_bins(h, None, max_bins=512)
    assert counts.size <= 512 and counts.sum() == 5000 and edges.size == counts.size + 1
    edges, counts = histogram_bins(h, None)
    assert counts.sum() == 5000 and np.all(np.diff(edges) > 0)
    with pytest.raises(ValueError, match="bins_per_decade=0"):
        histogram_bins(h, 0)


def test_range_metrics_of_snapshot_match_result(result: EpsilonRange) -> None:
    net = _net()
    opt = torch.optim.Adam(net.parameters())
    with EpsilonProbe(opt, model=net, schedule=every(1)) as probe:
        for x, y in torch.utils.data.DataLoader(_data(), batch_size=BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    snap_metrics = range_metrics(probe.snapshots[-1], eps=1e-3)
    res_metrics = range_metrics(probe.result(), eps=1e-3)
    assert snap_metrics == res_metrics
    assert set(snap_metrics) == {
        f"epsfinder/{k}" for k in ("eps_lower", "eps_upper", "raw_lower", "raw_upper", "eps", "fraction_above_eps")
    }
    json.dumps(snap_metrics)
    logging.getLogger("epsfinder").debug("metrics %s", snap_metrics)
