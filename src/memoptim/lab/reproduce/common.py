r"""Settings, hyperparameter tables and small helpers shared by the toy-reproduction modules.

A *job* is one optimizer configuration, ``(registry name, hyperparameters)``; an experiment
runs a mapping ``slot -> job`` (the slot names its result, e.g. ``"adam+cm"`` or
``"adam+cm C=5 decay=0.7"``) from the same starting points.  :func:`run_jobs` runs each
distinct job once (the lr-matched Adam controls map several slots to one job).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from memoptim.lab.toy import ToyRun, run_toy
from memoptim.progress import Progress

__all__ = [
    "DTYPE", "EQ9_DEFAULTS", "MARGIN", "START_BOXES", "TABLE11", "Job", "Settings",
    "escaped", "fmt", "lower", "md_table", "mean_std", "run_jobs", "starts",
]

DTYPE = torch.float64

#: One optimizer configuration: registry name and hyperparameters.
Job = tuple[str, dict[str, Any]]

#: Table 11 (best toy hyperparameters, identical for Goldstein-Price and Ackley).
TABLE11: dict[str, dict[str, Any]] = {
    "adam": {"lr": 0.1, "betas": (0.9, 0.99)},
    "adam+cg": {"lr": 0.1, "betas": (0.9, 0.99), "buffer_size": 5, "decay": 0.7},
    "adam+sam": {"lr": 0.1, "betas": (0.9, 0.99), "rho": 0.01},
    "adam+cm": {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 20, "decay": 0.99},
    "adam+sam+cm": {"lr": 0.1, "betas": (0.9, 0.999), "buffer_size": 20, "decay": 0.99,
                    "rho": 0.05},
}

#: Appendix A.2.2 defaults for the eq. 9 problems (lr 0.05).
EQ9_DEFAULTS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 0.05, "betas": (0.9, 0.99)},
    "adam+sam": {"lr": 0.05, "betas": (0.9, 0.99), "rho": 0.05},
    "adam+cg": {"lr": 0.05, "betas": (0.9, 0.99), "buffer_size": 5, "decay": 0.7},
    "adam+cm": {"lr": 0.05, "betas": (0.9, 0.99), "buffer_size": 5, "decay": 0.7},
}

#: Boxes the 2-D starting points are drawn from (uniformly), per surface.
START_BOXES: dict[str, tuple[float, float]] = {
    "goldstein-price": (-2.0, 2.0),  # the function's usual domain
    "levy": (-10.0, 10.0),  # the function's usual domain
    "ackley": (-2.5, 2.5),  # Fig. 4's loss curves start near 6, i.e. at radius ~2
    "ackley-rosenbrock": (-1.0, 4.0),  # around the documented minimum (2.1, 3.9) and the origin
}

#: "lower"/"higher" in a claim about means must hold by this fraction of the larger magnitude.
MARGIN = 0.01

#: The variants of Adam+CM evaluated beside ours (keys of :data:`memoptim.lab.reproduce.variants.VARIANTS`).
ALL_VARIANTS = ("authors", "nomem", "vg", "adam-lr3", "adam-lr10")


@dataclass
class Settings:
    """Sizes of the reproduction; :meth:`full` is the paper's, :meth:`quick_settings` a smoke test.

    ``variants``: which variants of Adam+CM to rerun the claims under (empty: none);
    ``vector_window``: the steps (first, last) over which the Figs. 11/12 buffer-vector
    measurements are averaged; ``vector_starts``: starting points of those measurements.
    """

    quick: bool = False
    steps: int = 500
    lr_drop_at: int = 250
    table_seeds: int = 20
    ackley_seeds: int = 10
    trajectory_starts: int = 4
    escape_points: int = 50
    sharpness_10d: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 100.0)
    sharpness_1d: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 100.0)
    buffer_sizes_1d: tuple[int, ...] = (5, 10, 20, 40)
    buffer_sizes_fig18: tuple[int, ...] = (5, 10, 20)
    cg_all_buffer_sizes: bool = True
    kappas: tuple[float, ...] = tuple(float(k) for k in (3, 10, 30, 100, 300, 1000, 3000, 10000))
    conv_grid: dict[str, int] = field(
        default_factory=lambda: {"n_grid": 100, "n_alpha": 40, "n_beta": 25})
    variants: tuple[str, ...] = ALL_VARIANTS
    vector_starts: int = 8
    vector_window: tuple[int, int] = (11, 100)

    @classmethod
    def full(cls, variants: bool = True) -> Settings:
        return cls(variants=ALL_VARIANTS if variants else ())

    @classmethod
    def quick_settings(cls, variants: bool = True) -> Settings:
        return cls(
            quick=True, steps=60, lr_drop_at=30, table_seeds=3, ackley_seeds=3,
            trajectory_starts=2, escape_points=8, cg_all_buffer_sizes=False,
            kappas=(10.0, 1000.0), conv_grid={"n_grid": 30, "n_alpha": 16, "n_beta": 10},
            variants=ALL_VARIANTS if variants else (), vector_starts=2, vector_window=(11, 40),
        )


def starts(surface: str, n: int) -> Tensor:
    """Run ``i``'s start: uniform in the surface's box with ``Generator().manual_seed(i)``, ``(n, 2)``."""
    lo, hi = START_BOXES[surface]
    pts = []
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        pts.append(lo + (hi - lo) * torch.rand(2, generator=g, dtype=DTYPE))
    return torch.stack(pts)


def mean_std(x: Tensor) -> tuple[float, float]:
    """Mean and population standard deviation."""
    return float(x.mean()), float(x.std(unbiased=False))


def job_key(job: Job) -> str:
    """A canonical string of a job (equal jobs run once)."""
    return job[0] + json.dumps(job[1], sort_keys=True, default=str)


def unique_jobs(jobs: dict[str, Job]) -> int:
    """Number of distinct jobs among ``jobs``."""
    return len({job_key(j) for j in jobs.values()})


def run_jobs(fn: Callable[[Tensor], Tensor], x0: Tensor, jobs: dict[str, Job], s: Settings,
             bar: Progress, **kw: Any) -> dict[str, ToyRun]:
    """:func:`~memoptim.lab.toy.run_toy` of every slot's job from ``x0`` (``s.steps`` steps, LR
    divided by 10 at ``s.lr_drop_at`` unless ``lr_drop_at`` is given); equal jobs run once."""
    kw.setdefault("lr_drop_at", s.lr_drop_at)
    done: dict[str, ToyRun] = {}
    out = {}
    for slot, (name, hp) in jobs.items():
        k = job_key((name, hp))
        if k not in done:
            done[k] = run_toy(fn, x0, name, hp, steps=s.steps, progress=bar, **kw)
        out[slot] = done[k]
    return out


def escaped(final: Tensor) -> Tensor:
    """A run escapes (reaches the flat minimum of eq. 9) iff every final coordinate is below 1/2."""
    return (final < 0.5).all(dim=-1)


def lower(a: float, b: float) -> bool:
    """``a`` is lower than ``b`` by more than :data:`MARGIN` of the larger magnitude."""
    return b - a > MARGIN * max(abs(a), abs(b))


def fmt(x: float | None, nd: int = 2) -> str:
    """``x`` with ``nd`` decimals, or an en dash for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{nd}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (a ``|`` inside a cell is escaped as ``\\|``)."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [row(header), "|" + "---|" * len(header)]
    lines += [row(r) for r in rows]
    return "\n".join(lines)
