"""What every memoptim optimizer shares with ``torch.optim``'s: validation, tagged checkpoints.

The step itself is the driver's (:mod:`memoptim.optim.driver`); SAM, which wraps another
optimizer, derives from :class:`BaseOptimizer` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]

#: Keys that ``torch.optim.Optimizer`` itself adds to ``defaults`` (its ``__setstate__``, run by
#: ``copy.deepcopy`` and by wrappers such as Accelerate's, sets ``differentiable``): they are not
#: ours, and a state dict need not carry them.
_TORCH_MANAGED_KEYS = frozenset({"differentiable", "capturable"})

#: Key under which :meth:`BaseOptimizer.state_dict` records which optimizer wrote it.
STATE_DICT_TAG = "memoptim"


class BaseOptimizer(Optimizer):
    """Base class of memoptim's optimizers (not meant to be used directly).

    Adds to :class:`torch.optim.Optimizer`: per-group validation also in
    :meth:`add_param_group`, a tag in :meth:`state_dict` naming the optimizer
    (loading a state dict written by another optimizer raises ``ValueError``),
    and a clear error for sparse gradients.
    """

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the argument if a hyperparameter is invalid."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1])

    def _check_grad(self, p: Tensor) -> None:
        if p.grad.is_sparse:
            raise RuntimeError(
                f"{type(self).__name__} does not support sparse gradients; "
                "use a dense embedding (sparse=False)"
            )

    # ------------------------------------------------------------ checkpoints
    def _tag(self) -> dict[str, Any]:
        return {"optimizer": type(self).__name__, "version": 1}

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd[STATE_DICT_TAG] = self._tag()
        return sd

    def _check_loadable(self, state_dict: dict[str, Any]) -> None:
        tag = state_dict.get(STATE_DICT_TAG)
        if tag is not None and tag.get("optimizer") != self._tag()["optimizer"]:
            raise ValueError(
                f"this state dict was written by {tag.get('optimizer')}, "
                f"it cannot be loaded into {type(self).__name__}"
            )
        saved_groups = state_dict.get("param_groups", [])
        for i, saved in enumerate(saved_groups):
            optional = self._optional_keys() | _TORCH_MANAGED_KEYS
            missing = sorted(k for k in self.defaults if k not in saved and k not in optional)
            if missing:
                raise ValueError(
                    f"param group {i} of the state dict lacks {', '.join(missing)}: it was not "
                    f"written by {type(self).__name__}"
                )

    def _optional_keys(self) -> set[str]:
        """Group keys that older state dicts may lack (filled from the defaults on load)."""
        return {"fused", "foreach"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_loadable(state_dict)
        self._load_checked({k: v for k, v in state_dict.items() if k != STATE_DICT_TAG})

    def _load_checked(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict that :meth:`_check_loadable` has accepted (tag removed)."""
        Optimizer.load_state_dict(self, state_dict)


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """Evaluate ``closure`` with gradients enabled (``torch.optim`` convention)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


__all__ = ["BaseOptimizer", "ParamsT", "run_closure"]
