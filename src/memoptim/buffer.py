r"""The critical buffer shared by every memory-augmented optimizer.

A critical buffer :math:`B` holds up to :math:`C` tensors ("critical" gradients
or momenta), each with a scalar priority key.  Per step, in this order
(paper Algorithm 1; ``docs/semantics.md``, "The critical buffer"):

1. **aggregate** with the buffer as it was before this step (paper eq. 6)

   .. math:: \operatorname{aggr}(x, B) = x + \frac{1}{C} \sum_{b \in B} b

   -- divided by the *capacity* :math:`C`, not by the number of filled slots;
   an empty buffer gives :math:`x` exactly.  The authors' code divides by the number
   :math:`n` of filled slots instead (``aggregation="filled"``:
   :math:`x + \frac{1}{\max(n, 1)}\sum_{b\in B} b`);
2. **offer** ``(key, value)``: if a slot is free the value is copied into the
   first free slot; otherwise it replaces the slot holding the smallest key,
   but only if ``key > min(keys)`` (ties do not replace).  A non-finite key is
   never inserted.  With the ``"random"`` policy a full buffer instead accepts the
   offer with probability ``replace_prob`` into a uniformly drawn slot (see
   :func:`replacement_draw`): the same fill, with the key no longer deciding; with the
   ``"fifo"`` policy every finite offer to a full buffer replaces its oldest entry;
3. **decay** every stored key by :math:`\lambda` (``decay``), including a key
   inserted in this very step.

Layout (one buffer per parameter tensor, kept in ``optimizer.state[p]`` so that
``state_dict`` round-trips with plain tensors only):

``critical_keys``
    shape ``(C,)``; empty slots hold ``-inf``, so ``argmin`` finds the first
    free slot before any filled one and the insert/replace decision needs no
    Python branch (and hence no host synchronisation on an accelerator).
``critical_values``
    shape ``(C, *p.shape)``, dtype ``buffer_dtype`` (default: the parameter's);
    empty slots are zero.  Values are copies taken at insertion and never decayed.
``critical_sum``
    running sum of the values, in float32 or wider whatever the buffer dtype,
    so that aggregation costs one pass independent of :math:`C`.  It is
    recomputed exactly from the values every :data:`RESYNC_INTERVAL` steps to
    bound floating-point drift.
``critical_replacements``
    0-d int64 count of replacements in a full buffer (a diagnostic).

Deferred offers (the native CPU kernels, critical momenta only): the step's pass
cannot store :math:`m_t` in its slot -- the offer is decided after the pass, when the
gradient norms it computed are known -- so it records the accepted slot (or -1) in
``critical_pending`` (0-d int64) and which state entry still holds the value in
``critical_pending_from`` (0-d int64, an index into :data:`PENDING_SOURCES`: ``"exp_avg"``,
``"momentum_buffer"``; state dicts written before held the name itself, and still load); the next
step's pass reads that momentum anyway and stores it on the way, before aggregating,
which is the order of Algorithm 1.  Keys, fill and replacement counts are final at
once; :meth:`CriticalBuffer.from_state` (hence every inspection),
``optimizer.state_dict()`` and any other execution path first complete the offer with
:meth:`CriticalBuffer.settle_state`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from memoptim.offers import offer_group
from memoptim.policy import POLICIES, replacement_draw

__all__ = ["AGGREGATIONS", "PENDING_KEYS", "PENDING_SOURCES", "POLICIES", "RESYNC_INTERVAL", "CriticalBuffer",
           "aggregate", "offer", "replacement_draw"]

#: Divisors of the buffer sum in the aggregate: the capacity (ours) or the filled slots (the authors').
AGGREGATIONS = ("capacity", "filled")

#: Steps between exact recomputations of the running sum (see :meth:`CriticalBuffer.resync`).
RESYNC_INTERVAL = 256

_KEYS, _VALUES, _SUM, _REPL = (
    "critical_keys",
    "critical_values",
    "critical_sum",
    "critical_replacements",
)
STATE_KEYS: tuple[str, ...] = (_KEYS, _VALUES, _SUM, _REPL)
_PENDING, _PENDING_FROM = "critical_pending", "critical_pending_from"
#: State entries of a deferred offer (see the module docstring); absent when none is pending.
PENDING_KEYS: tuple[str, ...] = (_PENDING, _PENDING_FROM)
#: The state entries a deferred offer may take its value from; ``critical_pending_from`` holds an
#: index into this tuple, so the state holds tensors only.
PENDING_SOURCES: tuple[str, ...] = ("exp_avg", "momentum_buffer")


def _is_dtensor(t: Tensor) -> bool:
    mod = sys.modules.get("torch.distributed.tensor")
    return mod is not None and isinstance(t, mod.DTensor)


def _local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (an alias: in-place changes reach the DTensor), else ``t``."""
    return t.to_local() if _is_dtensor(t) else t


def pending_source(marker: Tensor | str) -> str:
    """The state entry a deferred offer takes its value from: ``critical_pending_from`` is an
    index into :data:`PENDING_SOURCES` (state dicts written before held the name itself)."""
    return marker if isinstance(marker, str) else PENDING_SOURCES[int(marker)]


def key_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of priority keys and running sums for tensors of ``dtype`` (float32 or wider)."""
    return torch.promote_types(dtype, torch.float32)


class CriticalBuffer:
    """One parameter's critical buffer: a thin view over its optimizer state.

    Construct with :meth:`from_state`; the attributes are the state tensors
    themselves (no copies), so reading them is free and mutating them mutates
    the optimizer.

    Attributes:
        keys: ``(C,)`` priority keys, ``-inf`` in empty slots.
        values: ``(C, *shape)`` stored tensors, zero in empty slots.
        total: running sum of ``values`` over the first dimension.
        replacements_tensor: 0-d count of replacements in a full buffer.
    """

    __slots__ = ("aggregation", "draw", "keys", "policy", "replacements_tensor", "total", "values")

    def __init__(self, keys: Tensor, values: Tensor, total: Tensor, replacements: Tensor,
                 aggregation: str = "capacity", draw: tuple[Tensor | bool, Tensor | int] | None = None):
        self.keys = keys
        self.values = values
        self.total = total
        self.replacements_tensor = replacements
        #: ``"capacity"`` or ``"filled"``: the divisor of the sum in :meth:`aggregate`.
        self.aggregation = aggregation
        #: ``(accept, slot)`` of the random policy for this step's offer, 0-d tensors on the keys'
        #: device (:func:`memoptim.policy.draws`) or host values (:func:`replacement_draw`), or
        #: ``None``: the gradient-norm key decides.
        self.draw = draw
        #: the buffer policy's name (:data:`memoptim.policy.POLICIES`); ``"fifo"`` reads the
        #: replacement count to find the oldest entry, the others decide from ``draw``.
        self.policy = "norm"

    # ------------------------------------------------------------------ state
    @staticmethod
    def init_state(
        state: dict[str, Any],
        like: Tensor,
        capacity: int,
        buffer_dtype: torch.dtype | None = None,
    ) -> None:
        """Create an empty buffer of ``capacity`` slots shaped like ``like`` in ``state``; for a
        DTensor ``like`` (FSDP2) the values and the running sum are sharded like it and the keys
        stay plain, identical on every rank."""
        vdtype = buffer_dtype or like.dtype
        kdtype = key_dtype(like.dtype)
        state[_KEYS] = torch.full((capacity,), -math.inf, dtype=kdtype, device=like.device)
        if _is_dtensor(like):
            # A sharded parameter (FSDP2): the values and the running sum are DTensors on its
            # mesh, each rank storing the slice of its own shard.  Stacking C sharded zeros lets
            # DTensor place the new leading dimension (Shard(d) becomes Shard(d + 1), also for
            # strided and uneven shards); the keys and the count stay plain, equal on all ranks.
            zero = torch.zeros_like(like, dtype=vdtype)
            state[_VALUES] = torch.stack([zero] * capacity)
            state[_SUM] = torch.zeros_like(like, dtype=key_dtype(vdtype))
        else:
            state[_VALUES] = torch.zeros((capacity, *like.shape), dtype=vdtype, device=like.device)
            state[_SUM] = torch.zeros(like.shape, dtype=key_dtype(vdtype), device=like.device)
        state[_REPL] = torch.zeros((), dtype=torch.int64, device=like.device)

    @staticmethod
    def clear_state(state: dict[str, Any]) -> None:
        """Remove the buffer from ``state`` (frees its memory), with any pending offer."""
        for name in STATE_KEYS + PENDING_KEYS:
            state.pop(name, None)

    @classmethod
    def from_state(cls, state: dict[str, Any], settle: bool = True) -> CriticalBuffer | None:
        """The buffer held in one parameter's optimizer state, or ``None`` if it has none.

        ``settle``: first complete a deferred offer (:meth:`settle_state`), so that the values
        and the sum are those of ``docs/semantics.md``; only the native kernels, which complete it
        themselves, pass ``False``.
        """
        if _KEYS not in state:
            return None
        if settle:
            cls.settle_state(state)
        return cls(state[_KEYS], state[_VALUES], state[_SUM], state[_REPL])

    @staticmethod
    def pending_state(state: dict[str, Any], source: str) -> Tensor:
        """The deferred-offer entry of ``state`` (created at -1: nothing pending), noting that
        an accepted value will be ``state[source]`` until the next step."""
        if source not in PENDING_SOURCES:
            raise ValueError(f"a deferred offer cannot come from {source!r}; valid: "
                             f"{', '.join(PENDING_SOURCES)}")
        if _PENDING not in state:
            state[_PENDING] = torch.full((), -1, dtype=torch.int64)
        if not isinstance(state.get(_PENDING_FROM), Tensor):  # a rule's momentum entry never changes
            state[_PENDING_FROM] = torch.full((), PENDING_SOURCES.index(source), dtype=torch.int64)
        return state[_PENDING]

    @staticmethod
    def settle_state(state: dict[str, Any]) -> None:
        """Complete a deferred offer: store the accepted value in its slot, move the sum by
        ``new - old`` (the native kernels' arithmetic, so results do not depend on where it
        happens) and, after a resync step, recompute the sum; then drop the entries.  A no-op
        when no offer is pending."""
        slot_t = state.pop(_PENDING, None)
        source = state.pop(_PENDING_FROM, None)
        if slot_t is None or _KEYS not in state:
            return
        buf = CriticalBuffer(state[_KEYS], state[_VALUES], state[_SUM], state[_REPL])
        # Deferred offers come from the native CPU kernels only, so these reads stay on the host.
        slot = int(slot_t)
        if slot >= 0:
            old = buf.values[slot].to(buf.total.dtype, copy=True)
            new = state[pending_source(source)].to(buf.values.dtype)
            buf.values[slot].copy_(new)
            buf.total.add_(new.to(buf.total.dtype) - old)
        step = state.get("step")
        if step is not None and int(step) % RESYNC_INTERVAL == 0:
            buf.resync()

    # ------------------------------------------------------------ inspection
    @property
    def capacity(self) -> int:
        """Number of slots :math:`C`."""
        return self.keys.shape[0]

    @property
    def filled(self) -> int:
        """Number of filled slots (synchronises with the device)."""
        return int(torch.isfinite(self.keys).sum())

    @property
    def replacements(self) -> int:
        """Replacements made in a full buffer so far (synchronises with the device)."""
        return int(self.replacements_tensor)

    def __repr__(self) -> str:
        return (
            f"CriticalBuffer(capacity={self.capacity}, filled={self.filled}, "
            f"shape={tuple(self.total.shape)}, dtype={self.values.dtype})"
        )

    # ------------------------------------------------------------ operations
    def aggregate(self, x: Tensor) -> Tensor:
        r"""Return :math:`x + \frac{1}{C}\sum B` as a new tensor (paper eq. 6); with
        ``aggregation="filled"``, :math:`x + \frac{1}{\max(n, 1)}\sum B` over the :math:`n`
        filled slots."""
        # The sum may be wider than x (bf16 values, float32 sum): add in the wider
        # dtype, return x's dtype.
        if self.aggregation == "filled":
            return torch.add(x, self.total / self._filled_count()).to(x.dtype)
        return torch.add(x, self.total, alpha=1.0 / self.capacity).to(x.dtype)

    def _filled_count(self) -> Tensor:
        r""":math:`\max(n, 1)` as a 0-d tensor of the sum's dtype, on the device (no host sync)."""
        return torch.isfinite(self.keys).sum().clamp_min(1).to(self.total.dtype)

    def offer(self, key: Tensor, value: Tensor, decay: float) -> None:
        """Offer ``(key, value)`` then decay all keys; ``key`` is a 0-d tensor."""
        offer([self], key.reshape(1), [value], decay)

    def resync(self) -> None:
        """Recompute the running sum exactly from the stored values."""
        torch.sum(_local(self.values), dim=0, dtype=self.total.dtype, out=_local(self.total))

    def resync_where(self, due: Tensor) -> None:
        r""":meth:`resync` where the 0-d bool ``due`` holds, decided on the device:
        :math:`S \leftarrow \mathrm{due}\ ?\ \sum_j B_j : S`.  Bit-identical to
        ``if due: resync()`` (the select copies one of the two exactly), at the cost of summing
        the values every call; for step counters the host cannot read without waiting."""
        total = _local(self.total)
        exact = torch.sum(_local(self.values), dim=0, dtype=total.dtype)
        total.copy_(torch.where(due.to(total.device), exact, total))


def aggregate(xs: Sequence[Tensor], buffers: Sequence[CriticalBuffer], foreach: bool) -> list[Tensor]:
    r""":math:`\operatorname{aggr}(x_i, B_i) = x_i + \frac{1}{C}\sum B_i` for every tensor (eq. 6).

    Returns new tensors (the inputs are not modified).  All buffers must have
    the same capacity when ``foreach`` is true.
    """
    if not foreach or buffers[0].aggregation != "capacity":
        return [b.aggregate(x) for x, b in zip(xs, buffers)]
    capacity = buffers[0].capacity
    out = torch._foreach_add(list(xs), [b.total for b in buffers], alpha=1.0 / capacity)
    return [o if o.dtype == x.dtype else o.to(x.dtype) for o, x in zip(out, xs)]


def offer(
    buffers: Sequence[CriticalBuffer],
    keys: Tensor,
    values: Sequence[Tensor],
    decay: float,
) -> None:
    """Offer ``values[i]`` with priority ``keys[i]`` to ``buffers[i]``, then decay every key.

    The decision is computed on the device for all buffers at once (one
    ``argmin`` over a stacked ``(N, C)`` key matrix), without a data-dependent
    Python branch, so the step never waits for the device.  The running sums
    are updated by ``new - old`` of the touched slot only: the cost is
    independent of the capacity.  The whole offer is one operator,
    :func:`memoptim.offers.offer_group` (``memoptim::offer`` under
    ``torch.compile``: one node of the graph, whatever the number of buffers).

    Args:
        buffers: one buffer per tensor, all of the same capacity.
        keys: shape ``(N,)``, the priority key offered to each buffer.
        values: the tensors offered; copied, never aliased.
        decay: key decay factor :math:`\\lambda \\in (0, 1]`.
    """
    if not buffers:
        return
    drawn = drawn_slot = None
    if buffers[0].draw is not None:  # the random policy's draws, 0-d tensors or host values
        device = buffers[0].keys.device
        drawn = torch.stack([torch.as_tensor(b.draw[0], device=device) for b in buffers])
        drawn_slot = torch.stack([torch.as_tensor(b.draw[1], dtype=torch.int64, device=device)
                                  for b in buffers])
    # DTensor (FSDP2) buffers: the slot's update is elementwise, so each rank updates its own
    # shard of the values and the sum, which match the shard of the offered value.
    offer_group([b.keys for b in buffers], [_local(b.values) for b in buffers],
                [_local(b.total) for b in buffers], [b.replacements_tensor for b in buffers], keys,
                [_local(v) for v in values], decay, buffers[0].policy, drawn, drawn_slot)
