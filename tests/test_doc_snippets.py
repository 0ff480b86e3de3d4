"""Every ```python block of README.md and docs/*.md runs on its own, as a reader would paste it.

Each block is written to a file in an empty directory and run with this interpreter. A block may
be preceded (on the line right before its fence) by a visible marker:

* ``<!-- snippet: torchrun N -->``: a multi-process script, run under
  ``python -m torch.distributed.run --standalone --nproc_per_node N`` (gloo on the loopback);
* ``<!-- snippet: skip REASON -->``: not run, and the reason is reported (keep these rare).

A block that imports an optional dependency (an extra: transformers, lightning, ...) that is not
installed is skipped, naming it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_ABORTED = "terminate called without an active exception"
_MARKER = re.compile(r"<!--\s*snippet:\s*(?P<how>torchrun\s+\d+|skip\s+\S.*?)\s*-->")
#: at most this many blocks may be skipped by a marker
MAX_SKIPS = 2


@dataclass(frozen=True)
class Snippet:
    doc: str
    line: int
    code: str
    marker: str | None  # "torchrun N", "skip REASON" or None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def collect() -> list[Snippet]:
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for m in _FENCE.finditer(text):
            before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = _MARKER.fullmatch(before.strip())
            out.append(Snippet(str(path.relative_to(ROOT)), text.count("\n", 0, m.start()) + 1,
                               m["code"], mark["how"] if mark else None))  # fmt: skip
    return out


SNIPPETS = collect()


def test_snippets_are_found_and_skips_are_rare() -> None:
    docs = {s.doc for s in SNIPPETS}
    assert {"README.md", "docs/usage.md", "docs/distributed.md", "docs/integrations.md"} <= docs
    skips = [s.id for s in SNIPPETS if s.marker and s.marker.startswith("skip")]
    assert len(skips) <= MAX_SKIPS, skips


def _missing_modules(code: str) -> list[str]:
    tree = ast.parse(code)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return sorted(n for n in names if importlib.util.find_spec(n) is None)


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_snippet_runs_on_its_own(snippet: Snippet, tmp_path: Path) -> None:
    if snippet.marker and snippet.marker.startswith("skip"):
        pytest.skip(f"{snippet.id}: marked `{snippet.marker}` in the doc")
    missing = _missing_modules(snippet.code)  # also: a syntax error fails here
    if missing:
        pytest.skip(f"{snippet.id} needs {', '.join(missing)}, not installed (an optional extra)")
    script = tmp_path / "snippet.py"
    script.write_text(snippet.code, encoding="utf-8")
    cmd = [sys.executable, str(script)]
    if snippet.marker:  # torchrun N
        nproc = snippet.marker.split()[1]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(script)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true"}  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    if snippet.marker and proc.returncode != 0 and _ABORTED in proc.stderr:
        # A rank aborted in C++ (std::terminate in a gloo/c10d thread), seen once under load with
        # the suite on two processes; the same script passed alone every time.  One rerun: a
        # Python error in the snippet exits with 1 and fails at once.
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{snippet.id} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
