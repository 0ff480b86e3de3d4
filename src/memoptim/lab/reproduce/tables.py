r"""The 2-D surface experiments: Table 1, Table 5, Figs. 4/16 (Ackley) and the Fig. 14 trajectories.

Each experiment is a ``*_jobs(s)`` function giving the paper's slots and optimizer
configurations, and a runner taking any such mapping (the variants substitute some slots).

* **Table 1** -- final loss and sharpness (largest eigenvalue of the exact 2x2 Hessian at the
  final point) on log-Goldstein-Price (eq. 12) and Levy (eq. 13, d = 2), mean over
  ``s.table_seeds`` starts;
* **Table 5** -- Adam+CG / Adam+CM with (C, lambda) in {(5, 0.7), (5, 0.99), (20, 0.99)} on Levy;
* **Figs. 4 / 16** -- Ackley (eq. 11) losses with and without the LR drop; Fig. 8-style buffer
  diagnostics of the base Adam+CG / Adam+CM runs;
* **Fig. 14** -- Goldstein-Price trajectories with the Table 11 settings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from memoptim.lab.reproduce.common import (
    TABLE11,
    Job,
    Settings,
    mean_std,
    run_jobs,
    starts,
    unique_jobs,
)
from memoptim.lab.sharpness import batched_hessian_eigenvalues
from memoptim.lab.surfaces import ackley, goldstein_price, levy
from memoptim.progress import Progress

__all__ = [
    "ACKLEY_OPTIMIZERS", "TABLE1_OPTIMIZERS", "ackley_experiment", "ackley_jobs",
    "gp_trajectories", "table1", "table1_jobs", "table5", "table5_jobs",
]

TABLE1_OPTIMIZERS = ("adam", "adam+sam", "adam+cg", "adam+cm")
ACKLEY_OPTIMIZERS = ("adam", "adam+cg", "adam+sam", "adam+cm", "adam+sam+cm")
_TABLE1_SURFACES = {"goldstein_price": (goldstein_price, "goldstein-price"), "levy": (levy, "levy")}
_TABLE5 = (("adam+cg", 5, 0.7), ("adam+cg", 5, 0.99), ("adam+cg", 20, 0.99),
           ("adam+cm", 5, 0.7), ("adam+cm", 5, 0.99), ("adam+cm", 20, 0.99))


def _final_stats(fn: Any, final: Tensor, final_loss: Tensor) -> dict[str, float]:
    sharp = batched_hessian_eigenvalues(fn, final)[:, -1]
    lm, ls = mean_std(final_loss)
    sm, ss = mean_std(sharp)
    return {"loss": lm, "sharpness": sm, "loss_std": ls, "sharpness_std": ss,
            "n": int(final.shape[0])}


def table1_jobs(s: Settings) -> dict[str, Job]:
    """Table 11 settings, with C = 20, decay 0.99 for Adam+CG and Adam+CM (Table 1 caption, Table 5)."""
    hp = {k: dict(TABLE11[k]) for k in TABLE1_OPTIMIZERS}
    hp["adam+cg"].update(buffer_size=20, decay=0.99)
    hp["adam+cm"].update(buffer_size=20, decay=0.99)
    return {k: (k, hp[k]) for k in TABLE1_OPTIMIZERS}


def table1(s: Settings, jobs: dict[str, Job], progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Table 1: ``out[surface][slot]`` = mean/std of final loss and sharpness; extra: trajectories."""
    out: dict[str, Any] = {}
    traj: dict[str, Any] = {}
    bar = Progress(len(_TABLE1_SURFACES) * unique_jobs(jobs) * s.steps, "Table 1", enabled=progress)
    for key, (fn, sname) in _TABLE1_SURFACES.items():
        runs = run_jobs(fn, starts(sname, s.table_seeds), jobs, s, bar)
        out[key] = {k: _final_stats(fn, r.final, r.final_loss) for k, r in runs.items()}
        traj[key] = {k: r.trajectory for k, r in runs.items()}
    bar.close()
    return out, {"trajectories": traj, "hyperparameters": {k: j[1] for k, j in jobs.items()}}


def table5_jobs(s: Settings) -> dict[str, Job]:
    """The six (optimizer, C, decay) settings of Table 5, Table 11 otherwise."""
    return {f"{n} C={C} decay={lam:g}": (n, {**TABLE11[n], "buffer_size": C, "decay": lam})
            for n, C, lam in _TABLE5}


def table5(s: Settings, jobs: dict[str, Job], progress: bool) -> dict[str, Any]:
    """Table 5 on Levy: ``out[slot]`` with the slot's base optimizer, C and decay."""
    bar = Progress(unique_jobs(jobs) * s.steps, "Table 5", enabled=progress)
    runs = run_jobs(levy, starts("levy", s.table_seeds), jobs, s, bar)
    bar.close()
    out = {}
    for k, r in runs.items():
        base, C, lam = next((n, C, lam) for n, C, lam in _TABLE5 if k == f"{n} C={C} decay={lam:g}")
        out[k] = {"optimizer": base, "run_as": jobs[k][0], "C": C, "decay": lam,
                  **_final_stats(levy, r.final, r.final_loss)}
    return out


def ackley_jobs(s: Settings) -> dict[str, Job]:
    """Table 11 settings for the five optimizers of Fig. 4."""
    return {k: (k, dict(TABLE11[k])) for k in ACKLEY_OPTIMIZERS}


def _ackley_cell(run: Any) -> dict[str, Any]:
    lm, ls = mean_std(run.final_loss)
    return {"final_loss": lm, "final_loss_std": ls,
            "mean_loss_last_50": float(run.losses[-50:].mean()),
            "fraction_near_global_min": float((run.final.norm(dim=1) < 0.5).double().mean()),
            "curve_mean_every_10": [float(v) for v in run.losses.mean(1)[::10]]}


def ackley_experiment(s: Settings, jobs: dict[str, Job], progress: bool,
                      diagnostics: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Figs. 4 / 16: ``out[mode][slot]`` for mode ``with_lr_decay`` and ``constant_lr``; extra:
    loss curves, trajectories and (``diagnostics``) buffer diagnostics of the CG/CM slots."""
    x0 = starts("ackley", s.ackley_seeds)
    bar = Progress(2 * unique_jobs(jobs) * s.steps, "Fig. 4/16 (Ackley)", enabled=progress)
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {"curves": {}, "trajectories": {}, "diagnostics": {}}
    every = max(s.steps // 100, 1)
    for mode, drop in (("with_lr_decay", s.lr_drop_at), ("constant_lr", None)):
        diag_slots = {"adam+cg", "adam+cm"} if (diagnostics and mode == "with_lr_decay") else set()
        out[mode], extra["curves"][mode] = {}, {}
        for slot, job in jobs.items():
            run = run_jobs(ackley, x0, {slot: job}, s, bar, lr_drop_at=drop,
                           diagnostics_every=every if slot in diag_slots else 0)[slot]
            out[mode][slot] = _ackley_cell(run)
            extra["curves"][mode][slot] = run.losses
            if mode == "with_lr_decay":
                extra["trajectories"][slot] = run.trajectory
            if slot in diag_slots:
                d = run.diagnostics
                extra["diagnostics"][slot] = d
                out[mode][slot]["buffer_final"] = {
                    k: float(torch.nanmean(v[-1])) for k, v in d.items() if k != "steps"}
    bar.close()
    return out, extra


def gp_trajectories(s: Settings, progress: bool) -> dict[str, Tensor]:
    """Fig. 14: Goldstein-Price trajectories of the four Table 1 optimizers, Table 11 settings."""
    jobs = {k: (k, dict(TABLE11[k])) for k in TABLE1_OPTIMIZERS}
    bar = Progress(len(jobs) * s.steps, "Fig. 14 (GP, Table 11)", enabled=progress)
    runs = run_jobs(goldstein_price, starts("goldstein-price", s.trajectory_starts), jobs, s, bar)
    bar.close()
    return {k: r.trajectory for k, r in runs.items()}
