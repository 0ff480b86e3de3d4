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


def _preset(cls: type[Optimizer], **preset: Any) -> Callable[..., Optimizer]:
    """``cls`` with some keywords preset (the caller's hyperparameters override them)."""

    def build(params: Iterable[Any], **hp: Any) -> Optimizer:
        return cls(params, **{**preset, **hp})

    build.__doc__ = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in preset.items())})"
    return build


#: The authors' semantics (their public code): the aggregate divides by the filled slots and,
#: for critical momenta, step 1 only seeds the buffer with g_1.
AUTHORS = {"aggregation": "filled", "first_step": "seed"}


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
    # ablations and the authors' semantics (see docs/semantics.md)
    "adam+cm-nomem": _preset(AdamCM, memory=False),  # v from m only: no buffer ever
    "adam+cm-vg": _preset(AdamCM, second_moment="gradient"),  # the buffer only: v from g
    "adam+cm-random": _preset(AdamCM, policy="random"),  # random replacement, not the norm key
    "adam+cm-authors": _preset(AdamCM, **AUTHORS),
    "adam+cg-authors": _preset(AdamCG, **AUTHORS),
    "sgd+cm-authors": _preset(SGDCM, **AUTHORS),
    "sgd+cg-authors": _preset(SGDCG, **AUTHORS),
}

#: Display name of every registry name (plots, reports, the CLI).
LABELS: dict[str, str] = {
    "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "adam+cg": "Adam+CG", "adam+cm": "Adam+CM",
    "sgd+cg": "SGD+CG", "sgd+cm": "SGD+CM", "adam+sam": "Adam+SAM", "adam+sam+cm": "Adam+SAM+CM",
    "adamomentum": "AdaMomentum", "adam+cm-nomem": "Adam+CM, no buffer",
    "adam+cm-vg": "Adam+CM, v from g", "adam+cm-random": "Adam+CM, random replacement",
    "adam+cm-authors": "Adam+CM (authors')", "adam+cg-authors": "Adam+CG (authors')",
    "sgd+cm-authors": "SGD+CM (authors')", "sgd+cg-authors": "SGD+CG (authors')",
}  # fmt: skip


def available_optimizers() -> list[str]:
    """The registry's names: the paper's, in its order, then the ablations."""
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
