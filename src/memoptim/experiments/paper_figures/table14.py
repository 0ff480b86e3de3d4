"""Table 14 / Fig. 20 analogue: Adam with lr in {1e-2, 1e-3, 1e-4}, best validation accuracy and
sharpness per epoch; the paper: a larger lr lowers the sharpness, yet lr 1e-3 is the most
accurate."""

from __future__ import annotations

import itertools
from typing import Any

from memoptim.experiments.paper_figures.markdown import (
    fmt,
    markdown_table,
    num,
    render_section,
    seed_header,
    setup_line,
)
from memoptim.experiments.paper_figures.plotting import epochs_axis, pyplot, scatter_seeds
from memoptim.experiments.paper_figures.quotes import PAPER
from memoptim.experiments.paper_figures.runs import Runner
from memoptim.experiments.paper_figures.scale import ARTIFACTS, TASK
from memoptim.experiments.paper_figures.verdicts import mean, verdict_best, verdict_order

TABLE14_LRS = (1e-2, 1e-3, 1e-4)


def table14_lr_sharpness(runner: Runner) -> tuple[str, dict[str, Any]]:
    """Adam with lr in :data:`TABLE14_LRS`: best validation accuracy per seed and sharpness
    (top Hessian eigenvalue) per epoch; returns (Markdown section, results)."""
    s = runner.scale
    runs = {lr: runner.run("table14", "adam", {"lr": lr}, s.batch_size,
                           sharpness_iters=s.sharpness_iters)
            for lr in TABLE14_LRS}  # fmt: skip
    acc = {lr: [r.best_accuracy for r in rs] for lr, rs in runs.items()}
    final = {lr: [r.final("sharpness") for r in rs] for lr, rs in runs.items()}
    rows = [[fmt(lr), *acc[lr], mean(acc[lr]), *final[lr], mean(final[lr])] for lr in TABLE14_LRS]
    table = markdown_table(
        ["lr", *seed_header(s.seeds, "best val acc %"), *seed_header(s.seeds, "final sharpness")],
        rows,
    )
    ordered = sorted(TABLE14_LRS, reverse=True)  # 1e-2, 1e-3, 1e-4
    sharp = [verdict_order(final[hi], final[lo]) for hi, lo in itertools.pairwise(ordered)]
    v_sharp = "; ".join(f"lr {fmt(hi)} below lr {fmt(lo)}: {v}"
                        for (hi, lo), v in zip(itertools.pairwise(ordered), sharp))  # fmt: skip
    v_acc = verdict_best(acc, 1e-3, "lr")
    ours = ("best val acc (mean): " + ", ".join(f"lr {fmt(lr)}: {num(mean(acc[lr]))}"
                                                 for lr in TABLE14_LRS)
            + "; final sharpness (mean): " + ", ".join(f"lr {fmt(lr)}: {num(mean(final[lr]))}"
                                                       for lr in TABLE14_LRS) + ".")  # fmt: skip
    name = ARTIFACTS["table14"] + ".png"
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for lr, color in zip(TABLE14_LRS, ("tab:blue", "tab:orange", "tab:green")):
        curves = [r.curve("sharpness") for r in runs[lr]]
        epochs = range(1, len(curves[0]) + 1)
        for c in curves:
            a1.plot(epochs, c, color=color, alpha=0.3, lw=0.8)
        a1.plot(epochs, [mean(v) for v in zip(*curves)], "-o", color=color, label=f"lr={fmt(lr)}")
    epochs_axis(a1, "sharpness (top Hessian eigenvalue)", log=True)
    scatter_seeds(a2, list(range(len(TABLE14_LRS))), [acc[lr] for lr in TABLE14_LRS],
                  "tab:blue", "Adam (mean; dots: seeds)")  # fmt: skip
    a2.set_xticks(range(len(TABLE14_LRS)), [fmt(lr) for lr in TABLE14_LRS])
    a2.set_xlabel("learning rate")
    a2.set_ylabel("best validation accuracy (%)")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle(f"Table 14 / Fig. 20 analogue: Adam, learning rate vs sharpness ({TASK})")
    fig.tight_layout()
    fig.savefig(runner.out / name, dpi=110)
    plt.close(fig)
    setup = setup_line(s, runner, f"Adam (betas 0.9/0.999), batch {s.batch_size}; sharpness "
                       f"after every epoch ({s.sharpness_iters} power iterations)",
                       "table14")  # fmt: skip
    section = render_section(
        "Table 14 / Fig. 20 analogue: learning rate vs accuracy and sharpness (Adam)",
        setup, [table], [PAPER["table14"]], ours,
        f"sharpness: {v_sharp}. Accuracy, lr 1e-3 best: {v_acc}", name)  # fmt: skip
    results = {"best_val_accuracy": acc, "final_sharpness": final,
               "sharpness_curves": {lr: [r.curve("sharpness") for r in rs]
                                    for lr, rs in runs.items()},
               "verdict_sharpness": v_sharp, "verdict_accuracy": v_acc, "figure": name}  # fmt: skip
    return section, results
