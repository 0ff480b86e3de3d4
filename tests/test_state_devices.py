"""State and devices: checkpoints of every path load into every other, the state holds tensors
and numbers only, the step reads nothing back from the device, complex parameters and groups
spanning devices or dtypes.

``tests/fixtures/checkpoints_v2.pt`` was written by ``tests/fixtures/make_checkpoints_v2.py``
before the state became tensor-only: raw native state with the pending-offer marker as a string,
``fused=True`` state dicts, random-policy runs and runs across the periodic resync.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_checkpoints_v2 as V2

RECORDED_V2 = torch.load(V2.PATH, weights_only=False)


def _native_or_skip(name: str) -> None:
    from memoptim.optim import native

    if V2.CASES[name][1].get("fused") and not native.available():
        pytest.skip("the native kernel cannot be built here")


@pytest.mark.parametrize("case", sorted(RECORDED_V2))
def test_a_v2_state_dict_loads_and_continues_bit_for_bit(case):
    _native_or_skip(case)
    _, _, before, after, _ = V2.CASES[case]
    saved = RECORDED_V2[case]
    params = [p.clone().requires_grad_() for p in saved["params"]]
    opt = V2.build(case, params)
    opt.load_state_dict(saved["state_dict"])
    for t in range(before, before + after):
        V2.gradient(params, t)
        opt.step()
    for p, want in zip(params, saved["continued"]):
        assert torch.equal(p.detach(), want), f"{case}: the continuation changed"


@pytest.mark.parametrize("case", sorted(RECORDED_V2))
def test_a_fresh_run_reproduces_the_v2_trajectory(case):
    _native_or_skip(case)
    fresh = V2.record(case)
    for p, want in zip(fresh["continued"], RECORDED_V2[case]["continued"]):
        assert torch.equal(p, want), f"{case}: today's optimizer no longer gives the recorded result"
