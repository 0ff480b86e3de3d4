"""The torch.compile path of ``fused=True`` (what accelerators and the tensors the native CPU
kernel does not handle get): same numbers as the reference, no data-dependent branch.

Every test here switches the native kernel off (``MEMOPTIM_NATIVE=0``) so that the compiled
rule is what runs; the native kernel has its own tests in ``test_native.py``."""

from __future__ import annotations

import pytest
import torch

import memoptim
from memoptim.optim import functional as F
from test_equivalence import GRID_SHAPES, run_equivalence


@pytest.fixture(autouse=True)
def compiled_path(monkeypatch):
    monkeypatch.setenv("MEMOPTIM_NATIVE", "0")


# One config per rule exercising most features at once (two groups with different
# priority modes, weight decay, amsgrad/maximize/momentum): each config compiles anew.
CONFIGS = {
    "AdamCM": ({"lr": 0.02, "weight_decay": 0.1, "amsgrad": True},
               [{}, {"priority": "tensor", "maximize": True, "buffer_size": 2}]),
    "AdamCG": ({"lr": 0.02, "weight_decay": 0.1, "decoupled_weight_decay": False},
               [{}, {"priority": "tensor", "decay": 0.5}]),
    "SGDCM": ({"lr": 0.01, "weight_decay": 0.05, "dampening": 0.1},
              [{}, {"priority": "tensor", "momentum": 0.0}]),
    "SGDCG": ({"lr": 0.01, "momentum": 0.9},
              [{}, {"priority": "tensor", "maximize": True}]),
    "AdaMomentum": ({"lr": 0.02, "amsgrad": True, "weight_decay": 0.1}, [{}, {"lr": 0.01}]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_matches_reference_float64(name):
    hyper, overrides = CONFIGS[name]
    run_equivalence(name, GRID_SHAPES, {**hyper, "fused": True}, overrides, seed=5, steps=30)


def test_fused_float32_follows_foreach():
    torch.manual_seed(0)
    a = [torch.randn(8, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    b = [p.detach().clone().requires_grad_(True) for p in a]
    fused = memoptim.AdamCM(a, lr=1e-2, fused=True)
    eager = memoptim.AdamCM(b, lr=1e-2, foreach=True)
    g = torch.Generator().manual_seed(1)
    for t in range(30):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=g) * (1 + t % 4)
            q.grad = p.grad.clone()
        fused.step()
        eager.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_lr_schedule_does_not_recompile():
    p = torch.randn(6, dtype=torch.float64, requires_grad=True)
    opt = memoptim.AdamCG([p], lr=0.1, fused=True)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5)
    for _ in range(2):  # compile
        p.grad = torch.randn(6, dtype=torch.float64)
        opt.step()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            p.grad = torch.randn(6, dtype=torch.float64)
            opt.step()
            sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)


def test_fullgraph_refuses_data_dependent_branching():
    """The proof is meaningful: fullgraph=True does reject a Python branch on tensor data,
    and compiles the update rules (built with fullgraph=True) without one."""

    def branchy(x):
        if x.sum() > 0:  # data-dependent: needs the value on the host
            return x * 2
        return x

    with pytest.raises(Exception, match=r"(?i)data-dependent|graph break|Dynamic control flow"):
        torch.compile(branchy, fullgraph=True)(torch.ones(3))

    p = torch.randn(3, requires_grad=True)
    opt = memoptim.AdamCM([p], fused=True, buffer_size=2)
    for _ in range(4):  # the buffer fills, then the insert/replace path is exercised
        p.grad = torch.randn(3)
        opt.step()
    assert memoptim.CriticalBuffer.from_state(opt.state[p]).filled == 2
    assert F.compiled(F.adam_cm) is F.compiled(F.adam_cm)


def test_fused_and_foreach_together_is_refused():
    with pytest.raises(ValueError, match="fused"):
        memoptim.AdamCM([torch.randn(2, requires_grad=True)], fused=True, foreach=True)


def test_changing_gradient_sets_fall_back_to_eager_at_the_recompile_limit(monkeypatch):
    # Every new set of tensors with gradients is a new graph; with fullgraph=True torch would
    # fail hard once the recompile limit is hit.  The rule then runs eagerly, with the same numbers.
    import itertools

    monkeypatch.setattr(F, "_COMPILED", {})  # fresh compiled rules, counting from zero
    ps = [torch.zeros(n, dtype=torch.float64, requires_grad=True) for n in (2, 3, 4)]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    fused = memoptim.AdamCM(ps, lr=0.1, fused=True)
    eager = memoptim.AdamCM(qs, lr=0.1, foreach=False)
    subsets = list(itertools.chain(*(itertools.combinations(range(3), k) for k in (1, 2, 3))))
    with torch._dynamo.config.patch(recompile_limit=2), pytest.warns(RuntimeWarning, match="recompile limit"):
        for step, subset in enumerate(subsets * 2):
            for i, (p, q) in enumerate(zip(ps, qs)):
                g = torch.full_like(p, 1.0 + step) if i in subset else None
                p.grad, q.grad = g, None if g is None else g.clone()
            fused.step()
            eager.step()
    for p, q in zip(ps, qs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
