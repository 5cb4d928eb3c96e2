"""Spanish → English verse pairs read from two SWORD zText Bible modules, in pure Python (no libsword).

A zText module stores each testament in three files:

- ``ot.bzs`` / ``nt.bzs``: 12-byte block records ``(offset, compressed size, uncompressed size)``,
  little-endian uint32 each, locating zlib-compressed blocks in ``.bzz``;
- ``ot.bzv`` / ``nt.bzv``: 10-byte entry records ``(block, offset: uint32; size: uint16)``, one per
  versification entry, giving the byte range of the entry's text inside its uncompressed block;
- ``ot.bzz`` / ``nt.bzz``: the concatenated zlib blocks.

Entries follow the module's versification (KJV for both modules used here, see ``_kjv.py``): module and
testament headings, then per book a book heading and per chapter a chapter heading followed by the
verses. Texts are UTF-8 OSIS fragments; :func:`clean_osis` turns them into plain text.
"""

from __future__ import annotations

import functools
import html
import os
import pathlib
import random
import re
import struct
import zlib
from dataclasses import dataclass

from ._common import (
    ENGLISH_MODULE,
    SPANISH_MODULE,
    MissingDataError,
    as_path,
    sword_candidates,
    ztext_module_present,
)
from ._kjv import KJV_NT, KJV_OT, Versification

_BLOCK = struct.Struct("<III")
_ENTRY = struct.Struct("<IIH")

_NOTE = re.compile(r"<note\b[^>]*/>|<note\b[^>]*>.*?</note>", re.S)
_TITLE = re.compile(r"<title\b[^>]*/>|<title\b[^>]*>.*?</title>", re.S)
# A word-like element closing right where the next one opens: "</w><w ...>", "</w><transChange ...>lo".
_WORD_GAP = re.compile(r"</(w|transChange)>(?=<(w|transChange)\b[^>]*>(?:([^<]*)</transChange>)?)")
_TAG = re.compile(r"<[^>]*>")
# Leftovers of the USFM the modules were converted from: "\\nd LORD" (27 KJV verses), and the KJV's
# paragraph sign "¶", which is layout, not text.
_USFM = re.compile(r"\\\+?[a-z]+[0-9]*\*?|¶")
_SPACE = re.compile(r"\s+")
#: Spanish object pronouns that RV1909 marks as added words glued to the verb before them
#: (``sáca</w><transChange>lo</transChange>`` is "sácalo"); every other added word gets a space.
_ENCLITICS = frozenset({"lo", "la", "le", "los", "las", "les", "me", "te", "se", "nos", "os"})


def _word_gap(match: re.Match[str]) -> str:
    closing, opening, added = match.group(1), match.group(2), match.group(3)
    if closing == "w" and opening == "transChange" and added is not None and added in _ENCLITICS:
        return match.group(0)
    return match.group(0) + " "


def clean_osis(fragment: str) -> str:
    """Plain text of one OSIS verse fragment.

    Drops ``<note>`` and ``<title>`` elements with their content, puts a space between word elements
    (``<w>``, ``<transChange>``) that touch without one (except Spanish enclitic pronouns, which attach
    to the word before), strips every other tag keeping its text, removes USFM leftovers (``\\nd``) and
    the paragraph sign ``¶``, unescapes entities and collapses whitespace.
    """
    text = _NOTE.sub("", fragment)
    text = _TITLE.sub("", text)
    text = _WORD_GAP.sub(_word_gap, text)
    text = _TAG.sub("", text)
    text = _USFM.sub("", text)
    return _SPACE.sub(" ", html.unescape(text)).strip()


def _layout(books: Versification) -> list[int]:
    """Entry indices of the verses of one testament, in order (skipping the heading entries)."""
    indices: list[int] = []
    index = 2  # 0: module heading, 1: testament heading
    for _, chapters in books:
        index += 1  # book heading
        for verses in chapters:
            index += 1  # chapter heading
            indices.extend(range(index, index + verses))
            index += verses
    return indices


def _layout_size(books: Versification) -> int:
    return 2 + sum(1 + sum(1 + verses for verses in chapters) for _, chapters in books)


def verse_refs() -> list[str]:
    """OSIS references (``"Gen.1.1"`` .. ``"Rev.22.21"``) of the 31,102 KJV verses, in :func:`read_ztext` order."""
    return [
        f"{book}.{c}.{v}"
        for book, chapters in (*KJV_OT, *KJV_NT)
        for c, verses in enumerate(chapters, 1)
        for v in range(1, verses + 1)
    ]


def _read_testament(module_dir: pathlib.Path, testament: str, books: Versification) -> list[str]:
    bzs = (module_dir / f"{testament}.bzs").read_bytes()
    bzv = (module_dir / f"{testament}.bzv").read_bytes()
    bzz = (module_dir / f"{testament}.bzz").read_bytes()
    if len(bzs) % _BLOCK.size or len(bzv) % _ENTRY.size:
        raise ValueError(
            f"{module_dir}: {testament}.bzs has {len(bzs)} bytes and {testament}.bzv {len(bzv)}; expected "
            f"multiples of {_BLOCK.size} and {_ENTRY.size} (not a zText module, or corrupt)"
        )
    entries = len(bzv) // _ENTRY.size
    expected = _layout_size(books)
    if entries != expected:
        raise ValueError(
            f"{module_dir}: {testament}.bzv has {entries} entries but the KJV versification has {expected}; "
            "only modules with Versification=KJV are supported"
        )
    blocks = [_BLOCK.unpack_from(bzs, i) for i in range(0, len(bzs), _BLOCK.size)]
    cache: dict[int, bytes] = {}
    verses: list[str] = []
    for index in _layout(books):
        block, offset, size = _ENTRY.unpack_from(bzv, index * _ENTRY.size)
        if size == 0:
            verses.append("")
            continue
        if block >= len(blocks):
            raise ValueError(f"{module_dir}: {testament}.bzv entry {index} points at missing block {block}")
        if block not in cache:
            start, compressed, _ = blocks[block]
            cache[block] = zlib.decompress(bzz[start : start + compressed])
        raw = cache[block][offset : offset + size]
        try:
            verses.append(clean_osis(raw.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{module_dir}: {testament} entry {index} is not UTF-8 ({exc})") from None
    return verses


def read_ztext(module_dir: str | os.PathLike[str]) -> list[str]:
    """All verses of one SWORD zText module, as plain text, in versification order.

    Reads ``ot.*`` then ``nt.*`` with :mod:`struct` and :mod:`zlib` (no libsword), skips the module,
    testament, book and chapter heading entries, and cleans each verse with :func:`clean_osis`. Verses
    the module leaves out come back as ``""``, so index ``i`` is always verse ``verse_refs()[i]``.

    Args:
        module_dir: the module folder, e.g. ``/usr/share/sword/modules/texts/ztext/engKJV2006eb``.

    Returns:
        31,102 strings (23,145 Old Testament verses, then 7,957 New Testament verses).

    Raises:
        MissingDataError: the folder lacks one of the six module files.
        ValueError: the module's layout is not the KJV versification, or its data is corrupt.
    """
    folder = as_path(module_dir)
    if not ztext_module_present(folder):
        raise MissingDataError("verse-pairs", [folder], detail=f"{folder} lacks ot/nt .bzs/.bzv/.bzz zText files")
    return _read_testament(folder, "ot", KJV_OT) + _read_testament(folder, "nt", KJV_NT)


def _find_sword_dir(data_dir: str | os.PathLike[str] | None) -> pathlib.Path:
    searched = sword_candidates(data_dir)
    for folder in searched:
        if ztext_module_present(folder / SPANISH_MODULE) and ztext_module_present(folder / ENGLISH_MODULE):
            return folder.resolve()
    raise MissingDataError(
        "verse-pairs", searched, detail=f"need both {SPANISH_MODULE}/ and {ENGLISH_MODULE}/ module folders"
    )


@functools.lru_cache(maxsize=2)
def _read_pairs_cached(folder: pathlib.Path) -> tuple[tuple[str, str], ...]:
    spanish = read_ztext(folder / SPANISH_MODULE)
    english = read_ztext(folder / ENGLISH_MODULE)
    return tuple((es, en) for es, en in zip(spanish, english, strict=True) if es and en)


def read_verse_pairs(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """All aligned ``(spanish, english)`` verse pairs in canonical order, before any shuffling.

    Verse ``i`` of Reina-Valera 1909 (``spaRV1909eb``) is paired with verse ``i`` of the King James
    Version (``engKJV2006eb``); pairs where either side is empty are dropped. Cached in-process.

    Args:
        data_dir: folder holding the two module folders. None searches ``$EPSFINDER_SWORD`` and then
            ``/usr/share/sword/modules/texts/ztext`` (Debian packages ``sword-text-sparv``,
            ``sword-text-kjv``).

    Returns:
        31,084 pairs for the Debian modules (of 31,102 verses, 18 are empty in the Spanish module,
        e.g. where RV1909 joins two verses into one); the first is ``("EN el principio crió Dios los
        cielos y la tierra.", "In the beginning God created the heaven and the earth.")``.

    Raises:
        MissingDataError: no searched folder holds both modules.
    """
    return list(_read_pairs_cached(_find_sword_dir(data_dir)))


@dataclass
class ParallelCorpus:
    """Sentence pairs for translation, each ``(source, target)`` = ``(spanish, english)``.

    Attributes:
        train, valid, test: lists of ``(spanish, english)`` string pairs.
    """

    train: list[tuple[str, str]]
    valid: list[tuple[str, str]]
    test: list[tuple[str, str]]

    def __repr__(self) -> str:
        return f"ParallelCorpus(train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)})"


def load_verse_pairs(
    data_dir: str | os.PathLike[str] | None = None, *, seed: int = 0, valid: int = 1000, test: int = 1000
) -> ParallelCorpus:
    """Spanish → English Bible verse pairs split into train / valid / test.

    The pairs of :func:`read_verse_pairs` are shuffled with ``random.Random(seed)``; the first ``valid``
    go to valid, the next ``test`` to test, the rest to train (29,084 with the defaults). The same seed
    always gives the same split.

    Args:
        data_dir: folder holding the ``spaRV1909eb`` and ``engKJV2006eb`` module folders; None searches
            ``$EPSFINDER_SWORD`` and ``/usr/share/sword/modules/texts/ztext``.
        seed: shuffle seed.
        valid: number of validation pairs.
        test: number of test pairs.

    Raises:
        MissingDataError: the modules are not installed.
        ValueError: ``valid`` or ``test`` is negative, or they leave no training pairs.
    """
    if valid < 0 or test < 0:
        raise ValueError(f"valid and test must be >= 0, got valid={valid}, test={test}")
    pairs = list(_read_pairs_cached(_find_sword_dir(data_dir)))
    if valid + test >= len(pairs):
        raise ValueError(f"valid={valid} + test={test} leaves no training pairs out of {len(pairs)}; lower them")
    random.Random(seed).shuffle(pairs)
    return ParallelCorpus(train=pairs[valid + test :], valid=pairs[:valid], test=pairs[valid : valid + test])
