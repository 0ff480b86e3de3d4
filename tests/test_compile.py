"""``torch.compile`` over the optimizers.

* the native kernels are torch custom operators (``torch.library.opcheck`` on each);
* ``torch.compile(opt.step)`` gives no more graphs or graph breaks than ``torch.optim.Adam``'s
  step in the same process, for every memoptim optimizer of the registry on every path, and the
  step body the driver runs compiles with ``fullgraph=True``;
* a learning rate held in a tensor and changed every step by a scheduler recompiles nothing
  after warm-up, and the compiled step gives the eager step's numbers;
* every composed kernel has its own code object, hence its own compile cache and limit;
* the device is checked before the C++ extension is built, and ``fused=True`` on a device no
  fused backend runs on is a one-line error naming the supported devices.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import warnings

import pytest
import torch
from torch._dynamo.utils import counters

import memoptim
from memoptim.optim import backends, native
from memoptim.optim import functional as F
from memoptim.optim.memory import _KERNELS
from memoptim.optim.native import build, ops
from memoptim.registry import REGISTRY

#: The execution paths (group options; "compiled" also switches the native kernel off).
PATHS = {"default": {}, "foreach": {"foreach": True}, "per-tensor": {"foreach": False},
         "native": {"fused": True}, "compiled": {"fused": True}}
#: memoptim's registry entries (torch.optim's own are the yardstick); SAM is tested on its own.
OURS = [n for n, e in REGISTRY.items() if not getattr(e.build, "__module__", "").startswith("torch.optim")
        and not e.sam]
SAM_NAMES = [n for n, e in REGISTRY.items() if e.sam]


@pytest.fixture(scope="module", autouse=True)
def quiet_dynamo():
    torch._logging.set_logs(dynamo=logging.ERROR)
    yield
    torch._logging.set_logs()


@pytest.fixture
def built():
    """The native kernel built and loaded (so the default path runs it)."""
    build.load()
    assert native.is_built() and native.available()


def _params(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.randn(4, 3, generator=g, dtype=dtype).requires_grad_(True),
          torch.randn(3, generator=g, dtype=dtype).requires_grad_(True)]
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g, dtype=dtype)
    return ps


def _build(name, params, **options):
    hyper = {"lr": torch.tensor(0.01), **options}
    if REGISTRY[name].family == "sgd":
        hyper["momentum"] = 0.9
    return REGISTRY[name].build(params, **hyper)


def _graphs_and_breaks(fn):
    """``(graphs, breaks)`` of compiling ``fn`` once (fresh caches): explain's graph count, and
    its graph breaks, break reasons and Dynamo's graph-break counter added up (a break inside an
    inlined call shows in some of these only)."""
    torch._dynamo.reset()
    counters.clear()
    ex = torch._dynamo.explain(fn)()
    breaks = ex.graph_break_count + len(ex.break_reasons) + sum(counters["graph_break"].values())
    return ex.graph_count, breaks


@pytest.fixture(scope="module")
def torch_adam():
    """``(graphs, breaks)`` of ``torch.optim.Adam.step`` (one eager step first, as ours)."""
    opt = torch.optim.Adam(_params(), lr=torch.tensor(0.01))
    opt.step()
    return _graphs_and_breaks(opt.step)


# ----------------------------------------------------------------------------- custom operators
def _adam_args(pending: bool, amsgrad: bool = False):
    """Arguments as a step passes them (under ``torch.no_grad``: plain tensors)."""
    ps = [p.detach() for p in _params(torch.float64)]
    for p in ps:
        p.grad = torch.randn_like(p)
    C = 3
    maxima = [torch.rand_like(p) for p in ps] if amsgrad else []
    return dict(
        params=ps, grads=[p.grad for p in ps], exp_avgs=[torch.randn_like(p) for p in ps],
        exp_avg_sqs=[torch.rand_like(p) for p in ps], max_exp_avg_sqs=maxima,
        steps=[torch.full((), 3.0) for _ in ps],
        values=[torch.randn(C, *p.shape, dtype=p.dtype) for p in ps], sums=[torch.zeros_like(p) for p in ps],
        keys=[torch.tensor([2.0, -math.inf, 0.5], dtype=torch.float64) for _ in ps],
        replacements=[torch.zeros((), dtype=torch.int64) for _ in ps],
        offered=torch.tensor([1.0, 3.0], dtype=torch.float64), lr=torch.tensor(0.01, dtype=torch.float64),
        beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=amsgrad, decoupled=True, maximize=False,
        decay=0.7, variant="adam+cm", resync_interval=256,
        pending=[torch.tensor(1, dtype=torch.int64) for _ in ps] if pending else [])


def _sgd_args(pending: bool):
    a = _adam_args(pending)
    for k in ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs", "beta1", "beta2", "eps", "amsgrad", "decoupled"):
        del a[k]
    return {**a, "momentum_buffers": [torch.randn_like(p) for p in a["params"]], "seed": [0, 1],
            "momentum": 0.9, "dampening": 0.0, "variant": "sgd+cm"}


OPCHECKS = {
    "adam_step": lambda: _adam_args(pending=False, amsgrad=True),
    "adam_step deferred": lambda: _adam_args(pending=True),
    "adam_step adam+cg": lambda: {**_adam_args(pending=False), "variant": "adam+cg"},
    "adam_step adamomentum": lambda: {**_adam_args(pending=False), "variant": "adamomentum", "values": [],
                                      "sums": [], "keys": [], "replacements": [],
                                      "offered": torch.empty(0, dtype=torch.float64)},
    "sgd_step": lambda: _sgd_args(pending=False),
    "sgd_step deferred": lambda: {**_sgd_args(pending=True), "seed": [0, 0]},
    "sgd_step sgd+cg": lambda: {**_sgd_args(pending=False), "variant": "sgd+cg"},
    "grad_norms": lambda: {"tensors": [p.grad for p in _params(torch.float64)]},
    "offer_deferred": lambda: {"keys": torch.tensor([1.0, 3.0], dtype=torch.float64),
                               "buffer_keys": [torch.tensor([2.0, -math.inf], dtype=torch.float64),
                                               torch.tensor([2.0, 2.5], dtype=torch.float64)],
                               "replacements": [torch.zeros((), dtype=torch.int64) for _ in range(2)],
                               "pending": [torch.tensor(-1, dtype=torch.int64) for _ in range(2)],
                               "decay": 0.7},
}


@pytest.mark.parametrize("case", list(OPCHECKS))
def test_every_native_entry_point_passes_opcheck(case, built):
    """Schema (the declared mutations are the real ones), fake implementation, autograd
    registration and AOT dispatch of each custom operator."""
    op = ops.OPS[case.split()[0]]
    result = torch.library.opcheck(op, (), OPCHECKS[case]())
    assert set(result.values()) == {"SUCCESS"}, result


def test_every_native_entry_point_is_an_operator():
    assert set(ops.OPS) == {"adam_step", "sgd_step", "grad_norms", "offer_deferred"}
    for name in ops.OPS:
        assert hasattr(torch.ops.memoptim, name)


def test_the_traced_support_check_is_the_extensions(built):
    p32 = torch.zeros(3, 4)
    cases = [
        ([p32], [p32.clone()], [[p32.clone()]]), ([p32.double()], [p32.double()], []),
        ([p32.half()], [p32.half()], []), ([p32.bfloat16()], [p32.bfloat16()], []),
        ([p32], [p32.double()], []), ([p32], [torch.zeros(3, 4).t()], []), ([p32.t()], [p32.t().clone()], []),
        ([p32], [p32.clone()], [[p32.clone().double()]]), ([p32], [p32.clone()], [[None]]),
    ]
    for params, grads, states in cases:
        steps = [torch.zeros(()) for _ in params]
        expected = native.supports(params, grads, *states, steps=steps)
        assert ops.supports_traced(params, grads, states, steps, [], [], []) == expected
    p = torch.zeros(3, 4)
    dtypes = (torch.float32, torch.float64, torch.bfloat16)
    buffers = [memoptim.CriticalBuffer(torch.zeros(2), torch.zeros(2, 3, 4, dtype=dt), torch.zeros(3, 4),
                                       torch.zeros((), dtype=torch.int64)) for dt in dtypes]
    for b in buffers:
        expected = native.supports([p], [p.clone()], buffers=[b], steps=[torch.zeros(())])
        assert ops.supports_traced([p], [p.clone()], [], [torch.zeros(())], [b.values], [b.total],
                                   [b.keys]) == expected
    assert [native.supports([p], [p.clone()], buffers=[b], steps=[torch.zeros(())]) for b in buffers] == [
        True, False, True]


# ----------------------------------------------------------------------------- graphs and breaks
@pytest.mark.slow
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", OURS)
def test_no_graph_break_of_ours(name, path, torch_adam, built, monkeypatch):
    if path == "compiled":
        monkeypatch.setenv("MEMOPTIM_NATIVE", "0")
    opt = _build(name, _params(), **PATHS[path])
    opt.step()
    graphs, breaks = _graphs_and_breaks(opt.step)
    assert graphs <= torch_adam[0] and breaks <= torch_adam[1], (
        f"{name} on the {path} path: {graphs} graphs, {breaks} breaks; torch.optim.Adam: {torch_adam}")
    torch._dynamo.reset()
    with torch.no_grad():  # the body compiles whole
        torch.compile(opt._step_groups, fullgraph=True, backend="eager")()


@pytest.mark.slow
@pytest.mark.parametrize("name", SAM_NAMES)
def test_sams_two_half_steps_compile_without_breaks(name, torch_adam, built):
    """SAM's ``first_step`` and ``second_step`` (the two halves around the second backward)
    compile like torch's Adam step, ``second_step`` with no break beyond its base's step (a
    ``torch.optim`` base brings its own); ``step(closure)`` runs two backward passes inside the
    step, which Dynamo does not trace as one graph (docs/performance.md)."""
    opt = _build(name, _params())
    opt.first_step()
    opt.second_step()
    base = _graphs_and_breaks(opt.base_optimizer.step)
    graphs, breaks = _graphs_and_breaks(opt.first_step)
    assert graphs <= torch_adam[0] and breaks <= torch_adam[1], ("first_step", graphs, breaks)
    graphs, breaks = _graphs_and_breaks(opt.second_step)
    assert graphs <= torch_adam[0] + base[0] and breaks <= torch_adam[1] + base[1], (
        "second_step", graphs, breaks, "base", base)
    if not type(opt.base_optimizer).__module__.startswith("torch.optim"):  # ours: none at all beyond
        assert graphs <= torch_adam[0] and breaks <= torch_adam[1], ("second_step", graphs, breaks)


# ----------------------------------------------------------------------------- schedules, numbers
SCHEDULED = {"AdamCM default (native)": ("AdamCM", {}), "AdamCM foreach": ("AdamCM", {"foreach": True}),
             "AdamCM compiled fused": ("AdamCM", {"fused": True}), "SGDCM fused (native)": ("SGDCM",
                                                                                            {"fused": True}),
             # the aggregate reads the keys (filled slots) before the offer operator changes them
             "AdamCM filled aggregation": ("AdamCM", {"foreach": True, "aggregation": "filled",
                                                      "buffer_size": 2})}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SCHEDULED))
def test_a_schedule_recompiles_nothing_and_the_compiled_step_is_the_eager_one(case, built, monkeypatch):
    """20 steps, the learning rate (a tensor) changed every step by a scheduler: no recompile
    after two warm-up steps, and the parameters follow the eager optimizer's."""
    name, options = SCHEDULED[case]
    if "compiled" in case:
        monkeypatch.setenv("MEMOPTIM_NATIVE", "0")
    hyper = {**options, **({"momentum": 0.9} if name == "SGDCM" else {})}
    a = _params()
    b = [p.detach().clone().requires_grad_(True) for p in a]
    compiled_opt = getattr(memoptim, name)(a, lr=torch.tensor(0.01), **hyper)
    eager_opt = getattr(memoptim, name)(b, lr=torch.tensor(0.01), **hyper)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda t: 0.9**t) for o in (compiled_opt, eager_opt)]
    step = torch.compile(compiled_opt.step)
    g = torch.Generator().manual_seed(1)
    for t in range(20):
        for p, q in zip(a, b):
            p.grad = torch.randn(p.shape, generator=g) * (1 + t % 3)
            q.grad = p.grad.clone()
        with torch._dynamo.config.patch(error_on_recompile=t >= 2):
            step()
        eager_opt.step()
        for s in scheds:
            s.step()
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"{case}, step {t + 1}")
    assert float(compiled_opt.param_groups[0]["lr"]) == pytest.approx(0.01 * 0.9**20)


# ----------------------------------------------------------------------------- compile caches
def test_every_kernel_has_its_own_code_object():
    kernels = list(_KERNELS.values())
    assert len(kernels) >= 9
    assert len({k.__code__ for k in kernels}) == len(kernels)
    assert F.adam_cm.__code__.co_name == "adam_cm"


def test_the_recompile_limit_is_per_kernel_and_its_warning_names_the_cause(monkeypatch):
    """A kernel that exhausts its recompile limit (a new tensor layout every step) runs eagerly,
    with a warning naming the guard that failed; another kernel still compiles."""
    monkeypatch.setenv("MEMOPTIM_NATIVE", "0")
    monkeypatch.setattr(F, "_COMPILED", {})
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, accumulated_recompile_limit=64):
        first = memoptim.AdamCG([torch.zeros(2, dtype=torch.float64, requires_grad=True)], fused=True)
        other = memoptim.SGDCG([torch.zeros(2, dtype=torch.float64, requires_grad=True)], fused=True, lr=0.1)
        cause = r"recompile limit for adam_cg .*recompile_limit=1.*caused by: .*size"
        with pytest.warns(RuntimeWarning, match=cause):
            for n in (2, 3):
                p = torch.zeros(n, dtype=torch.float64, requires_grad=True)
                p.grad = torch.ones(n, dtype=torch.float64)
                first.param_groups[0]["params"] = [p]
                first.step()
        other.param_groups[0]["params"][0].grad = torch.ones(2, dtype=torch.float64)
        counters.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            other.step()
        assert counters["stats"]["unique_graphs"] >= 1  # compiled, not refused


# ----------------------------------------------------------------------------- device checks
def _meta_group(**options):
    p = torch.zeros(3, device="meta")
    return {"lr": 0.1, "foreach": None, "fused": None, **options}, ([p], [p.clone()])


@pytest.fixture
def no_build(monkeypatch):
    """Records (and refuses) every attempt to build or load the extension."""
    monkeypatch.setattr(native, "_module", None)
    monkeypatch.setattr(native, "_failed", None)
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("refused by the test")

    monkeypatch.setattr(build, "load", refuse)
    yield attempts
    assert not attempts, "the C++ extension was built or loaded for non-CPU tensors"


def test_fused_on_an_unsupported_device_is_one_line_naming_the_supported_ones(no_build):
    group, tensors = _meta_group(fused=True)
    with pytest.raises(ValueError, match=r"^fused=True is not supported on meta tensors; fused kernels run on "
                                         r"cpu, cuda, xpu") as info:
        backends.select_kernel(F.adam_cm, group, tensors, steps=[torch.zeros(())])
    assert "\n" not in str(info.value)


def test_the_device_is_checked_before_the_extension_is_built(no_build, monkeypatch):
    """Accelerator tensors (a ``meta`` stand-in here) never build the CPU extension: ``fused=True``
    and the default take the compiled path there."""
    monkeypatch.setattr(backends, "FUSED_DEVICES", ("cpu", "meta"))
    monkeypatch.setattr(backends, "COMPILED_BY_DEFAULT", ("meta",))
    assert not native.supports([torch.zeros(2, device="meta")], [torch.zeros(2, device="meta")])
    for options in ({"fused": True}, {}):
        group, tensors = _meta_group(**options)
        run, _, lr = backends.select_kernel(F.adam_cm, group, tensors, steps=[torch.zeros(())],
                                            native_default=True)
        assert run is F.compiled(F.adam_cm) and torch.is_tensor(lr)
        # the learning rate lives on the parameters' device (no copy per step, capturable)
        assert lr.device.type == "meta" and lr.dtype == torch.float64 and lr.dim() == 0
    group, tensors = _meta_group(fused=True)
    group["lr"] = torch.tensor(0.5)  # a tensor learning rate (a scheduler's) moves there too
    assert backends.select_kernel(F.adam_cm, group, tensors, steps=[torch.zeros(())])[2].device.type == "meta"
    assert float(backends.lr_tensor(torch.tensor(0.25), torch.device("cpu"))) == 0.25
    group, tensors = _meta_group(foreach=True)
    assert backends.select_kernel(F.adam_cm, group, tensors)[0] is F.adam_cm


def test_on_cpu_the_default_stays_native_or_multi_tensor(built):
    p = torch.zeros(3)
    group = {"lr": 0.1, "foreach": None, "fused": None}
    run, foreach, _ = backends.select_kernel(F.adam_cm, group, ([p], [p.clone()]), steps=[torch.zeros(())])
    assert run is F.adam_cm and foreach
    run, _, lr = backends.select_kernel(F.adam_cm, group, ([p], [p.clone()]), steps=[torch.zeros(())],
                                        native_default=True)
    assert backends.is_native(run) and lr == 0.1


def test_the_traced_support_check_is_marked_as_torch_marks_a_constant_result():
    """memoptim sets the mark of ``torch.compiler.assume_constant_result`` itself, so that importing
    it does not import Dynamo; the mark must be the decorator's."""

    def probe() -> bool:
        return True

    marked = torch.compiler.assume_constant_result(probe)
    assert vars(marked) == {"_dynamo_marked_constant": True}
    assert native._usable_traced._dynamo_marked_constant is True
    code = "import sys, memoptim; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
