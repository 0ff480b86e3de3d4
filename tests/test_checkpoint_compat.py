"""State dicts written by an earlier version still load and continue exactly.

``tests/fixtures/checkpoints_v1.pt`` was written by ``tests/fixtures/make_checkpoints.py``
before the optimizers' internals were reshaped: for each case, the state dict after a few
steps, the parameters then, and the parameters after a further recorded continuation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import memoptim

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_checkpoints as M

RECORDED = torch.load(M.PATH, weights_only=False)


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_an_old_state_dict_loads_and_continues_bit_for_bit(case):
    name, foreach = case.split("|foreach=")
    registry_name, hyper = M.CASES[name]
    saved = RECORDED[case]
    params = [p.clone().requires_grad_() for p in saved["params"]]
    opt = memoptim.create_optimizer(registry_name, params, foreach=foreach == "True", **hyper)
    opt.load_state_dict(saved["state_dict"])
    for t in range(M.BEFORE, M.BEFORE + M.AFTER):
        M.step(opt, params, t)
    for p, want in zip(params, saved["continued"]):
        assert torch.equal(p.detach(), want), f"{case}: the continuation changed"


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_a_fresh_run_reproduces_the_recorded_trajectory(case):
    name, foreach = case.split("|foreach=")
    fresh = M.record(name, foreach == "True")
    for p, want in zip(fresh["continued"], RECORDED[case]["continued"]):
        assert torch.equal(p, want), f"{case}: today's optimizer no longer gives the recorded result"
