"""The ``"fifo"`` buffer policy (a full buffer always replaces its oldest entry) against the slow
reference of ``tests/reference.py``, which finds the oldest entry from per-slot insertion
numbers, not from the library's ``replacements mod C``.

The reference is first checked by hand; then every memory rule on every execution path (loop,
foreach, fused: the fused paths fall back for this policy) matches it to 1e-12 in float64, with
missing gradients (so the buffers of one group hold different histories).  Resume and the
registry presets are covered in ``tests/test_variants.py``.
"""

from __future__ import annotations

import math

import pytest
import torch

import memoptim
from memoptim.buffer import CriticalBuffer, offer
from memoptim.policy import POLICIES, fifo_replacement
from reference import RefBuffer, RefSGDCG
from test_equivalence import STEPS, run_equivalence
from test_variants import CONFIGS, PATHS, SHAPES, _buffer_every

F64 = torch.float64


def _scalar(x: float) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# =========================================================================== reference by hand
def test_reference_fifo_keeps_the_last_c_offers_whatever_the_keys():
    """C = 3, keys shrinking (``"norm"`` would never replace) then growing: the buffer holds
    the last three finite offers, slot by slot in the order 0, 1, 2, 0, ...; non-finite keys
    are neither stored nor counted."""
    buf = RefBuffer(3)
    offers = [5.0, 4.0, 3.0, 2.0, math.nan, 1.0, math.inf, 10.0, 20.0]
    for key in offers:
        buf.offer(key, _scalar(key), 0.5, policy="fifo")
    # finite offers: 5, 4, 3 fill slots 0..2; then 2 -> slot 0, 1 -> slot 1, 10 -> slot 2, 20 -> slot 0
    assert [float(v) for v in buf.values] == [20.0, 1.0, 10.0]
    assert buf.replacements == 4
    assert buf.keys == [20.0 * 0.5, 1.0 * 0.5**4, 10.0 * 0.5**2]  # the keys still decay


def test_reference_fifo_is_a_sliding_window_for_sgd_cg():
    """SGD+CG, lr 1, no momentum, C = 2: theta moves by g_t + (g_{t-1} + g_{t-2}) / 2."""
    grads = [1.0, -2.0, 4.0, 0.5, -3.0, 2.0]
    ref = RefSGDCG([_scalar(0.0)], lr=1.0, momentum=0.0, buffer_size=2, priority="tensor",
                   policy="fifo")
    theta = 0.0
    for t, g in enumerate(grads):
        ref.step([[_scalar(g)]])
        theta -= g + sum(grads[max(0, t - 2):t]) / 2
        assert float(ref.params[0][0]) == pytest.approx(theta, abs=1e-15)


# =========================================================================== the decision
def test_fifo_decision_fills_first_then_takes_replacements_mod_c():
    inf = math.inf
    stacked = torch.tensor([[1.0, -inf, -inf],   # a free slot: the first free one
                            [1.0, 2.0, 3.0],     # full, 4 replacements so far: slot 1
                            [3.0, 2.0, 1.0],     # full, 6 replacements: slot 0
                            [1.0, 2.0, 3.0]], dtype=F64)
    keys = torch.tensor([0.1, 0.1, 9.0, math.nan], dtype=F64)
    counts = torch.tensor([0, 4, 6, 2])
    slot, current, accept = fifo_replacement(stacked, keys, counts)
    assert slot.squeeze(1).tolist() == [1, 1, 0, 2]
    assert current.tolist() == [-inf, 2.0, 3.0, 3.0]
    assert accept.tolist() == [True, True, True, False]  # a smaller key is accepted, NaN is not
    assert POLICIES["fifo"] is fifo_replacement


def test_fifo_offer_runs_on_the_device_without_a_host_sync():
    """On the meta device no value can reach the host: an offer that completes there decides
    on the device (no ``.item()``, no data-dependent branch)."""
    state: dict = {}
    CriticalBuffer.init_state(state, torch.empty(3, device="meta"), 2)
    buf = CriticalBuffer.from_state(state)
    buf.policy = "fifo"
    for _ in range(4):
        offer([buf], torch.ones(1, device="meta"), [torch.ones(3, device="meta")], 0.7)
    assert buf.keys.device.type == "meta"


# =========================================================================== library vs reference
RULES = ["AdamCM", "AdamCG", "SGDCM", "SGDCG", "LionCM", "LionCG"]
LION = ({"lr": 0.01, "weight_decay": 0.1, "buffer_size": 3},
        [{}, {"priority": "tensor", "buffer_size": 2, "decay": 0.5}])


@pytest.mark.parametrize("path", ["loop", "foreach", "fused"])
@pytest.mark.parametrize("name", RULES)
def test_fifo_matches_reference(name, path):
    hyper, overrides = LION if name.startswith("Lion") else CONFIGS[name][0]
    run_equivalence(name, SHAPES, {**hyper, "policy": "fifo", **PATHS[path]}, overrides,
                    seed=60, steps=STEPS, none_prob=0.3, buffer_every=_buffer_every(path))


@pytest.mark.parametrize("path", ["foreach", "fused"])
def test_fifo_with_the_authors_semantics_matches_reference(path):
    hyper, overrides = CONFIGS["AdamCM"][1]
    run_equivalence("AdamCM", SHAPES, {**hyper, "policy": "fifo", "first_step": "seed",
                                       "aggregation": "filled", **PATHS[path]}, overrides,
                    seed=61, none_prob=0.3, buffer_every=_buffer_every(path))


@pytest.mark.parametrize("path", list(PATHS))
def test_fifo_replaces_at_every_full_step_and_keeps_the_last_c(path):
    """Shrinking gradient norms (``"norm"`` would never replace): one replacement per step once
    full, and the buffer holds the last C gradients, the newest in slot (t - 1) mod C."""
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = memoptim.SGDCG([p], lr=0.01, buffer_size=3, policy="fifo", **PATHS[path])
    grads = [torch.full((3,), 1.0 / t, dtype=F64) for t in range(1, STEPS + 1)]
    for g in grads:
        p.grad = g.clone()
        opt.step()
    buf = CriticalBuffer.from_state(opt.state[p])
    assert buf.replacements == STEPS - 3
    for t in range(STEPS - 3, STEPS):  # 0-based offer t sits in slot t mod 3
        assert torch.equal(buf.values[t % 3], grads[t])
