"""The execution paths of a kernel, and the choice among them for one group's step.

* per-tensor (``foreach=False``) and multi-tensor (``foreach=True`` or ``None``): every kernel;
* native (``fused=True`` on CPU, and the default -- ``fused=None, foreach=None`` -- once the
  kernel is built, see :func:`memoptim.optim.native.is_built`): the (rule, memory mode) pairs
  :data:`memoptim.optim.native.KERNELS` declares, with the default memory options, for the tensors
  :func:`memoptim.optim.native.supports` accepts;
* compiled (``fused=True`` otherwise): the same pairs, traced by ``torch.compile``
  (:func:`memoptim.optim.functional.compiled`) -- the fallback for tensors the native kernel does
  not handle (accelerators, DTensors, other dtypes).

A ``fused=True`` group whose pair or memory options no fused backend supports runs the
multi-tensor path.  The default never compiles anything inside a step: without a built native
kernel it runs the multi-tensor path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from memoptim.buffer import CriticalBuffer
from memoptim.optim import native
from memoptim.optim.functional import compiled

Kernel = Callable[..., Any]


def select_kernel(
    kernel: Kernel,
    group: dict[str, Any],
    tensors: Sequence[Sequence[Tensor | None]] = (),
    buffers: Sequence[CriticalBuffer] | None = None,
    steps: Sequence[Tensor] = (),
    native_default: bool = False,
) -> tuple[Kernel, bool, float | Tensor]:
    """The execution path of ``kernel`` (from :mod:`memoptim.optim.functional`) for ``group``:
    ``(kernel to call, foreach, lr)``; ``tensors`` are ``(params, grads, *states)``.

    ``native_default``: the optimizer found the native kernel built when it was constructed, so a
    group that sets neither ``fused`` nor ``foreach`` runs it where it applies.  The compiled path
    takes the learning rate as a tensor, so schedulers do not recompile it.
    """
    lr = float(group["lr"])
    explicit = bool(group.get("fused"))
    wants_native = explicit or (native_default and group.get("fused") is None and group["foreach"] is None)
    fused = native.kernel_for(kernel) if wants_native else None
    if fused is not None and buffers is not None and not fusable_memory(group):
        fused = None  # the fused paths implement the default memory options only
    if fused is not None and tensors and native.supports(*tensors, buffers=buffers, steps=steps):
        return fused, False, lr
    if explicit and fused is not None:  # tensors the native kernel does not handle
        return compiled(kernel), False, torch.tensor(lr, dtype=torch.float64)
    foreach = True if explicit or group["foreach"] is None else bool(group["foreach"])
    return kernel, foreach, lr


def fusable_memory(group: dict[str, Any]) -> bool:
    """Whether the fused backends (native, compiled) implement this group's memory options."""
    return group.get("aggregation", "capacity") == "capacity" and group.get("policy", "norm") == "norm"


def is_native(kernel: Kernel) -> bool:
    """Whether ``kernel`` (from :func:`select_kernel`) is a native fused kernel."""
    return getattr(kernel, "__module__", "") == native.__name__
