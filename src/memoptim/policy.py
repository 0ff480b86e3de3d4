r"""Buffer policies: which slot of a critical buffer an offer takes, if any.

A policy decides, for every buffer of a group at once and on the device, the slot each offer
goes to and whether it is accepted; the buffer (:func:`memoptim.buffer.offer`) then stores the
value, moves the running sum and decays the keys.  While a buffer has a free slot every policy
fills the first free one; they differ once it is full.  A non-finite key is never accepted.

* ``"norm"`` (default; the paper's priority): the slot with the smallest key, replaced iff the
  offered key is larger (ties do not replace);
* ``"random"`` (an ablation of the key): a uniformly drawn slot, replaced with probability
  ``replace_prob`` -- the same fill, with the key no longer deciding.  The draws are a pure
  function of ``(policy_seed, step)`` (:func:`replacement_draw` for step counters on the CPU,
  :func:`device_draw` on the counters' device elsewhere), so runs resume exactly;
* ``"fifo"`` (a recency ablation): the oldest entry, always (a sliding window of the last
  :math:`C` accepted offers; the key decides nothing).  Slots fill in order, every finite offer
  to a full buffer replaces, and the buffer counts its replacements :math:`r`, so the oldest
  entry is slot :math:`r \bmod C` (:func:`fifo_replacement`): decided on the device, no draw.

Adding a policy: write its decision function and list it in :data:`POLICIES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from memoptim.operators import define

__all__ = ["POLICIES", "choose_slots", "device_draw", "draws", "fifo_replacement", "replacement_draw",
           "step_draws"]

#: ``(stacked keys (N, C), offered keys (N,), the policy's input) -> (slot (N, 1), current key (N,),
#: accept (N,))``; the input is the random policy's draws, the FIFO policy's replacement counts.
Decision = Callable[[Tensor, Tensor, Any], tuple[Tensor, Tensor, Tensor]]


def norm_priority(stacked: Tensor, keys: Tensor, draws: Any = None) -> tuple[Tensor, Tensor, Tensor]:
    """The first free slot, else the smallest key; accepted iff the offered key is larger."""
    slot = stacked.argmin(dim=1, keepdim=True)  # -inf marks a free slot, found before any key
    current = stacked.gather(1, slot).squeeze(1)
    # A NaN key compares False; an infinite one is excluded explicitly.
    return slot, current, torch.isfinite(keys) & (keys > current)


def random_replacement(stacked: Tensor, keys: Tensor,
                       draws: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """The first free slot, else the drawn slot; accepted if free, else with the drawn chance
    (``draws``: ``(N,)`` bool and ``(N,)`` int64, the accepts and slots of :func:`step_draws`)."""
    drawn, j = draws[0].to(stacked.device), draws[1].to(stacked.device).unsqueeze(1)
    slot = stacked.argmin(dim=1, keepdim=True)
    free = torch.isneginf(stacked).any(dim=1)
    slot = torch.where(free.unsqueeze(1), slot, j)
    current = stacked.gather(1, slot).squeeze(1)
    return slot, current, torch.isfinite(keys) & (free | drawn)


def fifo_replacement(stacked: Tensor, keys: Tensor, replacements: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The first free slot, else the oldest entry, slot :math:`r \bmod C` (``replacements``:
    ``(N,)`` int64, each buffer's count :math:`r` of replacements so far); accepted iff the
    offered key is finite.  Exact while a buffer is only ever offered to under this policy."""
    slot = stacked.argmin(dim=1, keepdim=True)
    free = torch.isneginf(stacked).any(dim=1, keepdim=True)
    oldest = replacements.to(slot.device).remainder(stacked.shape[1]).unsqueeze(1)
    slot = torch.where(free, slot, oldest)
    current = stacked.gather(1, slot).squeeze(1)
    return slot, current, torch.isfinite(keys)


#: name -> decision; the names are the values of the optimizers' ``policy`` option.
POLICIES: dict[str, Decision] = {"norm": norm_priority, "random": random_replacement,
                                  "fifo": fifo_replacement}


def choose_slots(stacked: Tensor, keys: Tensor, draws: tuple[Tensor, Tensor] | None,
                 replacements: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The decision of the policy in force: the FIFO one when the buffers' ``replacements``
    counts are given, the random one when ``draws`` were made for this step, else the norm one."""
    if replacements is not None:
        return fifo_replacement(stacked, keys, replacements)
    return (norm_priority if draws is None else random_replacement)(stacked, keys, draws)


def replacement_draw(policy_seed: int, step: int, capacity: int, replace_prob: float) -> tuple[bool, int]:
    r"""The random policy's decision for the offer of a tensor's ``step`` (1-based): ``(accept, slot)``.

    With ``gen = torch.Generator().manual_seed(policy_seed * 1_000_003 + step)``, first
    :math:`u \sim U[0, 1)` (float64), then :math:`j \sim U\{0, ..., C-1\}`; a full buffer stores
    the offer in slot :math:`j` iff :math:`u <` ``replace_prob``.  Tensors at the same step share
    the draw, so a group with shared keys stays one buffer.
    """
    gen = torch.Generator().manual_seed(policy_seed * 1_000_003 + step)
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    j = int(torch.randint(0, capacity, (), generator=gen))
    return u < replace_prob, j


_M32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """:math:`x c \bmod 2^{32}` for int64 ``x`` in :math:`[0, 2^{32})`, exact in int64 (16-bit halves)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: Tensor) -> Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of int64 ``x`` in :math:`[0, 2^{32})`."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def device_draw(policy_seed: int, steps: Tensor, capacity: int, replace_prob: float) -> tuple[Tensor, Tensor]:
    r"""The random policy's decisions for step counters ``steps`` (``(N,)``, the steps done
    before this one) computed on their device: ``(accept (N,) bool, slot (N,) int64)``.

    With :math:`k = \texttt{policy\_seed} \cdot 1\,000\,003 + t` (:math:`t` the 1-based step)
    and :math:`h = H(k_{lo} \oplus H(k_{hi} \oplus \mathtt{9E3779B9}))` for a 32-bit hash
    :math:`H`: :math:`u = H(h \oplus \mathtt{68E31DA4}) / 2^{32}`, :math:`j = H(h \oplus
    \mathtt{B5297A4D}) \bmod C`, accept iff :math:`u <` ``replace_prob``.  A pure function of
    ``(policy_seed, t)`` like :func:`replacement_draw`, but not the same numbers: the CPU keeps
    :func:`replacement_draw`'s, which reproduce earlier runs; tensors elsewhere use these.
    """
    k = steps.to(torch.int64) + (1 + policy_seed * 1_000_003)
    h = _mix32((k & _M32) ^ _mix32((k >> 32) ^ 0x9E3779B9))
    threshold = math.ceil(replace_prob * 2**32)  # u < p  <=>  2^32 u < ceil(2^32 p) for integer 2^32 u
    accept = _mix32(h ^ 0x68E31DA4) < threshold
    return accept, _mix32(h ^ 0xB5297A4D) % capacity


def _draw_on_host(steps: Tensor, policy_seed: int, capacity: int, replace_prob: float) -> tuple[Tensor, Tensor]:
    """:func:`replacement_draw` for every counter of ``steps`` (CPU: read there, waiting for nothing)."""
    drawn = [replacement_draw(policy_seed, int(t) + 1, capacity, replace_prob) for t in steps.tolist()]
    return (torch.tensor([a for a, _ in drawn], dtype=torch.bool),
            torch.tensor([j for _, j in drawn], dtype=torch.int64))


def _random_draws_op(steps: Tensor, policy_seed: int, capacity: int,
                     replace_prob: float) -> tuple[Tensor, Tensor]:
    return device_draw(policy_seed, steps, capacity, replace_prob)


def _random_draws_fake(steps, policy_seed, capacity, replace_prob):
    return steps.new_empty(steps.shape, dtype=torch.bool), steps.new_empty(steps.shape, dtype=torch.int64)


define(_random_draws_op, name="random_draws", mutates_args=(), fake=_random_draws_fake,
       kernels={"cpu": _draw_on_host})


def step_draws(steps: Sequence[Tensor], policy_seed: int, capacity: int,
               replace_prob: float) -> tuple[Tensor, Tensor]:
    """The random policy's ``(accept (N,) bool, slot (N,) int64)`` for step counters ``steps`` (the
    steps done before this one), on their device: :func:`replacement_draw`'s numbers for counters
    on the CPU, :func:`device_draw`'s elsewhere.  While ``torch.compile`` traces, through the
    custom operator ``memoptim::random_draws`` (one node, and on the CPU the same numbers as an
    eager step: the operator reads the counters where they are, outside the graph)."""
    stacked = torch.stack([s.reshape(()) for s in steps])
    if torch.compiler.is_compiling():
        return torch.ops.memoptim.random_draws(stacked, policy_seed, capacity, replace_prob)
    if stacked.device.type == "cpu":
        return _draw_on_host(stacked, policy_seed, capacity, replace_prob)
    return device_draw(policy_seed, stacked, capacity, replace_prob)


def draws(group: dict[str, Any], buffers: Sequence[Any], steps: Sequence[Tensor]) -> None:
    """Attach this step's draws (:func:`step_draws`) to the buffers of a ``policy="random"`` group
    (else nothing), as ``(accept, slot)`` 0-d tensors on the counters' device: no step waits for
    the device, and eager and compiled steps draw the same numbers."""
    if group["policy"] != "random" or not buffers:
        return
    accept, slot = step_draws(steps, group["policy_seed"], buffers[0].capacity, group["replace_prob"])
    for i, b in enumerate(buffers):
        b.draw = (accept[i], slot[i])
