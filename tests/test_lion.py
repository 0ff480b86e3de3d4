"""Lion, Lion+CG and Lion+CM against the float64 reference (``tests/reference.py``).

Lion was added by writing its rule once (``memoptim.optim.rules.lion``) and registering it;
these tests hold every path and memory option of the three optimizers to the reference.
"""

from __future__ import annotations

import copy

import pytest
import torch

import memoptim
from test_equivalence import GRID_NONCONTIG, GRID_SHAPES, run_equivalence

NAMES = ["Lion", "LionCG", "LionCM"]
CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.1),
    dict(lr=0.01, maximize=True, weight_decay=0.05),
    dict(lr=0.005, betas=(0.0, 0.5)),
]
MEMORY_CONFIGS = [
    dict(buffer_size=3, decay=0.9, priority="tensor"),
    dict(buffer_size=1, decay=1.0),
    dict(aggregation="filled", first_step="seed"),
    dict(policy="random", replace_prob=0.5, policy_seed=3, buffer_size=2),
]
OVERRIDES = [{}, {"lr": 0.004, "betas": (0.5, 0.9)}]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", range(len(CONFIGS)))
@pytest.mark.parametrize("name", NAMES)
def test_lion_family_matches_reference(name, config, foreach):
    run_equivalence(name, GRID_SHAPES, {**CONFIGS[config], "foreach": foreach}, OVERRIDES, seed=20 + config,
                    none_prob=0.25, noncontiguous=GRID_NONCONTIG)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", range(len(MEMORY_CONFIGS)))
@pytest.mark.parametrize("name", ["LionCG", "LionCM"])
def test_lion_memory_options_match_reference(name, config, foreach):
    hyper = {"lr": 0.01, "weight_decay": 0.05, **MEMORY_CONFIGS[config], "foreach": foreach}
    run_equivalence(name, GRID_SHAPES, hyper, seed=30 + config, none_prob=0.25)


@pytest.mark.parametrize("name", ["LionCG", "LionCM"])
def test_lion_memory_switched_off_mid_run_matches_reference(name):
    run_equivalence(name, GRID_SHAPES, {"lr": 0.01, "buffer_size": 3}, seed=7, disable_at=10)


def test_lion_cm_memory_changes_the_trajectory_and_memory_off_is_lion():
    """The buffer matters (a check that the memory is wired in at all), and without it Lion+CM
    and Lion+CG are Lion bit for bit."""
    torch.manual_seed(0)
    start = torch.randn(50)
    runs = {}
    for name, kw in [("Lion", {}), ("LionCM", {}), ("LionCM-off", {"memory": False}),
                     ("LionCG-off", {"memory": False})]:
        p = start.clone().requires_grad_()
        cls = getattr(memoptim, name.split("-")[0])
        opt = cls([p], lr=0.01, **kw)
        gen = torch.Generator().manual_seed(1)
        for _ in range(20):
            p.grad = torch.randn(50, generator=gen) + p.detach()
            opt.step()
        runs[name] = p.detach()
    assert not torch.equal(runs["LionCM"], runs["Lion"])
    assert torch.equal(runs["LionCM-off"], runs["Lion"]) and torch.equal(runs["LionCG-off"], runs["Lion"])


@pytest.mark.parametrize("name", NAMES)
def test_fused_lion_runs_the_multi_tensor_path(name):
    """No fused kernel exists for Lion: ``fused=True`` gives the foreach result bit for bit."""
    out = []
    for kw in ({"fused": True}, {"foreach": True}):
        torch.manual_seed(0)
        params = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
        opt = getattr(memoptim, name)(params, lr=0.01, **kw)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn_like(p)
            opt.step()
        out.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*out))


@pytest.mark.parametrize("name", NAMES)
def test_lion_resumes_bit_for_bit_from_a_state_dict(name):
    torch.manual_seed(0)
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(12)]
    opt = getattr(memoptim, name)(params, lr=0.01)
    clone = None
    for t, gs in enumerate(grads):
        if t == 6:
            saved = copy.deepcopy(opt.state_dict())
            clone = [p.detach().clone().requires_grad_() for p in params]
            resumed = getattr(memoptim, name)(clone, lr=0.01)
            resumed.load_state_dict(saved)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        if clone is not None:
            for p, g in zip(clone, gs):
                p.grad = g.clone()
            resumed.step()
    assert all(torch.equal(a, b) for a, b in zip(params, clone))


def test_lion_refuses_bad_arguments_with_one_line_errors():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid betas"):
        memoptim.Lion(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="Invalid lr"):
        memoptim.LionCM(p, lr=-1.0)
    with pytest.raises(ValueError, match="Invalid buffer_size"):
        memoptim.LionCG(p, buffer_size=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        memoptim.LionCM(p, eps=1e-8)


@pytest.mark.parametrize(("name", "cls"), [("lion", "Lion"), ("lion+cg", "LionCG"), ("lion+cm", "LionCM")])
def test_registry_names_build_the_lion_classes(name, cls):
    opt = memoptim.create_optimizer(name, [torch.zeros(2, requires_grad=True)], lr=1e-4)
    assert type(opt).__name__ == cls


@pytest.mark.parametrize("name", ["lion", "lion+cg", "lion+cm"])
def test_the_toy_lab_runs_lion_with_its_buffer_diagnostics(name):
    from memoptim.lab.surfaces import goldstein_price
    from memoptim.lab.toy import MEMORY_OPTIMIZERS, run_toy

    x0 = torch.tensor([[0.5, -0.5], [-1.0, 1.0]], dtype=torch.float64)
    run = run_toy(goldstein_price, x0, name, {"lr": 0.01}, steps=40, lr_drop_at=None,
                  diagnostics_every=10 if name in MEMORY_OPTIMIZERS else 0)
    assert run.trajectory.shape == (41, 2, 2) and torch.isfinite(run.losses).all()
    assert (run.final_loss < run.losses[0]).all()  # it descends
    assert (name in MEMORY_OPTIMIZERS) == (name != "lion")
    if name != "lion":
        assert (run.diagnostics["filled"][-1] > 0).all()


def test_training_keeps_lions_own_beta2_when_only_beta1_is_given():
    from memoptim.experiments.train import build_optimizer

    lion = build_optimizer("lion+cm", [torch.zeros(2, requires_grad=True)], {"beta1": 0.8})
    adam = build_optimizer("adam+cm", [torch.zeros(2, requires_grad=True)], {"beta1": 0.8})
    assert lion.param_groups[0]["betas"] == (0.8, 0.99) and adam.param_groups[0]["betas"] == (0.8, 0.999)
