"""Adam with a critical buffer: :class:`AdamCM` (critical momenta) and :class:`AdamCG` (critical gradients)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from memoptim.optim import _validation as V
from memoptim.optim import functional as F
from memoptim.optim.base import (
    BaseOptimizer,
    MemoryOptimizer,
    ParamsT,
    check_fused_foreach,
    is_native,
    run_closure,
    select_kernel,
    step_tensor,
)

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

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (``max_exp_avg_sq``),
    and the buffer (``critical_*``, see :mod:`memoptim.buffer`).  Call
    :meth:`disable_memory` to switch the buffer off during training.
"""


class _AdamMemory(MemoryOptimizer):
    _rule: Callable[..., None]

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
    ):
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            buffer_size=buffer_size, decay=decay, priority=priority,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
            buffer_dtype=buffer_dtype, fused=fused,
        )
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        super()._validate_group(group)
        validate_adam_group(group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = run_closure(closure)
        for group in self.param_groups:
            params, grads, m, v, vmax, steps = init_adam_group(self, group)
            if not params:
                continue
            buffers = self._buffers(group, params, params)
            kernel, foreach, lr = select_kernel(type(self)._rule, group, (params, grads, m, v, vmax),
                                                buffers, steps)
            pending = self._defer(kernel, group, params, buffers)
            keys = None
            if buffers is not None and pending is None:
                keys = self._keys(group, grads, True, is_native(kernel))
            beta1, beta2 = group["betas"]
            norms = kernel(
                params, grads, m, v, vmax, steps, buffers, keys,
                lr=lr, beta1=float(beta1), beta2=float(beta2),
                eps=group["eps"], weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                decoupled_weight_decay=group["decoupled_weight_decay"],
                maximize=group["maximize"], decay=group["decay"], foreach=foreach,
                **({} if pending is None else {"pending": pending}),
            )
            if pending is not None:
                self._offer_deferred(group, grads, buffers, pending, norms)
            self._maybe_resync(buffers, steps, kernel)
        return loss


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
"""
        + _COMMON_DOC
    )
    _rule = staticmethod(F.adam_cm)
    _offered_state = "exp_avg"  # m_t: the native kernel may defer its offer by a step


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
    _rule = staticmethod(F.adam_cg)


# ---------------------------------------------------------------- shared with AdaMomentum
def validate_adam_group(group: dict[str, Any]) -> None:
    check_fused_foreach(group)
    V.check_non_negative("lr", group["lr"])
    V.check_non_negative("eps", group["eps"])
    V.check_non_negative("weight_decay", group["weight_decay"])
    V.check_betas(group["betas"])


def init_adam_group(
    opt: BaseOptimizer, group: dict[str, Any]
) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    """Collect the group's tensors that have a gradient, creating their Adam state lazily."""
    params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps = [], [], [], [], [], []
    for p in group["params"]:
        if p.grad is None:
            continue
        opt._check_grad(p)
        state = opt.state[p]
        if "exp_avg" not in state:
            step_tensor(state)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        params.append(p)
        grads.append(p.grad)
        exp_avgs.append(state["exp_avg"])
        exp_avg_sqs.append(state["exp_avg_sq"])
        if group["amsgrad"]:
            if "max_exp_avg_sq" not in state:  # amsgrad switched on mid-training
                state["max_exp_avg_sq"] = state["exp_avg_sq"].clone()
            max_sqs.append(state["max_exp_avg_sq"])
        steps.append(state["step"])
    return params, grads, exp_avgs, exp_avg_sqs, max_sqs, steps
