"""``memoptim rerun``: a finished run trained again from its config.json is bit-identical, and the
comparison catches any difference but the timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from memoptim.experiments.rerun import compare_runs, rerun
from memoptim.experiments.train import train


def _tiny_run(root, monkeypatch, name="orig"):
    """A finished run made as the study makes them: one thread, the multi-tensor path."""
    import torch

    out = root / name
    threads = torch.get_num_threads()
    monkeypatch.setenv("MEMOPTIM_NATIVE", "0")
    torch.set_num_threads(1)
    try:
        train("fashion-mnist", "adam+cm", {"lr": 1e-2, "buffer_size": 3}, 2, 1, out, subset=20,
              eval_subset=10, batch_size=10, verify_data=False, keep_checkpoint=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_rerun_of_a_tiny_run_is_identical_and_a_changed_metric_is_caught(tiny_data, monkeypatch):
    orig = _tiny_run(tiny_data, monkeypatch)
    assert rerun(orig, tiny_data / "again", verify_data=False) == []
    again = tiny_data / "again"
    lines = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    lines[1]["val_loss"] = float(lines[1]["val_loss"]) * (1 + 2**-50)  # one bit off
    lines[0]["time"] = 1e9  # timings are not compared
    (again / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    diffs = compare_runs(orig, again)
    assert len(diffs) == 1 and diffs[0].startswith("metrics.jsonl epoch 2: val_loss")


def test_rerun_cli_reports_identical_and_refuses_a_used_directory(tiny_data, monkeypatch):
    orig = _tiny_run(tiny_data, monkeypatch)
    env = {**os.environ, "MEMOPTIM_DATA": str(tiny_data / "data")}
    cmd = [sys.executable, "-m", "memoptim", "rerun", str(orig), "--no-verify", "--out"]
    proc = subprocess.run([*cmd, str(tiny_data / "copy")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "is identical to" in proc.stdout and "2 epochs" in proc.stdout
    used = subprocess.run([*cmd, str(orig)], capture_output=True, text=True, env=env)
    assert used.returncode == 2 and len(used.stderr.strip().splitlines()) == 1
    assert "already holds a run" in used.stderr
