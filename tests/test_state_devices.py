"""State and devices: checkpoints of every path load into every other, the state holds tensors
and numbers only, the step reads nothing back from the device, complex parameters and groups
spanning devices or dtypes.

``tests/fixtures/checkpoints_v2.pt`` was written by ``tests/fixtures/make_checkpoints_v2.py``
before the state became tensor-only: raw native state with the pending-offer marker as a string,
``fused=True`` state dicts, random-policy runs and runs across the periodic resync.
"""

from __future__ import annotations

import copy
import io
import sys
from pathlib import Path

import pytest
import torch

import memoptim
from memoptim import SGDCM, AdamCM
from memoptim.buffer import PENDING_KEYS, RESYNC_INTERVAL
from memoptim.optim import driver
from memoptim.policy import device_draw, replacement_draw
from memoptim.registry import REGISTRY

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import make_checkpoints_v2 as V2

RECORDED_V2 = torch.load(V2.PATH, weights_only=False)


def _native_or_skip(name: str) -> None:
    from memoptim.optim import native

    if V2.CASES[name][1].get("fused") and not native.available():
        pytest.skip("the native kernel cannot be built here")


@pytest.mark.parametrize("case", sorted(RECORDED_V2))
def test_a_v2_state_dict_loads_and_continues_bit_for_bit(case):
    _native_or_skip(case)
    _, _, before, after, _ = V2.CASES[case]
    saved = RECORDED_V2[case]
    params = [p.clone().requires_grad_() for p in saved["params"]]
    opt = V2.build(case, params)
    opt.load_state_dict(saved["state_dict"])
    for t in range(before, before + after):
        V2.gradient(params, t)
        opt.step()
    for p, want in zip(params, saved["continued"]):
        assert torch.equal(p.detach(), want), f"{case}: the continuation changed"


@pytest.mark.parametrize("case", sorted(RECORDED_V2))
def test_a_fresh_run_reproduces_the_v2_trajectory(case):
    _native_or_skip(case)
    fresh = V2.record(case)
    for p, want in zip(fresh["continued"], RECORDED_V2[case]["continued"]):
        assert torch.equal(p, want), f"{case}: today's optimizer no longer gives the recorded result"


# ------------------------------------------------------------------ no host reads in step()

PATHS = {"default": {}, "foreach": {"foreach": True}, "per-tensor": {"foreach": False}}


def _is_memoptim(opt: torch.optim.Optimizer) -> bool:
    return type(opt).__module__.startswith("memoptim")


def _run(name: str, params: list[torch.Tensor], steps: int, grads, **kw) -> torch.optim.Optimizer:
    opt = memoptim.create_optimizer(name, params, **kw)
    for t in range(steps):
        for p, g in zip(params, grads(t)):
            p.grad = g
        if REGISTRY[name].sam:
            opt.step(lambda: torch.zeros((), device=params[0].device))
        else:
            opt.step()
    return opt


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(REGISTRY))
def test_five_steps_on_the_meta_device_read_nothing_back(name, path):
    # A meta tensor holds no data: .item(), int(t), bool(t) or a branch on a value raise there.
    if REGISTRY[name].sam and path != "default":
        pytest.skip("SAM takes its base's path")
    params = [torch.randn(4, 3, device="meta", requires_grad=True),
              torch.randn(3, device="meta", requires_grad=True)]
    opt = _run(name, params, 5, lambda t: [torch.ones_like(p) for p in params], **PATHS[path])
    base = getattr(opt, "base_optimizer", opt)
    if _is_memoptim(base):
        for p in params:
            state = base.state[p]
            assert state["step"].device.type == "meta"  # capturable: the counter lives with p
            assert all(v.device.type == "meta" for v in state.values() if isinstance(v, torch.Tensor))


# ------------------------------------------------------------------ the periodic resync on the device
@pytest.mark.parametrize("name,kw", [("adam+cm", {"foreach": True}), ("sgd+cg", {"foreach": False}),
                                     ("lion+cm", {"foreach": True}), ("adam+cm-random", {"foreach": True})])
def test_the_resync_decided_on_the_device_is_bit_identical(name, kw, monkeypatch):
    gen = torch.Generator().manual_seed(5)
    noise = [torch.randn(3, 2, generator=gen) for _ in range(RESYNC_INTERVAL + 8)]

    def run() -> list[torch.Tensor]:
        params = [torch.ones(3, 2, requires_grad=True)]
        _run(name, params, RESYNC_INTERVAL + 8, lambda t: [noise[t] * (1 + t % 7)], lr=1e-3,
             buffer_size=3, **kw)
        return [p.detach().clone() for p in params]

    host = run()
    calls = []
    real = driver.CriticalBuffer.resync_where

    def counted(self, due):
        calls.append(due)
        real(self, due)

    monkeypatch.setattr(driver, "on_device", lambda values: True)  # the decision the device makes
    monkeypatch.setattr(driver.CriticalBuffer, "resync_where", counted)
    device = run()
    assert len(calls) == RESYNC_INTERVAL + 8 and sum(bool(c) for c in calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(host, device))


# ------------------------------------------------------------------ the random policy on the device
def test_device_draws_are_a_pure_function_of_seed_and_step_with_the_right_rates():
    steps = torch.arange(20000, dtype=torch.float32)
    accept, slot = device_draw(7, steps, 5, 0.3)
    again, slot2 = device_draw(7, steps.clone(), 5, 0.3)
    assert torch.equal(accept, again) and torch.equal(slot, slot2)
    assert abs(accept.double().mean().item() - 0.3) < 0.015
    assert torch.bincount(slot, minlength=5).min() > 0.18 * len(steps)
    other, _ = device_draw(8, steps, 5, 0.3)
    assert not torch.equal(accept, other)  # the seed matters
    assert device_draw(0, steps, 5, 1.0)[0].all() and not device_draw(0, steps, 5, 0.0)[0].any()
    # the CPU keeps its host draws (earlier runs resume exactly), here through the offer
    assert replacement_draw(3, 10, 2, 0.5) == replacement_draw(3, 10, 2, 0.5)


# ------------------------------------------------------------------ tensor-only state
@pytest.mark.parametrize("cls", [AdamCM, SGDCM])
def test_state_holds_tensors_and_plain_numbers_only_also_with_a_deferred_offer(cls):
    from memoptim.optim import native

    if not native.available():
        pytest.skip("the native kernel cannot be built here")
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = cls(params, lr=1e-2, buffer_size=3, fused=True)
    for t in range(4):
        V2.gradient(params, t)
        opt.step()
    assert all(PENDING_KEYS[0] in opt.state[p] for p in params)  # the one-pass path deferred
    for st in opt.state.values():
        assert all(isinstance(v, (torch.Tensor, int, float)) for v in st.values()), st
    # the raw state (no offer completed) round-trips through weights_only and continues exactly
    raw = copy.deepcopy(torch.optim.Optimizer.state_dict(opt))
    ref = copy.deepcopy(opt)
    twin = [p.detach().clone().requires_grad_() for p in params]
    loaded = cls(twin, lr=1e-2, buffer_size=3, fused=True)
    buf = io.BytesIO()
    torch.save(raw, buf)
    buf.seek(0)
    loaded.load_state_dict(torch.load(buf, weights_only=True))
    ref_params = [p for g in ref.param_groups for p in g["params"]]
    for t in range(4, 9):
        V2.gradient(ref_params, t)
        ref.step()
        V2.gradient(twin, t)
        loaded.step()
    assert all(torch.equal(a, b) for a, b in zip(ref_params, twin))


# ------------------------------------------------------------------ complex parameters
FUSED_OR_PATHS = {**PATHS, "fused": {"fused": True}}


@pytest.mark.parametrize("path", list(FUSED_OR_PATHS))
@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.build.__module__ != "torch.optim.adam"
                                  and n not in ("adamw", "sgd")])
def test_complex_parameters_step_as_their_real_views(name, path):
    if REGISTRY[name].sam and path != "default":
        pytest.skip("SAM takes its base's path")
    gen = torch.Generator().manual_seed(0)
    cplx = [torch.randn(3, 2, dtype=torch.complex64, generator=gen).requires_grad_(),
            torch.randn(4, dtype=torch.complex128, generator=gen).requires_grad_()]
    real = [torch.view_as_real(c.detach()).clone().requires_grad_() for c in cplx]
    noise = [[torch.randn(c.shape, dtype=c.dtype, generator=gen) for c in cplx] for _ in range(6)]
    hyper = {"lr": 1e-2, **FUSED_OR_PATHS[path]}
    if REGISTRY[name].memory:
        hyper["buffer_size"] = 3  # full after three steps: replacements happen
    opt_c = _run(name, cplx, 6, lambda t: noise[t], **hyper)
    _run(name, real, 6, lambda t: [torch.view_as_real(g).clone() for g in noise[t]], **hyper)
    for c, r in zip(cplx, real):
        assert torch.equal(torch.view_as_real(c.detach()), r.detach())
    base = getattr(opt_c, "base_optimizer", opt_c)
    for c in cplx:
        keys = base.state[c].get("critical_keys")
        assert keys is None or not keys.is_complex()  # the keys stay real


# ------------------------------------------------------------------ several devices, several dtypes
def test_a_group_on_cpu_and_meta_steps_each_device_as_its_own(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    cpu = [torch.randn(3, 2, generator=gen).requires_grad_()]
    alone = [cpu[0].detach().clone().requires_grad_()]
    meta = [torch.randn(4, device="meta", requires_grad=True)]
    noise = [torch.randn(3, 2, generator=gen) for _ in range(6)]
    mixed = _run("adam+cm", cpu + meta, 6, lambda t: [noise[t], torch.ones(4, device="meta")],
                 lr=1e-2, buffer_size=3, priority="tensor")
    _run("adam+cm", alone, 6, lambda t: [noise[t]], lr=1e-2, buffer_size=3, priority="tensor")
    assert torch.equal(cpu[0], alone[0])
    assert mixed.state[meta[0]]["critical_keys"].device.type == "meta"
    assert mixed.state[cpu[0]]["step"].device.type == "cpu"


@pytest.mark.parametrize("name,kw", [("adam+cm", {"foreach": True}), ("sgd+cm-authors", {"foreach": False}),
                                     ("adam+cg", {}), ("lion+cm", {"foreach": True})])
def test_a_group_split_across_devices_keeps_its_group_key(name, kw, monkeypatch):
    # Two devices cannot be had on a CPU-only machine: split a float64 group in two "devices"
    # and check the per-device protocol (partial key sums, per-device offers, state handed back)
    # against the same group stepped whole.
    gen = torch.Generator().manual_seed(2)
    shapes = [(3, 2), (4,), (2, 2), (5,)]
    whole = [torch.randn(s, dtype=torch.float64, generator=gen).requires_grad_() for s in shapes]
    split = [p.detach().clone().requires_grad_() for p in whole]
    noise = [[torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes] for _ in range(8)]
    _run(name, whole, 8, lambda t: noise[t], lr=1e-2, buffer_size=3, **kw)
    monkeypatch.setattr(driver, "by_device_and_dtype",
                        lambda ts: [[i for i in range(len(ts)) if i % 2 == parity] for parity in (0, 1)])
    opt = _run(name, split, 8, lambda t: noise[t], lr=1e-2, buffer_size=3, **kw)
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    keys = [opt.state[p]["critical_keys"] for p in split]
    assert all(torch.equal(keys[0], k) for k in keys[1:])  # one key per group and step


def test_a_group_of_two_dtypes_keys_by_the_whole_group():
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(3, generator=gen).requires_grad_(),
              torch.randn(4, dtype=torch.float64, generator=gen).requires_grad_()]
    grads = [torch.randn(3, generator=gen), torch.randn(4, dtype=torch.float64, generator=gen)]
    opt = _run("adam+cm", params, 1, lambda t: grads, lr=1e-2, decay=0.5)
    want = 0.5 * (grads[0].double().norm() + grads[1].norm())
    for p in params:
        torch.testing.assert_close(opt.state[p]["critical_keys"][0].double(), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kw", [{"foreach": True}, {"foreach": False}, {"fused": True}, {}])
@pytest.mark.parametrize("name", ["adam+cm", "adam+cg", "sgd+cm", "lion+cm"])
def test_a_group_of_several_dtypes_steps_each_dtype_as_its_own_group(name, kw, monkeypatch):
    # With per-tensor keys nothing couples the dtypes: each bucket must step exactly as a group of
    # that dtype alone, on every path (the float32 and float64 buckets are each one native call).
    monkeypatch.setenv("MEMOPTIM_NATIVE", "1")
    gen = torch.Generator().manual_seed(5)
    dtypes = [torch.float32, torch.float64, torch.float32, torch.bfloat16, torch.float64]
    mixed = [torch.randn(3, 2, generator=gen).to(dt).requires_grad_() for dt in dtypes]
    noise = [[torch.randn(3, 2, generator=gen).to(dt) for dt in dtypes] for _ in range(6)]
    hyper = {"lr": 1e-2, "buffer_size": 2, "priority": "tensor", **kw}
    opt = _run(name, mixed, 6, lambda t: noise[t], **hyper)
    for dt in (torch.float32, torch.float64, torch.bfloat16):
        idx = [i for i, d in enumerate(dtypes) if d == dt]
        gen = torch.Generator().manual_seed(5)  # the same starting point
        start = [torch.randn(3, 2, generator=gen).to(d) for d in dtypes]
        alone = [start[i].requires_grad_() for i in idx]
        _run(name, alone, 6, lambda t, idx=idx: [noise[t][i] for i in idx], **hyper)
        for i, a in zip(idx, alone):
            assert torch.equal(mixed[i], a), (name, kw, dt)
            assert opt.state[mixed[i]]["critical_keys"].dtype == torch.promote_types(dt, torch.float32)


# ------------------------------------------------------------------ checkpoints across paths and devices
CROSS = {"foreach": {"foreach": True}, "per-tensor": {"foreach": False}, "fused": {"fused": True}}


@pytest.mark.parametrize("dst", list(CROSS))
@pytest.mark.parametrize("src", list(CROSS))
@pytest.mark.parametrize("name", ["adam+cm", "adam+cg", "sgd+cm", "adamomentum", "lion+cm"])
def test_a_checkpoint_of_one_path_resumes_on_another(name, src, dst):
    gen = torch.Generator().manual_seed(4)
    shapes = [(4, 3), (5,)]
    params = [torch.randn(s, dtype=torch.float64, generator=gen).requires_grad_() for s in shapes]
    noise = [[torch.randn(s, dtype=torch.float64, generator=gen) for s in shapes] for _ in range(10)]
    hyper = {"lr": 1e-2} | ({"buffer_size": 3} if REGISTRY[name].memory else {})
    opt = _run(name, params, 5, lambda t: noise[t], **hyper, **CROSS[src])
    saved = io.BytesIO()
    torch.save(torch.optim.Optimizer.state_dict(opt), saved)  # raw: a deferred offer may be pending
    twin = [p.detach().clone().requires_grad_() for p in params]
    for t in range(5, 10):
        for p, g in zip(params, noise[t]):
            p.grad = g
        opt.step()
    saved.seek(0)
    resumed = memoptim.create_optimizer(name, twin, **hyper, **CROSS[dst])
    resumed.load_state_dict(torch.load(saved, weights_only=True))
    for p in twin:
        st = resumed.state[p]
        assert st["step"].dtype == torch.float32 and st["step"].device == p.device
        assert all(isinstance(v, torch.Tensor) for v in st.values())
    for t in range(5, 10):
        for p, g in zip(twin, noise[t]):
            p.grad = g
        resumed.step()
    for a, b in zip(params, twin):  # every path agrees with the reference to 1e-12 in float64
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        if src == dst:
            assert torch.equal(a, b)


@pytest.mark.parametrize("fused", [None, True])
@pytest.mark.parametrize("name", ["adam+cm", "sgd+cm", "adam+cm-random", "adamomentum", "lion"])
def test_a_cpu_checkpoint_is_placed_on_the_parameters_device(name, fused):
    hyper = {"lr": 1e-2} | ({"buffer_size": 2} if REGISTRY[name].memory else {})
    cpu = [torch.randn(4, 3, requires_grad=True)]
    opt = _run(name, cpu, 3, lambda t: [torch.full((4, 3), 0.1 * (t + 1))], fused=fused, **hyper)
    sd = opt.state_dict()
    meta = [torch.empty(4, 3, device="meta", requires_grad=True)]
    on_meta = memoptim.create_optimizer(name, meta, **hyper)
    on_meta.load_state_dict(sd)
    st = on_meta.state[meta[0]]
    assert all(v.device.type == "meta" for v in st.values())
    assert st["step"].dtype == torch.float32
    if REGISTRY[name].memory:
        assert st["critical_keys"].dtype == torch.float32 and st["critical_replacements"].dtype == torch.int64
    for group in on_meta.param_groups:  # the group options travel with the checkpoint, as in torch
        group["fused"] = None  # no fused backend runs on meta
    meta[0].grad = torch.ones(4, 3, device="meta")
    on_meta.step()  # and steps there, without reading anything back


# ------------------------------------------------------------------ bad input: one line naming the fix
def test_a_state_that_cannot_be_placed_is_one_line_naming_the_fix():
    meta = [torch.empty(3, device="meta", requires_grad=True)]
    opt = _run("adam+cm", meta, 2, lambda t: [torch.ones(3, device="meta")], buffer_size=2)
    cpu = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ValueError) as err:
        AdamCM(cpu, buffer_size=2).load_state_dict(opt.state_dict())
    msg = str(err.value)
    assert "\n" not in msg and "meta" in msg and "load a checkpoint saved from parameters that hold data" in msg


def test_a_group_mixing_sparse_and_dense_gradients_is_one_line_naming_the_fix():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    dense = torch.nn.Linear(3, 1)
    opt = AdamCM([*emb.parameters(), *dense.parameters()])
    dense(emb(torch.tensor([0, 2]))).sum().backward()
    with pytest.raises(RuntimeError) as err:
        opt.step()
    msg = str(err.value)
    assert "\n" not in msg and "sparse=False" in msg
