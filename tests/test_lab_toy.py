"""Batched toy runs are exactly the runs made one at a time (independence), and the LR schedule."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from memoptim import create_optimizer
from memoptim.lab.surfaces import ackley, goldstein_price, sharp_flat
from memoptim.lab.toy import run_toy

D64 = torch.float64
HP = {
    "adam": {"lr": 0.1, "betas": (0.9, 0.99)},
    "adam+cm": {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 4, "decay": 0.9},
    "adam+cg": {"lr": 0.1, "betas": (0.9, 0.99), "buffer_size": 4, "decay": 0.7},
    "adam+sam": {"lr": 0.1, "betas": (0.9, 0.99), "rho": 0.05},
    "adam+sam+cm": {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 4, "decay": 0.9,
                    "rho": 0.05},
}


def _starts(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=D64) * 4 - 2


@pytest.mark.parametrize("name", list(HP))
def test_batch_equals_runs_made_alone(name):
    x0 = _starts()
    batch = run_toy(ackley, x0, name, HP[name], steps=60, lr_drop_at=30)
    assert batch.trajectory.shape == (61, 5, 2) and batch.losses.shape == (61, 5)
    for i in range(5):
        alone = run_toy(ackley, x0[i:i + 1], name, HP[name], steps=60, lr_drop_at=30)
        assert torch.allclose(batch.trajectory[:, i], alone.trajectory[:, 0], rtol=0, atol=1e-12)
    assert torch.equal(batch.losses, ackley(batch.trajectory))


def test_runs_sharing_one_tensor_would_not_be_independent():
    # Negative control for the test above: one (N, 2) tensor gives all runs one buffer decision,
    # so the batched trajectory of a run differs from its solo run.
    x0 = _starts()
    p = torch.nn.Parameter(x0.clone())
    opt = create_optimizer("adam+cm", [p], **HP["adam+cm"])
    for _ in range(60):
        opt.zero_grad()
        ackley(p).sum().backward()
        opt.step()
    alone = run_toy(ackley, x0[:1], "adam+cm", HP["adam+cm"], steps=60, lr_drop_at=None)
    assert not torch.allclose(p.detach()[0], alone.final[0], atol=1e-6)


def test_learning_rate_drop_and_per_run_sharpness():
    # Plain SGD on f_s from x0 = -2 (flat branch, gradient 2x): x <- x (1 - 2 lr).
    x0 = torch.tensor([[-2.0], [-1.0]], dtype=D64)
    fn = partial(sharp_flat, s=torch.tensor([3.0, 50.0], dtype=D64))
    run = run_toy(fn, x0, "sgd", {"lr": 0.1}, steps=6, lr_drop_at=3, lr_drop_factor=10)
    factors = [0.8] * 3 + [0.98] * 3
    expected = x0.clone()
    for t, f in enumerate(factors, start=1):
        expected = expected * f
        assert torch.allclose(run.trajectory[t], expected)
    # no drop
    run = run_toy(fn, x0, "sgd", {"lr": 0.1}, steps=4, lr_drop_at=None)
    assert torch.allclose(run.final, x0 * 0.8**4)


def test_diagnostics_recorded_for_memory_optimizers_only():
    x0 = _starts(3)
    run = run_toy(goldstein_price, x0, "adam+cm", HP["adam+cm"], steps=20, diagnostics_every=5)
    d = run.diagnostics
    assert d["steps"].tolist() == [0, 5, 10, 15, 20]
    assert d["filled"][0].tolist() == [0, 0, 0]  # nothing stored before the first step
    assert d["filled"][-1].tolist() == [4, 4, 4]
    assert torch.allclose(d["distance"][-1], (run.final - x0).norm(dim=1))
    assert run_toy(goldstein_price, x0, "adam", HP["adam"], steps=5,
                   diagnostics_every=1).diagnostics == {}
