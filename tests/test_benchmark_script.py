"""benchmarks/step_time.py runs end to end and prints what docs/performance.md describes
(a smoke test at a tiny scale: no timing is asserted)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_prints_paired_ratios_replacements_and_the_memory_bound():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--scale", "0.01", "--rounds", "2",
         "--steps", "1", "--warmup", "6", "--buffer-sizes", "2", "3",
         "--only", "torch Adam", "AdamCM fused", "AdamCG", "--memory", "off"],
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


def _script():
    spec = importlib.util.spec_from_file_location("step_time", ROOT / "benchmarks" / "step_time.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("step_time", module)  # dataclasses look their module up there
    spec.loader.exec_module(sys.modules["step_time"])
    return sys.modules["step_time"]


def test_tiny_cpu_run_prints_peak_memory_and_ratios_to_both_fixed_torch_baselines():
    """Plumbing on a 2-tensor model, 2 timed steps: the peak memory column (each row in a fresh
    process), the compiled torch Adam row, and the table against torch's fused and compiled Adam."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--device", "cpu", "--tensors", "2",
         "--scale", "0.01", "--rounds", "1", "--steps", "2", "--warmup", "2", "--buffer-sizes", "2",
         "--only", "torch Adam (fused)", "AdamCM fused C", "compiled torch"],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    assert out.startswith("2 tensors,") and "device: cpu" in out
    assert "peak memory: each of the 3 rows in a fresh process" in out
    assert "first step of compiled torch Adam (compiles):" in out
    header = next(line for line in out.splitlines() if line.startswith("optimizer") and "peak MiB" in line)
    assert header.split()[-4:] == ["MiB", "state", "B/param", "bound"]
    lines = {line[:28].strip(): line[28:].split() for line in out.splitlines()}
    ms, ratio, _, *_, peak, state, bound = lines["AdamCM fused C=2"]
    assert float(ms) > 0 and re.fullmatch(r"\d+\.\d\dx", ratio) and float(peak) >= 0
    assert bound == "20" and 20.0 <= float(state) < 21.0  # + a few scalars per tensor on a tiny model
    assert lines["AdamCM fused C=2"][3:6] == ["torch", "Adam", "(fused)"]
    assert len(lines["compiled torch Adam"]) == 3  # ms/step, peak MiB, state B/param
    fixed = out.split("Adam-family rows over fixed torch baselines")[1].splitlines()[1:]
    assert fixed == [f"AdamCM fused C=2: {a} torch Adam (fused); {b} compiled torch Adam"
                     for a, b in re.findall(r"C=2: (\d+\.\d\dx) .*; (\d+\.\d\dx) ", fixed[0])]


def test_rows_baselines_and_names_of_the_compiled_pair():
    st = _script()
    names = st.row_names([5, 20], None)
    assert "compiled torch Adam" in names and "compiled AdamCM C=5" in names
    assert "compiled AdamCM C=20" not in names  # the A/B rows: first buffer size only
    assert st.row_names([5], ["torch Adam"]) == ["torch Adam (default)", "torch Adam (fused)",
                                                 "torch Adam (foreach)"]
    med = {"torch Adam (fused)": 2.0, "torch Adam (foreach)": 1.0, "compiled torch Adam": 9.0}
    assert st.baseline("compiled AdamCM C=5", med) == "compiled torch Adam"
    assert st.baseline("AdamCM fused C=5", med) == "torch Adam (foreach)"  # the fastest counterpart
    assert st.baseline("AdamCM C=5", med) == "torch Adam (default)"
    assert st.baseline("compiled torch Adam", med) is None
    assert [st.optimizer_name(x) for x in ("compiled AdamCM C=5", "AdamCM fused two-pass C=5",
                                           "AdaMomentum foreach", "compiled torch Adam")] == \
        ["AdamCM", "AdamCM", "AdaMomentum", "torch Adam"]
    assert st.resnet_like_shapes(0.01, tensors=3) == st.resnet_like_shapes(0.01)[:3]


def test_peak_increase_sees_a_block_allocation_on_cpu():
    st = _script()
    with st.peak_increase("cpu") as peak:
        x = torch.ones(16 * 2**20 // 4)  # 16 MiB, written: resident
        del x
    assert peak.measured and 15 * 2**20 <= peak.bytes < 64 * 2**20
    with st.peak_increase("cpu", enabled=False) as off:
        pass
    assert not off.measured


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_increase_on_cuda_is_the_allocator_peak():
    st = _script()
    with st.peak_increase("cuda") as peak:
        x = torch.ones(2**20, device="cuda")  # 4 MiB
        del x
    assert peak.bytes == 4 * 2**20
