r"""SGD with heavy-ball momentum (as ``torch.optim.SGD``, without Nesterov).

.. math::
    g_t &\leftarrow g_t + wd\,\theta_{t-1} \quad (\text{L2, after } \texttt{maximize}) \\
    \hat g_t &= \texttt{memory.gradient}(g_t) \\
    m_t &= \mu m_{t-1} + (1-\tau)\hat g_t \quad (m_1 = \hat g_1;\ m_t = \hat g_t \text{ if } \mu = 0) \\
    \theta_t &= \theta_{t-1} - \mathrm{lr}\,\texttt{memory.momentum}(m_t)

The momentum buffer is created at the first step (``momentum_buffer`` in the state).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from memoptim.optim import _validation as V
from memoptim.optim.rules.base import Collected, Hooks, Rule, step_tensor
from memoptim.optim.rules.ops import descend_, prepare_grads, step_values


class SGDRule(Rule):
    name = "sgd"
    state_names = ("momentum_buffer",)

    def collect(self, opt: Optimizer, group: dict[str, Any]) -> Collected:
        out = Collected([], [], ([],), [])
        for p, state in self.with_grads(opt, group):
            out.params.append(p)
            out.grads.append(p.grad)
            out.states[0].append(state.get("momentum_buffer"))
            out.steps.append(step_tensor(state, p))
        return out

    def store(self, opt: Optimizer, params: list[Tensor], states: Any, group: dict[str, Any]) -> None:
        if group["momentum"]:
            for p, b in zip(params, states[0]):
                opt.state[p]["momentum_buffer"] = b

    def hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        return dict(momentum=group["momentum"], dampening=group["dampening"],
                    weight_decay=group["weight_decay"], maximize=group["maximize"])

    def validate(self, group: dict[str, Any]) -> None:
        V.check_non_negative("lr", group["lr"])
        V.check_non_negative("momentum", group["momentum"])
        V.check_non_negative("weight_decay", group["weight_decay"])
        V.check_fused_foreach(group)
        if not isinstance(group["dampening"], (int, float)) or isinstance(group["dampening"], bool):
            raise ValueError(f"Invalid dampening: {group['dampening']!r} (must be a number)")

    def momentum_state(self, group: dict[str, Any]) -> str | None:
        # without momentum the "momentum" is the gradient itself, gone after the step
        return "momentum_buffer" if group["momentum"] else None

    def update(self, params: list[Tensor], grads: list[Tensor],  # type: ignore[override]
               momentum_buffers: list[Tensor | None], steps: list[Tensor], *, memory: Hooks, lr: Any,
               foreach: bool, momentum: float, dampening: float, weight_decay: float,
               maximize: bool) -> None:
        step_values(steps)
        g = prepare_grads(params, grads, lr=lr, weight_decay=weight_decay, decoupled=False,
                          maximize=maximize, foreach=foreach)
        g = memory.gradient(g)
        m = heavy_ball_(momentum_buffers, g, momentum, dampening, foreach) if momentum else g
        descend_(params, memory.momentum(m), lr, foreach)


def heavy_ball_(
    momentum_buffers: list[Tensor | None],
    xs: list[Tensor],
    momentum: float,
    dampening: float,
    foreach: bool,
) -> list[Tensor]:
    r""":math:`b_t = \mu b_{t-1} + (1 - \tau) x_t`, seeded with :math:`b_1 = x_1`.

    Fills ``None`` entries of ``momentum_buffers`` in place and returns the buffers.
    """
    fresh = [i for i, b in enumerate(momentum_buffers) if b is None]
    for i in fresh:
        momentum_buffers[i] = torch.clone(xs[i]).detach()
    seeded = set(fresh)
    old = [i for i in range(len(xs)) if i not in seeded]
    if old:
        bufs = [momentum_buffers[i] for i in old]
        vals = [xs[i] for i in old]
        if foreach:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, vals, alpha=1.0 - dampening)
        else:
            for b, x in zip(bufs, vals):
                b.mul_(momentum).add_(x, alpha=1.0 - dampening)
    return momentum_buffers  # type: ignore[return-value]


SGD = SGDRule()
