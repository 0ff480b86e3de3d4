"""Grid sweeps: grids, every (config, seed) trained once, resume after an interrupted sweep."""

from __future__ import annotations

import json

import pytest
import torch

from memoptim.experiments import sweep as S
from memoptim.experiments import train as train_module
from memoptim.experiments.paper import TABLE8_PARAMS


def test_grids():
    paper = S.grid_for("adam+sam+cm", "paper")
    assert S.grid_size(paper) == 4 * 3 * 3 * 2 * 2 * 3  # Table 8 over lr, b1, b2, C, lambda, rho
    assert S.grid_for("adam", "paper") == {"lr": [0.1, 0.01, 0.001, 0.0001]}
    assert S.grid_for("sgd+cm", "paper")["momentum"] == [0.9]
    cpu = S.grid_for("adam+cm", "cpu")
    assert cpu == {"lr": [0.001, 0.0001], "beta2": [0.999], "buffer_size": [5], "decay": [0.7]}
    assert S.grid_for("sgd", "cpu") == {"lr": [0.1, 0.01], "momentum": [0.9]}
    assert S.grid_for("lion+cm", "cpu") == {"lr": [0.0001, 0.00001], "beta2": [0.99], "buffer_size": [5],
                                            "decay": [0.7]}
    for opt in TABLE8_PARAMS:  # every registered optimizer's grids build it (the registry's names)
        for grid in ("cpu", "paper"):
            space = S.grid_for(opt, grid)
            assert set(space) <= set(train_module.HYPERPARAMETERS)
            point = {k: v[0] for k, v in space.items()}
            train_module.build_optimizer(opt, [torch.zeros(2, requires_grad=True)], point)
    with pytest.raises(ValueError, match="no grid"):
        S.grid_for("nadam")
    assert S.hp_slug({"lr": 0.001, "beta2": 0.999}) == "beta2=0.999,lr=0.001"


def _sweep(out, **kw):
    return S.sweep(
        "fashion-mnist", ["adam", "adam+cm"], out=out, epochs=1, seeds=[0, 1],
        overrides={"lr": [1e-3, 1e-2]},
        train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10}, log=lambda m: None,
        **kw,
    )  # fmt: skip


def test_sweep_interrupted_then_resumed_runs_each_point_once(tiny_data, monkeypatch):
    out = tiny_data / "sweep"
    calls: list[str] = []
    real_train = train_module.train

    def spy(*args, **kwargs):
        calls.append(str(args[5]))
        if len(calls) == 3 and stop["on"]:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)

    stop = {"on": True}
    monkeypatch.setattr(train_module, "train", spy)
    with pytest.raises(KeyboardInterrupt):
        _sweep(out)
    first = set(calls[:2])
    assert len(first) == 2
    stop["on"] = False
    calls.clear()
    res = _sweep(out)
    # the 2 finished adam points are skipped; the interrupted one and the rest run now
    assert not first & set(calls)
    assert len(calls) == 8 - 2
    assert res["adam"]["complete"] == res["adam"]["grid_size"] == 4
    assert res["adam+cm"]["complete"] == 4
    runs = sorted((out / "fashion-mnist").glob("*/*/seed*/summary.json"))
    assert len(runs) == 8
    cfg = json.loads(runs[0].read_text())["config"]
    assert cfg["subset"] == 20 and cfg["epochs"] == 1
    # a third call has nothing left to do
    calls.clear()
    _sweep(out)
    assert calls == []


WORKER = """
import sys, torch
torch.set_num_threads(1)
from memoptim.experiments.sweep import sweep
sweep("fashion-mnist", ["adam", "sgd"], out=sys.argv[1], epochs=2, seeds=[0, 1, 2],
      train_kwargs={"verify_data": False, "subset": 20, "batch_size": 10}, log=lambda m: None)
"""


def test_two_worker_processes_share_one_sweep(tiny_data):
    """Two processes on one SQLite storage: every grid point
    is trained exactly once, by one of them."""
    import os
    import subprocess
    import sys

    out = tiny_data / "shared"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(out)], env=env) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = list(out.glob("fashion-mnist/*/*/seed*"))
    assert len(runs) == 2 * 2 * 3  # (adam, sgd) x 2 lr x 3 seeds
    for r in runs:  # trained once: exactly one line per epoch, a summary
        assert len((r / "metrics.jsonl").read_text().splitlines()) == 2
        assert json.loads((r / "summary.json").read_text())["status"] == "complete"
