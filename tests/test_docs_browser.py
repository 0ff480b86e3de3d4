"""The built documentation site, checked offline in headless Chromium (scripts/check_docs_site.py):
every page loads without console errors, the bundled MathJax renders all math, internal links
resolve, wide code scrolls, and search finds "critical momenta"; requests to other hosts are
blocked. Needs Debian's chromium (`apt-get install -y chromium`) and the docs extra."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from check_docs_site import find_chromium  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no chromium on PATH: apt-get install -y chromium"),
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("playwright", "mkdocs", "mkdocstrings", "mathjax")),
        reason="the docs extra is not installed: pip install -e '.[docs]'",
    ),
]


def test_docs_site_in_a_headless_browser_offline() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_docs_site.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "docs site: OK" in out
    pages = int(out.split("checked ", 1)[1].split(" pages", 1)[0])
    assert pages >= 15, out
    hits = int(out.split("search 'critical momenta': ", 1)[1].split(" results", 1)[0])
    assert hits >= 1, out
