"""Plain-torch models of the paper's experiments (no torchvision): MLP, AlexNet, VGG11, ResNet, LSTM LM, Transformer.

Every convolutional model takes ``in_channels`` and works on 28×28 (Fashion-MNIST), 32×32 (CIFAR-10) and 8×8
(digits) inputs; ``width`` scales every channel count and hidden size, so the ``cpu`` presets can run the same
architecture thinner. Sizes in the ``paper`` presets follow the authors' code (AlexNet, VGG11, ResNet34 for
CIFAR-10; AWD-LSTM layout for Penn Treebank; a fairseq-IWSLT-sized Transformer).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MLP",
    "VGG",
    "VGG11_LAYOUT",
    "AlexNet",
    "LSTMLanguageModel",
    "LockedDropout",
    "ResNet",
    "TransformerTranslator",
    "count_parameters",
]


def count_parameters(model: nn.Module) -> int:
    """Number of distinct trainable parameter elements (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


# ----------------------------------------------------------------------------------------------------------------
# Image classification
# ----------------------------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Multi-layer perceptron on flattened images: ``in → hidden[0] → ... → classes`` with ReLU.

    Args:
        in_features: input size (784 for 28×28×1, 64 for 8×8 digits).
        hidden: hidden layer sizes; the paper's Fashion-MNIST MLP is ``(1000, 1000)``.
        classes: output classes.
        dropout: dropout after each hidden activation (0 disables).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = h
        layers.append(nn.Linear(prev, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AlexNet(nn.Module):
    """AlexNet for small images, as in the authors' CIFAR-10 code (3×3 first conv, stride 1).

    Features: conv3×3(64w) → maxpool3/2 → conv5×5(192w) → maxpool3/2 → conv3×3(384w) → conv3×3(256w) →
    conv3×3(256w) → maxpool3/2 → adaptive average pool to 6×6; classifier: dropout 0.5 → linear(4096w) →
    dropout 0.5 → linear(4096w) → linear(classes). ``width=1`` is the paper's model (57 M parameters on
    CIFAR-10). Images of 8×8 (digits) are too small for three 3/2 poolings; use the MLP there.

    Args:
        in_channels: 1 (Fashion-MNIST) or 3 (CIFAR-10).
        classes: output classes.
        width: multiplies every channel count and hidden size.
    """

    def __init__(self, in_channels: int = 3, classes: int = 10, width: float = 1.0) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = (_scaled(c, width) for c in (64, 192, 384, 256, 256))
        hidden = _scaled(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


#: VGG11's convolution layout: channel counts, "M" for a 2×2 max pool.
VGG11_LAYOUT: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG with batch normalisation for small images (the CIFAR-10 VGG of the AdaBelief / authors' code).

    Each number in ``layout`` is a conv3×3 → BatchNorm → ReLU with that many channels (times ``width``), each
    ``"M"`` a 2×2 max pool with ``ceil_mode=True`` (so 28×28 inputs shrink 28→14→7→4→2→1 and 8×8 ones still
    work), then a global average pool and one linear layer. ``width=1`` with :data:`VGG11_LAYOUT` is VGG11
    (9.2 M parameters).
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 10,
        width: float = 1.0,
        layout: Sequence[int | str] = VGG11_LAYOUT,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for item in layout:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                out = _scaled(int(item), width)
                layers += [nn.Conv2d(prev, out, kernel_size=3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
                prev = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with basic blocks for small images (3×3 stem, no stem pooling), as in the CIFAR-10 code.

    Stage ``i`` has ``blocks[i]`` basic blocks of ``widths[i]`` channels (times ``width``); every stage after
    the first halves the resolution. ``widths=(64, 128, 256, 512), blocks=(3, 4, 6, 3)`` is ResNet34
    (21 M parameters, the paper's model); ``widths=(16, 32, 64), blocks=(1, 1, 1)`` is the 3-stage ResNet-8 of
    the ``cpu`` presets.
    """

    def __init__(
        self,
        in_channels: int = 3,
        classes: int = 10,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (3, 4, 6, 3),
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths and blocks need the same non-zero length, got {widths} and {blocks}")
        chans = [_scaled(w, width) for w in widths]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, chans[0], kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        prev = chans[0]
        for i, (c, n) in enumerate(zip(chans, blocks)):
            layers = []
            for j in range(n):
                layers.append(_BasicBlock(prev, c, stride=2 if (i > 0 and j == 0) else 1))
                prev = c
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


# ----------------------------------------------------------------------------------------------------------------
# Language modelling
# ----------------------------------------------------------------------------------------------------------------


class LockedDropout(nn.Module):
    """Variational dropout for ``[T, B, F]`` sequences: one mask per sequence, shared over time (AWD-LSTM)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * mask


Hidden = list[tuple[torch.Tensor, torch.Tensor]]


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model with the AWD-LSTM layer layout, in plain torch.

    Embedding → locked dropout ``dropout_i`` → ``layers`` single-layer LSTMs (locked dropout ``dropout_h``
    between them) → locked dropout ``dropout`` → linear decoder. With ``tied=True`` the decoder shares the
    embedding matrix and, as in AWD-LSTM, the *last* LSTM outputs ``emb`` units (so one tied layer is
    ``emb → emb`` and two are ``emb → hidden → emb``). Simplifications against AWD-LSTM: no weight drop on the
    hidden-to-hidden matrices, no embedding dropout, no activation regularisation (AR/TAR).

    ``forward(inputs)`` takes ``[T, B]`` token ids and returns logits ``[T, B, vocab]`` from a zero state;
    ``forward(inputs, hidden, return_hidden=True)`` also returns the final state for truncated BPTT.
    """

    def __init__(
        self,
        vocab: int,
        emb: int = 400,
        hidden: int = 1150,
        layers: int = 1,
        *,
        dropout: float = 0.4,
        dropout_h: float = 0.3,
        dropout_i: float = 0.65,
        tied: bool = True,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.vocab = vocab
        self.encoder = nn.Embedding(vocab, emb)
        sizes = []
        for i in range(layers):
            d_in = emb if i == 0 else hidden
            d_out = (emb if tied else hidden) if i == layers - 1 else hidden
            sizes.append((d_in, d_out))
        self.rnns = nn.ModuleList(nn.LSTM(d_in, d_out) for d_in, d_out in sizes)
        self.drop_i, self.drop_h = LockedDropout(dropout_i), LockedDropout(dropout_h)
        self.drop_o = LockedDropout(dropout)
        self.decoder = nn.Linear(sizes[-1][1], vocab)
        if tied:
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int) -> Hidden:
        """A zero state for ``batch_size`` columns, on the model's device."""
        weight = self.encoder.weight
        return [
            (weight.new_zeros(1, batch_size, rnn.hidden_size), weight.new_zeros(1, batch_size, rnn.hidden_size))
            for rnn in self.rnns
        ]

    def forward(
        self, inputs: torch.Tensor, hidden: Hidden | None = None, *, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, Hidden]:
        if hidden is None:
            hidden = self.init_hidden(inputs.size(1))
        x = self.drop_i(self.encoder(inputs))
        new_hidden: Hidden = []
        for i, rnn in enumerate(self.rnns):
            x, h = rnn(x, hidden[i])
            new_hidden.append(h)
            x = self.drop_h(x) if i < len(self.rnns) - 1 else self.drop_o(x)
        logits = self.decoder(x)
        return (logits, new_hidden) if return_hidden else logits


# ----------------------------------------------------------------------------------------------------------------
# Translation
# ----------------------------------------------------------------------------------------------------------------


def _sinusoids(length: int, dim: int) -> torch.Tensor:
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


class TransformerTranslator(nn.Module):
    """Encoder-decoder Transformer (``nn.Transformer``, pre-LayerNorm) over one joint subword vocabulary.

    Source and target share one embedding matrix (scaled by ``sqrt(d_model)``, plus sinusoidal positions),
    which is also the output projection. Pre-LN (``norm_first=True``) trains without a warm-up schedule, so the
    learning rate stays one number, as in the paper's grids. Batches are ``batch_first``.

    Args:
        vocab: vocabulary size (joint source/target).
        d_model, nhead, encoder_layers, decoder_layers, ff, dropout: the usual sizes; the paper preset uses
            fairseq's ``transformer_iwslt_de_en`` (512, 4, 6, 6, 1024, 0.3).
        pad_id: padding id (masked in attention).
        max_len: longest sequence the position table covers.
    """

    def __init__(
        self,
        vocab: int,
        d_model: int = 512,
        nhead: int = 4,
        encoder_layers: int = 6,
        decoder_layers: int = 6,
        ff: int = 1024,
        dropout: float = 0.3,
        *,
        pad_id: int = 0,
        max_len: int = 512,
    ) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.d_model = d_model
        self.max_len = max_len
        self.embed = nn.Embedding(vocab, d_model, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, 0.0, d_model**-0.5)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.register_buffer("positions", _sinusoids(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, nhead, ff, dropout, batch_first=True, norm_first=True),
            encoder_layers,
            norm=nn.LayerNorm(d_model),
            enable_nested_tensor=False,
        )
        decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, nhead, ff, dropout, batch_first=True, norm_first=True),
            decoder_layers,
            norm=nn.LayerNorm(d_model),
        )
        self.transformer = nn.Transformer(
            d_model, nhead, custom_encoder=encoder, custom_decoder=decoder, batch_first=True
        )

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.size(1) > self.max_len:
            raise ValueError(f"sequence of {ids.size(1)} tokens exceeds max_len={self.max_len}; truncate it")
        x = self.embed(ids) * math.sqrt(self.d_model) + self.positions[: ids.size(1)]
        return self.dropout(x)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder memory ``[B, S, d]`` and the source padding mask ``[B, S]`` (True at padding)."""
        mask = src.eq(self.pad_id)
        return self.transformer.encoder(self._embed(src), src_key_padding_mask=mask), mask

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor, *, last_only: bool = False
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` for the target prefix ``tgt_in`` (causal self-attention); with ``last_only``
        only the last position's ``[B, vocab]`` (what greedy decoding needs)."""
        length = tgt_in.size(1)
        causal = torch.ones(length, length, dtype=torch.bool, device=tgt_in.device).triu_(1)
        out = self.transformer.decoder(
            self._embed(tgt_in),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=tgt_in.eq(self.pad_id),
            memory_key_padding_mask=memory_mask,
        )
        if last_only:
            out = out[:, -1]
        return F.linear(out, self.embed.weight)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``[B, T, vocab]``: ``tgt_in`` is the target shifted right (starts with bos)."""
        memory, mask = self.encode(src)
        return self.decode(tgt_in, memory, mask)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, *, bos_id: int, eos_id: int, max_len: int | None = None) -> list[list[int]]:
        """Greedy decoding: the target ids of each source row, without bos/eos.

        Each output stops at ``eos`` or after source length × 1.5 + 10 tokens, at most ``max_len`` (and the
        model's ``max_len``).
        """
        memory, mask = self.encode(src)
        batch = src.size(0)
        limit = int(src.size(1) * 1.5) + 10
        if max_len is not None:
            limit = min(limit, max_len)
        max_len = min(limit, self.max_len - 1)
        ys = torch.full((batch, 1), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(batch, dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            logits = self.decode(ys, memory, mask, last_only=True)
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            ys = torch.cat([ys, nxt.unsqueeze(1)], dim=1)
            done |= nxt.eq(eos_id)
            if bool(done.all()):
                break
        out: list[list[int]] = []
        for row in ys[:, 1:].tolist():
            ids: list[int] = []
            for t in row:
                if t in (eos_id, self.pad_id):
                    break
                ids.append(t)
            out.append(ids)
        return out
