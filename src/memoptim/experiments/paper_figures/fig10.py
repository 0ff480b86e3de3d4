"""Fig. 10 analogue: best validation accuracy of Adam+CM vs batch size (at C=5) and vs buffer size
(at batch 64), each point at the best learning rate of a small grid; the paper: batch 64 and C=5
are best."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from memoptim.experiments.paper_figures.markdown import (
    fmt,
    markdown_table,
    num,
    render_section,
    seed_header,
    setup_line,
)
from memoptim.experiments.paper_figures.plotting import pyplot, scatter_seeds
from memoptim.experiments.paper_figures.quotes import PAPER
from memoptim.experiments.paper_figures.runs import Runner
from memoptim.experiments.paper_figures.scale import ARTIFACTS, TASK, Scale
from memoptim.experiments.paper_figures.verdicts import mean, verdict_best

FIG10_BATCH = 64  # the paper's default batch size: the buffer-size panel's
FIG10_BUFFER = 5  # the paper's default buffer size: the batch-size panel's


def _best_over_lr(runner: Runner, batch_size: int, buffer_size: int) -> dict[str, Any]:
    """Runs of one Fig. 10 point over the lr grid; the best lr by mean best validation accuracy."""
    by_lr = {
        lr: [r.best_accuracy for r in runner.run(
            "fig10", "adam+cm", {"lr": lr, "buffer_size": buffer_size}, batch_size)]
        for lr in runner.scale.lr_grid
    }  # fmt: skip
    best = max(by_lr, key=lambda lr: -math.inf if math.isnan(mean(by_lr[lr])) else mean(by_lr[lr]))
    grid = runner.scale.lr_grid
    edge = len(grid) > 1 and best in (min(grid), max(grid))
    return {"best_lr": best, "seeds": by_lr[best], "by_lr": by_lr, "edge": edge}


def _fig10_rows(points: Mapping[int, Mapping[str, Any]], label: str, scale: Scale,
                steps: Mapping[int, int]) -> str:  # fmt: skip
    """The Markdown table of one Fig. 10 panel (``steps``: optimizer steps of each point)."""
    rows = []
    for key, p in points.items():
        grid = ", ".join(f"{fmt(lr)}: {num(mean(v))}" for lr, v in p["by_lr"].items())
        flag = " (grid edge)" if p["edge"] else ""
        rows.append([f"{label}={key}", steps[key], f"{fmt(p['best_lr'])}{flag}", *p["seeds"],
                     mean(p["seeds"]), grid])  # fmt: skip
    return markdown_table(
        [label, "steps", "best lr", *seed_header(scale.seeds_of("fig10"), "best val acc %"),
         "mean per lr"], rows,
    )  # fmt: skip


def fig10_batch_and_buffer(runner: Runner) -> tuple[str, dict[str, Any]]:
    """Best validation accuracy of Adam+CM vs batch size (C = 5) and vs buffer size (batch 64),
    each point at the lr of :attr:`Scale.lr_grid` with the highest mean over seeds; returns
    (Markdown section, results)."""
    s = runner.scale
    by_batch = {b: _best_over_lr(runner, b, FIG10_BUFFER) for b in s.fig10_batches}
    by_buffer = {c: _best_over_lr(runner, FIG10_BATCH, c) for c in s.fig10_buffers}
    task = runner.task()
    steps = {b: s.epochs * (task.num_batches(0, s.epochs, b) or 0)
             for b in (*s.fig10_batches, FIG10_BATCH)}  # fmt: skip
    v_batch = verdict_best({b: p["seeds"] for b, p in by_batch.items()}, 64, "batch")
    v_buffer = verdict_best({c: p["seeds"] for c, p in by_buffer.items()}, 5, "C")
    edges = [f"batch {b}" for b, p in by_batch.items() if p["edge"]]
    edges += [f"C={c}" for c, p in by_buffer.items() if p["edge"]]
    name = ARTIFACTS["fig10"] + ".png"
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, points, label in ((axes[0], by_batch, "batch size (C=5)"),
                              (axes[1], by_buffer, f"buffer size C (batch {FIG10_BATCH})")):
        keys = list(points)
        for lr, style in zip(s.lr_grid, (":", "--", "-.", ":")):
            ax.plot(range(len(keys)), [mean(points[k]["by_lr"][lr]) for k in keys], style,
                    color="tab:gray", alpha=0.6, lw=1, label=f"lr {fmt(lr)} (mean)")
        scatter_seeds(ax, list(range(len(keys))), [points[k]["seeds"] for k in keys], "tab:red",
                      "Adam+CM, best lr (mean; dots: seeds)")  # fmt: skip
        for i, k in enumerate(keys):
            ax.annotate(f"lr {fmt(points[k]['best_lr'])}", (i, mean(points[k]["seeds"])),
                        textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7)
        ax.set_xticks(range(len(keys)), [str(k) for k in keys])
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("best validation accuracy (%)")
    fig.suptitle(f"Fig. 10 analogue: Adam+CM vs batch size and buffer size ({TASK})")
    fig.tight_layout()
    fig.savefig(runner.out / name, dpi=110)
    plt.close(fig)
    ours = (f"best batch {max(by_batch, key=lambda b: mean(by_batch[b]['seeds']))}, best C "
            f"{max(by_buffer, key=lambda c: mean(by_buffer[c]['seeds']))} (by mean); best lr at "
            f"the edge of the grid {fmt(min(s.lr_grid))}..{fmt(max(s.lr_grid))} for: "
            f"{', '.join(edges) or 'none'}.")  # fmt: skip
    setup = setup_line(s, runner, f"Adam+CM (decay 0.7), lr grid {[fmt(x) for x in s.lr_grid]}, "
                       f"each point the lr with the best mean over seeds (seed values shown at "
                       f"that lr); batch panel at C={FIG10_BUFFER}, buffer panel at batch "
                       f"{FIG10_BATCH}; a fixed number of epochs, so larger batches take fewer "
                       f"steps (as in the paper)", "fig10")  # fmt: skip
    section = render_section(
        "Fig. 10 analogue: best validation accuracy vs batch size and buffer size (Adam+CM)",
        setup, [_fig10_rows(by_batch, "batch", s, steps),
                _fig10_rows(by_buffer, "C", s, {c: steps[FIG10_BATCH] for c in by_buffer})],
        [PAPER["fig10_batch"], PAPER["fig10_buffer"]], ours,
        f"batch 64 best: {v_batch}; C=5 best: {v_buffer}", name,
    )
    results = {"by_batch": by_batch, "by_buffer": by_buffer, "verdict_batch": v_batch,
               "verdict_buffer": v_buffer, "figure": name}  # fmt: skip
    return section, results
