"""Shared pytest configuration.

* Makes ``tests/`` importable (``from reference import ...``) whatever pytest's import mode.
* Registers a deterministic, CI-friendly hypothesis profile (no deadline, derandomized so a
  CI run is reproducible); select another with ``HYPOTHESIS_PROFILE=<name>``.
* ``device``: a test taking it runs on ``cpu`` always and on ``cuda`` where
  ``torch.cuda.is_available()`` (skipped elsewhere); ``cuda_device`` runs on CUDA only.  Both
  carry the ``cuda`` marker on CUDA, so ``pytest -m cuda`` selects exactly the GPU runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_NO_CUDA = "needs CUDA: torch.cuda.is_available() is False on this machine"
_CUDA = pytest.param("cuda", marks=[pytest.mark.cuda,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason=_NO_CUDA)])


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: runs on a CUDA device (skipped where there is none)")


@pytest.fixture(params=["cpu", _CUDA])
def device(request) -> torch.device:
    """The device a device-parametrised test runs on: ``cpu``, and ``cuda`` where available."""
    return torch.device(request.param)


@pytest.fixture(params=[_CUDA])
def cuda_device(request) -> torch.device:
    """CUDA only: the test is skipped where ``torch.cuda.is_available()`` is false."""
    return torch.device(request.param)


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    """A 60-image Fashion-MNIST stand-in in the real IDX format, found via ``MEMOPTIM_DATA``."""
    import numpy as np

    from memoptim.data import fashion_mnist as fm

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 6).astype(np.uint8)
    images = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    root = tmp_path / "data" / "fashion-mnist"
    root.mkdir(parents=True)
    for split, n in (("train", 60), ("t10k", 10)):
        fm.write_idx_gz(root / f"{split}-images-idx3-ubyte.gz", images[:n])
        fm.write_idx_gz(root / f"{split}-labels-idx1-ubyte.gz", labels[:n])
    monkeypatch.setenv("MEMOPTIM_DATA", str(tmp_path / "data"))
    return tmp_path
