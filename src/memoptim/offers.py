r"""A group's offers to its critical buffers as one operator, ``memoptim::offer``.

For every buffer :math:`i` of a group, with keys :math:`K_i` (``(C,)``, ``-inf`` in free slots),
slot values :math:`B_i`, running sum :math:`S_i` and replacement count :math:`r_i`, the offer of
value :math:`v_i` with key :math:`k_i` (``docs/semantics.md``, "The critical buffer"):

1. the buffer policy (:mod:`memoptim.policy`) decides, for all buffers at once on their device,
   the slot :math:`s_i` and whether the offer is accepted (:math:`a_i`); :math:`\rho_i` says
   whether it replaces a filled slot;
2. the keys: :math:`K_i[s_i] \leftarrow a_i\ ?\ k_i : K_i[s_i]`, then :math:`K_i \leftarrow
   \lambda K_i`;
3. the slot: :math:`\mathrm{old} = B_i[s_i]`, :math:`\mathrm{new} = a_i\ ?\ v_i : \mathrm{old}`,
   :math:`B_i[s_i] \leftarrow \mathrm{new}`, :math:`S_i \leftarrow S_i + (\mathrm{new} -
   \mathrm{old})` (the difference taken in the sum's float32-or-wider dtype) and
   :math:`r_i \leftarrow r_i + \rho_i`.

It is registered as a torch custom operator (:func:`memoptim.operators.define`: naming the
tensors it mutates, with a fake implementation), so ``torch.compile`` traces a group's offer as
one opaque node whatever the number of tensors: the graph, and the compile time, do not grow
with the model at the offer.
The operator changes the keys, the slots and the counts in place but writes the sums' changes
:math:`\mathrm{new} - \mathrm{old}` (zero where nothing was stored) into tensors of their own,
which the traced step adds with one ``torch._foreach_add_``: the rule reads the running sums
earlier in the same step (the aggregate), and Inductor (torch 2.13) may run a fused kernel that
reads a tensor only after an operator has changed it in place, a write-after-read it does not
see, and give wrong numbers.
Eagerly :func:`offer_group` calls the implementation directly, without the dispatcher, and moves
the sums in place.  The slots are written (step 3) in one of two ways:

* **CPU tensors**: the decisions are read on the host (which waits for nothing) and the accepted
  slots written with ``torch._foreach_*`` operations on slot views; a rejected offer costs nothing;
* **any other device** (CUDA, XPU, ``meta``): the slot stays a device tensor
  (``index_select``/``index_copy_``) and the choice a ``torch.where``, so no step waits for the
  device.

Both give the same numbers bit for bit.
"""

from __future__ import annotations

import torch
from torch import Tensor

from memoptim.operators import define
from memoptim.policy import choose_slots

__all__ = ["offer_group"]


def _move_sums(targets: list[Tensor], new: list[Tensor], old: list[Tensor], accumulate: bool) -> None:
    """``new - old`` in each sum's dtype, added to ``targets`` (the sums, ``accumulate``) or copied there."""
    wide = [t.dtype for t in targets]
    diffs = torch._foreach_sub([n.to(w) for n, w in zip(new, wide)], [o.to(w) for o, w in zip(old, wide)])
    (torch._foreach_add_ if accumulate else torch._foreach_copy_)(targets, diffs)


def _write_on_host(values: list[Tensor], targets: list[Tensor], replacements: list[Tensor],
                   offered: list[Tensor], slot: Tensor, accept: Tensor, replaced: Tensor,
                   accumulate: bool) -> None:
    """Step 3 on CPU tensors: the decisions read on the host; only accepted offers are written.
    The sums' changes are added to ``targets`` (the sums, ``accumulate``) or copied there (zero
    where nothing was stored)."""
    slots, taken = slot.reshape(-1).tolist(), accept.tolist()
    chosen = [i for i, a in enumerate(taken) if a]
    if chosen:
        dst = [values[i][slots[i]] for i in chosen]
        new = [offered[i].to(values[i].dtype) for i in chosen]
        # before the slot is overwritten: old is a view of it
        _move_sums([targets[i] for i in chosen], new, dst, accumulate)
        torch._foreach_copy_(dst, new)
    if not accumulate and len(chosen) < len(targets):
        torch._foreach_zero_([t for i, t in enumerate(targets) if not taken[i]])
    counted = [replacements[i] for i, r in enumerate(replaced.tolist()) if r]
    if counted:
        torch._foreach_add_(counted, 1)


def _write_on_device(values: list[Tensor], targets: list[Tensor], replacements: list[Tensor],
                     offered: list[Tensor], slot: Tensor, accept: Tensor, replaced: Tensor,
                     accumulate: bool) -> None:
    """Step 3 on any device: the decisions stay device tensors (no host read); a rejected offer
    writes the slot's old value back.  The sums' changes go to ``targets`` as on the host."""
    old, new = [], []
    for i, (b, v) in enumerate(zip(values, offered)):
        idx = slot[i].reshape(1)
        o = b.index_select(0, idx)
        n = torch.where(accept[i], v.unsqueeze(0).to(b.dtype), o)
        b.index_copy_(0, idx, n)
        old.append(o.squeeze(0))
        new.append(n.squeeze(0))
    _move_sums(targets, new, old, accumulate)
    torch._foreach_add_(replacements, list(replaced.to(replacements[0].dtype).unbind(0)))


def _offer(keys: list[Tensor], values: list[Tensor], replacements: list[Tensor], targets: list[Tensor],
           offered_keys: Tensor, offered: list[Tensor], decay: float, policy: str,
           drawn: Tensor | None, drawn_slot: Tensor | None, accumulate: bool) -> None:
    """Steps 1-3 (module docstring), run eagerly; the sums' changes added to ``targets`` (the
    sums themselves, ``accumulate``) or written there."""
    stacked = torch.stack(keys)  # (N, C)
    offered_keys = offered_keys.to(stacked.dtype)
    draws = None if drawn is None or drawn_slot is None else (drawn, drawn_slot)
    counts = torch.stack(replacements) if policy == "fifo" else None
    slot, current, accept = choose_slots(stacked, offered_keys, draws, counts)
    replaced = accept & torch.isfinite(current)
    stacked.scatter_(1, slot, torch.where(accept, offered_keys, current).unsqueeze(1))
    stacked.mul_(decay)
    torch._foreach_copy_(keys, list(stacked.unbind(0)))
    on_host = values[0].device.type == "cpu" and slot.device.type == "cpu"
    write = _write_on_host if on_host else _write_on_device
    write(values, targets, replacements, offered, slot, accept, replaced, accumulate)


def _offer_op(keys: list[Tensor], values: list[Tensor], replacements: list[Tensor], changes: list[Tensor],
              offered_keys: Tensor, offered: list[Tensor], decay: float, policy: str,
              drawn: Tensor | None, drawn_slot: Tensor | None) -> None:
    """The offer, writing the sums' changes into ``changes`` (shaped and typed like the sums)."""
    _offer(keys, values, replacements, changes, offered_keys, offered, decay, policy, drawn, drawn_slot,
           accumulate=False)


def _offer_fake(keys, values, replacements, changes, offered_keys, offered, decay, policy, drawn, drawn_slot):
    return None


define(_offer_op, name="offer", mutates_args=("keys", "values", "replacements", "changes"), fake=_offer_fake)


def offer_group(keys: list[Tensor], values: list[Tensor], sums: list[Tensor], replacements: list[Tensor],
                offered_keys: Tensor, offered: list[Tensor], decay: float, policy: str = "norm",
                drawn: Tensor | None = None, drawn_slot: Tensor | None = None) -> None:
    r"""Offer ``offered[i]`` with key ``offered_keys[i]`` to buffer :math:`i` of a group, then
    decay every key (module docstring).

    Args:
        keys: per buffer, the ``(C,)`` priority keys (mutated).
        values: per buffer, the ``(C, *shape)`` slot values (mutated).
        sums: per buffer, the running sum of ``values`` over the slots (mutated).
        replacements: per buffer, the 0-d int64 count of replacements in a full buffer (mutated).
        offered_keys: ``(N,)``, the key of each offer.
        offered: per buffer, the tensor offered (copied into its slot, never aliased).
        decay: the key decay :math:`\lambda \in (0, 1]`.
        policy: the buffer policy's name (:data:`memoptim.policy.POLICIES`).
        drawn, drawn_slot: ``(N,)`` bool and int64, the random policy's draws for this step
            (:func:`memoptim.policy.step_draws`); ``None`` for the other policies.

    While ``torch.compile`` traces, through the custom operator (one node of the graph) and one
    ``torch._foreach_add_`` of the sums' changes; else the implementation is called directly,
    moving the sums in place.
    """
    if not keys:
        return
    if torch.compiler.is_compiling():
        changes = [torch.empty_like(s) for s in sums]
        torch.ops.memoptim.offer(keys, values, replacements, changes, offered_keys, offered, decay, policy,
                                 drawn, drawn_slot)
        torch._foreach_add_(sums, changes)
    else:
        _offer(keys, values, replacements, sums, offered_keys, offered, decay, policy, drawn, drawn_slot,
               accumulate=True)
