"""Fig. 9 analogue: final sharpness (top Hessian eigenvalue) of Adam+CM for buffer sizes C in
{1, 5, 20}; the paper: larger buffers give lower sharpness (C=20 below C=5)."""

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
from memoptim.experiments.paper_figures.verdicts import mean, verdict_order

FIG9_BUFFERS = (1, 5, 20)


def fig9_buffer_sharpness(runner: Runner) -> tuple[str, dict[str, Any]]:
    """Final sharpness (top Hessian eigenvalue of the training loss on the task's fixed batch of
    256 examples, eval mode) of Adam+CM for C in :data:`FIG9_BUFFERS`; returns (Markdown section,
    results)."""
    s = runner.scale
    runs = {
        c: runner.run("fig9", "adam+cm", {"lr": s.lr, "buffer_size": c}, s.batch_size,
                      sharpness_iters=s.sharpness_iters)
        for c in FIG9_BUFFERS
    }
    final = {c: [r.final("sharpness") for r in rs] for c, rs in runs.items()}
    acc = {c: [r.best_accuracy for r in rs] for c, rs in runs.items()}
    rows = [[f"C={c}", *final[c], mean(final[c]), mean(acc[c])] for c in FIG9_BUFFERS]
    table = markdown_table(
        ["buffer", *seed_header(s.seeds, "final sharpness"), "best val acc % (mean)"], rows
    )
    verdict = verdict_order(final[20], final[5])
    mono = all(mean(final[a]) > mean(final[b]) for a, b in itertools.pairwise(FIG9_BUFFERS))
    ours = (f"mean final sharpness C=1: {num(mean(final[1]))}, C=5: {num(mean(final[5]))}, "
            f"C=20: {num(mean(final[20]))} ({'monotone decreasing' if mono else 'not monotone'} "
            f"in C).")  # fmt: skip
    name = ARTIFACTS["fig9"] + ".png"
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    scatter_seeds(a1, list(range(len(FIG9_BUFFERS))), [final[c] for c in FIG9_BUFFERS],
                  "tab:red", "Adam+CM (mean; dots: seeds)")  # fmt: skip
    a1.set_xticks(range(len(FIG9_BUFFERS)), [f"C={c}" for c in FIG9_BUFFERS])
    a1.set_yscale("log")
    a1.set_ylabel("final sharpness (top Hessian eigenvalue)")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    for c, color in zip(FIG9_BUFFERS, ("tab:gray", "tab:red", "tab:purple")):
        curves = [r.curve("sharpness") for r in runs[c]]
        a2.plot(range(1, len(curves[0]) + 1), [mean(v) for v in zip(*curves)], "-o",
                color=color, label=f"C={c} (mean over seeds)")  # fmt: skip
    epochs_axis(a2, "sharpness", log=True)
    fig.suptitle(f"Fig. 9 analogue: Adam+CM sharpness vs buffer size ({TASK})")
    fig.tight_layout()
    fig.savefig(runner.out / name, dpi=110)
    plt.close(fig)
    section = render_section(
        "Fig. 9 analogue: sharpness vs buffer size (Adam+CM)",
        setup_line(s, runner, f"Adam+CM lr {fmt(s.lr)}, batch {s.batch_size}, decay 0.7 "
                   f"(defaults); sharpness = top Hessian eigenvalue after the last epoch "
                   f"({s.sharpness_iters} power iterations)", "fig9"),
        [table], [PAPER["fig9"]], ours, f"C=20 below C=5: {verdict}", name,
    )
    results = {"final_sharpness": final, "best_val_accuracy": acc, "verdict": verdict,
               "figure": name}  # fmt: skip
    return section, results
