"""Image classification data: Fashion-MNIST (idx files), CIFAR-10 (python pickles), sklearn digits.

All loaders return :class:`ImageData` with uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``;
normalisation and augmentation are left to the task. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import pathlib
import pickle
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._common import (
    CIFAR10_TEST_FILE,
    ENV_CIFAR10,
    FASHION_MNIST_FILES,
    MissingDataError,
    as_path,
    env_path,
    fashion_mnist_candidates,
    find_idx_file,
)


@dataclass
class ImageData:
    """An image classification data set held in memory.

    Attributes:
        train_images: uint8 tensor ``[N_train, C, H, W]`` with values 0..255.
        train_labels: int64 tensor ``[N_train]`` with values ``0 .. classes - 1``.
        test_images: uint8 tensor ``[N_test, C, H, W]``.
        test_labels: int64 tensor ``[N_test]``.
        classes: number of classes.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: int

    def __repr__(self) -> str:
        return (
            f"ImageData(train={tuple(self.train_images.shape)}, test={tuple(self.test_images.shape)}, "
            f"classes={self.classes})"
        )


def _fresh(data: ImageData) -> ImageData:
    """A copy whose tensors the caller may modify without touching the in-process cache."""
    return ImageData(
        data.train_images.clone(),
        data.train_labels.clone(),
        data.test_images.clone(),
        data.test_labels.clone(),
        data.classes,
    )


# --------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# --------------------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one idx file (``.gz`` compressed or not) into a numpy array.

    Format: a big-endian uint32 magic ``0x0000TTNN`` (``TT`` the element type, 0x08 for uint8; ``NN`` the
    number of dimensions), then ``NN`` big-endian uint32 sizes, then the elements in C order.

    Raises:
        ValueError: the header is not an idx header or the payload size does not match it.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: {len(raw)} bytes is too short for an idx file (needs a 4-byte magic)")
    (magic,) = struct.unpack_from(">I", raw, 0)
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{path}: magic 0x{magic:08x} is not an idx header (expected 0x0000TTNN, TT=08)")
    dims = struct.unpack_from(f">{ndim}I", raw, 4)
    dtype = _IDX_DTYPES[type_code]
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({expected} bytes) but the file has {len(raw) - offset} "
            "bytes of data; the file is truncated or corrupt, reinstall it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)


@functools.lru_cache(maxsize=4)
def _load_fashion_mnist_cached(folder: pathlib.Path) -> ImageData:
    arrays = [read_idx(find_idx_file(folder, stem) or folder / stem) for stem in FASHION_MNIST_FILES]
    train_x, train_y, test_x, test_y = arrays
    for images, labels, split in ((train_x, train_y, "train"), (test_x, test_y, "t10k")):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != (images.shape[0],):
            raise ValueError(
                f"{folder}: {split} images have shape {images.shape} and labels {labels.shape}; "
                "expected [N, 28, 28] and [N]"
            )
    return ImageData(
        torch.from_numpy(train_x.copy()).unsqueeze(1),
        torch.from_numpy(train_y.astype(np.int64)),
        torch.from_numpy(test_x.copy()).unsqueeze(1),
        torch.from_numpy(test_y.astype(np.int64)),
        classes=10,
    )


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """Load Fashion-MNIST from the four original idx files.

    Files: ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each ``.gz`` compressed or not. Parsed arrays are cached in-process per
    folder, so repeated calls cost one tensor copy (about 0.05 s) instead of a parse.

    Args:
        data_dir: folder holding the files (also tried: ``data_dir/fashion-mnist``). None searches
            ``$EPSFINDER_FASHION_MNIST`` and then ``/usr/share/datasets/fashion-mnist`` (Debian package
            ``dataset-fashion-mnist``).

    Returns:
        60,000 train and 10,000 test images, uint8 ``[N, 1, 28, 28]``, labels int64 in 0..9, 10 classes.

    Raises:
        MissingDataError: no searched folder holds all four files.
        ValueError: a file is not a valid idx file.
    """
    searched = fashion_mnist_candidates(data_dir)
    for folder in searched:
        if all(find_idx_file(folder, stem) is not None for stem in FASHION_MNIST_FILES):
            return _fresh(_load_fashion_mnist_cached(folder.resolve()))
    raise MissingDataError("fashion-mnist", searched)


# --------------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR-10 batch may reference, keyed by every module path numpy has used.

    The functions are taken from numpy's own ``__reduce__`` output, so no deprecated ``numpy.core``
    import is needed on numpy 2.
    """
    reconstruct = np.zeros(1).__reduce__()[0]  # multiarray._reconstruct
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numeric._frombuffer (pickle protocol 5)
    scalar = np.float64(0).__reduce__()[0]  # multiarray.scalar
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): __import__("codecs").encode,  # protocol-2 bytes written by Python 3
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


_NUMPY_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only numpy array reconstruction globals.

    A pickle can name any importable callable (``os.system``, ``subprocess.Popen``, ...) and the standard
    unpickler calls it while loading, so unpickling an untrusted file runs arbitrary code. CIFAR-10
    batches only need plain containers (dict, list, bytes, int: no globals at all) plus numpy's array
    reconstruction (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``) and
    ``_codecs.encode`` for bytes written with protocol 2. Every other global is refused with
    :class:`pickle.UnpicklingError` before anything is called.
    """

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain containers are "
                "allowed in a CIFAR-10 batch (this file is not a CIFAR-10 batch, or was tampered with)"
            ) from None


def restricted_pickle_load(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` and ``encoding='bytes'`` (as CIFAR-10 needs).

    Raises:
        pickle.UnpicklingError: the file names a global other than numpy's array reconstruction; the
            message starts with the file path.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise pickle.UnpicklingError(f"{path}: {exc}") from None


def _get(batch: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def _read_cifar_batch(path: pathlib.Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = restricted_pickle_load(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with b'data' and b'labels', got {type(batch).__name__}")
    try:
        data, labels = _get(batch, "data"), _get(batch, "labels")
    except KeyError as exc:
        raise ValueError(
            f"{path}: batch has keys {sorted(map(str, batch))}; expected b'data' and b'labels' "
            f"(missing {exc.args[0]!r})"
        ) from None
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' is {data.dtype} {data.shape}; expected uint8 [N, 3072]")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {labels.shape[0]} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels span {labels.min()}..{labels.max()}; expected 0..9")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


_TRAIN_BATCH = re.compile(r"data_batch_(\d+)")


def load_cifar10(data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """Load CIFAR-10 from the standard python-pickle batches in a user's folder (never downloaded).

    Each batch file is a pickled dict with ``b'data'`` (uint8 ``[N, 3072]``, the 1024 red, then green,
    then blue values of a 32×32 image in row-major order) and ``b'labels'`` (N ints in 0..9). The full
    data set has ``data_batch_1`` .. ``data_batch_5`` (10,000 images each) and ``test_batch`` (10,000);
    every ``data_batch_<k>`` present is loaded in order of ``k``, so a subset of the training batches also
    works.

    Security: a pickle can call any importable function while it loads, so these files, which come from
    wherever the user got them, are read with :class:`RestrictedUnpickler` (``encoding='bytes'``, as the
    Python-2 pickles need). It allows only numpy's array reconstruction and plain containers; a file
    naming any other global (``os.system``, ...) is refused with :class:`pickle.UnpicklingError` before
    anything runs.

    Args:
        data_dir: the ``cifar-10-batches-py`` folder, or a folder containing it. None uses
            ``$EPSFINDER_CIFAR10``.

    Returns:
        Images uint8 ``[N, 3, 32, 32]``, labels int64 in 0..9, 10 classes (50,000 / 10,000 when complete).

    Raises:
        MissingDataError: no folder given, or no ``test_batch`` plus at least one ``data_batch_<k>``.
        pickle.UnpicklingError: a batch references a global outside the allowed numpy set.
        ValueError: a batch does not have the layout above.
    """
    if data_dir is None:
        data_dir = env_path(ENV_CIFAR10)
        if data_dir is None:
            raise MissingDataError("cifar10", [], detail=f"no data_dir given and ${ENV_CIFAR10} is not set")
    base = as_path(data_dir)
    searched = [base, base / "cifar-10-batches-py"]
    for folder in searched:
        if not (folder / CIFAR10_TEST_FILE).is_file():
            continue
        train_files = sorted(
            (int(m.group(1)), p)
            for p in folder.iterdir()
            if (m := _TRAIN_BATCH.fullmatch(p.name)) is not None and p.is_file()
        )
        if not train_files:
            raise MissingDataError("cifar10", [folder], detail=f"{folder} has test_batch but no data_batch_<k>")
        parts = [_read_cifar_batch(p) for _, p in train_files]
        test_images, test_labels = _read_cifar_batch(folder / CIFAR10_TEST_FILE)
        return ImageData(
            torch.cat([x for x, _ in parts]),
            torch.cat([y for _, y in parts]),
            test_images,
            test_labels,
            classes=10,
        )
    raise MissingDataError("cifar10", searched)


# --------------------------------------------------------------------------------------------------------
# sklearn digits
# --------------------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 360


@functools.lru_cache(maxsize=1)
def _load_digits_cached() -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise MissingDataError("digits", [], detail=f"scikit-learn is not importable: {exc}") from None
    bunch = load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(0).permutation(len(labels))
    train, test = order[DIGITS_TEST_SIZE:], order[:DIGITS_TEST_SIZE]
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    return ImageData(x[train].clone(), y[train].clone(), x[test].clone(), y[test].clone(), classes=10)


def load_digits_data() -> ImageData:
    """Load scikit-learn's bundled 8×8 digits (1,797 images) as a small smoke-test data set.

    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``). The split is a seeded permutation
    (``numpy.random.default_rng(0)``, not stratified): 1,437 train and 360 test images.

    Returns:
        Images uint8 ``[N, 1, 8, 8]``, labels int64 in 0..9, 10 classes.

    Raises:
        MissingDataError: scikit-learn is not installed.
    """
    return _fresh(_load_digits_cached())
