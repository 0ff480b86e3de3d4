"""The memory variants against the slow reference of ``tests/reference.py``.

Variants (hyperparameters of every memory rule unless said otherwise; the defaults keep the
paper's rule):

* ``aggregation="filled"``: ``aggr(x, B) = x + sum(B) / n`` (``n`` filled slots) instead of
  ``/ C``;
* ``first_step="seed"``: the authors' critical-momenta code, where a tensor's first step only
  seeds the buffer with ``g_1`` (no-op for the critical-gradient rules);
* ``policy="random"`` with ``replace_prob`` and ``policy_seed``: a full buffer replaces a
  random slot with probability ``replace_prob`` instead of the smallest key;
* AdamCM ``second_moment="gradient"``: ``v`` tracks ``g^2`` instead of ``aggr(m, B)^2``;
* ``memory=False`` as a constructor hyperparameter;
* the registry presets ``adam+cm-nomem``, ``adam+cm-vg``, ``adam+cm-random`` and the
  ``*-authors`` names.

Float64, >= 30 steps, tolerance 1e-12, every execution path (loop, foreach, fused).  The first
section checks the reference itself by hand and against ``torch.optim``, so that a wrong
reference cannot hide a wrong library.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch

import memoptim
from reference import (
    REFERENCES,
    RefAdamCG,
    RefAdamCM,
    RefBuffer,
    RefSGDCG,
    RefSGDCM,
    grad_stream,
    make_groups,
)
from test_equivalence import (
    STEPS,
    _clone_groups,
    _groups_spec,
    _set_grads,
    _torch_vs_ref,
    assert_matches,
    run_equivalence,
)

F64 = torch.float64
SHAPES = [[(3, 4), (4,)], [(), (2, 3, 2)]]
MEMORY_RULES = ["AdamCM", "AdamCG", "SGDCM", "SGDCG"]


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def _draw(policy_seed: int, t: int, capacity: int) -> tuple[float, int]:
    """The documented draw of ``policy="random"``, spelled out again for the hand checks."""
    gen = torch.Generator().manual_seed(policy_seed * 1_000_003 + t)
    u = torch.rand((), generator=gen, dtype=F64).item()
    return u, int(torch.randint(0, capacity, (), generator=gen))


# =========================================================================== reference self-checks
def test_reference_defaults_are_the_old_rule():
    """Spelling out the defaults changes nothing (bit for bit)."""
    explicit = dict(aggregation="capacity", first_step="step", policy="norm", replace_prob=1.0,
                    policy_seed=0, memory=True)
    for cls, extra in [(RefAdamCM, {"second_moment": "aggregate"}), (RefAdamCG, {}),
                       (RefSGDCM, {}), (RefSGDCG, {})]:
        groups = make_groups(SHAPES, 3)
        a = cls(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.02, buffer_size=2)
        b = cls(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.02, buffer_size=2,
                **explicit, **extra)
        for t in range(12):
            grads = grad_stream(SHAPES, 3, t, 0.2)
            a.step(grads)
            b.step(grads)
        for pa, pb in zip(a.params[0] + a.params[1], b.params[0] + b.params[1], strict=True):
            assert torch.equal(pa, pb)


def test_reference_filled_aggregation_by_hand():
    """SGD+CG, scalar, C = 3, lr 1, no momentum: ``x + sum(B) / n`` with n filled slots."""
    buf = RefBuffer(3)
    buf.offer(1.0, _scalar(4.0), 0.5)
    assert float(buf.aggregate(_scalar(1.0), "filled")) == 5.0  # one slot: x + that slot
    assert float(buf.aggregate(_scalar(1.0), "capacity")) == 1.0 + 4.0 / 3
    assert float(RefBuffer(3).aggregate(_scalar(1.0), "filled")) == 1.0  # empty: x

    ref = RefSGDCG([_scalar(0.0)], lr=1.0, momentum=0.0, buffer_size=3, priority="tensor",
                   aggregation="filled")
    expected = [
        (4.0, -4.0),  # empty buffer
        (-2.0, -4.0 - (-2.0 + 4.0 / 1)),  # n = 1
        (1.0, -6.0 - (1.0 + (4.0 - 2.0) / 2)),  # n = 2
        (3.0, -8.0 - (3.0 + (4.0 - 2.0 + 1.0) / 3)),  # n = C = 3: as "capacity"
    ]
    for g, theta in expected:
        ref.step([[_scalar(g)]])
        assert float(ref.params[0][0]) == theta


def test_reference_filled_equals_capacity_with_one_slot():
    """With C = 1, n is 0 or C: both aggregations are the same rule (bit for bit)."""
    groups = make_groups(SHAPES, 4)
    refs = [RefAdamCM(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.02, buffer_size=1,
                      aggregation=aggregation) for aggregation in ("capacity", "filled")]
    for t in range(10):
        grads = grad_stream(SHAPES, 4, t, 0.2)
        for ref in refs:
            ref.step(grads)
    for pa, pb in zip(refs[0].params[1], refs[1].params[1], strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("aggregation", ["capacity", "filled"])
@pytest.mark.parametrize(("maximize", "decoupled"), [(False, True), (True, False)])
def test_reference_seed_adam_cm_by_hand(aggregation, maximize, decoupled):
    """``first_step="seed"``: step 1 moves theta only by decoupled weight decay, m and v stay
    zero and the buffer holds g_1 (maximize'd, L2-decayed); step 2 is Adam+CM with t = 2."""
    lr, b1, b2, eps, wd, decay = 0.1, 0.9, 0.99, 1e-8, 0.1, 0.7
    theta0, g1, g2 = 0.5, 2.0, -1.0
    ref = RefAdamCM([_scalar(theta0)], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
                    decoupled_weight_decay=decoupled, maximize=maximize, buffer_size=2,
                    decay=decay, priority="tensor", aggregation=aggregation, first_step="seed")
    sign = -1.0 if maximize else 1.0
    d1 = sign * g1 + (0.0 if decoupled else wd * theta0)
    theta1 = theta0 * (1 - lr * wd) if decoupled else theta0
    ref.step([[_scalar(g1)]])
    state = ref.state[(0, 0)]
    assert state["step"] == 1
    assert float(ref.params[0][0]) == theta1
    assert float(state["exp_avg"]) == 0.0 and float(state["exp_avg_sq"]) == 0.0
    assert float(state["max_exp_avg_sq"]) == 0.0
    assert ref.buffer(0, 0).keys == [abs(g1) * decay]  # key: raw gradient norm
    assert [float(v) for v in ref.buffer(0, 0).values] == [d1]

    d2 = sign * g2 + (0.0 if decoupled else wd * theta1)
    m2 = (1 - b1) * d2
    a2 = m2 + d1 / (2 if aggregation == "capacity" else 1)
    v2 = (1 - b2) * a2**2
    theta2 = theta1 * (1 - lr * wd) if decoupled else theta1
    theta2 -= lr * (a2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    ref.step([[_scalar(g2)]])
    assert state["step"] == 2
    assert float(ref.params[0][0]) == pytest.approx(theta2, abs=1e-15)
    assert float(state["exp_avg"]) == pytest.approx(m2, abs=1e-15)
    assert ref.buffer(0, 0).keys == pytest.approx([abs(g1) * decay**2, abs(g2) * decay])
    assert [float(v) for v in ref.buffer(0, 0).values] == pytest.approx([d1, m2])


def test_reference_seed_adam_cm_without_weight_decay_does_not_move():
    groups = make_groups(SHAPES, 5)
    ref = RefAdamCM(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.1, first_step="seed")
    grads = grad_stream(SHAPES, 5, 0)
    ref.step(grads)
    for gi, row in enumerate(groups):
        for pi, p in enumerate(row):
            assert torch.equal(ref.params[gi][pi], p.detach())
            (value,) = ref.buffer(gi, pi).values
            assert torch.equal(value, grads[gi][pi])


def test_reference_seed_sgd_cm_by_hand():
    """SGD+CM seed: step 1 leaves theta and the momentum buffer alone (None), offers
    g_1 + wd theta; step 2 seeds the heavy ball with its own gradient (torch convention)."""
    lr, wd, mu = 0.1, 0.1, 0.9
    ref = RefSGDCM([_scalar(1.0)], lr=lr, momentum=mu, weight_decay=wd, buffer_size=2,
                   first_step="seed")
    ref.step([[_scalar(2.0)]])
    state = ref.state[(0, 0)]
    assert float(ref.params[0][0]) == 1.0 and state["momentum_buffer"] is None
    assert state["step"] == 1
    assert [float(v) for v in ref.buffer(0, 0).values] == [2.1]
    ref.step([[_scalar(-1.0)]])  # d2 = -1 + 0.1 = -0.9 = momentum buffer; aggr = -0.9 + 2.1 / 2
    assert float(state["momentum_buffer"]) == pytest.approx(-0.9, abs=1e-15)
    theta2 = 1.0 - lr * (-0.9 + 2.1 / 2)
    assert float(ref.params[0][0]) == pytest.approx(theta2, abs=1e-15)
    ref.step([[_scalar(0.5)]])
    mb3 = mu * -0.9 + (0.5 + wd * theta2)
    theta3 = theta2 - lr * (mb3 + (2.1 - 0.9) / 2)
    assert float(ref.params[0][0]) == pytest.approx(theta3, abs=1e-15)


def test_reference_seed_with_memory_off_still_skips_step_one():
    ref = RefAdamCM([_scalar(1.0)], lr=0.1, memory=False, first_step="seed")
    ref.step([[_scalar(3.0)]])
    assert float(ref.params[0][0]) == 1.0 and ref.buffer(0, 0) is None
    assert float(ref.state[(0, 0)]["exp_avg"]) == 0.0
    sgd = RefSGDCM([_scalar(1.0)], lr=0.1, memory=False, first_step="seed")
    sgd.step([[_scalar(3.0)]])
    assert float(sgd.params[0][0]) == 1.0 and sgd.state[(0, 0)]["momentum_buffer"] is None


@pytest.mark.parametrize("cls", [RefAdamCG, RefSGDCG])
def test_reference_seed_is_a_no_op_for_critical_gradients(cls):
    groups = make_groups(SHAPES, 6)
    refs = [cls(_groups_spec(_clone_groups(groups), [{}, {"priority": "tensor"}]), lr=0.02,
                buffer_size=2, weight_decay=0.1, first_step=first) for first in ("step", "seed")]
    for t in range(10):
        grads = grad_stream(SHAPES, 6, t, 0.3)
        for ref in refs:
            ref.step(grads)
    for key, state in refs[0].state.items():
        assert torch.equal(refs[0].params[key[0]][key[1]], refs[1].params[key[0]][key[1]])
        other = refs[1].state[key]
        assert state["step"] == other["step"]
        for a, b in zip(state["buffer"].values, other["buffer"].values, strict=True):
            assert torch.equal(a, b)


def test_reference_memory_off_from_the_constructor():
    groups = make_groups(SHAPES, 7)
    off = RefAdamCM(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.02, memory=False)
    later = RefAdamCM(_groups_spec(_clone_groups(groups), [{}, {}]), lr=0.02)
    later.disable_memory()
    for t in range(10):
        grads = grad_stream(SHAPES, 7, t, 0.2)
        off.step(grads)
        later.step(grads)
    assert all("buffer" not in state for state in off.state.values())
    for pa, pb in zip(off.params[0] + off.params[1], later.params[0] + later.params[1], strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("beta1", [0.0, 0.9])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize(("maximize", "decoupled"), [(False, True), (True, False)])
def test_reference_second_moment_gradient_without_memory_is_torch_adam(beta1, amsgrad, maximize,
                                                                       decoupled):
    """Empty buffer: a_t = m_t and v_t is the EMA of g_t^2, i.e. Adam/AdamW for any beta1."""
    hyper = dict(lr=0.03, betas=(beta1, 0.95), eps=1e-7, weight_decay=0.05, amsgrad=amsgrad,
                 maximize=maximize)
    ref = RefAdamCM(_groups_spec(make_groups(SHAPES, 1), [{}, {}]), memory=False,
                    second_moment="gradient", decoupled_weight_decay=decoupled, **hyper)
    factory = torch.optim.AdamW if decoupled else torch.optim.Adam
    _torch_vs_ref(lambda g: factory(g, foreach=False, **hyper), ref, SHAPES)


def test_reference_second_moment_aggregate_is_not_adam_for_beta1_nonzero():
    """The switch matters: with beta1 = 0.9 the default rule (v tracks m^2) is not Adam."""
    hyper = dict(lr=0.03, betas=(0.9, 0.95))
    ref = RefAdamCM(_groups_spec(make_groups(SHAPES, 1), [{}, {}]), memory=False, **hyper)
    with pytest.raises(AssertionError):
        _torch_vs_ref(lambda g: torch.optim.AdamW(g, foreach=False, **hyper), ref, SHAPES)


def test_reference_second_moment_gradient_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.99, 1e-8
    ref = RefAdamCM([_scalar(0.0)], lr=lr, betas=(b1, b2), eps=eps, buffer_size=2,
                    second_moment="gradient")
    g1, g2 = 1.0, -3.0
    m1 = (1 - b1) * g1
    v1 = (1 - b2) * g1**2
    theta1 = -lr * (m1 / (1 - b1)) / (math.sqrt(v1 / (1 - b2)) + eps)
    m2 = b1 * m1 + (1 - b1) * g2
    a2 = m2 + m1 / 2
    v2 = b2 * v1 + (1 - b2) * g2**2
    theta2 = theta1 - lr * (a2 / (1 - b1**2)) / (math.sqrt(v2 / (1 - b2**2)) + eps)
    ref.step([[_scalar(g1)]])
    assert float(ref.params[0][0]) == pytest.approx(theta1, abs=1e-15)
    ref.step([[_scalar(g2)]])
    assert float(ref.params[0][0]) == pytest.approx(theta2, abs=1e-15)
    assert float(ref.state[(0, 0)]["exp_avg_sq"]) == pytest.approx(v2, abs=1e-15)
    assert [float(v) for v in ref.buffer(0, 0).values] == pytest.approx([m1, m2])  # m, not g


def _random_sgd(replace_prob: float, grads: list[float], decay: float = 1.0, seed: int = 5,
                capacity: int = 2) -> RefSGDCG:
    ref = RefSGDCG([_scalar(0.0)], lr=1.0, momentum=0.0, buffer_size=capacity, decay=decay,
                   priority="tensor", policy="random", replace_prob=replace_prob, policy_seed=seed)
    for g in grads:
        ref.step([[_scalar(g)]])
    return ref


def test_reference_random_policy_never_replaces_with_probability_zero():
    grads = [float(t) for t in range(1, 21)]  # growing norms: "norm" would replace every step
    buf = _random_sgd(0.0, grads, decay=0.5).buffer(0, 0)
    assert buf.replacements == 0
    assert [float(v) for v in buf.values] == [1.0, 2.0]
    assert buf.keys == [1.0 * 0.5**20, 2.0 * 0.5**19]  # keys are kept and still decay


def test_reference_random_policy_replaces_at_every_full_step_with_probability_one():
    grads = [1.0 / t for t in range(1, 21)]  # shrinking norms: "norm" would never replace
    ref = _random_sgd(1.0, grads)
    buf = ref.buffer(0, 0)
    assert buf.replacements == 18  # steps 3..20
    slots = [(1.0, 1.0), (0.5, 0.5)]
    for t in range(3, 21):
        _, j = _draw(5, t, 2)
        slots[j] = (grads[t - 1], grads[t - 1])
    assert buf.keys == pytest.approx([k for k, _ in slots], rel=1e-15)
    assert [float(v) for v in buf.values] == [v for _, v in slots]
    norm = RefSGDCG([_scalar(0.0)], lr=1.0, momentum=0.0, buffer_size=2, priority="tensor",
                    decay=1.0)
    for g in grads:
        norm.step([[_scalar(g)]])
    assert norm.buffer(0, 0).replacements == 0


def test_reference_random_policy_half():
    grads = [math.exp(math.sin(t)) for t in range(1, 41)]
    buf = _random_sgd(0.5, grads, capacity=3, seed=11).buffer(0, 0)
    expected = sum(_draw(11, t, 3)[0] < 0.5 for t in range(4, 41))
    assert 0 < expected < 37
    assert buf.replacements == expected


def test_reference_random_policy_never_inserts_non_finite_keys():
    buf = RefBuffer(2)
    for t, key in enumerate([1.0, math.inf, 2.0, math.nan, 3.0, math.inf], start=1):
        buf.offer(key, _scalar(key), 0.5, policy="random", replace_prob=1.0, step=t)
    assert all(math.isfinite(k) for k in buf.keys)
    assert buf.replacements == 1  # only the finite key 3.0 offered to the full buffer


# =========================================================================== library vs reference
ADAM_CONFIGS = [
    ({"lr": 0.02, "weight_decay": 0.1, "amsgrad": True, "buffer_size": 3},
     [{}, {"priority": "tensor", "maximize": True, "lr": 0.01, "buffer_size": 2, "decay": 0.5}]),
    ({"lr": 0.02, "betas": (0.8, 0.95), "weight_decay": 0.05, "decoupled_weight_decay": False,
      "maximize": True, "priority": "tensor", "buffer_size": 4},
     [{}, {"priority": "group", "maximize": False, "amsgrad": True, "decay": 0.9}]),
]
SGD_CONFIGS = [
    ({"lr": 0.02, "momentum": 0.9, "weight_decay": 0.05, "buffer_size": 3},
     [{}, {"priority": "tensor", "momentum": 0.0, "maximize": True, "buffer_size": 2}]),
    ({"lr": 0.01, "momentum": 0.0, "weight_decay": 0.1, "maximize": True, "priority": "tensor",
      "buffer_size": 4},
     [{}, {"priority": "group", "momentum": 0.9, "dampening": 0.2, "maximize": False}]),
]
CONFIGS = {"AdamCM": ADAM_CONFIGS, "AdamCG": ADAM_CONFIGS, "SGDCM": SGD_CONFIGS,
           "SGDCG": SGD_CONFIGS}
VARIANTS = {
    "filled": {"aggregation": "filled"},
    "seed": {"first_step": "seed"},
    "authors": {"aggregation": "filled", "first_step": "seed"},
    "random": {"policy": "random", "policy_seed": 3},
    "random-half": {"policy": "random", "replace_prob": 0.5, "policy_seed": 7},
    "nomem-seed": {"memory": False, "first_step": "seed"},
}
ADAM_CM_VARIANTS = {
    "vg": {"second_moment": "gradient"},
    "vg-authors-random": {"second_moment": "gradient", "aggregation": "filled",
                          "first_step": "seed", "policy": "random", "replace_prob": 0.7},
}
CASES = [(name, variant) for name in MEMORY_RULES for variant in VARIANTS] + [
    ("AdamCM", variant) for variant in ADAM_CM_VARIANTS
]
PATHS = {"loop": {"foreach": False}, "foreach": {}, "fused": {"fused": True}}


def _variant(variant: str) -> dict[str, Any]:
    return VARIANTS[variant] if variant in VARIANTS else ADAM_CM_VARIANTS[variant]


# Each configuration on one eager path (loop, foreach) and both on the fused path (native
# kernel or its fallbacks); the whole cross product costs half as much again for little more.
PATH_CONFIGS = [("loop", 0), ("foreach", 1), ("fused", 0), ("fused", 1)]


def _buffer_every(path: str) -> int:
    """The fused path's native kernel defers the offer to the next step: inspecting the
    buffers completes it, so compare them only every 5th step there (as in training)."""
    return 5 if path == "fused" else 1


def _case(name: str, variant: str, path: str, config: int) -> Any:
    """With ``second_moment="gradient"``, fused=True falls back to the torch.compile path
    (no native kernel for it at the time of writing), which compiles anew per
    configuration: one such case is enough by default, the others are marked slow."""
    compiled = path == "fused" and "second_moment" in _variant(variant)
    slow = compiled and (variant, config) != ("vg", 0)
    return pytest.param(name, variant, path, config, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize(("name", "variant", "path", "config"),
                         [_case(*case, *pc) for case in CASES for pc in PATH_CONFIGS])
def test_variant_matches_reference(name, variant, path, config):
    hyper, overrides = CONFIGS[name][config]
    run_equivalence(name, SHAPES, {**hyper, **_variant(variant), **PATHS[path]}, overrides,
                    seed=20 + config, steps=STEPS, none_prob=0.3,
                    buffer_every=_buffer_every(path))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", MEMORY_RULES)
def test_variants_per_group(name, path):
    """Each group its own variant (the options are group hyperparameters)."""
    hyper, _ = CONFIGS[name][0]
    overrides = [
        {"policy": "random", "replace_prob": 0.6, "policy_seed": 2, "aggregation": "filled"},
        {"first_step": "seed", "priority": "tensor", "buffer_size": 2},
    ]
    if name == "AdamCM":
        overrides[1]["second_moment"] = "gradient"
    run_equivalence(name, SHAPES, {**hyper, **PATHS[path]}, overrides, seed=31, none_prob=0.3,
                    buffer_every=_buffer_every(path))


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["AdamCM", "SGDCM"])
def test_seed_step_of_a_tensor_first_seen_late(name, path):
    """A tensor's seed step is its own first step, whenever that comes; its gradient norm
    still counts in the group key of that step."""
    shapes = [[(3,), (2, 2), ()]]
    groups = make_groups(shapes, 11)
    hyper = {"lr": 0.02, "buffer_size": 2, "weight_decay": 0.05, "first_step": "seed",
             "aggregation": "filled"}
    opt = getattr(memoptim, name)(groups[0], **hyper, **PATHS[path])
    ref = REFERENCES[name](_clone_groups(groups)[0], **hyper)
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
        if t == 7:  # the late tensor's seed step: nothing but the step count and the buffer
            state = opt.state[groups[0][1]]
            if name == "AdamCM":
                assert torch.count_nonzero(state["exp_avg"]) == 0
                assert torch.count_nonzero(state["exp_avg_sq"]) == 0
            else:
                assert state.get("momentum_buffer") is None
    assert float(opt.state[groups[0][1]]["step"]) == STEPS - 7


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["AdamCG", "SGDCG"])
def test_seed_changes_nothing_for_critical_gradients(name, path):
    """The authors' CG step 1 is an ordinary step: ``first_step="seed"`` is the default rule
    (bit for bit)."""
    hyper, overrides = CONFIGS[name][0]
    groups = make_groups(SHAPES, 33)
    runs = []
    for first_step in ("step", "seed"):
        params = _clone_groups(groups)
        opt = getattr(memoptim, name)(_groups_spec(params, overrides), first_step=first_step,
                                      **hyper, **PATHS[path])
        for t in range(12):
            _set_grads(params, grad_stream(SHAPES, 33, t, 0.3))
            opt.step()
        runs.append([p for row in params for p in row])
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("replace_prob", [0.0, 1.0])
def test_random_policy_replacement_counts(replace_prob, path):
    """Probability 0: never a replacement once full; probability 1: one per full step."""
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = memoptim.SGDCG([p], lr=0.01, buffer_size=2, policy="random",
                         replace_prob=replace_prob, policy_seed=1, **PATHS[path])
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        p.grad = torch.randn(3, generator=gen, dtype=F64)
        opt.step()
    buf = memoptim.CriticalBuffer.from_state(opt.state[p])
    assert buf.filled == 2
    assert buf.replacements == (0 if replace_prob == 0.0 else STEPS - 2)


# =========================================================================== registry
PRESETS = {
    "adam+cm-nomem": ("AdamCM", {"memory": False}),
    "adam+cm-vg": ("AdamCM", {"second_moment": "gradient"}),
    "adam+cm-authors": ("AdamCM", {"aggregation": "filled", "first_step": "seed"}),
    "adam+cg-authors": ("AdamCG", {"aggregation": "filled", "first_step": "seed"}),
    "sgd+cm-authors": ("SGDCM", {"aggregation": "filled", "first_step": "seed"}),
    "sgd+cg-authors": ("SGDCG", {"aggregation": "filled", "first_step": "seed"}),
    "adam+cm-random": ("AdamCM", {"policy": "random"}),
    "adam+cm-fifo": ("AdamCM", {"policy": "fifo"}),
    "adam+cm-decay0.99": ("AdamCM", {"decay": 0.99}),
}


def _run_pair(opt, ref, groups, shapes, seed, steps=STEPS, none_prob=0.3):
    for t in range(steps):
        grads = grad_stream(shapes, seed, t, none_prob if t % 3 else 0.0)
        _set_grads(groups, grads)
        opt.step()
        ref.step(grads)
        assert_matches(opt, ref, groups, where=f"step {t + 1}:")


def _registry_hyper(cls_name: str) -> dict[str, Any]:
    hyper: dict[str, Any] = {"lr": 0.02, "buffer_size": 3, "weight_decay": 0.05}
    if cls_name.startswith("SGD"):
        hyper["momentum"] = 0.9
    return hyper


@pytest.mark.parametrize("name", list(PRESETS))
def test_registry_preset_matches_reference(name):
    cls_name, preset = PRESETS[name]
    hyper = _registry_hyper(cls_name)
    groups = make_groups(SHAPES, 41)
    overrides = [{}, {"priority": "tensor"}]
    opt = memoptim.create_optimizer(name, _groups_spec(groups, overrides), **hyper)
    assert isinstance(opt, getattr(memoptim, cls_name))
    ref = REFERENCES[cls_name](_groups_spec(_clone_groups(groups), overrides), **preset, **hyper)
    _run_pair(opt, ref, groups, SHAPES, 41)


@pytest.mark.parametrize(("name", "override"), [
    ("adam+cm-authors", {"aggregation": "capacity"}),
    ("sgd+cm-authors", {"first_step": "step"}),
    ("adam+cm-random", {"policy": "norm"}),
    ("adam+cm-fifo", {"policy": "norm"}),
    ("adam+cm-decay0.99", {"decay": 0.7}),
    ("adam+cm-nomem", {"memory": True}),
])
def test_registry_hyperparameters_override_the_preset(name, override):
    cls_name, preset = PRESETS[name]
    hyper = {**_registry_hyper(cls_name), **override}
    flat = [p for row in make_groups(SHAPES, 42) for p in row]
    opt = memoptim.create_optimizer(name, flat, **hyper)
    ref = REFERENCES[cls_name](_clone_groups([flat])[0], **{**preset, **hyper})
    shapes = [[tuple(p.shape) for p in flat]]
    _run_pair(opt, ref, [flat], shapes, 42)


# =========================================================================== checkpoints
def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


CHECKPOINT_CASES = [
    ("SGDCM", {"lr": 0.02, "momentum": 0.9, "policy": "random", "replace_prob": 0.5,
               "policy_seed": 3, "buffer_size": 2}, 6),
    ("AdamCM", {"lr": 0.02, "policy": "random", "replace_prob": 0.5, "policy_seed": 3,
                "buffer_size": 2, "priority": "tensor"}, 6),
    ("AdamCM", {"lr": 0.02, "weight_decay": 0.1, "first_step": "seed",
                "aggregation": "filled", "buffer_size": 3}, 1),
    ("AdamCM", {"lr": 0.02, "first_step": "seed", "amsgrad": True, "buffer_size": 3}, 4),
    ("SGDCM", {"lr": 0.02, "momentum": 0.9, "first_step": "seed", "buffer_size": 3}, 1),
    ("AdamCM", {"lr": 0.02, "policy": "fifo", "buffer_size": 2, "priority": "tensor"}, 6),
    ("SGDCG", {"lr": 0.02, "policy": "fifo", "buffer_size": 3}, 5),
]


@pytest.mark.parametrize("path", ["foreach", "fused"])
@pytest.mark.parametrize(("name", "hyper", "k"), CHECKPOINT_CASES)
def test_checkpoint_resume_is_bit_exact(name, hyper, k, path):
    """A state_dict saved after k steps continues exactly like the uninterrupted run; one
    tensor gets its first gradient only after the checkpoint (its seed step comes later)."""
    shapes = [[(3, 4), (4,), ()]]
    hyper = {**hyper, **PATHS[path]}
    cls = getattr(memoptim, name)

    def grads_at(t):
        grads = grad_stream(shapes, 50, t, 0.2)
        if t < k + 2:
            grads[0][2] = None
        return grads

    straight = [p.detach().clone().requires_grad_(True) for p in make_groups(shapes, 50)[0]]
    first = [p.detach().clone().requires_grad_(True) for p in straight]
    opt_straight, opt_first = cls(straight, **hyper), cls(first, **hyper)
    for t in range(k):
        for ps, opt in ((straight, opt_straight), (first, opt_first)):
            _set_grads([ps], grads_at(t))
            opt.step()
    saved_params = _roundtrip([p.detach() for p in first])
    saved_state = _roundtrip(opt_first.state_dict())
    resumed = [p.clone().requires_grad_(True) for p in saved_params]
    opt_resumed = cls(resumed, **hyper)
    opt_resumed.load_state_dict(saved_state)
    for t in range(k, STEPS):
        for ps, opt in ((straight, opt_straight), (resumed, opt_resumed)):
            _set_grads([ps], grads_at(t))
            opt.step()
        for a, b in zip(straight, resumed, strict=True):
            assert torch.equal(a, b), f"step {t + 1}"


# =========================================================================== validation
def _p():
    return [torch.randn(2, requires_grad=True)]


BAD = [
    ({"aggregation": "mean"}, "aggregation"),
    ({"first_step": "x"}, "first_step"),
    ({"policy": "lifo"}, "policy"),
    ({"replace_prob": 1.5}, "replace_prob"),
    ({"replace_prob": -0.1}, "replace_prob"),
]


@pytest.mark.parametrize(("kwargs", "arg"), BAD)
@pytest.mark.parametrize("name", MEMORY_RULES)
def test_bad_variant_values_are_refused(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        getattr(memoptim, name)(_p(), **kwargs)
    with pytest.raises(ValueError, match=arg):  # the reference agrees
        REFERENCES[name](_p(), **kwargs)


def test_bad_second_moment_is_refused():
    with pytest.raises(ValueError, match="second_moment"):
        memoptim.AdamCM(_p(), second_moment="m")
    with pytest.raises(ValueError, match="second_moment"):
        RefAdamCM(_p(), second_moment="m")


@pytest.mark.parametrize(("kwargs", "arg"), BAD)
def test_bad_variant_values_in_a_new_group_are_refused(kwargs, arg):
    opt = memoptim.AdamCM(_p())
    with pytest.raises(ValueError, match=arg):
        opt.add_param_group({"params": _p(), **kwargs})
