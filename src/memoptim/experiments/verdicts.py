"""Verdicts of the tuned protocol: which comparisons are made, their rows, their report section.

The rules (tuning, edges, seeds, Welch interval, verdict word) are in
:mod:`memoptim.experiments.protocol`; this module applies them to the runs of a study and writes
``verdicts.json`` (a list of rows, :func:`memoptim.experiments.protocol.compare`) and the
Markdown section and figures of the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memoptim.experiments.protocol import MIN_SEEDS, Tuning, compare, tunings_from_runs
from memoptim.registry import LABELS, REGISTRY

#: Mechanism contrasts: (optimizer, baseline, what the contrast isolates).
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("adam+cm-vg", "adam", "the buffer alone (v from g, as Adam)"),
    ("adam+cm-nomem", "adam", "v from m alone (no buffer)"),
    ("adam+cm", "adam+cm-nomem", "the buffer on top of v from m"),
    ("adam+cm", "adam+cm-vg", "v from the aggregate instead of g, with the buffer"),
    ("adam+cm", "adam+cm-random", "the gradient-norm key against random replacement"),
    ("adam+cm-authors", "adam+cm", "the authors' semantics against ours"),
    ("adam+cm", "adamomentum", "Adam+CM against AdaMomentum"),
    ("adam+sam+cm", "adam+sam", "critical momenta on top of SAM"),
)


def baseline_of(optimizer: str) -> str:
    """The family baseline (:data:`memoptim.registry.FAMILIES`): the family's plain rule, ``adam``,
    ``sgd`` or ``lion``; ``adam`` for a name the registry does not know."""
    entry = REGISTRY.get(optimizer)
    return "adam" if entry is None else entry.family


def verdict_rows(runs: Sequence[Any], min_seeds: int = MIN_SEEDS) -> list[dict[str, Any]]:
    """Every comparison the runs allow: each optimizer against its family baseline, then the
    mechanism contrasts of :data:`CONTRASTS`; in task order, then registry order."""
    tunings = tunings_from_runs(runs)
    order = list(LABELS)
    rows: list[dict[str, Any]] = []
    for task in sorted({t for t, _ in tunings}):
        present = sorted((o for t, o in tunings if t == task),
                         key=lambda o: order.index(o) if o in order else len(order))
        pairs = {(o, baseline_of(o)): "against the family baseline" for o in present if o != baseline_of(o)}
        for opt, base, what in CONTRASTS:  # a contrast names what a pair isolates; no pair twice
            if opt in present and base in present:
                pairs[(opt, base)] = what
        for (opt, base), what in pairs.items():
            if (task, base) not in tunings:
                continue
            row = compare(task, tunings[(task, opt)], tunings[(task, base)], min_seeds)
            row["contrast"] = what
            rows.append(row)
    return rows


def write_verdicts(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """``verdicts.json``: the rows, JSON-safe (non-finite numbers become ``null``)."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    path = Path(path)
    path.write_text(json.dumps([{k: clean(v) for k, v in r.items()} for r in rows], indent=1) + "\n")
    return path


def _num(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _name(o: str) -> str:
    return LABELS.get(o, o)


def tuning_table(tunings: Mapping[tuple[str, str], Tuning], task: str) -> list[str]:
    """Markdown: each optimizer's grid with the tuning-seed mean at every lr, the best marked."""
    ts = [t for (tk, _), t in tunings.items() if tk == task]
    lrs = sorted({lr for t in ts for lr in t.values})
    md = ["| optimizer | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best lr | seeds at best |",
          "|---" * (len(lrs) + 3) + "|"]
    for t in sorted(ts, key=lambda t: list(LABELS).index(t.optimizer) if t.optimizer in LABELS else 99):
        seeds, best = t.tuning_seeds, t.best_lr
        cells = []
        for lr in lrs:
            if lr not in t.grid:
                cells.append("")
                continue
            cell = _num(t.mean_at(lr, seeds))
            cells.append(f"**{cell}**" if lr == best else cell)
        edge = " (edge: not tuned)" if t.at_edge else ""
        md.append(f"| {_name(t.optimizer)} | " + " | ".join(cells)
                  + f" | {'n/a' if best is None else f'{best:g}'}{edge} | {len(t.seeds_at_best())} |")
    return md


def verdict_table(rows: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """Markdown: one line per comparison of ``task`` with means, difference, 95% CI and verdict."""
    md = ["| optimizer | baseline | contrast | mean (n) | baseline mean (n) | diff [95% CI] | verdict |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["task"] != task:
            continue
        ci = (f"{_num(r['diff'])} [{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
              if r["diff"] is not None else "n/a")
        verdict = f"**{r['verdict']}**" + (f" ({r['reason']})" if r["reason"] else "")
        md.append(f"| {_name(r['optimizer'])} (lr {_lr(r['best_lr'])}) | {_name(r['baseline'])} "
                  f"(lr {_lr(r['baseline_best_lr'])}) | {r['contrast']} | {_num(r['mean'])} ({r['seeds']}) | "
                  f"{_num(r['baseline_mean'])} ({r['baseline_seeds']}) | {ci} | {verdict} |")
    return md


def _lr(v: float | None) -> str:
    return "n/a" if v is None else f"{v:g}"


def plot_lr_curves(tunings: Mapping[tuple[str, str], Tuning], task: str, metric: str, path: Path) -> bool:
    """Metric against learning rate (tuning-seed mean; every seed at the best lr as dots)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the bench extras
        return False
    from memoptim.lab.plots import COLORS

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (tk, opt), t in sorted(tunings.items()):
        if tk != task or not t.grid:
            continue
        grid = t.grid
        color = COLORS.get(opt)
        ax.plot(grid, [t.mean_at(lr, t.tuning_seeds) for lr in grid], marker="o", label=_name(opt),
                color=color)
        best = t.best_lr
        ax.scatter([best] * len(t.values[best]), list(t.values[best].values()), s=12, color=color, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric.replace("_", " "))
    if "perplexity" in metric:
        ax.set_yscale("log")
    ax.set_title(f"{task}: learning-rate sensitivity (line: tuning seed; dots: all seeds at the best lr)",
                 fontsize=8)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_intervals(rows: Sequence[Mapping[str, Any]], task: str, metric: str, path: Path) -> bool:
    """One line per comparison of ``task``: the difference and its 95% interval, coloured by verdict."""
    shown = [r for r in rows if r["task"] == task and r["diff"] is not None]
    if not shown:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the bench extras
        return False
    colors = {"ahead": "tab:green", "behind": "tab:red", "level": "tab:gray", "not tuned": "tab:orange",
              "pending": "tab:blue"}
    fig, ax = plt.subplots(figsize=(7.0, 0.4 * len(shown) + 1.2))
    for i, r in enumerate(reversed(shown)):
        c = colors[r["verdict"]]
        ax.plot([r["ci_low"], r["ci_high"]], [i, i], color=c, lw=2)
        ax.plot([r["diff"]], [i], "o", color=c)
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([f"{_name(r['optimizer'])} − {_name(r['baseline'])} ({r['verdict']})"
                        for r in reversed(shown)], fontsize=7)
    better = "higher" if "accuracy" in metric else "lower"
    ax.set_xlabel(f"difference in {metric.replace('_', ' ')} ({better} is better), 95% CI", fontsize=8)
    ax.set_title(f"{task}: every comparison at each optimizer's own best lr", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


__all__ = ["CONTRASTS", "baseline_of", "plot_intervals", "plot_lr_curves", "tuning_table", "verdict_rows",
           "verdict_table", "write_verdicts"]
