"""The tuned comparison protocol: every optimizer gets the same learning-rate budget, is
confirmed on enough seeds at its own best learning rate, and is compared by a confidence
interval, never by a mean alone.

Tuning (:func:`tune`): each optimizer runs a log-spaced learning-rate grid on the *tuning seeds*;
while its best learning rate (best mean over the tuning seeds) lies at an edge of the grid, the
grid is widened by one point on that side, at the grid's own ratio, up to ``max_widen`` points
per side.  Then the *confirmation seeds* (at least five) run at the best learning rate.  Every
run is a :func:`memoptim.experiments.train.train` run directory
``<out>/<task>/<optimizer>/<hp-slug>/seed<k>``: an interrupted tuning resumes where it stopped,
and two workers share the work by taking different optimizers (a lock per optimizer).

Analysis (:func:`analyse`), from the run directories alone:

* an optimizer's *grid* is the set of learning rates with finished runs on its tuning seeds (the
  seeds present at every learning rate); its *best lr* has the best mean over those seeds;
* a best lr at the smallest or largest grid value is an edge: the verdict is ``"not tuned"``;
* the comparison uses every seed at each optimizer's best lr; with fewer than ``min_seeds`` on
  either side the verdict is ``"pending"``;
* ``diff`` = optimizer mean - baseline mean, in the metric's units (accuracy %: higher is
  better; perplexity: lower is better), with Welch's 95% confidence interval
  (:func:`welch_interval`);
* the verdict word is fixed by the interval: ``"ahead"`` if it excludes zero on the better
  side, ``"behind"`` if on the worse side, ``"level"`` if it contains zero.
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERDICTS = ("ahead", "level", "behind", "not tuned", "pending")
#: Seeds a headline comparison needs on each side (the paper's count).
MIN_SEEDS = 5


# ----------------------------------------------------------------------------- statistics
def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    r"""``(diff, low, high)``: :math:`\bar a - \bar b` and its Welch confidence interval.

    :math:`se = \sqrt{s_a^2/n_a + s_b^2/n_b}`, degrees of freedom by Welch-Satterthwaite, and the
    interval :math:`\mathrm{diff} \pm t_{(1+level)/2,\,df}\, se`.  Two constant samples give a
    zero-width interval.  Needs two values on each side.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_interval needs at least two values on each side")
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * se
    return diff, diff - half, diff + half


def verdict_word(low: float, high: float, mode: str) -> str:
    """``"ahead"``, ``"behind"`` or ``"level"`` from a confidence interval of optimizer - baseline
    (``mode``: ``"max"`` if higher is better, ``"min"`` if lower is)."""
    better_side = 1.0 if mode == "max" else -1.0
    if low > 0.0 or high < 0.0:  # the interval excludes zero
        sign = 1.0 if low > 0.0 else -1.0
        return "ahead" if sign == better_side else "behind"
    return "level"


# ----------------------------------------------------------------------------- lr selection
@dataclass
class Tuning:
    """One optimizer's learning-rate search on one task (from its runs)."""

    task: str
    optimizer: str
    mode: str
    #: lr -> {seed: value} over every finished run
    values: dict[float, dict[int, float]] = field(default_factory=dict)

    @property
    def grid(self) -> list[float]:
        """Learning rates that ran on every tuning seed, ascending."""
        seeds = self.tuning_seeds
        return sorted(lr for lr, by_seed in self.values.items() if seeds <= set(by_seed))

    @property
    def tuning_seeds(self) -> set[int]:
        """The seeds present at every learning rate with runs (the selection's seeds)."""
        sets = [set(s) for s in self.values.values() if s]
        return set.intersection(*sets) if sets else set()

    def mean_at(self, lr: float, seeds: set[int] | None = None) -> float:
        by_seed = self.values[lr]
        return statistics.fmean(by_seed[s] for s in sorted(seeds if seeds is not None else by_seed))

    @property
    def best_lr(self) -> float | None:
        """The lr with the best mean over the tuning seeds (ties: the smaller lr)."""
        grid, seeds = self.grid, self.tuning_seeds
        if not grid:
            return None
        sign = 1.0 if self.mode == "max" else -1.0
        return max(grid, key=lambda lr: (sign * self.mean_at(lr, seeds), -lr))

    @property
    def at_edge(self) -> bool:
        """Whether the best lr is the smallest or the largest of a grid (a one-point grid is an edge)."""
        grid, best = self.grid, self.best_lr
        return best is not None and (best == grid[0] or best == grid[-1])

    def seeds_at_best(self) -> list[float]:
        best = self.best_lr
        return [] if best is None else [self.values[best][s] for s in sorted(self.values[best])]


def widen(grid: Sequence[float], side: str) -> float:
    """The next learning rate beyond ``grid``'s ``side`` (``"low"``/``"high"``), at the ratio of its
    two outermost points on that side (a factor 10 for a one-point grid)."""
    g = sorted(grid)
    if side == "low":
        ratio = g[1] / g[0] if len(g) > 1 else 10.0
        return _round_lr(g[0] / ratio)
    ratio = g[-1] / g[-2] if len(g) > 1 else 10.0
    return _round_lr(g[-1] * ratio)


def format_lr(lr: float | None) -> str:
    """A learning rate as reports print it: two significant digits in compact scientific
    notation (``3.3e-2``, ``1e-3``; ``n/a`` for ``None``)."""
    if lr is None:
        return "n/a"
    mantissa, _, exponent = f"{lr:.1e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _round_lr(lr: float) -> float:
    """Four significant digits, so grids stay readable (``3e-05``, not ``3.0000000000000004e-05``)."""
    return float(f"{lr:.4g}")


# ----------------------------------------------------------------------------- comparisons
def compare(task: str, optimizer: Tuning, baseline: Tuning, min_seeds: int = MIN_SEEDS) -> dict[str, Any]:
    """One verdict row (the schema of ``verdicts.json``; see the module doc for the rules)."""
    row: dict[str, Any] = {
        "task": task, "optimizer": optimizer.optimizer, "baseline": baseline.optimizer,
        "lr_grid": optimizer.grid, "best_lr": optimizer.best_lr,
        "baseline_lr_grid": baseline.grid, "baseline_best_lr": baseline.best_lr,
        "seeds": len(optimizer.seeds_at_best()), "baseline_seeds": len(baseline.seeds_at_best()),
        "mean": None, "baseline_mean": None, "diff": None, "ci_low": None, "ci_high": None,
        "verdict": "pending", "reason": "",
    }  # fmt: skip
    a, b = optimizer.seeds_at_best(), baseline.seeds_at_best()
    if a:
        row["mean"] = statistics.fmean(a)
    if b:
        row["baseline_mean"] = statistics.fmean(b)
    if len(a) >= 2 and len(b) >= 2:
        row["diff"], row["ci_low"], row["ci_high"] = welch_interval(a, b)
    edges = [t.optimizer for t in (optimizer, baseline) if t.at_edge]  # also every grid of < 3 lrs
    if edges:
        row["verdict"] = "not tuned"
        row["reason"] = "best lr at the edge of its grid: " + ", ".join(edges)
    elif len(a) < min_seeds or len(b) < min_seeds:
        row["reason"] = f"{len(a)} and {len(b)} seeds at the best lr; {min_seeds} needed"
    else:
        row["verdict"] = verdict_word(row["ci_low"], row["ci_high"], optimizer.mode)
    return row


def tunings_from_runs(runs: Sequence[Any]) -> dict[tuple[str, str], Tuning]:
    """``(task, optimizer) -> Tuning`` from :class:`memoptim.experiments.report.Run` objects;
    runs whose other hyperparameters differ from the optimizer's most common setting are left out
    (a protocol varies the learning rate only)."""
    by_key: dict[tuple[str, str], list[Any]] = {}
    for r in runs:
        by_key.setdefault((r.task, r.optimizer), []).append(r)
    out: dict[tuple[str, str], Tuning] = {}
    for (task, opt), rs in by_key.items():
        fixed = [_fixed(r) for r in rs]
        common = max(set(fixed), key=fixed.count)
        t = Tuning(task, opt, rs[0].summary["mode"])
        for r, f in zip(rs, fixed):
            if f == common:
                lr = float(r.config["hyperparameters"]["lr"])
                t.values.setdefault(lr, {})[int(r.config["seed"])] = r.value
        out[(task, opt)] = t
    return out


def _fixed(run: Any) -> str:
    hp = {k: v for k, v in run.config["hyperparameters"].items() if k != "lr"}
    return repr(sorted(hp.items()))


# ----------------------------------------------------------------------------- running
@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bool]:
    """Non-blocking exclusive lock on ``path`` (released when the holder exits, even on a crash);
    yields whether this process holds it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


RunFn = Callable[[float, int], float | None]


def tune(run: RunFn, grid: Sequence[float], tune_seeds: Sequence[int], confirm_seeds: Sequence[int],
         mode: str, max_widen: int = 2, log: Callable[[str], None] = print) -> Tuning:
    """Run the protocol for one optimizer: ``run(lr, seed)`` trains (or reads a finished run) and
    returns its value (``None`` if it produced none: counted as the worst value)."""
    t = Tuning("", "", mode)
    worst = -math.inf if mode == "max" else math.inf

    def ensure(lr: float, seed: int) -> None:
        if seed not in t.values.get(lr, {}):
            value = run(lr, seed)
            t.values.setdefault(lr, {})[seed] = worst if value is None else float(value)

    current = sorted(_round_lr(x) for x in grid)
    widened = {"low": 0, "high": 0}
    while True:
        for lr in current:
            for seed in tune_seeds:
                ensure(lr, seed)
        best = t.best_lr
        side = "low" if best == current[0] else "high" if best == current[-1] else None
        if side is None or widened[side] >= max_widen:
            break
        widened[side] += 1
        current = sorted([*current, widen(current, side)])
        log(f"[tune] best lr {format_lr(best)} at the {side} edge: widening the grid to "
            f"{[format_lr(x) for x in current]}")
    for seed in confirm_seeds:
        ensure(t.best_lr, seed)
    return t


def run_protocol(task: str, optimizers: Sequence[str], grid: Sequence[float], *, out: str | Path,
                 epochs: int, tune_seeds: Sequence[int] = (0,), confirm_seeds: Sequence[int] = range(5),
                 fixed: Mapping[str, Mapping[str, Any]] | None = None, max_widen: int = 2,
                 train_kwargs: Mapping[str, Any] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Tuning]:
    """The tuned protocol for ``optimizers`` on ``task``; returns the tunings this worker ran.

    ``fixed``: per optimizer, hyperparameters other than ``lr`` (default: the CPU grid's fixed
    values, :data:`memoptim.experiments.sweep.CPU_FIXED`).  Optimizers another worker is tuning
    (its lock is held) are skipped.
    """
    from memoptim.experiments.sweep import CPU_FIXED, run_dir
    from memoptim.experiments.tasks import build_task
    from memoptim.experiments.train import train
    from memoptim.progress import labelled

    kwargs = dict(train_kwargs or {})
    out = Path(out)
    task_obj = build_task(task, subset=kwargs.get("subset"), eval_subset=kwargs.get("eval_subset"),
                          data_root=kwargs.get("data_root"), verify=kwargs.get("verify_data", True))
    done: dict[str, Tuning] = {}
    for opt in optimizers:
        extra = dict((fixed or {}).get(opt, CPU_FIXED.get(opt, {})))
        with _claim(out / task / opt / ".protocol.lock") as mine:
            if not mine:
                log(f"[tune] {task} {opt}: another worker is tuning it; skipped")
                continue

            def run(lr: float, seed: int, opt: str = opt, extra: dict = extra) -> float | None:
                hp = {**extra, "lr": lr}
                with labelled(f"{opt} lr={lr:g} seed {seed}"):
                    summary = train(task_obj, opt, hp, epochs, seed, run_dir(out, task, opt, hp, seed),
                                    resume=True, keep_checkpoint=False, **kwargs)
                value = summary.get(f"best_{task_obj.metric}")
                log(f"[tune] {task} {opt} lr={format_lr(lr)} seed {seed}: {task_obj.metric} {value} "
                    f"({summary['status']}, {summary['elapsed']:.0f} s)")
                return value

            def tune_log(message: str, opt: str = opt) -> None:  # tune's own lines name no optimizer
                log(message.replace("[tune]", f"[tune] {task} {opt}:", 1))

            t = tune(run, grid, tune_seeds, confirm_seeds, task_obj.mode, max_widen, tune_log)
            t.task, t.optimizer = task, opt
            done[opt] = t
            log(f"[tune] {task} {opt}: grid {[format_lr(x) for x in t.grid]}, best lr {format_lr(t.best_lr)}"
                f"{' (EDGE: not tuned)' if t.at_edge else ''}, {len(t.seeds_at_best())} seeds")
    return done


__all__ = ["MIN_SEEDS", "VERDICTS", "Tuning", "compare", "format_lr", "run_protocol", "tune",
           "tunings_from_runs", "verdict_word", "welch_interval", "widen"]
