"""Verdicts of the tuned protocol: which comparisons are made, their rows, their report section.

The rules (tuning, edges, seeds, Welch interval, verdict word) are in
:mod:`memoptim.experiments.protocol`; this module applies them to the runs of a study and writes
``verdicts.json`` (a list of rows, :func:`memoptim.experiments.protocol.compare`) and the
Markdown section and figures of the report.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from memoptim.experiments.protocol import MIN_SEEDS, Tuning, compare, format_lr, tunings_from_runs
from memoptim.registry import LABELS, REGISTRY

#: Display titles of the tasks (reports, summaries, findings).
TASK_TITLES: dict[str, str] = {
    "fashion-mnist": "Fashion-MNIST",
    "brown-lm": "Brown LM",
    "gpt-brown": "GPT on Brown",  # a transformer (the task notes say so)
    "split-fashion-mnist": "Split Fashion-MNIST",
    "permuted-fashion-mnist": "Permuted Fashion-MNIST",
}
#: The baseline of a family where a task does not use the family's plain rule: a transformer is
#: trained with decoupled weight decay, so its Adam-family baseline is AdamW.
TASK_BASELINES: dict[str, dict[str, str]] = {"gpt-brown": {"adam": "adamw"}}

#: What the last part of a registry name isolates when its optimizer is compared with the name
#: without that part (``adam+cm-random`` with ``adam+cm``, ``adam+sam+cm`` with ``adam+sam``), and
#: whether the contrast reads "the shorter name against the longer" (an ablation takes a mechanism
#: away, so the contrast measures what the mechanism adds).  An unlisted part is compared as
#: "the variant against its base".
PARTS: dict[str, tuple[str, bool]] = {
    "+cm": ("critical momenta on top of {base}", False),
    "+cg": ("critical gradients on top of {base}", False),
    "+sam": ("SAM on top of {base}", False),
    "-nomem": ("the buffer on top of v from m", True),
    "-vg": ("v from the aggregate instead of g, with the buffer", True),
    "-random": ("the gradient-norm key against random replacement", True),
    "-fifo": ("the gradient-norm key against FIFO (oldest-first) replacement", True),
    "-authors": ("the authors' semantics against ours", False),
    "-decay0.99": ("key decay 0.99 against 0.7", False),
}
#: Contrasts the names do not imply: (optimizer, baseline, what the contrast isolates).
EXTRA_CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("adam+cm-vg", "adam", "the buffer alone (v from g, as Adam)"),
    ("adam+cm-nomem", "adam", "v from m alone (no buffer)"),
    ("adam+cm", "adamomentum", "Adam+CM against AdaMomentum"),
    ("lion", "adamw", "Lion against AdamW"),
    ("lion+cm", "adamw", "Lion+CM against AdamW"),
)
FAMILY_TEXT = "against the family baseline"


def parent_of(name: str) -> tuple[str, str] | None:
    """``(base, part)``: the registry name ``name`` extends and the part it adds (``"-random"``,
    ``"+cm"``), or ``None`` for a name that extends none."""
    for sep in ("-", "+"):
        head, found, tail = name.rpartition(sep)
        if found and head in REGISTRY:
            return head, sep + tail
    return None


def registry_contrasts() -> tuple[tuple[str, str, str], ...]:
    """Every mechanism contrast of the registry, ``(optimizer, baseline, what it isolates)``: each
    name against the name it extends (:func:`parent_of`, :data:`PARTS`), then
    :data:`EXTRA_CONTRASTS`; in registry order."""
    out = []
    for name in REGISTRY:
        found = parent_of(name)
        if found is None:
            continue
        base, part = found
        text, reverse = PARTS.get(part, (f"{LABELS[name]} against {{base}}", False))
        text = text.format(base=LABELS[base])
        out.append((base, name, text) if reverse else (name, base, text))
    return (*out, *EXTRA_CONTRASTS)


#: Mechanism contrasts: (optimizer, baseline, what the contrast isolates).
CONTRASTS: tuple[tuple[str, str, str], ...] = registry_contrasts()


def baseline_of(optimizer: str, task: str | None = None) -> str:
    """The family baseline (:data:`memoptim.registry.FAMILIES`): the family's plain rule, ``adam``,
    ``sgd`` or ``lion`` (``adam`` for a name the registry does not know), or the task's own
    (:data:`TASK_BASELINES`: ``adamw`` on the transformer task)."""
    entry = REGISTRY.get(optimizer)
    family = "adam" if entry is None else entry.family
    return TASK_BASELINES.get(task or "", {}).get(family, family)


def _order(name: str) -> int:
    order = list(LABELS)
    return order.index(name) if name in order else len(order)


def verdict_rows(runs: Sequence[Any], min_seeds: int = MIN_SEEDS) -> list[dict[str, Any]]:
    """Every comparison the runs allow: each optimizer against its family baseline, then the
    mechanism contrasts of :data:`CONTRASTS`; in task order, then registry order.  A pair is made
    when both optimizers have runs on the task; below ``min_seeds`` seeds or with a best lr at a
    grid's edge its verdict is ``"pending"`` or ``"not tuned"``."""
    tunings = tunings_from_runs(runs)
    metrics = {r.task: r.summary["metric"] for r in runs}
    rows: list[dict[str, Any]] = []
    for task in sorted({t for t, _ in tunings}):
        present = sorted((o for t, o in tunings if t == task), key=_order)
        pairs = {(o, baseline_of(o, task)): FAMILY_TEXT for o in present if o != baseline_of(o, task)}
        for opt, base, what in CONTRASTS:  # a contrast names what a pair isolates; no pair twice
            if opt in present and base in present:
                pairs[(opt, base)] = what
        for (opt, base), what in pairs.items():
            if (task, base) not in tunings:
                continue
            row = compare(task, tunings[(task, opt)], tunings[(task, base)], min_seeds)
            row["contrast"] = what
            row["metric"], row["mode"] = metrics[task], tunings[(task, opt)].mode
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
    md = ["| optimizer | " + " | ".join(f"lr {format_lr(lr)}" for lr in lrs) + " | best lr | seeds at best |",
          "|---" * (len(lrs) + 3) + "|"]
    for t in sorted(ts, key=lambda t: _order(t.optimizer)):
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
                  + f" | {format_lr(best)}{edge} | {len(t.seeds_at_best())} |")
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
    return format_lr(v)


def plot_lr_curves(tunings: Mapping[tuple[str, str], Tuning], task: str, metric: str, path: Path) -> bool:
    """Metric against learning rate (tuning-seed mean; every seed at the best lr as dots)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is in the bench extras
        return False
    from memoptim.lab.plots import legend_outside, style_of

    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    for i, ((tk, opt), t) in enumerate(sorted(tunings.items(), key=lambda kv: _order(kv[0][1]))):
        if tk != task or not t.grid:
            continue
        grid = t.grid
        kw = style_of(opt, i)
        ax.plot(grid, [t.mean_at(lr, t.tuning_seeds) for lr in grid], label=_name(opt), ms=5, **kw)
        best = t.best_lr
        ax.scatter([best] * len(t.values[best]), list(t.values[best].values()), s=12, color=kw["color"],
                   marker=kw["marker"], alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric.replace("_", " "))
    if "perplexity" in metric:
        ax.set_yscale("log")
    ax.set_title(f"{TASK_TITLES.get(task, task)}: learning-rate sensitivity "
                 "(line: tuning seed; dots: all seeds at the best lr)", fontsize=8)
    legend_outside(ax)
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
    ax.set_title(f"{TASK_TITLES.get(task, task)}: every comparison at each optimizer's own best lr", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- report sections
def metric_title(metric: str, mode: str) -> str:
    """``"val perplexity ↓"``: the metric's name and which way is better."""
    return f"{metric.replace('_', ' ')} {'↑' if mode == 'max' else '↓'}"


def verdict_cell(row: Mapping[str, Any]) -> str:
    """``+1.84 [+0.16, +3.51] **behind**``; ``*pending* (1 and 5 seeds)`` without an interval."""
    seeds = f" ({row['seeds']} and {row['baseline_seeds']} seeds)" if row["verdict"] == "pending" else ""
    if row.get("diff") is None:
        return f"*{row['verdict']}*{seeds}"
    return f"{row['diff']:+.2f} [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}] **{row['verdict']}**{seeds}"


def seeds_text(n: int) -> str:
    """``"1 seed"``, ``"5 seeds"``."""
    return f"{n} seed{'' if n == 1 else 's'}"


def summary_tables(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown: the summary across tasks -- each optimizer against its task's tuned baseline,
    then every mechanism contrast -- one column per task."""
    tasks = sorted({r["task"] for r in rows})
    if not tasks:
        return []
    first = {t: next(r for r in rows if r["task"] == t) for t in tasks}
    titles = [f"{TASK_TITLES.get(t, t)} ({metric_title(first[t].get('metric', 'value'), first[t]['mode'])})"
              for t in tasks]
    head = ["| | " + " | ".join(titles) + " |", "|---" * (len(tasks) + 1) + "|"]
    base_cells = []
    for t in tasks:
        fam = [r for r in rows if r["task"] == t and r["contrast"] == FAMILY_TEXT]
        r = fam[0] if fam else first[t]
        base_cells.append(f"{_name(r['baseline'])} {_num(r['baseline_mean'])} "
                          f"(lr {_lr(r['baseline_best_lr'])}, {seeds_text(r['baseline_seeds'])})")
    md = ["Each cell: optimizer - baseline, each at its own tuned lr, with Welch's 95% CI and the verdict "
          "(details and the tuning grids per task below).", "", *head,
          "| **tuned baseline** | " + " | ".join(base_cells) + " |"]
    # One row per optimizer against its task's baseline (Adam on one task, AdamW on another), then
    # one per other contrast.
    versus_base: dict[str, dict[str, Mapping[str, Any]]] = {}
    others: dict[tuple[str, str, str], dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        if r["baseline"] == baseline_of(r["optimizer"], r["task"]):
            versus_base.setdefault(r["optimizer"], {})[r["task"]] = r
        else:
            others.setdefault((r["optimizer"], r["baseline"], r["contrast"]), {})[r["task"]] = r
    for opt in sorted(versus_base, key=_order):
        cells = [verdict_cell(versus_base[opt][t]) if t in versus_base[opt] else "" for t in tasks]
        md.append(f"| {_name(opt)} | " + " | ".join(cells) + " |")
    if others:
        md += ["", "Mechanism contrasts (first named - second named):", "", *head]
        for key, by_task in others.items():
            cells = [verdict_cell(by_task[t]) if t in by_task else "" for t in tasks]
            md.append(f"| {_name(key[0])} - {_name(key[1])}: {key[2]} | " + " | ".join(cells) + " |")
    return [*md, ""]


def verdict_section(runs: Sequence[Any], rows: Sequence[Mapping[str, Any]], out: Path,
                    plots: bool) -> list[str]:
    """The tuned protocol's section: per task the lr-sensitivity figure, the tuning table and the
    verdicts (95% CIs)."""
    tunings = tunings_from_runs(runs)
    md = [
        "## Verdicts (tuned protocol)", "",
        "Every optimizer ran the same log-spaced learning-rate grid on its tuning seed(s); a grid "
        "whose best lr lay at an edge was widened. The comparison uses every seed at each "
        "optimizer's own best lr: `diff` = optimizer - baseline (accuracy: higher is better; "
        "perplexity: lower is better) with Welch's 95% confidence interval. The verdict word "
        "follows the interval: **ahead** / **behind** if it excludes zero, **level** if it "
        f"contains it, **not tuned** if a best lr is at its grid's edge, **pending** below "
        f"{MIN_SEEDS} seeds. Machine-readable: [`verdicts.json`](verdicts.json).", "",
    ]  # fmt: skip
    if not tunings:
        return md
    tuning_seeds = sorted(set().union(*(t.tuning_seeds for t in tunings.values())))
    md += [f"Tuning seed(s): {tuning_seeds}. They are also among the confirmation seeds, for every "
           "optimizer alike: the selection favours each optimizer's own best lr equally.", ""]
    related = [(out / "paper-figures" / "report.md", "the paper's real-data sensitivity figures in "
                "[`paper-figures/`](paper-figures/report.md)"),
               (out.parent / "toy" / "report.md", "the toy reproduction, with every claim also checked "
                "under the ablations and an lr-matched Adam, in [`results/toy/`](../toy/report.md)")]
    found = [text for path, text in related if path.exists()]
    if found:
        md += ["Related evidence: " + "; ".join(found) + ".", ""]
    for task in sorted({t for t, _ in tunings}):
        metric = next(r.summary["metric"] for r in runs if r.task == task)
        md += [f"### {TASK_TITLES.get(task, task)} ({metric.replace('_', ' ')})", ""]
        fig = out / f"lr_{task}.png"
        if plots and plot_lr_curves(tunings, task, metric, fig):
            md += [f"![learning-rate sensitivity]({fig.name})", ""]
        forest = out / f"verdicts_{task}.png"
        if plots and plot_intervals(rows, task, metric, forest):
            md += [f"![differences with 95% confidence intervals]({forest.name})", ""]
        md += ["Mean over the tuning seed(s) per learning rate (best in bold):", "",
               *tuning_table(tunings, task), ""]
        if any(r["task"] == task for r in rows):
            md += [*verdict_table(rows, task), ""]
        else:
            md += ["No comparison yet: the task has runs of one optimizer only.", ""]
        md += flattening_note(runs, tunings, task, metric)
    return md


def flattening_note(runs: Sequence[Any], tunings: Mapping[tuple[str, str], Any], task: str,
                    metric: str) -> list[str]:
    """Whether the baseline's validation curve had flattened: its mean change over the last
    epoch at its best lr (seeds averaged), beside the total change from the first epoch."""
    base = baseline_of("adam", task)
    if (task, base) not in tunings or tunings[(task, base)].best_lr is None:
        return []
    lr = tunings[(task, base)].best_lr
    curves = [[h.get(metric) for h in r.history] for r in runs
              if r.task == task and r.optimizer == base and float(r.config["hyperparameters"]["lr"]) == lr]
    curves = [c for c in curves if len(c) >= 2 and None not in c[-2:]]
    if not curves or metric == "learning_accuracy":
        return []
    last = statistics.fmean(c[-1] - c[-2] for c in curves)
    total = statistics.fmean(c[-1] - c[0] for c in curves)
    return [f"Flattening check: {_name(base)} at lr {_lr(lr)} changed its {metric.replace('_', ' ')} by "
            f"{last:+.3g} over the last epoch ({total:+.3g} since the first), mean of {len(curves)} "
            f"seed{'s' if len(curves) > 1 else ''}.", ""]


__all__ = ["CONTRASTS", "EXTRA_CONTRASTS", "PARTS", "TASK_BASELINES", "TASK_TITLES", "baseline_of",
           "flattening_note", "parent_of", "plot_intervals", "plot_lr_curves", "registry_contrasts",
           "summary_tables", "tuning_table", "verdict_cell", "verdict_rows", "verdict_section",
           "verdict_table", "write_verdicts"]
