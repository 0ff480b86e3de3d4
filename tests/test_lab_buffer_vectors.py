"""Buffer vectors (Figs. 2, 11, 12): what is read from the optimizer state, checked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from memoptim import create_optimizer
from memoptim.buffer import CriticalBuffer
from memoptim.lab.buffer_vectors import (
    BufferSnapshot,
    buffer_items,
    buffer_term,
    cancellation_stats,
    trace_buffer_vectors,
)
from memoptim.lab.surfaces import ackley, goldstein_price

D64 = torch.float64


def test_buffer_items_are_the_stored_items_of_a_hand_made_state():
    state: dict = {}
    CriticalBuffer.init_state(state, torch.zeros(2, dtype=D64), capacity=3)
    b = CriticalBuffer.from_state(state)
    vals = [torch.tensor(v, dtype=D64) for v in ([1.0, 2.0], [-3.0, 0.5], [4.0, 4.0], [9.0, 9.0])]
    for key, v in zip((2.0, 5.0, 3.0), vals):
        b.offer(torch.tensor(key, dtype=D64), v, decay=1.0)
    # full: the offer with key 4 replaces the smallest key (2.0, slot 0)
    b.offer(torch.tensor(4.0, dtype=D64), vals[3], decay=1.0)
    items, keys = buffer_items(state)
    assert torch.equal(items, torch.stack([vals[3], vals[1], vals[2]]))
    assert keys.tolist() == [4.0, 5.0, 3.0]
    items[0, 0] = -100.0  # a copy: the optimizer state is untouched
    assert state["critical_values"][0, 0] == 9.0
    empty_items, empty_keys = buffer_items({})
    assert empty_items.numel() == 0 and empty_keys.numel() == 0


def test_buffer_term_divides_by_capacity_or_filled_slots():
    items = torch.tensor([[1.0, 2.0], [3.0, -2.0]], dtype=D64)
    assert torch.equal(buffer_term(items, 5, "capacity"), torch.tensor([0.8, 0.0], dtype=D64))
    assert torch.equal(buffer_term(items, 5, "filled"), torch.tensor([2.0, 0.0], dtype=D64))
    assert buffer_term(items[:0], 5) is None
    with pytest.raises(ValueError):
        buffer_term(items, 5, "mean")


def test_cg_snapshots_hold_the_past_gradients_and_the_new_gradient():
    # Adam+CG with C = 4 and no decay of keys: by step 4 the buffer holds g_1, g_2, g_3 (the
    # buffer is never full, so every gradient is kept), and the new vector is g_4.
    x0 = torch.tensor([[0.7, -0.4], [1.3, 0.2]], dtype=D64)
    hp = {"lr": 0.05, "betas": (0.9, 0.99), "buffer_size": 4, "decay": 1.0}
    snaps = trace_buffer_vectors(goldstein_price, x0, "adam+cg", hp, record=[1, 4])
    ps = [torch.nn.Parameter(x0[i].clone()) for i in range(2)]
    twin = create_optimizer("adam+cg", ps, priority="tensor", **hp)
    grads = []
    for _ in range(4):
        twin.zero_grad()
        goldstein_price(torch.stack(ps)).sum().backward()
        grads.append([p.grad.clone() for p in ps])
        twin.step()
    for i in range(2):
        first, fourth = snaps[i]
        assert first.step == 1 and first.items.shape[0] == 0 and first.term is None
        assert torch.allclose(first.new, grads[0][i]) and torch.equal(first.point, x0[i])
        assert fourth.step == 4
        assert torch.allclose(fourth.items, torch.stack([g[i] for g in grads[:3]]))
        assert torch.allclose(fourth.term, sum(g[i] for g in grads[:3]) / 4)
        assert torch.allclose(fourth.new, grads[3][i])
        assert torch.allclose(fourth.next_point, ps[i].detach())
        assert torch.allclose(fourth.aggregate, grads[3][i] + fourth.term)


def test_cm_snapshots_read_the_momentum_and_the_authors_aggregation():
    x0 = torch.tensor([[1.6, 0.9]], dtype=D64)
    hp = {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 20, "decay": 0.99}
    (ours,) = trace_buffer_vectors(ackley, x0, "adam+cm", hp, record=range(1, 4))
    p = torch.nn.Parameter(x0[0].clone())
    twin = create_optimizer("adam+cm", [p], priority="tensor", **hp)
    for snap in ours:
        twin.zero_grad()
        ackley(p.unsqueeze(0)).sum().backward()
        twin.step()
        assert torch.allclose(snap.new, twin.state[p]["exp_avg"])
    # CM stores m_t: the buffer before step 3 holds m_1 and m_2, and the term divides by C = 20
    assert torch.allclose(ours[2].items, torch.stack([ours[0].new, ours[1].new]))
    assert torch.allclose(ours[2].term, (ours[0].new + ours[1].new) / 20)
    # the authors' semantics: step 1 seeds the buffer with g_1, the term divides by the filled count
    (auth,) = trace_buffer_vectors(ackley, x0, "adam+cm-authors", hp, record=[1, 2])
    assert torch.equal(auth[0].new, torch.zeros(2, dtype=D64))  # no momentum after the seeding step
    assert torch.equal(auth[0].next_point, x0[0])
    assert auth[1].items.shape[0] == 1 and torch.equal(auth[1].term, auth[1].items[0])


def test_cancellation_stats_of_hand_made_snapshots():
    z = torch.zeros(2, dtype=D64)

    def snap(step, term, new, move):
        t = None if term is None else torch.tensor(term, dtype=D64)
        return BufferSnapshot(step, z, torch.tensor(move, dtype=D64), torch.empty(0, 2), torch.empty(0),
                              t, torch.tensor(new, dtype=D64))

    run = [snap(1, None, [1.0, 0.0], [0.3, 0.4]),            # empty buffer: length only
           snap(2, [-0.5, 0.0], [1.0, 0.0], [0.0, 0.1]),     # opposite: cos -1, ratio 0.5
           snap(3, [0.0, 1.0], [1.0, 0.0], [0.0, 0.2])]      # orthogonal: cos 0, ratio sqrt(2)
    st = cancellation_stats([run])
    assert st["steps"] == 2
    assert st["cosine"] == pytest.approx(-0.5)
    assert st["negative_fraction"] == pytest.approx(0.5)
    assert st["ratio"] == pytest.approx((0.5 + math.sqrt(2)) / 2)
    assert st["step_length"] == pytest.approx((0.5 + 0.1 + 0.2) / 3)
    assert st["steadiness"] == pytest.approx(0.0)  # consecutive terms (-1, 0) and (0, 1)
