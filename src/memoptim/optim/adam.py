"""Adam with a critical buffer: :class:`AdamCM` (critical momenta) and :class:`AdamCG` (critical gradients)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from memoptim.optim import _validation as V
from memoptim.optim.base import ParamsT
from memoptim.optim.driver import MemoryOptimizer
from memoptim.optim.memory import CRITICAL_GRADIENTS, CRITICAL_MOMENTA
from memoptim.optim.rules import ADAM, ADAM_V_FROM_DIRECTION, Rule

_COMMON_DOC = r"""
    Args:
        params: parameters or param-group dicts (any keyword below may be set per group).
        lr: learning rate :math:`\mathrm{lr}` (default ``1e-3``).
        betas: :math:`(\beta_1, \beta_2)`, each in ``[0, 1)`` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon` added to the denominator (default ``1e-8``).
        weight_decay: :math:`wd \ge 0` (default ``0``).
        amsgrad: use the running maximum of :math:`v_t` (as ``torch.optim.Adam``).
        buffer_size: capacity :math:`C` of the critical buffer, a positive int (default 5).
        decay: key decay :math:`\lambda \in (0, 1]` (default ``0.7``).
        priority: ``"group"`` (default): one key per group and step, the sum over the
            group's tensors of :math:`\|g\|_2`, so the group acts as one model-level
            buffer (the authors' setting); ``"tensor"``: each tensor's own norm.
        decoupled_weight_decay: ``True`` (default): :math:`\theta \leftarrow
            \theta(1-\mathrm{lr}\,wd)`; ``False``: L2, :math:`g \leftarrow g + wd\,\theta`
            (the buffer key still uses the raw gradient).
        maximize: maximise the objective instead of minimising it.
        foreach: use the multi-tensor kernels (``None``: yes); ``False`` loops over tensors.
        fused: the fastest path.  On CPU, memoptim's native kernel
            (:mod:`memoptim.optim.native`: one update pass per tensor; measured step
            times are in ``docs/performance.md``; compiled once per machine on first use,
            about a minute); for tensors it does not handle (accelerators, DTensors,
            other dtypes), the update rule compiled by ``torch.compile`` (the first step per
            parameter layout compiles, which takes seconds to minutes).
        buffer_dtype: dtype of the stored buffer values (default: the parameter's);
            e.g. ``torch.bfloat16`` halves the buffer's memory.  The running sum is
            always kept in float32 or wider.
        memory: ``False`` starts with the memory off: the buffer is never created and
            :math:`\operatorname{aggr}(x, B) = x` from the first step (see :meth:`disable_memory`).
        aggregation: ``"capacity"`` (default): :math:`\operatorname{aggr}(x, B) = x +
            \frac{1}{C}\sum B`; ``"filled"``: divide by the number of filled slots instead
            (the authors' code; large early steps).
        first_step: ``"step"`` (default): step 1 is an ordinary step; ``"seed"`` (the authors'
            critical-momenta code): step 1 only offers :math:`g_1` to the buffer (and applies
            decoupled weight decay); the momenta start at step 2.  For critical gradients the
            authors' step 1 is ordinary already, so ``"seed"`` changes nothing there.
        policy: ``"norm"`` (default): a full buffer replaces its smallest key if the new
            gradient-norm key beats it; ``"random"``: a full buffer takes the offer with
            probability ``replace_prob`` into a uniformly drawn slot (an ablation of the key);
            ``"fifo"``: a full buffer always replaces its oldest entry (a recency ablation).
        replace_prob: the random policy's acceptance probability in ``[0, 1]`` (default 1).
        policy_seed: seed of the random policy's draws, a non-negative int (default 0); the
            draws are a pure function of ``(policy_seed, step)``
            (:func:`memoptim.buffer.replacement_draw`).

    ``fused=True`` implements the default ``aggregation`` and ``policy`` only; with the
    others it runs the multi-tensor path.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (``max_exp_avg_sq``),
    and the buffer (``critical_*``, see :mod:`memoptim.buffer`).  Call
    :meth:`disable_memory` to switch the buffer off during training.
"""


class _AdamMemory(MemoryOptimizer):
    def __init__(
        self,
        params: ParamsT,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        buffer_size: int = 5,
        decay: float = 0.7,
        priority: str = "group",
        decoupled_weight_decay: bool = True,
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
        **rule_options: Any,
    ):
        unknown = sorted(set(rule_options) - set(self._rule_options))
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {unknown}")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            buffer_size=buffer_size, decay=decay, priority=priority,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
            buffer_dtype=buffer_dtype, fused=fused, memory=memory, aggregation=aggregation,
            first_step=first_step, policy=policy, replace_prob=replace_prob, policy_seed=policy_seed,
            **rule_options,
        )
        super().__init__(params, defaults)


class AdamCM(_AdamMemory):
    __doc__ = (
        r"""Adam with critical momenta (Adam+CM; Malviya et al., TMLR 2024, eqs. 4-7, Algorithm 1).

    A buffer of up to :math:`C` past momenta, prioritised by the gradient norm,
    is added (divided by :math:`C`) to Adam's momentum; the aggregate also feeds
    the second moment:

    .. math::
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) g_t \\
        a_t &= m_t + \tfrac{1}{C}\textstyle\sum_{b\in B} b \\
        v_t &= \beta_2 v_{t-1} + (1-\beta_2) a_t^2 \\
        \theta_t &= \theta_{t-1}(1-\mathrm{lr}\,wd) - \mathrm{lr}\,
            \frac{a_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    after which :math:`(\|g_t\|_2, m_t)` is offered to :math:`B` and every key is
    multiplied by :math:`\lambda`.  Step 1 is an ordinary step (:math:`a_1 = m_1`).

    ``second_moment="gradient"`` builds :math:`v_t` from :math:`g_t^2` as Adam does, so the
    buffer enters the update direction only (an ablation separating the buffer from the
    :math:`v`-from-:math:`m` change; ``memory=False`` isolates the latter).
"""
        + _COMMON_DOC
    )
    rule = ADAM_V_FROM_DIRECTION
    memory_mode = CRITICAL_MOMENTA
    _rule_options: ClassVar[dict[str, Any]] = {"second_moment": "aggregate"}

    def __init__(self, params: ParamsT, *args: Any, second_moment: str = "aggregate", **kwargs: Any):
        super().__init__(params, *args, second_moment=second_moment, **kwargs)

    def _validate_group(self, group: dict[str, Any]) -> None:
        V.check_choice("second_moment", group["second_moment"], V.SECOND_MOMENTS)
        super()._validate_group(group)

    def _rule_for(self, group: dict[str, Any]) -> Rule:
        return ADAM if group["second_moment"] == "gradient" else ADAM_V_FROM_DIRECTION


class AdamCG(_AdamMemory):
    __doc__ = (
        r"""Adam with critical gradients (Adam+CG; McRae et al. 2022; paper eq. 3).

    .. math::
        \hat g_t &= g_t + \tfrac{1}{C}\textstyle\sum_{b\in B} b \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat g_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\hat g_t^2 \\
        \theta_t &= \theta_{t-1}(1-\mathrm{lr}\,wd) - \mathrm{lr}\,
            \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    after which :math:`(\|g_t\|_2, g_t)` is offered to :math:`B` and the keys decay.
    With the memory off this is exactly Adam (AdamW with ``weight_decay``).
"""
        + _COMMON_DOC
    )
    rule = ADAM
    memory_mode = CRITICAL_GRADIENTS
