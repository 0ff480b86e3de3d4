"""What a torch.optim user expects from every memoptim optimizer.

Param groups, closures, maximize, None gradients, zero_grad, repr, deepcopy,
LR schedulers (also through SAM), add_param_group, dtypes and layouts,
GradScaler, argument validation and clear errors.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

import memoptim
from memoptim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum, create_optimizer

MEMORY = [AdamCM, AdamCG, SGDCM, SGDCG]
ALL = [*MEMORY, AdaMomentum]
# lr per class chosen so that 20 steps make clear progress on the problems below.
LR = {AdamCM: 1e-2, AdamCG: 1e-2, SGDCM: 1e-3, SGDCG: 1e-3, AdaMomentum: 1e-2}


def _problem(dtype=torch.float32, seed=0, non_contiguous=False):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(10, 5, generator=g, dtype=dtype)
    if non_contiguous:
        w = torch.randn(5, 10, generator=g, dtype=dtype).t()
        assert not w.is_contiguous()
    w.requires_grad_(True)
    b = torch.randn(10, generator=g, dtype=dtype, requires_grad=True)
    x = torch.randn(5, generator=g, dtype=dtype)

    def loss():
        return (w @ x + b).pow(2).sum()

    return [w, b], loss


def _train(opt, loss, steps=20):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    with torch.no_grad():
        return loss().item()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("non_contiguous", [False, True])
def test_goes_right_direction(cls, non_contiguous):
    params, loss = _problem(non_contiguous=non_contiguous)
    start = loss().item()
    end = _train(cls(params, lr=LR[cls]), loss)
    assert end < 0.9 * start


@pytest.mark.parametrize("cls", ALL)
def test_maximize_goes_up(cls):
    params, loss = _problem()
    start = loss().item()
    end = _train(cls(params, lr=LR[cls], maximize=True), loss)
    assert end > 1.05 * start


@pytest.mark.parametrize("name", ["adam+sam", "adam+sam+cm"])
def test_sam_decreases_loss(name):
    params, loss = _problem()
    opt = create_optimizer(name, params, lr=1e-2, rho=0.05)
    start = loss().item()

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    for _ in range(20):
        first = opt.step(closure)
        assert isinstance(first, torch.Tensor)
    assert loss().item() < 0.9 * start


@pytest.mark.parametrize("cls", ALL)
def test_step_with_closure_returns_loss(cls):
    params, loss = _problem()
    opt = cls(params, lr=LR[cls])

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    expected = loss().item()
    assert opt.step(closure).item() == pytest.approx(expected)


@pytest.mark.parametrize("cls", ALL)
def test_params_without_grad_are_skipped_and_get_no_state(cls):
    params, loss = _problem()
    frozen = torch.randn(3, requires_grad=True)
    before = frozen.detach().clone()
    opt = cls([*params, frozen], lr=LR[cls])
    _train(opt, loss, steps=3)
    assert torch.equal(frozen, before)
    assert frozen not in opt.state or len(opt.state[frozen]) == 0
    assert all(len(opt.state[p]) > 0 for p in params)


@pytest.mark.parametrize("cls", ALL)
def test_group_with_zero_lr_does_not_move(cls):
    (w, b), loss = _problem()
    opt = cls([{"params": [w]}, {"params": [b], "lr": 0.0}], lr=LR[cls])
    b0 = b.detach().clone()
    w0 = w.detach().clone()
    _train(opt, loss, steps=5)
    assert torch.equal(b, b0)
    assert not torch.equal(w, w0)


@pytest.mark.parametrize("cls", MEMORY)
def test_per_group_buffer_hyperparameters(cls):
    (w, b), loss = _problem()
    opt = cls(
        [{"params": [w], "buffer_size": 3, "priority": "tensor"}, {"params": [b], "decay": 0.5}],
        lr=LR[cls],
    )
    _train(opt, loss, steps=4)
    assert opt.state[w]["critical_values"].shape[0] == 3
    assert opt.state[b]["critical_values"].shape[0] == 5
    assert opt.param_groups[1]["decay"] == 0.5


@pytest.mark.parametrize("cls", ALL)
def test_add_param_group_fills_defaults_and_validates(cls):
    params, _ = _problem()
    extra = torch.randn(4, requires_grad=True)
    opt = cls(params[:1], lr=LR[cls])
    opt.add_param_group({"params": [params[1]]})
    assert opt.param_groups[1]["lr"] == LR[cls]
    if cls in MEMORY:
        with pytest.raises(ValueError, match="buffer_size"):
            opt.add_param_group({"params": [extra], "buffer_size": 0})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.randn(2, requires_grad=True)], "lr": -1.0})


@pytest.mark.parametrize("cls", ALL)
def test_zero_grad_repr_and_deepcopy(cls):
    params, loss = _problem()
    opt = cls(params, lr=LR[cls])
    _train(opt, loss, steps=3)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    assert cls.__name__ in repr(opt)
    clone = copy.deepcopy(opt)
    for i, p in enumerate(params):
        for k, v in opt.state[p].items():
            c = clone.state[clone.param_groups[0]["params"][i]][k]
            if torch.is_tensor(v):
                assert torch.equal(c, v) and c.data_ptr() != v.data_ptr()
            else:  # a deferred offer's source entry (native path): a name
                assert c == v


@pytest.mark.parametrize("cls", ALL)
def test_lr_scheduler_changes_lr(cls):
    params, loss = _problem()
    opt = cls(params, lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(4):
        opt.zero_grad()
        loss().backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_lr_scheduler_through_sam_reaches_base():
    params, loss = _problem()
    sam = SAM(params, AdamCM, lr=0.1, rho=0.05)
    sched = torch.optim.lr_scheduler.MultiStepLR(sam, milestones=[1], gamma=0.1)

    def closure():
        sam.zero_grad()
        value = loss()
        value.backward()
        return value

    sam.step(closure)
    sched.step()
    assert sam.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert sam.param_groups is sam.base_optimizer.param_groups


def test_sam_accepts_built_base_and_rejects_mismatch():
    params, _ = _problem()
    base = AdamCM(params, lr=1e-3)
    sam = SAM(params, base, rho=0.1)
    assert sam.base_optimizer is base and sam.state is base.state
    with pytest.raises(ValueError, match="params differ"):
        SAM([torch.randn(2, requires_grad=True)], base)
    with pytest.raises(TypeError, match="already-built"):
        SAM(None, base, lr=1e-3)
    with pytest.raises(ValueError, match="rho"):
        SAM(params, AdamCM, rho=-0.1)
    with pytest.raises(RuntimeError, match="closure"):
        sam.step()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_dtypes_keep_parameter_dtype(cls, dtype):
    params, loss = _problem(dtype=dtype)
    start = loss().float().item()
    # bf16 rounding swallows Adam's 1e-2 steps on O(1) weights; SGD's steps are large already.
    coarse = dtype == torch.bfloat16 and cls not in (SGDCM, SGDCG)
    opt = cls(params, lr=LR[cls] * (10 if coarse else 1))
    end = _train(opt, loss, steps=20)
    assert end < start
    for p in params:
        assert p.dtype == dtype
        for k, v in opt.state[p].items():
            if k in ("exp_avg", "exp_avg_sq", "momentum_buffer", "critical_values"):
                assert v.dtype == dtype, k
            if k == "critical_sum":
                assert v.dtype == torch.promote_types(dtype, torch.float32)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("foreach", [False, True])
def test_zero_dim_parameter(cls, foreach):
    p = torch.tensor(3.0, requires_grad=True)
    opt = cls([p], lr=LR[cls] * 10, foreach=foreach)
    for _ in range(30):
        opt.zero_grad()
        (p**2).backward()
        opt.step()
    assert abs(p.item()) < 3.0


@pytest.mark.parametrize("cls", MEMORY)
def test_buffer_dtype_bfloat16_halves_buffer_memory(cls):
    params, loss = _problem(dtype=torch.float32)
    opt = cls(params, lr=LR[cls], buffer_dtype=torch.bfloat16)
    _train(opt, loss, steps=8)
    st = opt.state[params[0]]
    assert st["critical_values"].dtype == torch.bfloat16
    assert st["critical_sum"].dtype == torch.float32
    # The running sum equals the (bf16) stored values summed exactly in float32.
    exact = st["critical_values"].float().sum(0)
    assert torch.allclose(st["critical_sum"], exact, rtol=0, atol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_grad_scaler_fp16_loss_scaling(cls):
    # GradScaler's unscale/inf-check protocol works with any optimizer whose step reads p.grad.
    params, loss = _problem()
    opt = cls(params, lr=LR[cls])
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    start = loss().item()
    for _ in range(20):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss()
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
    assert loss().item() < start
    assert all(torch.isfinite(p).all() for p in params)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"lr": -1e-3}, "lr"),
        ({"eps": -1.0}, "eps"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"betas": (1.0, 0.999)}, "betas"),
        ({"betas": (0.9, -0.1)}, "betas"),
        ({"buffer_size": 0}, "buffer_size"),
        ({"buffer_size": 2.5}, "buffer_size"),
        ({"buffer_size": True}, "buffer_size"),
        ({"decay": 0.0}, "decay"),
        ({"decay": 1.5}, "decay"),
        ({"priority": "global"}, "priority"),
        ({"buffer_dtype": torch.int32}, "buffer_dtype"),
    ],
)
@pytest.mark.parametrize("cls", [AdamCM, AdamCG])
def test_adam_family_rejects_bad_arguments(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.randn(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"lr": -1.0}, "lr"), ({"momentum": -0.9}, "momentum"), ({"weight_decay": -1.0}, "weight_decay"),
     ({"buffer_size": -3}, "buffer_size"), ({"decay": -0.7}, "decay"), ({"priority": None}, "priority")],
)
@pytest.mark.parametrize("cls", [SGDCM, SGDCG])
def test_sgd_family_rejects_bad_arguments(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls([torch.randn(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize(
    "kwargs, name", [({"lr": -1.0}, "lr"), ({"eps": -1e-16}, "eps"), ({"betas": (0.9, 1.0)}, "betas")]
)
def test_adamomentum_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaMomentum([torch.randn(2, requires_grad=True)], **kwargs)


@pytest.mark.parametrize("cls", ALL)
def test_sparse_gradient_is_a_clear_error(cls):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_create_optimizer_knows_every_spec_name_and_lists_them_on_error():
    names = ["adam", "adamw", "sgd", "adam+cg", "adam+cm", "sgd+cg", "sgd+cm", "adam+sam",
             "adam+sam+cm", "adamomentum"]
    from memoptim.registry import LABELS, REGISTRY

    ablations = ["adam+cm-nomem", "adam+cm-vg", "adam+cm-random", "adam+cm-fifo", "adam+cm-decay0.99",
                 "adam+cm-authors", "adam+cg-authors", "sgd+cm-authors", "sgd+cg-authors", "lion", "lion+cg",
                 "lion+cm"]
    assert memoptim.available_optimizers() == names + ablations  # the paper's first, in its order
    assert [n for n, e in REGISTRY.items() if e.paper] == [n for n in names if n != "adamw"]
    assert list(LABELS) == names + ablations  # one display label per name, the single source
    for name in names + ablations:
        opt = create_optimizer(name, [torch.randn(2, requires_grad=True)], lr=1e-3)
        assert isinstance(opt, torch.optim.Optimizer)
    assert isinstance(create_optimizer("Adam+CM", [torch.randn(2, requires_grad=True)]), AdamCM)
    sam_cm = create_optimizer("adam+sam+cm", [torch.randn(2, requires_grad=True)], rho=0.1)
    assert isinstance(sam_cm, SAM) and isinstance(sam_cm.base_optimizer, AdamCM)
    with pytest.raises(ValueError, match=r"valid names: adam, adamw.*adamomentum"):
        create_optimizer("adam+xyz", [torch.randn(2, requires_grad=True)])


@pytest.mark.parametrize("cls", MEMORY)
def test_non_finite_gradient_never_enters_buffer(cls):
    p = torch.zeros(4, requires_grad=True)
    opt = cls([p], lr=1e-3, priority="tensor")
    p.grad = torch.ones(4)
    opt.step()
    p.grad = torch.full((4,), math.nan)
    opt.step()
    p.grad = torch.full((4,), math.inf)
    opt.step()
    buf = memoptim.CriticalBuffer.from_state(opt.state[p])
    assert buf.filled == 1
    assert torch.isfinite(buf.values).all() and torch.isfinite(buf.total).all()


# ---------------------------------------------------------------------------- memory switch
def _random_grads(params, generator):
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype)


@pytest.mark.parametrize("cls", MEMORY)
@pytest.mark.parametrize("foreach", [False, True])
def test_memory_off_from_the_start_is_the_empty_buffer_rule(cls, foreach):
    """With memory off, aggr(x, B) = x forever: same as a buffer that never accepts anything."""
    torch.manual_seed(0)
    a = [torch.randn(3, 2, dtype=torch.float64, requires_grad=True)]
    b = [a[0].detach().clone().requires_grad_(True)]
    off = cls(a, lr=1e-2, foreach=foreach)
    off.disable_memory()
    # decay=1 and keys never beaten would still insert; instead compare with the base rule:
    # AdamCG/SGDCG/SGDCM off == torch's Adam/SGD; AdamCM off == Adam with v from m^2 (checked
    # by hand below).
    g = torch.Generator().manual_seed(1)
    g2 = torch.Generator().manual_seed(1)
    if cls is AdamCG:
        ref = torch.optim.Adam(b, lr=1e-2, foreach=foreach)
    elif cls is SGDCG:
        ref = torch.optim.SGD(b, lr=1e-2, foreach=foreach)
    elif cls is SGDCM:
        ref = torch.optim.SGD(b, lr=1e-2, momentum=0.9, foreach=foreach)
    else:
        ref = None
    m = torch.zeros(3, 2, dtype=torch.float64)
    v = torch.zeros(3, 2, dtype=torch.float64)
    for t in range(1, 21):
        _random_grads(a, g)
        _random_grads(b, g2)
        off.step()
        if ref is not None:
            ref.step()
            assert torch.equal(a[0], b[0])
        else:
            with torch.no_grad():
                gr = b[0].grad
                m = 0.9 * m + 0.1 * gr
                v = 0.999 * v + 0.001 * m * m
                b[0] -= 1e-2 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)
            torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-12)
        assert "critical_values" not in off.state[a[0]]


@pytest.mark.parametrize("cls", MEMORY)
def test_disable_memory_mid_training_frees_buffer_and_keeps_other_state(cls):
    p = torch.randn(6, dtype=torch.float64, requires_grad=True)
    opt = cls([p], lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        _random_grads([p], g)
        opt.step()
    kept = {k: v.clone() for k, v in opt.state[p].items() if not k.startswith("critical_")}
    opt.disable_memory()
    assert not any(k.startswith("critical_") for k in opt.state[p])
    assert all(torch.equal(opt.state[p][k], v) for k, v in kept.items())
    assert opt.param_groups[0]["memory"] is False
    _random_grads([p], g)
    opt.step()
    assert not any(k.startswith("critical_") for k in opt.state[p])


def test_group_memory_flag_turns_one_group_off():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    opt = AdamCM([{"params": [a]}, {"params": [b], "memory": False}])
    a.grad = torch.ones(3)
    b.grad = torch.ones(3)
    opt.step()
    assert "critical_values" in opt.state[a]
    assert "critical_values" not in opt.state[b]


def test_changing_buffer_size_of_a_live_group_is_refused():
    p = torch.randn(3, requires_grad=True)
    opt = AdamCM([p])
    p.grad = torch.ones(3)
    opt.step()
    opt.param_groups[0]["buffer_size"] = 7
    with pytest.raises(ValueError, match="buffer_size"):
        opt.step()
