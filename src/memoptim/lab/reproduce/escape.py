r"""The sharp/flat experiments on eq. 9, :math:`f_s(x) = \sum_d \min(x_d^2, s(x_d-1)^2)`.

* **Fig. 5** -- 1-D trajectories, s in {5, 10, 100}, x0 in {-2, 2, 3} (appendix defaults);
* **Fig. 6** -- 10-D escape ratio, ``s.escape_points`` starts uniform in [-5, 5]^10,
  s in {2, 3, 5, 10, 100}, C = 20, decay 0.99;
* **Fig. 7** -- 1-D escape ratio, s in {1, 2, 3, 5, 10, 100}, C in {5, 10, 20, 40};
* **Fig. 18** -- Fig. 5 with decay 0.99 and C in {5, 10, 20}, Adam+CG vs Adam+CM.

A run *escapes* when every coordinate of its final point is below 1/2 (closer to the flat
minimum 0 than to the sharp minimum 1).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor

from memoptim.lab.reproduce.common import (
    DTYPE,
    EQ9_DEFAULTS,
    Job,
    Settings,
    escaped,
    run_jobs,
    unique_jobs,
)
from memoptim.lab.surfaces import sharp_flat
from memoptim.progress import Progress

__all__ = [
    "FIG5_SHARPNESS", "FIG5_STARTS", "fig5", "fig5_jobs", "fig6", "fig6_jobs", "fig7",
    "fig7_jobs", "fig18", "fig18_jobs",
]

FIG5_STARTS = (-2.0, 2.0, 3.0)
FIG5_SHARPNESS = (5.0, 10.0, 100.0)


def _fig5_problem() -> tuple[Any, Tensor]:
    x0 = torch.tensor([[x] for x in FIG5_STARTS for _ in FIG5_SHARPNESS], dtype=DTYPE)
    sv = torch.tensor([sv for _ in FIG5_STARTS for sv in FIG5_SHARPNESS], dtype=DTYPE)
    return partial(sharp_flat, s=sv), x0


def _fig5_cells(final: Tensor) -> dict[str, Any]:
    """Per (start, s) cell: final x and whether it escaped; totals."""
    cells = {}
    for i, x in enumerate(FIG5_STARTS):
        for j, sh in enumerate(FIG5_SHARPNESS):
            xf = float(final[i * len(FIG5_SHARPNESS) + j, 0])
            cells[f"x0={x:g},s={sh:g}"] = {"final_x": xf, "escaped": xf < 0.5}
    starts_ = [x for x in FIG5_STARTS for _ in FIG5_SHARPNESS]
    return {"cells": cells, "escapes": sum(c["escaped"] for c in cells.values()),
            "nearest_minimum": sum((c["final_x"] < 0.5) == (x0 < 0.5)
                                   for c, x0 in zip(cells.values(), starts_))}


def fig5_jobs(s: Settings) -> dict[str, Job]:
    """Adam, Adam+CG, Adam+CM with the appendix defaults (C = 5, decay 0.7)."""
    return {k: (k, dict(EQ9_DEFAULTS[k])) for k in ("adam", "adam+cg", "adam+cm")}


def fig5(s: Settings, jobs: dict[str, Job], progress: bool) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Fig. 5: ``out[slot]`` = cells, escapes (of 9), cells ending at the nearest minimum."""
    return _sharp_flat_cells(s, jobs, progress, "Fig. 5 (1-D f_s)")


def _sharp_flat_cells(s: Settings, jobs: dict[str, Job], progress: bool,
                      desc: str) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Run ``jobs`` on the 1-D ``f_s`` grid of starts and sharpness; the cells and trajectories."""
    fn, x0 = _fig5_problem()
    bar = Progress(unique_jobs(jobs) * s.steps, desc, enabled=progress)
    runs = run_jobs(fn, x0, jobs, s, bar)
    bar.close()
    return {k: _fig5_cells(r.final) for k, r in runs.items()}, {k: r.trajectory for k, r in runs.items()}


def fig18_jobs(s: Settings) -> dict[str, Job]:
    """Adam+CG and Adam+CM with decay 0.99 and C in ``s.buffer_sizes_fig18``."""
    return {f"{n} C={C}": (n, {**EQ9_DEFAULTS[n], "buffer_size": C, "decay": 0.99})
            for C in s.buffer_sizes_fig18 for n in ("adam+cg", "adam+cm")}


def fig18(s: Settings, jobs: dict[str, Job], progress: bool) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Fig. 18: ``out[slot]`` (slot ``"adam+cm C=10"`` etc.) as :func:`fig5`."""
    return _sharp_flat_cells(s, jobs, progress, "Fig. 18 (1-D f_s, decay 0.99)")


def fig6_jobs(s: Settings) -> dict[str, Job]:
    """Appendix defaults; Adam+CG / Adam+CM with C = 20, decay 0.99 (Fig. 6)."""
    hp = {k: dict(v) for k, v in EQ9_DEFAULTS.items()}
    hp["adam+cg"].update(buffer_size=20, decay=0.99)
    hp["adam+cm"].update(buffer_size=20, decay=0.99)
    return {k: (k, hp[k]) for k in ("adam", "adam+sam", "adam+cg", "adam+cm")}


def _escape_runs(s: Settings, jobs: dict[str, Job], progress: bool, dim: int,
                 sharpness: tuple[float, ...], desc: str) -> dict[str, Any]:
    """Run ``jobs`` on ``f_s`` in ``dim`` dimensions from ``s.escape_points`` uniform starts in
    ``[-5, 5]^dim`` (``Generator().manual_seed(0)``), each start once per sharpness value."""
    g = torch.Generator().manual_seed(0)
    pts = -5 + 10 * torch.rand(s.escape_points, dim, generator=g, dtype=DTYPE)
    x0 = pts.repeat(len(sharpness), 1)
    sv = torch.tensor(sharpness, dtype=DTYPE).repeat_interleave(s.escape_points)
    bar = Progress(unique_jobs(jobs) * s.steps, desc, enabled=progress)
    runs = run_jobs(partial(sharp_flat, s=sv), x0, jobs, s, bar)
    bar.close()
    return runs


def fig6(s: Settings, jobs: dict[str, Job], progress: bool) -> dict[str, Any]:
    """Fig. 6: ``ratio[slot][s]`` (all coordinates escape) and ``coordinate_ratio[slot][s]``."""
    runs = _escape_runs(s, jobs, progress, 10, s.sharpness_10d, "Fig. 6 (10-D escape)")
    ratio: dict[str, dict[str, float]] = {}
    coord: dict[str, dict[str, float]] = {}
    for k, r in runs.items():
        fin = r.final.reshape(len(s.sharpness_10d), s.escape_points, 10)
        ratio[k] = {f"{v:g}": float(escaped(fin[i]).double().mean())
                    for i, v in enumerate(s.sharpness_10d)}
        coord[k] = {f"{v:g}": float((fin[i] < 0.5).double().mean())
                    for i, v in enumerate(s.sharpness_10d)}
    return {"ratio": ratio, "coordinate_ratio": coord,
            "hyperparameters": {k: j[1] for k, j in jobs.items()}}


def fig7_jobs(s: Settings, cg_sizes: tuple[int, ...] | None = None) -> dict[str, Job]:
    """Slots ``"<name> C=<C>"`` (``C=0`` for Adam and Adam+SAM), appendix defaults; Adam+CG at
    ``cg_sizes`` (default: every C, or C = 10 only in quick mode)."""
    if cg_sizes is None:
        cg_sizes = s.buffer_sizes_1d if s.cg_all_buffer_sizes else (10,)
    jobs: dict[str, Job] = {"adam C=0": ("adam", dict(EQ9_DEFAULTS["adam"])),
                            "adam+sam C=0": ("adam+sam", dict(EQ9_DEFAULTS["adam+sam"]))}
    for name, sizes in (("adam+cm", s.buffer_sizes_1d), ("adam+cg", cg_sizes)):
        for C in sizes:
            jobs[f"{name} C={C}"] = (name, {**EQ9_DEFAULTS[name], "buffer_size": C})
    return jobs


def fig7(s: Settings, jobs: dict[str, Job], progress: bool) -> dict[str, dict[str, dict[str, float]]]:
    """Fig. 7: ``ratio[name][C][s]``, the escape ratio of slot ``"<name> C=<C>"``."""
    runs = _escape_runs(s, jobs, progress, 1, s.sharpness_1d, "Fig. 7 (1-D escape)")
    ratio: dict[str, dict[str, dict[str, float]]] = {}
    for slot, r in runs.items():
        name, _, C = slot.partition(" C=")
        fin = r.final.reshape(len(s.sharpness_1d), s.escape_points, 1)
        ratio.setdefault(name, {})[C] = {
            f"{v:g}": float(escaped(fin[k]).double().mean()) for k, v in enumerate(s.sharpness_1d)}
    return ratio
