"""scripts/gpu_check.sh, the one command a GPU owner runs: without CUDA it says so in one line
and exits 2; its steps select the cuda cases of the device tests and the benchmark's ratios
(checked through --dry-run: the steps themselves run on a GPU)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env})


def test_without_cuda_it_says_so_in_one_line_and_exits_2():
    done = _run(CUDA_VISIBLE_DEVICES="")  # no device visible, whatever the machine has
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--device cpu" in lines[0]


def _steps(*args: str) -> dict[str, str]:
    done = _run("--dry-run", *args)
    assert done.returncode == 0, done.stderr
    return {line[:12].strip(): line[12:] for line in done.stdout.splitlines()}


def test_on_cuda_the_steps_run_the_cuda_cases_and_the_benchmark_ratios():
    steps = _steps()
    assert list(steps) == ["equivalence", "checkpoints", "no sync", "cuda graph", "benchmark"]
    limits = [int(cmd.split()[0].rstrip("s")) for cmd in steps.values()]
    assert sum(limits) < 300  # the whole check ends within 5 minutes
    for name in ("equivalence", "checkpoints", "no sync", "cuda graph"):
        assert "'-m' 'cuda'" in steps[name] and "'pytest'" in steps[name]
    assert "tests/test_equivalence.py" in steps["equivalence"] and "tests/test_cuda.py" in steps["equivalence"]
    assert "tests/test_device.py" in steps["checkpoints"]
    assert "host_sync" in steps["no sync"] and "captured" in steps["cuda graph"]
    bench = steps["benchmark"]
    assert "benchmarks/step_time.py' '--device' 'cuda'" in bench
    assert "'torch Adam (fused)'" in bench and "'compiled'" in bench


def test_cpu_runs_the_cpu_cases_and_a_usage_error_is_refused():
    steps = _steps("--device", "cpu")
    assert all("'-m' 'not cuda'" in steps[n] for n in ("equivalence", "checkpoints", "no sync"))
    assert "'--device' 'cpu'" in steps["benchmark"]
    quick = _steps("--device", "cpu", "--quick")
    assert "'--tensors' '2'" in quick["benchmark"]
    assert _run("--device", "tpu").returncode == 64
    assert _run("--frobnicate").returncode == 64


@pytest.mark.slow
def test_every_cuda_step_selects_the_tests_it_names():
    """Each pytest step of the CUDA check, collected here: a typo in a selection would leave a
    GPU owner with a step that runs nothing."""
    expected = {"equivalence": 66, "checkpoints": 45, "no sync": 22, "cuda graph": 5}
    for name, line in _steps().items():
        if name not in expected:
            continue
        cmd = shlex.split(line.split("s  ", 1)[1])
        done = subprocess.run([*cmd, "--collect-only"], capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
        found = re.search(r"(\d+)(?:/\d+)? tests? collected", done.stdout)
        assert found, (name, done.stdout[-500:], done.stderr[-500:])
        assert int(found.group(1)) >= expected[name], (name, found.group(0))
