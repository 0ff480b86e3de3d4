"""Compile time, graph breaks, recompiles and compiled step time: memoptim against torch.optim, in one run.

Three measurements on the ResNet-like parameter set of ``benchmarks/step_time.py`` (98 tensors),
each printed beside torch.optim's measured in the same process, with the ratio:

1. graph breaks of ``torch.compile(opt.step)`` (``torch._dynamo.explain``) beyond those of
   ``torch.optim.Adam(foreach=True)``'s step;
2. the first compiled step (tracing and code generation): ``AdamCM(fused=True)`` on its compiled
   path (native kernel off: what accelerators run) and ``torch.compile(AdamCM().step)`` (default
   path: the native kernel as a custom operator), against ``torch.compile(Adam(foreach=True).step)``;
3. the steady-state compiled step, ``torch.compile(opt.step)``, median of interleaved rounds, and
   the recompilations after warm-up while a scheduler changes the learning rate (a tensor) every
   step.

torch's rows are ``Adam(foreach=True, capturable=True)`` with the learning rate a tensor (torch
refuses a tensor learning rate with ``foreach=True`` unless ``capturable=True``), as memoptim's.

Every compilation starts cold: Inductor's on-disk caches are disabled
(``TORCHINDUCTOR_FORCE_DISABLE_CACHES=1`` unless set), so an earlier run's kernels are not reused
and the first-step times are what a fresh machine sees.

Compile times depend on the number of tensors much more than on their size, so ``--scale`` may
shrink the model for a quick run without changing (1) and (2) much.  Timings on a shared machine
are indicative only; the ratios are what to read::

    python benchmarks/compile_time.py                  # 98 tensors, ~10M parameters
    python benchmarks/compile_time.py --scale 0.1      # same tensors, smaller
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")  # read when Inductor is imported

import torch
from torch._dynamo.utils import counters

import memoptim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import make_params, resnet_like_shapes

Factory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]

TORCH = "torch Adam(foreach=True, capturable=True)"
ROWS: dict[str, Factory] = {
    TORCH: lambda ps: torch.optim.Adam(ps, lr=torch.tensor(1e-3), foreach=True, capturable=True),
    "AdamCM (default)": lambda ps: memoptim.AdamCM(ps, lr=torch.tensor(1e-3)),
    "AdamCM(fused=True)": lambda ps: memoptim.AdamCM(ps, lr=torch.tensor(1e-3), fused=True),
    "AdamCM(foreach=True)": lambda ps: memoptim.AdamCM(ps, lr=torch.tensor(1e-3), foreach=True),
}


def set_grads(params: list[torch.Tensor], g: torch.Generator, t: int) -> None:
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * (1.0 + t % 4)


def breaks(factory: Factory, shapes: list[tuple[int, ...]]) -> tuple[int, int]:
    """``(graphs, breaks)`` of ``torch.compile(opt.step)``'s first step, state creation included
    (explain's graph count; its breaks and break reasons plus Dynamo's graph-break counter).
    torch's capturable Adam steps CPU tensors only while compiled, so no eager step comes first."""
    params = make_params(shapes, torch.float32)
    opt = factory(params)
    set_grads(params, torch.Generator().manual_seed(0), 0)
    torch._dynamo.reset()
    counters.clear()
    ex = torch._dynamo.explain(opt.step)()
    return ex.graph_count, ex.graph_break_count + len(ex.break_reasons) + sum(counters["graph_break"].values())


def first_step(factory: Factory, shapes: list[tuple[int, ...]], wrap: bool) -> float:
    """Seconds of the first step (``wrap``: of ``torch.compile(opt.step)``; else of ``opt.step``,
    which compiles inside, as the compiled fused path does), with fresh compile caches."""
    params = make_params(shapes, torch.float32)
    opt = factory(params)
    step = torch.compile(opt.step) if wrap else opt.step
    set_grads(params, torch.Generator().manual_seed(0), 0)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def compiled_steps(shapes: list[tuple[int, ...]], names: list[str], rounds: int, steps: int,
                   ) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Median seconds per compiled step per round (rows interleaved), and the recompilations
    after two warm-up steps with the learning rate changed every step by a scheduler."""
    torch._dynamo.reset()
    runs = {}
    for name in names:
        params = make_params(shapes, torch.float32)
        opt = ROWS[name](params)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.999**t)
        runs[name] = (params, torch.compile(opt.step), sched)
    g = torch.Generator().manual_seed(1)
    recompiles = dict.fromkeys(names, 0)
    for t in range(2):  # warm-up: state creation, then the steady graph
        for params, step, sched in runs.values():
            set_grads(params, g, t)
            step()
            sched.step()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name, (params, step, sched) in runs.items():
            per = []
            for t in range(steps):
                set_grads(params, g, r * steps + t)
                before = counters["stats"]["unique_graphs"]
                t0 = time.perf_counter()
                step()
                per.append(time.perf_counter() - t0)
                recompiles[name] += counters["stats"]["unique_graphs"] - before
                sched.step()
            times[name].append(statistics.median(per))
    return times, recompiles


def ratio(x: float, ref: float) -> str:
    return f"{x / ref:.2f}x" if ref > 0 else "n/a"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="parameter-count scale (tensor count unchanged)")
    ap.add_argument("--tensors", type=int, default=None, help="only the first N tensors (a smoke test)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed compiled steps per round")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: breaks,first,steady")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    torch._logging.set_logs(dynamo=logging.ERROR)
    shapes = resnet_like_shapes(args.scale, args.tensors)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M float32 parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, native kernel built: {memoptim.optim.native.is_built()}")
    print("(timings on a shared machine are indicative; read the ratios)\n")
    if "breaks" not in skip:
        ref = breaks(ROWS[TORCH], shapes)
        print(f"graph breaks of torch.compile(opt.step): {TORCH}: {ref[0]} graph(s), {ref[1]} break(s)")
        for name in ROWS:
            if name != TORCH:
                got = breaks(ROWS[name], shapes)
                print(f"  {name:<22} {got[0]} graph(s), {got[1]} break(s); beyond torch's: "
                      f"{max(0, got[0] - ref[0]) + max(0, got[1] - ref[1])}")
        print()
    if "first" not in skip:
        ref_s = first_step(ROWS[TORCH], shapes, wrap=True)
        print(f"first compiled step: torch.compile({TORCH}.step): {ref_s:.1f} s")
        os.environ["MEMOPTIM_NATIVE"] = "0"
        fused_s = first_step(ROWS["AdamCM(fused=True)"], shapes, wrap=False)
        del os.environ["MEMOPTIM_NATIVE"]
        print(f"  AdamCM(fused=True), compiled path, first step: {fused_s:.1f} s  ({ratio(fused_s, ref_s)})")
        default_s = first_step(ROWS["AdamCM (default)"], shapes, wrap=True)
        print(f"  torch.compile(AdamCM().step), first step:     {default_s:.1f} s  "
              f"({ratio(default_s, ref_s)})\n")
    if "steady" not in skip:
        names = [TORCH, "AdamCM (default)", "AdamCM(foreach=True)"]
        times, recompiles = compiled_steps(shapes, names, args.rounds, args.steps)
        print(f"compiled step, steady state (median of {args.rounds} rounds x {args.steps} steps), "
              "lr changed every step:")
        for name in names:
            med = statistics.median(times[name])
            paired = statistics.median(a / b for a, b in zip(times[name], times[TORCH]))
            print(f"  {name:<22} {med * 1e3:8.2f} ms  {paired:.2f}x torch  recompiles after warm-up: "
                  f"{recompiles[name]}")


if __name__ == "__main__":
    main()
