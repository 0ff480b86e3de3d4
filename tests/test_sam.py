"""SAM / ASAM (spec, "SAM"): exactness at rho = 0, hand-computed perturbations, the
perturbed-point key of Adam+SAM+CM, equivalence with the reference, manual loops,
LR schedulers and checkpoints."""

from __future__ import annotations

import io
import math

import pytest
import torch

from memoptim import SAM, SGDCM, AdamCG, AdamCM, AdaMomentum, create_optimizer
from memoptim.buffer import CriticalBuffer
from reference import (
    DTYPE,
    RefAdamCG,
    RefAdamCM,
    RefAdaMomentum,
    RefSAM,
    RefSGDCM,
    flat_params,
    make_groups,
)

F64 = torch.float64


# --------------------------------------------------------------------------- a deterministic model
def _data(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(12, 3, generator=gen, dtype=F64), torch.randn(12, 2, generator=gen, dtype=F64)


def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


SHAPES = [[(4, 3), (4,)], [(2, 4), (2,)]]


def _model(seed: int = 0):
    """Two param groups of an MLP, the data and a torch.optim-style closure factory."""
    groups = make_groups(SHAPES, seed)
    x, y = _data(seed)
    flat = flat_params(groups)

    def closure_for(opt):
        def closure():
            opt.zero_grad()
            loss = _mlp_loss(flat, x, y)
            loss.backward()
            return loss

        return closure

    return groups, flat, closure_for, (x, y)


def _clone(groups):
    return [[p.detach().clone().requires_grad_(True) for p in row] for row in groups]


def _assert_state_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer, pa, pb) -> None:
    for p, q in zip(pa, pb, strict=True):
        assert torch.equal(p, q)
        sa, sb = a.state[p], b.state[q]
        assert sa.keys() == sb.keys()
        for k in sa:
            if isinstance(sa[k], torch.Tensor):
                assert torch.equal(sa[k], sb[k]), k
            else:
                assert sa[k] == sb[k], k


# --------------------------------------------------------------------------- rho = 0
@pytest.mark.parametrize(
    ("base", "kwargs"),
    [
        (torch.optim.Adam, dict(lr=0.01)),
        (AdamCM, dict(lr=0.01, buffer_size=3)),
        (AdamCM, dict(lr=0.01, priority="tensor", weight_decay=0.1, foreach=False)),
        (AdamCG, dict(lr=0.01)),
        (SGDCM, dict(lr=0.05)),
    ],
)
def test_rho_zero_reproduces_the_base_exactly(base, kwargs):
    groups, flat, closure_for, _ = _model()
    groups2 = _clone(groups)
    flat2 = flat_params(groups2)
    x, y = _data()
    sam = SAM(flat, base, rho=0.0, **kwargs)
    ref = base(flat2, **kwargs)

    def ref_closure():
        ref.zero_grad()
        loss = _mlp_loss(flat2, x, y)
        loss.backward()
        return loss

    for _ in range(20):
        l1 = sam.step(closure_for(sam))
        l2 = ref.step(ref_closure)
        assert torch.equal(l1, l2)
    _assert_state_equal(sam.base_optimizer, ref, flat, flat2)


@pytest.mark.parametrize(("sam_name", "base_name"), [("adam+sam", "adam"), ("adam+sam+cm", "adam+cm")])
def test_registry_sam_with_rho_zero_is_its_base(sam_name, base_name):
    groups, flat, closure_for, _ = _model(1)
    flat2 = flat_params(_clone(groups))
    sam = create_optimizer(sam_name, flat, rho=0.0, lr=0.02)
    base = create_optimizer(base_name, flat2, lr=0.02)
    x, y = _data(1)

    def base_closure():
        base.zero_grad()
        loss = _mlp_loss(flat2, x, y)
        loss.backward()
        return loss

    for _ in range(15):
        sam.step(closure_for(sam))
        base.step(base_closure)
    for p, q in zip(flat, flat2, strict=True):
        assert torch.equal(p, q)


# --------------------------------------------------------------------------- hand-computed
def _two_scalars(a0: float, b0: float, split_groups: bool):
    a = torch.tensor(a0, dtype=F64, requires_grad=True)
    b = torch.tensor([b0], dtype=F64, requires_grad=True)
    unused = torch.tensor([7.0], dtype=F64, requires_grad=True)  # never gets a gradient
    if split_groups:
        params = [{"params": [a]}, {"params": [b, unused]}]
    else:
        params = [a, b, unused]
    return a, b, unused, params


@pytest.mark.parametrize("split_groups", [False, True])
def test_sam_perturbation_and_step_by_hand(split_groups):
    """L = (a^2 + 2 b^2) / 2 at (3, 2): g = (3, 4), ||g|| = 5 over *both* tensors.

    rho = 0.5: e = 0.5 (3, 4) / 5 = (0.3, 0.4); perturbed point (3.3, 2.4), where
    g' = (3.3, 4.8); SGD with lr 0.1 from (3, 2): (2.67, 1.52).
    """
    a, b, unused, params = _two_scalars(3.0, 2.0, split_groups)

    def loss_fn():
        return 0.5 * (a**2 + 2 * b[0] ** 2)

    sam = SAM(params, torch.optim.SGD, rho=0.5, lr=0.1)
    loss_fn().backward()
    sam.first_step(zero_grad=True)
    assert float(a.detach()) == pytest.approx(3.3, abs=1e-15)
    assert float(b.detach()) == pytest.approx(2.4, abs=1e-15)
    assert float(unused.detach()) == 7.0
    loss_fn().backward()
    assert float(a.grad) == pytest.approx(3.3, abs=1e-15)
    assert float(b.grad) == pytest.approx(4.8, abs=1e-15)
    sam.second_step(zero_grad=True)
    assert float(a.detach()) == pytest.approx(2.67, abs=1e-15)
    assert float(b.detach()) == pytest.approx(1.52, abs=1e-15)
    assert float(unused.detach()) == 7.0 and not sam.state.get(unused)

    # the same through step(closure), which returns the loss at the unperturbed point
    a2, b2, _, params2 = _two_scalars(3.0, 2.0, split_groups)
    sam2 = SAM(params2, torch.optim.SGD, rho=0.5, lr=0.1)

    def closure():
        sam2.zero_grad()
        loss = 0.5 * (a2**2 + 2 * b2[0] ** 2)
        loss.backward()
        return loss

    loss = sam2.step(closure)
    assert float(loss.detach()) == 0.5 * (9.0 + 8.0)
    assert float(a2.detach()) == pytest.approx(2.67, abs=1e-15)
    assert float(b2.detach()) == pytest.approx(1.52, abs=1e-15)


@pytest.mark.parametrize("split_groups", [False, True])
def test_asam_perturbation_by_hand(split_groups):
    """ASAM: s = |theta|.  L = (3 a^2 + b^2) / 2 at (-1, 2): g = (-3, 2), s g = (-3, 4),
    ||s g|| = 5, s^2 g = (-3, 8); rho = 0.5: e = (-0.3, 0.8).  Perturbed point (-1.3, 2.8),
    g' = (-3.9, 2.8); SGD lr 0.1 from (-1, 2): (-0.61, 1.72)."""
    a, b, unused, params = _two_scalars(-1.0, 2.0, split_groups)

    def loss_fn():
        return 0.5 * (3 * a**2 + b[0] ** 2)

    sam = SAM(params, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1)
    loss_fn().backward()
    sam.first_step(zero_grad=True)
    assert float(a.detach()) == pytest.approx(-1.3, abs=1e-15)
    assert float(b.detach()) == pytest.approx(2.8, abs=1e-15)
    assert float(unused.detach()) == 7.0
    loss_fn().backward()
    sam.second_step()
    assert float(a.detach()) == pytest.approx(-0.61, abs=1e-15)
    assert float(b.detach()) == pytest.approx(1.72, abs=1e-15)


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(torch.float32, 1e-30), (torch.float32, 1e20), (F64, 1e-170), (F64, 1e160)],
)
@pytest.mark.parametrize("adaptive", [False, True])
def test_perturbation_size_does_not_depend_on_the_gradient_scale(dtype, scale, adaptive):
    """e = rho s^2 g / ||s g|| is invariant to the scale of g: at theta = (1, 1) (s = 1 for
    ASAM too), g = c (3, 4) gives e = rho (0.6, 0.8) for every c > 0 -- also when ||g||^2
    under- or overflows the dtype (norms need scaling there)."""
    p = torch.ones(2, dtype=dtype, requires_grad=True)
    sam = SAM([p], torch.optim.SGD, rho=0.5, adaptive=adaptive, lr=0.0)
    p.grad = torch.tensor([3.0, 4.0], dtype=dtype) * scale
    sam.first_step()
    assert (p.detach() - 1).tolist() == pytest.approx([0.3, 0.4], rel=1e-5)


def test_reference_sam_matches_the_hand_computed_case():
    for adaptive, start, grad_fn, expected in [
        (False, (3.0, 2.0), lambda a, b: (a, 2 * b), (0.3, 0.4)),
        (True, (-1.0, 2.0), lambda a, b: (3 * a, b), (-0.3, 0.8)),
    ]:
        base = RefSGDCM([torch.tensor(start[0]), torch.tensor([start[1]])], lr=0.1, momentum=0.0)
        sam = RefSAM(base, rho=0.5, adaptive=adaptive)
        ga, gb = grad_fn(*(p for p in base.params[0]))
        e = sam.perturbation([[ga, gb]])
        assert float(e[0][0]) == pytest.approx(expected[0], abs=1e-15)
        assert float(e[0][1]) == pytest.approx(expected[1], abs=1e-15)


# --------------------------------------------------------------------------- Adam+SAM+CM key
@pytest.mark.parametrize("priority", ["tensor", "group"])
def test_adam_sam_cm_key_is_the_norm_of_the_perturbed_point_gradient(priority):
    """theta = [3, 2], L = (t0^2 + 2 t1^2) / 2: g = (3, 4) with norm 5, but the base gets
    g' = (3.3, 4.8) (rho = 0.5, as above), so the key is ||g'|| * decay, not 5 * decay."""
    theta = torch.tensor([3.0, 2.0], dtype=F64, requires_grad=True)
    other = torch.tensor([1.0], dtype=F64, requires_grad=True)  # L = other^2 / 2
    sam = SAM([theta, other], AdamCM, rho=0.5, lr=0.01, betas=(0.5, 0.999), buffer_size=2,
              decay=0.5, priority=priority)

    def closure():
        sam.zero_grad()
        loss = 0.5 * (theta[0] ** 2 + 2 * theta[1] ** 2) + 0.5 * other[0] ** 2
        loss.backward()
        return loss

    sam.step(closure)
    # ||(3, 4, 1)|| = sqrt(26): e = 0.5 (3, 4, 1) / sqrt(26)
    e = [0.5 * g / math.sqrt(26.0) for g in (3.0, 4.0, 1.0)]
    g_theta = [3.0 + e[0], 2 * (2.0 + e[1])]
    g_other = 1.0 + e[2]
    n_theta = math.hypot(*g_theta)
    key = n_theta if priority == "tensor" else n_theta + abs(g_other)
    buf = CriticalBuffer.from_state(sam.base_optimizer.state[theta])
    assert buf is not None and buf.filled == 1
    assert float(buf.keys[0]) == pytest.approx(0.5 * key, abs=1e-14)
    assert float(buf.keys[0]) != pytest.approx(0.5 * (5.0 if priority == "tensor" else 6.0))
    assert buf.values[0].tolist() == pytest.approx([0.5 * g for g in g_theta], abs=1e-15)


# --------------------------------------------------------------------------- reference, 30 steps
BASES = {
    "adam": (torch.optim.Adam, lambda groups: _disabled(RefAdamCG(groups, lr=0.02,
                                                                  decoupled_weight_decay=False))),
    "adam+cm": (AdamCM, lambda groups: RefAdamCM(groups, lr=0.02)),
    "adam+cg/tensor": (AdamCG, lambda groups: RefAdamCG(groups, lr=0.02, priority="tensor")),
    "sgd+cm": (SGDCM, lambda groups: RefSGDCM(groups, lr=0.02)),
    "adamomentum": (AdaMomentum, lambda groups: RefAdaMomentum(groups, lr=0.02)),
}
BASE_KW = {"adam+cg/tensor": {"priority": "tensor"}}


def _disabled(ref):
    ref.disable_memory()
    return ref


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("base", list(BASES))
def test_sam_matches_reference_for_30_steps(base, adaptive):
    cls, make_ref = BASES[base]
    _, flat, closure_for, (x, y) = _model(3)
    sam = SAM(flat, cls, rho=0.1, adaptive=adaptive, lr=0.02, **BASE_KW.get(base, {}))
    ref = RefSAM(make_ref([p.detach().clone() for p in flat]), rho=0.1, adaptive=adaptive)

    def grad_fn(params):
        leaves = [p.detach().clone().requires_grad_(True) for p in flat_params(params)]
        loss = _mlp_loss(leaves, x, y)
        return float(loss.detach()), [list(torch.autograd.grad(loss, leaves))]

    for t in range(30):
        loss = sam.step(closure_for(sam))
        ref_loss = ref.step(grad_fn)
        assert float(loss.detach()) == pytest.approx(ref_loss, abs=1e-12), t
        for p, r in zip(flat, ref.params[0], strict=True):
            torch.testing.assert_close(p.detach(), r, atol=1e-12, rtol=0)
    for i, p in enumerate(flat):
        state, rstate = sam.base_optimizer.state[p], ref.base.state[(0, i)]
        assert float(state["step"]) == rstate["step"] == 30
        key = "momentum_buffer" if base.startswith("sgd") else "exp_avg"
        torch.testing.assert_close(state[key], rstate[key], atol=1e-12, rtol=1e-12)
        buf, rbuf = CriticalBuffer.from_state(state), rstate.get("buffer")
        if rbuf is None:
            assert buf is None
        else:
            assert buf is not None and buf.filled == len(rbuf.slots)
            torch.testing.assert_close(buf.keys.to(DTYPE), torch.tensor(rbuf.keys, dtype=DTYPE),
                                       atol=1e-12, rtol=1e-12)


# --------------------------------------------------------------------------- manual loop
def test_first_step_second_step_loop_equals_step_closure():
    groups, flat, closure_for, (x, y) = _model(4)
    flat2 = flat_params(_clone(groups))
    sam = SAM(flat, AdamCM, rho=0.05, lr=0.02, buffer_size=3)
    manual = SAM(flat2, AdamCM, rho=0.05, lr=0.02, buffer_size=3)
    for _ in range(12):
        loss = sam.step(closure_for(sam))
        manual.zero_grad()
        first = _mlp_loss(flat2, x, y)
        first.backward()
        manual.first_step(zero_grad=True)
        _mlp_loss(flat2, x, y).backward()
        manual.second_step(zero_grad=True)
        assert torch.equal(loss, first)
    _assert_state_equal(sam.base_optimizer, manual.base_optimizer, flat, flat2)


def test_instance_and_class_forms_agree():
    groups, flat, closure_for, _ = _model(5)
    flat2 = flat_params(_clone(groups))
    by_class = SAM(flat, AdamCM, rho=0.05, lr=0.02)
    by_instance = SAM(flat2, AdamCM(flat2, lr=0.02), rho=0.05)
    for _ in range(8):
        by_class.step(closure_for(by_class))
        by_instance.step(_closure(by_instance, flat2, 5))
    _assert_state_equal(by_class.base_optimizer, by_instance.base_optimizer, flat, flat2)


def _closure(opt, flat, seed):
    x, y = _data(seed)

    def closure():
        opt.zero_grad()
        loss = _mlp_loss(flat, x, y)
        loss.backward()
        return loss

    return closure


# --------------------------------------------------------------------------- LR scheduler
def test_lr_scheduler_through_sam_drives_the_base():
    groups, flat, closure_for, _ = _model(6)
    flat2 = flat_params(_clone(groups))
    sam = SAM(flat, AdamCM, rho=0.0, lr=0.04)
    base = AdamCM(flat2, lr=0.04)
    assert sam.param_groups is sam.base_optimizer.param_groups
    s1 = torch.optim.lr_scheduler.StepLR(sam, step_size=3, gamma=0.5)
    s2 = torch.optim.lr_scheduler.StepLR(base, step_size=3, gamma=0.5)
    for t in range(10):
        sam.step(closure_for(sam))
        base.step(_closure(base, flat2, 6))
        s1.step()
        s2.step()
        expected = 0.04 * 0.5 ** ((t + 1) // 3)
        assert sam.base_optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-15)
    for p, q in zip(flat, flat2, strict=True):
        assert torch.equal(p, q)  # the scheduled lr really reached the base's update


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("base", [AdamCM, torch.optim.Adam])
def test_state_dict_round_trip_continues_bit_for_bit(base):
    groups, flat, closure_for, _ = _model(7)
    sam = SAM(flat, base, rho=0.05, lr=0.02)
    for _ in range(3):  # AdamCM's buffer (C = 5) is only partly filled here
        sam.step(closure_for(sam))
    blob = io.BytesIO()
    torch.save(sam.state_dict(), blob)
    blob.seek(0)
    groups2 = _clone(groups)
    flat2 = flat_params(groups2)
    resumed = SAM(flat2, base, rho=0.05, lr=0.02)
    resumed.load_state_dict(torch.load(blob, weights_only=True))
    for _ in range(17):
        sam.step(closure_for(sam))
        resumed.step(_closure(resumed, flat2, 7))
    _assert_state_equal(sam.base_optimizer, resumed.base_optimizer, flat, flat2)
    if base is AdamCM:
        buf = CriticalBuffer.from_state(resumed.base_optimizer.state[flat2[0]])
        assert buf is not None and buf.filled == 5
