r"""What a base update rule is: its maths, its state, its hyperparameters, its validation.

A rule is written once, without any notion of a critical buffer.  Where a memory mode may act,
the rule calls its ``memory`` hooks (:class:`Hooks`):

* ``memory.gradient(g)`` on the gradient the rule is about to consume (critical gradients
  replace it by :math:`\operatorname{aggr}(g_t, B)`);
* ``memory.momentum(m)`` on the momentum that sets the update direction (critical momenta
  replace it by :math:`\operatorname{aggr}(m_t, B)`).

Without memory both hooks return their argument, and the rule is the plain base optimizer.
:mod:`memoptim.optim.memory` composes a rule with a memory mode into a kernel.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.optim import Optimizer


class Hooks(Protocol):
    """Where a memory mode enters a rule (see the module docstring)."""

    def gradient(self, grads: list[Tensor]) -> list[Tensor]: ...

    def momentum(self, momenta: list[Tensor]) -> list[Tensor]: ...


class _NoMemory:
    @staticmethod
    def gradient(grads: list[Tensor]) -> list[Tensor]:
        return grads

    @staticmethod
    def momentum(momenta: list[Tensor]) -> list[Tensor]:
        return momenta


#: The hooks of a rule run without memory.
NO_MEMORY: Hooks = _NoMemory()


@dataclass
class Collected:
    """One group's tensors with a gradient, and their per-tensor state lists (in rule order)."""

    params: list[Tensor]
    grads: list[Tensor]
    states: tuple[list[Any], ...]
    steps: list[Tensor]


class Rule:
    """A base update rule.  Subclasses define:

    * :attr:`name` and :attr:`state_names` (the per-tensor state lists :meth:`update` takes);
    * :meth:`collect`: the group's tensors and their state, created lazily;
    * :meth:`hyper`: the keywords :meth:`update` takes, read from a param group;
    * :meth:`validate`: ``ValueError`` naming the argument for an invalid hyperparameter;
    * :meth:`update`: one step, ``update(params, grads, *states, steps, *, memory, lr,
      foreach, **hyper)``, mutating ``params`` and the state in place.
    """

    name: str = ""
    state_names: tuple[str, ...] = ()
    #: The state entry holding the momentum that critical momenta offer, when that momentum
    #: outlives the step (so a native kernel may defer the offer); see :meth:`momentum_state`.
    momentum_entry: str | None = None

    def collect(self, opt: Optimizer, group: dict[str, Any]) -> Collected:
        raise NotImplementedError

    @staticmethod
    def with_grads(opt: Optimizer, group: dict[str, Any]) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        """``(p, opt.state[p])`` for each of the group's tensors that has a gradient (sparse ones
        refused by the optimizer's check): the loop every :meth:`collect` runs."""
        for p in group["params"]:
            if p.grad is None:
                continue
            opt._check_grad(p)
            yield p, opt.state[p]

    def hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def validate(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def update(self, params: list[Tensor], grads: list[Tensor], *states_and_steps: Sequence[Any],
               memory: Hooks, lr: Any, foreach: bool, **hyper: Any) -> None:
        raise NotImplementedError

    def momentum_state(self, group: dict[str, Any]) -> str | None:
        """The state entry that holds, after the step, the value critical momenta offered, or
        ``None`` if that value does not outlive the step."""
        return self.momentum_entry

    def decoupled(self, hyper: dict[str, Any]) -> bool:
        """Whether weight decay is decoupled (shrinks :math:`\\theta`) rather than L2."""
        return bool(hyper.get("decoupled_weight_decay", False))

    def store(self, opt: Optimizer, params: list[Tensor], states: Sequence[list[Any]],
              group: dict[str, Any]) -> None:
        """Keep state the kernel created (default: none is created)."""

    def __repr__(self) -> str:
        return f"<rule {self.name}>"


def step_tensor(state: dict[str, Any], like: Tensor | None = None) -> Tensor:
    """A parameter's step counter, created at 0 on first use: 0-d float32 on the device of
    ``like`` (the parameter; as ``torch.optim``'s capturable state), so a step on an accelerator
    never copies it to or reads it from the host; on the CPU for CPU parameters."""
    if "step" not in state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=None if like is None else like.device)
    return state["step"]
