"""Subword tokenizer: a thin wrapper over sentencepiece that trains offline and caches its model file."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from ._common import as_path

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def _sentencepiece() -> Any:
    try:
        import sentencepiece
    except ImportError:
        raise ImportError(
            "SubwordTokenizer needs sentencepiece: `pip install sentencepiece` (or `pip install 'epsfinder[tasks]'`)"
        ) from None
    return sentencepiece


class SubwordTokenizer:
    """A sentencepiece model with fixed special ids: ``pad=0``, ``unk=1``, ``bos=2``, ``eos=3``.

    Build one with :meth:`train` (offline, cached on disk) or :meth:`load`. :meth:`encode` returns piece
    ids without ``bos``/``eos``; add them yourself where the model needs them. :meth:`decode` ignores the
    special ids. Instances pickle (the model bytes travel with them), so they work in DataLoader workers.

    Attributes:
        vocab_size: number of pieces, special ids included.
        pad_id, unk_id, bos_id, eos_id: the special ids (0, 1, 2, 3).
        model_path: the ``.model`` file this tokenizer was loaded from, or None.
    """

    pad_id: int = PAD_ID
    unk_id: int = UNK_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID

    def __init__(self, processor: Any, model_path: pathlib.Path | None = None) -> None:
        self._sp = processor
        self.model_path = model_path
        self.vocab_size: int = int(processor.get_piece_size())
        ids = (processor.pad_id(), processor.unk_id(), processor.bos_id(), processor.eos_id())
        if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            where = model_path or "the model"
            raise ValueError(
                f"{where} has special ids pad/unk/bos/eos = {ids}; SubwordTokenizer needs (0, 1, 2, 3): "
                "train it with SubwordTokenizer.train"
            )

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        model_dir: str | os.PathLike[str],
        *,
        name: str = "spm",
        model_type: str = "unigram",
    ) -> SubwordTokenizer:
        """Train a sentencepiece model on ``texts``, or reuse the one already trained on the same input.

        The model is saved as ``model_dir/{name}-{model_type}-{vocab_size}-{hash}.model`` (plus ``.vocab``)
        where ``hash`` is the first 16 hex digits of a SHA-256 of the texts, so a later call with the same
        texts and settings loads it instead of training. Training writes the texts (one per line, inner
        newlines replaced by spaces) to a temporary file in ``model_dir``, which is removed afterwards.
        Uses ``character_coverage=1.0`` and 2 threads; no network.

        Args:
            texts: training sentences.
            vocab_size: number of pieces including the 4 special ones.
            model_dir: folder for the model files, created if needed (see :func:`default_cache_dir`).
            name: file name prefix.
            model_type: ``"unigram"``, ``"bpe"``, ``"char"`` or ``"word"``.

        Raises:
            ValueError: ``vocab_size`` is too small or too large for the texts, or no text is non-empty.
        """
        if vocab_size <= 4:
            raise ValueError(f"vocab_size must exceed the 4 special pieces, got {vocab_size}")
        if model_type not in ("unigram", "bpe", "char", "word"):
            raise ValueError(f"model_type must be unigram, bpe, char or word, got {model_type!r}")
        lines = [" ".join(text.split()) for text in texts]
        lines = [line for line in lines if line]
        if not lines:
            raise ValueError("no non-empty text to train the tokenizer on")
        digest = hashlib.sha256()
        for line in lines:
            digest.update(line.encode("utf-8"))
            digest.update(b"\n")
        folder = as_path(model_dir)
        stem = f"{name}-{model_type}-{vocab_size}-{digest.hexdigest()[:16]}"
        model_path = folder / f"{stem}.model"
        if model_path.is_file():
            return cls.load(model_path)

        folder.mkdir(parents=True, exist_ok=True)
        spm = _sentencepiece()
        with tempfile.TemporaryDirectory(dir=folder, prefix=f".{stem}-") as tmp:
            corpus = pathlib.Path(tmp) / "train.txt"
            corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
            prefix = pathlib.Path(tmp) / stem
            try:
                spm.SentencePieceTrainer.train(
                    input=str(corpus),
                    model_prefix=str(prefix),
                    vocab_size=vocab_size,
                    model_type=model_type,
                    pad_id=PAD_ID,
                    unk_id=UNK_ID,
                    bos_id=BOS_ID,
                    eos_id=EOS_ID,
                    character_coverage=1.0,
                    num_threads=2,
                    input_sentence_size=2_000_000,
                    shuffle_input_sentence=True,
                    minloglevel=2,
                )
            except RuntimeError as exc:
                raise ValueError(
                    f"sentencepiece could not train a {model_type} model with vocab_size={vocab_size} on "
                    f"{len(lines)} texts: {exc}. Lower vocab_size or give more text"
                ) from None
            # Move into place atomically so a concurrent reader never sees a half-written model.
            for suffix in (".vocab", ".model"):
                os.replace(f"{prefix}{suffix}", folder / f"{stem}{suffix}")
        return cls.load(model_path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SubwordTokenizer:
        """Load a ``.model`` file written by :meth:`train`.

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: the model's special ids are not pad/unk/bos/eos = 0/1/2/3.
        """
        model_path = as_path(path)
        if not model_path.is_file():
            raise FileNotFoundError(f"no sentencepiece model at {model_path}; train one with SubwordTokenizer.train")
        processor = _sentencepiece().SentencePieceProcessor(model_file=str(model_path))
        return cls(processor, model_path)

    def encode(self, text: str) -> list[int]:
        """Piece ids of ``text`` (no ``bos``/``eos``)."""
        return list(self._sp.encode(text, out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; ``pad``/``bos``/``eos`` are skipped, ``unk`` decodes to `` ⁇ ``."""
        return str(self._sp.decode([int(i) for i in ids]))

    def id_to_piece(self, i: int) -> str:
        """The piece string of id ``i``."""
        return str(self._sp.id_to_piece(int(i)))

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"SubwordTokenizer(vocab_size={self.vocab_size}, model_path={self.model_path})"

    def __getstate__(self) -> dict[str, Any]:
        return {"proto": self._sp.serialized_model_proto(), "model_path": self.model_path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        processor = _sentencepiece().SentencePieceProcessor(model_proto=state["proto"])
        SubwordTokenizer.__init__(self, processor, state["model_path"])
