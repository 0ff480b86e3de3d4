"""ZeroRedundancyOptimizer: finding the owner of a local optimizer and its whole parameter group."""

from __future__ import annotations

import sys
import weakref
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

__all__ = ["full_group_grads", "zero_owner"]

_ZERO_ATTR = "_memoptim_zero_owner"


def zero_owner(optimizer: Optimizer) -> Any:
    """The ZeroRedundancyOptimizer whose local optimizer is ``optimizer``, or None (cached).

    ZeRO builds its local optimizer itself and steps it from its own ``step``, so
    the owner is on the call stack of the first step; the answer is cached.
    """
    cached = optimizer.__dict__.get(_ZERO_ATTR)
    if cached is not None:
        return cached() if cached is not False else None
    zmod = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    owner = None
    if zmod is not None:
        frame = sys._getframe(1)
        for _ in range(32):
            if frame is None:
                break
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, zmod.ZeroRedundancyOptimizer) and (
                getattr(candidate, "optim", None) is optimizer
            ):
                owner = candidate
                break
            frame = frame.f_back
    optimizer.__dict__[_ZERO_ATTR] = weakref.ref(owner) if owner is not None else False
    return owner


def full_group_grads(zero: Any, optimizer: Optimizer, group: dict[str, Any]) -> list[Tensor]:
    """The gradients of the whole (unpartitioned) ZeRO parameter group that ``group`` is a part of."""
    index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
    full = zero.param_groups[index]["params"]
    return [p.grad for p in full if p.grad is not None]
