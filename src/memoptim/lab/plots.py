"""Matplotlib figures of the exploration lab (Agg backend, PNG files).

matplotlib is imported lazily (it is an optional extra: ``pip install memoptim[lab]``).
Every function draws one figure, saves it to ``out`` (parent directories are
created) and returns the path.  Colours are fixed per optimizer name so that all
figures of a report agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from memoptim.registry import LABELS as _REGISTRY_LABELS

__all__ = [
    "COLORS",
    "LABELS",
    "MARKERS",
    "STYLES",
    "legend_outside",
    "plot_buffer_diagnostics",
    "plot_buffer_vectors",
    "plot_convergence_rates",
    "plot_escape_ratio",
    "plot_loss_curves",
    "plot_sharp_flat_1d",
    "plot_trajectories",
    "style_of",
]

#: Display names of the registry's optimizers (the registry's own).
LABELS = _REGISTRY_LABELS
#: Colours in the order the registry's optimizers take them: tab10, then tab20's light shades,
#: then darker ones; each optimizer gets its own.
_PALETTE = (
    "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
    "tab:gray", "tab:olive", "tab:cyan", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5", "black", "navy", "darkgreen",
    "maroon", "indigo", "teal",
)
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d")
#: Fixed colour per optimizer, from its place in the registry (stable across figures and runs).
COLORS: dict[str, str] = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(_REGISTRY_LABELS)}
#: Fixed marker per optimizer, from its place in the registry: with the colour, a distinct pair.
MARKERS: dict[str, str] = {name: _MARKERS[i % len(_MARKERS)] for i, name in enumerate(_REGISTRY_LABELS)}


#: Line style and width per optimizer, so that curves that coincide (Adam and Adam+SAM with a
#: small rho often do, and Adam+CG's often follows Adam's) stay visible: Adam is drawn wide,
#: translucent and on top (:data:`ON_TOP`), so the curves under it show through; Adam+SAM dashed.
STYLES: dict[str, tuple[str, float]] = {
    "adam": ("-", 3.2), "adamw": ("-", 3.2), "adam+sam": ("--", 1.4), "adam+sam+cm": ("--", 1.4),
}
#: Optimizers drawn on top of the others.
ON_TOP = ("adam", "adamw")


def _style(name: str) -> tuple[str, float]:
    return STYLES.get(name.split(" ")[0], ("-", 1.4))


def style_of(name: str, i: int = 0) -> dict[str, Any]:
    """Matplotlib keywords of an optimizer's series (``color``, ``marker``, ``linestyle``,
    ``linewidth``, ``zorder``); a series name ``"<registry name> <suffix>"`` takes its registry
    name's; an unknown name the ``i``-th default colour."""
    ls, lw = _style(name)
    first = name.split(" ")[0]
    top = first in ON_TOP
    return {"color": _color(name, i), "marker": MARKERS.get(first, _MARKERS[i % len(_MARKERS)]),
            "linestyle": ls, "linewidth": lw, "zorder": 3 if top else 2, "alpha": 0.6 if top else 1.0}


def legend_outside(ax: Any, fontsize: int = 7, ncol: int = 1) -> None:
    """The legend to the right of the axes, outside the data."""
    ax.legend(fontsize=fontsize, ncol=ncol, loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0.0, frameon=False)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _label(name: str) -> str:
    """Display name; a series name ``"<registry name> <suffix>"`` keeps its suffix."""
    first, _, rest = name.partition(" ")
    return LABELS.get(name, f"{LABELS.get(first, first)} {rest}".strip())


def _color(name: str, i: int) -> str:
    return COLORS.get(name.split(" ")[0], f"C{i % 10}")


def _save(fig: Any, out: str | Path, rect: tuple[float, float, float, float] | None = None,
          tight: bool = True) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def plot_trajectories(
    fn: Callable[[Tensor], Tensor],
    trajectories: Mapping[str, Tensor | np.ndarray],
    out: str | Path,
    *,
    box: tuple[float, float, float, float],
    minimum: Sequence[float] | None = None,
    panels: Sequence[int] | None = None,
    title: str = "",
    resolution: int = 200,
) -> Path:
    """2-D trajectories on a contour plot, one panel per starting point.

    Args:
        fn: the surface, ``(..., 2) -> (...)``.
        trajectories: optimizer name -> iterates of shape ``(T + 1, N, 2)`` (same starts).
        out: PNG path.
        box: ``(xmin, xmax, ymin, ymax)`` of the contour plot.
        minimum: global minimiser, drawn as a black diamond.
        panels: which runs (columns of the trajectories) to draw, one panel each (default all).
        title: figure title.
    """
    plt = _plt()
    first = _np(next(iter(trajectories.values())))
    idx = list(range(first.shape[1])) if panels is None else list(panels)
    ncol = min(len(idx), 4)
    nrow = math.ceil(len(idx) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.0 * ncol, 3.7 * nrow), squeeze=False)
    xs = torch.linspace(box[0], box[1], resolution, dtype=torch.float64)
    ys = torch.linspace(box[2], box[3], resolution, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        Z = _np(fn(torch.stack([X, Y], -1)))
    for k, run in enumerate(idx):
        ax = axes[k // ncol][k % ncol]
        ax.contourf(_np(X), _np(Y), Z, levels=30, cmap="viridis", alpha=0.85)
        ax.contour(_np(X), _np(Y), Z, levels=15, colors="k", linewidths=0.3, alpha=0.4)
        for i, (name, traj) in enumerate(trajectories.items()):
            t = _np(traj)[:, run]
            kw = style_of(name, i)
            ax.plot(t[:, 0], t[:, 1], label=_label(name), markevery=[len(t) - 1], ms=6, mec="k", **kw)
        t0 = first[0, run]
        ax.plot(t0[0], t0[1], "ks", ms=7)
        if minimum is not None:
            ax.plot(minimum[0], minimum[1], "kD", ms=7, mfc="w")
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.set_title(f"start ({t0[0]:.2f}, {t0[1]:.2f})", fontsize=9)
    for k in range(len(idx), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    right = 1 - 1.7 / fig.get_size_inches()[0]  # the legend's column, outside the panels
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right, 0.5), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, out, rect=(0, 0, right, 1))


def plot_loss_curves(
    curves: Mapping[str, Tensor | np.ndarray],
    out: str | Path,
    *,
    title: str = "",
    ylabel: str = "loss",
    xlabel: str = "step",
    mark_step: int | None = None,
) -> Path:
    """Mean loss over runs with a +-1 standard deviation band; ``curves[name]`` is ``(T + 1, N)``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    for i, (name, c) in enumerate(curves.items()):
        a = _np(c)
        mean, std = a.mean(1), a.std(1)
        steps = np.arange(a.shape[0])
        kw = style_of(name, i)
        ax.plot(steps, mean, label=_label(name), markevery=max(1, len(steps) // 8), ms=5, **kw)
        ax.fill_between(steps, mean - std, mean + std, color=kw["color"], alpha=0.12, lw=0)
    if mark_step is not None:
        ax.axvline(mark_step, color="k", ls=":", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    legend_outside(ax, fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_escape_ratio(
    ratios: Mapping[str, Mapping[str, float]],
    out: str | Path,
    *,
    title: str = "",
    paper: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Escape ratio against the sharpness coefficient ``s`` (categorical axis), one line per series.

    ``ratios[label][str(s)]``; series labels may carry a suffix (``"adam+cm C=20"``),
    the first word picks the colour.  ``paper`` (same layout) is drawn dashed.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    by_name = len({n.split(" ")[0] for n in ratios}) == len(ratios)
    for i, (name, r) in enumerate(ratios.items()):
        ss = list(r)
        kw = style_of(name, i)
        if not by_name:  # several series of one optimizer (e.g. buffer sizes): one colour and marker each
            kw.update(color=f"C{i % 10}", marker=_MARKERS[i % len(_MARKERS)])
        color = kw["color"]
        first, _, rest = name.partition(" ")
        ax.plot(range(len(ss)), [r[s] for s in ss], label=f"{_label(first)} {rest}".strip(), **kw)
        if paper and name in paper:
            ax.plot(range(len(ss)), [paper[name].get(s, math.nan) for s in ss], "x--",
                    color=color, alpha=0.6)
    ss = list(next(iter(ratios.values())))
    ax.set_xticks(range(len(ss)), ss)
    ax.set_xlabel("sharpness coefficient s")
    ax.set_ylabel("escape ratio")
    ax.set_ylim(-0.03, 1.03)
    legend_outside(ax, fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_sharp_flat_1d(
    runs: Mapping[str, Tensor | np.ndarray],
    starts: Sequence[float],
    sharpness: Sequence[float],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """Fig. 5 layout: rows = starting points, columns = (optimizer, s) pairs.

    ``runs[name]`` has shape ``(T + 1, len(starts) * len(sharpness), 1)``, run index
    ``i * len(sharpness) + j`` for start ``i`` and coefficient ``j``.  Each panel shows
    :math:`f_s` with the iterates coloured by time; the background is green when the
    final point is in the flat basin (:math:`x < 1/2`), red otherwise.
    """
    from memoptim.lab.surfaces import sharp_flat

    plt = _plt()
    names = list(runs)
    ncol = len(names) * len(sharpness)
    fig, axes = plt.subplots(len(starts), ncol, figsize=(1.9 * ncol, 1.8 * len(starts)),
                             squeeze=False, sharex=True, sharey=True)
    xs = torch.linspace(-2.5, 3.5, 400, dtype=torch.float64).unsqueeze(-1)
    for a, name in enumerate(names):
        traj = _np(runs[name])
        for j, s in enumerate(sharpness):
            fx = _np(sharp_flat(xs, s))
            for i, _ in enumerate(starts):
                ax = axes[i][a * len(sharpness) + j]
                t = traj[:, i * len(sharpness) + j, 0]
                ax.plot(_np(xs[:, 0]), fx, "k-", lw=0.8)
                ft = _np(sharp_flat(torch.as_tensor(t, dtype=torch.float64).unsqueeze(-1), s))
                ax.scatter(t, ft, c=np.arange(t.size), cmap="plasma", s=4, zorder=3)
                ax.axvline(t[-1], color="k", lw=0.8)
                ax.set_facecolor("#d8f5d0" if t[-1] < 0.5 else "#f8d0d0")
                ax.label_outer()
                if i == 0:
                    ax.set_title(f"{_label(name)}, s={s:g}", fontsize=8)
                if a == 0 and j == 0:
                    ax.set_ylabel(f"x0={starts[i]:g}", fontsize=8)
    ax0 = axes[0][0]  # the axes are shared: limits and (few, fixed) ticks once for all panels
    ax0.set_ylim(-0.3, 6.5)
    ax0.set_xlim(-2.5, 3.5)
    ax0.set_xticks([-2, 0, 1, 3])
    ax0.set_yticks([0, 3, 6])
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
    # fixed margins (in inches): tight_layout over dozens of panels costs seconds
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.55 / w, right=1 - 0.1 / w, bottom=0.35 / h,
                        top=1 - (0.6 if title else 0.3) / h, wspace=0.08, hspace=0.1)
    if title:
        fig.suptitle(title)
    return _save(fig, out, tight=False)


def plot_convergence_rates(
    kappas: Sequence[float],
    series: Mapping[str, Sequence[float]],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    r"""Fig. 3: :math:`1 - \rho^*` against the condition number (log-log).

    Series whose label contains ``"beta=0.9"`` are dashed (fixed :math:`\beta`).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.6, 4.0))
    for i, (name, vals) in enumerate(series.items()):
        color = "tab:blue" if name.lower().startswith("momentum") else "tab:red"
        ls = "--" if "beta=0.9" in name else "-"
        y = np.maximum(1.0 - np.asarray(vals, dtype=float), 1e-12)
        ax.loglog(kappas, y, ls, color=color if len(series) <= 4 else f"C{i}",
                  marker=_MARKERS[i % len(_MARKERS)], ms=4, label=name)
    ax.set_xlabel(r"condition number $\kappa = L/\mu$")
    ax.set_ylabel(r"$1 - \rho^*$")
    legend_outside(ax, fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_buffer_diagnostics(
    diagnostics: Mapping[str, Mapping[str, Tensor | np.ndarray]],
    out: str | Path,
    *,
    title: str = "",
) -> Path:
    """Fig. 8-style panels (distance, buffer variance, buffer cosine similarity) against step.

    ``diagnostics[name]`` is :attr:`memoptim.lab.toy.ToyRun.diagnostics` (``steps`` ``(K,)``,
    metrics ``(K, N)``); the mean over runs is drawn (NaNs ignored).
    """
    plt = _plt()
    metrics = [("distance", "distance from start"), ("variance", "buffer variance"),
               ("cosine", "buffer cosine similarity")]
    fig, axes = plt.subplots(1, 3, figsize=(14.5, 3.6))
    for i, (name, d) in enumerate(diagnostics.items()):
        steps = _np(d["steps"])
        for ax, (key, label) in zip(axes, metrics):
            vals = _np(d[key])
            finite = np.isfinite(vals)
            count = finite.sum(axis=1)
            total = np.where(finite, vals, 0.0).sum(axis=1)
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
            ax.plot(steps, mean, label=_label(name), markevery=max(1, len(steps) // 8), ms=5,
                    **style_of(name, i))
            ax.set_xlabel("step")
            ax.set_ylabel(label)
    axes[1].set_yscale("log")
    legend_outside(axes[2], fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def _vector_panel(ax: Any, fn: Callable[[Tensor], Tensor], snaps: Sequence[Any],
                  resolution: int) -> None:
    """One panel of :func:`plot_buffer_vectors`: contour, path, and the vectors at each step."""
    pts = np.array([_np(p) for sn in snaps for p in (sn.point, sn.next_point)])
    lo, hi = pts.min(0), pts.max(0)
    half = max(float((hi - lo).max()) / 2 * 1.35, 0.25)
    c = (lo + hi) / 2
    box = (c[0] - half, c[0] + half, c[1] - half, c[1] + half)
    xs = torch.linspace(box[0], box[1], resolution, dtype=torch.float64)
    ys = torch.linspace(box[2], box[3], resolution, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        Z = _np(fn(torch.stack([X, Y], -1)))
    ax.contourf(_np(X), _np(Y), Z, levels=25, cmap="viridis", alpha=0.8)
    path = np.array([_np(snaps[0].point)] + [_np(sn.next_point) for sn in snaps])
    ax.plot(path[:, 0], path[:, 1], "-o", color="darkorange", ms=3, lw=1.5, zorder=3)
    vecs = [v for sn in snaps for v in (*sn.items, sn.new, *([sn.term] if sn.term is not None else []))]
    top = max((float(torch.linalg.vector_norm(v)) for v in vecs), default=1.0) or 1.0
    k = 0.45 * half / top  # the longest vector spans ~45% of the half-width
    for sn in snaps:
        x, y = _np(sn.point)
        for item in sn.items:
            u = _np(item) * k
            ax.plot([x, x + u[0]], [y, y + u[1]], "-", color="white", lw=0.7, alpha=0.8, zorder=4)
        for v, col in ((sn.term, "black"), (sn.new, "limegreen")):
            if v is not None:
                u = _np(v) * k
                ax.annotate("", (x + u[0], y + u[1]), (x, y), zorder=5,
                            arrowprops={"arrowstyle": "->", "color": col, "lw": 1.6})
    ax.set_xlim(box[0], box[1])
    ax.set_ylim(box[2], box[3])
    ax.tick_params(labelsize=6)


def plot_buffer_vectors(
    fn: Callable[[Tensor], Tensor],
    snapshots: Mapping[str, Sequence[Any]],
    out: str | Path,
    *,
    per_step: bool,
    title: str = "",
    resolution: int = 90,
) -> Path:
    """Figs. 2, 11, 12: the path (orange) over a zoomed contour plot and, at each step, the
    buffer items (thin white lines), the buffer term of the aggregate (black arrow) and the new
    gradient or momentum (green arrow), drawn as stored (gradient direction: the step goes
    against the aggregate) from the step's starting point, with one scale per panel.

    ``snapshots[name]`` is a list of :class:`memoptim.lab.buffer_vectors.BufferSnapshot` (one
    run, consecutive steps).  ``per_step``: one row per optimizer and one panel per step;
    otherwise one panel per optimizer (side by side) with all steps.
    """
    plt = _plt()
    from matplotlib.lines import Line2D

    names = list(snapshots)
    nrow, ncol = (len(names), max(len(v) for v in snapshots.values())) if per_step else (1, len(names))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.1 * nrow + 0.5), squeeze=False)
    for r, name in enumerate(names):
        snaps = list(snapshots[name])
        groups = [[sn] for sn in snaps] if per_step else [snaps]
        for cidx, group in enumerate(groups):
            ax = axes[r][cidx] if per_step else axes[0][r]
            _vector_panel(ax, fn, group, resolution)
            steps = f"step {group[0].step}" if len(group) == 1 else f"steps {group[0].step}-{group[-1].step}"
            ax.set_title(f"{_label(name)}, {steps}", fontsize=8)
    handles = [Line2D([], [], color="white", lw=0.8, label="buffer items"),
               Line2D([], [], color="black", lw=1.6, label="buffer mean (aggregate term)"),
               Line2D([], [], color="limegreen", lw=1.6, label="new gradient (CG) / momentum (CM)")]
    fig.legend(handles=handles, loc="lower center", ncol=3 if ncol > 2 else 1, fontsize=7,
               facecolor="0.6")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, out, rect=(0, (0.3 if ncol > 2 else 0.75) / fig.get_size_inches()[1], 1, 1))

