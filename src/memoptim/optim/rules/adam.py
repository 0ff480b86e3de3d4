r"""Adam, and the Adam family that builds its second moment from the update direction.

.. math::
    g_t &\leftarrow \text{maximize, weight decay (decoupled: } \theta \leftarrow
        \theta(1-\mathrm{lr}\,wd)\text{; L2: } g_t \leftarrow g_t + wd\,\theta) \\
    \hat g_t &= \texttt{memory.gradient}(g_t) \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat g_t, \qquad d_t = \texttt{memory.momentum}(m_t) \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2) s_t^2 \quad (s_t = \hat g_t \text{ for Adam, } d_t
        \text{ for ``direction''}) \\
    \theta_t &= \theta_{t-1} - \mathrm{lr}\,
        \frac{d_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

Three rules share this code (``docs/semantics.md``):

* :data:`ADAM`: :math:`s_t = \hat g_t` (Adam; Adam+CG; Adam+CM with ``second_moment="gradient"``);
* :data:`ADAM_V_FROM_DIRECTION`: :math:`s_t = d_t` (the paper's Adam+CM, eq. 7: the second moment
  tracks the aggregated momentum);
* :data:`ADAMOMENTUM`: :math:`s_t = d_t` with :math:`\epsilon` added to the stored :math:`v_t`
  every step and none outside the root (Wang et al.'s AdaMomentum).

``amsgrad`` replaces :math:`v_t` by its running maximum in the denominator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.optim import _validation as V
from memoptim.optim.rules.base import Collected, Hooks, Rule, step_tensor
from memoptim.optim.rules.ops import add_, ema_, ema_sq_, on_device, prepare_grads, step_values


class AdamRule(Rule):
    """The Adam update with a choice of second-moment source and of where :math:`\\epsilon` goes."""

    state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    momentum_entry = "exp_avg"

    def __init__(self, name: str, second_moment: str, eps_inside: bool = False):
        self.name = name
        self.second_moment = second_moment  # "gradient" or "direction"
        self.eps_inside = eps_inside

    def collect(self, opt: Optimizer, group: dict[str, Any]) -> Collected:
        """The group's tensors with a gradient; their Adam state is created on first use."""
        out = Collected([], [], ([], [], []), [])
        exp_avgs, exp_avg_sqs, max_sqs = out.states
        for p, state in self.with_grads(opt, group):
            if "exp_avg" not in state:
                step_tensor(state, p)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.params.append(p)
            out.grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            if group["amsgrad"]:
                if "max_exp_avg_sq" not in state:  # amsgrad switched on mid-training
                    state["max_exp_avg_sq"] = state["exp_avg_sq"].clone()
                max_sqs.append(state["max_exp_avg_sq"])
            out.steps.append(state["step"])
        return out

    def hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(beta1=float(beta1), beta2=float(beta2), eps=group["eps"],
                    weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                    decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"])

    def validate(self, group: dict[str, Any]) -> None:
        V.check_fused_foreach(group)
        V.check_non_negative("lr", group["lr"])
        V.check_non_negative("eps", group["eps"])
        V.check_non_negative("weight_decay", group["weight_decay"])
        V.check_betas(group["betas"])

    def update(self, params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],  # type: ignore[override]
               exp_avg_sqs: list[Tensor], max_exp_avg_sqs: list[Tensor], steps: list[Tensor], *,
               memory: Hooks, lr: Any, foreach: bool, beta1: float, beta2: float, eps: float,
               weight_decay: float, amsgrad: bool, decoupled_weight_decay: bool, maximize: bool) -> None:
        t = step_values(steps)
        g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay,
                          decoupled=decoupled_weight_decay, maximize=maximize, foreach=foreach)
        g = memory.gradient(g)
        ema_(exp_avgs, g, beta1, foreach)
        d = memory.momentum(exp_avgs)
        ema_sq_(exp_avg_sqs, d if self.second_moment == "direction" else g, beta2, foreach)
        if self.eps_inside:
            add_(exp_avg_sqs, eps, foreach)
        adam_descend_(params, d, exp_avg_sqs, max_exp_avg_sqs, t, lr=lr, beta1=beta1, beta2=beta2,
                      eps=eps, amsgrad=amsgrad, foreach=foreach, eps_outside=not self.eps_inside)


def adam_descend_(
    params: list[Tensor],
    numerators: list[Tensor],
    second: list[Tensor],
    max_second: list[Tensor],
    step_values: list[float] | list[Tensor],
    *,
    lr: Any,
    beta1: float,
    beta2: float,
    eps: float,
    amsgrad: bool,
    foreach: bool,
    eps_outside: bool = True,
) -> None:
    r"""Bias-corrected Adam step :math:`\theta \leftarrow \theta - \mathrm{lr}\,
    \frac{n_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon}` (paper eq. 7).

    With ``amsgrad`` the running maximum of :math:`v_t` replaces it; with ``eps_outside=False``
    no :math:`\epsilon` is added to the denominator.
    """
    if on_device(step_values):  # step counts (and lr) are tensors: stay branch-free
        # Per-tensor scalars computed once into one small buffer (in double, as the eager
        # path does with Python floats), then cast to each parameter's dtype so the fused
        # elementwise loops run in that dtype; the update is multi-tensor operations, one graph
        # node each for the whole list.
        t = torch.stack([s.reshape(()) for s in step_values]).to(torch.float64)
        scalars = torch.stack([lr / (1.0 - beta1**t), 1.0 / torch.sqrt(1.0 - beta2**t)]).to(params[0].device)
        step_size = [scalars[0, i].to(p.dtype) for i, p in enumerate(params)]
        inv_sqrt_bc2 = [scalars[1, i].to(p.dtype) for i, p in enumerate(params)]
        if amsgrad:
            torch._foreach_maximum_(max_second, second)
            second = max_second
        denom = torch._foreach_sqrt(second)
        torch._foreach_mul_(denom, inv_sqrt_bc2)
        if eps_outside:
            torch._foreach_add_(denom, eps)
        update = torch._foreach_div(numerators, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(params, update)
        return
    bc1 = [1.0 - beta1**t for t in step_values]
    sqrt_bc2 = [math.sqrt(1.0 - beta2**t) for t in step_values]
    if foreach:
        if amsgrad:
            torch._foreach_maximum_(max_second, second)
            second = max_second
        denom = torch._foreach_sqrt(second)
        torch._foreach_div_(denom, sqrt_bc2)
        if eps_outside:
            torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, numerators, denom, [-lr / b for b in bc1])
        return
    for i, p in enumerate(params):
        v = second[i]
        if amsgrad:
            torch.maximum(max_second[i], v, out=max_second[i])
            v = max_second[i]
        denom = v.sqrt().div_(sqrt_bc2[i])
        if eps_outside:
            denom.add_(eps)
        p.addcdiv_(numerators[i], denom, value=-lr / bc1[i])


#: Adam: the second moment from the gradient the rule consumes.
ADAM = AdamRule("adam", second_moment="gradient")
#: The paper's Adam+CM base: the second moment from the update direction (eq. 7).
ADAM_V_FROM_DIRECTION = AdamRule("adam-v-from-direction", second_moment="direction")
#: AdaMomentum: the second moment from the momentum, epsilon inside it.
ADAMOMENTUM = AdamRule("adamomentum", second_moment="direction", eps_inside=True)
