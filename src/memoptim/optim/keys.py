r"""Priority keys: the one place that turns a group's gradients into the keys of its buffers.

``priority="tensor"``: :math:`k_i = \|g_i\|_2`; ``priority="group"``: :math:`k_i = \sum_{j \in G}
\|g_j\|_2` over the group's tensors with a gradient, so the group acts as one buffer (the
authors' setting).  Keys come from the raw gradients (before ``maximize`` and weight decay), in
float32, or float64 if a gradient is float64.

Under ``torch.distributed`` the norms are those of the *full* gradients (FSDP2's DTensor shards
are combined with one all-reduce per placement) and a ``priority="group"`` key of a
``ZeroRedundancyOptimizer`` partition sums over the whole group, so every rank decides as an
unsharded run would (see :mod:`memoptim.distributed`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.buffer import key_dtype
from memoptim.distributed.sharding import is_dtensor
from memoptim.distributed.zero import full_group_grads, zero_owner

__all__ = ["grad_norms", "is_distributed", "keys_dtype", "keys_from_norms", "local_keys", "priority_keys"]


def priority_keys(optimizer: Optimizer, group: dict[str, Any], grads: list[Tensor], foreach: bool,
                  norms: Callable[[list[Tensor]], Tensor] | None = None) -> Tensor:
    """The ``(len(grads),)`` keys of one group's step.  ``norms``: a faster way to the gradient
    norms (the native kernel's single read of each gradient); not used when distributed."""
    dtype = keys_dtype(grads)
    if is_distributed():
        zero = zero_owner(optimizer) if group["priority"] == "group" else None
        if zero is not None:
            full = full_group_grads(zero, optimizer, group)
            dtype = keys_dtype([*grads, *full])
            return grad_norms(full, foreach, dtype).sum().expand(len(grads))
        return keys_from_norms(group, grads, grad_norms(grads, foreach, dtype))
    if norms is not None:
        return keys_from_norms(group, grads, norms(grads))
    return keys_from_norms(group, grads, grad_norms(grads, foreach, dtype))


def keys_from_norms(group: dict[str, Any], grads: Sequence[Tensor], norms: Tensor) -> Tensor:
    """The keys from the ``(N,)`` gradient norms: each norm, or their group sum."""
    norms = norms.to(keys_dtype(grads))
    if group["priority"] == "group":
        return norms.sum().expand(len(grads))
    return norms


def local_keys(optimizer: Optimizer, group: dict[str, Any]) -> bool:
    """Whether ``group``'s keys are functions of its own tensors' gradients alone -- true except
    for ``priority="group"`` under ``ZeroRedundancyOptimizer``, whose group spans the partitions
    of all ranks.  Only then may a native kernel derive the keys from the norms of its own pass."""
    return not is_distributed() or group["priority"] != "group" or zero_owner(optimizer) is None


def keys_dtype(grads: Sequence[Tensor]) -> torch.dtype:
    """The dtype of a group's keys: the widest :func:`memoptim.buffer.key_dtype` of its gradients."""
    return functools.reduce(torch.promote_types, (key_dtype(g.dtype) for g in grads), torch.float32)


def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised (cheap check)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def grad_norms(grads: Sequence[Tensor], foreach: bool, dtype: torch.dtype) -> Tensor:
    r""":math:`\|g_i\|_2` of every *full* gradient as a plain ``(N,)`` tensor, identical on all ranks.

    Plain gradients: ``torch._foreach_norm`` (``foreach``) or one ``vector_norm`` per tensor.
    DTensor gradients: the local norms are combined across the mesh (:math:`\sqrt{\sum_r
    \|g^{(r)}\|^2}` over sharded dimensions), one collective per distinct (mesh, placements).
    """
    out: list[Tensor | None] = [None] * len(grads)
    plain = [i for i, g in enumerate(grads) if not is_dtensor(g)]
    sharded = [i for i, g in enumerate(grads) if is_dtensor(g)]
    if plain:
        gs = [grads[i] for i in plain]
        ns = torch._foreach_norm(gs) if foreach else [torch.linalg.vector_norm(g) for g in gs]
        for i, n in zip(plain, ns):
            out[i] = n
    if sharded:
        gs = [grads[i] for i in sharded]
        ns = torch._foreach_norm(gs) if foreach else [torch.linalg.vector_norm(g) for g in gs]
        by_spec: dict[Any, list[int]] = {}
        for j, n in enumerate(ns):
            by_spec.setdefault((id(n.device_mesh), tuple(n.placements)), []).append(j)
        for js in by_spec.values():
            full = torch.stack([ns[j].to(dtype) for j in js]).full_tensor()  # one all-reduce
            for k, j in enumerate(js):
                out[sharded[j]] = full[k]
    device = grads[0].to_local().device if is_dtensor(grads[0]) else grads[0].device
    return torch.stack([n.to(device=device, dtype=dtype) for n in out])
