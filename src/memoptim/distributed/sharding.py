"""DTensor (FSDP2) support: recognising sharded tensors, sharded critical buffers, global maxima."""

from __future__ import annotations

import sys
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from memoptim.buffer import STATE_KEYS, CriticalBuffer

__all__ = ["abs_max", "enable_dtensor_buffers", "init_buffer_state", "is_dtensor"]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (without importing the module)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


#: Create an empty critical buffer for a parameter, sharded like it when it is a DTensor: the
#: buffer's own :meth:`~memoptim.buffer.CriticalBuffer.init_state`, under its distributed name.
init_buffer_state = CriticalBuffer.init_state


def abs_max(t: Tensor) -> Tensor:
    r""":math:`\max_i |t_i|` over the *full* tensor, a plain 0-d tensor identical on every rank.

    For a DTensor each rank takes the maximum of its own shard (0 for an empty shard,
    e.g. a dimension smaller than the mesh) and the maxima are combined over the
    sharded mesh dimensions.  An empty plain tensor gives 0.
    """
    if not is_dtensor(t):
        return t.abs().max() if t.numel() else t.new_zeros(())
    from torch.distributed.tensor import DTensor, Partial, Replicate, Shard

    if any(pl.is_partial() for pl in t.placements):
        t = t.redistribute(t.device_mesh, [Replicate() if pl.is_partial() else pl for pl in t.placements])
    local = t.to_local()
    m = local.abs().max() if local.numel() else local.new_zeros(())
    placements = [Partial("max") if isinstance(pl, Shard) else Replicate() for pl in t.placements]
    return DTensor.from_local(m, t.device_mesh, placements, run_check=False).full_tensor()


def _memory_optimizer(optimizer: Optimizer) -> Optimizer:
    base = getattr(optimizer, "base_optimizer", optimizer)  # SAM shares its base's state
    if not callable(getattr(base, "disable_memory", None)):  # what every memory optimizer has
        raise TypeError(f"expected a memoptim optimizer with a critical buffer, got {type(base).__name__}")
    return base


def enable_dtensor_buffers(optimizer: Optimizer) -> Any:
    """Create the critical buffers of DTensor parameters as DTensors (needed under FSDP2).

    Registers a step pre-hook that, before each step, creates the buffer of every
    DTensor parameter that has a gradient and no buffer yet with
    :func:`init_buffer_state` -- the optimizer would otherwise build a plain,
    *full-size* buffer on every rank, which cannot be combined with the sharded
    momenta.  Call it once, right after building the optimizer (before the first
    step and before ``torch.distributed.checkpoint.state_dict`` helpers, which
    take a step to create the state).  Accepts a memoptim optimizer or a
    :class:`memoptim.SAM` around one; returns the hook's removable handle.
    Harmless for plain parameters and if the buffers already exist.
    """
    opt = _memory_optimizer(optimizer)

    def hook(opt: Optimizer, args: Any, kwargs: Any) -> None:
        for group in opt.param_groups:
            if not group.get("memory", True):
                continue
            for p in group["params"]:
                if p.grad is None or not is_dtensor(p):
                    continue
                state = opt.state[p]
                if STATE_KEYS[0] not in state:
                    init_buffer_state(state, p, group["buffer_size"], group["buffer_dtype"])

    return opt.register_step_pre_hook(hook)
