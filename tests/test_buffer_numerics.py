"""Running-sum accuracy, low-precision buffers and memory footprint of the critical buffer."""

from __future__ import annotations

import pytest
import torch

import memoptim
from memoptim.buffer import RESYNC_INTERVAL, CriticalBuffer


def _drive(opt, params, steps, seed=0, scale_range=4.0):
    """Random gradients whose norms vary a lot, so that replacements keep happening."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        scale = float(torch.exp(torch.empty(()).uniform_(-scale_range, scale_range, generator=g)))
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * scale + 3.0
        opt.step()


def _sum_error(buf: CriticalBuffer) -> float:
    exact = buf.values.to(torch.float64).sum(0)
    return float((buf.total.to(torch.float64) - exact).abs().max() / exact.abs().max())


@pytest.mark.parametrize("fused", [False, True])  # eager; native kernel (its own resync)
@pytest.mark.parametrize("cls", [memoptim.AdamCG, memoptim.SGDCG])
def test_float32_running_sum_drift_after_10000_steps(cls, fused):
    p = torch.zeros(64, requires_grad=True)
    opt = cls([p], lr=1e-4, buffer_size=5, decay=0.9, fused=fused)
    steps = 10_000
    assert steps % RESYNC_INTERVAL != 0  # measured between two exact recomputations
    _drive(opt, [p], steps)
    buf = CriticalBuffer.from_state(opt.state[p])
    assert buf.replacements > 1000
    assert _sum_error(buf) < 1e-5


@pytest.mark.parametrize("fused", [False, True])
def test_bfloat16_buffer_sum_stays_exact_where_a_bf16_running_sum_drifts(fused):
    p = torch.zeros(64, requires_grad=True)
    opt = memoptim.AdamCG([p], lr=1e-4, buffer_dtype=torch.bfloat16, decay=0.9, fused=fused)
    _drive(opt, [p], 3000, seed=1)
    buf = CriticalBuffer.from_state(opt.state[p])
    assert buf.values.dtype == torch.bfloat16 and buf.total.dtype == torch.float32
    assert buf.replacements > 1000
    ours = _sum_error(buf)
    assert ours < 1e-5
    # Control: the same replacement stream accumulated in a bf16 running sum (the authors'
    # design) is far off, so the float32 sum is what keeps the aggregate correct.
    gen = torch.Generator().manual_seed(2)
    vals = torch.zeros(5, 64, dtype=torch.bfloat16)
    naive = torch.zeros(64, dtype=torch.bfloat16)
    for _ in range(3000):
        slot = int(torch.randint(0, 5, (), generator=gen))
        new = (torch.randn(64, generator=gen) * 3 + 3).to(torch.bfloat16)
        naive += new - vals[slot]
        vals[slot] = new
    exact = vals.double().sum(0)
    naive_err = float((naive.double() - exact).abs().max() / exact.abs().max())
    assert naive_err > 100 * max(ours, 1e-7)


@pytest.mark.parametrize("buffer_size", [5, 20])
@pytest.mark.parametrize("cls", [memoptim.AdamCM, memoptim.AdamCG, memoptim.SGDCM])
def test_state_memory_is_at_most_c_plus_3_parameter_copies(cls, buffer_size):
    params = [torch.zeros(32, 16, requires_grad=True), torch.zeros(16, requires_grad=True)]
    opt = cls(params, buffer_size=buffer_size)
    _drive(opt, params, 3)
    n = sum(p.numel() for p in params)
    big = sum(v.numel() * v.element_size() for st in opt.state.values() for k, v in st.items()
              if k not in ("step", "critical_keys", "critical_replacements", "critical_pending",
                           "critical_pending_from")
              and torch.is_tensor(v))
    assert big <= (buffer_size + 3) * n * 4
    half = cls(params, buffer_size=buffer_size, buffer_dtype=torch.bfloat16)
    _drive(half, params, 3)
    values = sum(st["critical_values"].numel() * st["critical_values"].element_size()
                 for st in half.state.values())
    assert values == buffer_size * n * 2  # half of float32
