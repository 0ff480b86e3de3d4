"""benchmarks/step_time.py runs end to end and prints what docs/performance.md describes
(a smoke test at a tiny scale: no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_prints_paired_ratios_replacements_and_the_memory_bound():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--scale", "0.01", "--rounds", "2",
         "--steps", "1", "--warmup", "6", "--buffer-sizes", "2", "3",
         "--only", "torch Adam", "AdamCM fused", "AdamCG"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    lines = {line[:28].strip(): line[28:].split() for line in out.splitlines()}
    ms, ratio, span, *_, state, bound = lines["AdamCM fused C=2"]
    assert float(ms) > 0
    assert re.fullmatch(r"\d+\.\d\dx", ratio) and re.fullmatch(r"\d+\.\d\d-\d+\.\d\d", span)
    assert (state, bound) == ("20.0", "20")  # (C + 3) float32 copies: 5 x 4 bytes per parameter
    assert "AdamCM fused: C=3 / C=2 step time" in out
    assert "AdamCG C=3" in lines and "torch Adam (fused)" in lines
    # default against default: a row without a flag is paired with torch's default
    assert lines["AdamCG C=2"][3:6] == ["torch", "Adam", "(default)"]
    assert lines["AdamCG foreach C=2"][3:6] == ["torch", "Adam", "(fused)"] or \
        lines["AdamCG foreach C=2"][3:6] == ["torch", "Adam", "(foreach)"]
    assert "rows without a flag (defaults):" in out
