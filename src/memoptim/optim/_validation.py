"""Argument checks shared by the optimizers: each error names the offending argument."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from memoptim.buffer import AGGREGATIONS, POLICIES

PRIORITIES = ("group", "tensor")
#: Step 1 of a critical-momenta rule: an ordinary step (ours) or the authors' seeding no-op.
FIRST_STEPS = ("step", "seed")
#: What Adam+CM's second moment is built from: the aggregate a_t (paper eq. 5) or the gradient.
SECOND_MOMENTS = ("aggregate", "gradient")


def _value(x: Any) -> Any:
    return x.item() if isinstance(x, Tensor) and x.numel() == 1 else x


def check_non_negative(name: str, value: Any) -> None:
    v = _value(value)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"Invalid {name}: expected a non-negative number, got {value!r}")
    if not v >= 0.0:  # also rejects NaN
        raise ValueError(f"Invalid {name}: {value!r} (must be >= 0)")


def check_betas(betas: Any, name: str = "betas") -> None:
    try:
        b1, b2 = (_value(b) for b in betas)
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {name}: expected a pair (beta1, beta2), got {betas!r}") from None
    for i, b in enumerate((b1, b2)):
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
            raise ValueError(f"Invalid {name}[{i}]: {b!r} (must be in [0, 1))")


def check_buffer_size(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid buffer_size: {value!r} (must be a positive int)")


def check_decay(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"Invalid decay: {value!r} (must be in (0, 1])")


def check_priority(value: Any) -> None:
    if value not in PRIORITIES:
        raise ValueError(f"Invalid priority: {value!r} (must be one of {', '.join(PRIORITIES)})")


def check_buffer_dtype(value: Any) -> None:
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ValueError(f"Invalid buffer_dtype: {value!r} (must be None or a floating torch.dtype)")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"Invalid {name}: {value!r} (must be one of {', '.join(choices)})")


def check_probability(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a number in [0, 1])")


def check_memory_group(group: dict[str, Any]) -> None:
    """Checks for the keywords every memory-augmented optimizer shares."""
    check_buffer_size(group["buffer_size"])
    check_decay(group["decay"])
    check_priority(group["priority"])
    check_buffer_dtype(group["buffer_dtype"])
    check_choice("aggregation", group["aggregation"], AGGREGATIONS)
    check_choice("first_step", group["first_step"], FIRST_STEPS)
    check_choice("policy", group["policy"], POLICIES)
    check_probability("replace_prob", group["replace_prob"])
    seed = group["policy_seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid policy_seed: {seed!r} (must be a non-negative int)")
    if not isinstance(group["memory"], bool):
        raise ValueError(f"Invalid memory: {group['memory']!r} (must be True or False)")


def check_fused_foreach(group: dict[str, Any]) -> None:
    if group.get("fused") and group.get("foreach"):
        raise ValueError("Invalid fused/foreach: fused=True and foreach=True cannot both be set")
