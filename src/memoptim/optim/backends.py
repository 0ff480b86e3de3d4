"""The execution paths of a kernel, and the choice among them for one group's step.

* per-tensor (``foreach=False``) and multi-tensor (``foreach=True``): every kernel;
* native (:mod:`memoptim.optim.native`, CPU tensors only): the (rule, memory mode) pairs
  :data:`memoptim.optim.native.KERNELS` declares, with the default memory options, for the tensors
  :func:`memoptim.optim.native.supports` accepts;
* compiled (:func:`memoptim.optim.functional.compiled`): the same pairs, traced by
  ``torch.compile`` from the multi-tensor path (Inductor generates the kernel).

Which one runs (:func:`select_kernel`), for a pair that has a fused kernel and default memory
options:

* ``fused=True``: on CPU tensors the native kernel, or the compiled one where the native kernel
  does not apply; on CUDA/XPU tensors the compiled kernel;
* the default (neither ``fused`` nor ``foreach`` set): on CPU the native kernel once built
  (:func:`memoptim.optim.native.is_built`), else the multi-tensor path; on CUDA/XPU the compiled
  kernel;
* ``foreach=True`` / ``foreach=False``: the multi-tensor / per-tensor path.

The device is checked first: the C++ extension is built (on first use) only for CPU tensors, and
``fused=True`` on a device no fused backend runs on (:data:`FUSED_DEVICES`) raises a one-line
``ValueError``.  Other pairs and memory options run the multi-tensor path, also under
``fused=True``.  On CPU the default never compiles anything inside a step.
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

#: Device types a fused backend runs on: the native kernel (CPU), the compiled path (all three).
FUSED_DEVICES = ("cpu", "cuda", "xpu")
#: Device types whose default path (``fused=None, foreach=None``) is the compiled fused path.
COMPILED_BY_DEFAULT = ("cuda", "xpu")


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
    group on CPU that sets neither ``fused`` nor ``foreach`` runs it where it applies.  The
    compiled path takes the learning rate as a tensor, so schedulers do not recompile it; while
    ``torch.compile`` traces the step, ``lr`` is passed on as the group holds it (a tensor
    stays a tensor: no host read).
    """
    lr = group["lr"]
    explicit = bool(group.get("fused"))
    default = group.get("fused") is None and group["foreach"] is None
    fused = native.kernel_for(kernel) if explicit or default else None
    if fused is not None and buffers is not None and not fusable_memory(group):
        fused = None  # the fused paths implement the default memory options only
    if fused is not None and tensors:
        devices = {p.device.type for p in tensors[0]}
        if explicit:
            check_fused_devices(devices)
        wants_native = explicit or (native_default and devices == {"cpu"})
        if wants_native and native.supports(*tensors, buffers=buffers, steps=steps):
            return fused, False, lr
        if explicit or (devices and devices <= set(COMPILED_BY_DEFAULT)):
            return compiled(kernel), False, lr_tensor(lr, tensors[0][0].device)
    foreach = True if explicit or group["foreach"] is None else bool(group["foreach"])
    return kernel, foreach, lr if torch.compiler.is_compiling() else float(lr)


def check_fused_devices(devices: set[str]) -> None:
    """Raise a one-line ``ValueError`` unless a fused backend runs on every device in ``devices``."""
    unsupported = sorted(devices - set(FUSED_DEVICES))
    if unsupported:
        raise ValueError(f"fused=True is not supported on {', '.join(unsupported)} tensors; fused kernels "
                         f"run on {', '.join(FUSED_DEVICES)} (use foreach=True on other devices)")


def lr_tensor(lr: float | Tensor, device: torch.device) -> Tensor:
    """The learning rate as a 0-d float64 tensor on the parameters' ``device``, for the compiled
    path: a graph input, so a scheduler recompiles nothing, and on the device, so a step neither
    copies it from the host nor keeps a CUDA graph from capturing it.  A tensor learning rate is
    converted, never read; a float is written by a fill on the device (no host-to-device copy),
    so a captured graph replays the learning rate it was captured with, as ``torch.optim`` does
    with a float: give a tensor to schedule a captured step."""
    if isinstance(lr, Tensor):
        return lr.to(device=device, dtype=torch.float64)
    return torch.full((), float(lr), dtype=torch.float64, device=device)


def fusable_memory(group: dict[str, Any]) -> bool:
    """Whether the fused backends (native, compiled) implement this group's memory options."""
    return group.get("aggregation", "capacity") == "capacity" and group.get("policy", "norm") == "norm"


def is_native(kernel: Kernel) -> bool:
    """Whether ``kernel`` (from :func:`select_kernel`) is a native fused kernel."""
    return getattr(kernel, "__module__", "") == native.__name__
