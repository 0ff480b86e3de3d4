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

``compiled`` rows wrap ``opt.step`` in ``torch.compile``: ``compiled torch Adam`` is
``torch.optim.Adam(foreach=True, capturable=True)``, the baseline of ``compiled AdamCM``
(``AdamCM(params)``, compiled the same way).  Their warm-up prints the first (compiling) step's
time.  After the table, every Adam-family row is also divided by two fixed baselines measured in
the same run: ``torch Adam (fused)`` and ``compiled torch Adam``.

``--device cuda`` puts parameters, gradients and state on the GPU; every timed step is bracketed
by ``torch.cuda.synchronize()``, so the clock is read after the device finished (on CPU there is
nothing to wait for).  The ``peak MiB`` column is the peak memory increase over a row's
optimizer construction and warm-up steps (its state plus the step's temporaries; the parameters
and gradients exist before): on CUDA ``torch.cuda.max_memory_allocated`` over what was allocated
before; on CPU the peak RSS increase of a fresh process that builds only that row (the RSS
high-water mark reset through ``/proc/self/clear_refs`` where Linux allows, else
``ru_maxrss``), so rows do not see each other's freed memory.  That process first steps a
throwaway copy of the row on a one-tensor model, so one-time costs (libraries, thread pools,
the compiler's import) are not counted; for a ``compiled`` row on CPU the compiler's own
allocations while it compiles the step still are.  ``--memory off`` skips the column.

    python benchmarks/step_time.py                     # ~10M parameters, 98 tensors
    python benchmarks/step_time.py --scale 0.1 --rounds 3 --buffer-sizes 5 20
    python benchmarks/step_time.py --keys constant --decay 1.0   # no replacements (ties)
    python benchmarks/step_time.py --device cuda --only "torch Adam" "compiled" "AdamCM"
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

import memoptim


def resnet_like_shapes(scale: float = 1.0, tensors: int | None = None) -> list[tuple[int, ...]]:
    """98 tensors, ~10M parameters at scale 1: conv kernels, norm-layer vectors, a classifier
    (only the first ``tensors`` of them if given: a tiny model for smoke tests)."""
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
    return shapes[:tensors] if tensors else shapes


def make_params(shapes, dtype, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=dtype).to(device).requires_grad_(True) for s in shapes]


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
        "compiled torch Adam": lambda: torch.optim.Adam(params, foreach=True, capturable=True),
        "compiled AdamCM": lambda: memoptim.AdamCM(params, **mem),
    }
    return table[name]()


@dataclass
class Row:
    """One row of the table: its parameters, its optimizer and what one step calls."""

    params: list[torch.Tensor]
    opt: torch.optim.Optimizer
    call: Callable[[], object]


def make_row(label: str, params: list[torch.Tensor], decay: float) -> Row:
    """Row ``label`` (``name`` or ``name C=<buffer size>``) on ``params``; a ``compiled`` row
    steps through ``torch.compile`` (compiled on its first step)."""
    name, _, c = label.partition(" C=")
    opt = build(name, params, int(c) if c else 5, decay)
    if not name.startswith("compiled "):
        return Row(params, opt, opt.step)

    @torch.compile
    def compiled_step() -> None:
        opt.step()

    return Row(params, opt, compiled_step)


#: Base rule of each memoptim optimizer -> its torch.optim counterparts (the fastest one in the
#: run is the baseline).
COUNTERPARTS = {
    "Adam": ["torch Adam (fused)", "torch Adam (foreach)"],
    "SGD mom.": ["torch SGD mom. (fused)", "torch SGD mom. (foreach)"],
    "SGD": ["torch SGD (fused)", "torch SGD (foreach)"],
}
#: Rows whose baseline is fixed (not the fastest counterpart): compiled against compiled.
FIXED_BASELINE = {"compiled AdamCM": "compiled torch Adam"}
#: The fixed baselines every Adam-family row is also divided by, after the table.
ADAM_BASELINES = ("torch Adam (fused)", "compiled torch Adam")
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


def optimizer_name(label: str) -> str:
    """The memoptim class (or torch label) of a row: ``compiled AdamCM C=5`` -> ``AdamCM``."""
    name = label.partition(" C=")[0].removeprefix("compiled ")
    return name.split()[0] if name in BASE_RULE or name.split()[0] in BASE_RULE else name


#: row label -> its row
Runs = dict[str, Row]


def main() -> None:
    """Run the benchmark and print its table (see the module doc)."""
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("step_time.py: --device cuda, but torch.cuda.is_available() is False on this machine")
    if args.measure_row:  # a fresh process measuring one row's peak memory (CPU)
        print(measure_row(args, args.measure_row, device))
        return

    shapes = resnet_like_shapes(args.scale, args.tensors)
    n = sum(torch.Size(s).numel() for s in shapes)
    print(f"{len(shapes)} tensors, {n / 1e6:.2f}M float32 parameters, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"device: {device_name(device)}")
    print("rows without a flag (defaults): " + defaults_note(device))

    names = row_names(args.buffer_sizes, args.only)
    peaks: dict[str, int | None] = dict.fromkeys(names)
    if args.memory == "auto" and device.type == "cpu":
        print(f"  peak memory: each of the {len(names)} rows in a fresh process")
        peaks = {label: peak_in_subprocess(args, label) for label in names}
    runs: Runs = {}
    step = stepper(runs, shapes, args.keys, device)
    for label in names:
        params = make_params(shapes, torch.float32, device)
        with peak_increase(device, enabled=args.memory == "auto" and device.type == "cuda") as peak:
            runs[label] = make_row(label, params, args.decay)
            warm_up(label, step, args.warmup, device)
        if peak.measured:
            peaks[label] = peak.bytes
    before = {x: replacements(runs[x].opt) for x in names}
    times = time_rounds(names, step, args.rounds, args.steps, device)
    print_table(args, names, runs, times, before, n, peaks)
    print_buffer_size_ratios(args.buffer_sizes, times)
    print_fixed_ratios(names, times)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}), each timed step synchronized"
    return "cpu"


def defaults_note(device: torch.device) -> str:
    """What the rows without a flag run on ``device``."""
    if device.type != "cpu":
        return f"memoptim's default path for {device.type} tensors (see docs/gpu.md)"
    from memoptim.optim.native import is_built

    return ("the native kernel (built)" if is_built() else
            "the multi-tensor path (native kernel not built: memoptim build-kernels)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--scale", type=float, default=1.0, help="parameter count multiplier")
    ap.add_argument("--tensors", type=int, default=None, help="only the first N tensors (a tiny model)")
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
    ap.add_argument("--memory", choices=["auto", "off"], default="auto",
                    help="the peak memory column (auto: allocator stats on CUDA, a fresh process per "
                    "row on CPU)")
    ap.add_argument("--measure-row", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def row_names(buffer_sizes: list[int], only: list[str] | None) -> list[str]:
    """The table's rows: the torch.optim counterparts, each memoptim optimizer at each buffer size
    (plain and fused), the A/B rows at the first buffer size, AdaMomentum, the compiled pair;
    filtered by ``only``."""
    names = list(DEFAULTS.values()) + [x for v in COUNTERPARTS.values() for x in v]
    for c in buffer_sizes:
        names += [f"{m}{v} C={c}" for m in ("AdamCM", "AdamCG", "SGDCM", "SGDCG")
                  for v in ("", " foreach", " fused")]
    c0 = buffer_sizes[0]
    names += [f"AdamCM foreach=False C={c0}", f"AdamCM fused two-pass C={c0}", "AdaMomentum",
              "AdaMomentum foreach", "AdaMomentum fused", "compiled torch Adam", f"compiled AdamCM C={c0}"]
    if only:
        names = [x for x in names if any(x.startswith(o) for o in only)]
    return names


def stepper(runs: Runs, shapes: list[tuple[int, ...]], keys: str,
            device: torch.device | str = "cpu") -> Callable[[str, int], None]:
    """``step(label, k)``: one step of row ``label``'s optimizer with the gradients of step ``k``
    (the same random directions at four norms, cycled; ``keys="constant"``: always the first).
    ``runs`` may be filled after this call."""
    g = torch.Generator().manual_seed(1)
    base = [torch.randn(s, generator=g).to(device) for s in shapes]
    grads = [[b * (0.5 + k) for b in base] for k in range(4)]

    def step(label: str, k: int) -> None:
        row = runs[label]
        for p, gr in zip(row.params, grads[0 if keys == "constant" else k % 4]):
            p.grad = gr
        row.call()

    return step


def synchronize(device: torch.device | str) -> None:
    """Wait for the device (CUDA: its queued kernels) before the clock is read."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(label: str, step: Callable[[str, int], None], warmup: int,
            device: torch.device | str = "cpu", verbose: bool = True) -> None:
    """Untimed steps of one row: compile (fused, compiled), fill buffers, first-touch allocations."""
    synchronize(device)
    t0 = time.perf_counter()
    for k in range(warmup):
        step(label, k)
        if k == 0 and verbose and label.startswith("compiled "):
            synchronize(device)
            print(f"  first step of {label} (compiles): {time.perf_counter() - t0:.1f} s")
    synchronize(device)
    if verbose and "fused" in label and "torch" not in label:
        print(f"  warm-up of {label} (includes any kernel build): {time.perf_counter() - t0:.1f} s")


def time_rounds(names: list[str], step: Callable[[str, int], None], rounds: int, steps: int,
                device: torch.device | str = "cpu") -> dict[str, list[list[float]]]:
    """Seconds of each timed step, per row and round (the rows interleaved in every round); on
    CUDA the device is synchronized before each clock read."""
    times: dict[str, list[list[float]]] = {x: [] for x in names}
    for _ in range(rounds):
        for label in names:
            times[label].append([])
            for k in range(steps):
                synchronize(device)
                t0 = time.perf_counter()
                step(label, k)
                synchronize(device)
                times[label][-1].append(time.perf_counter() - t0)
    return times


def baseline(label: str, med: dict[str, float]) -> str | None:
    """The row a row's ratio is taken to: compiled to compiled, a default to torch's default of
    its base rule, any other memoptim row to the fastest torch.optim counterpart in the run."""
    name = label.partition(" C=")[0]
    if name in FIXED_BASELINE:
        return FIXED_BASELINE[name]
    rule = BASE_RULE.get(name.split()[0])
    if rule and name in BASE_RULE:  # no flag: default against default
        return DEFAULTS[rule]
    if rule:
        return min(COUNTERPARTS[rule], key=lambda x: med.get(x, float("inf")))
    return None


def print_table(args: argparse.Namespace, names: list[str], runs: Runs, times: dict[str, list[list[float]]],
                before: dict[str, int], n: int, peaks: dict[str, int | None] | None = None) -> None:
    """The table: per row, median ms/step, the paired ratio to its baseline (range over rounds),
    the replacement rate, the peak memory increase, state bytes per parameter and its bound."""
    timed = args.rounds * args.steps
    med = {x: statistics.median(t for r in v for t in r) * 1e3 for x, v in times.items()}
    print(f"\nmedian of {timed} timed steps each ({args.rounds} rounds); gradient scales: {args.keys}; "
          f"key decay {args.decay}; ratio: median over rounds of the paired ratio (range)")
    print(f"{'optimizer':<28}{'ms/step':>9}{'ratio':>8}{'range':>12}  {'baseline':<26}{'repl.':>7}"
          f"{'peak MiB':>10}{'state B/param':>15}{'bound':>7}")
    for label in names:
        c = label.partition(" C=")[2]
        ref = baseline(label, med)
        ratio = span = ""
        if ref in med:
            paired = paired_ratios(times[label], times[ref])
            ratio = f"{statistics.median(paired):.2f}x"
            span = f"{min(paired):.2f}-{max(paired):.2f}"
        opt = runs[label].opt
        sb = state_bytes(opt) / n
        copies = STATE_COPIES.get(optimizer_name(label))
        bound = f"{4 * (copies + int(c or 0))}" if copies is not None else ""
        rate = (replacements(opt) - before[label]) / timed if c else None
        rep = f"{rate:.0%}" if rate is not None else ""
        peak = (peaks or {}).get(label)
        mib = f"{peak / 2**20:.1f}" if peak is not None else ""
        print(f"{label:<28}{med[label]:>9.2f}{ratio:>8}{span:>12}  {ref or '':<26}{rep:>7}{mib:>10}"
              f"{sb:>15.1f}{bound:>7}")


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


def print_fixed_ratios(names: list[str], times: dict[str, list[list[float]]]) -> None:
    """Every Adam-family row divided by the fixed baselines of :data:`ADAM_BASELINES` that ran."""
    refs = [r for r in ADAM_BASELINES if r in times]
    rows = [x for x in names if BASE_RULE.get(optimizer_name(x)) == "Adam"]
    if not refs or not rows:
        return
    print("\nAdam-family rows over fixed torch baselines (median over rounds of the paired ratio):")
    for label in rows:
        cells = (f"{statistics.median(paired_ratios(times[label], times[r])):.2f}x {r}" for r in refs)
        print(f"{label}: " + "; ".join(cells))


class PeakIncrease:
    """What :func:`peak_increase` measured: ``bytes`` once the block ended, if ``measured``."""

    measured = False
    bytes = 0


@contextlib.contextmanager
def peak_increase(device: torch.device | str, enabled: bool = True) -> Iterator[PeakIncrease]:
    """The peak memory increase over the block: on CUDA the allocator's peak over what was
    allocated at entry; on CPU the process's peak RSS over its RSS at entry (the high-water mark
    reset at entry where Linux allows it, else ``ru_maxrss`` at exit minus at entry: then a peak
    below an earlier one of the process is not seen -- use a fresh process per row)."""
    out = PeakIncrease()
    if not enabled:
        yield out
        return
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        gc.collect()
        reset = _reset_peak_rss()
        base = _status_kib("VmRSS") * 1024 if reset else _maxrss_bytes()
    yield out
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = _status_kib("VmHWM") * 1024 if reset else _maxrss_bytes()
    out.bytes, out.measured = max(0, peak - base), True


def _reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (Linux: ``/proc/self/clear_refs``); ``False`` where
    that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmHWM") >= 0
    except (OSError, ValueError):
        return False


def _status_kib(field: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} in /proc/self/status")


def _maxrss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def measure_row(args: argparse.Namespace, label: str, device: torch.device) -> int:
    """Bytes of peak memory increase while row ``label`` is built and warmed up in this process
    (the parameters and gradients exist before)."""
    # A throwaway copy of the row on a one-tensor model first: the process's one-time costs
    # (libraries, thread pools, the native kernel, the compiler's import) are not the row's.
    tiny: Runs = {}
    tiny_step = stepper(tiny, [(8,)], args.keys, device)
    tiny[label] = make_row(label, make_params([(8,)], torch.float32, device), args.decay)
    warm_up(label, tiny_step, 2, device, verbose=False)
    shapes = resnet_like_shapes(args.scale, args.tensors)
    runs: Runs = {}
    step = stepper(runs, shapes, args.keys, device)
    params = make_params(shapes, torch.float32, device)
    with peak_increase(device) as peak:
        runs[label] = make_row(label, params, args.decay)
        warm_up(label, step, args.warmup, device, verbose=False)
    return peak.bytes


def peak_in_subprocess(args: argparse.Namespace, label: str) -> int | None:
    """:func:`measure_row` of ``label`` in a fresh Python process (``None`` if it failed)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure-row", label, "--device", args.device,
           "--scale", str(args.scale), "--keys", args.keys, "--decay", str(args.decay),
           "--warmup", str(args.warmup)]
    cmd += ["--tensors", str(args.tensors)] if args.tensors else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.split():
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  peak memory of {label}: not measured ({why})")
        return None
    return int(done.stdout.split()[-1])


def replacements(opt: torch.optim.Optimizer) -> int:
    """Steps on which the (group-priority) buffer replaced a slot, counted on one tensor."""
    for st in opt.state.values():
        if "critical_replacements" in st:
            return int(st["critical_replacements"])
    return 0


if __name__ == "__main__":
    main()
