r"""Diagnostics of memory-augmented optimizers (paper section 5.2, Fig. 8).

Read directly from the optimizer's state through
:meth:`memoptim.buffer.CriticalBuffer.from_state` (views, no copy of the
stored tensors); every statistic of the buffer is computed from the small
:math:`C \times C` Gram matrix :math:`G_{kl} = \langle b_k, b_l\rangle` of the stored
items, so the cost is one matrix product per tensor and the memory is
:math:`O(C^2)`.

With :math:`F` the set of filled slots (:math:`n = |F|`) and :math:`D` the number
of coordinates of an item:

* **buffer variance** -- the per-coordinate (population) variance across the
  stored items, averaged over coordinates:

  .. math:: \mathrm{Var}(B) = \frac{1}{D}\sum_{d}\Big[\frac1n\sum_{k\in F} b_{kd}^2
            - \Big(\frac1n\sum_{k\in F} b_{kd}\Big)^2\Big]
            = \frac{1}{nD}\sum_{k\in F} G_{kk} - \frac{1}{n^2 D}\sum_{k,l\in F} G_{kl};

* **buffer agreement** (Fig. 8, bottom right) -- the mean cosine similarity
  between a reference item :math:`r` and every other stored item,
  :math:`\frac{1}{n-1}\sum_{k\in F\setminus r} G_{rk}/\sqrt{G_{rr}G_{kk}}`.
  The paper takes "the element with the highest norm within the buffer";
  ``reference="key"`` (default) uses the item with the highest (decayed)
  priority key -- the gradient norm the buffer ranks by -- and
  ``reference="norm"`` the item whose own :math:`\ell_2` norm is largest;
* **fill** and **replacement** counts (the buffer's own counters);
* **distance travelled** :math:`\|\theta_t - \theta_0\|_2` (Fig. 8, top right), with
  :class:`DistanceTracker`.

Model-level statistics (:func:`joint_buffer_stats`): with the default
``priority="group"`` every tensor of a group holds identical keys and makes
the same decisions, so slot :math:`k` of all tensors together is one model-level
item; the Gram matrices are then summed over tensors and the statistics are
those of the concatenated items.  Otherwise (``priority="tensor"``) the
per-tensor statistics are averaged (variance weighted by size).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from memoptim.buffer import CriticalBuffer

__all__ = [
    "BufferStats",
    "DistanceTracker",
    "buffer_stats",
    "joint_buffer_stats",
    "parameter_buffer_stats",
    "parameter_buffers",
]


@dataclass(frozen=True)
class BufferStats:
    """Statistics of one critical buffer (or of a model-level buffer).

    Attributes:
        capacity: number of slots :math:`C`.
        filled: number of filled slots.
        replacements: replacements made in the full buffer so far (summed over tensors
            for non-joint model statistics).
        variance: mean per-coordinate variance of the stored items (``nan`` if empty).
        cosine: mean cosine similarity of the reference item with the others
            (``nan`` with fewer than two items).
        numel: coordinates per item :math:`D`.
        joint: whether the statistics are of concatenated synchronised buffers.
    """

    capacity: int
    filled: int
    replacements: int
    variance: float
    cosine: float
    numel: int
    joint: bool = False


def _state_of(optimizer: Any) -> dict[Tensor, dict[str, Any]]:
    base = getattr(optimizer, "base_optimizer", None)
    return (base if base is not None else optimizer).state


def _groups_of(optimizer: Any) -> list[dict[str, Any]]:
    base = getattr(optimizer, "base_optimizer", None)
    return (base if base is not None else optimizer).param_groups


def parameter_buffers(
    optimizer: Any, params: Iterable[Tensor] | None = None
) -> list[tuple[Tensor, CriticalBuffer]]:
    """``(parameter, buffer)`` for every parameter that has a critical buffer, in group order.

    For SAM wrappers the base optimizer's state is read.  ``params`` restricts
    the selection (default: all parameters of the optimizer).
    """
    state = _state_of(optimizer)
    if params is None:
        plist = [p for g in _groups_of(optimizer) for p in g["params"]]
    else:
        plist = list(params)
    out = []
    for p in plist:
        b = CriticalBuffer.from_state(state.get(p, {}))
        if b is not None:
            out.append((p, b))
    return out


def _gram(b: CriticalBuffer) -> Tensor:
    v = b.values.reshape(b.capacity, -1)
    if v.dtype not in (torch.float32, torch.float64):
        v = v.float()  # low-precision buffers: a transient upcast for accurate inner products
    return (v @ v.T).double()


def _stats_from_gram(
    gram: Tensor, mask: Tensor, keys: Tensor, numel: int, reference: str
) -> tuple[float, float]:
    n = int(mask.sum())
    if n == 0:
        return math.nan, math.nan
    g = gram[mask][:, mask]
    var = float(torch.diagonal(g).sum() / (n * numel) - g.sum() / (n * n * numel))
    if n < 2:
        return max(var, 0.0), math.nan
    if reference == "key":
        r = int(torch.argmax(keys[mask]))
    elif reference == "norm":
        r = int(torch.argmax(torch.diagonal(g)))
    else:
        raise ValueError("reference must be 'key' or 'norm'")
    norms = torch.sqrt(torch.diagonal(g))
    others = [k for k in range(n) if k != r]
    denom = norms[r] * norms[others]
    cos = torch.where(denom > 0, g[r, others] / denom.clamp_min(1e-300), torch.zeros_like(denom))
    return max(var, 0.0), float(cos.mean())


def buffer_stats(buffer: CriticalBuffer, *, reference: str = "key") -> BufferStats:
    """Statistics of one parameter's buffer (see the module docstring for the formulas)."""
    mask = torch.isfinite(buffer.keys)
    numel = buffer.total.numel()
    var, cos = _stats_from_gram(_gram(buffer), mask, buffer.keys, numel, reference)
    return BufferStats(buffer.capacity, int(mask.sum()), buffer.replacements, var, cos, numel)


def parameter_buffer_stats(
    optimizer: Any, params: Iterable[Tensor] | None = None, *, reference: str = "key"
) -> list[BufferStats]:
    """:func:`buffer_stats` of every parameter that has a buffer (order of :func:`parameter_buffers`)."""
    return [buffer_stats(b, reference=reference) for _, b in parameter_buffers(optimizer, params)]


def joint_buffer_stats(
    optimizer: Any, params: Iterable[Tensor] | None = None, *, reference: str = "key"
) -> BufferStats | None:
    """Model-level buffer statistics over ``params`` (default: all), ``None`` if no buffer.

    If every selected buffer holds the same keys in the same slots (the case
    with ``priority="group"`` and a single group), slot ``k`` across tensors is
    one item: the Gram matrices are summed and the statistics are exact for the
    concatenated items (``joint=True``).  Otherwise the per-tensor statistics
    are combined: variance weighted by size, cosine averaged over tensors with
    at least two items, counts summed (``joint=False``; ``filled`` is the minimum).
    """
    pbs = parameter_buffers(optimizer, params)
    if not pbs:
        return None
    buffers = [b for _, b in pbs]
    keys0 = buffers[0].keys
    synced = all(b.capacity == buffers[0].capacity and torch.equal(b.keys, keys0) for b in buffers)
    if synced:
        gram = sum(_gram(b) for b in buffers)
        numel = sum(b.total.numel() for b in buffers)
        mask = torch.isfinite(keys0)
        var, cos = _stats_from_gram(gram, mask, keys0, numel, reference)  # type: ignore[arg-type]
        return BufferStats(buffers[0].capacity, int(mask.sum()), buffers[0].replacements,
                           var, cos, numel, joint=True)
    stats = [buffer_stats(b, reference=reference) for b in buffers]
    numel = sum(s.numel for s in stats)
    var_items = [(s.variance, s.numel) for s in stats if not math.isnan(s.variance)]
    var = (sum(v * n for v, n in var_items) / sum(n for _, n in var_items)) if var_items else math.nan
    coss = [s.cosine for s in stats if not math.isnan(s.cosine)]
    return BufferStats(
        max(s.capacity for s in stats),
        min(s.filled for s in stats),
        sum(s.replacements for s in stats),
        var,
        (sum(coss) / len(coss)) if coss else math.nan,
        numel,
        joint=False,
    )


class DistanceTracker:
    r"""Distance travelled from the initial parameters, :math:`\|\theta_t - \theta_0\|_2` (Fig. 8).

    Keeps one detached copy of the parameters at construction (the only copy
    this module makes: of the parameters, never of optimizer state).
    """

    def __init__(self, params: Iterable[Tensor]):
        self.params = list(params)
        self.initial = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def per_parameter(self) -> list[float]:
        """:math:`\\|\\theta_t - \\theta_0\\|_2` of each parameter tensor."""
        return [float(torch.linalg.vector_norm(p - p0)) for p, p0 in zip(self.params, self.initial)]

    @torch.no_grad()
    def distance(self) -> float:
        """:math:`\\|\\theta_t - \\theta_0\\|_2` over all parameters together."""
        return math.sqrt(sum(d * d for d in self.per_parameter()))
