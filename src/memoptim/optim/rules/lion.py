r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), decoupled weight decay.

.. math::
    \hat g_t &= \texttt{memory.gradient}(g_t) \quad (g_t \text{ after } \texttt{maximize}) \\
    c_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat g_t \\
    \theta_t &= \theta_{t-1} - \mathrm{lr}\,\bigl(\operatorname{sign}(\texttt{memory.momentum}(c_t))
        + wd\,\theta_{t-1}\bigr) \\
    m_t &= \beta_2 m_{t-1} + (1-\beta_2)\hat g_t

The interpolation :math:`c_t` sets the direction, so it is the quantity critical momenta
aggregate (it plays Adam+CM's :math:`m_t`); it is not kept after the step.  Defaults:
``lr=1e-4``, ``betas=(0.9, 0.99)``.  :math:`\operatorname{sign}(0) = 0`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.optim import _validation as V
from memoptim.optim.rules.base import Collected, Hooks, Rule, step_tensor
from memoptim.optim.rules.ops import descend_, ema_, prepare_grads, step_values


class LionRule(Rule):
    name = "lion"
    state_names = ("exp_avg",)
    momentum_entry = None  # c_t does not outlive the step

    def collect(self, opt: Optimizer, group: dict[str, Any]) -> Collected:
        out = Collected([], [], ([],), [])
        for p, state in self.with_grads(opt, group):
            if "exp_avg" not in state:
                step_tensor(state, p)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.params.append(p)
            out.grads.append(p.grad)
            out.states[0].append(state["exp_avg"])
            out.steps.append(state["step"])
        return out

    def hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"],
                    maximize=group["maximize"])

    def validate(self, group: dict[str, Any]) -> None:
        V.check_fused_foreach(group)
        V.check_non_negative("lr", group["lr"])
        V.check_non_negative("weight_decay", group["weight_decay"])
        V.check_betas(group["betas"])

    def decoupled(self, hyper: dict[str, Any]) -> bool:
        return True

    def update(self, params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],  # type: ignore[override]
               steps: list[Tensor], *, memory: Hooks, lr: Any, foreach: bool, beta1: float,
               beta2: float, weight_decay: float, maximize: bool) -> None:
        step_values(steps)
        g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay, decoupled=True,
                          maximize=maximize, foreach=foreach)
        g = memory.gradient(g)
        if foreach:
            c = list(torch._foreach_lerp(exp_avgs, g, 1.0 - beta1))
            direction = list(torch._foreach_sign(memory.momentum(c)))
        else:
            c = [torch.lerp(m, x, 1.0 - beta1) for m, x in zip(exp_avgs, g)]
            direction = [d.sign() for d in memory.momentum(c)]
        descend_(params, direction, lr, foreach)
        ema_(exp_avgs, g, beta2, foreach)


LION = LionRule()
