"""Small real models and data for the core tests (no task package needed)."""

from __future__ import annotations

import torch
from torch import nn


def digits_batches(n_batches: int = 8, batch: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real sklearn digits, as float [B, 64] / labels, in fixed batches."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=g)
    return [(x[idx[i * batch : (i + 1) * batch]], y[idx[i * batch : (i + 1) * batch]]) for i in range(n_batches)]


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(-1, 1, 8, 8)
        x = nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2)
        return self.fc(x.flatten(1))


class TinyLSTM(nn.Module):
    """Reads each 8x8 digit as 8 steps of 8 features."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.view(-1, 8, 8))
        return self.fc(out[:, -1])


class EmbeddingBag(nn.Module):
    """An embedding whose unused rows get exactly zero gradient (so zero adaptive terms)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 6)  # pixel values 0..16 use only rows 0..16
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = (x * 16).round().long()
        return self.fc(self.emb(tokens).mean(1))


MODELS = {"mlp": mlp, "cnn": SmallCNN, "lstm": TinyLSTM, "embedding": EmbeddingBag}


def train(model: nn.Module, opt: torch.optim.Optimizer, batches, steps: int) -> None:
    for i in range(steps):
        x, y = batches[i % len(batches)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
