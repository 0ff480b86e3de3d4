r"""memoptim under ``torch.distributed``: DDP, FSDP2, ZeroRedundancyOptimizer, checkpoints.

The optimizers need no wrapper under DDP: every rank holds the same, already
averaged gradients, so every rank computes the same keys and the same update.
Two situations need care, and this module provides it.

**Sharded parameters (FSDP2, DTensor).**  The priority key of a tensor is
:math:`\|g\|_2` of its *full* gradient (``docs/semantics.md``, "The critical buffer"; paper
Algorithm 1), and in ``priority="group"`` mode the sum of those norms over the
group.  A rank holding the shard :math:`g^{(r)}` must therefore not use
:math:`\|g^{(r)}\|_2` but

.. math:: \|g\|_2 = \Bigl(\sum_r \|g^{(r)}\|_2^2\Bigr)^{1/2},

which :func:`priority_keys` computes with one all-reduce per distinct
placement (DTensor's ``_NormPartial`` reduction).  The keys, of shape
``(C,)``, are plain tensors and identical on every rank, so every rank takes
the same insert/replace decision as an unsharded run.  The buffer values and
their running sum are DTensors sharded like the parameter (the values, of
shape ``(C, *p.shape)``, are sharded on the parameter's shard dimension plus
one); see :func:`init_buffer_state`.

**Partitioned optimizer state (ZeroRedundancyOptimizer).**  Each rank's local
optimizer holds a subset of each parameter group, so a ``priority="group"``
key summed over the local tensors would differ between ranks and from the
unsharded key.  :func:`priority_keys` detects that the optimizer is the local
optimizer of a :class:`~torch.distributed.optim.ZeroRedundancyOptimizer` and
sums the norms over the whole group instead: every rank holds every (DDP-
synchronised) gradient, so this needs no communication.

Both are reached through :meth:`memoptim.optim.base.MemoryOptimizer._keys`,
which delegates here whenever a process group is initialised.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from memoptim.distributed.sharding import abs_max, enable_dtensor_buffers, init_buffer_state, is_dtensor

__all__ = [
    "abs_max",
    "enable_dtensor_buffers",
    "free_port",
    "init_buffer_state",
    "is_dtensor",
    "launch",
    "priority_keys",
]


def priority_keys(optimizer: Optimizer, group: dict[str, Any], grads: list[Tensor], foreach: bool) -> Tensor:
    r"""The priority keys of one group's step, correct for sharded and partitioned optimizers.

    ``priority="tensor"``: :math:`k_i = \|g_i\|_2` of the full gradient of tensor :math:`i`;
    ``priority="group"``: :math:`k_i = \sum_{j \in G} \|g_j\|_2` over the whole group :math:`G`
    (all its tensors with a gradient, on whichever rank their optimizer state lives).  A plain
    ``(len(grads),)`` tensor, identical on every rank; float64 if a gradient is, else float32.
    The optimizers' own keys (:func:`memoptim.optim.keys.priority_keys`).
    """
    from memoptim.optim.keys import priority_keys as keys

    return keys(optimizer, group, grads, foreach)


def __getattr__(name: str) -> Any:
    # The launcher (multiprocessing, sockets) stays out of ``import memoptim``.
    if name in ("launch", "free_port"):
        from memoptim.distributed import launcher

        globals()[name] = getattr(launcher, name)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
