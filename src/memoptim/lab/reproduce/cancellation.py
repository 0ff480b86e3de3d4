r"""Figs. 2, 11, 12 analogues: buffer vectors of Adam+CG and Adam+CM on a toy surface.

For every figure the two optimizers run from ``s.vector_starts`` starting points of the
surface's box (Table 11 hyperparameters, constant LR) and, at each step of the figure's
window, :func:`memoptim.lab.buffer_vectors.trace_buffer_vectors` reads the buffer items,
the buffer term :math:`\bar b` of the aggregate and the new vector :math:`u_t`
(:math:`g_t` for CG, :math:`m_t` for CM) from the optimizer state.  Measured, averaged over
steps and starts (:func:`memoptim.lab.buffer_vectors.cancellation_stats`):
:math:`\cos(\bar b, u_t)`, :math:`\|u_t + \bar b\|/\|u_t\|`, the step length
:math:`\|\theta_t - \theta_{t-1}\|` and the steadiness of :math:`\bar b` (cosine between
consecutive steps).

* **Fig. 2** -- Ackley (eq. 11), steps 1-10;
* **Fig. 11** -- Ackley+Rosenbrock (eq. 14), Adam+CG with C = 5, three consecutive steps;
* **Fig. 12** -- Goldstein-Price (eq. 12), six consecutive steps.

Figs. 11 and 12 are measured over ``s.vector_window`` and draw its first 3 / 6 steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memoptim.lab.buffer_vectors import BufferSnapshot, cancellation_stats, trace_buffer_vectors
from memoptim.lab.reproduce.common import TABLE11, Job, Settings, job_key, starts
from memoptim.lab.surfaces import get_surface
from memoptim.progress import Progress

__all__ = ["FIGURES", "VectorFigure", "buffer_vector_jobs", "buffer_vectors"]


@dataclass(frozen=True)
class VectorFigure:
    """One buffer-vector figure: its surface, window rule and number of drawn steps."""

    key: str
    surface: str
    shown: int  # steps drawn
    paper_window: bool  # True: the paper's steps 1..shown (Fig. 2); False: s.vector_window

    def window(self, s: Settings) -> tuple[int, int]:
        """First and last measured step (1-based, inclusive)."""
        return (1, self.shown) if self.paper_window else s.vector_window

    def drawn(self, s: Settings) -> list[int]:
        """The steps drawn in the figure."""
        first = self.window(s)[0]
        return list(range(first, first + self.shown))


FIGURES: dict[str, VectorFigure] = {
    "fig2": VectorFigure("fig2", "ackley", 10, True),
    "fig11": VectorFigure("fig11", "ackley-rosenbrock", 3, False),
    "fig12": VectorFigure("fig12", "goldstein-price", 6, False),
}


def buffer_vector_jobs(s: Settings) -> dict[str, Job]:
    """Slots ``"<fig> <optimizer>"``: Table 11 Adam+CG (C = 5, decay 0.7) and Adam+CM."""
    return {f"{f} {n}": (n, dict(TABLE11[n])) for f in FIGURES for n in ("adam+cg", "adam+cm")}


def buffer_vectors(s: Settings, jobs: dict[str, Job], progress: bool,
                   keep_snapshots: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measurements ``out[fig][optimizer]`` (see the module docstring) and, in extra, the
    snapshots of the first start at the drawn steps, ``extra[fig][optimizer]``."""
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    total = sum(FIGURES[slot.split(" ")[0]].window(s)[1] for slot in jobs)
    bar = Progress(total, "Figs. 2/11/12 (buffer vectors)", enabled=progress)
    done: dict[str, list[list[BufferSnapshot]]] = {}
    for slot, (name, hp) in jobs.items():
        fig_key, _, opt = slot.partition(" ")
        fig = FIGURES[fig_key]
        first, last = fig.window(s)
        k = fig_key + job_key((name, hp))
        if k not in done:
            x0 = starts(fig.surface, s.vector_starts)
            done[k] = trace_buffer_vectors(get_surface(fig.surface).fn, x0, name, hp,
                                           record=range(first, last + 1))
        bar.update(last)
        runs = done[k]
        entry = out.setdefault(fig_key, {"surface": fig.surface, "window": [first, last],
                                         "starts": s.vector_starts, "drawn": fig.drawn(s)})
        entry[opt] = {"run_as": name, **cancellation_stats(runs)}
        if keep_snapshots:
            drawn = set(fig.drawn(s))
            extra.setdefault(fig_key, {})[opt] = [sn for sn in runs[0] if sn.step in drawn]
    bar.close()
    return out, extra
