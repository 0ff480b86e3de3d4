"""Fashion-MNIST loader: IDX format, checksum pinning, missing-data message, split; real files."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from memoptim.data import fashion_mnist as fm
from memoptim.data.paths import DatasetChecksumError, DatasetNotFoundError


def _idx_bytes(arr: np.ndarray) -> bytes:
    """Independent IDX encoder for uint8 arrays (struct, not the module under test)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_tiny(root: Path, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 5, dtype=np.uint8),
    }
    md5 = {}
    root.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        raw = _idx_bytes(arr)
        md5[name] = hashlib.md5(raw).hexdigest()
        with gzip.open(root / f"{name}.gz", "wb") as f:
            f.write(raw)
    return arrays, md5


def test_idx_parse_and_encode_match_independent_encoder():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = _idx_bytes(arr)
    assert fm.encode_idx(arr) == raw
    out = fm.parse_idx(raw)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, arr)
    # a wider type round-trips through big-endian storage
    ints = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    raw32 = struct.pack(">BBBB2I", 0, 0, 0x0C, 2, 2, 2) + ints.astype(">i4").tobytes()
    assert fm.encode_idx(ints) == raw32
    np.testing.assert_array_equal(fm.parse_idx(raw32), ints)


def test_idx_rejects_bad_magic_and_truncation():
    raw = _idx_bytes(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match="magic"):
        fm.parse_idx(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="size mismatch"):
        fm.parse_idx(raw[:-1])


def test_load_tiny_files_with_their_checksums(tmp_path):
    arrays, md5 = _write_tiny(tmp_path)
    data = fm.load_fashion_mnist(tmp_path, md5=md5)
    np.testing.assert_array_equal(data.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.train_labels, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(data.test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(data.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert data.train_labels.dtype == np.int64
    # the pinned (real) digests do not match generated data: verification is really on
    with pytest.raises(DatasetChecksumError, match="MD5"):
        fm.load_fashion_mnist(tmp_path)
    assert fm.load_fashion_mnist(tmp_path, verify=False).train_images.shape == (12, 28, 28)


def test_one_changed_pixel_fails_the_checksum(tmp_path):
    arrays, md5 = _write_tiny(tmp_path)
    img = arrays["t10k-images-idx3-ubyte"].copy()
    img[4, 27, 27] ^= 1
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_bytes(img))
    with pytest.raises(DatasetChecksumError, match="t10k-images"):
        fm.load_fashion_mnist(tmp_path, md5=md5)


def test_missing_dataset_error_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "no-system-copy")
    with pytest.raises(DatasetNotFoundError) as err:
        fm.load_fashion_mnist()
    msg = str(err.value)
    assert f"MEMOPTIM_DATA={tmp_path / 'nowhere'} bash scripts/get_data.sh fashion-mnist" in msg
    assert str(tmp_path / "nowhere" / "fashion-mnist") in msg


def test_data_dir_default_and_env(tmp_path, monkeypatch):
    from memoptim.data.paths import data_dir

    monkeypatch.delenv("MEMOPTIM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "cache" / "memoptim" / "data"
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "d"))
    assert data_dir() == tmp_path / "d"


def test_stratified_split_is_exact_disjoint_and_deterministic():
    labels = np.repeat(np.arange(4), [6, 12, 18, 24])
    np.random.default_rng(1).shuffle(labels)
    tr, va = fm.stratified_split(labels, val_fraction=1 / 6, seed=0)
    assert np.bincount(labels[va], minlength=4).tolist() == [1, 2, 3, 4]
    assert len(np.intersect1d(tr, va)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(labels)))
    tr2, va2 = fm.stratified_split(labels, val_fraction=1 / 6, seed=0)
    np.testing.assert_array_equal(va, va2)
    np.testing.assert_array_equal(tr, tr2)
    assert not np.array_equal(va, fm.stratified_split(labels, 1 / 6, seed=1)[1])


def _real_root() -> Path | None:
    try:
        return fm.find_root()
    except DatasetNotFoundError:
        return None


@pytest.mark.skipif(
    _real_root() is None,
    reason="real Fashion-MNIST not installed: run `bash scripts/get_data.sh fashion-mnist`",
)
def test_real_fashion_mnist_files():
    data = fm.load_fashion_mnist()  # verifies the four pinned MD5s
    assert data.train_images.shape == (60000, 28, 28)
    assert data.test_images.shape == (10000, 28, 28)
    assert np.bincount(data.train_labels).tolist() == [6000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    x = data.train_images.astype(np.float64) / 255.0
    assert abs(x.mean() - fm.MEAN) < 1e-4 and abs(x.std() - fm.STD) < 1e-4
    tr, va = fm.stratified_split(data.train_labels)
    assert (len(tr), len(va)) == (50000, 10000)
    assert np.bincount(data.train_labels[va]).tolist() == [1000] * 10
