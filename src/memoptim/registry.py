"""The registry: the one source of the optimizers' names, labels, families and search spaces.

>>> from memoptim import create_optimizer
>>> opt = create_optimizer("adam+cm", model.parameters(), lr=1e-4, buffer_size=5)  # doctest: +SKIP

Every consumer reads it: :func:`create_optimizer` and the CLI (names), reports and plots
(:data:`LABELS`), sweeps (:data:`FAMILIES`, :attr:`Entry.searched`, :attr:`Entry.fixed`), and
the tests, which parametrise over it.  Adding an optimizer is one :data:`REGISTRY` line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer

from memoptim.optim import SAM, SGDCG, SGDCM, AdamCG, AdamCM, AdaMomentum, Lion, LionCG, LionCM
from memoptim.optim.memory import NONE


def _preset(cls: type[Optimizer], **preset: Any) -> Callable[..., Optimizer]:
    """``cls`` with some keywords preset (the caller's hyperparameters override them)."""

    def build(params: Iterable[Any], **hp: Any) -> Optimizer:
        return cls(params, **{**preset, **hp})

    build.__doc__ = f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in preset.items())})"
    return build


def _sam_over(base: type[Optimizer]) -> Callable[..., Optimizer]:
    def build(params: Iterable[Any], **hp: Any) -> Optimizer:
        return SAM(params, base, **hp)

    build.__doc__ = f"SAM around {base.__module__}.{base.__name__}"
    return build


#: The authors' semantics (their public code): the aggregate divides by the filled slots and,
#: for critical momenta, step 1 only seeds the buffer with g_1.
AUTHORS = {"aggregation": "filled", "first_step": "seed"}

_ADAM_SEARCH = ("lr", "beta1", "beta2")
_MEMORY_SEARCH = ("buffer_size", "decay")
#: The paper's defaults (appendix A.2.2) held fixed while a CPU grid varies the learning rate.
_ADAM_FIXED = {"beta2": 0.999}
_MEMORY_FIXED = {"buffer_size": 5, "decay": 0.7}
_SGD_FIXED = {"momentum": 0.9}
_LION_FIXED = {"beta2": 0.99}


@dataclass(frozen=True)
class Entry:
    """One registered optimizer.

    Attributes:
        build: ``build(params, **hyperparameters)`` returns the optimizer.
        label: its display name in reports, plots and the CLI.
        family: the base rule (``"adam"``, ``"sgd"``, ``"lion"``), which sets the learning-rate
            grids of sweeps.
        searched: the flat hyperparameters (:data:`memoptim.experiments.train.HYPERPARAMETERS`)
            a search covers (the paper's Table 8 for its optimizers; the natural analogues for
            the others).
        fixed: the values a CPU sweep holds fixed (the paper's defaults).
        paper: whether the paper compares it (else an ablation, a variant or an extension).
        memory: whether it takes the memory options (``buffer_size``, ``decay``, ``priority``, ...).
        sam: whether it wraps its base in SAM (two gradient evaluations per step, a closure).
    """

    build: Callable[..., Optimizer]
    label: str
    family: str
    searched: tuple[str, ...] = ("lr",)
    fixed: dict[str, Any] = field(default_factory=dict)
    paper: bool = False
    memory: bool = False
    sam: bool = False


def _memory(build: Callable[..., Optimizer], label: str, family: str, searched: tuple[str, ...],
            fixed: dict[str, Any], **flags: Any) -> Entry:
    """The entry of an optimizer with a critical buffer: its rule's search space and fixed values
    plus the buffer's (``buffer_size``, ``decay``)."""
    return Entry(build, label, family, (*searched, *_MEMORY_SEARCH), {**fixed, **_MEMORY_FIXED},
                 memory=True, **flags)


#: name -> entry; the paper's optimizers first, in its order, then ablations and extensions.
REGISTRY: dict[str, Entry] = {
    "adam": Entry(torch.optim.Adam, "Adam", "adam", paper=True),
    "adamw": Entry(torch.optim.AdamW, "AdamW", "adam"),
    "sgd": Entry(torch.optim.SGD, "SGD", "sgd", fixed=_SGD_FIXED, paper=True),
    "adam+cg": _memory(AdamCG, "Adam+CG", "adam", _ADAM_SEARCH, _ADAM_FIXED, paper=True),
    "adam+cm": _memory(AdamCM, "Adam+CM", "adam", _ADAM_SEARCH, _ADAM_FIXED, paper=True),
    "sgd+cg": _memory(SGDCG, "SGD+CG", "sgd", ("lr",), _SGD_FIXED, paper=True),
    "sgd+cm": _memory(SGDCM, "SGD+CM", "sgd", ("lr",), _SGD_FIXED, paper=True),
    "adam+sam": Entry(_sam_over(torch.optim.Adam), "Adam+SAM", "adam", (*_ADAM_SEARCH, "rho"),
                      {**_ADAM_FIXED, "rho": 0.05}, paper=True, sam=True),
    "adam+sam+cm": Entry(_sam_over(AdamCM), "Adam+SAM+CM", "adam", (*_ADAM_SEARCH, *_MEMORY_SEARCH, "rho"),
                         {**_ADAM_FIXED, **_MEMORY_FIXED, "rho": 0.05}, paper=True, memory=True, sam=True),
    "adamomentum": Entry(AdaMomentum, "AdaMomentum", "adam", _ADAM_SEARCH, _ADAM_FIXED, paper=True),
    # ablations and the authors' semantics (see docs/semantics.md); adam+cm-nomem never fills a
    # buffer (v from m only) but takes the memory options like the rule it ablates
    "adam+cm-nomem": Entry(_preset(AdamCM, memory=False), "Adam+CM, no buffer", "adam", _ADAM_SEARCH,
                           _ADAM_FIXED, memory=True),
    "adam+cm-vg": _memory(_preset(AdamCM, second_moment="gradient"), "Adam+CM, v from g", "adam",
                          _ADAM_SEARCH, _ADAM_FIXED),  # the buffer only
    "adam+cm-random": _memory(_preset(AdamCM, policy="random"), "Adam+CM, random replacement", "adam",
                              _ADAM_SEARCH, _ADAM_FIXED),
    # recency instead of priority: the oldest entry always goes (see memoptim.policy)
    "adam+cm-fifo": _memory(_preset(AdamCM, policy="fifo"), "Adam+CM, FIFO replacement", "adam",
                            _ADAM_SEARCH, _ADAM_FIXED),
    # slow key decay: the gradient norm, less the entry's age, decides what goes (fixed holds 0.99)
    "adam+cm-decay0.99": Entry(_preset(AdamCM, decay=0.99), "Adam+CM, decay 0.99", "adam",
                               (*_ADAM_SEARCH, *_MEMORY_SEARCH),
                               {**_ADAM_FIXED, **_MEMORY_FIXED, "decay": 0.99}, memory=True),
    "adam+cm-authors": _memory(_preset(AdamCM, **AUTHORS), "Adam+CM (authors')", "adam", _ADAM_SEARCH,
                               _ADAM_FIXED),
    "adam+cg-authors": _memory(_preset(AdamCG, **AUTHORS), "Adam+CG (authors')", "adam", _ADAM_SEARCH,
                               _ADAM_FIXED),
    "sgd+cm-authors": _memory(_preset(SGDCM, **AUTHORS), "SGD+CM (authors')", "sgd", ("lr",), _SGD_FIXED),
    "sgd+cg-authors": _memory(_preset(SGDCG, **AUTHORS), "SGD+CG (authors')", "sgd", ("lr",), _SGD_FIXED),
    # Lion (Chen et al. 2023) and its memory-augmented forms
    "lion": Entry(Lion, "Lion", "lion", _ADAM_SEARCH, _LION_FIXED),
    "lion+cg": _memory(LionCG, "Lion+CG", "lion", _ADAM_SEARCH, _LION_FIXED),
    "lion+cm": _memory(LionCM, "Lion+CM", "lion", _ADAM_SEARCH, _LION_FIXED),
}

#: name -> constructor ``f(params, **hyperparameters)``.
OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {name: e.build for name, e in REGISTRY.items()}
#: Display name of every registry name (plots, reports, the CLI).
LABELS: dict[str, str] = {name: e.label for name, e in REGISTRY.items()}
#: family -> its registry names, in registry order.
FAMILIES: dict[str, tuple[str, ...]] = {
    fam: tuple(n for n, e in REGISTRY.items() if e.family == fam)
    for fam in dict.fromkeys(e.family for e in REGISTRY.values())
}


def available_optimizers() -> list[str]:
    """The registry's names: the paper's, in its order, then the ablations and extensions."""
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


@functools.cache
def memory_mode(name: str) -> str:
    """What the buffer of registry optimizer ``name`` keeps: :data:`memoptim.optim.memory.NONE`,
    ``CRITICAL_GRADIENTS`` or ``CRITICAL_MOMENTA``, read from an instance (a SAM optimizer's
    from its base); ``NONE`` for a name the registry does not know."""
    if name not in OPTIMIZERS:
        return NONE
    opt = OPTIMIZERS[name]([torch.zeros(1, requires_grad=True)])
    return getattr(getattr(opt, "base_optimizer", opt), "memory_mode", NONE)

