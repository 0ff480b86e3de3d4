r"""Lion and its memory-augmented forms: :class:`Lion`, :class:`LionCG`, :class:`LionCM`.

The rule is :mod:`memoptim.optim.rules.lion`; these classes only name it, its memory mode and
its defaults.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from memoptim.optim.base import ParamsT
from memoptim.optim.driver import MEMORY_DEFAULTS, MemoryOptimizer, RuleOptimizer
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA
from memoptim.optim.rules import LION

_ARGS = r"""
    Args:
        params: parameters or param-group dicts (any keyword below may be set per group).
        lr: learning rate (default ``1e-4``; Lion's steps have unit size per coordinate, so its
            learning rate is typically 3-10x smaller than Adam's).
        betas: :math:`(\beta_1, \beta_2)` in ``[0, 1)`` (default ``(0.9, 0.99)``).
        weight_decay: decoupled, :math:`\theta \leftarrow \theta(1 - \mathrm{lr}\,wd)` (default 0).
        maximize: maximise the objective instead of minimising it.
        foreach: use the multi-tensor kernels (``None``: yes); ``False`` loops over tensors.
        fused: no fused kernel exists for Lion; ``True`` runs the multi-tensor path.
"""
_MEMORY_ARGS = r"""
        **memory: the memory options, keyword-only, as for :class:`memoptim.AdamCM`: ``buffer_size``,
            ``decay``, ``priority``, ``buffer_dtype``, ``memory``, ``aggregation``, ``first_step``,
            ``policy``, ``replace_prob``, ``policy_seed``.
"""


class Lion(RuleOptimizer):
    __doc__ = r"""Lion (Chen et al. 2023): the sign of an interpolated momentum.

    .. math::
        c_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,(\operatorname{sign}(c_t) + wd\,\theta_{t-1}) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

    State per parameter: ``step``, ``exp_avg`` (:math:`m`).
""" + _ARGS

    rule = LION

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, fused=fused))


class _LionMemory(MemoryOptimizer):
    rule = LION

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, *, maximize: bool = False, foreach: bool | None = None,
                 fused: bool | None = None, **memory: Any):
        unknown = sorted(set(memory) - set(MEMORY_DEFAULTS))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {unknown}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize,
                                      foreach=foreach, fused=fused, **{**MEMORY_DEFAULTS, **memory}))


class LionCG(_LionMemory):
    __doc__ = r"""Lion with critical gradients: Lion on :math:`\hat g_t = \operatorname{aggr}(g_t, B)`.

    .. math::
        \hat g_t &= g_t + \tfrac{1}{C}\textstyle\sum_{b\in B} b, \qquad
        c_t = \beta_1 m_{t-1} + (1-\beta_1)\hat g_t \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,(\operatorname{sign}(c_t) + wd\,\theta_{t-1}), \qquad
        m_t = \beta_2 m_{t-1} + (1-\beta_2)\hat g_t

    after which :math:`(\|g_t\|_2, g_t)` is offered to :math:`B` and the keys decay.
""" + _ARGS + _MEMORY_ARGS

    memory_mode = CRITICAL_GRADIENTS


class LionCM(_LionMemory):
    __doc__ = r"""Lion with critical momenta: the sign of the aggregated interpolation.

    .. math::
        c_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,\bigl(\operatorname{sign}(c_t +
            \tfrac{1}{C}\textstyle\sum_{b\in B} b) + wd\,\theta_{t-1}\bigr) \\
        m_t &= \beta_2 m_{t-1} + (1-\beta_2) g_t

    after which :math:`(\|g_t\|_2, c_t)` is offered to :math:`B` (:math:`c_t` plays Adam+CM's
    :math:`m_t`: it sets the direction) and the keys decay.
""" + _ARGS + _MEMORY_ARGS

    memory_mode = CRITICAL_MOMENTA
