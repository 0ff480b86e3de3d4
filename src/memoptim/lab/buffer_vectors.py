r"""Buffer vectors on a toy surface: the gradient-cancellation picture (paper Figs. 2, 11, 12).

At every recorded step :math:`t` (1-based) of an Adam+CG or Adam+CM run we read, from the
optimizer's own state (:meth:`memoptim.buffer.CriticalBuffer.from_state`), the buffer
*before* the step -- the items :math:`b_k` of the :math:`n` filled slots and their keys --
and, after the step, the step's *new* quantity :math:`u_t` that the aggregation adds the
buffer to:

* Adam+CG: :math:`u_t = g_t`, the new gradient (paper eq. 3);
* Adam+CM: :math:`u_t = m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`, the new momentum (eq. 4),
  read from ``state["exp_avg"]``.

The buffer term of the aggregate (eq. 6) is :math:`\bar b = \frac{1}{C}\sum_k b_k`
(``aggregation="capacity"``, ours) or :math:`\frac{1}{\max(n,1)}\sum_k b_k` (``"filled"``,
the authors' code), and the aggregate is :math:`a_t = u_t + \bar b`.  The measurements of
*cancellation* are

.. math::
    \cos_t = \frac{\langle \bar b, u_t\rangle}{\|\bar b\|\,\|u_t\|}, \qquad
    r_t = \frac{\|u_t + \bar b\|}{\|u_t\|}, \qquad
    \ell_t = \|\theta_t - \theta_{t-1}\|_2,

negative :math:`\cos_t` and :math:`r_t < 1` meaning that the buffer cancels part of the new
quantity; :math:`\ell_t` is the length of the step actually taken.  The *steadiness* of the
buffer is the cosine between consecutive buffer terms :math:`\bar b_{t-1}, \bar b_t`
(the paper: "the buffer directions do not drastically change in CM").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from memoptim.buffer import CriticalBuffer

__all__ = [
    "BufferSnapshot",
    "buffer_items",
    "buffer_term",
    "cancellation_stats",
    "trace_buffer_vectors",
]


def buffer_items(state: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """The filled items and keys of one parameter's buffer (``optimizer.state[p]``), in slot
    order, as copies.

    Returns ``(items, keys)`` of shapes ``(n, *p.shape)`` and ``(n,)``; both empty (``n = 0``)
    when the state has no buffer.  A deferred offer is completed first (as every inspection
    through :meth:`~memoptim.buffer.CriticalBuffer.from_state` does).
    """
    b = CriticalBuffer.from_state(state)
    if b is None:
        return torch.empty(0), torch.empty(0)
    mask = torch.isfinite(b.keys)
    return b.values[mask].detach().clone(), b.keys[mask].detach().clone()


def buffer_term(items: Tensor, capacity: int, aggregation: str = "capacity") -> Tensor | None:
    r"""What the aggregation adds to the new quantity: :math:`\frac1C\sum_k b_k` (``"capacity"``)
    or :math:`\frac1n\sum_k b_k` (``"filled"``); ``None`` for an empty buffer."""
    if items.shape[0] == 0:
        return None
    if aggregation == "filled":
        return items.sum(0) / items.shape[0]
    if aggregation == "capacity":
        return items.sum(0) / capacity
    raise ValueError("aggregation must be 'capacity' or 'filled'")


def _cos(a: Tensor, b: Tensor) -> float:
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return float(torch.dot(a.reshape(-1), b.reshape(-1))) / (na * nb)


@dataclass(frozen=True)
class BufferSnapshot:
    """One recorded step of one run (see the module docstring for the symbols).

    Attributes:
        step: :math:`t`, 1-based.
        point: :math:`\\theta_{t-1}`, where the step starts, shape ``(d,)``.
        next_point: :math:`\\theta_t`.
        items: the buffer's filled items before the step, ``(n, d)``, slot order.
        keys: their (decayed) priority keys, ``(n,)``.
        term: :math:`\\bar b`, the buffer term of the aggregate (``None`` if the buffer is empty).
        new: :math:`u_t` (:math:`g_t` for CG, :math:`m_t` for CM).
    """

    step: int
    point: Tensor
    next_point: Tensor
    items: Tensor
    keys: Tensor
    term: Tensor | None
    new: Tensor

    @property
    def aggregate(self) -> Tensor:
        """:math:`a_t = u_t + \\bar b`."""
        return self.new if self.term is None else self.new + self.term

    @property
    def cosine(self) -> float:
        """:math:`\\cos(\\bar b, u_t)`; ``nan`` with an empty buffer."""
        return math.nan if self.term is None else _cos(self.term, self.new)

    @property
    def ratio(self) -> float:
        """:math:`\\|u_t + \\bar b\\| / \\|u_t\\|`."""
        n = float(torch.linalg.vector_norm(self.new))
        return math.nan if n == 0.0 else float(torch.linalg.vector_norm(self.aggregate)) / n

    @property
    def step_length(self) -> float:
        """:math:`\\|\\theta_t - \\theta_{t-1}\\|_2`."""
        return float(torch.linalg.vector_norm(self.next_point - self.point))


def _new_quantity(opt: Any, p: Tensor) -> Tensor:
    """:math:`m_t` for a critical-momenta Adam or plain Adam (state ``exp_avg``), :math:`g_t` for
    critical gradients (the raw gradient; the toy runs use no weight decay)."""
    from memoptim.optim import AdamCG, AdamCM

    if isinstance(opt, AdamCG):
        return p.grad.detach().clone()
    if isinstance(opt, AdamCM | torch.optim.Adam):
        return opt.state[p]["exp_avg"].detach().clone()
    raise TypeError(f"buffer vectors are defined for AdamCG, AdamCM and Adam, not {type(opt).__name__}")


def trace_buffer_vectors(
    fn: Callable[[Tensor], Tensor],
    x0: Tensor,
    optimizer: str,
    hyperparameters: Mapping[str, Any],
    *,
    record: Iterable[int],
) -> list[list[BufferSnapshot]]:
    """Run a memory Adam (registry name ``optimizer``) from every row of ``x0`` and record
    :class:`BufferSnapshot` s at the 1-based steps ``record`` (the run stops after the last).

    Each run is its own parameter tensor with ``priority="tensor"`` (independent runs, as
    :func:`memoptim.lab.toy.run_toy`); constant learning rate.  Plain ``adam`` is accepted too
    (no buffer; its new quantity is :math:`m_t`), for the lr-matched controls.  Returns, per
    run, the snapshots in step order.
    """
    from memoptim import create_optimizer
    from memoptim.lab.toy import MEMORY_OPTIMIZERS

    steps = sorted(set(record))
    if not steps or steps[0] < 1:
        raise ValueError("record must hold 1-based step numbers")
    params = [torch.nn.Parameter(x0[i].detach().clone()) for i in range(x0.shape[0])]
    hp = dict(hyperparameters)
    if optimizer.lower() in MEMORY_OPTIMIZERS:
        hp.setdefault("priority", "tensor")
    opt = create_optimizer(optimizer, params, **hp)
    group = opt.param_groups[0]
    capacity, aggregation = group.get("buffer_size", 1), group.get("aggregation", "capacity")
    out: list[list[BufferSnapshot]] = [[] for _ in params]
    for t in range(1, steps[-1] + 1):
        for p in params:
            p.grad = None
        fn(torch.stack(params)).sum().backward()
        keep = t in steps
        before = [(p.detach().clone(), *buffer_items(opt.state.get(p, {}))) for p in params] if keep else []
        opt.step()
        if not keep:
            continue
        for i, (p, (x, items, keys)) in enumerate(zip(params, before)):
            term = buffer_term(items, capacity, aggregation)
            out[i].append(BufferSnapshot(t, x, p.detach().clone(), items, keys, term,
                                         _new_quantity(opt, p)))
    return out


def cancellation_stats(runs: Iterable[Iterable[BufferSnapshot]]) -> dict[str, float]:
    r"""Means over all recorded steps (with a non-empty buffer) of all runs:

    ``cosine`` (mean :math:`\cos_t`), ``negative_fraction`` (share of steps with
    :math:`\cos_t < 0`), ``ratio`` (mean :math:`r_t`), ``step_length`` (mean :math:`\ell_t`,
    over all recorded steps), ``steadiness`` (mean cosine of consecutive buffer terms within a
    run) and ``steps`` (number of steps with a non-empty buffer)."""
    cos, ratio, length, steady = [], [], [], []
    for run in runs:
        prev: Tensor | None = None
        for snap in run:
            length.append(snap.step_length)
            if snap.term is None:
                prev = None
                continue
            cos.append(snap.cosine)
            ratio.append(snap.ratio)
            if prev is not None:
                steady.append(_cos(prev, snap.term))
            prev = snap.term

    def mean(xs: list[float]) -> float:
        xs = [x for x in xs if not math.isnan(x)]
        return sum(xs) / len(xs) if xs else math.nan

    return {"cosine": mean(cos), "negative_fraction": mean([float(c < 0) for c in cos]),
            "ratio": mean(ratio), "step_length": mean(length), "steadiness": mean(steady),
            "steps": float(len(cos))}
