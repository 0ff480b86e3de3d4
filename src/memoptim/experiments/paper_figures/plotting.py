"""Matplotlib helpers shared by the artifacts' figures (imported when a figure is drawn, so that
the package imports without matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memoptim.experiments.paper_figures.verdicts import mean


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only saved)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def scatter_seeds(ax: Any, xs: Sequence[float], per_seed: Sequence[Sequence[float]],
                  color: str, label: str) -> None:  # fmt: skip
    """Seed values as dots, their mean as a line with markers."""
    for x, vals in zip(xs, per_seed):
        ax.plot([x] * len(vals), vals, "o", color=color, alpha=0.35, ms=4)
    ax.plot(xs, [mean(v) for v in per_seed], "-s", color=color, label=label)
    ax.set_xlim(min(xs) - 0.4, max(xs) + 0.4)


def epochs_axis(ax: Any, ylabel: str, log: bool = False) -> None:
    """Label ``ax`` as a per-epoch curve (integer epochs, optional log scale, grid, legend)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
