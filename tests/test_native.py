"""The native fused CPU kernels (``fused=True`` on CPU): the reference's numbers, on the path
that is really taken, deterministic, and a clean fallback when they cannot be used."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from hypothesis import given, settings

import memoptim
from memoptim.optim import native
from memoptim.optim.backends import is_native, select_kernel
from test_equivalence import (
    ADAM_CONFIGS,
    ADAM_OVERRIDES,
    GRID_SHAPES,
    SGD_CONFIGS,
    SGD_OVERRIDES,
    problems,
    run_equivalence,
)

ADAMOMENTUM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.02, weight_decay=0.1, decoupled_weight_decay=False, amsgrad=True),
    dict(lr=0.01, maximize=True, amsgrad=True, eps=1e-12),
]
RULES = {"AdamCM": "adam_cm", "AdamCG": "adam_cg", "SGDCM": "sgd_cm", "SGDCG": "sgd_cg",
         "AdaMomentum": "adamomentum"}


@pytest.fixture
def native_calls(monkeypatch):
    """Counts the calls that reach the native kernels (so a silent fallback fails the test)."""
    assert native.available(), f"the native kernel must build here: {native._failed}"
    calls = {"n": 0}
    for rule in RULES.values():
        monkeypatch.setattr(native, rule, _counting(getattr(native, rule), calls))
    return calls


def _counting(kernel, calls):
    """``kernel`` counting its calls in ``calls["n"]``; keeps its name and module, by which the
    optimizers recognise a native kernel (and decide to defer the offer)."""

    @functools.wraps(kernel)
    def counted(*args, **kwargs):
        calls["n"] += 1
        return kernel(*args, **kwargs)

    assert is_native(counted)
    return counted


def _run(name, config, overrides, seed, native_calls, steps=30, dtype=torch.float64, tol=1e-12):
    # buffers compared (hence deferred offers completed from outside) every 5th step only, so
    # that most steps' offers are completed by the next pass, as in training
    run_equivalence(name, GRID_SHAPES, {**config, "fused": True}, overrides, seed=seed, steps=steps,
                    none_prob=0.25, dtype=dtype, tol=tol, buffer_every=5)
    assert native_calls["n"] >= steps, "the native kernel was not used"


@pytest.mark.parametrize("config", range(len(ADAM_CONFIGS)))
@pytest.mark.parametrize("name", ["AdamCM", "AdamCG"])
def test_adam_family_matches_reference(name, config, native_calls):
    _run(name, ADAM_CONFIGS[config], ADAM_OVERRIDES, config, native_calls)


@pytest.mark.parametrize("config", range(len(SGD_CONFIGS)))
@pytest.mark.parametrize("name", ["SGDCM", "SGDCG"])
def test_sgd_family_matches_reference(name, config, native_calls):
    _run(name, SGD_CONFIGS[config], SGD_OVERRIDES, 10 + config, native_calls)


@pytest.mark.parametrize("config", range(len(ADAMOMENTUM_CONFIGS)))
def test_adamomentum_matches_reference(config, native_calls):
    _run("AdaMomentum", ADAMOMENTUM_CONFIGS[config], [{}, {"lr": 0.004, "betas": (0.8, 0.99)}], 3,
         native_calls)


@pytest.mark.parametrize("name", ["AdamCM", "SGDCG"])
def test_long_run_past_the_running_sum_resync(name, native_calls):
    _run(name, {"lr": 0.01, "buffer_size": 3}, None, 7, native_calls, steps=300)


@pytest.mark.parametrize("name", ["AdamCM", "AdamCG", "SGDCM", "SGDCG"])
def test_disable_memory_mid_run(name, native_calls):
    run_equivalence(name, GRID_SHAPES, {"lr": 0.01, "fused": True, "buffer_size": 3}, seed=5,
                    none_prob=0.2, disable_at=12, buffer_every=5)
    assert native_calls["n"] > 0


@pytest.mark.parametrize("name", list(RULES))
def test_float32_parameters_follow_the_reference(name, native_calls):
    """float32 parameters (float32 keys and sums): the reference's rule up to float32 rounding."""
    hyper = {"lr": 0.01, "weight_decay": 0.01}
    if name != "AdaMomentum":
        hyper["buffer_size"] = 3
    _run(name, hyper, None, 9, native_calls, dtype=torch.float32, tol=2e-5)


@pytest.mark.parametrize("name", list(RULES))
@settings(max_examples=15)
@given(problem=problems())
def test_hypothesis_shapes_match_reference(name, problem):
    """Any shapes, including 0-d and empty tensors, several groups (contiguous: the native path)."""
    shapes, _ = problem
    calls = {"n": 0}
    rule = getattr(native, RULES[name])
    setattr(native, RULES[name], _counting(rule, calls))
    try:
        hyper = {"lr": 0.02, "fused": True} | ({} if name == "AdaMomentum" else {"buffer_size": 2})
        run_equivalence(name, shapes, hyper, seed=len(shapes), steps=12, none_prob=0.2, buffer_every=4)
    finally:
        setattr(native, RULES[name], rule)
    assert calls["n"] > 0


def _pair(name, shapes, seed=0, **hyper):
    torch.manual_seed(seed)
    a = [torch.randn(s, requires_grad=True) for s in shapes]
    b = [p.detach().clone().requires_grad_(True) for p in a]
    cls = getattr(memoptim, name)
    return a, b, cls(a, fused=True, **hyper), cls(b, foreach=True, **hyper)


@pytest.mark.parametrize(
    ("name", "buffer_dtype"),
    [(n, None) for n in RULES] + [(n, torch.bfloat16) for n in RULES if n != "AdaMomentum"],
)
def test_float32_follows_the_foreach_path(name, buffer_dtype, native_calls):
    """float32 (and a bfloat16 buffer with its float32 sum): same trajectory and buffer as the
    eager multi-tensor path, to float32 rounding."""
    extra = {} if buffer_dtype is None else {"buffer_dtype": buffer_dtype}
    a, b, fused, eager = _pair(name, [(8, 5), (5,), (3, 2, 2)], lr=1e-2, **extra)
    g = torch.Generator().manual_seed(1)
    for t in range(40):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=g) * (1 + t % 4)
            q.grad = p.grad.clone()
        fused.step()
        eager.step()
    assert native_calls["n"] == 40
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        bp = memoptim.CriticalBuffer.from_state(fused.state[p])
        bq = memoptim.CriticalBuffer.from_state(eager.state[q])
        if bq is None:
            continue
        assert bp.values.dtype == bq.values.dtype and bp.total.dtype == torch.float32
        assert bp.replacements == bq.replacements
        torch.testing.assert_close(bp.values.float(), bq.values.float(), rtol=1e-2 if extra else 1e-5,
                                   atol=1e-5)
        # the running sum is the exact sum of the stored values (to float32 rounding)
        torch.testing.assert_close(bp.total, bp.values.float().sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grad_norms(dtype):
    torch.manual_seed(0)
    grads = [torch.randn(n, dtype=dtype) * 3 for n in (0, 1, 7, 16384, 16385, 100_003)]
    grads.append(torch.randn(300, 300, dtype=dtype))
    norms = native.grad_norms(grads)
    assert norms.dtype == torch.float64
    expected = torch.stack([torch.linalg.vector_norm(g.double()) for g in grads])
    torch.testing.assert_close(norms, expected, rtol=1e-13, atol=0)


def test_results_do_not_depend_on_the_thread_count():
    """Chunked norms added in a fixed order, elementwise updates: bit-identical for 1 and 2 threads."""
    before = torch.get_num_threads()
    out = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            ps = [torch.randn(300, 400, requires_grad=True), torch.randn(70_000, requires_grad=True)]
            opt = memoptim.AdamCM(ps, fused=True, buffer_size=3)
            g = torch.Generator().manual_seed(2)
            for t in range(8):
                for p in ps:
                    p.grad = torch.randn(p.shape, generator=g) * (1 + t % 3)
                opt.step()
            out.append([p.detach().clone() for p in ps] + [native.grad_norms([p.grad for p in ps])])
    finally:
        torch.set_num_threads(before)
    for x, y in zip(*out):
        assert torch.equal(x, y)


def test_supports_only_what_the_kernel_handles():
    p32 = torch.zeros(4, 3)
    assert native.supports([p32], [p32.clone()], [p32.clone()])
    assert native.supports([p32.double()], [p32.double()])
    assert not native.supports([p32.half()], [p32.half()])                    # dtype
    assert not native.supports([p32.bfloat16()], [p32.bfloat16()])
    assert not native.supports([p32], [p32.double()])                         # grad dtype differs
    assert native.supports([p32], [torch.zeros(3, 4).t()])                    # grad: read as a copy
    assert not native.supports([p32.t()], [p32.t().clone()])                  # non-contiguous param
    assert not native.supports([p32], [p32.clone()], [p32.clone().double()])  # state dtype differs


def test_unsupported_tensors_take_the_compiled_path():
    group = {"fused": True, "foreach": None, "lr": 0.1}
    p = torch.zeros(3, 4, dtype=torch.float16)
    kernel, _, lr = select_kernel(memoptim.optim.functional.adam_cm, group, ([p], [p.clone()]),
                                        steps=[torch.zeros(())])
    assert not is_native(kernel) and torch.is_tensor(lr)
    q = torch.zeros(3, 4)
    kernel, _, lr = select_kernel(memoptim.optim.functional.adam_cm, group, ([q], [q.clone()]),
                                  steps=[torch.zeros(())])
    assert is_native(kernel) and lr == 0.1


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failed", None)

    def broken(**kwargs):
        raise OSError("no compiler here")

    monkeypatch.setattr(torch.utils.cpp_extension, "load", broken)
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        assert not native.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not native.available()  # warned once
        assert not native.supports([torch.zeros(2)], [torch.zeros(2)])


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("MEMOPTIM_NATIVE", "0")
    assert not native.supports([torch.zeros(2)], [torch.zeros(2)])


# ----------------------------------------------------------------------------- deferred offers
def _grads(ps, t, g):
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype) * (1 + t % 4)


def _step_twins(a, b, opts, t, g):
    """Step ``opts`` (optimizing ``a`` and its clone ``b``) on the same random gradients."""
    _grads(a, t, g)
    for p, q in zip(a, b):
        q.grad = p.grad.clone()
    for opt in opts:
        opt.step()


@pytest.mark.parametrize(("name", "hyper", "deferred"), [
    ("AdamCM", {}, True), ("SGDCM", {"momentum": 0.9}, True), ("SGDCM", {"momentum": 0.0}, False),
    ("AdamCG", {}, False), ("SGDCG", {"momentum": 0.9}, False),
])
def test_only_critical_momenta_with_a_kept_momentum_defer_the_offer(name, hyper, deferred):
    ps = [torch.randn(6, 5, requires_grad=True)]
    opt = getattr(memoptim, name)(ps, fused=True, buffer_size=2, **hyper)
    g = torch.Generator().manual_seed(0)
    _grads(ps, 0, g)
    opt.step()
    assert ("critical_pending" in opt.state[ps[0]]) is deferred
    sd = opt.state_dict()  # completes the offer: a checkpoint never holds a pending one
    assert not any(k.startswith("critical_pending") for st in sd["state"].values() for k in st)
    assert "critical_pending" not in opt.state[ps[0]]
    opt.disable_memory()
    assert not any(k.startswith("critical") for k in opt.state[ps[0]])


@pytest.mark.parametrize("name", ["AdamCM", "SGDCM"])
def test_switching_execution_path_mid_run_completes_the_pending_offer(name):
    """native -> foreach -> native -> compiled: the offer a native step left pending is completed
    before another path aggregates; the trajectory is the foreach path's throughout."""
    torch.manual_seed(3)
    a = [torch.randn(9, 4, dtype=torch.float64, requires_grad=True), torch.randn(7, dtype=torch.float64,
                                                                                  requires_grad=True)]
    b = [p.detach().clone().requires_grad_(True) for p in a]
    cls = getattr(memoptim, name)
    switching, eager = cls(a, lr=0.01, buffer_size=3, fused=True), cls(b, lr=0.01, buffer_size=3)
    g = torch.Generator().manual_seed(4)
    for t in range(40):
        group = switching.param_groups[0]
        group["fused"], group["foreach"] = {10: (None, True), 20: (True, None)}.get(
            t, (group["fused"], group["foreach"]))
        if t == 30:
            torch.manual_seed(0)
            a[0].data = a[0].data.t().contiguous().t()  # non-contiguous: the compiled path
        _step_twins(a, b, (switching, eager), t, g)
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12, msg=f"step {t + 1}")
    assert "critical_pending" not in switching.state[a[0]]  # its last steps were compiled


@pytest.mark.parametrize("at", [255, 256, 257])
def test_checkpoint_around_a_resync_step_resumes_bit_exactly(at):
    """A state_dict completes the pending offer (and, after a resync step, the resync) exactly as
    the next pass would: resuming from it is bit-identical to not stopping."""
    def make(ps):
        return memoptim.AdamCM(ps, lr=0.01, buffer_size=3, fused=True, priority="tensor")

    torch.manual_seed(1)
    a = [torch.randn(40, 30, requires_grad=True), torch.randn(30, requires_grad=True)]
    b = [p.detach().clone().requires_grad_(True) for p in a]
    straight, first = make(a), make(b)
    g = torch.Generator().manual_seed(2)
    for t in range(262):
        if t == at:
            resumed = make(b)
            resumed.load_state_dict(first.state_dict())
            first = resumed
        _step_twins(a, b, (straight, first), t, g)
    for p, q in zip(a, b):
        assert torch.equal(p, q)
        assert torch.equal(memoptim.CriticalBuffer.from_state(straight.state[p]).total,
                           memoptim.CriticalBuffer.from_state(first.state[q]).total)


def test_sgd_momentum_switched_off_mid_run_completes_the_pending_offer():
    torch.manual_seed(5)
    a = [torch.randn(6, 6, dtype=torch.float64, requires_grad=True)]
    b = [a[0].detach().clone().requires_grad_(True)]
    fused = memoptim.SGDCM(a, lr=0.05, buffer_size=2, fused=True)
    eager = memoptim.SGDCM(b, lr=0.05, buffer_size=2)
    g = torch.Generator().manual_seed(6)
    for t in range(20):
        if t == 8:
            fused.param_groups[0]["momentum"] = eager.param_groups[0]["momentum"] = 0.0
        _step_twins(a, b, (fused, eager), t, g)
        torch.testing.assert_close(a[0], b[0], rtol=1e-12, atol=1e-12, msg=f"step {t + 1}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["AdamCM", "SGDCM"])
def test_one_pass_norms_are_grad_norms_to_the_bit(name, dtype):
    """The deferred pass sums the squares inside its update loop in grad_norms' lane layout: the
    key it stores is grad_norms' (here: after one step, into an empty buffer, decayed once)."""
    torch.manual_seed(0)
    ps = [torch.randn(n, dtype=dtype, requires_grad=True) for n in (1, 15, 16, 17, 40_000)]
    ps.append(torch.randn(130, 131, dtype=dtype, requires_grad=True))
    opt = getattr(memoptim, name)(ps, fused=True, priority="tensor", decay=0.7)
    for p in ps:
        p.grad = torch.randn(p.shape, dtype=dtype) * 3
    expected = native.grad_norms([p.grad for p in ps]).to(dtype) * torch.tensor(0.7, dtype=dtype)
    opt.step()
    assert all("critical_pending" in opt.state[p] for p in ps)  # the one-pass path ran
    got = torch.stack([opt.state[p]["critical_keys"][0] for p in ps])
    assert torch.equal(got, expected)
