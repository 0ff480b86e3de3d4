"""Every registry entry, parametrised over the registry itself: it builds, steps, checkpoints,
and its metadata (label, family, search space, memory and SAM flags) says what it is."""

from __future__ import annotations

import copy

import pytest
import torch

from memoptim import SAM
from memoptim.experiments.train import HYPERPARAMETERS, build_optimizer
from memoptim.optim.driver import MemoryOptimizer
from memoptim.registry import FAMILIES, LABELS, REGISTRY, create_optimizer


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_entry_builds_steps_and_resumes(name):
    entry = REGISTRY[name]
    torch.manual_seed(0)
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    opt = create_optimizer(name, params, lr=1e-3)

    def closure():
        loss = sum((p**2).sum() for p in params)
        loss.backward()
        return loss

    for _ in range(3):
        opt.zero_grad()
        if entry.sam:
            opt.step(closure)
        else:
            closure()
            opt.step()
    saved = copy.deepcopy(opt.state_dict())
    again = create_optimizer(name, [p.detach().clone().requires_grad_() for p in params], lr=1e-3)
    again.load_state_dict(saved)
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_metadata_matches_what_the_entry_builds(name):
    entry = REGISTRY[name]
    opt = create_optimizer(name, [torch.zeros(2, requires_grad=True)])
    base = opt.base_optimizer if isinstance(opt, SAM) else opt
    assert entry.sam == isinstance(opt, SAM)
    assert entry.memory == isinstance(base, MemoryOptimizer)
    assert LABELS[name] == entry.label and name in FAMILIES[entry.family]
    assert set(entry.searched) | set(entry.fixed) <= set(HYPERPARAMETERS)
    build_optimizer(name, [torch.zeros(2, requires_grad=True)], dict(entry.fixed))  # fixed values are valid
    if entry.memory and base.param_groups[0]["memory"]:  # a buffer in use: its size and decay are searched
        assert {"buffer_size", "decay"} <= set(entry.searched)


def test_memory_mode_says_what_each_buffer_keeps():
    from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA, NONE
    from memoptim.registry import memory_mode

    expected = {"adam": NONE, "adam+sam": NONE, "adam+cg": CRITICAL_GRADIENTS, "lion+cg": CRITICAL_GRADIENTS,
                "adam+cm": CRITICAL_MOMENTA, "adam+sam+cm": CRITICAL_MOMENTA,
                "sgd+cm-authors": CRITICAL_MOMENTA, "no-such-optimizer": NONE}
    assert {name: memory_mode(name) for name in expected} == expected
