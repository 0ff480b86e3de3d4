"""What only a CUDA device can check, through the public API (skipped where
``torch.cuda.is_available()`` is false; ``scripts/gpu_check.sh`` runs them on a GPU):

* the fused path (``fused=True``) and the default path match the float64 reference on CUDA;
* 20 steps of every registry optimizer under ``torch.cuda.set_sync_debug_mode("error")``: a
  step that waits for the device (``.item()``, ``int(t)``, a blocking copy) raises;
* a capture of the fused step with ``torch.cuda.graph``, replayed 10 times, matches the same
  optimizer stepped eagerly.

The sync-debug test also runs on CPU, where there is no sync to detect: there it checks the
test's own plumbing (warm-up, the step count moved across a periodic resync, SAM's closure).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch

import memoptim
from memoptim.buffer import RESYNC_INTERVAL
from memoptim.registry import REGISTRY, create_optimizer
from test_equivalence import GRID_SHAPES, run_equivalence
from test_fused import CONFIGS

#: the classes with a fused path (native on CPU, compiled on accelerators)
FUSED = ["AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdaMomentum"]


# =========================================================================== reference on CUDA
@pytest.mark.parametrize("path", ["fused", "default"])
@pytest.mark.parametrize("name", FUSED)
def test_fused_and_default_paths_match_the_reference_on_cuda(name, path, cuda_device):
    hyper, overrides = CONFIGS[name]
    flags = {"fused": True} if path == "fused" else {}
    run_equivalence(name, GRID_SHAPES, {**hyper, **flags}, overrides, seed=5, steps=30, device=cuda_device)


# =========================================================================== no host sync
@contextlib.contextmanager
def sync_debug_error(device: torch.device) -> Iterator[None]:
    """``torch.cuda.set_sync_debug_mode("error")`` on CUDA for the block (nothing on CPU)."""
    if device.type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _states(opt: torch.optim.Optimizer) -> list[dict]:
    """The per-parameter state dicts of ``opt`` and of a wrapped base optimizer (SAM)."""
    base = getattr(opt, "base_optimizer", None)
    states = list(opt.state.values()) + (list(base.state.values()) if base is not None else [])
    return [st for st in states if isinstance(st, dict)]


def _move_step_counts(opt: torch.optim.Optimizer, value: int) -> int:
    """Set every step counter of ``opt`` to ``value`` (in place, on its own device); returns how
    many there are."""
    n = 0
    for st in _states(opt):
        if isinstance(st.get("step"), torch.Tensor):
            st["step"].fill_(value)
            n += 1
    return n


@pytest.mark.parametrize("name", list(REGISTRY))
def test_twenty_steps_without_a_host_sync(name, device):
    entry = REGISTRY[name]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)).to(device)
    x, y = torch.randn(32, 8, device=device), torch.randn(32, 4, device=device)
    opt = create_optimizer(name, model.parameters(), lr=1e-3)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    def step():
        if entry.sam:
            opt.step(closure)
        else:
            closure()
            opt.step()

    for _ in range(2):  # state creation and any compilation happen here, outside the check
        step()
    start = RESYNC_INTERVAL - 10  # the 20 checked steps cross a periodic resync of the running sums
    counters = _move_step_counts(opt, start)
    with sync_debug_error(device):
        for _ in range(20):
            step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    steps = [float(st["step"]) for st in _states(opt) if isinstance(st.get("step"), torch.Tensor)]
    assert len(steps) == counters and all(s == start + 20 for s in steps)


# =========================================================================== CUDA graphs
def _hyper(name: str) -> dict:
    return {"lr": 0.01} if name == "AdaMomentum" else {"lr": 0.01, "buffer_size": 3, "decay": 0.7}


@pytest.mark.parametrize("name", FUSED)
def test_captured_fused_step_replays_like_eager(name, cuda_device):
    shapes = [(64, 32), (32,), (10, 64), ()]
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in shapes]
    # 3 warm-up steps and 10 replays; the norms vary, so buffer offers are accepted and replaced
    grads = [[(torch.randn(s, generator=gen) * (0.5 + t % 4)).to(cuda_device) for s in shapes]
             for t in range(13)]
    captured = [x.to(cuda_device).requires_grad_(True) for x in init]
    eager = [x.to(cuda_device).requires_grad_(True) for x in init]
    cap = getattr(memoptim, name)(captured, fused=True, **_hyper(name))
    ref = getattr(memoptim, name)(eager, fused=True, **_hyper(name))
    static = [torch.zeros_like(p) for p in captured]
    for p, g in zip(captured, static):
        p.grad = g

    side = torch.cuda.Stream()  # warm-up on a side stream, as torch.cuda.graph requires
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for t in range(3):
            for s, g in zip(static, grads[t]):
                s.copy_(g)
            cap.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        cap.step()
    for t in range(3, 13):
        for s, g in zip(static, grads[t]):
            s.copy_(g)
        graph.replay()

    for t in range(13):
        for p, g in zip(eager, grads[t]):
            p.grad = g.clone()
        ref.step()
    torch.cuda.synchronize()
    for p, q in zip(captured, eager):
        torch.testing.assert_close(p, q)
    a, b = cap.state_dict()["state"], ref.state_dict()["state"]
    assert a.keys() == b.keys()
    for pid in a:
        assert a[pid].keys() == b[pid].keys()
        for key in a[pid]:
            torch.testing.assert_close(a[pid][key], b[pid][key], msg=lambda m, k=key: f"{k}: {m}")
    steps = [float(st["step"]) for st in a.values()]
    assert steps == [13.0] * len(shapes)  # the counters moved on every replay, not on the host
