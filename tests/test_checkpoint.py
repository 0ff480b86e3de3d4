"""Checkpoints: save, load with weights_only=True, and continue bit for bit."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import memoptim
from memoptim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum

MAKERS = {
    "AdamCM": lambda ps: AdamCM(ps, lr=1e-2, weight_decay=0.01),
    "AdamCM-amsgrad-tensor": lambda ps: AdamCM(ps, lr=1e-2, amsgrad=True, priority="tensor"),
    "AdamCG": lambda ps: AdamCG(ps, lr=1e-2),
    "SGDCM": lambda ps: SGDCM(ps, lr=1e-2, weight_decay=0.01),
    "SGDCG": lambda ps: SGDCG(ps, lr=1e-2, momentum=0.5),
    "AdaMomentum": lambda ps: AdaMomentum(ps, lr=1e-2),
    "AdamCM-bf16-buffer": lambda ps: AdamCM(ps, lr=1e-2, buffer_dtype=torch.bfloat16),
    "AdamCM-native": lambda ps: AdamCM(ps, lr=1e-2, weight_decay=0.01, fused=True),
    "AdamCG-native-bf16": lambda ps: AdamCG(ps, lr=1e-2, fused=True, buffer_dtype=torch.bfloat16),
    "SGDCM-native": lambda ps: SGDCM(ps, lr=1e-2, fused=True),
    "SGDCG-native": lambda ps: SGDCG(ps, lr=1e-2, momentum=0.5, fused=True),
    "AdaMomentum-native": lambda ps: AdaMomentum(ps, lr=1e-2, fused=True),
    "SAM[Adam]": lambda ps: SAM(ps, torch.optim.Adam, lr=1e-2, rho=0.05),
    "SAM[AdamCM]": lambda ps: SAM(ps, AdamCM, lr=1e-2, rho=0.05, buffer_size=4),
    "ASAM[SGDCM]": lambda ps: SAM(ps, SGDCM, lr=1e-2, rho=0.5, adaptive=True),
}


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _data():
    g = torch.Generator().manual_seed(42)
    return torch.randn(32, 4, generator=g), torch.randn(32, 1, generator=g)


def _step(model, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    if isinstance(opt, SAM):
        opt.step(closure)
    else:
        closure()
        opt.step()


def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", list(MAKERS))
def test_resume_is_bit_exact_with_partly_filled_buffer(name):
    x, y = _data()
    ref_model = _model()
    ref_opt = MAKERS[name](ref_model.parameters())
    for _ in range(3):  # buffer of 4-5 slots is only partly filled after 3 steps
        _step(ref_model, ref_opt, x, y)

    saved_model = _roundtrip(ref_model.state_dict())
    saved_opt = _roundtrip(ref_opt.state_dict())

    model = _model(seed=123)  # different init: everything must come from the checkpoint
    model.load_state_dict(saved_model)
    opt = MAKERS[name](model.parameters())
    opt.load_state_dict(saved_opt)

    for _ in range(17):
        _step(ref_model, ref_opt, x, y)
        _step(model, opt, x, y)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        assert torch.equal(a, b)
    ref_state = ref_opt.state_dict()["state"]
    new_state = opt.state_dict()["state"]
    for pid, st in ref_state.items():
        for key, value in st.items():
            assert new_state[pid][key].dtype == value.dtype, key
            assert torch.equal(new_state[pid][key], value), key


def test_state_holds_only_tensors_and_plain_numbers():
    x, y = _data()
    model = _model()
    opt = SAM(model.parameters(), AdamCM, buffer_size=3)
    for _ in range(4):
        _step(model, opt, x, y)
    sd = opt.state_dict()
    for st in sd["state"].values():
        assert all(isinstance(v, torch.Tensor) for v in st.values())
    allowed = (int, float, bool, str, type(None), tuple, list, torch.dtype)
    for group in sd["param_groups"]:
        assert all(isinstance(v, allowed) for v in group.values())


def test_state_dict_of_another_optimizer_is_refused():
    x, y = _data()
    model = _model()
    cm = AdamCM(model.parameters())
    _step(model, cm, x, y)
    with pytest.raises(ValueError, match="written by AdamCM"):
        AdamCG(model.parameters()).load_state_dict(cm.state_dict())
    adam = torch.optim.Adam(model.parameters())
    _step(model, adam, x, y)
    # no critical buffers: refused with the fix named, not resumed with empty buffers
    with pytest.raises(ValueError, match=r"no critical buffers.*start AdamCM fresh"):
        AdamCM(model.parameters()).load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="buffer_size"):  # not stepped: no state, other groups
        AdamCM(model.parameters()).load_state_dict(torch.optim.Adam(model.parameters()).state_dict())
    with pytest.raises(ValueError, match="SAM\\[AdamCM\\]"):
        AdamCM(model.parameters()).load_state_dict(SAM(model.parameters(), AdamCM).state_dict())


def test_state_dict_with_other_buffer_size_is_refused():
    x, y = _data()
    model = _model()
    opt = AdamCM(model.parameters(), buffer_size=5)
    _step(model, opt, x, y)
    with pytest.raises(ValueError, match="buffer_size=5"):
        AdamCM(model.parameters(), buffer_size=10).load_state_dict(opt.state_dict())
    # The tag may be stripped (e.g. by distributed checkpoint helpers): the check still holds.
    sd = opt.state_dict()
    del sd["memoptim"]
    with pytest.raises(ValueError, match="buffer_size"):
        AdamCM(model.parameters(), buffer_size=3).load_state_dict(sd)


@pytest.mark.parametrize("name", ["AdamCM", "SGDCM", "AdaMomentum"])
def test_a_deep_copied_optimizer_loads_a_fresh_state_dict(name):
    # torch's Optimizer.__setstate__ (run by deepcopy, and by wrappers such as Accelerate's) adds
    # `differentiable` to the defaults; such an optimizer must still load our own state dicts.
    ps = [torch.nn.Parameter(torch.randn(3, dtype=torch.float64))]
    qs = [p.detach().clone().requires_grad_(True) for p in ps]
    source = getattr(memoptim, name)(ps, lr=0.1)
    for _ in range(3):
        ps[0].grad = torch.randn(3, dtype=torch.float64)
        source.step()
    target = copy.deepcopy(getattr(memoptim, name)(qs, lr=0.1))
    target.load_state_dict(copy.deepcopy(source.state_dict()))  # no tensor shared with source
    g = torch.randn(3, dtype=torch.float64)
    with torch.no_grad():
        target.param_groups[0]["params"][0].copy_(ps[0])
    ps[0].grad = g.clone()
    target.param_groups[0]["params"][0].grad = g.clone()
    source.step()
    target.step()
    assert torch.equal(target.param_groups[0]["params"][0], ps[0])


def test_a_state_without_critical_buffers_is_refused_but_fresh_and_memoryless_states_load():
    x, y = _data()
    model = _model()
    cm = AdamCM(model.parameters())
    _step(model, cm, x, y)
    stripped = cm.state_dict()
    for st in stripped["state"].values():
        for key in [k for k in st if k.startswith("critical_")]:
            del st[key]
    with pytest.raises(ValueError, match=r"param group 0 .* no critical buffers"):
        AdamCM(model.parameters()).load_state_dict(stripped)
    AdamCM(model.parameters()).load_state_dict(AdamCM(model.parameters()).state_dict())  # no state
    off = AdamCM(model.parameters(), memory=False)
    _step(model, off, x, y)
    AdamCM(model.parameters(), memory=False).load_state_dict(off.state_dict())  # no buffer needed
    two = AdamCM([{"params": model[0].parameters()}, {"params": model[2].parameters(), "memory": False}])
    _step(model, two, x, y)
    AdamCM([{"params": model[0].parameters()},
            {"params": model[2].parameters(), "memory": False}]).load_state_dict(two.state_dict())
