"""State and devices: checkpoints of every path load into every other, the state holds tensors
and numbers only, the step reads nothing back from the device, complex parameters and groups
spanning devices or dtypes.

``tests/fixtures/checkpoints_v2.pt`` was written by ``tests/fixtures/make_checkpoints_v2.py``
before the state became tensor-only: raw native state with the pending-offer marker as a string,
``fused=True`` state dicts, random-policy runs and runs across the periodic resync.
"""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path

import pytest
import torch

import memoptim
from memoptim import SGDCM, AdamCM
from memoptim.buffer import PENDING_KEYS, RESYNC_INTERVAL
from memoptim.optim import driver
from memoptim.policy import device_draw, replacement_draw
from memoptim.registry import REGISTRY

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


# ------------------------------------------------------------------ no host reads in step()

PATHS = {"default": {}, "foreach": {"foreach": True}, "per-tensor": {"foreach": False}}


def _is_memoptim(opt: torch.optim.Optimizer) -> bool:
    return type(opt).__module__.startswith("memoptim")


def _run(name: str, params: list[torch.Tensor], steps: int, grads, **kw) -> torch.optim.Optimizer:
    opt = memoptim.create_optimizer(name, params, **kw)
    for t in range(steps):
        for p, g in zip(params, grads(t)):
            p.grad = g
        if REGISTRY[name].sam:
            opt.step(lambda: torch.zeros((), device=params[0].device))
        else:
            opt.step()
    return opt


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(REGISTRY))
def test_five_steps_on_the_meta_device_read_nothing_back(name, path):
    # A meta tensor holds no data: .item(), int(t), bool(t) or a branch on a value raise there.
    if REGISTRY[name].sam and path != "default":
        pytest.skip("SAM takes its base's path")
    params = [torch.randn(4, 3, device="meta", requires_grad=True),
              torch.randn(3, device="meta", requires_grad=True)]
    opt = _run(name, params, 5, lambda t: [torch.ones_like(p) for p in params], **PATHS[path])
    base = getattr(opt, "base_optimizer", opt)
    if _is_memoptim(base):
        for p in params:
            state = base.state[p]
            assert state["step"].device.type == "meta"  # capturable: the counter lives with p
            assert all(v.device.type == "meta" for v in state.values() if isinstance(v, torch.Tensor))


# ------------------------------------------------------------------ the periodic resync on the device
@pytest.mark.parametrize("name,kw", [("adam+cm", {"foreach": True}), ("sgd+cg", {"foreach": False}),
                                     ("lion+cm", {"foreach": True}), ("adam+cm-random", {"foreach": True})])
def test_the_resync_decided_on_the_device_is_bit_identical(name, kw, monkeypatch):
    gen = torch.Generator().manual_seed(5)
    noise = [torch.randn(3, 2, generator=gen) for _ in range(RESYNC_INTERVAL + 8)]

    def run() -> list[torch.Tensor]:
        params = [torch.ones(3, 2, requires_grad=True)]
        _run(name, params, RESYNC_INTERVAL + 8, lambda t: [noise[t] * (1 + t % 7)], lr=1e-3,
             buffer_size=3, **kw)
        return [p.detach().clone() for p in params]

    host = run()
    calls = []
    real = driver.CriticalBuffer.resync_where

    def counted(self, due):
        calls.append(due)
        real(self, due)

    monkeypatch.setattr(driver, "on_device", lambda values: True)  # the decision the device makes
    monkeypatch.setattr(driver.CriticalBuffer, "resync_where", counted)
    device = run()
    assert len(calls) == RESYNC_INTERVAL + 8 and sum(bool(c) for c in calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(host, device))


# ------------------------------------------------------------------ the random policy on the device
def test_device_draws_are_a_pure_function_of_seed_and_step_with_the_right_rates():
    steps = torch.arange(20000, dtype=torch.float32)
    accept, slot = device_draw(7, steps, 5, 0.3)
    again, slot2 = device_draw(7, steps.clone(), 5, 0.3)
    assert torch.equal(accept, again) and torch.equal(slot, slot2)
    assert abs(accept.double().mean().item() - 0.3) < 0.015
    assert torch.bincount(slot, minlength=5).min() > 0.18 * len(steps)
    other, _ = device_draw(8, steps, 5, 0.3)
    assert not torch.equal(accept, other)  # the seed matters
    assert device_draw(0, steps, 5, 1.0)[0].all() and not device_draw(0, steps, 5, 0.0)[0].any()
    # the CPU keeps its host draws (earlier runs resume exactly), here through the offer
    assert replacement_draw(3, 10, 2, 0.5) == replacement_draw(3, 10, 2, 0.5)


# ------------------------------------------------------------------ tensor-only state
@pytest.mark.parametrize("cls", [AdamCM, SGDCM])
def test_state_holds_tensors_and_plain_numbers_only_also_with_a_deferred_offer(cls):
    from memoptim.optim import native

    if not native.available():
        pytest.skip("the native kernel cannot be built here")
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = cls(params, lr=1e-2, buffer_size=3, fused=True)
    for t in range(4):
        V2.gradient(params, t)
        opt.step()
    assert all(PENDING_KEYS[0] in opt.state[p] for p in params)  # the one-pass path deferred
    for st in opt.state.values():
        assert all(isinstance(v, (torch.Tensor, int, float)) for v in st.values()), st
    # the raw state (no offer completed) round-trips through weights_only and continues exactly
    raw = copy.deepcopy(torch.optim.Optimizer.state_dict(opt))
    ref = copy.deepcopy(opt)
    twin = [p.detach().clone().requires_grad_() for p in params]
    loaded = cls(twin, lr=1e-2, buffer_size=3, fused=True)
    buf = io.BytesIO()
    torch.save(raw, buf)
    buf.seek(0)
    loaded.load_state_dict(torch.load(buf, weights_only=True))
    ref_params = [p for g in ref.param_groups for p in g["params"]]
    for t in range(4, 9):
        V2.gradient(ref_params, t)
        ref.step()
        V2.gradient(twin, t)
        loaded.step()
    assert all(torch.equal(a, b) for a, b in zip(ref_params, twin))
