"""Buffer diagnostics read from optimizer state (Fig. 8 quantities), checked by direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from memoptim import SAM, AdamCG, AdamCM
from memoptim.buffer import CriticalBuffer
from memoptim.lab.diagnostics import (
    DistanceTracker,
    buffer_stats,
    joint_buffer_stats,
    parameter_buffer_stats,
    parameter_buffers,
)


def _direct(values: np.ndarray, keys: np.ndarray, reference: str = "key"):
    """Variance and mean cosine from the filled items, written out with numpy."""
    filled = np.isfinite(keys)
    v = values[filled].reshape(filled.sum(), -1)
    var = v.var(axis=0).mean()
    if len(v) < 2:
        return var, math.nan
    r = int(np.argmax(keys[filled])) if reference == "key" else int(np.argmax((v**2).sum(1)))
    cos = [v[r] @ v[k] / np.linalg.norm(v[r]) / np.linalg.norm(v[k])
           for k in range(len(v)) if k != r]
    return var, float(np.mean(cos))


def _manual_buffer(capacity, items):
    state: dict = {}
    CriticalBuffer.init_state(state, torch.zeros(3, 2, dtype=torch.float64), capacity)
    b = CriticalBuffer.from_state(state)
    for key, value in items:
        b.offer(torch.tensor(key, dtype=torch.float64), value, decay=0.9)
    return b


def test_stats_of_a_hand_filled_buffer():
    g = torch.Generator().manual_seed(0)
    items = [(k, torch.randn(3, 2, generator=g, dtype=torch.float64)) for k in (3.0, 1.0, 5.0)]
    b = _manual_buffer(5, items)
    for ref in ("key", "norm"):
        s = buffer_stats(b, reference=ref)
        var, cos = _direct(b.values.numpy(), b.keys.numpy(), ref)
        assert (s.capacity, s.filled, s.replacements, s.numel) == (5, 3, 0, 6)
        assert s.variance == pytest.approx(var, rel=1e-12)
        assert s.cosine == pytest.approx(cos, rel=1e-12)
    # the key reference is the item offered with key 5 (keys decay uniformly)
    top = b.values[int(torch.argmax(b.keys))]
    assert torch.equal(top, items[2][1])


def test_key_and_norm_references_differ_when_they_should():
    big = torch.full((3, 2), 10.0, dtype=torch.float64)
    small = torch.ones(3, 2, dtype=torch.float64)
    other = torch.tensor([[1.0, -1.0]] * 3, dtype=torch.float64)
    b = _manual_buffer(3, [(9.0, small), (1.0, big), (2.0, other)])
    # key reference = `small` (cos with big = 1, with other = 0) ; norm reference = `big` (same)
    assert buffer_stats(b, reference="key").cosine == pytest.approx(0.5)
    b2 = _manual_buffer(3, [(9.0, other), (1.0, big), (2.0, small)])
    assert buffer_stats(b2, reference="key").cosine == pytest.approx(0.0)
    assert buffer_stats(b2, reference="norm").cosine == pytest.approx(0.5)


def test_empty_and_single_item_buffers():
    b = _manual_buffer(4, [])
    s = buffer_stats(b)
    assert s.filled == 0 and math.isnan(s.variance) and math.isnan(s.cosine)
    b = _manual_buffer(4, [(1.0, torch.ones(3, 2, dtype=torch.float64))])
    s = buffer_stats(b)
    assert s.filled == 1 and s.variance == pytest.approx(0.0) and math.isnan(s.cosine)


def _train(opt_cls, priority, steps=12, **kw):
    torch.manual_seed(0)
    w1 = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    w2 = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    opt = opt_cls([w1, w2], lr=0.05, buffer_size=4, decay=0.7, priority=priority, **kw)
    x = torch.randn(8, 3, dtype=torch.float64)
    for _ in range(steps):
        opt.zero_grad()
        loss = (torch.tanh(x @ w1.T).sum(1) - w2.sum()).pow(2).mean() + w2.pow(4).sum()
        loss.backward()
        opt.step()
    return opt, [w1, w2]


@pytest.mark.parametrize("opt_cls", [AdamCM, AdamCG])
def test_group_priority_gives_exact_joint_statistics(opt_cls):
    opt, _params = _train(opt_cls, "group")
    bufs = [b for _, b in parameter_buffers(opt)]
    assert len(bufs) == 2 and torch.equal(bufs[0].keys, bufs[1].keys)
    joint = joint_buffer_stats(opt)
    assert joint.joint and joint.filled == 4 and joint.numel == 17
    # concatenate slot k of both tensors into one model-level item
    values = np.concatenate([b.values.reshape(4, -1).numpy() for b in bufs], axis=1)
    var, cos = _direct(values, bufs[0].keys.numpy())
    assert joint.variance == pytest.approx(var, rel=1e-10)
    assert joint.cosine == pytest.approx(cos, rel=1e-10)
    assert joint.replacements == bufs[0].replacements


def test_tensor_priority_falls_back_to_averages():
    opt, _params = _train(AdamCM, "tensor")
    per = parameter_buffer_stats(opt)
    joint = joint_buffer_stats(opt)
    assert not joint.joint
    assert joint.variance == pytest.approx(
        sum(s.variance * s.numel for s in per) / sum(s.numel for s in per))
    assert joint.cosine == pytest.approx(sum(s.cosine for s in per) / len(per))
    assert joint.replacements == sum(s.replacements for s in per)


def test_counts_match_the_optimizer_and_state_is_not_touched():
    opt, params = _train(AdamCM, "group", steps=3)
    assert joint_buffer_stats(opt).filled == 3  # fewer steps than slots
    opt, params = _train(AdamCM, "group", steps=12)
    for p in params:  # a native step's deferred offer is completed by any inspection; do it first
        CriticalBuffer.from_state(opt.state[p])
    before = {id(t): (t.data_ptr(), t.clone()) for p in params for t in opt.state[p].values()
              if isinstance(t, torch.Tensor)}
    stats = parameter_buffer_stats(opt)
    joint_buffer_stats(opt, reference="norm")
    for p, s in zip(params, stats):
        b = CriticalBuffer.from_state(opt.state[p])
        assert s.filled == b.filled == 4
        assert s.replacements == b.replacements
    for p in params:
        for t in opt.state[p].values():
            if isinstance(t, torch.Tensor):
                ptr, copy = before[id(t)]
                assert t.data_ptr() == ptr and torch.equal(t, copy)


def test_sam_wrapper_and_optimizers_without_buffers():
    w = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
    sam = SAM([w], AdamCM, rho=0.05, lr=0.1, buffer_size=3)
    for _ in range(5):
        def closure():
            sam.zero_grad()
            loss = (w**2).sum() + torch.sin(3 * w).sum()
            loss.backward()
            return loss
        sam.step(closure)
    assert joint_buffer_stats(sam).filled == 3
    adam = torch.optim.Adam([w])
    assert joint_buffer_stats(adam) is None and parameter_buffer_stats(adam) == []


def test_distance_tracker():
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.ones(3))
    tr = DistanceTracker([a, b])
    with torch.no_grad():
        a.add_(torch.tensor([3.0, 0.0]))
        b.sub_(torch.tensor([0.0, 4.0, 0.0]))
    assert tr.per_parameter() == pytest.approx([3.0, 4.0])
    assert tr.distance() == pytest.approx(5.0)
