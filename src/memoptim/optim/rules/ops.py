r"""Tensor-list operations the update rules share.

Each takes ``foreach``: ``True`` runs one ``torch._foreach_*`` launch over the whole list,
``False`` a plain loop over tensors (the slow, reference-like path).  Under ``torch.compile``
(the fused path) step counts and the learning rate are tensors and nothing branches on data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def step_values(steps: Sequence[Tensor]) -> list[float] | list[Tensor]:
    """Increment the step counters; return them as Python floats (eager, counters on the CPU)
    or as the tensors themselves (no host read) while ``torch.compile`` traces the rule or when
    the counters live on an accelerator (:func:`on_device`)."""
    if torch.compiler.is_compiling():
        for s in steps:
            s.add_(1.0)
        return list(steps)
    torch._foreach_add_(list(steps), 1.0)
    if on_device(steps):
        return list(steps)
    return [s.item() for s in steps]


def on_device(values: Sequence[float | Tensor]) -> bool:
    """Whether per-tensor scalars (step counters, :func:`step_values`) stay tensors: while
    ``torch.compile`` traces, or when they live off the CPU -- reading them would wait for the
    device (and fail on ``meta`` tensors or under ``FakeTensorMode``)."""
    return torch.compiler.is_compiling() or any(
        isinstance(v, Tensor) and v.device.type != "cpu" for v in values)


def prepare_grads(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    lr: float,
    weight_decay: float,
    decoupled: bool,
    maximize: bool,
    foreach: bool,
) -> list[Tensor]:
    r"""Apply ``maximize`` and weight decay; return the gradients the rule uses.

    Decoupled: :math:`\theta \leftarrow \theta (1 - \mathrm{lr}\cdot wd)`, gradients untouched.
    Coupled (L2): :math:`g \leftarrow g + wd\,\theta`.
    """
    grads = list(grads)
    if foreach:
        if maximize:
            grads = list(torch._foreach_neg(grads))
        if weight_decay != 0:
            if decoupled:
                torch._foreach_mul_(list(params), 1.0 - lr * weight_decay)
            else:
                grads = list(torch._foreach_add(grads, list(params), alpha=weight_decay))
        return grads
    out = []
    for p, g in zip(params, grads):
        if maximize:
            g = -g
        if weight_decay != 0:
            if decoupled:
                p.mul_(1.0 - lr * weight_decay)
            else:
                g = g.add(p, alpha=weight_decay)
        out.append(g)
    return out


def ema_(avgs: list[Tensor], xs: list[Tensor], beta: float, foreach: bool) -> None:
    r""":math:`m \leftarrow \beta m + (1-\beta) x`, in place."""
    if foreach:
        torch._foreach_lerp_(avgs, xs, 1.0 - beta)
    else:
        for m, x in zip(avgs, xs):
            m.lerp_(x, 1.0 - beta)


def ema_sq_(avgs: list[Tensor], xs: list[Tensor], beta: float, foreach: bool) -> None:
    r""":math:`v \leftarrow \beta v + (1-\beta) x^2`, in place."""
    if foreach:
        torch._foreach_mul_(avgs, beta)
        torch._foreach_addcmul_(avgs, xs, xs, 1.0 - beta)
    else:
        for v, x in zip(avgs, xs):
            v.mul_(beta).addcmul_(x, x, value=1.0 - beta)


def add_(xs: list[Tensor], value: float, foreach: bool) -> None:
    """``x += value`` for every tensor, in place."""
    if foreach:
        torch._foreach_add_(xs, value)
    else:
        for x in xs:
            x.add_(value)


def descend_(params: list[Tensor], directions: list[Tensor], lr: float | Tensor, foreach: bool) -> None:
    r""":math:`\theta \leftarrow \theta - \mathrm{lr}\, d`, in place."""
    if torch.compiler.is_compiling():  # lr may be a tensor: no host read
        torch._foreach_sub_(list(params), torch._foreach_mul(list(directions), lr))
        return
    if foreach:
        torch._foreach_add_(params, directions, alpha=-lr)
    else:
        for p, d in zip(params, directions):
            p.add_(d, alpha=-lr)
