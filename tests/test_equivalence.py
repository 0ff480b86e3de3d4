"""Every optimizer against the slow reference of ``tests/reference.py`` (spec equations).

Float64 throughout, >= 30 steps, tolerance 1e-12 (absolute) on the parameters and
(absolute + relative) on the optimizer state: moments, momentum buffers, step counts and
the critical buffers (keys, stored values, running sum, replacement count).  The fixed grids
run on every device of the ``device`` fixture (``cpu``; ``cuda`` where available), against
the same CPU reference.

The first section checks the reference itself against ``torch.optim`` (empty buffer) and
against hand-computed numbers, so that a wrong reference cannot hide a wrong library.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import memoptim
from memoptim.buffer import CriticalBuffer
from reference import (
    REFERENCES,
    RefAdamCG,
    RefAdamCM,
    RefAdaMomentum,
    RefSGDCG,
    RefSGDCM,
    flat_params,
    grad_stream,
    make_groups,
)

TOL = 1e-12
STEPS = 30
F64 = torch.float64


# =========================================================================== helpers
def _clone_groups(groups: list[list[torch.Tensor]]) -> list[list[torch.Tensor]]:
    return [[p.detach().clone().requires_grad_(True) for p in row] for row in groups]


def _set_grads(groups: list[list[torch.Tensor]], grads: list[list[torch.Tensor | None]]) -> None:
    """Each parameter gets a copy of its gradient, on the parameter's device (strides kept where
    ``clone(memory_format=torch.preserve_format)`` keeps them)."""
    for row, grow in zip(groups, grads, strict=True):
        for p, g in zip(row, grow, strict=True):
            p.grad = None if g is None else g.to(device=p.device, copy=True)


def _on_device(groups: list[list[torch.Tensor]], device: torch.device | str) -> list[list[torch.Tensor]]:
    """The parameters as leaves on ``device`` with the same strides (a strided view stays one);
    on CPU the tensors themselves."""
    if torch.device(device).type == "cpu":
        return groups
    return [[torch.empty_strided(p.size(), p.stride(), dtype=p.dtype, device=device).copy_(p.detach())
             .requires_grad_(True) for p in row] for row in groups]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 0.0,
           atol: float = TOL) -> None:
    torch.testing.assert_close(
        actual.detach().to("cpu", F64), expected.to("cpu", F64), atol=atol, rtol=rtol,
        msg=lambda m: f"{what}: {m}",
    )


def assert_matches(opt: torch.optim.Optimizer, ref: Any, groups: list[list[torch.Tensor]],
                   where: str = "", tol: float = TOL, buffers: bool = True) -> None:
    """Parameters and all state of ``opt`` equal the reference's (to ``tol``); the critical
    buffers too unless ``buffers`` is false."""
    for gi, row in enumerate(groups):
        for pi, p in enumerate(row):
            tag = f"{where} group {gi} tensor {pi}"
            _close(p, ref.params[gi][pi], f"{tag} param", atol=tol)
            rstate = ref.state.get((gi, pi))
            ostate = opt.state.get(p, {})
            if not rstate:
                assert not ostate, f"{tag}: state created for a tensor that never had a gradient"
                continue
            assert float(ostate["step"]) == rstate["step"], f"{tag} step"
            for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"):
                if name in ostate and ostate[name] is not None and name in rstate:
                    if name == "max_exp_avg_sq" and not ref.groups[gi].get("amsgrad"):
                        continue
                    if rstate[name] is None:  # torch.optim.SGD keeps no buffer without momentum
                        continue
                    _close(ostate[name], rstate[name], f"{tag} {name}", rtol=tol, atol=tol)
            for name in ("exp_avg", "exp_avg_sq"):  # every moment the reference keeps (Lion: m only)
                if name in rstate:
                    assert name in ostate, f"{tag}: {name} missing"
            if ref.groups[gi].get("amsgrad"):
                assert "max_exp_avg_sq" in ostate, f"{tag}: amsgrad state missing"
            if rstate.get("momentum_buffer") is not None:
                assert ostate.get("momentum_buffer") is not None, f"{tag}: momentum_buffer missing"
            if buffers:
                assert_buffer_matches(CriticalBuffer.from_state(ostate), rstate.get("buffer"), tag,
                                      tol)


def assert_buffer_matches(buf: CriticalBuffer | None, rbuf: Any, tag: str,
                          tol: float = TOL) -> None:
    if rbuf is None:
        assert buf is None, f"{tag}: buffer present although memory is off"
        return
    assert buf is not None, f"{tag}: buffer missing"
    n = len(rbuf.slots)
    assert buf.capacity == rbuf.capacity, f"{tag} capacity"
    assert buf.filled == n, f"{tag} filled {buf.filled} != {n}"
    assert buf.replacements == rbuf.replacements, f"{tag} replacements"
    keys = buf.keys.detach().to("cpu", F64)
    if n:
        _close(keys[:n], torch.tensor(rbuf.keys, dtype=F64), f"{tag} keys", rtol=tol, atol=tol)
        _close(buf.values[:n], torch.stack(rbuf.values), f"{tag} values", rtol=tol, atol=tol)
    assert torch.all(keys[n:] == -math.inf), f"{tag}: empty slots must hold -inf"
    assert torch.all(buf.values[n:] == 0), f"{tag}: empty slots must be zero"
    _close(buf.total, rbuf.total(buf.total.to("cpu", F64)), f"{tag} running sum", rtol=tol, atol=tol)


def _groups_spec(groups, overrides):
    return [{"params": row, **ov} for row, ov in zip(groups, overrides, strict=True)]


def run_equivalence(
    name: str,
    shapes: list[list[tuple[int, ...]]],
    hyper: dict[str, Any],
    overrides: list[dict[str, Any]] | None = None,
    *,
    seed: int = 0,
    steps: int = STEPS,
    none_prob: float = 0.0,
    noncontiguous: list[list[bool]] | None = None,
    disable_at: int | None = None,
    group_off: tuple[int, int] | None = None,
    dtype: torch.dtype = F64,
    tol: float = TOL,
    buffer_every: int = 1,
    device: torch.device | str = "cpu",
) -> None:
    """Run optimizer ``name`` and its reference side by side on random gradients.

    Everything is compared after every step, the critical buffers after every
    ``buffer_every``-th and the last (inspecting a buffer completes a deferred offer).  The
    optimizer's parameters and gradients live on ``device``; the reference runs on CPU.
    """
    overrides = overrides or [{} for _ in shapes]
    cpu_groups = make_groups(shapes, seed, noncontiguous, dtype)
    groups = _on_device(cpu_groups, device)
    opt = getattr(memoptim, name)(_groups_spec(groups, overrides), **hyper)
    ref = REFERENCES[name](_groups_spec(_clone_groups(cpu_groups), overrides), **hyper)
    for t in range(steps):
        if disable_at is not None and t == disable_at:
            opt.disable_memory()
            ref.disable_memory()
        if group_off is not None and t == group_off[1]:
            opt.param_groups[group_off[0]]["memory"] = False
            ref.groups[group_off[0]]["memory"] = False
        grads = grad_stream(shapes, seed, t, none_prob if t % 3 else 0.0, noncontiguous, dtype)
        _set_grads(groups, grads)
        opt.step()
        ref.step(grads)
        assert_matches(opt, ref, groups, where=f"{name} step {t + 1}:", tol=tol,
                       buffers=(t + 1) % buffer_every == 0 or t == steps - 1)


# =========================================================================== reference self-checks
SHAPES = [[(3, 4), (4,)], [(), (2, 3, 2)]]


def _torch_vs_ref(torch_opt_factory, ref, shapes, steps=STEPS, none_prob=0.2, seed=1):
    groups = make_groups(shapes, seed)
    opt = torch_opt_factory(_groups_spec(groups, [{} for _ in shapes]))
    for t in range(steps):
        grads = grad_stream(shapes, seed, t, none_prob)
        _set_grads(groups, grads)
        opt.step()
        ref.step(grads)
    for gi, row in enumerate(groups):
        for pi, p in enumerate(row):
            _close(p, ref.params[gi][pi], f"group {gi} tensor {pi}")
            assert torch.isfinite(p).all()


def _ref(cls, shapes, seed=1, **hyper):
    return cls(_groups_spec(make_groups(shapes, seed), [{} for _ in shapes]), **hyper)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("decoupled", [False, True])
def test_reference_adam_cg_without_memory_is_torch_adam(amsgrad, maximize, decoupled):
    hyper = dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, amsgrad=amsgrad,
                 maximize=maximize)
    ref = _ref(RefAdamCG, SHAPES, decoupled_weight_decay=decoupled, **hyper)
    ref.disable_memory()
    factory = torch.optim.AdamW if decoupled else torch.optim.Adam
    _torch_vs_ref(lambda g: factory(g, foreach=False, **hyper), ref, SHAPES)


@pytest.mark.parametrize("cls", [RefSGDCG, RefSGDCM])
@pytest.mark.parametrize(("momentum", "dampening"), [(0.0, 0.0), (0.9, 0.0), (0.5, 0.3)])
def test_reference_sgd_without_memory_is_torch_sgd(cls, momentum, dampening):
    hyper = dict(lr=0.05, momentum=momentum, dampening=dampening, weight_decay=0.05,
                 maximize=True)
    ref = _ref(cls, SHAPES, **hyper)
    ref.disable_memory()
    _torch_vs_ref(lambda g: torch.optim.SGD(g, foreach=False, **hyper), ref, SHAPES)


def test_reference_adam_cm_without_memory_and_beta1_zero_is_torch_adam():
    # With beta1 = 0 and an empty buffer, a_t = m_t = g_t, so v_t is Adam's EMA of g_t^2.
    hyper = dict(lr=0.03, betas=(0.0, 0.95), eps=1e-7, weight_decay=0.02)
    ref = _ref(RefAdamCM, SHAPES, **hyper)
    ref.disable_memory()
    _torch_vs_ref(lambda g: torch.optim.AdamW(g, foreach=False, **hyper), ref, SHAPES)


def test_reference_adamomentum_beta1_zero_eps_zero_is_torch_adam():
    hyper = dict(lr=0.03, betas=(0.0, 0.9), eps=0.0, weight_decay=0.02)
    ref = _ref(RefAdaMomentum, SHAPES, **hyper)
    _torch_vs_ref(lambda g: torch.optim.AdamW(g, foreach=False, **hyper), ref, SHAPES,
                  none_prob=0.0)


def test_reference_adamomentum_hand_formula():
    """Scalar AdaMomentum by hand, beta1 = 0.5, eps accumulating in v."""
    lr, b1, b2, eps = 0.1, 0.5, 0.9, 1e-3
    ref = RefAdaMomentum([torch.tensor(1.0, dtype=F64)], lr=lr, betas=(b1, b2), eps=eps)
    theta, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([2.0, -1.0, 0.5], start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * m * m + eps
        theta -= lr / (1 - b1**t) * m / (math.sqrt(v) / math.sqrt(1 - b2**t))
        ref.step([[torch.tensor(g, dtype=F64)]])
        assert float(ref.params[0][0]) == pytest.approx(theta, abs=1e-15)
        assert float(ref.state[(0, 0)]["exp_avg_sq"]) == pytest.approx(v, abs=1e-15)
    # step 1 fully by hand: m = 1, v = 0.1 + 1e-3, theta = 1 - 0.2 * sqrt(0.1 / 0.101)
    ref = RefAdaMomentum([torch.tensor(1.0, dtype=F64)], lr=lr, betas=(b1, b2), eps=eps)
    ref.step([[torch.tensor(2.0, dtype=F64)]])
    assert float(ref.params[0][0]) == pytest.approx(1 - 0.2 * math.sqrt(0.1 / 0.101), abs=1e-15)


def test_reference_sgd_cg_buffer_by_hand():
    """SGD+CG, scalar, C = 2, decay 0.5, lr 1, tensor keys: every number by hand."""
    ref = RefSGDCG([torch.tensor(0.0, dtype=F64)], lr=1.0, buffer_size=2, decay=0.5,
                   priority="tensor")
    steps = [
        # g, expected theta after the step, expected (key, value) slots after the step
        (4.0, -4.0, [(2.0, 4.0)]),  # empty buffer: update g
        (-2.0, -4.0 - (-2.0 + 4.0 / 2), [(1.0, 4.0), (1.0, -2.0)]),
        (0.5, -4.0 - (0.5 + 2.0 / 2), [(0.5, 4.0), (0.5, -2.0)]),  # 0.5 < 1.0: no replace
        (0.5, -5.5 - (0.5 + 2.0 / 2), [(0.25, 4.0), (0.25, -2.0)]),  # tie 0.5 == 0.5: none
        (3.0, -7.0 - (3.0 + 2.0 / 2), [(1.5, 3.0), (0.125, -2.0)]),  # first min slot replaced
    ]
    for g, theta, slots in steps:
        ref.step([[torch.tensor(g, dtype=F64)]])
        assert float(ref.params[0][0]) == theta
        buf = ref.buffer(0, 0)
        assert [(k, float(v)) for k, v in buf.slots] == slots
    assert ref.buffer(0, 0).replacements == 1


def test_reference_adam_cm_by_hand():
    """Adam+CM, scalar, C = 2: step 1 is plain (a = m), step 2 aggregates m_1 / C."""
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8
    ref = RefAdamCM([torch.tensor(0.0, dtype=F64)], lr=lr, betas=(b1, b2), eps=eps,
                    buffer_size=2, decay=0.7)
    g1, g2 = 1.0, -3.0
    m1 = (1 - b1) * g1
    v1 = (1 - b2) * m1**2
    theta1 = -lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
    m2 = b1 * m1 + (1 - b1) * g2
    a2 = m2 + m1 / 2
    v2 = b2 * v1 + (1 - b2) * a2**2
    theta2 = theta1 - lr * (a2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    ref.step([[torch.tensor(g1, dtype=F64)]])
    assert float(ref.params[0][0]) == pytest.approx(theta1, abs=1e-15)
    ref.step([[torch.tensor(g2, dtype=F64)]])
    assert float(ref.params[0][0]) == pytest.approx(theta2, abs=1e-15)
    buf = ref.buffer(0, 0)
    assert buf.keys == pytest.approx([1.0 * 0.7 * 0.7, 3.0 * 0.7])
    assert [float(v) for v in buf.values] == pytest.approx([m1, m2])


# =========================================================================== fixed grids
ADAM_CONFIGS = [
    dict(lr=0.02),
    dict(lr=0.02, priority="tensor"),
    dict(lr=0.03, betas=(0.8, 0.95), weight_decay=0.1),
    dict(lr=0.03, weight_decay=0.1, decoupled_weight_decay=False, priority="tensor"),
    dict(lr=0.01, amsgrad=True, buffer_size=3, decay=0.99),
    dict(lr=0.01, maximize=True, weight_decay=0.05, decoupled_weight_decay=False),
    dict(lr=0.05, betas=(0.0, 0.9), amsgrad=True, maximize=True, buffer_size=1, decay=1.0),
]
ADAM_OVERRIDES = [
    {},
    {"lr": 0.005, "buffer_size": 2, "decay": 0.5, "priority": "tensor", "weight_decay": 0.2},
]
SGD_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, priority="tensor", momentum=0.0),
    dict(lr=0.02, momentum=0.9, weight_decay=0.1),
    dict(lr=0.01, momentum=0.5, dampening=0.3, maximize=True, priority="tensor"),
    dict(lr=0.01, momentum=0.9, buffer_size=2, decay=1.0, weight_decay=0.05, maximize=True),
]
SGD_OVERRIDES = [
    {},
    {"lr": 0.003, "buffer_size": 3, "decay": 0.5, "priority": "tensor", "momentum": 0.8},
]
GRID_SHAPES = [[(4, 3), (5,), ()], [(2, 3), (3,)]]
GRID_NONCONTIG = [[True, False, False], [False, True]]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", range(len(ADAM_CONFIGS)))
@pytest.mark.parametrize("name", ["AdamCM", "AdamCG"])
def test_adam_family_matches_reference(name, config, foreach, device):
    run_equivalence(name, GRID_SHAPES, {**ADAM_CONFIGS[config], "foreach": foreach},
                    ADAM_OVERRIDES, seed=config, none_prob=0.25, noncontiguous=GRID_NONCONTIG,
                    device=device)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("config", range(len(SGD_CONFIGS)))
@pytest.mark.parametrize("name", ["SGDCM", "SGDCG"])
def test_sgd_family_matches_reference(name, config, foreach, device):
    run_equivalence(name, GRID_SHAPES, {**SGD_CONFIGS[config], "foreach": foreach},
                    SGD_OVERRIDES, seed=10 + config, none_prob=0.25,
                    noncontiguous=GRID_NONCONTIG, device=device)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "config",
    [
        dict(lr=0.01),
        dict(lr=0.02, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.1),
        dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=False, amsgrad=True),
        dict(lr=0.01, maximize=True, amsgrad=True, eps=1e-12),
    ],
)
def test_adamomentum_matches_reference(config, foreach, device):
    run_equivalence("AdaMomentum", GRID_SHAPES, {**config, "foreach": foreach},
                    [{}, {"lr": 0.004, "betas": (0.8, 0.99)}], seed=3, none_prob=0.25,
                    noncontiguous=GRID_NONCONTIG, device=device)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", ["AdamCM", "AdamCG", "SGDCM", "SGDCG"])
def test_disable_memory_mid_run_matches_empty_buffer_reference(name, foreach):
    """After ``disable_memory()`` the rule is the empty-buffer rule; the buffers are freed."""
    hyper = {"lr": 0.01, "foreach": foreach, "buffer_size": 3}
    run_equivalence(name, GRID_SHAPES, hyper, seed=5, none_prob=0.2, disable_at=12)


@pytest.mark.parametrize("name", ["AdamCM", "SGDCG"])
def test_disable_memory_from_step_one(name):
    run_equivalence(name, GRID_SHAPES, {"lr": 0.01}, seed=6, disable_at=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_memory_off_for_one_group_only(foreach):
    run_equivalence("AdamCM", GRID_SHAPES, {"lr": 0.01, "foreach": foreach}, seed=7,
                    group_off=(1, 9))


@pytest.mark.parametrize("foreach", [False, True])
def test_tensor_without_gradient_at_first_steps(foreach):
    """A tensor first seen late gets its own step count and an empty buffer then."""
    shapes = [[(3,), (2, 2), ()]]
    groups = make_groups(shapes, 11)
    opt = memoptim.AdamCM(groups[0], lr=0.02, foreach=foreach, buffer_size=2)
    ref = RefAdamCM(_clone_groups(groups)[0], lr=0.02, buffer_size=2)
    for t in range(STEPS):
        grads = grad_stream(shapes, 11, t)
        if t < 7:
            grads[0][1] = None
        if t % 4 == 1:
            grads[0][2] = None
        _set_grads(groups, grads)
        opt.step()
        ref.step(grads)
        assert_matches(opt, ref, groups, where=f"step {t + 1}:")
    assert float(opt.state[groups[0][1]]["step"]) == STEPS - 7


@pytest.mark.parametrize("name", ["AdamCM", "SGDCG"])
def test_long_run_past_the_running_sum_resync(name):
    """300 steps: the library's running sum (periodically recomputed) stays exact."""
    run_equivalence(name, [[(3,), ()]], {"lr": 1e-3, "buffer_size": 3, "priority": "tensor"},
                    seed=8, steps=300, none_prob=0.1)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", ["AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdaMomentum"])
def test_float32_parameters_follow_the_reference(name, foreach):
    """float32 parameters (float32 keys and sums): the same rule up to float32 rounding."""
    hyper = {"lr": 0.01, "foreach": foreach, "weight_decay": 0.01}
    if name != "AdaMomentum":
        hyper["buffer_size"] = 3
    run_equivalence(name, GRID_SHAPES, hyper, seed=9, none_prob=0.2,
                    noncontiguous=GRID_NONCONTIG, dtype=torch.float32, tol=2e-5)


# =========================================================================== hypothesis
SHAPE = st.one_of(
    st.just(()),
    st.sampled_from([(0,), (2, 0)]),  # empty tensors: norm 0, nothing to update
    st.tuples(st.integers(1, 5)),
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
)


@st.composite
def problems(draw):
    n_groups = draw(st.integers(1, 3))
    shapes = [draw(st.lists(SHAPE, min_size=1, max_size=3)) for _ in range(n_groups)]
    noncontig = [[draw(st.booleans()) for _ in row] for row in shapes]
    return shapes, noncontig


MEMORY_HP = {
    "buffer_size": st.integers(1, 6),
    "decay": st.sampled_from([0.3, 0.5, 0.7, 0.99, 1.0]),
    "priority": st.sampled_from(["group", "tensor"]),
}
ADAM_HP = {
    "lr": st.sampled_from([1e-3, 1e-2, 5e-2]),
    "betas": st.tuples(st.sampled_from([0.0, 0.5, 0.9]), st.sampled_from([0.9, 0.99, 0.999])),
    "eps": st.sampled_from([1e-8, 1e-6, 1e-3]),
    "weight_decay": st.sampled_from([0.0, 0.1]),
    "amsgrad": st.booleans(),
    "decoupled_weight_decay": st.booleans(),
    "maximize": st.booleans(),
}
SGD_HP = {
    "lr": st.sampled_from([1e-3, 1e-2, 3e-2]),
    "momentum": st.sampled_from([0.0, 0.5, 0.9]),
    "dampening": st.sampled_from([0.0, 0.3]),
    "weight_decay": st.sampled_from([0.0, 0.1]),
    "maximize": st.booleans(),
}
HP = {
    "AdamCM": {**ADAM_HP, **MEMORY_HP},
    "AdamCG": {**ADAM_HP, **MEMORY_HP},
    "SGDCM": {**SGD_HP, **MEMORY_HP},
    "SGDCG": {**SGD_HP, **MEMORY_HP},
    "AdaMomentum": {**ADAM_HP, "eps": st.sampled_from([1e-16, 1e-8])},
}
# Hyperparameters a later group may override.
GROUP_HP = {
    "AdamCM": ["lr", "betas", "weight_decay", "buffer_size", "decay", "priority"],
    "AdamCG": ["lr", "betas", "weight_decay", "buffer_size", "decay", "priority"],
    "SGDCM": ["lr", "momentum", "weight_decay", "buffer_size", "decay", "priority"],
    "SGDCG": ["lr", "momentum", "weight_decay", "buffer_size", "decay", "priority"],
    "AdaMomentum": ["lr", "betas", "weight_decay"],
}


@st.composite
def cases(draw, name):
    shapes, noncontig = draw(problems())
    hyper = draw(st.fixed_dictionaries(HP[name]))
    hyper["foreach"] = draw(st.sampled_from([None, False, True]))
    overrides = [{}]
    for _ in shapes[1:]:
        keys = draw(st.lists(st.sampled_from(GROUP_HP[name]), unique=True, max_size=3))
        overrides.append({k: draw(HP[name][k]) for k in keys})
    seed = draw(st.integers(0, 2**16))
    none_prob = draw(st.sampled_from([0.0, 0.3]))
    return shapes, noncontig, hyper, overrides, seed, none_prob


@pytest.mark.parametrize("name", ["AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdaMomentum"])
def test_hypothesis_matches_reference(name):
    @settings(max_examples=12, deadline=None)
    @given(case=cases(name))
    def check(case):
        shapes, noncontig, hyper, overrides, seed, none_prob = case
        run_equivalence(name, shapes, hyper, overrides, seed=seed, none_prob=none_prob,
                        noncontiguous=noncontig)

    check()


# =========================================================================== real loss
def _mlp_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    ("name", "hyper"),
    [
        ("AdamCM", dict(lr=0.02, weight_decay=0.01)),
        ("AdamCG", dict(lr=0.02, priority="tensor", amsgrad=True)),
        ("SGDCM", dict(lr=0.05, weight_decay=0.01)),
        ("SGDCG", dict(lr=0.05, momentum=0.9, buffer_size=3)),
        ("AdaMomentum", dict(lr=0.02)),
    ],
)
def test_mlp_trajectory_matches_reference(name, hyper, foreach):
    """Gradients depend on the trajectory: a small MLP trained with ``step(closure)``."""
    gen = torch.Generator().manual_seed(42)
    x = torch.randn(16, 3, generator=gen, dtype=F64)
    y = torch.randn(16, 2, generator=gen, dtype=F64)
    shapes = [[(5, 3), (5,)], [(2, 5), (2,)]]
    groups = make_groups(shapes, 42)
    flat = flat_params(groups)
    overrides = [{}, {"lr": hyper["lr"] / 2}]
    opt = getattr(memoptim, name)(_groups_spec(groups, overrides), foreach=foreach, **hyper)
    ref = REFERENCES[name](_groups_spec(_clone_groups(groups), overrides), **hyper)

    def closure():
        opt.zero_grad()
        loss = _mlp_loss(flat, x, y)
        loss.backward()
        return loss

    first = None
    for t in range(STEPS):
        loss = opt.step(closure)
        first = float(loss.detach()) if first is None else first
        ref_params = [p.detach().clone().requires_grad_(True) for p in flat_params(ref.params)]
        ref_grads = torch.autograd.grad(_mlp_loss(ref_params, x, y), ref_params)
        _close(loss, _mlp_loss(ref_params, x, y).detach(), f"loss at step {t + 1}")
        ref.step([list(ref_grads[:2]), list(ref_grads[2:])])
        assert_matches(opt, ref, groups, where=f"{name} step {t + 1}:")
    assert float(_mlp_loss(flat, x, y).detach()) < first
