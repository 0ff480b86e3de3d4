"""Checkpoints on every device of the ``device`` fixture (``cpu`` always, ``cuda`` where
available): a resume continues bit for bit, a state dict survives a round trip, and a CPU
checkpoint loads onto the device through ``map_location`` and continues as on CPU.

The optimizers are built through the public API only (``AdamCM(params, fused=True)`` ...): on
CPU ``fused=True`` is the native kernel, on an accelerator the compiled fused path.
"""

from __future__ import annotations

import io

import pytest
import torch

import memoptim
from test_checkpoint import MAKERS, _data, _model, _roundtrip, _step

CLASSES = ["AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdaMomentum"]
#: the execution paths a user picks: the default, the multi-tensor path, the fused path
PATHS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}


@pytest.mark.parametrize("name", list(MAKERS))
def test_resume_on_the_device_is_bit_exact(name, device):
    x, y = (t.to(device) for t in _data())
    ref_model = _model().to(device)
    ref_opt = MAKERS[name](ref_model.parameters())
    for _ in range(3):  # buffers of 4-5 slots only partly filled
        _step(ref_model, ref_opt, x, y)
    saved_model = _roundtrip(ref_model.state_dict())
    saved_opt = _roundtrip(ref_opt.state_dict())

    model = _model(seed=123).to(device)  # everything must come from the checkpoint
    model.load_state_dict(saved_model)
    opt = MAKERS[name](model.parameters())
    opt.load_state_dict(saved_opt)
    for _ in range(17):
        _step(ref_model, ref_opt, x, y)
        _step(model, opt, x, y)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        assert a.device.type == torch.device(device).type
        assert torch.equal(a, b)
    new_state = opt.state_dict()["state"]
    for pid, st in ref_opt.state_dict()["state"].items():
        for key, value in st.items():
            assert new_state[pid][key].dtype == value.dtype, key
            assert new_state[pid][key].device == value.device, key
            assert torch.equal(new_state[pid][key], value), key


def _params(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(4, 3), (5,), ()]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(device).requires_grad_(True) for s in shapes]


def _grads(t, device):
    g = torch.Generator().manual_seed(1000 + t)
    scale = 0.5 + (t % 4)  # norms vary, so offers are accepted and replaced
    return [(torch.randn(s, generator=g, dtype=torch.float64) * scale).to(device)
            for s in [(4, 3), (5,), ()]]


def _run(opt, params, steps, start=0):
    for t in range(start, start + steps):
        for p, g in zip(params, _grads(t, params[0].device)):
            p.grad = g
        opt.step()


def _make(name, params, path):
    memory = {} if name == "AdaMomentum" else {"buffer_size": 3}
    return getattr(memoptim, name)(params, lr=0.02, **memory, **PATHS[path])


def _assert_state_placement(opt):
    """Every state tensor, step counters included, sits on its parameter's device, on every
    path (capturable state: no copy between host and device per step)."""
    for p, st in opt.state.items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                assert v.device == p.device, f"{key} on {v.device}, parameter on {p.device}"


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", CLASSES)
def test_state_dict_round_trip_on_the_device(name, path, device):
    params = _params(device)
    opt = _make(name, params, path)
    _run(opt, params, 6)
    saved = opt.state_dict()
    twin_params = [p.detach().clone().requires_grad_(True) for p in params]
    twin = _make(name, twin_params, path)
    twin.load_state_dict(_roundtrip(saved))
    again = twin.state_dict()
    assert again["state"].keys() == saved["state"].keys()
    for pid, st in saved["state"].items():
        assert again["state"][pid].keys() == st.keys(), pid
        for key, value in st.items():
            other = again["state"][pid][key]
            assert (other.dtype, other.shape) == (value.dtype, value.shape), key
            assert torch.equal(other.cpu(), value.cpu()), key
    _assert_state_placement(twin)
    _run(opt, params, 4, start=6)
    _run(twin, twin_params, 4, start=6)
    for a, b in zip(params, twin_params):
        assert torch.equal(a, b)


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", CLASSES)
def test_cpu_checkpoint_continues_on_the_device_through_map_location(name, path, device):
    cpu_params = _params("cpu")
    cpu_opt = _make(name, cpu_params, path)
    _run(cpu_opt, cpu_params, 6)
    buf = io.BytesIO()
    torch.save({"params": [p.detach() for p in cpu_params], "opt": cpu_opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, map_location=device, weights_only=True)

    params = [p.clone().requires_grad_(True) for p in ckpt["params"]]
    opt = _make(name, params, path)
    opt.load_state_dict(ckpt["opt"])
    _assert_state_placement(opt)
    _run(cpu_opt, cpu_params, 8, start=6)
    _run(opt, params, 8, start=6)
    _assert_state_placement(opt)
    for a, b in zip(params, cpu_params):
        assert a.device.type == torch.device(device).type
        # bit for bit on CPU; on another device its own reductions (norms) round differently
        torch.testing.assert_close(a.cpu(), b, rtol=0, atol=0 if a.device.type == "cpu" else 1e-10)
