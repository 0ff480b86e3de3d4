"""Aggregate benchmark runs into the analogues of the paper's Tables 2-4, plus curves (PNG).

Input: any directory tree of run directories written by
:func:`memoptim.experiments.train.train` (``config.json``, ``metrics.jsonl``, ``summary.json``);
the sweep layout ``<task>/<optimizer>/<hp-slug>/seed<k>`` is not required.

Method (stated in the report):

* a run's value is its best validation metric over epochs (the paper's "best validation
  accuracy / perplexity achieved during training"; learning accuracy for the streams);
* runs are grouped by (task, optimizer, hyperparameters); a group's value is the mean +- sample
  standard deviation over its seeds -- every seed that ran counts (a diverged run counts with
  its best finite value, or as the worst possible value if it has none);
* the best hyperparameters of an optimizer are those of the group with the most seeds and, among
  those, the best mean (the selection uses the same seeds as the reported number, as in the
  paper; the ``test_accuracy`` at each run's best-validation epoch is printed as an unselected
  check);
* SGD speed-up (Table 3): ``T`` = the lowest best-validation accuracy among the best SGD
  configuration's seeds (so every SGD seed reaches it); a run's epochs-to-target is its first
  epoch with ``val_accuracy >= T``; speed-up = mean epochs of SGD / mean epochs of the optimizer
  (only when all its seeds reach ``T``);
* verdicts: the tuned protocol (:mod:`memoptim.experiments.protocol`): each optimizer at its
  own best learning rate, >= 5 seeds, Welch's 95% confidence interval of the difference, and
  a verdict word fixed by the interval (``verdicts.json``).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memoptim.experiments import paper
from memoptim.experiments.buffer_report import attach_dynamics, buffer_dynamics_section
from memoptim.experiments.protocol import format_lr
from memoptim.experiments.sweep import ADAM_FAMILY, SGD_FAMILY, hp_slug
from memoptim.experiments.train import read_metrics
from memoptim.experiments.verdicts import (
    TASK_TITLES,
    summary_tables,
    verdict_rows,
    verdict_section,
    write_verdicts,
)
from memoptim.registry import LABELS, REGISTRY

NAMES = LABELS
DIAGNOSTIC_KEYS = ("sharpness", "distance", "buffer_variance", "buffer_agreement", "m_sharpness")


@dataclass
class Run:
    """One finished run: its configuration, summary and per-epoch metrics."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    history: list[dict[str, Any]]

    @property
    def task(self) -> str:
        return str(self.config["task"])

    @property
    def optimizer(self) -> str:
        return str(self.config["optimizer"])

    @property
    def hp(self) -> str:
        return hp_slug(self.config["hyperparameters"])

    @property
    def value(self) -> float:
        v = self.summary.get(f"best_{self.summary['metric']}")
        if v is None:
            return -math.inf if self.summary["mode"] == "max" else math.inf
        return float(v)


@dataclass
class Group:
    """Runs sharing (task, optimizer, hyperparameters), one per seed."""

    task: str
    optimizer: str
    hp: str
    mode: str
    runs: list[Run] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [r.value for r in sorted(self.runs, key=lambda r: r.config["seed"])]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        vals = self.values
        if len(vals) < 2 or not all(math.isfinite(v) for v in vals):
            return math.nan
        return statistics.stdev(vals)

    def extra_mean(self, key: str) -> float | None:
        vals = [r.summary.get(key) for r in self.runs]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None


def collect_runs(root: str | os.PathLike[str]) -> tuple[list[Run], list[Path]]:
    """(finished runs, run directories without a summary) under ``root``."""
    runs, unfinished = [], []
    for cfg in sorted(Path(root).rglob("config.json")):
        d = cfg.parent
        if not (d / "summary.json").exists():
            unfinished.append(d)
            continue
        runs.append(
            Run(d, json.loads(cfg.read_text()), json.loads((d / "summary.json").read_text()),
                read_metrics(d))
        )  # fmt: skip
    return runs, unfinished


def group_runs(runs: Iterable[Run]) -> dict[tuple[str, str], list[Group]]:
    """``(task, optimizer) -> [Group per hyperparameter setting]``."""
    groups: dict[tuple[str, str, str], Group] = {}
    for r in runs:
        key = (r.task, r.optimizer, r.hp)
        if key not in groups:
            groups[key] = Group(r.task, r.optimizer, r.hp, r.summary["mode"])
        groups[key].runs.append(r)
    out: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for (task, opt, _), g in groups.items():
        out[(task, opt)].append(g)
    return dict(out)


def best_group(groups: Sequence[Group]) -> Group:
    """Most seeds first, then the best mean (ties: the first in hyperparameter order)."""
    sign = 1.0 if groups[0].mode == "max" else -1.0
    return max(sorted(groups, key=lambda g: g.hp), key=lambda g: (g.n, sign * g.mean))


def epochs_to_target(history: Sequence[Mapping[str, Any]], key: str, target: float) -> int | None:
    """First epoch (1-based, as recorded) whose ``key`` is >= ``target``; None if never."""
    for h in history:
        v = h.get(key)
        if v is not None and v >= target:
            return int(h["epoch"])
    return None


def speedups(best: Mapping[str, Group], baseline: str = "sgd") -> dict[str, Any]:
    """Speed-up of each optimizer in epochs to reach the baseline's target (module doc)."""
    if baseline not in best:
        return {}
    base = best[baseline]
    target = min(base.values)
    out: dict[str, Any] = {"target": target}
    base_epochs = [epochs_to_target(r.history, "val_accuracy", target) for r in base.runs]
    base_mean = statistics.fmean(e for e in base_epochs if e is not None)
    for opt, g in best.items():
        eps = [epochs_to_target(r.history, "val_accuracy", target) for r in g.runs]
        reached = [e for e in eps if e is not None]
        out[opt] = {
            "epochs": eps,
            "speedup": base_mean / statistics.fmean(reached) if len(reached) == len(eps) else None,
            "reached": f"{len(reached)}/{len(eps)}",
        }
    return out


def _fmt(mean: float | None, std: float | None = None, digits: int = 1) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _paper(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, tuple):
        return f"{value[0]:.1f} ± {value[1]:.1f}"
    return f"{value:.1f}x"


def _cell(g: Group | None, digits: int = 1) -> str:
    return "not run" if g is None else f"{_fmt(g.mean, g.std, digits)} (n={g.n})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _plot_curves(groups: Mapping[str, Group], key: str, title: str, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from memoptim.lab.plots import legend_outside, style_of

    fig, ax = plt.subplots(figsize=(8, 4))
    drawn = False
    order = list(NAMES)
    for i, (opt, g) in enumerate(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order
                                        else len(order))):
        series = [[h.get(key) for h in r.history] for r in g.runs]
        length = min(len(s) for s in series)
        arr = np.array([[np.nan if v is None else v for v in s[:length]] for s in series], float)
        if length == 0 or np.isnan(arr).all():
            continue
        x = np.arange(1, length + 1)
        m, s = np.nanmean(arr, 0), np.nanstd(arr, 0)
        lr = g.runs[0].config["hyperparameters"].get("lr")
        label = NAMES.get(opt, opt) + (f" (lr {format_lr(lr)})" if lr is not None else "")
        kw = style_of(opt, i)
        ax.plot(x, m, ms=4, label=label, **kw)
        ax.fill_between(x, m - s, m + s, color=kw["color"], alpha=0.12, lw=0)
        drawn = True
    if drawn:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(title)
        if key == "buffer_variance" or key == "sharpness":
            ax.set_yscale("log")
        legend_outside(ax)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


class MixedSetups(ValueError):
    """Runs of one task under different setups (epochs, subsets, batch size, schedule), whose
    values cannot be pooled."""


def setup_of(run: Run) -> str:
    """The settings that must agree for two runs of a task to be compared: epochs, subsets,
    batch size and schedule (as resolved)."""
    c, res = run.config, run.summary.get("resolved", {})
    return (f"epochs={c.get('epochs')}, subset={c.get('subset')}, eval_subset={c.get('eval_subset')}, "
            f"batch_size={res.get('batch_size', c.get('batch_size'))}, "
            f"schedule={res.get('schedule', c.get('schedule'))}")


def check_setups(runs: Sequence[Run], root: str | os.PathLike[str]) -> None:
    """Raise :class:`MixedSetups` (one line: the task, two setups and a run of each) when runs
    under ``root`` that would be compared -- one task, one optimizer family (the verdicts never
    compare across families) -- differ in setup."""
    first: dict[tuple[str, str, str], Run] = {}
    for r in runs:
        first.setdefault((r.task, _family(r.optimizer), setup_of(r)), r)
    for task, family in sorted({(t, f) for t, f, _ in first}):
        found = [(setup, r) for (t, f, setup), r in first.items() if (t, f) == (task, family)]
        if len(found) > 1:
            (a, ra), (b, rb) = found[:2]
            where = [str(x.path.relative_to(root)) for x in (ra, rb)]
            raise MixedSetups(f"the {task} runs under {root} differ in setup, so they cannot be pooled: "
                              f"{a} ({where[0]}) vs {b} ({where[1]}); report each setup's directory "
                              "separately with --runs")


def _family(optimizer: str) -> str:
    entry = REGISTRY.get(optimizer)
    return optimizer if entry is None else entry.family


def build_report(
    runs_root: str | os.PathLike[str], out_dir: str | os.PathLike[str], plots: bool = True
) -> Path:
    """Write ``report.md`` (+ PNG figures) and ``verdicts.json`` in ``out_dir``; returns the
    Markdown path.

    Raises:
        MixedSetups: the runs of a task differ in setup (:func:`check_setups`).
        FileNotFoundError: no finished run under ``runs_root``.
    """
    runs, unfinished = collect_runs(runs_root)
    if not runs:
        raise FileNotFoundError(f"no finished run under {runs_root} (a run directory holds config.json "
                                "and summary.json: memoptim train writes them)")
    check_setups(runs, runs_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grouped = group_runs(runs)
    best: dict[str, dict[str, Group]] = defaultdict(dict)
    for (task, opt), gs in grouped.items():
        best[task][opt] = best_group(gs)
    rows = verdict_rows(runs)
    attach_dynamics(rows, best)
    write_verdicts(rows, out / "verdicts.json")

    md: list[str] = ["# memoptim real-data benchmarks (CPU-scale analogue of the paper's section 5)", "",
                     "## Summary", ""]
    md += summary_tables(rows) or [
        "No comparison yet: a verdict needs runs of an optimizer and of its baseline on the same task "
        f"(found: {', '.join(sorted({f'{r.optimizer} on {r.task}' for r in runs}))}).", ""]
    md += _overview(runs, unfinished)
    md += _setup_section(runs)
    md += verdict_section(runs, rows, out, plots)
    fm, lm = best.get("fashion-mnist", {}), best.get("brown-lm", {})
    md += _table2(fm, lm)
    md += _table3(fm)
    md += _table4(best.get("split-fashion-mnist", {}), best.get("permuted-fashion-mnist", {}))
    md += buffer_dynamics_section(best)
    md += _configurations_section(best, grouped)
    if plots:
        md += _curves_section(best, out)
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path


#: The tasks' descriptions: (the tasks a line describes, the line).
TASK_NOTES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("fashion-mnist",),
     "- **Fashion-MNIST** (stand-in for CIFAR-10/100, Tables 2-3): 28x28 grey images, 10 classes; 50k "
     "train / 10k validation held out of the training set (stratified) / 10k test; residual CNN with 3 "
     "stages (78k parameters), batch 32, LR divided by 10 at mid-training."),
    (("brown-lm",),
     "- **Brown LM** (stand-in for PTB, Table 2): Brown corpus, files split 80/10/10, 10k vocabulary "
     "with <unk>, one-layer LSTM (128 units), BPTT 35, batch 20, gradient clipping 1.0; validation "
     "perplexity."),
    (("gpt-brown",),
     "- **GPT on Brown** (a transformer, trained as transformers are): the Brown LM's data and "
     "vocabulary, a small pre-LayerNorm decoder-only GPT with a tied embedding; decoupled weight "
     "decay on the matrices, linear warm-up and cosine decay, gradient clipping 1.0; validation "
     "perplexity; the Adam-family baseline is AdamW."),
    (("split-fashion-mnist", "permuted-fashion-mnist"),
     "- **Split / Permuted Fashion-MNIST** (stand-ins for TinyImagenet / 5-dataset, Table 4): 5 tasks "
     "(2 classes each / 5 pixel permutations), the same CNN and optimizer state carried across tasks, "
     "constant LR; learning accuracy = mean accuracy on each task right after training on it."),
)


def _overview(runs: Sequence[Run], unfinished: Sequence[Path]) -> list[str]:
    """Run counts and training time, how the values are computed, and the descriptions of the
    tasks that ran."""
    total_time = sum(float(r.summary.get("elapsed") or 0.0) for r in runs)
    diverged = sum(r.summary.get("status") == "diverged" for r in runs)
    present = {r.task for r in runs}
    return [
        f"Runs: {len(runs)} finished ({diverged} diverged), {len(unfinished)} unfinished; "
        f"total training time {total_time / 3600:.2f} h (sum over runs).",
        "",
        "Values are mean ± sample std over seeds of each run's best validation value, for the "
        "best hyperparameters of each optimizer (most seeds, then best mean). Paper numbers "
        "(Malviya et al. 2024, 5 seeds, GPU benchmarks) are printed beside ours for reference "
        "only: the datasets and models differ (see the task notes below).",
        "",
        "## Tasks (CPU stand-ins for the paper's benchmarks)",
        "",
        *[line for tasks, line in TASK_NOTES if present & set(tasks)],
        "",
    ]


def _setup_section(runs: Sequence[Run]) -> list[str]:
    """Per task, the distinct settings (epochs, subsets, batch size, schedule) and seeds run."""
    md = ["## Setup of the runs found", ""]
    setups: dict[str, set[str]] = defaultdict(set)
    for r in runs:
        setups[r.task].add(setup_of(r))
    for task in sorted(setups):
        seeds = sorted({r.config["seed"] for r in runs if r.task == task})
        md.append(f"- {TASK_TITLES.get(task, task)}: {'; '.join(sorted(setups[task]))}; "
                  f"seeds {seeds}")  # fmt: skip
    md.append("")
    return md


def _table2(fm: Mapping[str, Group], lm: Mapping[str, Group]) -> list[str]:
    """Table 2 analogue: the Adam family on Brown LM and Fashion-MNIST (best groups per optimizer)."""
    md = ["## Table 2 analogue: Adam family, language modelling and image classification", ""]
    rows = []
    for opt in ADAM_FAMILY:
        if opt not in fm and opt not in lm:
            continue
        p2 = paper.TABLE2.get(opt, {})
        g = fm.get(opt)
        test = g.extra_mean("test_accuracy_at_best") if g else None
        rows.append([
            NAMES[opt], _cell(lm.get(opt)), _paper(p2.get("PTB")), _cell(g), _fmt(test),
            _paper(p2.get("CIFAR10")), _paper(p2.get("CIFAR100")),
        ])  # fmt: skip
    md += _table(
        ["Optimizer", "Brown LM val ppl ↓", "paper PTB ppl", "Fashion-MNIST val acc % ↑",
         "test acc % at best epoch", "paper CIFAR10", "paper CIFAR100"],
        rows,
    )  # fmt: skip
    md.append("")
    return md


def _table3(fm: Mapping[str, Group]) -> list[str]:
    """Table 3 analogue: the SGD family on Fashion-MNIST with speed-ups (empty if none ran)."""
    if not any(o in fm for o in SGD_FAMILY):
        return []
    sg = {o: fm[o] for o in SGD_FAMILY if o in fm}
    sp = speedups(sg)
    md = ["## Table 3 analogue: SGD family on Fashion-MNIST", ""]
    if sp:
        md.append(f"Speed-up target: {sp['target']:.2f}% validation accuracy (the lowest best "
                  "value among SGD's seeds); epochs to reach it per seed in brackets.")  # fmt: skip
        md.append("")
    rows = []
    for opt, g in sg.items():
        s = sp.get(opt, {})
        su = "n/a" if not s else (f"{s['speedup']:.2f}x" if s["speedup"] else
                                  f"not reached ({s['reached']})")  # fmt: skip
        eps = "" if not s else f" {s['epochs']}"
        p3 = paper.TABLE3.get(opt, {})
        rows.append([
            NAMES[opt], _cell(g), su + eps, _paper(p3.get("CIFAR10")),
            _paper(p3.get("CIFAR10 speed-up")), _paper(p3.get("CIFAR100")),
            _paper(p3.get("CIFAR100 speed-up")),
        ])  # fmt: skip
    md += _table(
        ["Optimizer", "Fashion-MNIST val acc %", "speed-up [epochs]", "paper CIFAR10",
         "paper speed-up", "paper CIFAR100", "paper speed-up"],
        rows,
    )  # fmt: skip
    md.append("")
    return md


def _table4(st_split: Mapping[str, Group], st_perm: Mapping[str, Group]) -> list[str]:
    """Table 4 analogue: learning accuracy on the online streams (empty if none ran)."""
    if not (st_split or st_perm):
        return []
    md = ["## Table 4 analogue: online learning (learning accuracy %)", ""]
    rows = []
    for opt in ADAM_FAMILY:
        if opt not in st_split and opt not in st_perm:
            continue
        p4 = paper.TABLE4.get(opt, {})
        rows.append([
            NAMES[opt], _cell(st_split.get(opt)), _cell(st_perm.get(opt)),
            _paper(p4.get("TinyImagenet")), _paper(p4.get("5-dataset")),
        ])  # fmt: skip
    md += _table(
        ["Optimizer", "Split Fashion-MNIST", "Permuted Fashion-MNIST", "paper TinyImagenet",
         "paper 5-dataset"],
        rows,
    )  # fmt: skip
    md.append("")
    return md


def _configurations_section(
    best: Mapping[str, Mapping[str, Group]], grouped: Mapping[tuple[str, str], list[Group]]
) -> list[str]:
    """Per task, every hyperparameter group of every optimizer, the chosen one marked."""
    md = ["## Best hyperparameters and all configurations", ""]
    for task in sorted(best):
        md += [f"### {TASK_TITLES.get(task, task)}", ""]
        rows = []
        for opt in sorted(best[task], key=lambda o: list(NAMES).index(o) if o in NAMES else 99):
            chosen = best[task][opt]
            for g in sorted(grouped[(task, opt)], key=lambda g: g.hp):
                mark = "**best**" if g is chosen else ""
                vals = ", ".join(_fmt(v, digits=2) for v in g.values)
                rows.append([NAMES.get(opt, opt), _hp_text(g.runs[0].config["hyperparameters"]),
                             _cell(g, 2), vals, mark])
        md += _table(["Optimizer", "hyperparameters", "mean ± std", "per seed", ""], rows)
        md.append("")
    return md


def _hp_text(hp: Mapping[str, Any]) -> str:
    """``beta2=0.999, lr=3e-4``: the hyperparameters, the learning rate compact."""
    return ", ".join(f"{k}={format_lr(v) if k == 'lr' else v}" for k, v in sorted(hp.items()))


def _curves_section(best: Mapping[str, Mapping[str, Group]], out: Path) -> list[str]:
    """The curves of every task's best groups (PNGs written in ``out``) and their links."""
    md = ["## Curves", ""]
    for task, tb in sorted(best.items()):
        md += _task_curves(task, tb, out)
    return md


def _task_curves(task: str, tb: Mapping[str, Group], out: Path) -> list[str]:
    """The validation curves of ``task``'s best groups and the curves of every diagnostic
    logged (the Fig. 8 analogues)."""
    md: list[str] = []
    key = "val_perplexity" if task == "brown-lm" else "val_accuracy"
    name = f"curves_{task}.png"
    if _plot_curves(tb, key, f"{TASK_TITLES.get(task, task)}: {key} (best configs)",
                    out / name):  # fmt: skip
        md += [f"![{task}]({name})", ""]
    diag = [k for k in DIAGNOSTIC_KEYS if any(k in h for g in tb.values()
                                              for r in g.runs for h in r.history)]  # fmt: skip
    # Fig. 8 compares the Adam family; fall back to every optimizer if none ran
    fig8 = {o: g for o, g in tb.items() if o in ADAM_FAMILY} or dict(tb)
    for k in diag:
        name = f"{k}_{task}.png"
        if _plot_curves(fig8, k, f"{TASK_TITLES.get(task, task)}: {k} (Fig. 8 analogue)",
                        out / name):  # fmt: skip
            md += [f"![{k} {task}]({name})", ""]
    if not diag:
        md += [f"(no diagnostics for {task}: run with `--diagnostics` to get the "
               "sharpness / distance / buffer curves)", ""]  # fmt: skip
    return md
