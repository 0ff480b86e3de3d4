"""Data-parallel training (``memoptim train --nproc 2``, DDP over gloo on CPU).

Two ranks each train on half of every global batch; the run must match a single process on the
same global batches.  Tolerance: the ranks sum their gradients, losses and batch-norm statistics
in a different order than one process does (float32), so parameters agree to ``rtol=1e-4,
atol=1e-5`` after a few Adam steps and the training loss to ``rtol=1e-5`` -- round-off only; a
wrong shard, loss weight or batch-norm statistic gives differences of order 1e-2 or more.
Batch size 25 on 96 examples makes the last batch (21) and the per-rank shares (13/12, 11/10)
uneven, which exercises the loss weighting.  The CLI test uses SGD: its random-pixel data give
gradient entries near zero, which Adam's normalised first steps would turn from round-off into
differences of order ``lr`` (a sign flip of ``g / sqrt(v)``), hiding real errors behind a loose
tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from memoptim.distributed import launch
from memoptim.experiments import tasks as T
from memoptim.experiments.train import read_metrics, train

ROOT = Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-4, "atol": 1e-5}
HP = {"lr": 1e-3, "buffer_size": 3}


def tiny_images() -> T.ClassificationTask:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (136,), generator=g)
    x = torch.randn(136, 1, 28, 28, generator=g) * 0.5 + y.view(-1, 1, 1, 1).float() - 1.5
    return T.ClassificationTask(x[:96], y[:96], x[96:], y[96:], width=4)


class Interrupted(Exception):
    pass


class Interrupt:
    """Raise (on every rank) at the ``at``-th loss evaluation of epoch ``epoch`` (1-based)."""

    def __init__(self, task: T.Task, epoch: int, at: int) -> None:
        self.task, self.epoch, self.at, self.calls, self.unit = task, epoch, at, 0, -1

    def __getattr__(self, name):
        return getattr(self.task, name)

    def train_batches(self, model, unit, epochs, seed, batch_size, shard=None):
        self.unit = unit
        return self.task.train_batches(model, unit, epochs, seed, batch_size, shard=shard)

    def loss(self, model, batch):
        if self.unit + 1 == self.epoch:
            self.calls += 1
            if self.calls == self.at:
                raise Interrupted
        return self.task.loss(model, batch)


def _run(task, out, resume=False):
    return train(task, "adam+cm", HP, 2, 0, out, resume, batch_size=25)


def _resume_worker(rank: int, world: int, root: str) -> None:
    _run(tiny_images(), f"{root}/straight")
    with pytest.raises(Interrupted):
        _run(Interrupt(tiny_images(), epoch=2, at=2), f"{root}/resumed")
    _run(tiny_images(), f"{root}/resumed", resume=True)


def _model(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)["model"]


def _without_time(lines):
    return [{k: v for k, v in d.items() if k not in ("time", "elapsed")} for d in lines]


def _assert_close_runs(dist_dir, single_dir) -> None:
    a, b = read_metrics(dist_dir), read_metrics(single_dir)
    assert [set(d) for d in a] == [set(d) for d in b]
    for da, db in zip(a, b, strict=True):
        assert da["train_loss"] == pytest.approx(db["train_loss"], rel=1e-5)
        assert da["val_loss"] == pytest.approx(db["val_loss"], rel=1e-4)
        assert da["val_accuracy"] == db["val_accuracy"] and da["lr"] == db["lr"]
    ma, mb = _model(dist_dir), _model(single_dir)
    assert ma.keys() == mb.keys()
    for k in ma:
        torch.testing.assert_close(ma[k], mb[k], **TOL, msg=k)


def test_two_ranks_match_one_process_and_resume(tmp_path):
    torch.set_num_threads(1)
    _run(tiny_images(), tmp_path / "single")
    launch(_resume_worker, 2, str(tmp_path), timeout=120)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # interrupted + resumed under 2 ranks == uninterrupted under 2 ranks, bit for bit
    assert _without_time(read_metrics(resumed)) == _without_time(read_metrics(straight))
    for k, v in _model(straight).items():
        assert torch.equal(v, _model(resumed)[k]), k
    # == one process on the same global batches, up to float32 round-off
    _assert_close_runs(straight, tmp_path / "single")
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["epochs_completed"] == 2
    assert not list(straight.glob(".*.tmp"))


def _cli(out, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "memoptim", "train", "--task", "fashion-mnist",
            "--optimizer", "sgd+cm", "--lr", "0.05", "--momentum", "0.9", "--buffer-size", "3",
            "--epochs", "2",
            "--subset", "40", "--batch-size", "15", "--no-verify", "--no-progress",
            "--out", str(out), *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_cli_nproc_2_runs_under_torchrun(tiny_data):
    single, dist = tiny_data / "single", tiny_data / "dist"
    assert _cli(single, "--threads", "1").returncode == 0
    res = _cli(dist, "--nproc", "2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("run directory:") == 1  # only rank 0 reports
    _assert_close_runs(dist, single)
    cfg = json.loads((dist / "config.json").read_text())
    assert cfg == json.loads((single / "config.json").read_text())
    # a finished run resumes to its summary on both ranks; the files are left as they were
    before = (dist / "metrics.jsonl").read_bytes()
    res = _cli(dist, "--nproc", "2", "--resume")
    assert res.returncode == 0, res.stderr
    assert (dist / "metrics.jsonl").read_bytes() == before
