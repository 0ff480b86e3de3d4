"""SGD with a critical buffer: :class:`SGDCM` (critical momenta) and :class:`SGDCG` (critical gradients)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from memoptim.optim.base import ParamsT
from memoptim.optim.driver import MemoryOptimizer
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA
from memoptim.optim.rules import SGD

_COMMON_DOC = r"""
    Args:
        params: parameters or param-group dicts (any keyword below may be set per group).
        lr: learning rate (default ``1e-3``, as ``torch.optim.SGD``).
        momentum: :math:`\mu \ge 0`.
        dampening: :math:`\tau` (as ``torch.optim.SGD``; default 0).
        weight_decay: L2 penalty added to the gradient first, :math:`g \leftarrow g + wd\,\theta`
            (as ``torch.optim.SGD``); the buffer key still uses the raw gradient.
        buffer_size: capacity :math:`C` of the critical buffer (default 5).
        decay: key decay :math:`\lambda \in (0, 1]` (default ``0.7``).
        priority: ``"group"`` (default) or ``"tensor"``; see :class:`memoptim.AdamCM`.
        maximize: maximise the objective instead of minimising it.
        foreach: use the multi-tensor kernels (``None``: yes).
        fused: the native CPU kernel, else the ``torch.compile``-d rule (see :class:`memoptim.AdamCM`).
        buffer_dtype: dtype of the stored buffer values (default: the parameter's).
        memory, aggregation, first_step, policy, replace_prob, policy_seed: the memory
            options, as for :class:`memoptim.AdamCM`.  With ``first_step="seed"`` SGD+CM's step 1
            offers :math:`g_1 + wd\,\theta` and moves nothing; the heavy-ball buffer starts at step 2.

    State per parameter: ``step``, ``momentum_buffer`` (if :math:`\mu > 0`) and the
    buffer (``critical_*``).  :meth:`disable_memory` switches the buffer off.
"""


class _SGDMemory(MemoryOptimizer):
    rule = SGD

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        *,
        buffer_size: int = 5,
        decay: float = 0.7,
        priority: str = "group",
        maximize: bool = False,
        foreach: bool | None = None,
        buffer_dtype: torch.dtype | None = None,
        fused: bool | None = None,
        memory: bool = True,
        aggregation: str = "capacity",
        first_step: str = "step",
        policy: str = "norm",
        replace_prob: float = 1.0,
        policy_seed: int = 0,
    ):
        defaults = dict(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            buffer_size=buffer_size, decay=decay, priority=priority, maximize=maximize,
            foreach=foreach, buffer_dtype=buffer_dtype, fused=fused, memory=memory,
            aggregation=aggregation, first_step=first_step, policy=policy, replace_prob=replace_prob,
            policy_seed=policy_seed,
        )
        super().__init__(params, defaults)


class SGDCM(_SGDMemory):
    __doc__ = (
        r"""SGD with critical momenta (SGD+CM; paper eqs. 4 and 8).

    .. math::
        m_t &= \mu m_{t-1} + (1-\tau)(g_t + wd\,\theta_{t-1}) \quad (m_1 = g_1) \\
        \theta_t &= \theta_{t-1} - \mathrm{lr}\,\bigl(m_t + \tfrac{1}{C}\textstyle\sum_{b\in B} b\bigr)

    after which :math:`(\|g_t\|_2, m_t)` is offered to :math:`B` and the keys
    decay.  Default ``momentum=0.9`` (the setting of the paper's convergence
    analysis, section 3.2).
"""
        + _COMMON_DOC
    )
    memory_mode = CRITICAL_MOMENTA

    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        momentum: float = 0.9,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(params, lr, momentum, dampening, weight_decay, **kwargs)


class SGDCG(_SGDMemory):
    __doc__ = (
        r"""SGD with critical gradients (SGD+CG; paper eq. 10; McRae et al. 2022).

    .. math::
        \hat g_t &= (g_t + wd\,\theta_{t-1}) + \tfrac{1}{C}\textstyle\sum_{b\in B} b \\
        b_t &= \mu b_{t-1} + (1-\tau)\hat g_t \quad (b_1 = \hat g_1), \qquad
        \theta_t = \theta_{t-1} - \mathrm{lr}\, b_t

    (:math:`b_t = \hat g_t` when :math:`\mu = 0`, the default), after which
    :math:`(\|g_t\|_2, g_t)` is offered to :math:`B` and the keys decay.
"""
        + _COMMON_DOC
    )
    memory_mode = CRITICAL_GRADIENTS
