r"""Where a group's tensors and their state live: devices, complex views, checkpoint placement.

* **Complex parameters** are stepped as their real views (``torch.view_as_real``: a complex
  tensor of shape ``s`` is a real one of shape ``(*s, 2)`` on the same storage), as
  ``torch.optim`` does: every rule and the critical buffer see real tensors, so the keys
  (:math:`\|g\|_2`, equal for a complex tensor and its real view) stay real, and the buffer holds
  real views.  State a rule creates during the step is handed back in the parameter's complex form.
* **Several devices in one group**: the driver runs its step protocol once per device
  (:func:`by_device`), in the order the devices first appear; tensors of several dtypes on one
  device are stepped together, as before (their keys are compared in the widest key dtype).
* **Checkpoints** (:func:`place`): every state tensor is moved to its parameter's device, or a
  one-line ``ValueError`` names the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["as_complex_like", "as_real", "by_device", "place"]


def as_real(t: Tensor | None) -> Tensor | None:
    """The real view of a complex tensor; any other tensor (or ``None``) as it is."""
    return torch.view_as_real(t) if t is not None and t.is_complex() else t


def as_complex_like(t: Tensor | None, like: Tensor) -> Tensor | None:
    """``t`` in ``like``'s form: the complex view of a real ``(*s, 2)`` tensor when ``like`` is
    complex and ``t`` is not (state a rule created from a real view), else ``t`` itself."""
    if t is None or not like.is_complex() or t.is_complex():
        return t
    return torch.view_as_complex(t if t.stride(-1) == 1 else t.contiguous())


def by_device(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by device, in the order the devices first appear (one group
    for the usual single-device list)."""
    groups: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.device, []).append(i)
    return list(groups.values())


def place(value: Any, param: Tensor, where: str) -> Any:
    """``value`` (a state entry of ``param``) on ``param``'s device; anything but a tensor as it
    is.  ``where`` names the entry in the error: a ``ValueError`` of one line that says how to
    load the checkpoint when the tensor cannot be moved (a ``meta`` tensor holds no data; a
    device this process cannot reach)."""
    if not isinstance(value, Tensor) or value.device == param.device:
        return value
    if value.device.type == "meta" and param.device.type != "meta":
        raise ValueError(f"the state of {where} is a meta tensor with no data and cannot be placed on "
                         f"{param.device}; load a checkpoint saved from parameters that hold data")
    try:
        return value.to(device=param.device)
    except (RuntimeError, NotImplementedError, AssertionError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"the state of {where} (on {value.device}) cannot be placed on {param.device} "
                         f"({reason}); load the checkpoint with torch.load(..., map_location="
                         f"'{param.device}')") from None
