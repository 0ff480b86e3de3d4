r"""Where a group's tensors and their state live: devices, complex views, checkpoint placement.

* **Complex parameters** are stepped as their real views (``torch.view_as_real``: a complex
  tensor of shape ``s`` is a real one of shape ``(*s, 2)`` on the same storage), as
  ``torch.optim`` does: every rule and the critical buffer see real tensors, so the keys
  (:math:`\|g\|_2`, equal for a complex tensor and its real view) stay real, and the buffer holds
  real views.  State a rule creates during the step is handed back in the parameter's complex form.
* **Several devices or dtypes in one group**: the driver runs its step protocol once per
  (device, dtype) bucket (:func:`by_device_and_dtype`), in the order the buckets first appear, as
  ``torch.optim`` groups tensors for its multi-tensor and fused kernels; each bucket is then a
  list the native kernel or one multi-tensor launch takes whole.
* **Checkpoints** (:func:`place`): every state tensor is moved to its parameter's device, or a
  one-line ``ValueError`` names the fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["as_complex_like", "as_real", "by_device_and_dtype", "place"]


def as_real(t: Tensor | None) -> Tensor | None:
    """The real view of a complex tensor; any other tensor (or ``None``) as it is."""
    return torch.view_as_real(t) if t is not None and t.is_complex() else t


def as_complex_like(t: Tensor | None, like: Tensor) -> Tensor | None:
    """``t`` in ``like``'s form: the complex view of a real ``(*s, 2)`` tensor when ``like`` is
    complex and ``t`` is not (state a rule created from a real view), else ``t`` itself."""
    if t is None or not like.is_complex() or t.is_complex():
        return t
    return torch.view_as_complex(t if t.stride(-1) == 1 else t.contiguous())


def by_device_and_dtype(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in the order the pairs first appear (one
    bucket for the usual list of one device and dtype)."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
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
