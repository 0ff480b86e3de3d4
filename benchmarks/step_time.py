"""Optimizer step time: memoptim's optimizers against their torch.optim counterparts, in one run.

All optimizers are stepped interleaved in one process (round-robin, several
rounds) on the same synthetic ResNet-like parameter set, with random gradients
whose norms vary from step to step so that buffer replacements keep happening.
Prints median milliseconds per step, the ratio to the fastest torch.optim
counterpart of the same base rule (measured in the same run), the fraction of
timed steps on which the buffer replaced a slot, and optimizer-state bytes per
parameter against the (C + 3) x parameter-size bound.

Ratios are paired by round: each round's median of a row divided by the same
round's median of its baseline, and the table shows the median of those ratios
with their range over the rounds.  On a shared machine the available memory
bandwidth drifts by 10-20% within minutes; the rows of one round run within
about a second of each other, so the paired ratio cancels most of the drift, and
the range shows what is left.

``fused`` rows are ``fused=True``: on CPU the native kernel of
``memoptim.optim.native`` (built on first use, not timed).  ``AdamCM fused two-pass``
is AdamCM with its offer not deferred (a separate norm pass, as for critical
gradients): what the deferred offer gains, measured in the same run.

Rows without a flag are the defaults a user gets from ``AdamCM(params)``: the native
kernel if it is built (``memoptim build-kernels``; the script says which), else the
multi-tensor path.  Their ratio is to the torch default of the same base rule
(``torch.optim.Adam(params)`` ...): default against default.  ``foreach`` rows force the
multi-tensor path.

    python benchmarks/step_time.py                     # ~10M parameters, 98 tensors
    python benchmarks/step_time.py --scale 0.1 --rounds 3 --buffer-sizes 5 20
    python benchmarks/step_time.py --keys constant --decay 1.0   # no replacements (ties)
"""

from __future__ import annotations

import argparse
import itertools
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


class _TwoPassAdamCM(memoptim.AdamCM):
    """AdamCM whose native step does not defer the offer (a norm pass, then the update pass
    writing the slot), as for critical gradients: the A/B row for the deferred offer."""

    def _defer(self, eager, run, group, params, buffers):  # type: ignore[no-untyped-def]
        self._settle(params)
        return None


def build(name: str, params, buffer_size: int, decay: float = 0.7) -> torch.optim.Optimizer:
    mem = {"buffer_size": buffer_size, "decay": decay}
    table: dict[str, Callable[[], torch.optim.Optimizer]] = {
        "torch Adam (default)": lambda: torch.optim.Adam(params),
        "torch SGD mom. (default)": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9),
        "torch SGD (default)": lambda: torch.optim.SGD(params, lr=1e-3),
        "torch Adam (fused)": lambda: torch.optim.Adam(params, fused=True),
        "torch Adam (foreach)": lambda: torch.optim.Adam(params, foreach=True),
        "torch SGD mom. (foreach)": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=True),
        "torch SGD mom. (fused)": lambda: torch.optim.SGD(params, lr=1e-3, momentum=0.9, fused=True),
        "torch SGD (foreach)": lambda: torch.optim.SGD(params, lr=1e-3, foreach=True),
        "torch SGD (fused)": lambda: torch.optim.SGD(params, lr=1e-3, fused=True),
        "AdamCM": lambda: memoptim.AdamCM(params, **mem),
        "AdamCM foreach=False": lambda: memoptim.AdamCM(params, **mem, foreach=False),
        "AdamCM foreach": lambda: memoptim.AdamCM(params, **mem, foreach=True),
        "AdamCG foreach": lambda: memoptim.AdamCG(params, **mem, foreach=True),
        "SGDCM foreach": lambda: memoptim.SGDCM(params, **mem, foreach=True),
        "SGDCG foreach": lambda: memoptim.SGDCG(params, **mem, foreach=True),
        "AdaMomentum foreach": lambda: memoptim.AdaMomentum(params, foreach=True),
        "AdamCM fused": lambda: memoptim.AdamCM(params, **mem, fused=True),
        "AdamCM fused two-pass": lambda: _TwoPassAdamCM(params, **mem, fused=True),
        "AdamCG fused": lambda: memoptim.AdamCG(params, **mem, fused=True),
        "SGDCM fused": lambda: memoptim.SGDCM(params, **mem, fused=True),
        "SGDCG fused": lambda: memoptim.SGDCG(params, **mem, fused=True),
        "AdaMomentum fused": lambda: memoptim.AdaMomentum(params, fused=True),
        "AdamCG": lambda: memoptim.AdamCG(params, **mem),
        "SGDCM": lambda: memoptim.SGDCM(params, **mem),
        "SGDCG": lambda: memoptim.SGDCG(params, **mem),
        "AdaMomentum": lambda: memoptim.AdaMomentum(params),
    }
    return table[name]()


#: Base rule of each memoptim optimizer -> its torch.optim counterparts (the fastest one in the
#: run is the baseline).
COUNTERPARTS = {
    "Adam": ["torch Adam (fused)", "torch Adam (foreach)"],
    "SGD mom.": ["torch SGD mom. (fused)", "torch SGD mom. (foreach)"],
    "SGD": ["torch SGD (fused)", "torch SGD (foreach)"],
}
#: The torch default of each base rule: the baseline of the rows without a flag.
DEFAULTS = {"Adam": "torch Adam (default)", "SGD mom.": "torch SGD mom. (default)",
            "SGD": "torch SGD (default)"}
BASE_RULE = {"AdamCM": "Adam", "AdamCG": "Adam", "AdaMomentum": "Adam", "SGDCM": "SGD mom.",
             "SGDCG": "SGD"}
#: State copies of the parameters per optimizer (C = buffer size): moments, slots, running sum.
STATE_COPIES = {"AdamCM": 3, "AdamCG": 3, "SGDCM": 2, "SGDCG": 1, "AdaMomentum": 2}


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values()
               if isinstance(v, torch.Tensor))


#: row label -> (its parameters, its optimizer)
Runs = dict[str, tuple[list[torch.Tensor], torch.optim.Optimizer]]


def main() -> None:
    """Run the benchmark and print its table (see the module doc)."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = resnet_like_shapes(args.scale)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M float32 parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    from memoptim.optim.native import is_built

    print("rows without a flag (defaults): " + ("the native kernel (built)" if is_built() else
          "the multi-tensor path (native kernel not built: memoptim build-kernels)"))

    names = row_names(args.buffer_sizes, args.only)
    runs: Runs = {}
    for label in names:
        base, _, c = label.partition(" C=")
        params = make_params(shapes, torch.float32)
        runs[label] = (params, build(base, params, int(c) if c else 5, args.decay))
    step = stepper(runs, shapes, args.keys)
    warm_up(names, step, args.warmup)
    before = {x: replacements(runs[x][1]) for x in names}
    times = time_rounds(names, step, args.rounds, args.steps)
    print_table(args, names, runs, times, before, n)
    print_buffer_size_ratios(args.buffer_sizes, times)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="parameter count multiplier")
    ap.add_argument("--buffer-sizes", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per optimizer per round")
    ap.add_argument("--warmup", type=int, default=25, help="untimed steps (fills the buffers)")
    ap.add_argument("--only", nargs="*", help="subset of optimizer names")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--keys", choices=["cycle", "constant"], default="cycle",
                    help="gradient scales: 'cycle' 0.5,1.5,2.5,3.5 (replacements on some steps); "
                    "'constant' one gradient norm, so every offer beats the oldest, decayed key "
                    "(a replacement on every step: the worst case)")
    ap.add_argument("--decay", type=float, default=0.7,
                    help="key decay of the memory optimizers; with --keys constant, 1.0 gives ties, "
                    "so no replacement at all (the best case)")
    return ap.parse_args()


def row_names(buffer_sizes: list[int], only: list[str] | None) -> list[str]:
    """The table's rows: the torch.optim counterparts, each memoptim optimizer at each buffer size
    (plain and fused), the A/B rows at the first buffer size, AdaMomentum; filtered by ``only``."""
    names = list(DEFAULTS.values()) + [x for v in COUNTERPARTS.values() for x in v]
    for c in buffer_sizes:
        names += [f"{m}{v} C={c}" for m in ("AdamCM", "AdamCG", "SGDCM", "SGDCG")
                  for v in ("", " foreach", " fused")]
    c0 = buffer_sizes[0]
    names += [f"AdamCM foreach=False C={c0}", f"AdamCM fused two-pass C={c0}", "AdaMomentum",
              "AdaMomentum foreach", "AdaMomentum fused"]
    if only:
        names = [x for x in names if any(x.startswith(o) for o in only)]
    return names


def stepper(runs: Runs, shapes: list[tuple[int, ...]], keys: str) -> Callable[[str, int], None]:
    """``step(label, k)``: one step of row ``label``'s optimizer with the gradients of step ``k``
    (the same random directions at four norms, cycled; ``keys="constant"``: always the first)."""
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(s, generator=g) for s in shapes]
    grads = [[b * (0.5 + k) for b in base] for k in range(4)]

    def step(label: str, k: int) -> None:
        params, opt = runs[label]
        for p, gr in zip(params, grads[0 if keys == "constant" else k % 4]):
            p.grad = gr
        opt.step()

    return step


def warm_up(names: list[str], step: Callable[[str, int], None], warmup: int) -> None:
    """Untimed steps of every row: compile (fused), fill buffers, first-touch allocations."""
    for label in names:
        t0 = time.perf_counter()
        for k in range(warmup):
            step(label, k)
        if "fused" in label and "torch" not in label:
            print(f"  warm-up of {label} (includes any kernel build): {time.perf_counter() - t0:.1f} s")


def time_rounds(names: list[str], step: Callable[[str, int], None], rounds: int, steps: int
                ) -> dict[str, list[list[float]]]:
    """Seconds of each timed step, per row and round (the rows interleaved in every round)."""
    times: dict[str, list[list[float]]] = {x: [] for x in names}
    for _ in range(rounds):
        for label in names:
            times[label].append([])
            for k in range(steps):
                t0 = time.perf_counter()
                step(label, k)
                times[label][-1].append(time.perf_counter() - t0)
    return times


def print_table(args: argparse.Namespace, names: list[str], runs: Runs, times: dict[str, list[list[float]]],
                before: dict[str, int], n: int) -> None:
    """The table: per row, median ms/step, the paired ratio to the fastest torch.optim counterpart
    (range over rounds), the replacement rate, state bytes per parameter and its bound."""
    timed = args.rounds * args.steps
    med = {x: statistics.median(t for r in v for t in r) * 1e3 for x, v in times.items()}
    print(f"\nmedian of {timed} timed steps each ({args.rounds} rounds); gradient scales: {args.keys}; "
          f"key decay {args.decay}; ratio: median over rounds of the paired ratio (range)")
    print(f"{'optimizer':<28}{'ms/step':>9}{'ratio':>8}{'range':>12}  {'baseline':<26}{'repl.':>7}"
          f"{'state B/param':>15}{'bound':>7}")
    for label in names:
        name, _, c = label.partition(" C=")
        rule = BASE_RULE.get(name.split()[0])
        ref = None
        if rule and name in BASE_RULE:  # no flag: default against default
            ref = DEFAULTS[rule]
        elif rule:
            ref = min(COUNTERPARTS[rule], key=lambda x: med.get(x, float("inf")))
        ratio = span = ""
        if ref in med:
            paired = paired_ratios(times[label], times[ref])
            ratio = f"{statistics.median(paired):.2f}x"
            span = f"{min(paired):.2f}-{max(paired):.2f}"
        opt = runs[label][1]
        sb = state_bytes(opt) / n
        copies = STATE_COPIES.get(name.split()[0])
        bound = f"{4 * (copies + int(c or 0))}" if copies is not None else ""
        rate = (replacements(opt) - before[label]) / timed if c else None
        rep = f"{rate:.0%}" if rate is not None else ""
        print(f"{label:<28}{med[label]:>9.2f}{ratio:>8}{span:>12}  {ref or '':<26}{rep:>7}{sb:>15.1f}"
              f"{bound:>7}")


def print_buffer_size_ratios(buffer_sizes: list[int], times: dict[str, list[list[float]]]) -> None:
    """Per memoptim optimizer, its step time at each buffer size over that at the previous one."""
    for c1, c2 in itertools.pairwise(buffer_sizes):
        for m in ("AdamCM", "AdamCG", "SGDCM", "SGDCG", "AdamCM fused", "AdamCG fused", "SGDCM fused",
                  "SGDCG fused"):
            a, b = f"{m} C={c1}", f"{m} C={c2}"
            if a in times and b in times:
                paired = paired_ratios(times[b], times[a])
                print(f"{m}: C={c2} / C={c1} step time = {statistics.median(paired):.2f} "
                      f"(rounds {min(paired):.2f}-{max(paired):.2f})")


def paired_ratios(rows: list[list[float]], refs: list[list[float]]) -> list[float]:
    """Per round: the median of ``rows``' steps over the median of ``refs``' steps."""
    return [statistics.median(a) / statistics.median(b) for a, b in zip(rows, refs)]


def replacements(opt: torch.optim.Optimizer) -> int:
    """Steps on which the (group-priority) buffer replaced a slot, counted on one tensor."""
    for st in opt.state.values():
        if "critical_replacements" in st:
            return int(st["critical_replacements"])
    return 0


if __name__ == "__main__":
    main()
