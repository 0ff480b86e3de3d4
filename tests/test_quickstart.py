"""The README's Quick start leaves a fresh clone clean: `memoptim reproduce toy` writes to a
git-ignored directory by default, and the committed ``results/toy`` changes only on request."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memoptim.cli import reproduce

ROOT = Path(__file__).resolve().parents[1]


def test_toy_default_output_is_git_ignored() -> None:
    out = reproduce.DEFAULT_OUT["toy"]
    assert not out.startswith("results/")
    ignored = subprocess.run(["git", "check-ignore", "-q", f"{out}/report.md"], cwd=ROOT)
    assert ignored.returncode == 0, f"{out} is not git-ignored"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                    reason="needs git and a git checkout")  # fmt: skip
@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None
                    or importlib.util.find_spec("scipy") is None,
                    reason="the toy reproduction needs the lab extra (matplotlib, scipy)")  # fmt: skip
def test_quick_start_in_a_fresh_clone_leaves_git_status_clean(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    committed = (clone / "results" / "toy" / "report.md").read_bytes()
    # the clone's own code (not the editable install's), run as the Quick start runs it
    env = {**os.environ, "PYTHONPATH": str(clone / "src"), "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, "-m", "memoptim", "reproduce", "toy", "--quick", "--no-progress"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "report: runs/toy/report.md" in proc.stdout
    assert (clone / "runs" / "toy" / "report.md").is_file()
    assert (clone / "results" / "toy" / "report.md").read_bytes() == committed
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert status == "", status
