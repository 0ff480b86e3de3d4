"""One registry mapping the paper's optimizer names to constructors.

>>> from memoptim import create_optimizer
>>> opt = create_optimizer("adam+cm", model.parameters(), lr=1e-4, buffer_size=5)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from memoptim.optim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum


def _sam_over(base: type[Optimizer]) -> Callable[..., Optimizer]:
    def build(params: Iterable[Any], **hp: Any) -> Optimizer:
        return SAM(params, base, **hp)

    build.__doc__ = f"SAM around {base.__module__}.{base.__name__}"
    return build


#: name -> constructor ``f(params, **hyperparameters)``.
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adam+cg": AdamCG,
    "adam+cm": AdamCM,
    "sgd+cg": SGDCG,
    "sgd+cm": SGDCM,
    "adam+sam": _sam_over(torch.optim.Adam),
    "adam+sam+cm": _sam_over(AdamCM),
    "adamomentum": AdaMomentum,
}

#: Names whose optimizers need a closure in ``step`` (two evaluations per step).
NEEDS_CLOSURE = frozenset({"adam+sam", "adam+sam+cm"})


def available_optimizers() -> list[str]:
    """The registry's names, in the paper's order."""
    return list(OPTIMIZERS)


def create_optimizer(name: str, params: Iterable[Any], **hyperparameters: Any) -> Optimizer:
    """Build the optimizer registered as ``name`` (case-insensitive) on ``params``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    key = name.strip().lower()
    if key not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}"
        )
    return OPTIMIZERS[key](params, **hyperparameters)
