"""The documentation site builds with warnings as errors (mkdocs.yml, docs/, the API reference)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs / mkdocstrings not installed (pip install -e '.[docs]')",
)


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ["index.html", "api/memoptim/index.html", "api/buffer/index.html", "usage/index.html"]:
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "api" / "memoptim" / "index.html").read_text()
    assert "memoptim.AdamCM" in api and "buffer_size" in api
