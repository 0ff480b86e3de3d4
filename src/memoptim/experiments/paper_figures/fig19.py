"""Fig. 19 analogue: m-sharpness (paper eq. 15) per epoch of Adam, Adam+CG, Adam+SAM and Adam+CM
at lr 1e-4; the paper: Adam+CM has the lowest m-sharpness."""

from __future__ import annotations

from typing import Any

from memoptim.experiments.paper_figures.markdown import (
    fmt,
    markdown_table,
    num,
    render_section,
    seed_header,
    setup_line,
)
from memoptim.experiments.paper_figures.plotting import epochs_axis, pyplot
from memoptim.experiments.paper_figures.quotes import PAPER
from memoptim.experiments.paper_figures.runs import Runner
from memoptim.experiments.paper_figures.scale import ARTIFACTS, TASK
from memoptim.experiments.paper_figures.verdicts import compare, mean
from memoptim.registry import LABELS

FIG19_OPTIMIZERS = ("adam", "adam+cg", "adam+sam", "adam+cm")
FIG19_LR = 1e-4
#: colours of fig19's optimizers (those of the lab's figures); display names from the registry
COLORS = {"adam": "tab:blue", "adam+cg": "tab:green", "adam+sam": "tab:orange", "adam+cm": "tab:red"}


def fig19_m_sharpness(runner: Runner) -> tuple[str, dict[str, Any]]:
    """m-sharpness per epoch (paper eq. 15, r = 0.05, m = the batch size, averaged over
    :attr:`Scale.m_sharpness_batches` fixed training mini-batches, eval mode) of
    :data:`FIG19_OPTIMIZERS` at lr 1e-4 (their defaults otherwise: C = 5, SAM rho = 0.05); the
    summary per run is the mean over epochs.  Returns (Markdown section, results)."""
    s = runner.scale
    runs = {
        opt: runner.run("fig19", opt, {"lr": FIG19_LR}, s.batch_size,
                        m_sharpness_batches=s.m_sharpness_batches)
        for opt in FIG19_OPTIMIZERS
    }
    avg = {o: [mean(r.curve("m_sharpness")) for r in rs] for o, rs in runs.items()}
    final = {o: [r.final("m_sharpness") for r in rs] for o, rs in runs.items()}
    loss = {o: [r.final("train_loss") for r in rs] for o, rs in runs.items()}
    acc = {o: [r.best_accuracy for r in rs] for o, rs in runs.items()}
    rows = [[o, *avg[o], mean(avg[o]), mean(final[o]), mean(loss[o]), mean(acc[o])]
            for o in FIG19_OPTIMIZERS]  # fmt: skip
    table = markdown_table(
        ["optimizer", *seed_header(s.seeds, "m-sharpness (epoch mean)"), "final m-sharpness (mean)",
         "final train loss (mean)", "best val acc % (mean)"], rows,
    )  # fmt: skip
    parts = {b: compare(avg["adam+cm"], avg[b]) for b in FIG19_OPTIMIZERS if b != "adam+cm"}
    if all(r == "lower" for r, _ in parts.values()):
        verdict = "agrees (Adam+CM below every baseline: "
    elif any(r == "higher" for r, _ in parts.values()):
        verdict = "does not agree (Adam+CM not below every baseline: "
    else:
        verdict = "inconclusive (not every difference is clear: "
    verdict += "; ".join(f"vs {b}: {r}, {why}" for b, (r, why) in parts.items()) + ")"
    ours = ", ".join(f"{o}: {num(mean(avg[o]))}" for o in FIG19_OPTIMIZERS) + \
        " (m-sharpness averaged over epochs, mean over seeds)."
    name = ARTIFACTS["fig19"] + ".png"
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for o, rs in runs.items():
        curves = [r.curve("m_sharpness") for r in rs]
        epochs = range(1, len(curves[0]) + 1)
        for c in curves:
            ax.plot(epochs, c, color=COLORS.get(o), alpha=0.3, lw=0.8)
        ax.plot(epochs, [mean(v) for v in zip(*curves)], "-o", color=COLORS.get(o),
                label=LABELS[o])  # fmt: skip
    epochs_axis(ax, f"m-sharpness (r=0.05, m={s.batch_size})", log=True)
    ax.set_title(f"Fig. 19 analogue: m-sharpness, lr {fmt(FIG19_LR)} ({TASK})", fontsize=10)
    fig.tight_layout()
    fig.savefig(runner.out / name, dpi=110)
    plt.close(fig)
    setup = setup_line(s, runner, f"lr {fmt(FIG19_LR)} for all, batch {s.batch_size}, "
                       f"defaults otherwise (C=5, decay 0.7; SAM rho 0.05); m-sharpness "
                       f"after every epoch on {s.m_sharpness_batches} fixed training "
                       f"mini-batches of m={s.batch_size}, one ascent step (SAM's "
                       f"first-order inner maximisation), eval mode", "fig19")  # fmt: skip
    note = ("with one ascent step the m-sharpness of a batch is r*|g| + r^2/2 * g'Hg/|g|^2 "
            "(g: the batch gradient, H: its Hessian), dominated by the gradient norm while the "
            "runs are far from a minimum, as here at lr 1e-4 after a few epochs (see the final "
            "training losses); the paper's curves span 100 epochs.")  # fmt: skip
    section = render_section("Fig. 19 analogue: m-sharpness during training", setup, [table],
                             [PAPER["fig19"]], ours, verdict, name, note)  # fmt: skip
    results = {"m_sharpness_epoch_mean": avg, "final_m_sharpness": final,
               "final_train_loss": loss, "best_val_accuracy": acc,
               "curves": {o: [r.curve("m_sharpness") for r in rs] for o, rs in runs.items()},
               "verdict": verdict, "figure": name}  # fmt: skip
    return section, results
