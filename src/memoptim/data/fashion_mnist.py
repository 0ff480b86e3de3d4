"""Fashion-MNIST (Xiao et al. 2017) from the Debian package ``dataset-fashion-mnist``.

The four original IDX files, gzip-compressed, are read with numpy only.  Their *uncompressed*
MD5 digests are pinned (Debian re-gzipped the files, so the ``.gz`` digests are not stable).

Splits.  The paper holds a validation set out of the CIFAR training set (40k/10k, its Table 6);
we do the same: the 60k training images are split into 50k train / 10k validation, stratified
(1,000 per class) by a fixed permutation that does not depend on the run's seed, and the
official 10k test set is kept untouched for a final, unselected estimate.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memoptim.data.paths import DatasetChecksumError, data_dir, md5_bytes, missing_error

DATASET = "fashion-mnist"
#: uncompressed MD5 of each file (original Zalando release, identical in the Debian package)
MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
#: where ``apt-get install dataset-fashion-mnist`` puts the files (searched after the data dir)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: published per-pixel statistics of the training set (pixel values scaled to [0, 1])
MEAN, STD = 0.2860, 0.3530
CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an (uncompressed) IDX buffer: magic ``00 00 <type> <ndim>``, ``ndim`` big-endian
    uint32 sizes, then the data in C order."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError("not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(raw) != offset + count * dtype.itemsize:
        raise ValueError(f"IDX size mismatch: header says {dims}, got {len(raw) - offset} bytes")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def encode_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` as an IDX buffer (the inverse of :func:`parse_idx`)."""
    arr = np.ascontiguousarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(arr.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"dtype {arr.dtype} has no IDX type code")
    big = arr.astype(np.dtype(_IDX_DTYPES[code]).newbyteorder(">"), copy=False)
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    return header + big.tobytes()


def write_idx_gz(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as a gzip-compressed IDX file (used to build small test fixtures)."""
    with gzip.open(path, "wb") as f:
        f.write(encode_idx(array))


@dataclass(frozen=True)
class FashionMNIST:
    """The raw arrays: images ``uint8 (N, 28, 28)``, labels ``int64 (N,)``."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    root: Path


def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Directory holding the four ``.gz`` files: ``root`` if given, else
    ``<data_dir>/fashion-mnist``, else the Debian system directory.  Raises
    :class:`~memoptim.data.paths.DatasetNotFoundError` naming the install command."""
    candidates = [Path(root)] if root is not None else [data_dir() / DATASET, SYSTEM_DIR]
    for cand in candidates:
        if all((cand / f"{name}.gz").is_file() for name in MD5):
            return cand
    raise missing_error(DATASET, candidates, given=root)


def load_fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    *,
    verify: bool = True,
    md5: dict[str, str] | None = None,
) -> FashionMNIST:
    """Load the four IDX files; with ``verify`` check each uncompressed MD5 against ``md5``
    (default: the pinned :data:`MD5`) and raise :class:`DatasetChecksumError` on mismatch."""
    base = find_root(root)
    expected = MD5 if md5 is None else md5
    arrays: dict[str, np.ndarray] = {}
    for name in MD5:
        with gzip.open(base / f"{name}.gz", "rb") as f:
            raw = f.read()
        if verify and md5_bytes(raw) != expected[name]:
            raise DatasetChecksumError(
                f"{base / (name + '.gz')}: uncompressed MD5 {md5_bytes(raw)} != {expected[name]}; "
                f"reinstall with `bash scripts/get_data.sh {DATASET}`"
            )
        arrays[name] = parse_idx(raw)
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(f"{split}: inconsistent shapes {images.shape} / {labels.shape}")
    return FashionMNIST(
        train_images=arrays["train-images-idx3-ubyte"],
        train_labels=arrays["train-labels-idx1-ubyte"].astype(np.int64),
        test_images=arrays["t10k-images-idx3-ubyte"],
        test_labels=arrays["t10k-labels-idx1-ubyte"].astype(np.int64),
        root=base,
    )


def stratified_split(
    labels: np.ndarray, val_fraction: float = 1 / 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, val_idx)``: from every class, ``round(n_c * val_fraction)``
    examples go to validation, chosen by one fixed permutation (``seed``).  Both index arrays
    are sorted, so the split does not depend on anything but ``labels`` and ``seed``."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    val_parts = []
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        val_parts.append(members[: round(len(members) * val_fraction)])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[val] = False
    return np.nonzero(mask)[0], val
