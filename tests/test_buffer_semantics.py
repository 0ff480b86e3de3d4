"""The critical buffer's behaviour, observed through the public optimizers.

Hand-crafted gradients with exactly representable norms (``[3, 4]`` has norm 5) and decay
factors that are powers of two make every expected key, value and parameter exact, so most
assertions use ``==``.  The buffer is read with :meth:`memoptim.buffer.CriticalBuffer.from_state`.
Semantics: ``docs/semantics.md``, "The critical buffer".
"""

from __future__ import annotations

import math

import pytest
import torch

from memoptim import SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum
from memoptim.buffer import CriticalBuffer

F64 = torch.float64
INF = math.inf


def _params(*shapes: tuple[int, ...], init: float = 0.0) -> list[torch.Tensor]:
    return [torch.full(s, init, dtype=F64, requires_grad=True) for s in shapes]


def _step(opt: torch.optim.Optimizer, params: list[torch.Tensor], *grads) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else torch.tensor(g, dtype=F64)
    opt.step()


def _buf(opt: torch.optim.Optimizer, p: torch.Tensor) -> CriticalBuffer:
    buf = CriticalBuffer.from_state(opt.state[p])
    assert buf is not None
    return buf


def _keys(opt, p) -> list[float]:
    return _buf(opt, p).keys.tolist()


def _values(opt, p) -> list[list[float]]:
    return _buf(opt, p).values.tolist()


def _sgd_cg(params, **kw) -> SGDCG:
    """Plain SGD+CG (no momentum, no weight decay): the update is exactly -lr * aggr(g, B)."""
    kw = {"lr": 1.0, "momentum": 0.0, "priority": "tensor", "decay": 0.5, **kw}
    return SGDCG(params, **kw)


# --------------------------------------------------------------------------- fill & replace
@pytest.mark.parametrize("foreach", [False, True])
def test_fill_order_and_decay_right_after_insertion(foreach):
    (p,) = params = _params((2,))
    opt = _sgd_cg(params, buffer_size=3, foreach=foreach)
    _step(opt, params, [1.0, 0.0])
    assert _keys(opt, p) == [0.5, -INF, -INF]  # inserted with key 1, decayed once already
    assert _values(opt, p) == [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]
    assert _buf(opt, p).filled == 1
    _step(opt, params, [0.0, 2.0])
    assert _keys(opt, p) == [0.25, 1.0, -INF]
    _step(opt, params, [3.0, 0.0])
    assert _keys(opt, p) == [0.125, 0.5, 1.5]
    assert _values(opt, p) == [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]
    buf = _buf(opt, p)
    assert (buf.capacity, buf.filled, buf.replacements) == (3, 3, 0)
    assert buf.total.tolist() == [4.0, 2.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_replacement_only_when_key_beats_current_minimum(foreach):
    (p,) = params = _params((2,))
    opt = _sgd_cg(params, buffer_size=3, foreach=foreach)
    for g in ([1.0, 0.0], [0.0, 2.0], [3.0, 0.0]):
        _step(opt, params, g)
    # keys [0.125, 0.5, 1.5]; a key of 0.1 < 0.125 does not enter, but all keys decay
    _step(opt, params, [0.1, 0.0])
    assert _keys(opt, p) == [0.0625, 0.25, 0.75]
    assert _values(opt, p) == [[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]]
    assert _buf(opt, p).replacements == 0
    # key 1 > 0.0625: replaces slot 0 (the minimum), then decays
    _step(opt, params, [0.0, 1.0])
    assert _keys(opt, p) == [0.5, 0.125, 0.375]
    assert _values(opt, p) == [[0.0, 1.0], [0.0, 2.0], [3.0, 0.0]]
    # key 0.25 > 0.125: replaces slot 1, now the minimum
    _step(opt, params, [0.25, 0.0])
    assert _keys(opt, p) == [0.25, 0.125, 0.1875]
    assert _values(opt, p) == [[0.0, 1.0], [0.25, 0.0], [3.0, 0.0]]
    buf = _buf(opt, p)
    assert buf.replacements == 2
    assert buf.total.tolist() == [3.25, 1.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_ties_do_not_replace_and_the_first_minimum_slot_is_replaced(foreach):
    (p,) = params = _params((1,))
    opt = _sgd_cg(params, buffer_size=3, decay=1.0, foreach=foreach)
    for g in (2.0, 1.0, -1.0):
        _step(opt, params, [g])
    assert _keys(opt, p) == [2.0, 1.0, 1.0]
    _step(opt, params, [1.0])  # tie with the minimum: no replacement
    assert _values(opt, p) == [[2.0], [1.0], [-1.0]]
    assert _buf(opt, p).replacements == 0
    _step(opt, params, [-1.5])  # beats the minimum held by slots 1 and 2: slot 1 goes
    assert _keys(opt, p) == [2.0, 1.5, 1.0]
    assert _values(opt, p) == [[2.0], [-1.5], [-1.0]]
    _step(opt, params, [1.25])
    assert _keys(opt, p) == [2.0, 1.5, 1.25]
    assert _values(opt, p) == [[2.0], [-1.5], [1.25]]
    assert _buf(opt, p).replacements == 2


def test_ties_against_a_decayed_key():
    (p,) = params = _params((1,))
    opt = _sgd_cg(params, buffer_size=1, decay=0.5)
    _step(opt, params, [4.0])  # key 4 -> 2
    _step(opt, params, [2.0])  # tie with 2: stays; -> 1
    _step(opt, params, [-1.0])  # tie with 1: stays; -> 0.5
    assert _keys(opt, p) == [0.5]
    assert _values(opt, p) == [[4.0]]
    _step(opt, params, [0.75])  # 0.75 > 0.5: replaces; -> 0.375
    assert _keys(opt, p) == [0.375]
    assert _values(opt, p) == [[0.75]]


def test_zero_gradient_has_a_finite_key_and_is_stored():
    (p,) = params = _params((2,))
    opt = _sgd_cg(params, buffer_size=2)
    _step(opt, params, [0.0, 0.0])
    assert _keys(opt, p) == [0.0, -INF]
    assert _buf(opt, p).filled == 1


# --------------------------------------------------------------------------- non-finite
@pytest.mark.parametrize("bad", [INF, -INF, math.nan])
@pytest.mark.parametrize("foreach", [False, True])
def test_non_finite_gradient_never_enters_the_buffer(bad, foreach):
    a, b = params = _params((2,), (2,))
    opt = _sgd_cg(params, buffer_size=3, foreach=foreach)
    _step(opt, params, [3.0, 4.0], [0.0, 1.0])
    _step(opt, params, [bad, 0.0], [0.0, 2.0])
    buf = _buf(opt, a)
    assert buf.filled == 1 and buf.replacements == 0
    assert _keys(opt, a) == [1.25, -INF, -INF]  # not inserted, but the keys still decay
    assert _values(opt, a) == [[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]]
    assert buf.total.tolist() == [3.0, 4.0]  # the running sum is not corrupted
    assert _keys(opt, b) == [0.25, 1.0, -INF]  # tensor priority: b is unaffected
    # the next finite gradient goes into the next free slot, the sum stays exact
    _step(opt, params, [0.0, 1.0], [0.0, 0.0])
    assert _keys(opt, a) == [0.625, 0.5, -INF]
    assert _buf(opt, a).total.tolist() == [3.0, 5.0]


@pytest.mark.parametrize("foreach", [False, True])
def test_non_finite_gradient_blocks_the_whole_group_in_group_priority(foreach):
    a, b = params = _params((2,), (2,))
    opt = _sgd_cg(params, buffer_size=2, priority="group", foreach=foreach)
    _step(opt, params, [3.0, 4.0], [0.0, 1.0])  # group key 6
    assert _keys(opt, a) == _keys(opt, b) == [3.0, -INF]
    before = b.detach().clone()
    _step(opt, params, [math.nan, 0.0], [0.0, 2.0])  # group key NaN: nobody inserts
    assert _keys(opt, a) == _keys(opt, b) == [1.5, -INF]
    assert _values(opt, b) == [[0.0, 1.0], [0.0, 0.0]]
    # b's own update is still finite and uses the (uncorrupted) buffer: g + sum / C
    assert (before - b.detach()).tolist() == [0.0, 2.0 + 1.0 / 2]


@pytest.mark.parametrize("cls", [AdamCM, AdamCG, SGDCM, SGDCG])
@pytest.mark.parametrize("foreach", [False, True])
def test_non_finite_key_is_skipped_by_every_memory_optimizer(cls, foreach):
    _, b = params = _params((2,), (3,))
    opt = cls(params, lr=0.1, buffer_size=3, decay=0.5, priority="group", foreach=foreach)
    _step(opt, params, [3.0, 4.0], [1.0, 0.0, 0.0])  # group key 6
    stored_b = _values(opt, b)[0]
    _step(opt, params, [math.inf, 0.0], [0.0, 2.0, 0.0])  # group key inf
    for p in params:
        buf = _buf(opt, p)
        assert buf.filled == 1 and buf.replacements == 0
        assert _keys(opt, p) == [1.5, -INF, -INF]
    assert _values(opt, b) == [stored_b, [0.0] * 3, [0.0] * 3]
    assert _buf(opt, b).total.tolist() == stored_b
    assert torch.isfinite(b).all()


# --------------------------------------------------------------------------- aggregation
@pytest.mark.parametrize("foreach", [False, True])
def test_aggregation_divides_by_capacity_not_by_filled_count(foreach):
    (p,) = params = _params((2,))
    opt = _sgd_cg(params, buffer_size=4, foreach=foreach)
    deltas = []
    for g in ([1.0, 2.0], [3.0, -1.0], [0.5, 0.5]):
        before = p.detach().clone()
        _step(opt, params, g)
        deltas.append((before - p.detach()).tolist())
    assert deltas[0] == [1.0, 2.0]  # empty buffer: aggr(g, B) = g
    assert deltas[1] == [3.0 + 1.0 / 4, -1.0 + 2.0 / 4]
    assert deltas[2] == [0.5 + 4.0 / 4, 0.5 + 1.0 / 4]


@pytest.mark.parametrize("foreach", [False, True])
def test_sgd_cm_aggregates_momenta_by_capacity(foreach):
    (p,) = params = _params((1,))
    opt = SGDCM(params, lr=1.0, momentum=0.5, buffer_size=4, decay=0.5, foreach=foreach)
    deltas = []
    for g in (2.0, 4.0, -8.0):
        before = p.detach().clone()
        _step(opt, params, [g])
        deltas.append(float(before - p.detach()))
    m1 = 2.0
    m2 = 0.5 * m1 + 4.0
    m3 = 0.5 * m2 - 8.0
    assert deltas == [m1, m2 + m1 / 4, m3 + (m1 + m2) / 4]
    assert _values(opt, p)[:3] == [[m1], [m2], [m3]]


# --------------------------------------------------------------------------- keys
@pytest.mark.parametrize("foreach", [False, True])
def test_group_key_is_the_sum_of_tensor_norms_over_tensors_with_a_gradient(foreach):
    a, b, c = params = _params((1,), (2,), (3,))
    opt = _sgd_cg(params, buffer_size=2, priority="group", decay=1.0, foreach=foreach)
    _step(opt, params, [3.0], [0.0, 4.0], None)
    assert _keys(opt, a) == _keys(opt, b) == [7.0, -INF]  # 3 + 4, not sqrt(9 + 16)
    assert c not in opt.state or not opt.state[c]  # no gradient: no state at all
    _step(opt, params, [1.0], [2.0, 2.0], [0.0, 0.0, 1.0])
    assert _keys(opt, a)[1] == pytest.approx(1.0 + math.sqrt(8.0) + 1.0, abs=1e-15)
    assert _keys(opt, c) == pytest.approx([1.0 + math.sqrt(8.0) + 1.0, -INF], abs=1e-15)


@pytest.mark.parametrize("priority", ["group", "tensor"])
def test_group_priority_makes_one_decision_for_the_whole_group(priority):
    a, b = params = _params((1,), (1,))
    opt = _sgd_cg(params, buffer_size=1, priority=priority, decay=1.0)
    _step(opt, params, [1.0], [10.0])
    _step(opt, params, [5.0], [1.0])
    if priority == "group":  # key 6 < 11: neither tensor replaces
        assert _values(opt, a) == [[1.0]] and _values(opt, b) == [[10.0]]
        assert _keys(opt, a) == _keys(opt, b) == [11.0]
    else:  # a: 5 > 1 replaces; b: 1 < 10 does not
        assert _values(opt, a) == [[5.0]] and _values(opt, b) == [[10.0]]
        assert _keys(opt, a) == [5.0] and _keys(opt, b) == [10.0]


@pytest.mark.parametrize("cls", [SGDCG, SGDCM])
@pytest.mark.parametrize("maximize", [False, True])
def test_sgd_key_from_raw_gradient_value_after_weight_decay(cls, maximize):
    """Key ``||p.grad||``; stored value: the gradient with maximize and L2 applied (spec, SGD)."""
    (p,) = params = _params((2,))
    with torch.no_grad():
        p.copy_(torch.tensor([2.0, 0.0]))
    opt = cls(params, lr=0.0, momentum=0.0, weight_decay=0.5, maximize=maximize,
              buffer_size=2, decay=0.5, priority="tensor")
    _step(opt, params, [3.0, 4.0])
    assert _keys(opt, p) == [2.5, -INF]  # 5 * 0.5, not ||[4, 4]|| * 0.5
    sign = -1.0 if maximize else 1.0
    assert _values(opt, p)[0] == [sign * 3.0 + 1.0, sign * 4.0]


@pytest.mark.parametrize("cls", [AdamCM, AdamCG])
@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("maximize", [False, True])
def test_adam_key_from_raw_gradient(cls, decoupled, maximize):
    (p,) = params = _params((2,))
    with torch.no_grad():
        p.copy_(torch.tensor([2.0, 0.0]))
    opt = cls(params, lr=0.0, betas=(0.5, 0.999), weight_decay=0.5, maximize=maximize,
              decoupled_weight_decay=decoupled, buffer_size=2, decay=0.5, priority="tensor")
    _step(opt, params, [3.0, 4.0])
    assert _keys(opt, p) == [2.5, -INF]
    sign = -1.0 if maximize else 1.0
    g = [sign * 3.0 + (0.0 if decoupled else 1.0), sign * 4.0]
    expected = [0.5 * x for x in g] if cls is AdamCM else g  # CM stores m_1 = (1 - b1) g_1
    assert _values(opt, p)[0] == expected


def test_adam_cm_stores_momenta_and_adam_cg_stores_gradients():
    shapes = [(3,), (2, 2)]
    gen = torch.Generator().manual_seed(0)
    grads = [[torch.randn(s, generator=gen, dtype=F64) * (k + 1) for s in shapes]
             for k in range(4)]  # C = 4: every step inserts into the next slot
    for cls in (AdamCM, AdamCG):
        params = _params(*shapes)
        opt = cls(params, lr=0.01, buffer_size=4)
        for k, gs in enumerate(grads):
            for p, g in zip(params, gs, strict=True):
                p.grad = g.clone()
            opt.step()
            for p, g in zip(params, gs, strict=True):
                expected = opt.state[p]["exp_avg"] if cls is AdamCM else g
                assert torch.equal(_buf(opt, p).values[k], expected)


# --------------------------------------------------------------------------- copies
@pytest.mark.parametrize("foreach", [False, True])
def test_stored_values_are_copies_and_never_decayed(foreach):
    a, b = params = _params((2,), (2,))
    opt = SGDCM(params, lr=0.1, momentum=0.5, buffer_size=2, decay=0.5, priority="tensor",
                foreach=foreach)
    ga = torch.tensor([1.0, 2.0], dtype=F64)
    a.grad = ga  # the same gradient tensor is reused (and mutated) every step
    b.grad = torch.tensor([4.0, 0.0], dtype=F64)
    opt.step()
    stored_a = [1.0, 2.0]  # m_1 = g_1
    ga.mul_(1e-3)  # mutate p.grad in place after the step (small: slot 0 is never evicted)
    b.grad.zero_()
    assert _values(opt, a)[0] == stored_a and _values(opt, b)[0] == [4.0, 0.0]
    for _ in range(6):  # momentum buffers change in place; keys decay; values must not
        opt.step()
        assert _values(opt, a)[0] == stored_a
        assert _values(opt, b)[0] == [4.0, 0.0]
    assert _keys(opt, b)[0] == 4.0 * 0.5**7


# --------------------------------------------------------------------------- per group, off
def test_buffer_size_and_decay_per_group():
    a, b = _params((1,), (1,))
    opt = SGDCG([{"params": [a], "buffer_size": 2, "decay": 0.5},
                 {"params": [b], "buffer_size": 3, "decay": 0.25}], lr=1.0)
    _step(opt, [a, b], [1.0], [1.0])
    assert _keys(opt, a) == [0.5, -INF]
    assert _keys(opt, b) == [0.25, -INF, -INF]


@pytest.mark.parametrize("foreach", [False, True])
def test_disable_memory_frees_the_buffer_and_aggr_becomes_identity(foreach):
    (p,) = params = _params((2,))
    opt = _sgd_cg(params, buffer_size=2, foreach=foreach)
    _step(opt, params, [1.0, 2.0])
    _step(opt, params, [2.0, 2.0])
    opt.disable_memory()
    assert CriticalBuffer.from_state(opt.state[p]) is None
    assert not any(k.startswith("critical") for k in opt.state[p])
    before = p.detach().clone()
    _step(opt, params, [0.5, -0.25])
    assert (before - p.detach()).tolist() == [0.5, -0.25]
    assert CriticalBuffer.from_state(opt.state[p]) is None
    assert all(g["memory"] is False for g in opt.param_groups)


# --------------------------------------------------------------------------- from_state
def test_from_state_views():
    a, b = params = _params((2, 3), (4,))
    opt = AdamCM(params, lr=0.1, buffer_size=3)
    a.grad = torch.ones(2, 3, dtype=F64)
    opt.step()
    assert CriticalBuffer.from_state(opt.state[b]) is None  # b had no gradient
    state = opt.state[a]
    buf = CriticalBuffer.from_state(state)
    assert buf is not None
    assert buf.keys is state["critical_keys"]  # views of the state, not copies
    assert buf.values is state["critical_values"]
    assert buf.total is state["critical_sum"]
    assert buf.keys.shape == (3,) and buf.values.shape == (3, 2, 3)
    assert buf.total.shape == (2, 3)
    assert isinstance(buf.capacity, int) and buf.capacity == 3
    assert isinstance(buf.filled, int) and buf.filled == 1
    assert isinstance(buf.replacements, int) and buf.replacements == 0
    assert buf.keys.dtype == F64
    assert torch.equal(buf.total, buf.values.sum(0))
    # AdaMomentum has no buffer
    c = torch.zeros(2, dtype=F64, requires_grad=True)
    ada = AdaMomentum([c])
    c.grad = torch.ones(2, dtype=F64)
    ada.step()
    assert CriticalBuffer.from_state(ada.state[c]) is None


def test_running_sum_is_float32_or_wider_for_low_precision_buffers():
    p = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    opt = AdamCG([p], lr=0.1, buffer_dtype=torch.bfloat16)
    p.grad = torch.full((3,), 1.0 / 3.0)
    opt.step()
    buf = _buf(opt, p)
    assert buf.values.dtype == torch.bfloat16
    assert buf.total.dtype in (torch.float32, torch.float64)
    assert buf.keys.dtype in (torch.float32, torch.float64)
