"""Brown corpus loader: format parsing, file split, vocabulary, checksums; real corpus."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from memoptim.data import brown
from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError

# ten files ca01..ca10 -> ca09 is validation, ca10 is test, the rest training
FILES = {
    "ca01": "\n\n\tThe/at Dog/nn ran/vbd ./.\n\n\n\tThe/at cat/nn sat/vbd ./.\n",
    "ca02": "\tA/at dog/nn sat/vbd ./.\n",
    "ca03": "\tAtlanta's/np$ dog/nn ./.\n",
    "ca04": "\tThe/at dog/nn and/cc the/at cat/nn ./.\n",
    "ca05": "\t1/2/cd dog/nn\n",
    "ca06": "\tthe/at the/at\n",
    "ca07": "\tcat/nn\n",
    "ca08": "\tdog/nn\n",
    "ca09": "\tThe/at zebra/nn sat/vbd ./.\n",
    "ca10": "\tA/at cat/nn ran/vbd\n",
}


def _write(root: Path, files: dict[str, str] = FILES) -> str:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "cats.txt").write_text("ca01 news\n")  # not a corpus file: ignored
    (root / "README").write_text("readme")
    return hashlib.md5("".join(files[k] for k in sorted(files)).encode()).hexdigest()


def test_read_sentences_format():
    sents = brown.read_sentences(FILES["ca01"] + FILES["ca03"] + FILES["ca05"])
    assert sents == [
        ["the", "dog", "ran", "."],
        ["the", "cat", "sat", "."],
        ["atlanta's", "dog", "."],
        ["1/2", "dog"],  # only the last '/' separates the tag
    ]


def test_split_by_file_and_vocabulary_on_train_only(tmp_path):
    md5 = _write(tmp_path / "brown")
    c = brown.load_brown(tmp_path / "brown", vocab_size=6, md5=md5)
    assert c.files == {
        "train": ("ca01", "ca02", "ca03", "ca04", "ca05", "ca06", "ca07", "ca08"),
        "val": ("ca09",),
        "test": ("ca10",),
    }
    # training counts: dog 6, the 6 (tie: alphabetical), . 5, cat 3, sat 2, then 1s
    assert c.vocab.itos == ("<unk>", "<eos>", "dog", "the", ".", "cat")
    ids = c.vocab.stoi
    U, E = 0, 1
    expected_val = [ids["the"], U, U, ids["."], E]  # zebra never seen in training, sat cut off
    np.testing.assert_array_equal(c.val, expected_val)
    np.testing.assert_array_equal(c.test, [U, ids["cat"], U, E])
    assert c.train.dtype == np.int64
    # ca01..ca08 sentence lengths 4,4 | 4 | 3 | 6 | 2 | 2 | 1 | 1, plus one <eos> per sentence
    assert len(c.train) == (4 + 4 + 4 + 3 + 6 + 2 + 2 + 1 + 1) + 9
    np.testing.assert_array_equal(c.train[:5], [ids["the"], ids["dog"], U, ids["."], E])


def test_vocabulary_ties_are_alphabetical_and_encode_appends_eos():
    v = brown.Vocabulary.build([["b", "a", "c", "c"]], max_size=4)
    assert v.itos == ("<unk>", "<eos>", "c", "a")
    np.testing.assert_array_equal(v.encode([["a", "zz"], ["c"]]), [3, 0, 1, 2, 1])
    with pytest.raises(ValueError):
        brown.Vocabulary(["a", "<eos>"])


def test_checksum_and_missing_errors(tmp_path, monkeypatch):
    md5 = _write(tmp_path / "b")
    with pytest.raises(DatasetChecksumError):
        brown.load_brown(tmp_path / "b")  # pinned digest of the real corpus
    (tmp_path / "b" / "ca05").write_text("\t1/2/cd dog/nn\n\tcat/nn\n")
    with pytest.raises(DatasetChecksumError):
        brown.load_brown(tmp_path / "b", md5=md5)
    assert len(brown.load_brown(tmp_path / "b", verify=False).train) == 36 + 2
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetNotFoundError, match=r"bash scripts/get_data\.sh brown"):
        brown.load_brown()


def _installed() -> bool:
    try:
        brown.find_root()
    except DatasetNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _installed(), reason="real Brown corpus not installed: run `bash scripts/get_data.sh brown`"
)
def test_real_brown_corpus():
    c = brown.load_brown()  # verifies the pinned MD5
    assert {k: len(v) for k, v in c.files.items()} == {"train": 400, "val": 50, "test": 50}
    total = len(c.train) + len(c.val) + len(c.test)
    assert total == brown.N_TOKENS + brown.N_SENTENCES
    assert int((c.train == 1).sum() + (c.val == 1).sum() + (c.test == 1).sum()) == 57340
    assert len(c.vocab) == 10000 and c.vocab.itos[2:5] == ("the", ",", ".")
    assert 0 < (c.val == 0).mean() < 0.15  # some <unk>, not a broken vocabulary
