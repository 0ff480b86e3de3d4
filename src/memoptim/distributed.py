r"""memoptim under ``torch.distributed``: DDP, FSDP2, ZeroRedundancyOptimizer, checkpoints.

The optimizers need no wrapper under DDP: every rank holds the same, already
averaged gradients, so every rank computes the same keys and the same update.
Two situations need care, and this module provides it.

**Sharded parameters (FSDP2, DTensor).**  The priority key of a tensor is
:math:`\|g\|_2` of its *full* gradient (spec "The critical buffer"; paper
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

import math
import os
import socket
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer

from memoptim.buffer import STATE_KEYS, key_dtype

__all__ = [
    "abs_max",
    "enable_dtensor_buffers",
    "free_port",
    "init_buffer_state",
    "is_dtensor",
    "launch",
    "priority_keys",
]


# --------------------------------------------------------------------------- DTensor
def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (without importing the module)."""
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def init_buffer_state(
    state: dict[str, Any],
    like: Tensor,
    capacity: int,
    buffer_dtype: torch.dtype | None = None,
) -> None:
    """Create an empty critical buffer for ``like`` in ``state``, sharded like ``like``.

    Same layout as :meth:`memoptim.buffer.CriticalBuffer.init_state`; for a DTensor
    ``like`` the values (``(C, *like.shape)``) and the running sum (``like.shape``)
    are DTensors on ``like``'s mesh, each rank storing only the slice of its own
    shard (values: ``Shard(d + 1)`` where ``like`` has ``Shard(d)``), while the keys
    ``(C,)`` and the replacement count stay plain tensors, identical on every rank.
    For a plain tensor this is exactly ``CriticalBuffer.init_state``.
    """
    if not is_dtensor(like):
        from memoptim.buffer import CriticalBuffer

        CriticalBuffer.init_state(state, like, capacity, buffer_dtype)
        return
    vdtype = buffer_dtype or like.dtype
    zero = torch.zeros_like(like, dtype=vdtype)
    keys, values, total, replacements = STATE_KEYS
    state[keys] = torch.full((capacity,), -math.inf, dtype=key_dtype(like.dtype), device=like.device)
    # Stacking C sharded zeros lets DTensor place the new leading dimension: every
    # Shard(d) becomes Shard(d + 1) (also strided and uneven shards), Replicate stays.
    state[values] = torch.stack([zero] * capacity)
    state[total] = torch.zeros_like(like, dtype=key_dtype(vdtype))
    state[replacements] = torch.zeros((), dtype=torch.int64, device=like.device)


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
    from memoptim.optim.base import MemoryOptimizer

    base = getattr(optimizer, "base_optimizer", optimizer)  # SAM shares its base's state
    if not isinstance(base, MemoryOptimizer):
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


def _norms(grads: Sequence[Tensor], foreach: bool, dtype: torch.dtype) -> Tensor:
    r""":math:`\|g_i\|_2` of every *full* gradient as a plain ``(N,)`` tensor, identical on all ranks.

    Plain gradients: exactly as :meth:`MemoryOptimizer._keys` (same kernels, so the
    same bits).  DTensor gradients: the local norms are combined across the mesh
    (:math:`\sqrt{\sum_r \|g^{(r)}\|^2}` over sharded dimensions), one collective
    per distinct (mesh, placements).
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


# --------------------------------------------------------------------------- ZeRO
_ZERO_ATTR = "_memoptim_zero_owner"


def _zero_owner(optimizer: Optimizer) -> Any:
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


def _full_group_grads(zero: Any, optimizer: Optimizer, group: dict[str, Any]) -> list[Tensor]:
    """The gradients of the whole (unpartitioned) ZeRO parameter group that ``group`` is a part of."""
    index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
    full = zero.param_groups[index]["params"]
    return [p.grad for p in full if p.grad is not None]


# --------------------------------------------------------------------------- keys
def local_keys(optimizer: Optimizer, group: dict[str, Any]) -> bool:
    """Whether ``group``'s priority keys are functions of the gradients of its own tensors
    alone -- true except for ``priority="group"`` under ``ZeroRedundancyOptimizer``, whose
    group spans the partitions of all ranks.  Only then may the native kernel derive the keys
    from the norms it computes during its pass (a deferred offer); FSDP2's DTensors never
    reach it."""
    return group["priority"] != "group" or _zero_owner(optimizer) is None


def priority_keys(
    optimizer: Optimizer, group: dict[str, Any], grads: list[Tensor], foreach: bool
) -> Tensor:
    r"""The priority keys of one group's step, correct for sharded and partitioned optimizers.

    ``priority="tensor"``: :math:`k_i = \|g_i\|_2` of the full gradient of tensor
    :math:`i`; ``priority="group"``: :math:`k_i = \sum_{j \in G} \|g_j\|_2` over the
    whole group :math:`G` (all its tensors with a gradient, on whichever rank their
    optimizer state lives).  Returns a plain ``(len(grads),)`` tensor, identical on
    every rank; float64 if any gradient is float64, else float32 (as unsharded).
    Called by :meth:`memoptim.optim.base.MemoryOptimizer._keys`.
    """
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    if group["priority"] == "group":
        zero = _zero_owner(optimizer)
        if zero is not None:
            full = _full_group_grads(zero, optimizer, group)
            if any(g.dtype == torch.float64 for g in full):
                dtype = torch.float64
            return _norms(full, foreach, dtype).sum().expand(len(grads))
        return _norms(grads, foreach, dtype).sum().expand(len(grads))
    return _norms(grads, foreach, dtype)


# --------------------------------------------------------------------------- launching
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a local rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable[..., Any], world_size: int, port: int, timeout: float,
            args: tuple[Any, ...], error_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout))
    try:
        fn(rank, world_size, *args)
        dist.barrier()  # gloo can abort if a rank tears down while another still talks
    except BaseException:
        # Recorded before the group is torn down, hence before the other ranks fail in
        # consequence: the launcher reports the earliest error, the root cause.
        path = os.path.join(error_dir, f"rank{rank}")
        with open(path + ".tmp", "w") as f:
            f.write(f"{time.time()!r}\n{traceback.format_exc()}")
        os.replace(path + ".tmp", path)
        raise
    finally:
        dist.destroy_process_group()


def _root_cause(error_dir: str, exc: Exception) -> Exception:
    """The earliest recorded rank failure as a ProcessRaisedException (``exc`` if none was recorded)."""
    import torch.multiprocessing as mp

    records = []
    for name in os.listdir(error_dir):
        if name.startswith("rank") and not name.endswith(".tmp"):
            with open(os.path.join(error_dir, name)) as f:
                stamp, _, tb = f.read().partition("\n")
            records.append((float(stamp), int(name[4:]), tb))
    if not records:
        return exc
    records.sort()
    _, rank, tb = records[0]
    others = [r for _, r, _ in records[1:]]
    note = f"\n(ranks {others} failed afterwards, in consequence)" if others else ""
    return mp.ProcessRaisedException(
        f"\n\n-- Process {rank} terminated with the following error:\n{tb}{note}", rank,
        getattr(exc, "pid", -1),
    )


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 60.0,
    start_method: str = "forkserver",
) -> None:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` local processes joined by gloo.

    For tests and CPU experiments (use ``torchrun`` for real jobs): a process group
    on a free 127.0.0.1 port, one thread per process, a barrier before the group is
    destroyed.  ``fn`` must be picklable (a module-level function).  If a rank
    raises, raises ``torch.multiprocessing.ProcessRaisedException`` carrying the
    traceback of the *first* rank that failed (not of a rank that failed later
    because its peer had gone); raises ``TimeoutError`` (after killing the ranks)
    if they have not all finished after ``timeout`` seconds.

    The default start method, ``"forkserver"``, imports torch once in a server
    process (preloading this module) and forks clean ranks from it, so repeated
    launches do not pay torch's import time again; ``"spawn"`` starts from scratch.
    """
    import multiprocessing

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    if start_method == "forkserver":
        multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    with tempfile.TemporaryDirectory(prefix="memoptim-launch-") as error_dir:
        ctx = mp.start_processes(
            _worker, args=(fn, world_size, free_port(), timeout, args, error_dir), nprocs=world_size,
            join=False, start_method=start_method,
        )
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    for p in ctx.processes:
                        if p.is_alive():
                            p.kill()
                    for p in ctx.processes:
                        p.join(5)
                    raise TimeoutError(
                        f"distributed run of {fn.__name__} did not finish within {timeout} s"
                    )
        except ProcessException as exc:
            raise _root_cause(error_dir, exc) from None
