r"""Memory modes, each written once, and their composition with a base rule into a kernel.

A memory mode decides where a rule meets its critical buffer :math:`B` (paper eq. 6,
:math:`\operatorname{aggr}(x, B) = x + \frac{1}{C}\sum_{b\in B} b`) and what the buffer keeps:

* :data:`NONE`: no buffer; the rule as it is;
* :data:`CRITICAL_GRADIENTS` (CG, McRae et al. 2022; paper eq. 3): the rule consumes
  :math:`\operatorname{aggr}(g_t, B)` instead of :math:`g_t`; :math:`g_t` is offered;
* :data:`CRITICAL_MOMENTA` (CM, the paper's eqs. 4-7): the rule's momentum is replaced by
  :math:`\operatorname{aggr}(m_t, B)` where it sets the update direction; :math:`m_t` is offered.

Per step: aggregate with the buffer as it was, run the rule, then offer the value with its
priority key (which buffer slot it takes is the buffer policy's decision,
:mod:`memoptim.policy`).  With the buffer off (``buffers is None``) every mode is :data:`NONE`.

:func:`kernel` composes a rule and a mode into a function with the signature of the functional
kernels: ``kernel(params, grads, *states, steps, buffers, keys, *, lr, foreach, decay, **hyper)``
(without ``buffers, keys, decay`` for :data:`NONE`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import CodeType
from typing import Any

from torch import Tensor

from memoptim.buffer import CriticalBuffer, aggregate, offer
from memoptim.optim.rules.base import NO_MEMORY, Rule

#: The memory modes.
NONE = "none"
CRITICAL_GRADIENTS = "critical gradients"
CRITICAL_MOMENTA = "critical momenta"
MODES = (NONE, CRITICAL_GRADIENTS, CRITICAL_MOMENTA)

Kernel = Callable[..., Any]


class MemoryStep:
    """The hooks of one step of a rule under a memory mode (see :class:`~memoptim.optim.rules.Hooks`).

    The hook the mode acts on aggregates with the buffers and remembers what it saw;
    :meth:`commit` offers that after the rule has run.
    """

    def __init__(self, mode: str, buffers: Sequence[CriticalBuffer] | None, keys: Tensor | None,
                 decay: float, foreach: bool):
        self.mode, self.buffers, self.keys, self.decay, self.foreach = mode, buffers, keys, decay, foreach
        self.offered: list[Tensor] | None = None

    def _aggregate(self, xs: list[Tensor]) -> list[Tensor]:
        self.offered = xs
        return aggregate(xs, self.buffers, self.foreach)

    def gradient(self, grads: list[Tensor]) -> list[Tensor]:
        if self.mode == CRITICAL_GRADIENTS and self.buffers is not None:
            return self._aggregate(grads)
        return grads

    def momentum(self, momenta: list[Tensor]) -> list[Tensor]:
        if self.mode == CRITICAL_MOMENTA and self.buffers is not None:
            return self._aggregate(momenta)
        return momenta

    def commit(self) -> None:
        """Offer the remembered values to the buffers, then decay the keys."""
        if self.buffers is None or self.offered is None:
            return
        if self.foreach:
            offer(self.buffers, self.keys, self.offered, self.decay)
        else:
            for i, (b, v) in enumerate(zip(self.buffers, self.offered)):
                b.offer(self.keys[i], v, self.decay)


_KERNELS: dict[tuple[Rule, str], Kernel] = {}


def _renamed(code: CodeType, name: str) -> CodeType:
    """A copy of ``code`` named ``name`` (a distinct code object; the same bytecode)."""
    if sys.version_info >= (3, 11):
        return code.replace(co_name=name, co_qualname=name)
    return code.replace(co_name=name)


def kernel(rule: Rule, mode: str, name: str | None = None) -> Kernel:
    """The eager kernel of ``rule`` under memory ``mode`` (one per pair; ``name`` names it)."""
    if mode not in MODES:
        raise ValueError(f"unknown memory mode {mode!r}; valid: {', '.join(MODES)}")
    key = (rule, mode)
    if key in _KERNELS:
        return _KERNELS[key]
    n_states = len(rule.state_names)

    if mode == NONE:
        def run(params: list[Tensor], grads: list[Tensor], *rest: Any, lr: Any, foreach: bool,
                **hyper: Any) -> None:
            rule.update(params, grads, *rest, memory=NO_MEMORY, lr=lr, foreach=foreach, **hyper)
    else:
        def run(params: list[Tensor], grads: list[Tensor], *rest: Any, lr: Any, foreach: bool,
                decay: float, **hyper: Any) -> None:
            states, (steps, buffers, keys) = rest[:n_states], rest[n_states:]
            memory = MemoryStep(mode, buffers, keys, decay, foreach)
            rule.update(params, grads, *states, steps, memory=memory, lr=lr, foreach=foreach, **hyper)
            memory.commit()

    run.__name__ = run.__qualname__ = name or f"{rule.name}_{mode.replace(' ', '_')}"
    # A code object of its own: torch.compile keeps its cache (and counts recompilations against
    # its limit) per code object, and every kernel is defined by the same lines above.
    run.__code__ = _renamed(run.__code__, run.__name__)
    run.rule, run.memory = rule, mode  # type: ignore[attr-defined]
    run.__doc__ = f"{rule.name} under {mode}: see {type(rule).__module__}."
    _KERNELS[key] = run
    return run
