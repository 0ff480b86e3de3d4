"""Optimizer step time: memoptim's optimizers against their torch.optim counterparts, in one run.

All optimizers are stepped interleaved in one process (round-robin, several
rounds) on the same synthetic ResNet-like parameter set, with fresh random
gradients whose norms vary from step to step so that buffer replacements keep
happening.  Prints median milliseconds per step and the ratio to the fastest
torch.optim counterpart of the same base rule, plus optimizer-state bytes per
parameter.

    python benchmarks/step_time.py                     # ~10M parameters, 98 tensors
    python benchmarks/step_time.py --scale 0.1 --rounds 3 --buffer-sizes 5 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import memoptim


def resnet_like_shapes(scale: float = 1.0) -> list[tuple[int, ...]]:
    """98 tensors, ~10M parameters at scale 1: conv kernels, norm-layer vectors, a classifier."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    widths = [64, 128, 192, 288]
    c_in = 64
    for w in widths:
        for _ in range(4):
            shapes += [(w, c_in, 3, 3), (w,), (w,), (w, w, 3, 3), (w,), (w,)]
            c_in = w
    shapes += [(1000, c_in), (1000,)]
    shapes = shapes[:98]
    while len(shapes) < 98:
        shapes.append((64,))
    if scale != 1.0:
        shapes = [tuple(max(1, round(d * scale**0.5)) if i < 2 else d for i, d in enumerate(s))
                  for s in shapes]
    return shapes


def make_params(shapes, dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_(True) for s in shapes]


def build(name: str, params, buffer_size: int) -> torch.optim.Optimizer:
    table: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "torch Adam (fused)": lambda: torch.optim.Adam(params, fused=True),
        "torch Adam (foreach)": lambda: torch.optim.Adam(params, foreach=True),
        "torch SGD mom. (foreach)": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True),
        "torch SGD (foreach)": lambda: torch.optim.SGD(params, lr=1e-3, foreach=True),
        "AdamCM": lambda: memoptim.AdamCM(params, buffer_size=buffer_size),
        "AdamCM foreach=False": lambda: memoptim.AdamCM(params, buffer_size=buffer_size, foreach=False),
        "AdamCM fused": lambda: memoptim.AdamCM(params, buffer_size=buffer_size, fused=True),
        "AdamCG fused": lambda: memoptim.AdamCG(params, buffer_size=buffer_size, fused=True),
        "SGDCM fused": lambda: memoptim.SGDCM(params, buffer_size=buffer_size, fused=True),
        "SGDCG fused": lambda: memoptim.SGDCG(params, buffer_size=buffer_size, fused=True),
        "AdaMomentum fused": lambda: memoptim.AdaMomentum(params, fused=True),
        "AdamCG": lambda: memoptim.AdamCG(params, buffer_size=buffer_size),
        "SGDCM": lambda: memoptim.SGDCM(params, buffer_size=buffer_size),
        "SGDCG": lambda: memoptim.SGDCG(params, buffer_size=buffer_size),
        "AdaMomentum": lambda: memoptim.AdaMomentum(params),
    }
    return table[name]()


BASELINE = {
    "AdamCM fused": "torch Adam (fused)",
    "AdamCG fused": "torch Adam (fused)",
    "AdaMomentum fused": "torch Adam (fused)",
    "SGDCM fused": "torch SGD mom. (foreach)",
    "SGDCG fused": "torch SGD (foreach)",
    "AdamCM": "torch Adam (fused)",
    "AdamCM foreach=False": "torch Adam (fused)",
    "AdamCG": "torch Adam (fused)",
    "AdaMomentum": "torch Adam (fused)",
    "SGDCM": "torch SGD mom. (foreach)",
    "SGDCG": "torch SGD (foreach)",
}


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
               if isinstance(v, torch.Tensor))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="parameter count multiplier")
    ap.add_argument("--buffer-sizes", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per optimizer per round")
    ap.add_argument("--warmup", type=int, default=25, help="untimed steps (fills the buffers)")
    ap.add_argument("--only", nargs="*", help="subset of optimizer names")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = resnet_like_shapes(args.scale)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M float32 parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")

    names = ["torch Adam (fused)", "torch Adam (foreach)", "torch SGD mom. (foreach)", "torch SGD (foreach)"]
    for c in args.buffer_sizes:
        names += [f"{m}{v} C={c}" for m in ("AdamCM", "AdamCG", "SGDCM", "SGDCG") for v in ("", " fused")]
    names += [f"AdamCM foreach=False C={args.buffer_sizes[0]}", "AdaMomentum", "AdaMomentum fused"]
    if args.only:
        names = [x for x in names if any(x.startswith(o) for o in args.only)]

    runs = {}
    for label in names:
        base, _, c = label.partition(" C=")
        params = make_params(shapes, torch.float32)
        runs[label] = (params, build(base, params, int(c) if c else 5))

    g = torch.Generator().manual_seed(1)
    grads = [[torch.randn(s, generator=g) * (0.5 + k) for s in shapes] for k in range(4)]

    def one(label: str, k: int) -> None:
        params, opt = runs[label]
        for p, gr in zip(params, grads[k % 4]):
            p.grad = gr
        opt.step()

    for label in names:  # warm-up: compile (fused), fill buffers, first-touch allocations
        t0 = time.perf_counter()
        for k in range(args.warmup):
            one(label, k)
        if "fused" in label and "torch" not in label:
            print(f"  warm-up of {label} (includes compilation): {time.perf_counter() - t0:.1f} s")

    times: dict[str, list[float]] = {x: [] for x in names}
    for _ in range(args.rounds):
        for label in names:
            for k in range(args.steps):
                t0 = time.perf_counter()
                one(label, k)
                times[label].append(time.perf_counter() - t0)

    med = {x: statistics.median(v) * 1e3 for x, v in times.items()}
    print(f"\n{'optimizer':<28}{'ms/step':>9}{'vs baseline':>13}  baseline{'':<20}{'state B/param':>14}")
    for label in names:
        base = label.partition(" C=")[0]
        ref = BASELINE.get(base)
        ratio = f"{med[label] / med[ref]:.2f}x" if ref in med else ""
        sb = state_bytes(runs[label][1]) / n
        print(f"{label:<28}{med[label]:>9.2f}{ratio:>13}  {ref or '':<28}{sb:>14.1f}")
    for c1, c2 in zip(args.buffer_sizes, args.buffer_sizes[1:]):
        for m in ("AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdamCM fused", "AdamCG fused", "SGDCM fused",
                  "SGDCG fused"):
            a, b = f"{m} C={c1}", f"{m} C={c2}"
            if a in med and b in med:
                print(f"{m}: C={c2} / C={c1} step time = {med[b] / med[a]:.2f}")


if __name__ == "__main__":
    main()
